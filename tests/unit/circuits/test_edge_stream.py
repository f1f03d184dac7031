#!/usr/bin/python3
"""The edge-masked residual stream (circuits/edge_stream.h) against a float64 PyTorch reference.

Usage: test_edge_stream.py EDGE_DRIVER FIXTURES_DIR

The reference builds every reader's input from scratch as the masked sum of the writers' outputs,
x_v = sum_w z_wv a_w + (1 - z_wv) ã_w (a_w: this run's writer outputs, ã_w: the corrupted run's;
heads carry b_O / H), written into the reference model's per-head sites (tests/reference/
hf_models.py), and differentiates J = sum_b w_b . logits[b, -1] with autograd. The C stream
computes the same through the ordinary residual minus the masked differences. Checked on the
GPT-2, Llama (grouped-query) and NeoX (parallel residual) fixtures:
  - logits and dJ/dz with random masks (some exactly 0 and 1), max rel err <= 1e-3;
  - all masks 1 gives the clean model, all 0 the corrupted run;
  - the edge count formula (readers x their writers).
Exit 77 (skip) without numpy/torch.
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
except ImportError:
    print("numpy/torch are not available: skipping")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from edge_reference import hf_models, layout, masked_run  # noqa: E402

TOL = 1e-3
FIXTURES = ["gpt2", "llama_gqa", "neox"]
failed = 0


def report(ok, label, detail):
    global failed
    print(f"{'PASS' if ok else 'FAIL'} {label}: {detail}", flush=True)
    failed += 0 if ok else 1


def rel_err(got, want):
    scale = max(float(np.abs(want).max()), 1e-30)
    return float(np.abs(np.asarray(got, np.float64) - want).max()) / scale


def check(driver, fixtures, name, tmp):
    folder = os.path.join(fixtures, name)
    ref = hf_models.load_model(folder)
    rng = np.random.default_rng(7)
    B, T = 2, 5
    V = ref.vocab_size
    clean = rng.integers(0, V, size=(B, T)).astype(np.int32)
    corrupt = rng.integers(0, V, size=(B, T)).astype(np.int32)
    readers, offsets = layout(ref)
    E = int(offsets[-1])
    w = rng.standard_normal((B, V)).astype(np.float32)
    np.save(os.path.join(tmp, "clean.npy"), clean)
    np.save(os.path.join(tmp, "corrupt.npy"), corrupt)
    np.save(os.path.join(tmp, "w.npy"), w)
    plain = ref.run(clean).detach().numpy()[:, -1]
    corrupted = ref.run(corrupt).detach().numpy()[:, -1]
    zr = rng.uniform(0, 1, E)
    zr[rng.uniform(size=E) < 0.2] = 0.0
    zr[rng.uniform(size=E) < 0.2] = 1.0
    cases = [("random", zr), ("ones", np.ones(E)), ("zeros", np.zeros(E))]
    for label, z in cases:
        np.save(os.path.join(tmp, "z.npy"), z.astype(np.float32))
        p = subprocess.run([driver, folder, tmp], capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            report(False, f"{name} {label}", f"exit {p.returncode}: {p.stderr.strip()}")
            continue
        sizes = np.load(os.path.join(tmp, "sizes.npy"))
        report(int(sizes[2]) == E and int(sizes[1]) == len(readers), f"{name} sizes",
               f"{sizes.astype(int).tolist()} vs {E} edges, {len(readers)} readers")
        got_logits = np.load(os.path.join(tmp, "logits.npy"))
        got_dz = np.load(os.path.join(tmp, "dz.npy"))
        zt = torch.tensor(z.astype(np.float32), dtype=torch.float64, requires_grad=True)
        logits = masked_run(ref, clean, corrupt, zt)[:, -1]
        J = (logits * torch.tensor(w, dtype=torch.float64)).sum()
        J.backward()
        want_logits = logits.detach().numpy()
        e = rel_err(got_logits, want_logits)
        report(e <= TOL, f"{name} {label} logits", f"max rel err {e:.2e}")
        e = rel_err(got_dz, zt.grad.numpy())
        report(e <= TOL and np.abs(zt.grad.numpy()).max() > 0, f"{name} {label} dJ/dz", f"max rel err {e:.2e}")
        if label == "ones":
            e = rel_err(got_logits, plain)
            report(e <= TOL, f"{name} all kept = clean model", f"max rel err {e:.2e}")
        if label == "zeros":
            e = rel_err(got_logits, corrupted)
            report(e <= TOL, f"{name} none kept = corrupted run", f"max rel err {e:.2e}")


def main(argv):
    driver, fixtures = argv[1], argv[2]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name in FIXTURES:
            check(driver, fixtures, name, tmp)
    print("failed:", failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
