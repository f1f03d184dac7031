#!/usr/bin/python3
"""Training speed: `lmwb-batch train` tokens/s against a PyTorch training step on the same model
shape, measured in the same run.

Usage: bench_train.py LMWB_BATCH [MODEL_DIR]

The shape is the built-in model's (GPT-2: 4 layers, d_model 256, 8 heads, vocab 8192, context 128),
batch 16 x 128 tokens, AdamW, 2 threads. PyTorch runs its eager GPT-2 (written out below from the
GPT-2 definition) with torch.optim.AdamW; lmwb-batch runs a short recipe on the built-in model's
tokenizer and a slice of text. Both are timed per step (lmwb-batch writes each step's seconds to
metrics.csv) and summarised the same way: the first two steps excluded as warm-up, the mean of the
fastest half of the rest.
Prints a table and, on the last line, JSON with both rates and the ratio.
"""
import json, math, os, subprocess, sys, tempfile, time

B, T, L, C, H, V, CTX, STEPS = 16, 128, 4, 256, 8, 8192, 128, 12


def torch_rate():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.set_num_threads(2)
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(s):
            super().__init__()
            s.ln1, s.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
            s.qkv, s.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            s.fc, s.out = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

        def forward(s, x):
            q, k, v = s.qkv(s.ln1(x)).split(C, dim=2)
            sh = lambda t: t.view(x.shape[0], T, H, C // H).transpose(1, 2)
            q, k, v = sh(q), sh(k), sh(v)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(C // H)
            mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
            att = att.masked_fill(mask, float("-inf")).softmax(-1)
            y = (att @ v).transpose(1, 2).reshape(x.shape[0], T, C)
            x = x + s.proj(y)
            return x + s.out(F.gelu(s.fc(s.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(s):
            super().__init__()
            s.wte, s.wpe = nn.Embedding(V, C), nn.Embedding(CTX, C)
            s.blocks = nn.ModuleList([Block() for _ in range(L)])
            s.lnf = nn.LayerNorm(C)

        def forward(s, ids):
            x = s.wte(ids) + s.wpe(torch.arange(T))
            for b in s.blocks:
                x = b(x)
            return s.lnf(x) @ s.wte.weight.t()

    model = GPT()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    ids = torch.randint(0, V, (B, T + 1))
    times = []
    for i in range(STEPS):
        t0 = time.perf_counter()
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    return B * T / steady(times)


def steady(times):
    """Seconds of a steady step: warm-up excluded, mean of the fastest half (both sides alike)."""
    rest = sorted(times[2:])[: max(3, len(times) // 2)]
    return sum(rest) / len(rest)


def lmwb_rate(batch, model_dir):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    shared = os.environ.get("LMWB_SHARED", os.path.join(root, "..", "shared"))
    brown = os.path.join(shared, "data", "brown", "brown.txt")
    with tempfile.TemporaryDirectory() as d:
        text = os.path.join(d, "text.txt")
        src = brown if os.path.exists(brown) else os.path.join(root, "tests", "fixtures", "train", "brown_tiny.txt")
        with open(src, encoding="utf-8") as f:
            data = f.read(2_000_000)
        with open(text, "w", encoding="utf-8") as f:
            f.write(data)
        recipe = {
            "out": os.path.join(d, "out"), "tokenizer": model_dir,
            "model": {"architecture": "gpt2", "n_layer": L, "d_model": C, "n_head": H, "context": CTX},
            "train_files": [text], "valid_files": [text], "batch": B, "seq": T, "steps": STEPS,
            "eval_every": 1000, "eval_batches": 1, "checkpoint_every": 1000, "threads": 2,
        }
        rp = os.path.join(d, "r.json")
        with open(rp, "w") as f:
            json.dump(recipe, f)
        subprocess.run([batch, "train", "--recipe", rp], capture_output=True, text=True, check=True)
        with open(os.path.join(d, "out", "metrics.csv")) as f:
            rows = [line.strip().split(",") for line in f][1:]
        return B * T / steady([float(r[-1]) for r in rows])


def main():
    batch = sys.argv[1]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    model_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "data", "models", "tiny-world")
    if not os.path.exists(os.path.join(model_dir, "tokenizer.json")):
        print(f"no tokenizer in {model_dir}: skipping")
        sys.exit(77)
    ours = lmwb_rate(batch, model_dir)
    ref = torch_rate()
    print(f"training step, GPT-2 {L}x{C}, vocab {V}, batch {B}x{T}, 2 threads")
    print(f"  PyTorch eager + AdamW : {ref:8.0f} tokens/s")
    print(f"  lmwb-batch train      : {ours:8.0f} tokens/s   (per step, validation off)")
    print(f"  ratio lmwb / PyTorch  : {ours / ref:8.2f}")
    print(json.dumps({"pytorch_tokens_per_s": ref, "lmwb_tokens_per_s": ours, "ratio": ours / ref}))


if __name__ == "__main__":
    main()
