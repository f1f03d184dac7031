#!/usr/bin/python3
"""K-FAC factor collection speed: tokens/s of `lmwb-batch kfac collect` against PyTorch eager doing
the same collection in the same run.

Usage: bench_kfac.py LMWB_BATCH REFERENCE_DIR [MODEL_DIR]

The built-in model (4 layers, d_model 256, d_ff 1024, vocabulary 8192), windows of 128 tokens of
Brown text, 8 windows per forward/backward, up and down of every layer (8 factors: four 256² A and
1024² G, four 1024² A and 256² G), labels sampled from the model, sums in float64, 2 threads. The
PyTorch side is the float32 reference of tests/reference/hf_models.py (written op by op like
transformers' GPT-2) with the same hooks: forward, multinomial labels from the softmax, the summed
cross-entropy, backward to the hooked sites (no parameter gradients), and per site
sum += (xᵀx in float32) in float64 over every position but each window's last. lmwb's time is the
collection alone (its JSON's "seconds": no model load, no tokenizing). Prints a table and, on the
last line, JSON.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

BATCH_EXE, REF = sys.argv[1], sys.argv[2]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = sys.argv[3] if len(sys.argv) > 3 else os.path.join(ROOT, "data", "models", "tiny-world")
T, B, WINDOWS = 128, 8, 64


def text_file(d):
    shared = os.environ.get("LMWB_SHARED", os.path.join(ROOT, "..", "shared"))
    brown = os.path.join(shared, "data", "brown", "brown.txt")
    src = brown if os.path.exists(brown) else os.path.join(ROOT, "tests", "fixtures", "train", "brown_tiny.txt")
    with open(src, encoding="utf-8") as f:
        data = f.read(1_000_000)
    path = os.path.join(d, "text.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(data)
    return path


def lmwb_rate(text, d):
    p = subprocess.run([BATCH_EXE, "kfac", "collect", "--model", MODEL, "--file", text, "--tokens", str(WINDOWS * T),
                        "--context", str(T), "--batch", str(B), "--matrices", "up,down", "--threads", "2",
                        "--out", os.path.join(d, "f")], capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"kfac collect failed: {p.stderr}")
    r = json.loads(p.stdout)
    return r["tokens"] / r["seconds"]


def torch_rate(text):
    import torch
    sys.path.insert(0, REF)
    import hf_models
    torch.set_num_threads(2)
    p = subprocess.run([BATCH_EXE, "tokenize", "--model", MODEL, "--file", text, "--no-special"], capture_output=True,
                       text=True)
    ids = torch.tensor(json.loads(p.stdout)["ids"][: WINDOWS * T]).reshape(WINDOWS, T)
    model = hf_models.load_model(MODEL, dtype=torch.float32)
    L = model.config["n_layer"]
    sites = [(f"blocks.{l}.ln2.hook_normalized", f"blocks.{l}.mlp.hook_pre") for l in range(L)]
    sites += [(f"blocks.{l}.mlp.hook_post", f"blocks.{l}.hook_mlp_out") for l in range(L)]
    sums = {}
    gen = torch.Generator().manual_seed(1)
    # gradients flow from the embedding on, as lmwb's backward does; no parameter gradients
    edits = {"hook_embed": lambda x: x.detach().requires_grad_()}
    t0 = time.perf_counter()
    for w in range(0, WINDOWS, B):
        x = ids[w:w + B]
        logits = model.run(x, edits=edits)
        V = logits.shape[-1]
        with torch.no_grad():
            probs = torch.softmax(logits[:, :-1].reshape(-1, V), -1)
            y = torch.multinomial(probs, 1, generator=gen).reshape(-1)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), y, reduction="sum")
        loss.backward()
        with torch.no_grad():
            for hin, hout in sites:
                a = model.hooks[hin][:, :-1].reshape(-1, model.hooks[hin].shape[-1])
                g = model.hooks[hout].grad[:, :-1].reshape(-1, model.hooks[hout].shape[-1])
                for k, v in ((hin + ".A", a), (hout + ".G", g)):
                    s = (v.t() @ v).double()
                    sums[k] = sums[k] + s if k in sums else s
    return WINDOWS * T / (time.perf_counter() - t0)


def main():
    with tempfile.TemporaryDirectory() as d:
        text = text_file(d)
        ours = lmwb_rate(text, d)
        theirs = torch_rate(text)
    print(f"{'':24}{'tokens/s':>12}")
    print(f"{'lmwb kfac collect':24}{ours:12.0f}")
    print(f"{'PyTorch eager':24}{theirs:12.0f}")
    print(json.dumps({"tokens": WINDOWS * T, "lmwb_tokens_per_s": round(ours, 1),
                      "torch_tokens_per_s": round(theirs, 1), "ratio": round(ours / theirs, 3)}))


if __name__ == "__main__":
    main()
