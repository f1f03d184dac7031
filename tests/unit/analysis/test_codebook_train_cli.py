"""lmwb-batch codebook train end to end on a fixture model.

(a) training lowers the reconstruction error (and the codes it writes load with --codebooks: the
    logits of the trained set differ from the model's); k-means starts lower than a random start;
    dead-code replacement re-seeds codes; --finetune trains the model too and writes it.
(b) a run stopped by --stop-after leaves a checkpoint; --resume finishes it with the same bytes as a
    run never stopped.
(c) bad input -> exit 2 naming the option.
Usage: test_codebook_train_cli.py LMWB_BATCH FIXTURES_DIR TEXT
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "reference"))
from cli_checks import check, failures, run_batch  # noqa: E402

BATCH, FIX, TEXT = sys.argv[1], sys.argv[2], sys.argv[3]
GPT2 = os.path.join(FIX, "gpt2")


def run(*args):
    return run_batch(BATCH, *args)


SMALL = ["--model", GPT2, "--sites", "attn,mlp", "--codes", "64", "--k", "4", "--context", "16", "--lr", "1e-2",
         "--file", TEXT]


def train(out, steps, *extra):
    rc, o, e = run("codebook", "train", *SMALL, "--steps", str(steps), "--out", out, *extra)
    return rc, (json.loads(o) if rc == 0 else None), e


def read(path):
    with open(path, "rb") as f:
        return f.read()


def main():
    tmp = tempfile.mkdtemp(prefix="lmwb-cb-train-")
    try:
        a = os.path.join(tmp, "a")
        rc, r, err = train(a, 120)
        check(rc == 0, f"train runs ({err.strip()[-300:]})")
        if r:
            print(json.dumps(r))
            check(r["after"]["mse"] < 0.7 * r["before"]["mse"],
                  f"training lowers the reconstruction error ({r['before']['mse']:.2f} -> {r['after']['mse']:.2f})")
            check(r["steps"] == 120 and r["sites"] == ["0:attn", "0:mlp", "1:attn", "1:mlp"], "steps and sites reported")
            check(all(os.path.exists(os.path.join(a, f)) for f in ("codebooks.json", "codebooks.safetensors",
                                                                    "train.json")), "the set and train.json written")
            check(not os.path.exists(os.path.join(a, "checkpoint")), "no checkpoint left by a finished run")
            ids = open(os.path.join(GPT2, "parity", "ids.txt")).read().strip()
            l1, l2 = os.path.join(tmp, "l1.npy"), os.path.join(tmp, "l2.npy")
            rc1, _, e1 = run("logits", "--model", GPT2, "--ids", ids, "--out", l1)
            rc2, _, e2 = run("logits", "--model", GPT2, "--ids", ids, "--codebooks", a, "--out", l2)
            check(rc1 == 0 and rc2 == 0 and not np.allclose(np.load(l1), np.load(l2)),
                  f"the trained set loads with --codebooks ({e2.strip()[-200:]})")
        km = os.path.join(tmp, "km")
        rc, rk, err = train(km, 1, "--kmeans")
        if r and rk:
            check(rk["before"]["mse"] < 0.6 * r["before"]["mse"],
                  f"k-means starts lower ({rk['before']['mse']:.2f} vs {r['before']['mse']:.2f})")
        rc, rd, err = train(os.path.join(tmp, "dead"), 60, "--dead-every", "20")
        check(rc == 0 and rd["dead_replaced"] > 0, f"dead codes are re-seeded ({rd and rd['dead_replaced']})")

        # fine-tuning the model with the codes (the paper's setting) lowers the LM loss further and
        # writes the model beside the set
        ft = os.path.join(tmp, "ft")
        rc, rf, err = train(ft, 60, "--finetune", "--model-lr", "3e-3")
        check(rc == 0 and r is not None and rf["after"]["loss"] < r["after"]["loss"] - 0.5,
              f"--finetune lowers the loss more ({rf and rf['after']['loss']} vs {r and r['after']['loss']}; "
              f"{err.strip()[-200:]})")
        ids = open(os.path.join(GPT2, "parity", "ids.txt")).read().strip()
        rc, _, err = run("logits", "--model", os.path.join(ft, "model"), "--ids", ids, "--codebooks", ft,
                         "--out", os.path.join(tmp, "ft.npy"))
        check(rc == 0, f"the fine-tuned model runs with its set ({err.strip()[-200:]})")
        rc, _, err = run("codebook", "train", *SMALL, "--steps", "5", "--finetune", "--stop-after", "2", "--out", ft)
        check(rc == 2 and "fine-tunes" in err, f"a fine-tuning run cannot be stopped and resumed ({err.strip()[-160:]})")

        # (b) stop and resume == one run
        full, part = os.path.join(tmp, "full"), os.path.join(tmp, "part")
        extra = ["--eval-windows", "-1", "--dead-every", "7", "--checkpoint-every", "5"]
        rc, _, err = train(full, 30, *extra)
        check(rc == 0, f"uninterrupted run ({err.strip()[-200:]})")
        rc, rp, err = train(part, 30, *extra, "--stop-after", "12")
        check(rc == 0 and rp["stopped"] and os.path.exists(os.path.join(part, "checkpoint", "state.safetensors")),
              f"--stop-after leaves a checkpoint ({err.strip()[-200:]})")
        rc, rp, err = train(part, 30, *extra, "--resume")
        check(rc == 0 and rp["steps"] == 30, f"--resume finishes ({err.strip()[-200:]})")
        f1, f2 = os.path.join(full, "codebooks.safetensors"), os.path.join(part, "codebooks.safetensors")
        check(os.path.exists(f2) and read(f1) == read(f2), "the resumed run's codes == the uninterrupted run's (bytes)")

        # (c) bad input
        def bad(args, field, what):
            rc, _, err = run("codebook", "train", *args)
            check(rc == 2 and field in err, f"bad input: {what} -> exit 2 naming {field!r} (rc {rc}: {err.strip()[-160:]})")
        o = ["--out", os.path.join(tmp, "bad")]
        bad(SMALL + ["--steps", "5", "--k", "65"] + o, "k 65", "k > codes")
        bad(SMALL + ["--steps", "5", "--layers", "2"] + o, "--layers", "a missing layer")
        bad(SMALL + ["--steps", "5", "--sites", "resid"] + o, "--sites", "an unknown site")
        bad(SMALL + o, "--steps", "no steps")
        bad(SMALL + ["--steps", "5", "--context", "1000"] + o, "context", "a context past the model's")
        bad(SMALL + ["--steps", "5", "--init", os.path.join(tmp, "nope")] + o, "--init", "a missing --init set")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failure(s)")
        sys.exit(1)
    print("all ok")


if __name__ == "__main__":
    main()
