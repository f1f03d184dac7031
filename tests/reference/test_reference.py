"""Cross-checks of the PyTorch references against each other and against numpy/torch.

No `transformers` is available, so the references are checked by independent routes:
  * safetensors F32/F16/BF16 round trips vs numpy's float16 and torch's bfloat16 casts;
  * a sharded folder reads back identical to a single-file one;
  * Llama GQA (Hkv < Hq) equals MHA with the k/v heads duplicated;
  * NeoX, sequential residual, rotary_pct 0, erf GELU equals GPT-2 (activation "gelu", zero wpe)
    after re-laying Conv1D [in,out] Q|K|V into NeoX's per-head interleaved [3C,C];
  * rotate-half RoPE equals complex rotation of the pairs (x_i, x_{i+d/2});
  * every hook's retained gradient equals a central finite difference of the loss;
  * attention patterns are causal and rows sum to 1.
Run: /usr/bin/python3 tests/reference/test_reference.py  (exit 0 = all pass)
"""

import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_models as hm  # noqa: E402
import hf_write as hw  # noqa: E402

FAILS = []


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")
    if not ok:
        FAILS.append(name)


def rel(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def test_safetensors(tmp):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((7, 5)) * 3).astype(np.float32)
    a[0, 0] = 65504.0  # F16 max
    a[0, 1] = 1e-7     # F16 subnormal
    for dt in ("F32", "F16", "BF16"):
        p = os.path.join(tmp, f"t_{dt}.safetensors")
        hw.write_safetensors(p, {"a": a, "b": a[:2]}, dt)
        back, meta = hm.read_safetensors(p)
        if dt == "F32":
            want = a
        elif dt == "F16":
            want = a.astype(np.float16).astype(np.float32)
        else:
            want = torch.from_numpy(a).to(torch.bfloat16).to(torch.float32).numpy()
        check(f"safetensors {dt} round trip", np.array_equal(back["a"], want) and
              np.array_equal(back["b"], want[:2]) and meta == {"format": "pt"})
        with open(p, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
        check(f"safetensors {dt} header 8-aligned", n % 8 == 0)


def small_cfg(mt, **kw):
    base = {
        "gpt2": dict(vocab_size=300, n_positions=16, n_embd=32, n_layer=2, n_head=4),
        "llama": dict(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64),
        "qwen2": dict(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
        "gpt_neox": dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, rotary_pct=0.25),
    }[mt]
    base.update(kw)
    return hw.make_config(mt, **base)


def test_sharded(tmp):
    cfg = small_cfg("llama")
    st = hw.random_state(cfg, np.random.default_rng(2))
    a = os.path.join(tmp, "one")
    b = os.path.join(tmp, "two")
    hw.write_hf_folder(a, cfg, st, "BF16")
    hw.write_hf_folder(b, cfg, st, "BF16", shards=3)
    wa, wb = hm.read_hf_weights(a), hm.read_hf_weights(b)
    check("sharded == single", set(wa) == set(wb) and all(np.array_equal(wa[k], wb[k]) for k in wa),
          f"({len(os.listdir(b))} files)")
    ids = torch.tensor([[1, 5, 9, 2], [7, 7, 3, 0]])
    la = hm.load_model(a).run(ids)
    lb = hm.load_model(b).run(ids)
    check("sharded logits identical", torch.equal(la, lb))


def test_gqa_equals_mha():
    cfg = small_cfg("llama", attention_bias=True)
    st = hw.random_state(cfg, np.random.default_rng(3))
    Hq, Hkv, d = 4, 2, 8
    cfg2 = dict(cfg, num_key_value_heads=Hq)
    st2 = dict(st)
    for L in range(2):
        for nm in ("k_proj", "v_proj"):
            w = st[f"model.layers.{L}.self_attn.{nm}.weight"].reshape(Hkv, d, -1)
            st2[f"model.layers.{L}.self_attn.{nm}.weight"] = np.repeat(w, Hq // Hkv, 0).reshape(Hq * d, -1)
            b = st[f"model.layers.{L}.self_attn.{nm}.bias"].reshape(Hkv, d)
            st2[f"model.layers.{L}.self_attn.{nm}.bias"] = np.repeat(b, Hq // Hkv, 0).reshape(-1)
    ids = torch.tensor([[3, 1, 4, 1, 5, 9], [2, 6, 5, 3, 5, 8]])
    a = hm.model_from_state(cfg, st).run(ids)
    b = hm.model_from_state(cfg2, st2).run(ids)
    check("llama GQA == MHA with duplicated kv", rel(a, b) < 1e-12, f"rel {rel(a, b):.2e}")


def test_mistral_window():
    cfg = small_cfg("llama")
    st = hw.random_state(cfg, np.random.default_rng(8))
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    ref = hm.model_from_state(cfg, st).run(ids)
    mc = dict(cfg, model_type="mistral", sliding_window=64)
    check("mistral (window >= T) == llama", rel(hm.model_from_state(mc, st).run(ids), ref) < 1e-14)
    m = hm.model_from_state(dict(mc, sliding_window=3), st)
    m.run(ids)
    p = m.hooks["blocks.0.attn.hook_pattern"][0, 0]
    # HF: query i sees keys j with i - window < j <= i.
    check("mistral sliding window 3 masks keys j <= i-3", bool((p[5, :3] == 0).all()) and bool((p[5, 3:6] > 0).all()))


def test_neox_vs_gpt2():
    C, H, d = 32, 4, 8
    g = small_cfg("gpt2", activation_function="gelu", n_embd=C, n_head=H)
    st = hw.random_state(g, np.random.default_rng(4), prefix=False)
    st["wpe.weight"][:] = 0.0
    n = small_cfg("gpt_neox", hidden_size=C, num_attention_heads=H, intermediate_size=4 * C,
                  rotary_pct=0.0, use_parallel_residual=False, tie_word_embeddings=True)
    ns = {"gpt_neox.embed_in.weight": st["wte.weight"],
          "gpt_neox.final_layer_norm.weight": st["ln_f.weight"],
          "gpt_neox.final_layer_norm.bias": st["ln_f.bias"]}
    for L in range(2):
        h, o = f"h.{L}.", f"gpt_neox.layers.{L}."
        ns[o + "input_layernorm.weight"] = st[h + "ln_1.weight"]
        ns[o + "input_layernorm.bias"] = st[h + "ln_1.bias"]
        ns[o + "post_attention_layernorm.weight"] = st[h + "ln_2.weight"]
        ns[o + "post_attention_layernorm.bias"] = st[h + "ln_2.bias"]
        # Conv1D [C, 3C] with Q|K|V blocks -> Linear [3C, C] with rows ordered (head, q|k|v, dim).
        w = st[h + "attn.c_attn.weight"].T.reshape(3, H, d, C).transpose(1, 0, 2, 3).reshape(3 * C, C)
        b = st[h + "attn.c_attn.bias"].reshape(3, H, d).transpose(1, 0, 2).reshape(3 * C)
        ns[o + "attention.query_key_value.weight"] = np.ascontiguousarray(w)
        ns[o + "attention.query_key_value.bias"] = np.ascontiguousarray(b)
        ns[o + "attention.dense.weight"] = st[h + "attn.c_proj.weight"].T.copy()
        ns[o + "attention.dense.bias"] = st[h + "attn.c_proj.bias"]
        ns[o + "mlp.dense_h_to_4h.weight"] = st[h + "mlp.c_fc.weight"].T.copy()
        ns[o + "mlp.dense_h_to_4h.bias"] = st[h + "mlp.c_fc.bias"]
        ns[o + "mlp.dense_4h_to_h.weight"] = st[h + "mlp.c_proj.weight"].T.copy()
        ns[o + "mlp.dense_4h_to_h.bias"] = st[h + "mlp.c_proj.bias"]
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2], [2, 6, 5, 3, 5, 8, 9]])
    mg, mn = hm.model_from_state(g, st), hm.model_from_state(n, ns)
    a, b = mg.run(ids), mn.run(ids)
    check("neox(sequential, no rotary) == gpt2(gelu, wpe 0)", rel(a, b) < 1e-12, f"rel {rel(a, b):.2e}")
    check("neox hook_q == gpt2 hook_q", rel(mn.hooks["blocks.1.attn.hook_q"], mg.hooks["blocks.1.attn.hook_q"]) < 1e-12)
    # The parallel variant must differ (otherwise the switch is not wired).
    mp = hm.model_from_state(dict(n, use_parallel_residual=True), ns)
    check("neox parallel residual differs from sequential", rel(mp.run(ids), b) > 1e-3)
    check("parallel residual has no hook_resid_mid", "blocks.0.hook_resid_mid" not in mp.hooks)


def test_rope_complex():
    torch.manual_seed(0)
    B, T, H, d = 2, 9, 3, 16
    x = torch.randn(B, T, H, d, dtype=torch.float64)
    cos, sin = hm.rope_cos_sin(T, d, 10000.0, torch.float64)
    y = hm.apply_rope(x, cos, sin)
    zc = torch.complex(x[..., : d // 2], x[..., d // 2:])
    theta = torch.arange(T, dtype=torch.float64)[:, None] * (10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d))
    r = zc * torch.polar(torch.ones_like(theta), theta)[None, :, None, :]
    want = torch.cat((r.real, r.imag), dim=-1)
    check("rotate-half RoPE == complex rotation of (x_i, x_{i+d/2})", rel(y, want) < 1e-13)
    # Relative-position property: <R_m q, R_n k> depends on m-n only.
    q, k = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    qs = hm.apply_rope(q.expand(1, T, 1, d), cos, sin)[0, :, 0]
    ks = hm.apply_rope(k.expand(1, T, 1, d), cos, sin)[0, :, 0]
    check("RoPE score depends on offset only", abs(float(qs[5] @ ks[2] - qs[7] @ ks[4])) < 1e-12)


def finite_difference_hooks(cfg, st, ids, hooks, label):
    m = hm.model_from_state(cfg, st, grad=True)
    logits = m.run(ids)
    loss = m.lm_loss(logits, ids)
    loss.backward()
    gen = torch.Generator().manual_seed(5)
    for name in hooks:
        g = m.hooks[name].grad
        shape = m.hooks[name].shape
        D = torch.randn(shape, generator=gen, dtype=torch.float64)
        eps = 1e-5
        m2 = hm.model_from_state(cfg, st)
        with torch.no_grad():
            lp = m2.lm_loss(m2.run(ids, edits={name: lambda x: x + eps * D}), ids)
            lm = m2.lm_loss(m2.run(ids, edits={name: lambda x: x - eps * D}), ids)
        fd = float((lp - lm) / (2 * eps))
        an = float((g * D).sum()) if g is not None else 0.0
        err = abs(fd - an) / max(abs(fd), 1e-8)
        check(f"{label} grad {name} == finite difference", err < 1e-6, f"fd {fd:.6g} an {an:.6g}")


def test_grads():
    ids = torch.tensor([[3, 1, 4, 1, 5, 9], [2, 6, 5, 3, 5, 8]])
    common = ["hook_embed", "blocks.0.hook_resid_pre", "blocks.0.ln1.hook_normalized",
              "blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_v",
              "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z", "blocks.0.hook_attn_out",
              "blocks.1.mlp.hook_pre", "blocks.1.mlp.hook_post", "blocks.1.hook_mlp_out",
              "blocks.1.hook_resid_post", "ln_final.hook_normalized"]
    rot = ["blocks.1.attn.hook_rot_q", "blocks.1.attn.hook_rot_k"]
    for mt, extra in (("gpt2", ["hook_pos_embed", "blocks.0.hook_resid_mid"]),
                      ("llama", rot + ["blocks.1.mlp.hook_pre_linear", "blocks.0.hook_resid_mid"]),
                      ("qwen2", rot), ("gpt_neox", rot)):
        cfg = small_cfg(mt)
        st = hw.random_state(cfg, np.random.default_rng(6))
        finite_difference_hooks(cfg, st, ids, common + extra, mt)
        m = hm.model_from_state(cfg, st)
        m.run(ids)
        p = m.hooks["blocks.1.attn.hook_pattern"]
        T = ids.shape[1]
        causal = bool((p[..., torch.triu(torch.ones(T, T, dtype=torch.bool), 1)] == 0).all())
        check(f"{mt} pattern causal, rows sum to 1", causal and rel(p.sum(-1), torch.ones(p.shape[:-1])) < 1e-12)
        pmax = float(p[..., 3:, :].max(-1).values.mean())  # uniform rows would give ~0.2
        check(f"{mt} pattern not near-uniform (test power)", pmax > 0.3, f"mean row max {pmax:.2f}")


def test_tokenizer(tmp):
    t = hw.make_tokenizer_json(320)
    v = t["model"]["vocab"]
    check("tokenizer vocab is 0..V-1", sorted(v.values()) == list(range(320)) and t["added_tokens"][0]["id"] == 319)
    check("tokenizer merges resolve to vocab", all((a + b) in v for a, b in (m.split(" ") for m in t["model"]["merges"])))


def test_committed_fixtures():
    """The committed expected .npy files still match what the reference computes from the
    committed weights (guards against editing one without regenerating the other)."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "models")
    if not os.path.isdir(root):
        return
    import json
    for name in sorted(os.listdir(root)):
        man_path = os.path.join(root, name, "parity", "fixture.json")
        if not os.path.isfile(man_path):
            continue
        with open(man_path) as f:
            man = json.load(f)
        pdir = os.path.dirname(man_path)
        m = hm.load_model(os.path.join(root, name), grad=True)
        ids = hm.parse_ids(man["ids"])
        logits, loss, acts, grads = hm.reference_outputs(m, ids, list(man["grads"]), list(man["activations"]))
        worst = rel(logits, np.load(os.path.join(pdir, man["logits"])))
        for h, fn in man["grads"].items():
            worst = max(worst, rel(grads[h], np.load(os.path.join(pdir, fn))))
        for h, fn in man["activations"].items():
            worst = max(worst, rel(acts[h], np.load(os.path.join(pdir, fn))))
        check(f"committed fixture {name} reproduces", worst < 1e-6 and abs(loss - man["loss"]) < 1e-9,
              f"worst rel {worst:.1e}")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        test_safetensors(tmp)
        test_sharded(tmp)
        test_tokenizer(tmp)
    test_gqa_equals_mha()
    test_mistral_window()
    test_neox_vs_gpt2()
    test_rope_complex()
    test_grads()
    test_committed_fixtures()
    print(f"{len(FAILS)} failed")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
