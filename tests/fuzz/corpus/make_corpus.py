#!/usr/bin/env python3
"""Writes the small seed corpus for the fuzz targets (stdlib only). Run from this folder:
   python3 make_corpus.py
The tokenizer seeds are copies of tests/fixtures/tokenizers/*/tokenizer.json. The config_json
seeds are the fixture models' config.json files; the model_dir seeds are tiny GPT-2 (F32),
Llama (F16, grouped-query) and GPT-NeoX (BF16) folders joined into one input (see
fuzz_model_dir.c). Every JSON target also gets seeds nested deeper than the loaders accept.
Files named regress_* are inputs that once failed a target, kept by hand (this script leaves
them alone)."""
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def st_file(entries, buf, meta=None, pad=True):
    header = {}
    if meta is not None:
        header["__metadata__"] = meta
    header.update(entries)
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + buf


def safetensors_seeds():
    f32 = struct.pack("<4f", 1.0, -2.0, 0.5, 3.0)
    f16 = struct.pack("<4H", 0x3C00, 0xC000, 0x0001, 0x7C00)
    bf16 = struct.pack("<2H", 0x3F80, 0x7FC0)
    i64 = struct.pack("<2q", 1, -1)
    return {
        "f32.safetensors": st_file({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}},
                                   f32, {"format": "pt"}),
        "mixed.safetensors": st_file({
            "a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]},
            "b": {"dtype": "BF16", "shape": [2], "data_offsets": [8, 12]},
            "c": {"dtype": "I64", "shape": [2], "data_offsets": [12, 28]},
            "e": {"dtype": "F8_E4M3", "shape": [0], "data_offsets": [28, 28]},
            "s": {"dtype": "F64", "shape": [], "data_offsets": [28, 36]}},
            f16 + bf16 + i64 + struct.pack("<d", 2.5), pad=False),
        "empty.safetensors": st_file({}, b""),
        "bad_offsets.safetensors": st_file({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 99]}}, f32),
        "bad_overlap.safetensors": st_file({
            "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
            "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, bytes(8)),
    }


def npy_file(descr, shape, data, major=1):
    d = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    pre = 10 if major == 1 else 12
    d += " " * (-(pre + len(d) + 1) % 64) + "\n"
    ln = struct.pack("<H", len(d)) if major == 1 else struct.pack("<I", len(d))
    return b"\x93NUMPY" + bytes([major, 0]) + ln + d.encode() + data


def npy_seeds():
    return {
        "f4.npy": npy_file("<f4", "(2, 2)", struct.pack("<4f", 1, 2, 3, 4)),
        "f8.npy": npy_file("<f8", "(3,)", struct.pack("<3d", 1, 2, 3), major=2),
        "f2.npy": npy_file("<f2", "()", struct.pack("<H", 0x3C00)),
        "be.npy": npy_file(">f4", "(1, 0, 2)", b""),
    }


MODEL_DIR_SEPARATOR = b"\n--lmwb-fuzz-file--\n"


def raw_safetensors(header, buf=b""):
    """A safetensors image with the header bytes exactly as given."""
    return struct.pack("<Q", len(header)) + header + buf


def deep_json():
    """Nesting far beyond the 256 levels the loaders accept (it crashed json-glib at 100,000)."""
    return {"deep_array.json": b"[" * 300 + b"]" * 300, "deep_object.json": b'{"a":' * 300 + b"1" + b"}" * 300,
            "deep_open.json": b"[" * 5000, "big_int.json": b'{"n_embd": 123456789012345678901234567890}'}


def tensor_bytes(dtype, n, seed):
    vals = [((i * 7919 + seed * 104729) % 2001 - 1000) / 4000.0 for i in range(n)]
    if dtype == "F32":
        return struct.pack("<%df" % n, *vals)
    if dtype == "F16":
        return struct.pack("<%de" % n, *vals)
    return b"".join(struct.pack("<I", struct.unpack("<I", struct.pack("<f", v))[0])[2:] for v in vals)  # BF16


def tiny_safetensors(tensors, dtype):
    size = {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    entries, buf = {}, b""
    for k, (name, shape) in enumerate(tensors):
        n = 1
        for d in shape:
            n *= d
        if name.endswith("norm.weight") or name.endswith("ln_1.weight") or name.endswith("ln_2.weight") \
                or name.endswith("ln_f.weight") or name.endswith("layernorm.weight"):
            data = struct.pack("<f", 1.0) * n if dtype == "F32" else (struct.pack("<e", 1.0) * n if dtype == "F16" else b"\x80\x3f" * n)
        else:
            data = tensor_bytes(dtype, n, k)
        entries[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(buf), len(buf) + len(data)]}
        buf += data
    return st_file(entries, buf, {"format": "pt"})


def tiny_tokenizer():
    vocab = {"H": 0, "e": 1, "l": 2, "o": 3, "\u0120": 4, "w": 5, "lo": 6, "<|endoftext|>": 7}
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": 7, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                             "rstrip": False, "normalized": False, "special": True}],
           "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
           "post_processor": None,
           "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                     "vocab": vocab, "merges": ["l o"]}}
    return json.dumps(tok, separators=(",", ":")).encode()


def model_dir_seeds():
    C, F, V, P = 4, 8, 8, 4
    gpt2_cfg = {"model_type": "gpt2", "n_layer": 1, "n_embd": C, "n_head": 2, "n_inner": F, "vocab_size": V,
                "n_positions": P, "eos_token_id": 7, "bos_token_id": 7}
    gpt2 = [("transformer.wte.weight", (V, C)), ("transformer.wpe.weight", (P, C)),
            ("transformer.h.0.ln_1.weight", (C,)), ("transformer.h.0.ln_1.bias", (C,)),
            ("transformer.h.0.attn.c_attn.weight", (C, 3 * C)), ("transformer.h.0.attn.c_attn.bias", (3 * C,)),
            ("transformer.h.0.attn.c_proj.weight", (C, C)), ("transformer.h.0.attn.c_proj.bias", (C,)),
            ("transformer.h.0.ln_2.weight", (C,)), ("transformer.h.0.ln_2.bias", (C,)),
            ("transformer.h.0.mlp.c_fc.weight", (C, F)), ("transformer.h.0.mlp.c_fc.bias", (F,)),
            ("transformer.h.0.mlp.c_proj.weight", (F, C)), ("transformer.h.0.mlp.c_proj.bias", (C,)),
            ("transformer.ln_f.weight", (C,)), ("transformer.ln_f.bias", (C,))]
    llama_cfg = {"model_type": "llama", "num_hidden_layers": 1, "hidden_size": C, "num_attention_heads": 2,
                 "num_key_value_heads": 1, "intermediate_size": F, "vocab_size": V, "max_position_embeddings": P,
                 "tie_word_embeddings": False}
    p = "model.layers.0."
    llama = [("model.embed_tokens.weight", (V, C)), (p + "input_layernorm.weight", (C,)),
             (p + "self_attn.q_proj.weight", (C, C)), (p + "self_attn.k_proj.weight", (2, C)),
             (p + "self_attn.v_proj.weight", (2, C)), (p + "self_attn.o_proj.weight", (C, C)),
             (p + "post_attention_layernorm.weight", (C,)), (p + "mlp.gate_proj.weight", (F, C)),
             (p + "mlp.up_proj.weight", (F, C)), (p + "mlp.down_proj.weight", (C, F)),
             ("model.norm.weight", (C,)), ("lm_head.weight", (V, C))]
    neox_cfg = {"model_type": "gpt_neox", "num_hidden_layers": 1, "hidden_size": C, "num_attention_heads": 2,
                "intermediate_size": F, "vocab_size": V, "max_position_embeddings": P, "rotary_pct": 1.0}
    p = "gpt_neox.layers.0."
    neox = [("gpt_neox.embed_in.weight", (V, C)), (p + "input_layernorm.weight", (C,)), (p + "input_layernorm.bias", (C,)),
            (p + "post_attention_layernorm.weight", (C,)), (p + "post_attention_layernorm.bias", (C,)),
            (p + "attention.query_key_value.weight", (3 * C, C)), (p + "attention.query_key_value.bias", (3 * C,)),
            (p + "attention.dense.weight", (C, C)), (p + "attention.dense.bias", (C,)),
            (p + "mlp.dense_h_to_4h.weight", (F, C)), (p + "mlp.dense_h_to_4h.bias", (F,)),
            (p + "mlp.dense_4h_to_h.weight", (C, F)), (p + "mlp.dense_4h_to_h.bias", (C,)),
            ("gpt_neox.final_layer_norm.weight", (C,)), ("gpt_neox.final_layer_norm.bias", (C,)),
            ("embed_out.weight", (V, C))]
    tok = tiny_tokenizer()
    seeds = {}
    for name, cfg, tensors, dtype in (("gpt2_f32", gpt2_cfg, gpt2, "F32"), ("llama_f16", llama_cfg, llama, "F16"),
                                      ("neox_bf16", neox_cfg, neox, "BF16")):
        parts = [json.dumps(cfg).encode(), tiny_safetensors(tensors, dtype), tok]
        seeds[name + ".bin"] = MODEL_DIR_SEPARATOR.join(parts)
        seeds[name + "_no_tokenizer.bin"] = MODEL_DIR_SEPARATOR.join(parts[:2])
    cfg, st = json.dumps(gpt2_cfg).encode(), tiny_safetensors(gpt2, "F32")
    seeds["deep_config.bin"] = MODEL_DIR_SEPARATOR.join([b"[" * 300, st, tok])
    seeds["deep_header.bin"] = MODEL_DIR_SEPARATOR.join([cfg, raw_safetensors(b"[" * 2400), tok])
    seeds["deep_tokenizer.bin"] = MODEL_DIR_SEPARATOR.join([cfg, st, b'{"model":' * 300])
    return seeds


def main():
    fixtures_models = os.path.join(HERE, "..", "..", "fixtures", "models")
    config_seeds = dict(deep_json())
    for kind in sorted(os.listdir(fixtures_models)):
        src = os.path.join(fixtures_models, kind, "config.json")
        if os.path.exists(src):
            with open(src, "rb") as f:
                config_seeds[kind + ".json"] = f.read()
    st_deep = {"deep_header.safetensors": raw_safetensors(b"[" * 2400),
               "dup_name.safetensors": raw_safetensors(b'{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
                                                       b'"w":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}', bytes(8))}
    for sub, seeds in (("safetensors", {**safetensors_seeds(), **st_deep}), ("npy", npy_seeds()),
                       ("config_json", config_seeds), ("model_dir", model_dir_seeds()),
                       ("tokenizer_json", deep_json())):
        os.makedirs(os.path.join(HERE, sub), exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(HERE, sub, name), "wb") as f:
                f.write(data)
    fixtures = os.path.join(HERE, "..", "..", "fixtures", "tokenizers")
    os.makedirs(os.path.join(HERE, "tokenizer_json"), exist_ok=True)
    for kind in sorted(os.listdir(fixtures)):
        src = os.path.join(fixtures, kind, "tokenizer.json")
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(HERE, "tokenizer_json", kind + ".json"))


if __name__ == "__main__":
    main()
