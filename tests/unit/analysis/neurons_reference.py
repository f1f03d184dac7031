"""Reference LM-head neuron decoding, straight from a Hugging Face folder's safetensors (numpy,
float64), independent of lmwb's loader: the orientation of every tensor is taken from the HF
naming of each architecture, so a transposition bug in lmwb shows up as a mismatch.

    in   : GPT-2 c_fc.weight [d, d_ff] column n (Conv1D stores [in, out]); Llama up_proj [d_ff, d]
           row n; NeoX dense_h_to_4h [d_ff, d] row n
    gate : Llama gate_proj [d_ff, d] row n
    out  : GPT-2 c_proj.weight [d_ff, d] row n; Llama down_proj / NeoX dense_4h_to_h [d, d_ff]
           column n
logits = W_U (v * g), g = final norm weight (bias ignored) unless norm=False; probs = softmax.

Usage: neurons_reference.py FOLDER WHICH LAYERS(comma list) K [--no-norm]  -> JSON on stdout
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "reference"))
import hf_models  # noqa: E402


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def vectors(folder, which, layer):
    """[d_ff, d] matrix whose row n is neuron n's vector, and (head [V, d], gain [d])."""
    cfg = hf_models.load_config(folder)
    st = hf_models.read_hf_weights(folder)
    mt = cfg["model_type"]
    if mt == "gpt2":
        st = {(k[len("transformer."):] if k.startswith("transformer.") else k): v for k, v in st.items()}
        p = f"h.{layer}.mlp."
        if which == "in":
            M = _f64(st[p + "c_fc.weight"]).T          # Conv1D [d, d_ff] -> column n
        elif which == "out":
            M = _f64(st[p + "c_proj.weight"])          # Conv1D [d_ff, d] -> row n
        else:
            raise ValueError("gpt2 has no gate")
        head = _f64(st["wte.weight"])
        gain = _f64(st["ln_f.weight"])
    elif mt in ("llama", "mistral", "qwen2"):
        p = f"model.layers.{layer}.mlp."
        M = {"in": lambda: _f64(st[p + "up_proj.weight"]),
             "gate": lambda: _f64(st[p + "gate_proj.weight"]),
             "out": lambda: _f64(st[p + "down_proj.weight"]).T}[which]()
        head = _f64(st["lm_head.weight"]) if "lm_head.weight" in st and not cfg.get("tie_word_embeddings", False) \
            else _f64(st["model.embed_tokens.weight"])
        gain = _f64(st["model.norm.weight"])
    elif mt == "gpt_neox":
        p = f"gpt_neox.layers.{layer}.mlp."
        if which == "in":
            M = _f64(st[p + "dense_h_to_4h.weight"])
        elif which == "out":
            M = _f64(st[p + "dense_4h_to_h.weight"]).T
        else:
            raise ValueError("gpt_neox has no gate")
        head = _f64(st["embed_out.weight"])
        gain = _f64(st["gpt_neox.final_layer_norm.weight"])
    else:
        raise ValueError(mt)
    return M, head, gain


def decode(folder, which, layers, k, norm=True):
    out = []
    for L in layers:
        M, head, gain = vectors(folder, which, L)
        if norm:
            M = M * gain[None, :]
        logits = M @ head.T                                  # [d_ff, V]
        mx = logits.max(axis=1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(logits - mx).sum(axis=1))
        for n in range(M.shape[0]):
            row = logits[n]
            order = np.lexsort((np.arange(row.size), -row))[:k]  # logit desc, then lower id
            out.append({"layer": L, "index": n, "which": which,
                        "top": [{"id": int(i), "prob": float(np.exp(row[i] - lse[n])),
                                 "logit": float(row[i])} for i in order]})
    return out


if __name__ == "__main__":
    folder, which, layers, k = sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3].split(",")], int(sys.argv[4])
    print(json.dumps({"neurons": decode(folder, which, layers, k, norm="--no-norm" not in sys.argv)}))
