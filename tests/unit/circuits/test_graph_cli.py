"""lmwb-batch graph end to end, against an independent float64 computation of circuit-tracer's
definition.

(a) For random transcoder sets written here in both formats (SAELens folders and circuit-tracer's
    layer_{i}.safetensors + config.yaml) on the GPT-2, Llama (GQA) and NeoX fixtures, `graph
    --no-prune` gives the same graph from both, and every node and every edge weight equals the
    reference: the fixture run in float64 PyTorch (tests/reference/hf_models.py) with attention
    patterns and norm scales detached, each MLP's output replaced by f W_dec + b_dec + error (f and
    the error leaves), the embedding as a leaf at blocks.0.hook_resid_pre; the weight s -> t is s's
    output times d(t's value)/d(s's output) (t: a feature's encoder pre-activation, or a demeaned
    top logit).
(b) the pruned graph is a subgraph of the whole one, keeps every logit and token node and reports
    replacement and completeness scores in [0, 1]; DOT, SVG and PNG are written.
(c) bad input -> exit 2 naming the file, tensor or option; nothing is written.
Usage: test_graph_cli.py LMWB_BATCH FIXTURES_DIR REFERENCE_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

BATCH, FIX, REF = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, REF)
import hf_models as hm  # noqa: E402
import hf_write as hw  # noqa: E402
from cli_checks import check, failures, run_batch  # noqa: E402


def run(*args):
    return run_batch(BATCH, *args)


def random_set(cfg, d_sae, rng):
    """Per layer W_enc [d, d_sae], b_enc (negative, so that some features are off), W_dec, b_dec."""
    d = cfg["hidden_size"] if "hidden_size" in cfg else cfg["n_embd"]
    n = cfg["num_hidden_layers"] if "num_hidden_layers" in cfg else cfg["n_layer"]
    layers = []
    for _ in range(n):
        layers.append({
            "W_enc": (rng.standard_normal((d, d_sae)) / np.sqrt(d)).astype(np.float32),
            "b_enc": (-0.6 + 0.2 * rng.standard_normal(d_sae)).astype(np.float32),
            "W_dec": (0.3 * rng.standard_normal((d_sae, d)) / np.sqrt(d_sae)).astype(np.float32),
            "b_dec": (0.05 * rng.standard_normal(d)).astype(np.float32),
        })
    return layers


def write_saelens(folder, layers):
    for L, t in enumerate(layers):
        sub = os.path.join(folder, f"layer_{L}")
        os.makedirs(sub)
        d, d_sae = t["W_enc"].shape
        cfg = {"architecture": "transcoder", "d_in": d, "d_sae": d_sae, "d_out": d, "dtype": "float32",
               "apply_b_dec_to_input": False, "normalize_activations": "none",
               "metadata": {"model_name": "fixture", "hook_name": f"blocks.{L}.ln2.hook_normalized",
                            "hook_name_out": f"blocks.{L}.hook_mlp_out"}}
        with open(os.path.join(sub, "cfg.json"), "w") as f:
            json.dump(cfg, f)
        hw.write_safetensors(os.path.join(sub, "sae_weights.safetensors"), t)


def write_circuit_tracer(folder, layers):
    os.makedirs(folder)
    names = []
    for L, t in enumerate(layers):
        names.append(f"layer_{L}.safetensors")
        hw.write_safetensors(os.path.join(folder, names[-1]),
                             {"W_enc": np.ascontiguousarray(t["W_enc"].T), "b_enc": t["b_enc"], "W_dec": t["W_dec"],
                              "b_dec": t["b_dec"]})
    with open(os.path.join(folder, "config.yaml"), "w") as f:
        f.write('model_name: "fixture"\nfeature_input_hook: "ln2.hook_normalized"\n'
                'feature_output_hook: "hook_mlp_out"\ntranscoders:\n' + "".join(f'  - "{n}"\n' for n in names))


def reference(model_dir, layers, ids):
    """{node_id: index}, the dense [n, n] weights (row target) and the feature activations, in float64."""
    m = hm.load_model(model_dir)
    cfg = m.config
    nl = len(layers)
    T = len(ids)
    x = torch.tensor([ids])
    logits = m.run(x)
    ln2 = [m.hooks[f"blocks.{L}.ln2.hook_normalized"][0].detach() for L in range(nl)]
    mlp_out = [m.hooks[f"blocks.{L}.hook_mlp_out"][0].detach() for L in range(nl)]
    resid0 = m.hooks["blocks.0.hook_resid_pre"][0].detach()
    W = [{k: torch.from_numpy(v.astype(np.float64)) for k, v in t.items()} for t in layers]
    pre = [ln2[L] @ W[L]["W_enc"] + W[L]["b_enc"] for L in range(nl)]
    f = [torch.relu(p) for p in pre]
    err = [mlp_out[L] - (f[L] @ W[L]["W_dec"] + W[L]["b_dec"]) for L in range(nl)]
    # nodes, in lmwb's order: features (layer, pos, index), errors, tokens, logits
    feats = [(L, t, j) for L in range(nl) for t in range(T) for j in range(f[L].shape[1]) if f[L][t, j] > 0]
    probs = torch.softmax(logits[0, -1].detach(), -1)
    order = torch.argsort(probs, descending=True)
    top, cum = [], 0.0
    while len(top) < 10 and cum < 0.95:
        top.append(int(order[len(top)]))
        cum += float(probs[top[-1]])
    ids_of = [f"{L}_{j}_{t}" for L, t, j in feats] + [f"{L}_-1_{t}" for L in range(nl) for t in range(T)] + \
             [f"E_{ids[t]}_{t}" for t in range(T)] + [f"{nl + 1}_{v}_{T - 1}" for v in top]
    index = {s: i for i, s in enumerate(ids_of)}
    # the local replacement model: leaves for features, errors and embeddings
    F = [f[L].clone().requires_grad_(True) for L in range(nl)]
    E = [err[L].clone().requires_grad_(True) for L in range(nl)]
    R0 = resid0.clone().requires_grad_(True)
    edits = {"blocks.0.hook_resid_pre": lambda _x: R0.unsqueeze(0)}
    for L in range(nl):
        edits[f"blocks.{L}.hook_mlp_out"] = (lambda L: lambda _m: (F[L] @ W[L]["W_dec"] + W[L]["b_dec"] + E[L]).unsqueeze(0))(L)
    m.freeze = {"pattern", "norm"}
    lg = m.run(x, edits)
    check(float((lg - logits).abs().max()) < 1e-9, f"{os.path.basename(model_dir)}: the replacement model equals the model")
    ln2r = [m.hooks[f"blocks.{L}.ln2.hook_normalized"][0] for L in range(nl)]
    targets = [ln2r[L][t] @ W[L]["W_enc"][:, j] + W[L]["b_enc"][j] for L, t, j in feats]
    last = lg[0, -1]
    targets += [last[v] - last.mean() for v in top]
    n = len(ids_of)
    A = np.zeros((n, n))
    nf = len(feats)
    row_of = list(range(nf)) + [n - len(top) + k for k in range(len(top))]
    leaves = F + E + [R0]
    for r, tv in zip(row_of, targets):
        g = torch.autograd.grad(tv, leaves, retain_graph=True, allow_unused=True)
        gF, gE, gR = g[:nl], g[nl:2 * nl], g[2 * nl]
        for c, (L, t, j) in enumerate(feats):
            if gF[L] is not None:
                A[r, c] = float(f[L][t, j] * gF[L][t, j])
        for L in range(nl):
            if gE[L] is not None:
                for t in range(T):
                    A[r, nf + L * T + t] = float(err[L][t] @ gE[L][t])
        if gR is not None:
            for t in range(T):
                A[r, nf + nl * T + t] = float(resid0[t] @ gR[t])
    acts = {f"{L}_{j}_{t}": float(f[L][t, j]) for L, t, j in feats}
    probs_top = {f"{nl + 1}_{v}_{T - 1}": float(probs[v]) for v in top}
    return index, A, acts, probs_top


def graph_of(path):
    with open(path) as f:
        return json.load(f)


def compare(name, g, index, A, acts, probs_top):
    nodes = {n["node_id"]: n for n in g["nodes"]}
    check(set(nodes) == set(index), f"{name}: the same nodes ({len(nodes)} vs {len(index)} in the reference)")
    if set(nodes) != set(index):
        return
    scale = np.abs(A).max()
    B = np.zeros_like(A)
    for link in g["links"]:
        B[index[link["target"]], index[link["source"]]] += link["weight"]
    worst = np.abs(A - B).max() / scale
    check(worst < 2e-4, f"{name}: every edge weight equals the reference (worst {worst:.2e} of the largest)")
    nz = int((np.abs(A) > 1e-6 * scale).sum())
    check(abs(len(g["links"]) - nz) <= nz // 100 + 1, f"{name}: every non-zero edge is written ({len(g['links'])} vs {nz})")
    da = max(abs(nodes[k]["activation"] - v) / (1 + abs(v)) for k, v in acts.items())
    check(da < 1e-4, f"{name}: feature activations ({da:.1e})")
    dp = max(abs(nodes[k]["token_prob"] - v) for k, v in probs_top.items())
    check(dp < 1e-5, f"{name}: logit probabilities ({dp:.1e})")
    target = [k for k, n in nodes.items() if n["is_target_logit"]]
    check(target == [max(probs_top, key=probs_top.get)], f"{name}: the target logit is the most probable")


def main():
    tmp = tempfile.mkdtemp(prefix="lmwb-graph-cli-")
    rng = np.random.default_rng(5)
    try:
        for fixture, ids in (("gpt2", [3, 14, 15, 92, 65, 35, 89]), ("llama_gqa", [5, 14, 15, 92, 65, 35]),
                             ("neox", [3, 14, 15, 92, 65, 35])):
            model = os.path.join(FIX, fixture)
            cfg = hm.load_config(model)
            layers = random_set(cfg, 40, rng)
            sl, ct = os.path.join(tmp, fixture + "-saelens"), os.path.join(tmp, fixture + "-ct")
            write_saelens(sl, layers)
            write_circuit_tracer(ct, layers)
            ids_s = ",".join(map(str, ids))
            outs = []
            for s in (sl, ct):
                out = os.path.join(tmp, f"{os.path.basename(s)}.json")
                rc, so, se = run("graph", "--model", model, "--transcoders", s, "--ids", ids_s, "--no-prune", "--out", out)
                check(rc == 0, f"{fixture}: graph --no-prune from {os.path.basename(s)} (exit {rc}) {se.strip()[-200:]}")
                outs.append(out)
            if not all(os.path.exists(o) for o in outs):
                continue
            a, b = graph_of(outs[0]), graph_of(outs[1])
            check(a["nodes"] == b["nodes"] and a["links"] == b["links"], f"{fixture}: both formats give the same graph")
            compare(fixture, a, *reference(model, layers, ids))

            # (b) pruned, and the other exports
            pruned = os.path.join(tmp, fixture + "-pruned.json")
            rc, so, se = run("graph", "--model", model, "--transcoders", sl, "--ids", ids_s, "--out", pruned)
            check(rc == 0, f"{fixture}: pruned graph (exit {rc}) {se.strip()[-200:]}")
            if rc == 0:
                summary = json.loads(so)
                p = graph_of(pruned)
                whole = {n["node_id"] for n in a["nodes"]}
                kept = {n["node_id"] for n in p["nodes"]}
                check(kept <= whole and len(kept) < len(whole), f"{fixture}: pruning keeps a subset ({len(kept)} of {len(whole)})")
                fixed = {n["node_id"] for n in a["nodes"] if n["feature_type"] in ("embedding", "logit")}
                check(fixed <= kept, f"{fixture}: every token and logit node is kept")
                wl = {(x["source"], x["target"]): x["weight"] for x in a["links"]}
                check(all(wl.get((x["source"], x["target"])) == x["weight"] for x in p["links"]),
                      f"{fixture}: pruned edges keep their weights")
                check(0 <= summary["replacement_score"] <= 1 and 0 <= summary["completeness_score"] <= 1,
                      f"{fixture}: scores in [0, 1] ({summary['replacement_score']:.3f}, {summary['completeness_score']:.3f})")
                check(p["metadata"]["node_threshold"] == 0.8, f"{fixture}: the node threshold is recorded")
            for ext, magic in (("dot", b"digraph"), ("svg", b"<?xml"), ("png", b"\x89PNG")):
                out = os.path.join(tmp, f"{fixture}.{ext}")
                rc, so, se = run("graph", "--model", model, "--transcoders", ct, "--ids", ids_s, "--out", out)
                with open(out, "rb") if rc == 0 else open(os.devnull, "rb") as f:
                    head = f.read(64)
                check(rc == 0 and magic in head, f"{fixture}: --out .{ext} writes {ext} (exit {rc}) {se.strip()[-200:]}")

        # (c) bad input: exit 2, the message names the problem, nothing written
        model = os.path.join(FIX, "gpt2")
        good = os.path.join(tmp, "gpt2-saelens")
        out = os.path.join(tmp, "bad.json")

        def bad(args, words, what):
            rc, so, se = run("graph", "--model", model, *args, "--out", out)
            ok = rc == 2 and all(w in se for w in words) and not os.path.exists(out)
            check(ok, f"bad input: {what} -> exit 2 naming {words} (exit {rc}: {se.strip()[-300:]})")
            if os.path.exists(out):
                os.unlink(out)

        def variant(name, edit):
            d = os.path.join(tmp, name)
            shutil.copytree(good, d)
            edit(d)
            return d

        missing = variant("missing", lambda d: shutil.rmtree(os.path.join(d, "layer_1")))
        bad(["--transcoders", missing, "--ids", "3,4,5"], ["layer_1"], "a missing layer")
        lay = random_set(hm.load_config(model), 40, rng)
        lay[0]["W_dec"] = lay[0]["W_dec"][:, :32].copy()
        wrong = os.path.join(tmp, "wrong")
        write_saelens(wrong, lay)
        bad(["--transcoders", wrong, "--ids", "3,4,5"], ["W_dec", "layer_0"], "a transcoder that does not fit the model")
        nan = random_set(hm.load_config(model), 40, rng)
        nan[1]["W_enc"][3, 7] = np.nan
        nanset = os.path.join(tmp, "nan")
        write_saelens(nanset, nan)
        bad(["--transcoders", nanset, "--ids", "3,4,5"], ["W_enc", "non-finite", "layer_1"], "NaN weights")

        def truncate(d):
            p = os.path.join(d, "layer_0", "sae_weights.safetensors")
            with open(p, "rb") as f:
                data = f.read()
            with open(p, "wb") as f:
                f.write(data[:len(data) // 2])
        trunc = variant("truncated", truncate)
        bad(["--transcoders", trunc, "--ids", "3,4,5"], ["sae_weights.safetensors"], "a truncated safetensors file")
        bad(["--transcoders", good, "--prompt", ""], ["--prompt"], "an empty prompt")
        bad(["--transcoders", good], ["--prompt"], "no prompt")
        bad(["--transcoders", good, "--ids", "3,4,5", "--format", "gif"], ["gif"], "an unknown format")
        bad(["--transcoders", good, "--ids", "3,4,5", "--node-threshold", "1.5"], ["--node-threshold"], "a threshold above 1")
        bad(["--transcoders", good, "--ids", "3,4,99999"], ["99999"], "a token id past the vocabulary")
        bad(["--transcoders", os.path.join(tmp, "nowhere"), "--ids", "3,4,5"], ["nowhere"], "a set that does not exist")
        # never over a file it reads
        victim = os.path.join(tmp, "gpt2-copy")
        shutil.copytree(model, victim)
        target = os.path.join(victim, "model.safetensors")
        before = open(target, "rb").read()
        rc, so, se = run("graph", "--model", victim, "--transcoders", good, "--ids", "3,4,5", "--out", target)
        check(rc == 2 and open(target, "rb").read() == before, f"--out onto the model's weights is refused (exit {rc})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)


main()
