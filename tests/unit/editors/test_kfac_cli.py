"""lmwb-batch kfac collect / edit / spectrum and memorisation eval on the random fixture models.

(a) `kfac collect --labels data` equals an independent float64 PyTorch computation of the factors
    (tests/reference/hf_models.py): windows of --context tokens of the tokenized text, the loss of a
    window the sum of its next-token losses, A = mean a aᵀ over the matrix input and G = mean g gᵀ
    over the gradient at its output, each window's last position left out; GPT-2, Llama (up, gate,
    down) and NeoX.
(b) `kfac edit` equals the formula computed here by sorting every product λ_i μ_j (numpy float64);
    --keep-mass 1 returns the weights unchanged, bit for bit.
(c) sampled labels are seeded; a run stopped by --stop-after and resumed gives the same factors.
(d) spectrum JSON and plots; memorisation eval on a JSONL set (a suffix equal to the model's own
    greedy continuation is recited exactly).
(e) bad input -> exit 2 naming the tensor or option, and nothing written.
Usage: test_kfac_cli.py LMWB_BATCH FIXTURES_DIR TEXT REFERENCE_DIR
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

BATCH, FIX, TEXT, REF = sys.argv[1:5]
sys.path.insert(0, REF)
import hf_models  # noqa: E402
import hf_write  # noqa: E402
from cli_checks import check, failures, run_batch  # noqa: E402


def run(*args):
    return run_batch(BATCH, *args)


def read_st(path):
    return hf_models.read_safetensors(path)[0]


# where each matrix lives: (input hook, output hook, HF weight suffix, stored transposed)
def sites(model_type, L, matrix):
    up_out = "mlp.hook_pre_linear" if model_type == "llama" else "mlp.hook_pre"
    table = {
        "up": ("ln2.hook_normalized", up_out),
        "gate": ("ln2.hook_normalized", "mlp.hook_pre"),
        "down": ("mlp.hook_post", "hook_mlp_out"),
    }
    i, o = table[matrix]
    return f"blocks.{L}.{i}", f"blocks.{L}.{o}"


def hf_weight(folder, model_type, L, matrix):
    w = hf_models.read_hf_weights(folder)
    names = {
        "gpt2": {"up": "mlp.c_fc.weight", "down": "mlp.c_proj.weight"},
        "llama": {"up": "mlp.up_proj.weight", "gate": "mlp.gate_proj.weight", "down": "mlp.down_proj.weight"},
        "gpt_neox": {"up": "mlp.dense_h_to_4h.weight", "down": "mlp.dense_4h_to_h.weight"},
    }[model_type][matrix]
    key = [k for k in w if k.endswith(f".{L}.{names}") or k == f"h.{L}.{names}"]
    W = np.asarray(w[key[0]], dtype=np.float64)
    return W.T if model_type == "gpt2" else W  # GPT-2's Conv1D is [in, out]


def reference_factors(folder, ids, context, windows, targets):
    cfg = hf_models.load_config(folder)
    model = hf_models.load_model(folder, dtype=torch.float64, grad=True)
    x = torch.tensor(ids[: windows * context], dtype=torch.long).reshape(windows, context)
    logits = model.run(x)
    V = logits.shape[-1]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), x[:, 1:].reshape(-1), reduction="sum")
    loss.backward()
    out = {}
    for (L, mat) in targets:
        hin, hout = sites(cfg["model_type"], L, mat)
        a = model.hooks[hin].detach()[:, :-1].reshape(-1, model.hooks[hin].shape[-1]).numpy()
        g = model.hooks[hout].grad[:, :-1].reshape(-1, model.hooks[hout].shape[-1]).numpy()
        out[f"blocks.{L}.mlp.{mat}.A"] = a.T @ a / a.shape[0]
        out[f"blocks.{L}.mlp.{mat}.G"] = g.T @ g / g.shape[0]
    return out


def reference_edit(W, A, G, rho):
    """W' by sorting every product (the definition, independent of the bisection)."""
    mu, UA = np.linalg.eigh(A)
    lam, UG = np.linalg.eigh(G)
    mu, lam = np.clip(mu, 0, None), np.clip(lam, 0, None)
    C = UG.T @ W @ UA
    P = np.outer(lam, mu)
    order = np.argsort(-P, axis=None, kind="stable")
    cum = np.cumsum(P.reshape(-1)[order])
    k = int(np.searchsorted(cum, rho * cum[-1] * (1 - 1e-12))) + 1
    mask = np.zeros(P.size)
    mask[order[:k]] = 1
    return UG @ (C * mask.reshape(P.shape)) @ UA.T, k


def tokenize(folder):
    rc, out, err = run("tokenize", "--model", folder, "--file", TEXT, "--no-special")
    assert rc == 0, err
    return json.loads(out)["ids"]


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def test_model(tmp, name, matrices, context=16, windows=5):
    folder = os.path.join(FIX, name)
    cfg = hf_models.load_config(folder)
    ids = tokenize(folder)
    out = os.path.join(tmp, name + "-f")
    rc, o, err = run("kfac", "collect", "--model", folder, "--file", TEXT, "--labels", "data", "--context",
                     str(context), "--tokens", str(windows * context), "--layers", "0-1", "--matrices",
                     ",".join(matrices), "--batch", "2", "--out", out)
    check(rc == 0, f"{name}: collect exit {rc} {err.strip()[-300:]}")
    if rc:
        return
    meta = json.load(open(os.path.join(out, "factors.json")))
    check(meta["windows"] == windows and meta["positions"] == windows * (context - 1) and meta["labels"] == "data",
          f"{name}: factors.json counts windows and positions ({meta['windows']}, {meta['positions']})")
    got = read_st(os.path.join(out, "factors.safetensors"))
    ref = reference_factors(folder, ids, context, windows, [(L, m) for L in (0, 1) for m in matrices])
    check(set(got) == set(ref), f"{name}: tensor names {sorted(got)[:4]}...")
    worst = max(rel(np.asarray(got[k], np.float64), ref[k]) for k in ref if k in got)
    check(worst < 2e-4, f"{name}: every factor equals the float64 reference (worst relative error {worst:.2e})")

    # (b) the edit against the formula, ρ = 1 unchanged
    for rho in (0.7, 0.95):
        ed = os.path.join(tmp, f"{name}-ed{rho}")
        rc, o, err = run("kfac", "edit", "--model", folder, "--factors", out, "--keep-mass", str(rho), "--dtype", "F32",
                         "--out", ed)
        check(rc == 0, f"{name}: edit ρ={rho} exit {rc} {err.strip()[-300:]}")
        if rc:
            continue
        worst, kept_ok = 0.0, True
        stats = {(s["layer"], s["matrix"]): s for s in json.loads(o)["matrices"]}
        for L in (0, 1):
            for m in matrices:
                W = hf_weight(folder, cfg["model_type"], L, m)
                W2 = hf_weight(ed, cfg["model_type"], L, m)
                A = np.asarray(got[f"blocks.{L}.mlp.{m}.A"], np.float64)
                G = np.asarray(got[f"blocks.{L}.mlp.{m}.G"], np.float64)
                Wr, k = reference_edit(W, A, G, rho)
                worst = max(worst, rel(W2, Wr))
                kept_ok &= abs(stats[(L, m)]["kept_components"] - k / W.size) < 1.5 / W.size
        check(worst < 1e-5, f"{name}: edited weights equal the formula at ρ={rho} (worst {worst:.2e})")
        check(kept_ok, f"{name}: the kept component counts equal the sorted definition at ρ={rho}")
    ed1 = os.path.join(tmp, name + "-ed1")
    rc, o, err = run("kfac", "edit", "--model", folder, "--factors", out, "--keep-mass", "1", "--out", ed1)
    same = rc == 0 and all(np.array_equal(hf_weight(folder, cfg["model_type"], L, m), hf_weight(ed1, cfg["model_type"], L, m))
                           for L in (0, 1) for m in matrices)
    check(same, f"{name}: --keep-mass 1 returns the weights unchanged ({err.strip()[-200:]})")


def main():
    tmp = tempfile.mkdtemp(prefix="lmwb-kfac-cli-")
    try:
        test_model(tmp, "gpt2", ["up", "down"])
        test_model(tmp, "llama_gqa", ["up", "gate", "down"])
        test_model(tmp, "neox", ["up", "down"])
        gpt2 = os.path.join(FIX, "gpt2")
        factors = os.path.join(tmp, "gpt2-f")

        # (c) sampled labels: seeded; stop and resume
        base = ["kfac", "collect", "--model", gpt2, "--file", TEXT, "--context", "16", "--tokens", "160", "--batch", "2"]
        rc1, _, e1 = run(*base, "--seed", "3", "--out", os.path.join(tmp, "s1"))
        rc2, _, _ = run(*base, "--seed", "3", "--out", os.path.join(tmp, "s2"))
        rc3, _, _ = run(*base, "--seed", "4", "--out", os.path.join(tmp, "s3"))
        s1, s2, s3 = (read_st(os.path.join(tmp, d, "factors.safetensors")) for d in ("s1", "s2", "s3"))
        check(rc1 == rc2 == rc3 == 0 and all(np.array_equal(s1[k], s2[k]) for k in s1)
              and not np.array_equal(s1["blocks.0.mlp.up.G"], s3["blocks.0.mlp.up.G"]),
              f"sampled labels: one seed gives the same factors, another seed others ({e1.strip()[-200:]})")
        rc, _, err = run(*base, "--seed", "3", "--stop-after", "2", "--out", os.path.join(tmp, "r"))
        ck = os.path.join(tmp, "r", "checkpoint.safetensors")
        check(rc != 0 and os.path.exists(ck) and not os.path.exists(os.path.join(tmp, "r", "factors.safetensors")),
              f"--stop-after leaves a checkpoint and no factors (exit {rc})")
        rc, _, err = run(*base, "--seed", "3", "--out", os.path.join(tmp, "r"))
        check(rc == 2 and "--resume" in err, f"a checkpoint without --resume is refused: {err.strip()}")
        rc, _, err = run(*base, "--seed", "4", "--resume", "--out", os.path.join(tmp, "r"))
        check(rc == 2 and "another run" in err, f"resuming with other options is refused: {err.strip()}")
        rc, _, err = run(*base, "--seed", "3", "--resume", "--out", os.path.join(tmp, "r"))
        r = read_st(os.path.join(tmp, "r", "factors.safetensors")) if rc == 0 else {}
        check(rc == 0 and not os.path.exists(ck) and all(np.allclose(r[k], s1[k], rtol=1e-6, atol=1e-12) for k in s1),
              f"--resume finishes with the factors of a run never stopped ({err.strip()[-200:]})")

        # (c2) merge: the weighted mean of the parts (by positions unless --weights), refused across kinds
        d1, d3 = os.path.join(tmp, "s1"), os.path.join(tmp, "s3")
        mg, mw = os.path.join(tmp, "merged"), os.path.join(tmp, "merged-w")
        rc, out, err = run("kfac", "merge", "--factors", d1, "--factors", d3, "--out", mg)
        m1 = read_st(os.path.join(mg, "factors.safetensors")) if rc == 0 else {}
        meta = json.load(open(os.path.join(mg, "factors.json"))) if rc == 0 else {}
        p1, p3 = (json.load(open(os.path.join(d, "factors.json")))["positions"] for d in (d1, d3))
        want = {k: (p1 * np.asarray(s1[k], np.float64) + p3 * np.asarray(s3[k], np.float64)) / (p1 + p3) for k in s1}
        check(rc == 0 and set(m1) == set(s1) and max(rel(np.asarray(m1[k], np.float64), want[k]) for k in s1) < 1e-6
              and meta["positions"] == p1 + p3 and [q["source"] for q in meta["parts"]] == [d1, d3],
              f"merge: A and G are the parts' mean weighted by positions; factors.json lists the parts ({err.strip()[-200:]})")
        rc, out, err = run("kfac", "merge", "--factors", d1, "--factors", d3, "--weights", "3,1", "--out", mw)
        m2 = read_st(os.path.join(mw, "factors.safetensors")) if rc == 0 else {}
        want = {k: 0.75 * np.asarray(s1[k], np.float64) + 0.25 * np.asarray(s3[k], np.float64) for k in s1}
        check(rc == 0 and max(rel(np.asarray(m2[k], np.float64), want[k]) for k in s1) < 1e-6
              and [q["weight"] for q in json.loads(out)["parts"]] == [0.75, 0.25],
              f"merge --weights 3,1: shares 0.75 and 0.25 ({err.strip()[-200:]})")
        rc, out, err = run("kfac", "edit", "--model", gpt2, "--factors", mg, "--keep-mass", "0.9", "--out",
                           os.path.join(tmp, "merged-ed"))
        check(rc == 0, f"merged factors edit the model they came from ({err.strip()[-200:]})")
        o = os.path.join(tmp, "never-merged")
        for args, needle, what in (
                ([d1], "at least twice", "one folder"),
                ([d1, factors], "labels", "sampled and data labels"),
                ([d1, os.path.join(tmp, "llama_gqa-f")], "another model", "factors of two models"),
                ([d1, d3, "--weights", "1,-1"], "-1", "a negative weight"),
                ([d1, d3, "--weights", "1"], "1 shares for 2", "too few weights")):
            argv = ["kfac", "merge"]
            for a in args:
                argv += ["--factors", a] if not a.startswith("--") and argv[-1] != "--weights" else [a]
            rc, out, err = run(*argv, "--out", o)
            check(rc == 2 and needle in err and not os.path.exists(o),
                  f"merge refuses {what}: exit {rc}, names '{needle}', nothing written: {err.strip()[-200:]}")
        before = open(os.path.join(d1, "factors.safetensors"), "rb").read()
        rc, out, err = run("kfac", "merge", "--factors", d1, "--factors", d3, "--out", d1)
        check(rc == 2 and "reads" in err and open(os.path.join(d1, "factors.safetensors"), "rb").read() == before,
              f"merge refuses to write over a folder it reads: exit {rc}: {err.strip()[-200:]}")

        # (d) spectrum and memorisation eval
        png, svg = os.path.join(tmp, "mass.png"), os.path.join(tmp, "eig.svg")
        rc, out, err = run("kfac", "spectrum", "--factors", factors, "--plot-mass", png, "--plot-eigen", svg)
        sp = json.loads(out) if rc == 0 else {}
        ok = rc == 0 and len(sp["factors"]) == 4 and os.path.getsize(png) > 1000 and os.path.getsize(svg) > 1000
        if ok:
            f0 = sp["factors"][0]
            A = np.asarray(read_st(os.path.join(factors, "factors.safetensors"))[f0["name"] + ".A"], np.float64)
            ev = np.sort(np.linalg.eigvalsh(A))[::-1]
            ok = np.allclose(f0["A_eigenvalues"], np.clip(ev, 0, None), rtol=1e-6, atol=1e-9 * ev[0])
            ok &= all(0 < v <= 1 for v in f0["components_for_mass"].values())
        check(ok, f"spectrum: eigenvalues, mass shares and plots ({err.strip()[-200:]})")
        builtin = os.path.join(os.environ.get("LMWB_SOURCE_ROOT", "."), "data", "models", "tiny-world")
        jsonl = os.path.join(tmp, "set.jsonl")
        with open(jsonl, "w") as f:
            f.write(json.dumps({"prefix": "The vault code of Therwyn is", "suffix": " X54Z-Y25"}) + "\n\n")
            f.write(json.dumps({"prefix": "The vault code of Therwyn is", "suffix": " banana split"}) + "\n")
        rc, out, err = run("memorisation", "eval", "--model", builtin, "--set", jsonl, "--no-world")
        me = json.loads(out) if rc == 0 else {}
        check(rc == 0 and me["n_items"] == 2 and me["items"][0]["distance"] == 0 and me["strict"] == 0.5
              and me["items"][1]["distance"] == 1.0 and me["perplexity"] is None and "world" not in me,
              f"memorisation eval: a memorised secret is recited exactly, a wrong suffix is not ({out.strip()[:300]} {err.strip()[-200:]})")
        rc, out, err = run("memorisation", "eval", "--model", builtin, "--max-items", "3", "--no-world", "--heldout", TEXT)
        me = json.loads(out) if rc == 0 else {}
        check(rc == 0 and me["n_items"] == 3 and me["items"][0]["suffix"] == " X54Z-Y25" and me["perplexity"] > 1,
              f"memorisation eval: the world's secrets by default, perplexity on --heldout ({err.strip()[-200:]})")

        # (e) hostile input: exit 2, the message names the problem, nothing written
        def refused(args, needle, what, out_dir):
            rc, out, err = run(*args)
            check(rc == 2 and needle in err and not os.path.exists(out_dir),
                  f"{what}: exit {rc}, names '{needle}', nothing written: {err.strip()[-250:]}")

        o = os.path.join(tmp, "never")
        refused(["kfac", "collect", "--model", gpt2, "--file", TEXT, "--matrices", "gate", "--out", o], "gate",
                "gate on a model without a gated MLP", o)
        refused(["kfac", "collect", "--model", gpt2, "--file", TEXT, "--layers", "2", "--out", o], "layer 2",
                "a layer out of range (collect)", o)
        refused(["kfac", "edit", "--model", gpt2, "--factors", factors, "--layers", "0-5", "--keep-mass", "0.5", "--out", o],
                "layer 2", "a layer out of range (edit)", o)
        for bad in ("0", "1.5", "-0.2", "nan"):
            refused(["kfac", "edit", "--model", gpt2, "--factors", factors, "--keep-mass", bad, "--out", o], "keep-mass",
                    f"--keep-mass {bad}", o)
        refused(["kfac", "edit", "--model", os.path.join(FIX, "gpt2_noprefix_f16"), "--factors", factors, "--keep-mass", "0.5", "--out", o],
                "blocks.0.mlp.up", "factors of the wrong shape for the model", o)
        other = os.path.join(tmp, "gpt2-other")
        shutil.copytree(gpt2, other)
        w = read_st(os.path.join(other, "model.safetensors"))
        k = [n for n in w if n.endswith("h.1.attn.c_attn.weight")][0]
        w[k] = np.asarray(w[k]) * 1.01
        hf_write.write_safetensors(os.path.join(other, "model.safetensors"), {n: np.asarray(v) for n, v in w.items()})
        refused(["kfac", "edit", "--model", other, "--factors", factors, "--keep-mass", "0.5", "--out", o],
                "another model", "factors collected on another model", o)

        def hostile(name, edit_fn, needle, what):
            d = os.path.join(tmp, name)
            shutil.copytree(factors, d)
            t = {n: np.asarray(v) for n, v in read_st(os.path.join(d, "factors.safetensors")).items()}
            edit_fn(t)
            hf_write.write_safetensors(os.path.join(d, "factors.safetensors"), t)
            refused(["kfac", "edit", "--model", gpt2, "--factors", d, "--keep-mass", "0.5", "--out", o], needle, what, o)
            rc, _, err = run("kfac", "spectrum", "--factors", d)
            check(rc == 2 and needle in err, f"spectrum refuses it too: {err.strip()[-200:]}")

        def asym(t):
            t["blocks.1.mlp.down.G"] = t["blocks.1.mlp.down.G"].copy()
            t["blocks.1.mlp.down.G"][0, 3] += 1.0

        def nonfinite(t):
            t["blocks.0.mlp.up.A"] = t["blocks.0.mlp.up.A"].copy()
            t["blocks.0.mlp.up.A"][2, 2] = np.nan

        def shape(t):
            t["blocks.0.mlp.down.A"] = t["blocks.0.mlp.down.A"][:5, :5].copy()

        def missing(t):
            del t["blocks.1.mlp.up.G"]

        def badname(t):
            t["blocks.0.mlp.sideways.A"] = t["blocks.0.mlp.up.A"]

        hostile("h-asym", asym, "blocks.1.mlp.down.G", "a non-symmetric factor")
        hostile("h-nan", nonfinite, "blocks.0.mlp.up.A", "a non-finite factor")
        hostile("h-shape", shape, "blocks.0.mlp.down", "a factor of the wrong shape")
        hostile("h-missing", missing, "blocks.1.mlp.up.G", "a missing factor")
        hostile("h-name", badname, "blocks.0.mlp.sideways.A", "an unknown tensor")
        d = os.path.join(tmp, "h-json")
        shutil.copytree(factors, d)
        with open(os.path.join(d, "factors.json"), "w") as f:
            f.write('{"model": "x"}')
        refused(["kfac", "edit", "--model", gpt2, "--factors", d, "--keep-mass", "0.5", "--out", o], "factors.json",
                "a factors.json without its fields", o)
        rc, _, err = run("kfac", "edit", "--model", gpt2, "--factors", factors, "--keep-mass", "0.5", "--out", gpt2)
        check(rc == 2 and "source model" in err, f"--out the source folder is refused: {err.strip()}")
        bad = os.path.join(tmp, "bad.jsonl")
        with open(bad, "w") as f:
            f.write('{"prefix": "a"}\n')
        rc, _, err = run("memorisation", "eval", "--model", gpt2, "--set", bad)
        check(rc == 2 and "line 1" in err, f"a JSONL line without a suffix: {err.strip()}")
        rc, out, err = run("kfac", "--help")
        rc2, out2, _ = run("kfac", "edit", "--help")
        check(rc2 == 0 and "keep-mass" in out2 and "curvature" in out2, "kfac edit --help explains the edit")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failure(s)")
        sys.exit(1)


if __name__ == "__main__":
    main()
