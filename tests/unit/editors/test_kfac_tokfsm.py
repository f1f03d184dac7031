"""K-FAC memorisation editing does what the paper says on a model built for it (the shipped
data/models/tokfsm-mem: a TokFSM model that memorised 32 walks, each seen 300 times in training).

(a) the unedited model recites the memorised walks (strict recitation >= 90%);
(b) factors collected over ordinary walks of the same machine (regenerated here by `tokfsm make`
    with the model's seed; fsm.json must equal the shipped one), `kfac sweep` recommends a keep-mass
    at which strict recitation is below 10% while perplexity on held-out walks (one walk per window)
    rises less than 20% (500 held-out walks, one walk per window);
(c) the edited model saved by `kfac edit` at that ρ still walks the machine: `tokfsm eval` state
    accuracy stays within 2 points of the unedited model's;
(d) ρ = 1 changes nothing.
Usage: test_kfac_tokfsm.py LMWB_BATCH MODEL_DIR
"""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "reference"))
from cli_checks import check, finish, run_batch  # noqa: E402

BATCH, MODEL = sys.argv[1:3]


def run(*args):
    rc, out, err = run_batch(BATCH, *args)
    if rc != 0:
        print(err[-400:])
    return rc, out, err


def main():
    tmp = tempfile.mkdtemp(prefix="lmwb-kfac-tokfsm-")
    try:
        card = json.load(open(os.path.join(MODEL, "fsm", "fsm.json")))
        d = os.path.join(tmp, "walks")
        rc, _, _ = run("tokfsm", "make", "--states", str(card["states"]), "--edges", str(card["edges"]),
                       "--seed", str(card["seed"]), "--sequences", "600", "--valid", "1", "--out", d)
        check(rc == 0, "tokfsm make: ordinary walks of the model's machine")
        same = json.load(open(os.path.join(d, "fsm.json"))) == json.load(open(os.path.join(MODEL, "fsm", "fsm.json")))
        check(same, "the regenerated machine is the shipped one")
        f = os.path.join(tmp, "factors")
        rc, _, _ = run("kfac", "collect", "--model", MODEL, "--file", os.path.join(d, "train.txt"), "--tokens", "77400",
                       "--context", "129", "--layers", "0-3", "--matrices", "up,down", "--out", f, "--threads", "2")
        check(rc == 0, "kfac collect over 600 ordinary walks")
        walks = open(os.path.join(MODEL, "fsm", "valid.txt")).read().split("<|endoftext|>")[1:-1]
        heldout = os.path.join(tmp, "heldout.txt")
        with open(heldout, "w") as fh:  # the first 500 held-out walks
            fh.write("".join("<|endoftext|>" + w for w in walks[:500]) + "<|endoftext|>")
        common = ["--model", MODEL, "--set", os.path.join(MODEL, "memorised.jsonl"), "--heldout", heldout,
                  "--heldout-stride", "129", "--no-world", "--threads", "2"]
        rc, out, _ = run("kfac", "sweep", "--factors", f, "--keep-mass", "0.95,0.96,0.97,1", *common)
        check(rc == 0, "kfac sweep runs")
        if rc != 0:
            return
        s = json.loads(out)
        base = s["base"]
        print(json.dumps({"base": {k: base[k] for k in ("strict", "perplexity")},
                          "points": [{k: p[k] for k in ("keep_mass", "strict", "perplexity")} for p in s["points"]],
                          "recommended": s["recommended_keep_mass"]}))
        check(base["strict"] >= 0.9, f"(a) the unedited model recites {base['strict']:.0%} of the memorised walks")
        one = [p for p in s["points"] if p["keep_mass"] == 1][0]
        check(one["strict"] == base["strict"] and abs(one["perplexity"] - base["perplexity"]) < 1e-9,
              "(d) ρ = 1 changes nothing")
        rho = s["recommended_keep_mass"]
        rec = [p for p in s["points"] if p["keep_mass"] == rho]
        check(rho is not None and rho < 1 and rec, f"a keep-mass below 1 is recommended ({rho})")
        if not rec:
            return
        rec = rec[0]
        check(rec["strict"] < 0.1, f"(b) at ρ {rho} strict recitation {rec['strict']:.1%} < 10%")
        rise = rec["perplexity"] / base["perplexity"] - 1
        check(rise < 0.2, f"(b) held-out walk perplexity rises {rise:.1%} < 20%")
        e = os.path.join(tmp, "edited")
        rc, _, _ = run("kfac", "edit", "--model", MODEL, "--factors", f, "--keep-mass", str(rho), "--out", e)
        check(rc == 0, "kfac edit writes the edited model")
        acc = []
        for m in (MODEL, e):
            rc, out, _ = run("tokfsm", "eval", "--model", m, "--fsm", os.path.join(MODEL, "fsm"), "--sequences", "100",
                             "--threads", "2")
            acc.append(json.loads(out)["plain"]["state_accuracy"] if rc == 0 else float("nan"))
        check(acc[1] >= acc[0] - 0.02, f"(c) state accuracy {acc[0]:.3f} -> {acc[1]:.3f} (within 2 points)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


main()
finish()
