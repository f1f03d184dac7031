"""Float64 PyTorch references of edge circuits, built on tests/reference/hf_models.py.

Every reader's input is rebuilt from scratch as the masked sum of the writers' outputs,
x_v = sum_w z_wv a_w + (1 - z_wv) ã_w (heads carry b_O / H), and written into the reference
model's per-head sites; edge order: readers (per layer the query heads, key heads, value heads,
the MLP; then logits), each reading a prefix of the writers (input, then per layer its heads and
its MLP)."""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "reference"))
import hf_models  # noqa: E402,F401


def shape_of(ref):
    H = getattr(ref, "H", None) or ref.Hq
    K = getattr(ref, "Hkv", H)
    parallel = ref.model_type == "gpt_neox" and ref.parallel
    return ref.n_layer, H, K, parallel


def o_bias(ref, L):
    names = {"gpt2": f"h.{L}.attn.c_proj.bias", "gpt_neox": f"gpt_neox.layers.{L}.attention.dense.bias",
             "llama": f"model.layers.{L}.self_attn.o_proj.bias"}
    n = names[ref.model_type]
    return ref.p(n) if ref.has(n) else None


def layout(ref):
    """Readers (kind, layer, head, writers read) in order, and edge offsets."""
    nl, H, K, parallel = shape_of(ref)
    readers = []
    for L in range(nl):
        below = 1 + L * (H + 1)
        readers += [("q", L, h, below) for h in range(H)]
        readers += [("k", L, h, below) for h in range(K)]
        readers += [("v", L, h, below) for h in range(K)]
        readers.append(("mlp", L, 0, below if parallel else below + H))
    readers.append(("logits", nl, 0, 1 + nl * (H + 1)))
    offsets = np.cumsum([0] + [r[3] for r in readers])
    return readers, offsets


def writer_names(ref):
    nl, H, _, _ = shape_of(ref)
    out = ["input"]
    for L in range(nl):
        out += [f"a{L}.h{h}" for h in range(H)] + [f"m{L}"]
    return out


def reader_names(ref):
    readers, _ = layout(ref)
    return [f"a{L}.h{h}<{k}>" if k in "qkv" else (f"m{L}" if k == "mlp" else "logits") for k, L, h, _ in readers]


def writers(ref, n=None):
    """This run's writer outputs so far (the first n)."""
    nl, H, _, _ = shape_of(ref)
    hooks = ref.hooks
    out = [hooks["blocks.0.hook_resid_pre"]]
    for L in range(nl):
        if n is not None and len(out) >= n:
            break
        res = hooks[f"blocks.{L}.attn.hook_result"]
        b = o_bias(ref, L)
        for h in range(H):
            out.append(res[:, :, h] + (0 if b is None else b / H))
        if n is None or len(out) < n:
            out.append(hooks[f"blocks.{L}.hook_mlp_out"])
    return out if n is None else out[:n]


def reader_edits(ref, mix):
    """Edits that replace every reader's input by mix(v) (v: reader index)."""
    readers, _ = layout(ref)
    nl, H, K, _ = shape_of(ref)

    def per_head(kind, L, heads):
        first = [i for i, r in enumerate(readers) if r[0] == kind and r[1] == L][0]
        return lambda x: torch.stack([mix(first + h, x[:, :, h]) for h in range(heads)], dim=2)

    edits = {}
    for L in range(nl):
        edits[f"blocks.{L}.hook_q_input"] = per_head("q", L, H)
        edits[f"blocks.{L}.hook_k_input"] = per_head("k", L, K)
        edits[f"blocks.{L}.hook_v_input"] = per_head("v", L, K)
        v_mlp = [i for i, r in enumerate(readers) if r[0] == "mlp" and r[1] == L][0]
        edits[f"blocks.{L}.hook_mlp_in"] = (lambda v: (lambda x: mix(v, x)))(v_mlp)
    edits[f"blocks.{nl - 1}.hook_resid_post"] = lambda x: mix(len(readers) - 1, x)
    return edits


def corrupted_writers(ref, corrupt):
    ref.split = True
    ref.run(corrupt)
    return [t.detach() for t in writers(ref)]


def masked_run(ref, clean, corrupt, z):
    """Logits [B,T,V] with reader inputs rebuilt from the writers under masks z (float64 tensor)."""
    tilde = corrupted_writers(ref, corrupt)
    readers, offsets = layout(ref)

    def mix(v, x):
        n = readers[v][3]
        cur = writers(ref, n)
        zz = z[offsets[v]:offsets[v] + n]
        return sum(zz[w] * cur[w] + (1 - zz[w]) * tilde[w] for w in range(n))

    return ref.run(clean, edits=reader_edits(ref, mix))


def eap_grads(ref, clean, corrupt, metric, alpha=1.0):
    """dM/dz at z = 1 on the run whose input embeddings are corrupt + alpha (clean - corrupt), each
    edge's writer difference taken on the clean run (EAP-IG's contraction); alpha 1 is plain EAP."""
    tilde = corrupted_writers(ref, corrupt)
    corrupt_in = ref.hooks["blocks.0.hook_resid_pre"].detach()
    ref.run(clean)
    delta = [(a - t).detach() for a, t in zip(writers(ref), tilde)]
    readers, offsets = layout(ref)
    z = torch.ones(int(offsets[-1]), dtype=torch.float64, requires_grad=True)

    def mix(v, x):
        n = readers[v][3]
        zz = z[offsets[v]:offsets[v] + n]
        return x + sum((zz[w] - 1) * delta[w] for w in range(n))

    edits = reader_edits(ref, mix)
    edits["blocks.0.hook_resid_pre"] = lambda x: corrupt_in + alpha * (x - corrupt_in)
    logits = ref.run(clean, edits=edits)
    metric(logits).backward()
    return z.grad.numpy()
