"""lmwb-batch neurons decode / --clamp against independent references, and bad-input exits.

(a) `neurons decode` JSON == neurons_reference.py (numpy float64 from the safetensors): top-k ids
    identical, probabilities within 1e-4; in/out on GPT-2 (Conv1D orientation), both GPT-2 file
    layouts, in/out/gate on Llama, in/out on NeoX, with and without the final norm gain; CSV too.
(b) `logits --clamp L:N=V[@P]` == hf_models.py's float64 forward with blocks.L.mlp.hook_post[..., N]
    set to V (at every position / at chosen positions only), and hook_pre with --clamp-site pre.
(d) bad input -> exit 2 with a message naming it.
Usage: test_neurons_cli.py LMWB_BATCH FIXTURES_DIR
"""
import csv
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "reference"))
import hf_models  # noqa: E402
import neurons_reference  # noqa: E402
from cli_checks import check, failures, run_batch  # noqa: E402

BATCH, FIX = sys.argv[1], sys.argv[2]


def run(*args):
    return run_batch(BATCH, *args)


def decode_case(model, which, layers, k, norm=True, block=None):
    folder = os.path.join(FIX, model)
    args = ["neurons", "decode", "--model", folder, "--which", which, "--layers", ",".join(map(str, layers)),
            "--top", str(k)]
    if not norm:
        args.append("--no-norm")
    if block:
        args += ["--block", str(block)]
    rc, out, err = run(*args)
    name = f"decode {model} {which} layers={layers} k={k} norm={norm} block={block}"
    if rc != 0:
        check(False, f"{name}: exit {rc}: {err.strip()}")
        return
    got = json.loads(out)["neurons"]
    want = neurons_reference.decode(folder, which, layers, k, norm)
    ok = len(got) == len(want)
    worst, bad = 0.0, None
    for g, w in zip(got, want):
        if (g["layer"], g["index"], g["which"]) != (w["layer"], w["index"], w["which"]):
            ok, bad = False, (g["layer"], g["index"], "order")
            break
        gi = [t["id"] for t in g["top"]]
        wi = [t["id"] for t in w["top"]]
        if gi != wi:
            ok, bad = False, (g["layer"], g["index"], gi, wi)
            break
        for gt, wt in zip(g["top"], w["top"]):
            worst = max(worst, abs(gt["prob"] - wt["prob"]))
            if "token" not in gt:
                ok = False
    check(ok and worst <= 1e-4, f"{name}: {len(got)} neurons, ids identical, max |dprob| {worst:.1e}"
          + (f" (first mismatch {bad})" if bad else ""))


# (a) decode == reference
decode_case("gpt2", "in", [0, 1], 10)
decode_case("gpt2", "out", [0, 1], 10)
decode_case("gpt2", "in", [1], 5, norm=False)
decode_case("gpt2", "out", [0], 7, block=48)       # block not dividing d_ff = 128
decode_case("gpt2_noprefix_f16", "in", [0], 10)
decode_case("gpt2_noprefix_f16", "out", [0], 10)
decode_case("llama_gqa", "in", [0, 1], 10)
decode_case("llama_gqa", "gate", [0, 1], 10)
decode_case("llama_gqa", "out", [1], 10)
decode_case("llama_gqa", "gate", [0], 3, norm=False)
decode_case("llama_bf16_sharded", "out", [0], 10)
decode_case("neox", "in", [0], 10)
decode_case("neox", "out", [1], 10)

# The norm gain matters on these fixtures (so the norm=True cases test something).
M, head, gain = neurons_reference.vectors(os.path.join(FIX, "gpt2"), "in", 0)
check(np.abs(gain - 1).max() > 0.05, "gpt2 fixture's ln_f gain differs from 1")

# CSV output: same numbers, one row per neuron.
with tempfile.TemporaryDirectory() as td:
    path = os.path.join(td, "d.csv")
    rc, out, err = run("neurons", "decode", "--model", os.path.join(FIX, "llama_gqa"), "--which", "out",
                       "--layers", "1", "--top", "3", "--out", path)
    ok = rc == 0
    if ok:
        rows = list(csv.reader(open(path, newline="")))
        want = neurons_reference.decode(os.path.join(FIX, "llama_gqa"), "out", [1], 3)
        ok = rows[0] == ["layer", "index", "which", "rank1_token", "rank1_prob", "rank2_token", "rank2_prob",
                         "rank3_token", "rank3_prob"] and len(rows) == 1 + len(want)
        for r, w in zip(rows[1:], want):
            ok = ok and int(r[0]) == w["layer"] and int(r[1]) == w["index"] and r[2] == "out"
            ok = ok and all(abs(float(r[4 + 2 * j]) - w["top"][j]["prob"]) <= 1e-4 for j in range(3))
    check(ok, f"decode --out .csv: header and rows match the reference ({err.strip()[:200]})")


# (b) clamp == reference edit at hook_post / hook_pre
def clamp_case(model, clamp, site="post"):
    folder = os.path.join(FIX, model)
    ids = [[5, 17, 42, 99, 3, 250], [7, 8, 9, 10, 11, 12]]
    ids_arg = ";".join(",".join(map(str, r)) for r in ids)
    L, rest = clamp.split(":")
    N, rest = rest.split("=")
    V, _, pos = rest.partition("@")
    L, N, V = int(L), int(N), float(V)
    positions = [int(p) for p in pos.split(",")] if pos else None
    with tempfile.TemporaryDirectory() as td:
        out = os.path.join(td, "l.npy")
        base = os.path.join(td, "b.npy")
        rc, _, err = run("logits", "--model", folder, "--ids", ids_arg, "--clamp", clamp, "--clamp-site", site, "--out", out)
        rc2, _, _ = run("logits", "--model", folder, "--ids", ids_arg, "--out", base)
        if rc != 0 or rc2 != 0:
            check(False, f"clamp {model} {clamp} {site}: exit {rc}: {err.strip()}")
            return
        got, unclamped = np.load(out), np.load(base)
    ref = hf_models.load_model(folder)
    hook = f"blocks.{L}.mlp.hook_{site}"

    def edit(x):
        x = x.clone()
        if positions is None:
            x[..., N] = V
        else:
            x[:, positions, N] = V
        return x

    with torch.no_grad():
        want = ref.run(torch.tensor(ids), edits={hook: edit}).numpy()
    err = np.abs(got - want).max() / np.abs(want).max()
    moved = np.abs(unclamped - want).max() / np.abs(want).max()
    # With positions, logits before the first clamped position must be untouched.
    untouched = True
    if positions is not None:
        p0 = min(positions)
        untouched = np.abs(got[:, :p0] - unclamped[:, :p0]).max() == 0
    check(err <= 1e-4 and moved > 1e-2 and untouched,
          f"clamp {model} {clamp} at hook_{site}: rel err {err:.1e}, the clamp moved logits by {moved:.2f}"
          + ("" if positions is None else f", positions < {min(positions)} untouched={untouched}"))


clamp_case("gpt2", "1:5=8")
clamp_case("gpt2", "0:100=-3@2,4")
clamp_case("llama_gqa", "0:7=5")
clamp_case("llama_gqa", "1:90=4@3", site="pre")
clamp_case("neox", "1:3=6@1,5")

# (d) bad input -> exit 2 naming it
gpt2, llama = os.path.join(FIX, "gpt2"), os.path.join(FIX, "llama_gqa")
bad = [
    (["neurons", "decode", "--model", gpt2, "--layers", "0,7"], "\"7\""),
    (["neurons", "decode", "--model", gpt2, "--layers", "1-0"], "--layers"),
    (["neurons", "decode", "--model", gpt2, "--layers", "x"], "--layers"),
    (["neurons", "decode", "--model", gpt2, "--which", "gate"], "gate"),
    (["neurons", "decode", "--model", gpt2, "--which", "up"], "--which"),
    (["neurons", "decode", "--model", gpt2, "--top", "0"], "--top"),
    (["neurons", "search", "--model", gpt2, "--token", "zzqqxx"], "zzqqxx"),
    (["neurons", "search", "--model", gpt2, "--regex", "("], "--regex"),
    (["neurons", "search", "--model", gpt2, "--regex", "^NOTHING MATCHES$"], "--regex"),
    (["neurons", "search", "--model", gpt2], "--token"),
    (["neurons", "sweep", "--model", gpt2, "--layer", "5", "--neuron", "0", "--target", "a", "--prompt", "a b"], "layer 5"),
    (["neurons", "sweep", "--model", gpt2, "--layer", "0", "--neuron", "128", "--target", "a", "--prompt", "a b"], "neuron 128"),
    (["neurons", "compare", "--model", gpt2, "--other", llama], "same shapes"),
    (["logits", "--model", gpt2, "--ids", "1,2,3", "--clamp", "0:999=1", "--out", "/tmp/x.npy"], "999"),
    (["logits", "--model", gpt2, "--ids", "1,2,3", "--clamp", "0-1=1", "--out", "/tmp/x.npy"], "--clamp"),
    (["logits", "--model", gpt2, "--ids", "1,2,3", "--clamp", "3:1=1", "--out", "/tmp/x.npy"], "layer"),
    (["generate", "--model", gpt2, "--prompt", "a", "--clamp", "0:1=abc"], "abc"),
]
for args, needle in bad:
    rc, out, err = run(*args)
    check(rc == 2 and needle in err, f"exit 2 naming {needle!r}: {' '.join(args[:2])} {' '.join(args[3:][-4:])} "
          f"-> {rc}: {err.strip()[:140]}")

# search finds what decode says: a neuron's own top-1 token gives it rank 1.
rc, out, _ = run("neurons", "decode", "--model", llama, "--layers", "1", "--which", "out", "--top", "1")
top = json.loads(out)["neurons"][17]["top"][0]["id"]
rc, out, err = run("neurons", "search", "--model", llama, "--layers", "1", "--which", "out", "--tokens", "", "--limit", "5")
check(rc == 2, "search with an empty --tokens list -> exit 2")
want = neurons_reference.decode(llama, "out", [1], 320)
ranks = sorted((next(j for j, t in enumerate(w["top"]) if t["id"] == top) + 1, -w["top"][0]["prob"], w["index"])
               for w in want)
tok_raw = None
with open(os.path.join(llama, "tokenizer.json")) as f:
    vocab = json.load(f)["model"]["vocab"]
tok_raw = next(k for k, v in vocab.items() if v == top)
rc, out, err = run("neurons", "search", "--model", llama, "--layers", "1", "--which", "out", "--token", tok_raw, "--limit", "0")
if rc == 0:
    hits = json.loads(out)["neurons"]
    got_ranks = {h["index"]: h["rank"] for h in hits}
    want_ranks = {w["index"]: next(j for j, t in enumerate(w["top"]) if t["id"] == top) + 1 for w in want}
    ordered = all(hits[i]["rank"] <= hits[i + 1]["rank"] for i in range(len(hits) - 1))
    check(got_ranks == want_ranks and ordered and hits[0]["rank"] == 1 and any(h["index"] == 17 for h in hits[:len([r for r in want_ranks.values() if r == 1])]),
          f"search --token {tok_raw!r}: every neuron's rank equals the reference rank, sorted, neuron 17 among rank 1")
else:
    check(False, f"search --token {tok_raw!r}: exit {rc}: {err.strip()}")

print(f"{len(failures)} failure(s)")
sys.exit(1 if failures else 0)
