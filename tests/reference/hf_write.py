"""Write random Hugging Face model folders by hand (no `transformers`, no `safetensors` package).

config.json carries the fields HF itself writes for each model_type (and `architectures`);
model.safetensors is written byte by byte in F32, F16 or BF16 (round-to-nearest-even), optionally
sharded as model-0000i-of-0000n.safetensors + model.safetensors.index.json; a small byte-level
BPE tokenizer.json can be added.

    cfg = make_config("llama", hidden_size=64, ...)
    state = random_state(cfg, np.random.default_rng(0))
    write_hf_folder(dir, cfg, state, dtype="BF16", shards=2)
"""

import json
import os
import struct

import numpy as np

# ---------------------------------------------------------------------------------------------
# safetensors writer
# ---------------------------------------------------------------------------------------------


def f32_to_bf16_bits(a):
    """Round-to-nearest-even float32 -> bfloat16 bit patterns (what torch's .to(bfloat16) does)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounding = ((u >> 16) & 1) + 0x7FFF
    return ((u + rounding) >> 16).astype(np.uint16)


def encode_tensor(a, dtype):
    """Return (bytes, dtype string) of a float array stored as dtype."""
    if dtype == "F32":
        return np.ascontiguousarray(a, dtype="<f4").tobytes(), "F32"
    if dtype == "F16":
        return np.ascontiguousarray(a, dtype="<f2").tobytes(), "F16"
    if dtype == "BF16":
        return f32_to_bf16_bits(a).astype("<u2").tobytes(), "BF16"
    if dtype == "F64":
        return np.ascontiguousarray(a, dtype="<f8").tobytes(), "F64"
    raise ValueError(f"unsupported dtype {dtype}")


def write_safetensors(path, tensors, dtype="F32", metadata=None):
    """tensors: {name: numpy array}. Header is padded with spaces to 8 bytes, like the Rust crate."""
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        raw, dt = encode_tensor(a, dtype)
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = metadata if metadata is not None else {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
    return 8 + len(h) + offset


def stored_values(a, dtype):
    """The float64 values a reader gets back after storing `a` as dtype (for exact references)."""
    if dtype == "F32":
        return np.asarray(a, dtype=np.float32).astype(np.float64)
    if dtype == "F16":
        return np.asarray(a, dtype=np.float16).astype(np.float64)
    if dtype == "BF16":
        return (f32_to_bf16_bits(a).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return np.asarray(a, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------


def make_config(model_type, **kw):
    if model_type == "gpt2":
        c = {
            "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "vocab_size": 50257, "n_positions": 1024, "n_ctx": 1024, "n_embd": 768, "n_layer": 12,
            "n_head": 12, "n_inner": None, "activation_function": "gelu_new",
            "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1, "layer_norm_epsilon": 1e-5,
            "initializer_range": 0.02, "scale_attn_weights": True, "use_cache": True,
            "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
            "bos_token_id": 50256, "eos_token_id": 50256, "tie_word_embeddings": True,
            "torch_dtype": "float32",
        }
    elif model_type in ("llama", "mistral", "qwen2"):
        arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                "qwen2": "Qwen2ForCausalLM"}[model_type]
        c = {
            "architectures": [arch], "model_type": model_type,
            "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
            "hidden_act": "silu", "max_position_embeddings": 2048, "initializer_range": 0.02,
            "rms_norm_eps": 1e-6, "use_cache": True, "bos_token_id": 1, "eos_token_id": 2,
            "tie_word_embeddings": False, "rope_theta": 10000.0, "rope_scaling": None,
            "attention_dropout": 0.0, "torch_dtype": "float32",
        }
        if model_type == "llama":
            c.update({"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1})
        if model_type == "mistral":
            c.update({"sliding_window": 4096})
        if model_type == "qwen2":
            c.update({"use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 28})
    elif model_type == "gpt_neox":
        c = {
            "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
            "vocab_size": 50304, "hidden_size": 512, "num_hidden_layers": 6,
            "num_attention_heads": 8, "intermediate_size": 2048, "hidden_act": "gelu",
            "rotary_pct": 0.25, "rotary_emb_base": 10000, "attention_dropout": 0.0,
            "hidden_dropout": 0.0, "classifier_dropout": 0.1, "max_position_embeddings": 2048,
            "initializer_range": 0.02, "layer_norm_eps": 1e-5, "use_cache": True,
            "bos_token_id": 0, "eos_token_id": 0, "tie_word_embeddings": False,
            "use_parallel_residual": True, "rope_scaling": None, "attention_bias": True,
            "torch_dtype": "float32",
        }
    else:
        raise ValueError(f"unknown model_type {model_type}")
    for k, v in kw.items():
        if k not in c and k not in ("head_dim",):
            raise KeyError(f"{model_type} config has no field {k}")
        c[k] = v
    if model_type == "gpt2":
        c["n_ctx"] = c["n_positions"]
    return c


# ---------------------------------------------------------------------------------------------
# random weights with HF names and layouts
# ---------------------------------------------------------------------------------------------


def _lin_std(fan_in, gain):
    return gain / np.sqrt(fan_in)


def random_state(cfg, rng, gain=1.0, prefix=True, std=None):
    """HF-named float32 tensors for cfg. Scales ~gain/sqrt(fan_in) so activations stay O(1) and
    attention patterns are far from uniform (a parity test must be able to fail); std fixes every
    matrix's standard deviation instead (GPT-2's initializer_range style, for benchmarks)."""
    f32 = np.float32

    def mat(shape, fan_in):
        s = std if std is not None else _lin_std(fan_in, gain)
        return rng.standard_normal(shape, dtype=f32) * f32(s)

    def vec(n, s=0.1):
        return rng.standard_normal(n, dtype=f32) * f32(s if std is None else 0.0)

    def gainv(n):
        return (f32(1.0) + rng.standard_normal(n, dtype=f32) * f32(0.1 if std is None else 0.0))

    mt = cfg["model_type"]
    C0 = cfg.get("n_embd") or cfg.get("hidden_size")
    tied = mt == "gpt2" or cfg.get("tie_word_embeddings", False)
    # A tied head reads logits as nf·wte with |nf| ~ sqrt(C): keep them O(1) (loss near log V).
    emb_std = std if std is not None else (2.0 / np.sqrt(C0) if tied else 1.0)
    st = {}
    if mt == "gpt2":
        C, V, L = cfg["n_embd"], cfg["vocab_size"], cfg["n_layer"]
        Fd = cfg.get("n_inner") or 4 * C
        pre = "transformer." if prefix else ""
        st[pre + "wte.weight"] = rng.standard_normal((V, C), dtype=f32) * f32(emb_std)
        st[pre + "wpe.weight"] = rng.standard_normal((cfg["n_positions"], C), dtype=f32) * f32(emb_std / 2)
        for i in range(L):
            h = f"{pre}h.{i}."
            st[h + "ln_1.weight"], st[h + "ln_1.bias"] = gainv(C), vec(C)
            st[h + "attn.c_attn.weight"] = mat((C, 3 * C), C)  # Conv1D: [in, out]
            st[h + "attn.c_attn.bias"] = vec(3 * C)
            st[h + "attn.c_proj.weight"] = mat((C, C), C)
            st[h + "attn.c_proj.bias"] = vec(C)
            st[h + "ln_2.weight"], st[h + "ln_2.bias"] = gainv(C), vec(C)
            st[h + "mlp.c_fc.weight"] = mat((C, Fd), C)
            st[h + "mlp.c_fc.bias"] = vec(Fd)
            st[h + "mlp.c_proj.weight"] = mat((Fd, C), Fd)
            st[h + "mlp.c_proj.bias"] = vec(C)
        st[pre + "ln_f.weight"], st[pre + "ln_f.bias"] = gainv(C), vec(C)
    elif mt in ("llama", "mistral", "qwen2"):
        C, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
        Fd = cfg["intermediate_size"]
        Hq = cfg["num_attention_heads"]
        Hkv = cfg.get("num_key_value_heads") or Hq
        d = cfg.get("head_dim") or C // Hq
        qkv_bias = mt == "qwen2" or cfg.get("attention_bias", False)
        o_bias = mt != "qwen2" and cfg.get("attention_bias", False)
        mlp_bias = cfg.get("mlp_bias", False)
        st["model.embed_tokens.weight"] = rng.standard_normal((V, C), dtype=f32) * f32(emb_std)
        for i in range(L):
            h = f"model.layers.{i}."
            st[h + "input_layernorm.weight"] = gainv(C)
            for nm, rows in (("q_proj", Hq * d), ("k_proj", Hkv * d), ("v_proj", Hkv * d)):
                st[h + f"self_attn.{nm}.weight"] = mat((rows, C), C)  # nn.Linear: [out, in]
                if qkv_bias:
                    st[h + f"self_attn.{nm}.bias"] = vec(rows)
            st[h + "self_attn.o_proj.weight"] = mat((C, Hq * d), Hq * d)
            if o_bias:
                st[h + "self_attn.o_proj.bias"] = vec(C)
            st[h + "post_attention_layernorm.weight"] = gainv(C)
            st[h + "mlp.gate_proj.weight"] = mat((Fd, C), C)
            st[h + "mlp.up_proj.weight"] = mat((Fd, C), C)
            st[h + "mlp.down_proj.weight"] = mat((C, Fd), Fd)
            if mlp_bias:
                for nm, n in (("gate_proj", Fd), ("up_proj", Fd), ("down_proj", C)):
                    st[h + f"mlp.{nm}.bias"] = vec(n)
        st["model.norm.weight"] = gainv(C)
        if not cfg.get("tie_word_embeddings", False):
            st["lm_head.weight"] = mat((V, C), C)
    elif mt == "gpt_neox":
        C, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
        Fd = cfg["intermediate_size"]
        st["gpt_neox.embed_in.weight"] = rng.standard_normal((V, C), dtype=f32) * f32(emb_std)
        for i in range(L):
            h = f"gpt_neox.layers.{i}."
            for ln in ("input_layernorm", "post_attention_layernorm"):
                st[h + ln + ".weight"], st[h + ln + ".bias"] = gainv(C), vec(C)
            st[h + "attention.query_key_value.weight"] = mat((3 * C, C), C)
            st[h + "attention.query_key_value.bias"] = vec(3 * C)
            st[h + "attention.dense.weight"] = mat((C, C), C)
            st[h + "attention.dense.bias"] = vec(C)
            st[h + "mlp.dense_h_to_4h.weight"] = mat((Fd, C), C)
            st[h + "mlp.dense_h_to_4h.bias"] = vec(Fd)
            st[h + "mlp.dense_4h_to_h.weight"] = mat((C, Fd), Fd)
            st[h + "mlp.dense_4h_to_h.bias"] = vec(C)
        st["gpt_neox.final_layer_norm.weight"] = gainv(C)
        st["gpt_neox.final_layer_norm.bias"] = vec(C)
        if not cfg.get("tie_word_embeddings", False):
            st["embed_out.weight"] = mat((V, C), C)
    else:
        raise ValueError(f"unknown model_type {mt}")
    return st


# ---------------------------------------------------------------------------------------------
# tokenizer.json: byte-level BPE (GPT-2 style), trained on a few sentences
# ---------------------------------------------------------------------------------------------

_TRAIN_TEXT = ("The quick brown fox jumps over the lazy dog. The dog sleeps in the sun, and the "
               "fox runs into the forest. When Mary and John went to the store, John gave a drink "
               "to Mary. The war lasted from the year 1732 to the year 1781. ")


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def make_tokenizer_json(vocab_size, eos="<|endoftext|>"):
    """256 byte tokens + BPE merges learned on _TRAIN_TEXT + one special token = vocab_size."""
    if vocab_size < 257:
        raise ValueError("byte-level tokenizer needs vocab_size >= 257")
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    # Words as the GPT-2 pre-tokenizer would roughly split them: a leading space joins the word.
    words = []
    for i, w in enumerate(_TRAIN_TEXT.split(" ")):
        if w:
            words.append([b2u[b] for b in (("" if i == 0 else " ") + w).encode()])
    merges = []
    while len(vocab) < vocab_size - 1:
        counts = {}
        for w in words:
            for a, b in zip(w, w[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            break
        best = max(sorted(counts), key=lambda p: counts[p])
        merged = best[0] + best[1]
        merges.append(f"{best[0]} {best[1]}")
        vocab[merged] = len(vocab)
        for w in words:
            i = 0
            while i < len(w) - 1:
                if w[i] == best[0] and w[i + 1] == best[1]:
                    w[i:i + 2] = [merged]
                else:
                    i += 1
    # Pad with unused byte-pair tokens if the text ran out of pairs (keeps ids contiguous).
    k = 0
    while len(vocab) < vocab_size - 1:
        tok = f"<|unused{k}|>"
        vocab[tok] = len(vocab)
        k += 1
    eos_id = len(vocab)
    vocab[eos] = eos_id
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": eos_id, "content": eos, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": True, "special": True}],
        "normalizer": None, "pre_tokenizer": bl, "post_processor": dict(bl, trim_offsets=False),
        "decoder": bl,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                  "vocab": vocab, "merges": merges},
    }


# ---------------------------------------------------------------------------------------------
# folder
# ---------------------------------------------------------------------------------------------

_TORCH_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def write_hf_folder(folder, cfg, state, dtype="F32", shards=1, tokenizer=False):
    """Write config.json + weights (+ tokenizer.json). Returns the state as a reader will see it
    (float64 numpy, after rounding to dtype) so references can be computed from exact values."""
    os.makedirs(folder, exist_ok=True)
    cfg = dict(cfg, torch_dtype=_TORCH_DTYPE[dtype])
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    for old in os.listdir(folder):
        if old.startswith("model") and (old.endswith(".safetensors") or old.endswith(".json")):
            os.remove(os.path.join(folder, old))
    names = sorted(state)
    if shards <= 1:
        write_safetensors(os.path.join(folder, "model.safetensors"), state, dtype)
    else:
        # Split by cumulative size so the shards are roughly even.
        sizes = [np.asarray(state[n]).size for n in names]
        total = sum(sizes)
        groups = [[] for _ in range(shards)]
        acc = 0
        for n, s in zip(names, sizes):
            groups[min(shards - 1, acc * shards // total)].append(n)
            acc += s
        weight_map = {}
        itemsize = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}[dtype]
        for i, g in enumerate(groups):
            fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            write_safetensors(os.path.join(folder, fname), {n: state[n] for n in g}, dtype)
            for n in g:
                weight_map[n] = fname
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total * itemsize}, "weight_map": weight_map}, f,
                      indent=2, sort_keys=True)
            f.write("\n")
    if tokenizer:
        with open(os.path.join(folder, "tokenizer.json"), "w") as f:
            json.dump(make_tokenizer_json(cfg["vocab_size"]), f, ensure_ascii=False)
    return {n: stored_values(state[n], dtype) for n in names}
