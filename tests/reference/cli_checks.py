"""What the command-line tests share: every check printed as ok/FAIL and remembered, a program run
with its output captured, and the exit status at the end (1 when any check failed)."""
import subprocess
import sys

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)
    return cond


def run_batch(batch, *args, env=None, timeout=None, stdin=None):
    """Runs `batch args...`; returns (exit status, stdout, stderr)."""
    p = subprocess.run([batch, *args], capture_output=True, text=True, env=env, timeout=timeout, stdin=stdin)
    return p.returncode, p.stdout, p.stderr


def finish():
    if failures:
        print(f"{len(failures)} failure(s)")
        sys.exit(1)
    print("all passed")
