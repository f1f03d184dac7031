#!/usr/bin/python3
"""Make the committed parity fixtures in tests/fixtures/models/ (deterministic seeds).

Each fixture is a small random Hugging Face folder (config.json, model.safetensors or shards +
index, tokenizer.json) plus parity/ with:
  ids.txt            the lmwb-batch --ids string (B=2 rows of equal length T)
  fixture.json       manifest: ids, loss, tolerance, {hook: file} for grads and activations
  logits.npy         float32 [B,T,V]
  grad__<hook>.npy   d(mean next-token CE over B×(T−1))/d(activation at hook), float32
  act__<hook>.npy    activation at hook, float32
Expected values are computed in float64 by tests/reference/hf_models.py from the weights as
stored (F16/BF16 converted exactly), so they are exact up to the float32 rounding of the .npy.

Run: /usr/bin/python3 tests/parity/make_fixtures.py [OUT_DIR]   (default tests/fixtures/models)
"""

import json
import os
import shutil
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import hf_models as hm  # noqa: E402
import hf_write as hw  # noqa: E402

B, T, V = 2, 10, 320
TOLERANCE = 1e-3  # max |ours - ref| / max |ref| per tensor: float32 compute vs float64 reference
# Tighter per-check tolerances where 1e-3 lacks the power to see a real mistake: GPT-2's gelu_new
# (tanh) and exact-erf GELU differ by <= 4.7e-4, which moves every GPT-2 tensor by < 1e-3
# relative (measured: <= 8.9e-4) but hook_post by ~2.5e-4; a correct float32 run is at ~3e-7.
STRICT = {"gpt2": {"activations blocks.1.mlp.hook_post": 5e-5}}

GRAD_HOOKS = ["hook_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_q",
              "blocks.0.attn.hook_k", "blocks.0.attn.hook_v", "blocks.0.attn.hook_pattern",
              "blocks.0.attn.hook_z", "blocks.1.mlp.hook_post", "blocks.1.hook_resid_post",
              "ln_final.hook_normalized"]
ACT_HOOKS = ["blocks.0.ln1.hook_normalized", "blocks.0.attn.hook_q",
             "blocks.0.attn.hook_k", "blocks.0.attn.hook_v", "blocks.0.attn.hook_pattern",
             "blocks.0.hook_attn_out", "blocks.0.ln2.hook_normalized",
             "blocks.1.mlp.hook_pre", "blocks.1.mlp.hook_post", "blocks.1.hook_mlp_out",
             "blocks.1.hook_resid_post", "ln_final.hook_normalized"]

# name, model_type, dtype, shards, prefix, seed, config overrides, extra grad hooks, extra act hooks
FIXTURES = [
    ("gpt2", "gpt2", "F32", 1, True, 101,
     dict(vocab_size=V, n_positions=32, n_embd=64, n_layer=2, n_head=4, n_inner=128),
     [], ["hook_pos_embed", "blocks.0.hook_resid_mid"]),
    ("gpt2_noprefix_f16", "gpt2", "F16", 1, False, 102,
     dict(vocab_size=V, n_positions=16, n_embd=64, n_layer=2, n_head=2),
     ["hook_pos_embed"], ["hook_pos_embed", "blocks.1.hook_resid_mid"]),
    ("llama_gqa", "llama", "F32", 1, True, 103,
     dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
          num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0,
          tie_word_embeddings=False, rms_norm_eps=1e-5, max_position_embeddings=64),
     ["blocks.0.attn.hook_rot_k"],
     ["blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_rot_k", "blocks.1.mlp.hook_pre_linear",
      "blocks.0.hook_resid_mid"]),
    ("llama_qkv_bias", "qwen2", "F32", 1, True, 104,
     dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
          num_attention_heads=4, num_key_value_heads=2, rope_theta=1000000.0,
          tie_word_embeddings=True, rms_norm_eps=1e-6, max_position_embeddings=64),
     ["blocks.0.attn.hook_rot_q"],
     ["blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_rot_k", "blocks.1.mlp.hook_pre_linear"]),
    ("llama_bf16_sharded", "llama", "BF16", 2, True, 105,
     dict(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
          num_attention_heads=4, num_key_value_heads=4, rope_theta=500000.0,
          tie_word_embeddings=False, rms_norm_eps=1e-5, max_position_embeddings=64),
     ["blocks.2.hook_resid_post"],
     ["blocks.0.attn.hook_rot_q", "blocks.2.hook_resid_post", "blocks.1.mlp.hook_pre_linear"]),
    ("neox", "gpt_neox", "F32", 1, True, 106,
     dict(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
          num_attention_heads=4, rotary_pct=0.25, rotary_emb_base=10000,
          use_parallel_residual=True, tie_word_embeddings=False, max_position_embeddings=64),
     ["blocks.0.attn.hook_rot_q"],
     ["blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_rot_k"]),
    ("neox_sequential_f16", "gpt_neox", "F16", 1, True, 107,
     dict(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
          num_attention_heads=2, rotary_pct=0.5, rotary_emb_base=10000,
          use_parallel_residual=False, tie_word_embeddings=False, max_position_embeddings=64),
     [], ["blocks.0.attn.hook_rot_k", "blocks.0.hook_resid_mid"]),
]


def fname(kind, hook):
    return f"{kind}__{hook}.npy"


def make_one(out_root, spec):
    name, mt, dtype, shards, prefix, seed, over, xgrad, xact = spec
    folder = os.path.join(out_root, name)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    rng = np.random.default_rng(seed)
    cfg = hw.make_config(mt, **over)
    state = hw.random_state(cfg, rng, gain=1.5, prefix=prefix)
    hw.write_hf_folder(folder, cfg, state, dtype=dtype, shards=shards, tokenizer=True)

    ids = rng.integers(0, V, size=(B, T))
    ids[0, 3] = V - 1  # the last id (the special token) must be accepted
    ids[1, 0] = 0
    ids_s = ";".join(",".join(str(int(i)) for i in row) for row in ids)

    # The reference reads the folder back: it sees exactly what a loader sees.
    model = hm.load_model(folder, grad=True)
    grad_hooks = GRAD_HOOKS + xgrad
    act_hooks = ACT_HOOKS + xact
    logits, loss, acts, grads = hm.reference_outputs(model, torch.tensor(ids), grad_hooks, act_hooks)

    pdir = os.path.join(folder, "parity")
    os.makedirs(pdir)
    with open(os.path.join(pdir, "ids.txt"), "w") as f:
        f.write(ids_s + "\n")
    np.save(os.path.join(pdir, "logits.npy"), logits.astype(np.float32))
    manifest = {"name": name, "model_type": mt, "dtype": dtype, "shards": shards,
                "ids": ids_s, "loss": loss, "tolerance": TOLERANCE,
                "tolerances": STRICT.get(mt, {}), "logits": "logits.npy",
                "grads": {}, "activations": {}}
    for h, g in grads.items():
        np.save(os.path.join(pdir, fname("grad", h)), g.astype(np.float32))
        manifest["grads"][h] = fname("grad", h)
    for h, a in acts.items():
        np.save(os.path.join(pdir, fname("act", h)), a.astype(np.float32))
        manifest["activations"][h] = fname("act", h)
    with open(os.path.join(pdir, "fixture.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(folder) for fn in fns)
    # Test power: peaked attention (uniform rows would give ~0.2) and a loss near log V.
    peak = float(acts["blocks.0.attn.hook_pattern"][..., 4:, :].max(-1).mean())
    print(f"{name:22s} {mt:9s} {dtype:4s} loss {loss:.4f} (log V {np.log(V):.2f}) "
          f"pattern row max {peak:.2f}  {size / 1024:.0f} KiB")
    return size


def main():
    out_root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "fixtures", "models")
    os.makedirs(out_root, exist_ok=True)
    torch.set_num_threads(1)  # deterministic reductions
    total = sum(make_one(out_root, spec) for spec in FIXTURES)
    print(f"total {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
