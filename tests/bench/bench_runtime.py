#!/usr/bin/python3
"""Runtime speed: lmwb-batch against PyTorch eager on a GPT-2-small-shaped model, same machine, same run.

Usage: bench_runtime.py LMWB_BATCH [--model-dir DIR] [--batch 4] [--seq 128] [--threads 2]
                                   [--repeats 3] [--skip-ours]

A random GPT-2 small (12 layers, d 768, 12 heads, vocab 50257, n_positions 1024, F32, ~500 MB)
is written with tests/reference/hf_write.py to a temporary folder (or DIR, reused if it already
holds one). Measured, best of --repeats after one warm-up:
  * PyTorch forward with full logits (torch.no_grad, torch.set_num_threads(threads));
  * PyTorch forward + backward of the mean LM loss with gradients for all parameters;
  * `lmwb-batch bench --model DIR --batch B --seq T [--backward] --threads N`, which prints
    {"tokens_per_s", "seconds", "gflops", "sgemm_peak_gflops"}.
Prints a table, the ratios ours/PyTorch in tokens per second and the share of the SGEMM peak
that lmwb-batch reached (and PyTorch's share of its own BLAS's SGEMM peak, for context); the last
line of stdout is the same as JSON. On a busy machine the numbers move by 2x: compare ratios
from one run, not absolute numbers across runs.
PyTorch's GFLOP/s use the usual count: 2·(matmul params)·tokens + 4·L·B·T²·C for attention
(full T×T, as both implementations compute it) + 2·V·C·tokens for the head; backward = 2× forward.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import hf_models as hm  # noqa: E402
import hf_write as hw  # noqa: E402

GPT2_SMALL = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)


def make_model(folder):
    if os.path.isfile(os.path.join(folder, "config.json")):
        cfg = hm.load_config(folder)
        if all(cfg.get(k) == v for k, v in GPT2_SMALL.items()):
            return cfg
        raise SystemExit(f"{folder}: holds a model that is not GPT-2 small shaped")
    cfg = hw.make_config("gpt2", **GPT2_SMALL)
    t0 = time.perf_counter()
    state = hw.random_state(cfg, np.random.default_rng(1234), std=0.02, prefix=False)
    hw.write_hf_folder(folder, cfg, state, dtype="F32")
    print(f"# wrote random GPT-2 small to {folder} in {time.perf_counter() - t0:.1f} s", flush=True)
    return cfg


def flops_forward(cfg, B, T):
    C, L, V = cfg["n_embd"], cfg["n_layer"], cfg["vocab_size"]
    Fd = cfg.get("n_inner") or 4 * C
    matmul_params = L * (3 * C * C + C * C + 2 * C * Fd)
    return 2.0 * matmul_params * B * T + 4.0 * L * B * T * T * C + 2.0 * V * C * B * T


def best_of(fn, repeats):
    fn()  # warm-up: allocator, thread pool, caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def torch_sgemm_peak(threads, n=2048, repeats=3):
    """PyTorch's own BLAS on a large square SGEMM: the ceiling its forward can approach."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2.0 * n ** 3 / best_of(lambda: a @ b, repeats) / 1e9


def bench_torch(folder, cfg, B, T, threads, repeats):
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg["vocab_size"], (B, T), generator=g)
    out = {}
    model = hm.load_model(folder, dtype=torch.float32, grad=False)

    def fwd():
        with torch.no_grad():
            logits = model.run(ids)
        assert logits.shape == (B, T, cfg["vocab_size"])

    s = best_of(fwd, repeats)
    out["forward"] = {"seconds": s, "tokens_per_s": B * T / s, "gflops": flops_forward(cfg, B, T) / s / 1e9}
    model = None  # free the float32 copy before the grad-tracking one

    model = hm.load_model(folder, dtype=torch.float32, grad=True)
    params = model.parameters()

    def fwd_bwd():
        for p in params:
            p.grad = None
        loss = model.lm_loss(model.run(ids), ids)
        loss.backward()
        assert params[0].grad is not None

    s = best_of(fwd_bwd, repeats)
    out["forward_backward"] = {"seconds": s, "tokens_per_s": B * T / s,
                               "gflops": 3 * flops_forward(cfg, B, T) / s / 1e9}
    model = params = None
    out["sgemm_peak_gflops"] = torch_sgemm_peak(threads)
    return out


def bench_ours(lmwb, folder, B, T, threads, backward):
    cmd = [lmwb, "bench", "--model", folder, "--batch", str(B), "--seq", str(T), "--threads", str(threads)]
    if backward:
        cmd.append("--backward")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    if p.returncode != 0:
        return {"error": f"exit {p.returncode}: {p.stderr.decode(errors='replace').strip()[-300:]}"}
    text = p.stdout.decode(errors="replace").strip()
    try:
        res = json.loads(text if text.startswith("{") else text.splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"stdout is not JSON: {text[:200]!r}"}
    for k in ("tokens_per_s", "seconds", "gflops", "sgemm_peak_gflops"):
        if not isinstance(res.get(k), (int, float)):
            return {"error": f"JSON lacks numeric {k}: {text[:200]!r}"}
    return res


def fmt(x, spec):
    return format(x, spec) if isinstance(x, (int, float)) else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("lmwb_batch", nargs="?", help="path to lmwb-batch")
    ap.add_argument("--model-dir")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-ours", action="store_true", help="time PyTorch only")
    a = ap.parse_args()
    if not a.skip_ours and not a.lmwb_batch:
        ap.error("LMWB_BATCH is required unless --skip-ours")

    tmp = None
    folder = a.model_dir
    if folder is None:
        tmp = tempfile.mkdtemp(prefix="lmwb-bench-")
        folder = os.path.join(tmp, "gpt2-small-random")
    try:
        cfg = make_model(folder)
        B, T = a.batch, a.seq
        print(f"# B={B} T={T} threads={a.threads} torch {torch.__version__}", flush=True)
        ref = bench_torch(folder, cfg, B, T, a.threads, a.repeats)
        ours = {}
        if not a.skip_ours:
            ours["forward"] = bench_ours(a.lmwb_batch, folder, B, T, a.threads, False)
            ours["forward_backward"] = bench_ours(a.lmwb_batch, folder, B, T, a.threads, True)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"{'pass':18s} {'impl':8s} {'tokens/s':>10s} {'seconds':>9s} {'GFLOP/s':>9s} {'ratio':>7s} {'%peak':>6s}")
    summary = {"batch": B, "seq": T, "threads": a.threads, "torch": ref, "ours": ours, "ratio": {},
               "peak_share": {}}
    failed = False
    for kind in ("forward", "forward_backward"):
        r = ref[kind]
        tshare = r["gflops"] / ref["sgemm_peak_gflops"]
        print(f"{kind:18s} {'pytorch':8s} {r['tokens_per_s']:10.1f} {r['seconds']:9.4f} {r['gflops']:9.1f} "
              f"{'':7s} {tshare * 100:6.1f}")
        o = ours.get(kind)
        if o is None:
            continue
        if "error" in o:
            failed = True
            print(f"{kind:18s} {'lmwb':8s} error: {o['error']}")
            continue
        ratio = o["tokens_per_s"] / r["tokens_per_s"]
        share = o["gflops"] / o["sgemm_peak_gflops"] if o["sgemm_peak_gflops"] > 0 else None
        summary["ratio"][kind] = ratio
        summary["peak_share"][kind] = share
        print(f"{kind:18s} {'lmwb':8s} {o['tokens_per_s']:10.1f} {o['seconds']:9.4f} {o['gflops']:9.1f} "
              f"{ratio:7.2f} {fmt(share * 100 if share is not None else None, '6.1f')}")
    peaks = f"PyTorch SGEMM peak {ref['sgemm_peak_gflops']:.1f} GFLOP/s"
    if ours and not failed:
        peaks += f", lmwb SGEMM peak {ours['forward']['sgemm_peak_gflops']:.1f} GFLOP/s"
    print(f"# {peaks}; %peak = GFLOP/s ÷ that implementation's SGEMM peak; "
          f"ratio = lmwb tokens/s ÷ PyTorch tokens/s")
    print(json.dumps(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
