#!/usr/bin/python3
"""Transcoder training speed: tokens/s of one training step (encode, loss, backward, decoder
gradient projection, Adam, decoder renormalisation) in lmwb against PyTorch doing the same step on
the same activations from the same weights, in the same run.

Usage: bench_transcoder.py BENCH_TRANSCODER_STEP [MODEL_DIR]

The shape is the built-in model's: d_in = d_out = 256 (layer 0: blocks.0.ln2.hook_normalized ->
blocks.0.hook_mlp_out), d_sae 4096, a batch of 4096 tokens of stored activations, Adam lr 4e-4,
2 threads. Three starting points: a fresh ReLU transcoder with an L1 penalty weighted by decoder
norms (about a third of the features active: the dense phase of a ReLU run), a fresh TopK (k 32)
one, and the shipped transcoder of layer 0 (data/models/tiny-world/transcoders/layer_0, TopK 32,
trained), when it is there. lmwb runs its automatic choice (sparse entries when few features are
active) and, for reference, the dense GEMMs alone and the sparse entries alone. Every step is timed alone; both
sides are summarised the same way: the first two steps excluded as warm-up, the mean of the
fastest half of the rest. Prints a table and, on the last line, JSON with the rates and ratios.
"""
import json, os, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train import steady  # noqa: E402  the same summary of step times as the training benchmark

D_SAE, BATCH, STEPS, LAYER = 4096, 4096, 12, 0


def torch_times(d, steps):
    import numpy as np
    import torch
    torch.set_num_threads(2)
    norm = json.load(open(os.path.join(d, "norm.json")))
    x = torch.from_numpy(np.load(os.path.join(d, "x.npy"))) / norm["rho_x"]
    y = torch.from_numpy(np.load(os.path.join(d, "y.npy"))) / norm["rho_y"]
    p = torch.from_numpy(np.load(os.path.join(d, "params.npy")))
    ds, di, do = norm["d_sae"], x.shape[1], y.shape[1]
    # the flat layout of lmwb_tc_trainer_params: W_enc [d_sae, d_in], b_enc, W_dec [d_sae, d_out], b_dec
    o = 0
    W_enc = p[o:o + ds * di].reshape(ds, di).clone().requires_grad_(); o += ds * di
    b_enc = p[o:o + ds].clone().requires_grad_(); o += ds
    W_dec = p[o:o + ds * do].reshape(ds, do).clone().requires_grad_(); o += ds * do
    b_dec = p[o:o + do].clone().requires_grad_()
    opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=norm["lr"], betas=(0.9, 0.999), eps=1e-8)
    l1, k = norm["l1"], norm["k"]
    times, l0 = [], 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        pre = torch.addmm(b_enc, x, W_enc.t())
        if k:
            vals, idx = torch.topk(pre, k, dim=1)
            f = torch.zeros_like(pre).scatter(1, idx, torch.relu(vals))
        else:
            f = torch.relu(pre)
        out = torch.addmm(b_dec, f, W_dec)
        loss = ((out - y) ** 2).sum(1).mean()
        if l1:
            loss = loss + l1 * (f * W_dec.norm(dim=1)).sum(1).mean()
        opt.zero_grad(set_to_none=False)
        loss.backward()
        with torch.no_grad():
            g = W_dec.grad
            g -= (g * W_dec).sum(1, keepdim=True) / (W_dec * W_dec).sum(1, keepdim=True) * W_dec
        opt.step()
        with torch.no_grad():
            W_dec /= W_dec.norm(dim=1, keepdim=True)
        times.append(time.perf_counter() - t0)
        l0 = float((f > 0).sum(1).float().mean())
    return times, l0


def main():
    step_bin = sys.argv[1]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    model = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "data", "models", "tiny-world")
    if not os.path.exists(os.path.join(model, "tokenizer.json")):
        print(f"no model in {model}: skipping")
        sys.exit(77)
    shared = os.environ.get("LMWB_SHARED", os.path.join(root, "..", "shared"))
    brown = os.path.join(shared, "data", "brown", "brown.txt")
    shipped = os.path.join(model, "transcoders", f"layer_{LAYER}")
    starts = [("fresh ReLU", "relu", None), ("fresh TopK 32", "topk:32", None)]
    if os.path.exists(os.path.join(shipped, "cfg.json")):
        starts.append(("shipped layer 0", "relu", shipped))
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    results = {}
    print(f"transcoder training step, d_in 256, d_sae {D_SAE}, batch {BATCH} tokens, Adam, 2 threads")
    with tempfile.TemporaryDirectory() as tmp:
        text = os.path.join(tmp, "text.txt")
        src = brown if os.path.exists(brown) else os.path.join(root, "tests", "fixtures", "train", "brown_tiny.txt")
        with open(src, encoding="utf-8") as f:
            data = f.read(400_000)
        with open(text, "w", encoding="utf-8") as f:
            f.write(data)
        for i, (name, act, init) in enumerate(starts):
            d = os.path.join(tmp, f"start{i}")
            args = [step_bin, model, text, str(LAYER), str(D_SAE), str(BATCH), str(STEPS), d, act] + ([init] if init else [])
            run = subprocess.run(args, capture_output=True, text=True, env=env)
            if run.returncode != 0:
                print(run.stderr)
                sys.exit(1)
            ours = json.loads(run.stdout.strip().splitlines()[-1])
            ref, ref_l0 = torch_times(d, STEPS)
            tps = lambda times: BATCH / steady(times)
            r = {"lmwb_tokens_per_s": tps(ours["auto"]["seconds"]),
                 "lmwb_dense_tokens_per_s": tps(ours["dense"]["seconds"]),
                 "lmwb_sparse_tokens_per_s": tps(ours["sparse"]["seconds"]),
                 "pytorch_tokens_per_s": tps(ref), "l0": ours["auto"]["l0"], "pytorch_l0": ref_l0,
                 "sparse_steps": ours["auto"]["sparse_steps"]}
            r["ratio"] = r["lmwb_tokens_per_s"] / r["pytorch_tokens_per_s"]
            r["ratio_dense"] = r["lmwb_dense_tokens_per_s"] / r["pytorch_tokens_per_s"]
            results[name] = r
            print(f"  from {name}: L0 {r['l0']:.0f} (PyTorch {ref_l0:.0f}) after {STEPS} steps")
            print(f"    PyTorch eager + Adam       : {r['pytorch_tokens_per_s']:9.0f} tokens/s")
            print(f"    lmwb (automatic path)      : {r['lmwb_tokens_per_s']:9.0f} tokens/s   "
                  f"({r['sparse_steps']} of {STEPS} steps sparse)  ratio {r['ratio']:.2f}")
            print(f"    lmwb (dense GEMMs only)    : {r['lmwb_dense_tokens_per_s']:9.0f} tokens/s   ratio {r['ratio_dense']:.2f}")
            print(f"    lmwb (sparse entries only) : {r['lmwb_sparse_tokens_per_s']:9.0f} tokens/s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
