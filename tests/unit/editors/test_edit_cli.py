"""lmwb-batch edit end to end on the built-in model.

(a) `edit requests` writes CounterFact lines from the world's facts.
(b) `edit rome --out DIR` rewrites a fact (efficacy), saves a Hugging Face folder whose tensors, read
    here with numpy, equal the source's except the edited layer's c_proj, changed by a rank-one
    matrix; the source folder is untouched.
(c) `edit sequential` writes one line per step; line 0's monitor perplexity equals
    `perplexity --per-line`'s mean_line_perplexity on the same file; --save writes the last model;
    --plot and `edit plot` draw the logs.
(d) bad input -> exit 2 naming the problem, nothing written.
Usage: test_edit_cli.py LMWB_BATCH MODEL_DIR MONITOR
"""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "reference"))
import hf_models  # noqa: E402
from cli_checks import check, failures, run_batch  # noqa: E402

BATCH, MODEL, MONITOR = sys.argv[1], sys.argv[2], sys.argv[3]


def run(*args):
    return run_batch(BATCH, *args)


def read_safetensors(path):
    """The file's tensors in float64 (the reference reader checks every offset and shape)."""
    return {k: v.astype(np.float64) for k, v in hf_models.read_safetensors(path)[0].items()}


def folder_hash(d):
    h = hashlib.sha256()
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        if os.path.isfile(p):
            h.update(name.encode())
            with open(p, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


REQ = {"prompt": "{} works as a", "subject": "Shokus", "target_new": " butcher", "target_true": " lawyer",
       "neighborhood_prompts": ["Sekus works as a"]}


def main():
    if not os.path.exists(os.path.join(MODEL, "world.json")):
        print(f"no built-in model at {MODEL}: skipping")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="lmwb-edit-cli-")
    source = folder_hash(MODEL)
    try:
        # (a)
        reqs = os.path.join(tmp, "r.jsonl")
        rc, so, se = run("edit", "requests", "--model", MODEL, "--n", "2", "--neighbours", "2", "--out", reqs)
        lines = open(reqs).read().splitlines() if rc == 0 else []
        check(rc == 0 and len(lines) == 2 and all("requested_rewrite" in json.loads(x) for x in lines),
              f"edit requests writes 2 CounterFact lines (exit {rc}) {se.strip()[-200:]}")

        # (b)
        out = os.path.join(tmp, "edited")
        rc, so, se = run("edit", "rome", "--model", MODEL, "--request", json.dumps(REQ), "--layer", "1", "--no-stats",
                         "--steps", "15", "--out", out)
        check(rc == 0, f"edit rome (exit {rc}) {se.strip()[-300:]}")
        if rc == 0:
            res = json.loads(so)
            check(not res["before"]["efficacy"] and res["after"]["efficacy"] and res["after"]["p_new"] > 0.5,
                  f"efficacy: p_new {res['before']['p_new']:.3g} -> {res['after']['p_new']:.3g}")
            a = read_safetensors(os.path.join(MODEL, "model.safetensors"))
            b = read_safetensors(os.path.join(out, "model.safetensors"))
            changed = [k for k in a if not np.array_equal(a[k], b[k])]
            check(changed == ["transformer.h.1.mlp.c_proj.weight"], f"only layer 1's c_proj changed ({changed})")
            if changed:
                s = np.linalg.svd(b[changed[0]] - a[changed[0]], compute_uv=False)
                check(s[1] < 1e-2 * s[0], f"the change has rank one (singular values {s[0]:.3g}, {s[1]:.2g} after F16)")
            rc2, so2, _ = run("info", "--model", out)
            check(rc2 == 0, "the edited folder loads")
        check(folder_hash(MODEL) == source, "the source model is untouched")

        # (c)
        log = os.path.join(tmp, "log.jsonl")
        saved = os.path.join(tmp, "seq")
        rc, so, se = run("edit", "sequential", "--model", MODEL, "--requests", reqs, "--monitor", MONITOR, "--layer", "1",
                         "--no-stats", "--steps", "10", "--save", saved, "--plot", os.path.join(tmp, "seq.png"), "--out", log)
        check(rc == 0, f"edit sequential (exit {rc}) {se.strip()[-300:]}")
        if rc == 0:
            steps = [json.loads(x) for x in open(log).read().splitlines()]
            check([s["edit"] for s in steps] == [0, 1, 2] and steps[0]["subject"] is None,
                  "one log line per step, line 0 unedited")
            rc3, so3, _ = run("perplexity", "--model", MODEL, "--file", MONITOR, "--per-line")
            ref = json.loads(so3)["mean_line_perplexity"]
            check(abs(steps[0]["ppl"] - ref) < 1e-9 * ref, f"monitor perplexity {steps[0]['ppl']:.6g} = perplexity --per-line {ref:.6g}")
            with open(os.path.join(tmp, "seq.png"), "rb") as f:
                check(f.read(8) == b"\x89PNG\r\n\x1a\n", "--plot draws a PNG")
            both = os.path.join(tmp, "both.svg")
            rc5, _, se5 = run("edit", "plot", "--log", f"a={log}", "--log", f"b={log}", "--out", both)
            check(rc5 == 0 and open(both).read().count("<svg") == 1, f"edit plot draws two logs (exit {rc5}) {se5.strip()[-200:]}")
            rc6, _, se6 = run("edit", "plot", "--log", f"a={reqs}", "--out", os.path.join(tmp, "x.png"))
            check(rc6 == 2 and "not a step" in se6 and not os.path.exists(os.path.join(tmp, "x.png")),
                  f"edit plot refuses a file that is not a log (exit {rc6}) {se6.strip()[-200:]}")
            rc4, so4, _ = run("perplexity", "--model", saved, "--file", MONITOR, "--per-line")
            got = json.loads(so4)["mean_line_perplexity"] if rc4 == 0 else float("nan")
            check(abs(got - steps[2]["ppl"]) < 2e-2 * got, f"--save writes the last model (its perplexity {got:.5g} vs {steps[2]['ppl']:.5g}, F16)")

        # (d) bad input
        target = os.path.join(tmp, "bad-out")

        def bad(args, words, what):
            rc, so, se = run("edit", *args, "--model", MODEL)
            ok = rc == 2 and all(w in se for w in words) and not os.path.exists(target)
            check(ok, f"bad input: {what} -> exit 2 naming {words} (exit {rc}: {se.strip()[-300:]})")
            if os.path.exists(target):
                shutil.rmtree(target, ignore_errors=True)

        def req(**kw):
            r = dict(REQ)
            r.update(kw)
            return json.dumps(r)

        bad(["rome", "--request", req(prompt="Shokus works as a"), "--no-stats", "--out", target], ["{}"], "a prompt without {}")
        bad(["rome", "--request", req(target_new=""), "--no-stats", "--out", target], ["target_new"], "an empty target")
        bad(["rome", "--request", req(), "--layer", "9", "--no-stats", "--out", target], ["layer 9"], "a layer out of range")
        zero = os.path.join(tmp, "C1.safetensors")
        with open(zero, "wb") as f:
            hdr = json.dumps({"blocks.1.mlp.W_out.C": {"dtype": "F32", "shape": [1024, 1024],
                                                        "data_offsets": [0, 4 * 1024 * 1024]}}).encode()
            hdr += b" " * ((8 - len(hdr) % 8) % 8)
            f.write(struct.pack("<Q", len(hdr)) + hdr + bytes(4 * 1024 * 1024))
        bad(["rome", "--request", req(), "--layer", "1", "--stats", zero, "--out", target], ["positive definite"],
            "a singular covariance")
        bad(["rome", "--request", req(), "--layer", "0", "--stats", zero, "--out", target], ["blocks.0.mlp.W_out.C"],
            "statistics of another layer")
        empty = os.path.join(tmp, "empty.jsonl")
        open(empty, "w").close()
        bad(["memit", "--requests", empty, "--layers", "0-1", "--no-stats", "--out", target], ["no requests"], "an empty request file")
        broken = os.path.join(tmp, "broken.jsonl")
        with open(broken, "w") as f:
            f.write(req() + "\n" + '{"prompt": "{} is", "target_new": " x"}\n')
        bad(["memit", "--requests", broken, "--layers", "0-1", "--no-stats", "--out", target], ["line 2", "subject"],
            "a request without a subject")
        bad(["memit", "--requests", req(), "--layers", "2-1", "--no-stats", "--out", target], ["--layers"], "layers backwards")
        rc, so, se = run("edit", "rome", "--model", MODEL, "--request", req(), "--layer", "1", "--no-stats", "--steps", "1",
                         "--out", MODEL)
        check(rc == 2 and folder_hash(MODEL) == source, f"--out onto the source model is refused (exit {rc})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)


main()
