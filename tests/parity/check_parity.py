#!/usr/bin/python3
"""Parity driver: lmwb-batch against the committed float64 PyTorch references.

Usage: check_parity.py LMWB_BATCH FIXTURES_DIR [--filter SUBSTR] [--keep DIR]

For every fixture FIXTURES_DIR/<name>/ (an HF folder with parity/fixture.json, made by
make_fixtures.py) it runs
    lmwb-batch logits      --model DIR --ids IDS --out F.npy
    lmwb-batch grad        --model DIR --ids IDS --hook H --out F.npy   (each hook in "grads")
    lmwb-batch activations --model DIR --ids IDS --hook H --out F.npy   (each hook in "activations")
and checks shape, dtype float32, finiteness and
    max |got − want| / max |want|  ≤  tolerance (1e-3; fixture.json may tighten single checks)
per tensor, reporting the worst element. It also checks that bad input exits with status 2.
Prints one line per check and finally exactly "N passed, M failed".
Exit 0 if all pass, 1 otherwise, 77 (meson's skip) if numpy is missing.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("numpy is not available: skipping parity checks")
    sys.exit(77)

TIMEOUT_S = 120


class Tally:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def report(self, ok, label, detail):
        print(f"{'PASS' if ok else 'FAIL'} {label}: {detail}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1


def run(cmd):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT_S)
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        return None, "", f"timed out after {TIMEOUT_S} s"
    except OSError as e:
        return None, "", str(e)


def last_line(s):
    lines = [ln for ln in s.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def compare(got_path, want, tol):
    """(ok, detail) for the .npy at got_path against the expected array."""
    try:
        got = np.load(got_path, allow_pickle=False)
    except Exception as e:  # a malformed .npy is a failure, not a crash of the driver
        return False, f"cannot read {got_path}: {e}"
    if got.shape != want.shape:
        return False, f"shape {list(got.shape)} != expected {list(want.shape)}"
    if got.dtype != np.float32:
        return False, f"dtype {got.dtype} != float32"
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    finite = np.isfinite(g)
    if not finite.all():
        idx = tuple(int(i) for i in np.argwhere(~finite)[0])
        return False, f"{int((~finite).sum())} non-finite values, first at {list(idx)}"
    scale = float(np.max(np.abs(w)))
    diff = np.abs(g - w)
    idx = np.unravel_index(int(np.argmax(diff)), diff.shape)
    err = float(diff[idx]) / scale if scale > 0 else float(diff[idx])
    detail = (f"rel err {err:.2e} (tol {tol:.0e}, max|ref| {scale:.3g}); worst at "
              f"{[int(i) for i in idx]}: got {g[idx]:.6g} want {w[idx]:.6g}")
    return err <= tol, detail


def check_fixture(lmwb, fdir, tmp, tally, filt):
    name = os.path.basename(fdir.rstrip("/"))
    with open(os.path.join(fdir, "parity", "fixture.json")) as f:
        man = json.load(f)
    ids = man["ids"]
    tol = float(man.get("tolerance", 1e-3))
    jobs = [("logits", None, man["logits"])]
    jobs += [("grad", h, fn) for h, fn in man["grads"].items()]
    jobs += [("activations", h, fn) for h, fn in man["activations"].items()]
    for sub, hook, fn in jobs:
        label = f"{name} {sub}" + (f" {hook}" if hook else "")
        if filt and filt not in label:
            continue
        # "tolerances" tightens single checks (keyed "grad HOOK" / "activations HOOK").
        ctol = float(man.get("tolerances", {}).get(f"{sub} {hook}" if hook else sub, tol))
        out = os.path.join(tmp, f"{name}__{sub}__{hook or 'logits'}.npy")
        cmd = [lmwb, sub, "--model", fdir, "--ids", ids, "--out", out]
        if hook:
            cmd[4:4] = ["--hook", hook]
        rc, _, err = run(cmd)
        if rc != 0:
            tally.report(False, label, f"exit status {rc}: {last_line(err)}")
            continue
        want = np.load(os.path.join(fdir, "parity", fn))
        ok, detail = compare(out, want, ctol)
        tally.report(ok, label, detail)


def check_bad_input(lmwb, fdir, tmp, tally):
    """The CLI contract: bad input is exit status 2 with a message, never a crash."""
    with open(os.path.join(fdir, "parity", "fixture.json")) as f:
        ids = json.load(f)["ids"]
    rows = ids.split(";")
    with open(os.path.join(fdir, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    out = os.path.join(tmp, "bad.npy")
    cases = [
        ("unknown hook", ["grad", "--model", fdir, "--ids", ids, "--hook", "blocks.0.hook_nonsense", "--out", out]),
        ("layer out of range", ["activations", "--model", fdir, "--ids", ids, "--hook", "blocks.99.hook_resid_pre", "--out", out]),
        ("token id = vocab_size", ["logits", "--model", fdir, "--ids", f"{rows[0]},{vocab}", "--out", out]),
        ("negative token id", ["logits", "--model", fdir, "--ids", "1,-2,3", "--out", out]),
        ("ragged rows", ["logits", "--model", fdir, "--ids", f"{rows[0]};1,2", "--out", out]),
        ("non-numeric ids", ["logits", "--model", fdir, "--ids", "1,x,3", "--out", out]),
        ("missing model dir", ["logits", "--model", os.path.join(tmp, "no_such_model"), "--ids", "1,2", "--out", out]),
    ]
    for label, args in cases:
        rc, _, err = run([lmwb] + args)
        tally.report(rc == 2 and err.strip() != "", f"bad input: {label}",
                     f"exit status {rc} (want 2), stderr: {last_line(err) or '(empty)'}")


def main(argv):
    args = list(argv[1:])
    filt = None
    keep = None
    for opt in ("--filter", "--keep"):
        if opt in args:
            i = args.index(opt)
            if i + 1 >= len(args):
                print(f"{opt} needs a value", file=sys.stderr)
                return 2
            if opt == "--filter":
                filt = args[i + 1]
            else:
                keep = args[i + 1]
            del args[i:i + 2]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    lmwb, root = os.path.abspath(args[0]), os.path.abspath(args[1])
    if not os.access(lmwb, os.X_OK):
        print(f"{lmwb}: not an executable", file=sys.stderr)
        return 1
    fixtures = sorted(d for d in (os.path.join(root, n) for n in os.listdir(root))
                      if os.path.isfile(os.path.join(d, "parity", "fixture.json")))
    if not fixtures:
        print(f"{root}: no fixtures (parity/fixture.json) found", file=sys.stderr)
        return 1
    tally = Tally()
    tmp = keep or tempfile.mkdtemp(prefix="lmwb-parity-")
    os.makedirs(tmp, exist_ok=True)
    try:
        for fdir in fixtures:
            try:
                check_fixture(lmwb, fdir, tmp, tally, filt)
            except (OSError, ValueError, KeyError) as e:  # a broken fixture is a failure, not a crash
                tally.report(False, os.path.basename(fdir), f"fixture unreadable: {e}")
        if not filt or "bad input" in filt:
            try:
                check_bad_input(lmwb, fixtures[0], tmp, tally)
            except (OSError, ValueError, KeyError) as e:
                tally.report(False, "bad input", f"fixture unreadable: {e}")
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{tally.passed} passed, {tally.failed} failed")
    return 0 if tally.failed == 0 and tally.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
