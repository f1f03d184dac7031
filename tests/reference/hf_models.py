"""From-scratch PyTorch references for the architectures lmwb runs.

They reproduce Hugging Face `transformers` semantics (GPT2LMHeadModel, LlamaForCausalLM and its
Mistral/Qwen2 cousins, GPTNeoXForCausalLM) without needing that package: the HF folder is read by
hand (config.json + model.safetensors, optionally sharded) and the forward is written out op by op.
Every TransformerLens-named site is exposed in a dict of hook tensors; with grad=True their
gradients are retained, so a test can compare activations and d(loss)/d(activation) at any site.

Compute defaults to float64 so that expected values are exact to far below the C runtime's error;
F16/BF16 weights are converted exactly (every F16/BF16 value is representable in float64).

Only numpy and torch (Debian's 1.13 works) are needed.
"""

import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# safetensors, read by hand: u64 little-endian header length N, N bytes of JSON, then raw data.
# ---------------------------------------------------------------------------------------------

_ST_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}


def bf16_bits_to_f32(bits):
    """BF16 is the top half of an IEEE float32: widen by shifting into the high 16 bits."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path):
    """Return ({name: numpy array}, metadata). BF16 comes back as float32 (exactly)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise ValueError(f"{path}: header length {n} exceeds file size {len(raw)}")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = memoryview(raw)[8 + n:]
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for name, info in header.items():
        dt = info["dtype"]
        if dt not in _ST_DTYPES:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dt}")
        shape = [int(s) for s in info["shape"]]
        begin, end = (int(x) for x in info["data_offsets"])
        count = int(np.prod(shape)) if shape else 1
        if not (0 <= begin <= end <= len(data)) or end - begin != count * _ST_DTYPES[dt].itemsize:
            raise ValueError(f"{path}: tensor {name}: data_offsets {begin},{end} do not fit "
                             f"shape {shape} {dt} / data size {len(data)}")
        arr = np.frombuffer(data[begin:end], dtype=_ST_DTYPES[dt]).reshape(shape)
        if dt == "BF16":
            arr = bf16_bits_to_f32(arr)
        out[name] = arr.copy()
    return out, meta


def read_hf_weights(folder):
    """All tensors of an HF folder: model.safetensors or the shards named by its index."""
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(single):
        return read_safetensors(single)[0]
    if not os.path.exists(index):
        raise FileNotFoundError(f"{folder}: neither model.safetensors nor its index")
    with open(index) as f:
        weight_map = json.load(f)["weight_map"]
    out = {}
    for shard in sorted(set(weight_map.values())):
        tensors, _ = read_safetensors(os.path.join(folder, shard))
        for name, arr in tensors.items():
            if weight_map.get(name) != shard:
                raise ValueError(f"{folder}: {name} found in {shard} but the index says "
                                 f"{weight_map.get(name)}")
            out[name] = arr
    missing = set(weight_map) - set(out)
    if missing:
        raise ValueError(f"{folder}: index names tensors missing from shards: {sorted(missing)[:5]}")
    return out


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------

def gelu_new(x):
    """GPT-2's tanh approximation (HF NewGELUActivation)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def gelu_erf(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


ACT = {
    "gelu_new": gelu_new, "gelu_pytorch_tanh": gelu_new, "gelu": gelu_erf,
    "relu": torch.relu, "silu": F.silu, "swish": F.silu,
}


def layer_norm(x, w, b, eps, freeze=False):
    # nn.LayerNorm semantics (biased variance, eps inside the sqrt), as HF uses it.
    if not freeze:
        return F.layer_norm(x, (x.shape[-1],), w, b, eps)
    # The linearised norm of attribution: 1/std held as a constant.
    c = x - x.mean(-1, keepdim=True)
    rstd = torch.rsqrt(c.pow(2).mean(-1, keepdim=True) + eps).detach()
    return c * rstd * w + b


def rms_norm(x, w, eps, freeze=False):
    # HF LlamaRMSNorm: upcast to float32 (we are already float64 or float32), x*rsqrt(mean(x²)+eps), then *w.
    h = x if x.dtype == torch.float64 else x.float()
    r = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    h = h * (r.detach() if freeze else r)
    return w * h.to(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_cos_sin(T, dim, base, dtype):
    """HF rotary: inv_freq = 1/base^(arange(0,dim,2)/dim); emb = cat(freqs, freqs)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    t = torch.arange(T, dtype=torch.float64)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)  # [T, dim]


def apply_rope(x, cos, sin):
    """x [B,T,H,d] with d == cos.shape[-1]."""
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    return x * c + rotate_half(x) * s


class HookedRef:
    """Base: parameter table, hook recording and the attention core."""

    model_type = None

    def __init__(self, config, state, dtype=torch.float64, grad=False):
        self.config = config
        self.dtype = dtype
        self.grad = grad
        self.params = {}
        for name, arr in state.items():
            if arr.dtype.kind != "f":
                continue  # buffers such as masks are not parameters
            # F16/BF16(as F32)/F32 -> dtype directly: exact for float64, no float64 detour for float32.
            t = torch.from_numpy(np.ascontiguousarray(arr)).to(dtype)
            if grad:
                t.requires_grad_(True)
            self.params[name] = t
        self.hooks = {}
        self.edits = {}
        # Optional per-head sites (TransformerLens's use_split_qkv_input / use_attn_result /
        # use_hook_mlp_in) and the quantities a backward holds fixed: "pattern", "norm", "mlp",
        # "mlp_out" (every MLP's output a constant).
        self.split = False
        self.freeze = set()

    def p(self, name):
        if name not in self.params:
            raise KeyError(f"{self.model_type}: missing tensor {name}")
        return self.params[name]

    def has(self, name):
        return name in self.params

    def parameters(self):
        return list(self.params.values())

    def hook(self, name, x):
        """Record a site. edits[name](x) may replace it (used to test gradients by perturbation)."""
        if name in self.edits:
            x = self.edits[name](x)
        if x.requires_grad:
            x.retain_grad()
        self.hooks[name] = x
        return x

    def attention_core(self, L, q, k, v, scale, window=None):
        """q [B,T,Hq,d], k/v [B,T,Hkv,d] (after rotary). Returns z [B,T,Hq,d]."""
        B, T, Hq, d = q.shape
        Hkv = k.shape[2]
        rep = Hq // Hkv
        qh = q.permute(0, 2, 1, 3)
        # HF repeat_kv: kv head j serves query heads j*rep .. j*rep+rep-1.
        kh = k.permute(0, 2, 1, 3)
        vh = v.permute(0, 2, 1, 3)
        if rep > 1:
            kh = kh.repeat_interleave(rep, dim=1)
            vh = vh.repeat_interleave(rep, dim=1)
        scores = (qh @ kh.transpose(-1, -2)) * scale
        i = torch.arange(T)[:, None]
        j = torch.arange(T)[None, :]
        masked = j > i
        if window is not None:
            masked = masked | (j <= i - window)
        scores = scores.masked_fill(masked, float("-inf"))
        pattern = torch.softmax(scores, dim=-1)
        if "pattern" in self.freeze:
            pattern = pattern.detach()
        pattern = self.hook(f"blocks.{L}.attn.hook_pattern", pattern)
        z = (pattern @ vh).permute(0, 2, 1, 3)
        return self.hook(f"blocks.{L}.attn.hook_z", z)

    # ---- the per-head sites and the frozen MLP ----

    def split_input(self, L, x, kind, heads):
        """Each head's own copy of the residual (hook_q_input / hook_k_input / hook_v_input)."""
        return self.hook(f"blocks.{L}.hook_{kind}_input", x.unsqueeze(2).expand(-1, -1, heads, -1).clone())

    @staticmethod
    def head_project(xin, W, b, heads, d):
        """xin [B,T,heads,C] (each head's normalised input), W [heads*d, C] (out, in) -> [B,T,heads,d]."""
        y = torch.einsum("bthc,hdc->bthd", xin, W.reshape(heads, d, -1))
        return y if b is None else y + b.reshape(heads, d)

    def attn_result(self, L, z, W_O, b_O):
        """Each head's output through its slice of W_O [C, H*d] (hook_result), summed, plus b_O."""
        B, T, H, d = z.shape
        r = torch.einsum("bthd,chd->bthc", z, W_O.reshape(W_O.shape[0], H, d))
        r = self.hook(f"blocks.{L}.attn.hook_result", r)
        out = r.sum(2)
        return out if b_O is None else out + b_O

    def mlp_out(self, L, m):
        """hook_mlp_out, a constant when "mlp_out" is frozen."""
        return self.hook(f"blocks.{L}.hook_mlp_out", m.detach() if "mlp_out" in self.freeze else m)

    def mlp_in(self, L, x):
        return self.hook(f"blocks.{L}.hook_mlp_in", x.clone()) if self.split else x

    def frozen_act(self, act, pre):
        """The MLP nonlinearity, with the ratio act(x)/x held fixed when "mlp" is frozen."""
        y = act(pre)
        if "mlp" not in self.freeze:
            return y
        ratio = torch.where(pre == 0, torch.full_like(pre, 0.5), y / torch.where(pre == 0, torch.ones_like(pre), pre))
        return pre * ratio.detach()

    def forward(self, ids):
        """ids: LongTensor [B,T]. Returns logits [B,T,V]; self.hooks holds every site."""
        raise NotImplementedError

    def run(self, ids, edits=None):
        self.hooks = {}
        self.edits = edits or {}
        ids = torch.as_tensor(ids, dtype=torch.long)
        V = self.vocab_size
        if ids.dim() != 2 or ids.numel() == 0:
            raise ValueError("ids must be [B,T] with B,T > 0")
        if int(ids.min()) < 0 or int(ids.max()) >= V:
            raise ValueError(f"token id out of range [0,{V})")
        return self.forward(ids)

    @staticmethod
    def lm_loss(logits, ids):
        """Mean next-token cross-entropy over all B×(T−1) predictions."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        V = logits.shape[-1]
        return F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))


# ---------------------------------------------------------------------------------------------
# GPT-2
# ---------------------------------------------------------------------------------------------

class GPT2Ref(HookedRef):
    model_type = "gpt2"

    def __init__(self, config, state, **kw):
        # GPT2LMHeadModel saves "transformer.h.0…"; the original gpt2 checkpoint has no prefix.
        state = {(k[len("transformer."):] if k.startswith("transformer.") else k): v
                 for k, v in state.items()}
        super().__init__(config, state, **kw)
        c = config
        self.C = c["n_embd"]
        self.H = c["n_head"]
        self.n_layer = c["n_layer"]
        self.eps = c.get("layer_norm_epsilon", 1e-5)
        self.act = ACT[c.get("activation_function", "gelu_new")]
        self.vocab_size = c["vocab_size"]
        self.n_positions = c.get("n_positions", 1024)
        self.scale_attn = c.get("scale_attn_weights", True)
        self.inv_layer = c.get("scale_attn_by_inverse_layer_idx", False)
        # GPT-2 always ties lm_head to wte; a stored lm_head.weight (if any) is the same tensor.
        self.head = self.params.get("lm_head.weight", None)
        if self.head is None or c.get("tie_word_embeddings", True):
            self.head = self.p("wte.weight")

    def forward(self, ids):
        B, T = ids.shape
        if T > self.n_positions:
            raise ValueError(f"sequence length {T} > n_positions {self.n_positions}")
        C, H = self.C, self.H
        d = C // H
        emb = self.hook("hook_embed", F.embedding(ids, self.p("wte.weight")))
        pos = self.hook("hook_pos_embed", self.p("wpe.weight")[torch.arange(T)].unsqueeze(0).expand(B, T, C))
        x = emb + pos
        for L in range(self.n_layer):
            h = f"h.{L}."
            x = self.hook(f"blocks.{L}.hook_resid_pre", x)
            fz = "norm" in self.freeze
            w1, b1 = self.p(h + "ln_1.weight"), self.p(h + "ln_1.bias")
            if self.split:
                W = self.p(h + "attn.c_attn.weight").t()  # [3C, C] as (out, in)
                bias = self.p(h + "attn.c_attn.bias")
                q, k, v = (self.head_project(layer_norm(self.split_input(L, x, kind, H), w1, b1, self.eps, fz),
                                             W[i * C:(i + 1) * C], bias[i * C:(i + 1) * C], H, d)
                           for i, kind in enumerate("qkv"))
            else:
                n1 = self.hook(f"blocks.{L}.ln1.hook_normalized", layer_norm(x, w1, b1, self.eps, fz))
                # Conv1D: weight stored [in, out], y = x·W + b; c_attn output is Q | K | V.
                qkv = n1 @ self.p(h + "attn.c_attn.weight") + self.p(h + "attn.c_attn.bias")
                q, k, v = (t.reshape(B, T, H, d) for t in qkv.split(C, dim=-1))
            q = self.hook(f"blocks.{L}.attn.hook_q", q)
            k = self.hook(f"blocks.{L}.attn.hook_k", k)
            v = self.hook(f"blocks.{L}.attn.hook_v", v)
            scale = 1.0 / math.sqrt(d) if self.scale_attn else 1.0
            if self.inv_layer:
                scale /= float(L + 1)
            z = self.attention_core(L, q, k, v, scale)
            if self.split:
                a = self.attn_result(L, z, self.p(h + "attn.c_proj.weight").t(), self.p(h + "attn.c_proj.bias"))
            else:
                a = z.reshape(B, T, C) @ self.p(h + "attn.c_proj.weight") + self.p(h + "attn.c_proj.bias")
            a = self.hook(f"blocks.{L}.hook_attn_out", a)
            x = self.hook(f"blocks.{L}.hook_resid_mid", x + a)
            n2 = self.hook(f"blocks.{L}.ln2.hook_normalized",
                           layer_norm(self.mlp_in(L, x), self.p(h + "ln_2.weight"), self.p(h + "ln_2.bias"), self.eps, fz))
            pre = self.hook(f"blocks.{L}.mlp.hook_pre",
                            n2 @ self.p(h + "mlp.c_fc.weight") + self.p(h + "mlp.c_fc.bias"))
            post = self.hook(f"blocks.{L}.mlp.hook_post", self.frozen_act(self.act, pre))
            m = self.mlp_out(L, post @ self.p(h + "mlp.c_proj.weight") + self.p(h + "mlp.c_proj.bias"))
            x = self.hook(f"blocks.{L}.hook_resid_post", x + m)
        nf = self.hook("ln_final.hook_normalized",
                       layer_norm(x, self.p("ln_f.weight"), self.p("ln_f.bias"), self.eps, "norm" in self.freeze))
        return nf @ self.head.t()


# ---------------------------------------------------------------------------------------------
# Llama / Mistral / Qwen2
# ---------------------------------------------------------------------------------------------

class LlamaRef(HookedRef):
    model_type = "llama"

    def __init__(self, config, state, **kw):
        super().__init__(config, state, **kw)
        c = config
        mt = c.get("model_type", "llama")
        if c.get("rope_scaling"):
            raise ValueError(f"rope_scaling {c['rope_scaling']} is not implemented in the reference")
        self.C = c["hidden_size"]
        self.Hq = c["num_attention_heads"]
        self.Hkv = c.get("num_key_value_heads") or self.Hq
        if self.Hq % self.Hkv:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        self.d = c.get("head_dim") or self.C // self.Hq
        self.n_layer = c["num_hidden_layers"]
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.theta = c.get("rope_theta", 10000.0)
        self.act = ACT[c.get("hidden_act", "silu")]
        self.vocab_size = c["vocab_size"]
        self.max_pos = c.get("max_position_embeddings", 2048)
        # Qwen2 always has q/k/v bias and no o bias; Llama's attention_bias covers q,k,v AND o.
        if mt == "qwen2":
            self.qkv_bias, self.o_bias = True, False
        else:
            self.qkv_bias = self.o_bias = bool(c.get("attention_bias", False))
        self.mlp_bias = bool(c.get("mlp_bias", False))
        self.window = None
        if mt == "mistral" or (mt == "qwen2" and c.get("use_sliding_window", False)):
            self.window = c.get("sliding_window")
        tie = c.get("tie_word_embeddings", False)
        if tie or not self.has("lm_head.weight"):
            self.head = self.p("model.embed_tokens.weight")
        else:
            self.head = self.p("lm_head.weight")

    def lin(self, x, name, bias):
        y = x @ self.p(name + ".weight").t()
        if bias:
            y = y + self.p(name + ".bias")
        return y

    def forward(self, ids):
        B, T = ids.shape
        Hq, Hkv, d = self.Hq, self.Hkv, self.d
        cos, sin = rope_cos_sin(T, d, self.theta, self.dtype)
        x = self.hook("hook_embed", F.embedding(ids, self.p("model.embed_tokens.weight")))
        for L in range(self.n_layer):
            h = f"model.layers.{L}."
            x = self.hook(f"blocks.{L}.hook_resid_pre", x)
            fz = "norm" in self.freeze
            w1 = self.p(h + "input_layernorm.weight")
            if self.split:
                def proj(kind, heads):
                    name = h + f"self_attn.{kind}_proj"
                    xin = rms_norm(self.split_input(L, x, kind, heads), w1, self.eps, fz)
                    return self.head_project(xin, self.p(name + ".weight"),
                                             self.p(name + ".bias") if self.qkv_bias else None, heads, d)
                q, k, v = proj("q", Hq), proj("k", Hkv), proj("v", Hkv)
            else:
                n1 = self.hook(f"blocks.{L}.ln1.hook_normalized", rms_norm(x, w1, self.eps, fz))
                q = self.lin(n1, h + "self_attn.q_proj", self.qkv_bias).reshape(B, T, Hq, d)
                k = self.lin(n1, h + "self_attn.k_proj", self.qkv_bias).reshape(B, T, Hkv, d)
                v = self.lin(n1, h + "self_attn.v_proj", self.qkv_bias).reshape(B, T, Hkv, d)
            q = self.hook(f"blocks.{L}.attn.hook_q", q)
            k = self.hook(f"blocks.{L}.attn.hook_k", k)
            v = self.hook(f"blocks.{L}.attn.hook_v", v)
            qr = self.hook(f"blocks.{L}.attn.hook_rot_q", apply_rope(q, cos, sin))
            kr = self.hook(f"blocks.{L}.attn.hook_rot_k", apply_rope(k, cos, sin))
            z = self.attention_core(L, qr, kr, v, 1.0 / math.sqrt(d), self.window)
            if self.split:
                o = h + "self_attn.o_proj"
                a = self.attn_result(L, z, self.p(o + ".weight"), self.p(o + ".bias") if self.o_bias else None)
            else:
                a = self.lin(z.reshape(B, T, Hq * d), h + "self_attn.o_proj", self.o_bias)
            a = self.hook(f"blocks.{L}.hook_attn_out", a)
            x = self.hook(f"blocks.{L}.hook_resid_mid", x + a)
            n2 = self.hook(f"blocks.{L}.ln2.hook_normalized",
                           rms_norm(self.mlp_in(L, x), self.p(h + "post_attention_layernorm.weight"), self.eps, fz))
            gate = self.hook(f"blocks.{L}.mlp.hook_pre", self.lin(n2, h + "mlp.gate_proj", self.mlp_bias))
            up = self.hook(f"blocks.{L}.mlp.hook_pre_linear", self.lin(n2, h + "mlp.up_proj", self.mlp_bias))
            # frozen: silu(gate) held fixed
            g = self.act(gate).detach() if "mlp" in self.freeze else self.act(gate)
            post = self.hook(f"blocks.{L}.mlp.hook_post", g * up)
            m = self.mlp_out(L, self.lin(post, h + "mlp.down_proj", self.mlp_bias))
            x = self.hook(f"blocks.{L}.hook_resid_post", x + m)
        nf = self.hook("ln_final.hook_normalized",
                       rms_norm(x, self.p("model.norm.weight"), self.eps, "norm" in self.freeze))
        return nf @ self.head.t()


# ---------------------------------------------------------------------------------------------
# GPT-NeoX / Pythia
# ---------------------------------------------------------------------------------------------

class NeoXRef(HookedRef):
    model_type = "gpt_neox"

    def __init__(self, config, state, **kw):
        super().__init__(config, state, **kw)
        c = config
        if c.get("rope_scaling"):
            raise ValueError(f"rope_scaling {c['rope_scaling']} is not implemented in the reference")
        self.C = c["hidden_size"]
        self.H = c["num_attention_heads"]
        self.d = self.C // self.H
        self.n_layer = c["num_hidden_layers"]
        self.eps = c.get("layer_norm_eps", 1e-5)
        self.rot = int(self.d * c.get("rotary_pct", 0.25))
        self.base = c.get("rotary_emb_base", 10000)
        self.parallel = c.get("use_parallel_residual", True)
        self.act = ACT[c.get("hidden_act", "gelu")]
        self.bias = c.get("attention_bias", True)
        self.vocab_size = c["vocab_size"]
        if c.get("tie_word_embeddings", False) or not self.has("embed_out.weight"):
            self.head = self.p("gpt_neox.embed_in.weight")
        else:
            self.head = self.p("embed_out.weight")

    def lin(self, x, name, bias=True):
        y = x @ self.p(name + ".weight").t()
        if bias and self.has(name + ".bias"):
            y = y + self.p(name + ".bias")
        return y

    def rope_partial(self, x, cos, sin):
        r = self.rot
        if r == 0:
            return x
        return torch.cat((apply_rope(x[..., :r], cos, sin), x[..., r:]), dim=-1)

    def forward(self, ids):
        B, T = ids.shape
        H, d = self.H, self.d
        cos, sin = rope_cos_sin(T, self.rot, self.base, self.dtype) if self.rot else (None, None)
        x = self.hook("hook_embed", F.embedding(ids, self.p("gpt_neox.embed_in.weight")))
        for L in range(self.n_layer):
            h = f"gpt_neox.layers.{L}."
            x = self.hook(f"blocks.{L}.hook_resid_pre", x)
            fz = "norm" in self.freeze
            w1, b1 = self.p(h + "input_layernorm.weight"), self.p(h + "input_layernorm.bias")
            if self.split:
                # Fused [3C, C] weight, rows [H][q|k|v][d]: each part's rows, head by head.
                W = self.p(h + "attention.query_key_value.weight").reshape(H, 3, d, -1)
                bq = self.p(h + "attention.query_key_value.bias").reshape(H, 3, d) if self.bias else None
                q, k, v = (self.head_project(layer_norm(self.split_input(L, x, kind, H), w1, b1, self.eps, fz),
                                             W[:, i].reshape(H * d, -1),
                                             None if bq is None else bq[:, i].reshape(H * d), H, d)
                           for i, kind in enumerate("qkv"))
            else:
                n1 = self.hook(f"blocks.{L}.ln1.hook_normalized", layer_norm(x, w1, b1, self.eps, fz))
                # Fused [3C, C] weight; its output is viewed [H, 3*d]: q|k|v interleaved per head.
                qkv = self.lin(n1, h + "attention.query_key_value", self.bias).reshape(B, T, H, 3 * d)
                q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
            q = self.hook(f"blocks.{L}.attn.hook_q", q)
            k = self.hook(f"blocks.{L}.attn.hook_k", k)
            v = self.hook(f"blocks.{L}.attn.hook_v", v)
            qr = self.hook(f"blocks.{L}.attn.hook_rot_q", self.rope_partial(q, cos, sin))
            kr = self.hook(f"blocks.{L}.attn.hook_rot_k", self.rope_partial(k, cos, sin))
            z = self.attention_core(L, qr, kr, v, 1.0 / math.sqrt(d))
            if self.split:
                o = h + "attention.dense"
                a = self.attn_result(L, z, self.p(o + ".weight"),
                                     self.p(o + ".bias") if self.bias and self.has(o + ".bias") else None)
            else:
                a = self.lin(z.reshape(B, T, H * d), h + "attention.dense", self.bias)
            a = self.hook(f"blocks.{L}.hook_attn_out", a)
            if self.parallel:
                # x + attn(ln1(x)) + mlp(ln2(x)): both branches read the same residual.
                n2_in = x
            else:
                x = self.hook(f"blocks.{L}.hook_resid_mid", x + a)
                n2_in = x
            n2 = self.hook(f"blocks.{L}.ln2.hook_normalized",
                           layer_norm(self.mlp_in(L, n2_in), self.p(h + "post_attention_layernorm.weight"),
                                      self.p(h + "post_attention_layernorm.bias"), self.eps, fz))
            pre = self.hook(f"blocks.{L}.mlp.hook_pre", self.lin(n2, h + "mlp.dense_h_to_4h"))
            post = self.hook(f"blocks.{L}.mlp.hook_post", self.frozen_act(self.act, pre))
            m = self.mlp_out(L, self.lin(post, h + "mlp.dense_4h_to_h"))
            x = self.hook(f"blocks.{L}.hook_resid_post", (x + a + m) if self.parallel else (x + m))
        nf = self.hook("ln_final.hook_normalized",
                       layer_norm(x, self.p("gpt_neox.final_layer_norm.weight"),
                                  self.p("gpt_neox.final_layer_norm.bias"), self.eps, "norm" in self.freeze))
        return nf @ self.head.t()


_CLASSES = {"gpt2": GPT2Ref, "llama": LlamaRef, "mistral": LlamaRef, "qwen2": LlamaRef,
            "gpt_neox": NeoXRef}


def load_config(folder):
    with open(os.path.join(folder, "config.json")) as f:
        return json.load(f)


def load_model(folder, dtype=torch.float64, grad=False):
    """Build the reference for an HF folder; grad=True makes weights (and so hooks) track grads."""
    config = load_config(folder)
    mt = config.get("model_type")
    if mt not in _CLASSES:
        raise ValueError(f"{folder}/config.json: model_type {mt!r} not supported")
    return _CLASSES[mt](config, read_hf_weights(folder), dtype=dtype, grad=grad)


def model_from_state(config, state, dtype=torch.float64, grad=False):
    return _CLASSES[config["model_type"]](config, state, dtype=dtype, grad=grad)


def parse_ids(s):
    """The lmwb-batch --ids syntax: rows separated by ';', ids by ','; rows of equal length."""
    rows = [[int(t) for t in r.split(",") if t.strip()] for r in s.strip().split(";") if r.strip()]
    if not rows or any(len(r) != len(rows[0]) for r in rows):
        raise ValueError("--ids rows must be non-empty and of equal length")
    return torch.tensor(rows, dtype=torch.long)


def reference_outputs(model, ids, grad_hooks=(), act_hooks=()):
    """Logits, loss, {hook: activation} and {hook: d loss / d activation}, as numpy float64."""
    logits = model.run(ids)
    loss = model.lm_loss(logits, ids)
    grads = {}
    if grad_hooks:
        for n in grad_hooks:
            if n not in model.hooks:
                raise KeyError(f"hook {n} does not exist for {model.model_type}")
        loss.backward()
        for n in grad_hooks:
            g = model.hooks[n].grad
            grads[n] = (torch.zeros_like(model.hooks[n]) if g is None else g).detach().numpy()
    acts = {n: model.hooks[n].detach().numpy() for n in act_hooks}
    return logits.detach().numpy(), float(loss), acts, grads
