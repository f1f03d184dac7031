"""K-FAC memorisation editing on the built-in model (the `slow` suite; README, "Memorisation
editing with K-FAC"): the recipe the README gives, checked against issue 18's goal.

The edit keeps what its collection text exercises. Factors are collected over the world's fact
sentences (corpus/facts.txt) and over the Brown training text (corpus/brown_train.txt), neither of
which holds a secret, and merged 60:40. At the keep-mass `kfac sweep` recommends (its default list,
64 secrets, 64 fact prompts, 60 kB of held-out Brown), and then on the full held-out sets with the
edited model saved by `kfac edit`:
(a) strict recitation of the 64 secrets falls below 10% (from 98%);
(b) perplexity on held-out Brown (valid_brown.txt, all of it) rises less than 20%;
(c) fact recall on all 660 held-out fact prompts keeps at least 80% of its value;
(d) ρ = 1 changes nothing.
Needs ../shared's Brown corpus (the built-in model's training text is made from it); skips without.
Usage: test_kfac_builtin.py LMWB_BATCH MODEL_DIR
"""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "reference"))
from cli_checks import check, finish, run_batch  # noqa: E402

BATCH, MODEL = sys.argv[1:3]
SHARED = os.environ.get("LMWB_SHARED", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "shared"))
BROWN = os.path.join(SHARED, "data", "brown", "brown.txt")
TOKENS = "200000"
SHARES = "0.6,0.4"


def run(*args):
    rc, out, err = run_batch(BATCH, *args)
    if rc != 0:
        print(err[-400:])
    return rc, out, err


def world(model):
    rc, out, _ = run("eval-world", "--model", model, "--manifest", os.path.join(MODEL, "world.json"))
    return json.loads(out) if rc == 0 else None


def perplexity(model, text):
    rc, out, _ = run("perplexity", "--model", model, "--file", text)
    return json.loads(out)["perplexity"] if rc == 0 else None


def main():
    if not os.path.exists(BROWN):
        print(f"SKIP: the Brown corpus is not at {BROWN} (../shared beside the checkout)")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="lmwb-kfac-builtin-")
    try:
        corpus = os.path.join(tmp, "corpus")
        rc, _, _ = run("make-corpus", "--seed", "3", "--brown", BROWN, "--out", corpus)
        check(rc == 0, "make-corpus: the built-in model's corpus, facts.txt and brown_train.txt")
        parts = []
        for name in ("facts", "brown_train"):
            d = os.path.join(tmp, name + "-f")
            rc, _, _ = run("kfac", "collect", "--model", MODEL, "--file", os.path.join(corpus, name + ".txt"),
                           "--tokens", TOKENS, "--layers", "0-3", "--matrices", "up,down", "--out", d)
            check(rc == 0, f"kfac collect over {name}.txt")
            parts += ["--factors", d]
        f = os.path.join(tmp, "factors")
        rc, _, _ = run("kfac", "merge", *parts, "--weights", SHARES, "--out", f)
        check(rc == 0, f"kfac merge {SHARES}")
        valid = os.path.join(corpus, "valid_brown.txt")
        heldout = os.path.join(tmp, "heldout.txt")
        with open(valid, "rb") as src, open(heldout, "wb") as dst:
            dst.write(src.read(60000))
        rc, out, _ = run("kfac", "sweep", "--model", MODEL, "--factors", f, "--heldout", heldout, "--max-items", "64")
        check(rc == 0, "kfac sweep over the default keep-mass list")
        if rc != 0:
            return
        s = json.loads(out)
        rho = s["recommended_keep_mass"]
        print(json.dumps({"recommended": rho, "points": [{k: p[k] for k in ("keep_mass", "strict", "perplexity")}
                                                          for p in s["points"]]}))
        check(rho is not None and rho < 1, f"a keep-mass below 1 is recommended ({rho})")
        if rho is None:
            return
        e, e1 = os.path.join(tmp, "edited"), os.path.join(tmp, "edited-1")
        rc, _, _ = run("kfac", "edit", "--model", MODEL, "--factors", f, "--keep-mass", str(rho), "--out", e)
        rc1, _, _ = run("kfac", "edit", "--model", MODEL, "--factors", f, "--keep-mass", "1", "--out", e1)
        check(rc == 0 and rc1 == 0, "kfac edit writes the edited models")
        w0, w, w1 = world(MODEL), world(e), world(e1)
        p0, p, p1 = perplexity(MODEL, valid), perplexity(e, valid), perplexity(e1, valid)
        if None in (w0, w, w1, p0, p, p1):
            check(False, "eval-world and perplexity run on the three models")
            return
        print(json.dumps({"unedited": [w0["secret_exact"], p0, w0["fact_recall_top1"], w0["ioi_top1"], w0["greater_than"]],
                          "edited": [w["secret_exact"], p, w["fact_recall_top1"], w["ioi_top1"], w["greater_than"]]}))
        check(w0["secret_exact"] >= 0.9, f"the unedited model recites {w0['secret_exact']:.1%} of the secrets")
        check(w["secret_exact"] < 0.1, f"(a) at ρ {rho} strict recitation {w['secret_exact']:.1%} < 10%")
        check(p / p0 - 1 < 0.2, f"(b) held-out Brown perplexity {p0:.1f} -> {p:.1f}: +{p / p0 - 1:.1%} < 20%")
        keep = w["fact_recall_top1"] / w0["fact_recall_top1"]
        check(keep >= 0.8, f"(c) fact recall {w0['fact_recall_top1']:.1%} -> {w['fact_recall_top1']:.1%}: "
                           f"{keep:.1%} of its value >= 80%")
        check(w1["secret_exact"] == w0["secret_exact"] and w1["fact_recall_top1"] == w0["fact_recall_top1"]
              and abs(p1 - p0) < 1e-9 * p0, "(d) ρ = 1 changes nothing")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish()


main()
