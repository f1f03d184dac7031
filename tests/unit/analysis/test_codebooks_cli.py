"""lmwb-batch --codebooks / --clamp-code against an independent reference, and bad-input exits.

The reference is hf_models.py's float64 forward of the random fixture checkpoints with the
codebook definition written out here in torch: at blocks.L.attn.hook_z (per head) and
blocks.L.hook_mlp_out, score = LN(x)·c/‖c‖ (unit gain, zero bias, eps 1e-5), take the top k, replace
x by the mean of the k codes; a clamp overwrites all k ids (or one slot) at chosen positions.

(a) logits with a random codebook set (attn and mlp sites) == reference; the code ids
    (activations --hook blocks.L.*.hook_codes) == the reference's top-k, slot by slot.
(b) clamps: logits == reference; the ids change exactly at the clamped head, positions and slots;
    logits before the first clamped position are unchanged; generate with a clamp on generated
    positions == the reference's greedy continuation.
(c) bad input -> exit 2 naming the field, and nothing written.
Usage: test_codebooks_cli.py LMWB_BATCH FIXTURES_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "reference"))
import hf_models  # noqa: E402
import hf_write  # noqa: E402
from cli_checks import check, failures, run_batch  # noqa: E402

BATCH, FIX = sys.argv[1], sys.argv[2]
TOL = 1e-3  # max |ours - ref| / max |ref|: float32 compute vs the float64 reference (as tests/parity)


def run(*args):
    return run_batch(BATCH, *args)


def dims(cfg):
    if cfg["model_type"] == "gpt2":
        return cfg["n_layer"], cfg["n_head"], cfg["n_embd"]
    return cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["hidden_size"]


def write_set(folder, cfg, k, C, sites, rng, tensors=None, meta=None):
    """Random codes (N(0,1)) for sites [(layer, "attn"|"mlp")]; returns {(layer, site): codes}."""
    L, H, D = dims(cfg)
    hd = D // H
    os.makedirs(folder, exist_ok=True)
    books, st = {}, {}
    for layer, site in sites:
        shape = (H, C, hd) if site == "attn" else (C, D)
        books[(layer, site)] = rng.standard_normal(shape).astype(np.float32)
        st[f"blocks.{layer}.{site}.codebook"] = books[(layer, site)]
    if tensors is not None:
        st = tensors
    hf_write.write_safetensors(os.path.join(folder, "codebooks.safetensors"), st)
    j = meta if meta is not None else {"k": k, "num_codes": C,
                                       "sites": [{"layer": l, "site": s} for l, s in sites]}
    with open(os.path.join(folder, "codebooks.json"), "w") as f:
        json.dump(j, f)
    return books


def select(x, codes, k):
    """x [..., W] float64, codes [C, W] -> ids [..., k] by falling LN(x)·c/‖c‖ (ties: lower id)."""
    xn = torch.nn.functional.layer_norm(x, (x.shape[-1],), eps=1e-5)
    c = torch.from_numpy(codes).to(torch.float64)
    s = xn @ (c / c.norm(dim=-1, keepdim=True)).T
    order = np.argsort(-s.detach().numpy(), axis=-1, kind="stable")
    return torch.from_numpy(order[..., :k].copy())


def decode(ids, codes):
    c = torch.from_numpy(codes).to(torch.float64)
    return c[ids].mean(-2)


class Reference:
    """hf_models forward with the codebooks spliced in through its edits; keeps the chosen ids."""

    def __init__(self, folder, books, k, clamps=()):
        self.model = hf_models.load_model(folder)
        self.ids = {}
        self.edits = {}
        for (layer, site), codes in books.items():
            name = f"blocks.{layer}.attn.hook_z" if site == "attn" else f"blocks.{layer}.hook_mlp_out"
            self.edits[name] = self.edit(layer, site, codes, k, [c for c in clamps if c[:2] == (layer, site)])

    def edit(self, layer, site, codes, k, clamps):
        def fn(x):
            if site == "attn":  # [B,T,H,d]: one codebook per head
                ids = torch.stack([select(x[:, :, h], codes[h], k) for h in range(x.shape[2])], 2)
            else:
                ids = select(x, codes, k)
            for (_, _, head, code, slot, positions) in clamps:
                for t in (positions if positions is not None else range(x.shape[1])):
                    if t >= x.shape[1]:
                        continue  # a generated position not reached yet
                    sel = (slice(None), t) if site == "mlp" else (slice(None), t, slice(None) if head is None else head)
                    if slot is None:
                        ids[sel] = code
                    else:
                        ids[sel + (slot,)] = code
            self.ids[(layer, site)] = ids.numpy().copy()
            if site == "attn":
                return torch.stack([decode(ids[:, :, h], codes[h]) for h in range(x.shape[2])], 2)
            return decode(ids, codes)
        return fn

    def logits(self, ids):
        with torch.no_grad():
            return self.model.run(ids, edits=self.edits).numpy()


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def logits_of(fixture, ids_text, tmp, *extra):
    out = os.path.join(tmp, "l.npy")
    if os.path.exists(out):
        os.remove(out)
    rc, _, err = run("logits", "--model", fixture, "--ids", ids_text, "--out", out, *extra)
    return (np.load(out) if rc == 0 else None), rc, err


def codes_of(fixture, ids_text, tmp, hook, *extra):
    out = os.path.join(tmp, "c.npy")
    rc, _, err = run("activations", "--model", fixture, "--ids", ids_text, "--hook", hook, "--out", out, *extra)
    return (np.load(out) if rc == 0 else None), err


def clamp_arg(c):
    layer, site, head, code, slot, positions = c
    s = f"{layer}:{site}" + (f":{head}" if head is not None else "") + f"={code}"
    if positions is not None:
        s += "@" + ",".join(str(p) for p in positions)
    if slot is not None:
        s += f"#{slot}"
    return s


def case_fixture(name, tmp, rng):
    fixture = os.path.join(FIX, name)
    cfg = hf_models.load_config(fixture)
    with open(os.path.join(fixture, "parity", "ids.txt")) as f:
        ids_text = f.read().strip()
    ids = hf_models.parse_ids(ids_text)
    L, H, _ = dims(cfg)
    k, C = 3, 24
    sites = [(0, "attn"), (L - 1, "mlp"), (L - 1, "attn")]
    cbdir = os.path.join(tmp, name + "-cb")
    books = write_set(cbdir, cfg, k, C, sites, rng)

    # (a) plain codebooks
    ref = Reference(fixture, books, k)
    want = ref.logits(ids)
    got, rc, err = logits_of(fixture, ids_text, tmp, "--codebooks", cbdir)
    check(rc == 0, f"{name}: logits --codebooks runs ({err.strip()[-200:]})")
    if got is None:
        return
    check(got.shape == want.shape and rel(got, want) < TOL, f"{name}: logits == reference (rel {rel(got, want):.2e})")
    plain = hf_models.load_model(fixture)
    with torch.no_grad():
        base = plain.run(ids).numpy()
    check(rel(base, want) > 1e-2, f"{name}: the codebooks change the logits (rel {rel(base, want):.2e})")
    for layer, site in sites:
        c, err = codes_of(fixture, ids_text, tmp, f"blocks.{layer}.{site}.hook_codes", "--codebooks", cbdir)
        exp = ref.ids[(layer, site)]
        check(c is not None and c.dtype == np.int32 and c.shape == exp.shape and np.array_equal(c, exp),
              f"{name}: blocks.{layer}.{site}.hook_codes {None if c is None else c.shape} == reference ids {exp.shape}")
    base_ids = {key: v.copy() for key, v in ref.ids.items()}

    # (b) clamps: one head at chosen positions, one slot, every head, the mlp everywhere
    T = ids.shape[1]
    for clamps in ([(0, "attn", 1, 5, None, [2, 4])],
                   [(0, "attn", None, 7, 1, [3])],
                   [(L - 1, "mlp", None, 11, None, None)],
                   [(L - 1, "mlp", None, 2, 0, [T - 1]), (0, "attn", 0, 23, None, [1])]):
            args = [a for c in clamps for a in ("--clamp-code", clamp_arg(c))]
            what = f"{name}: " + " ".join(clamp_arg(c) for c in clamps)
            ref_c = Reference(fixture, books, k, clamps)
            want_c = ref_c.logits(ids)
            got_c, rc, err = logits_of(fixture, ids_text, tmp, "--codebooks", cbdir, *args)
            check(got_c is not None and rel(got_c, want_c) < TOL,
                  f"{what}: logits == reference ({err.strip()[-200:]})")
            if got_c is None:
                continue
            first = min((min(c[5]) if c[5] is not None else 0) for c in clamps)
            check(np.array_equal(got_c[:, :first], got[:, :first]) and rel(got_c[:, first:], got[:, first:]) > 1e-4,
                  f"{what}: logits unchanged before position {first}, changed from it")
            # the ids at the clamped site change exactly where asked (the site's input is upstream of
            # every clamp at it, so the unclamped choice is the reference's plain one)
            layer, site, head, code, slot, positions = clamps[0]
            c, _ = codes_of(fixture, ids_text, tmp, f"blocks.{layer}.{site}.hook_codes", "--codebooks", cbdir, *args)
            if c is None:
                check(False, f"{what}: codes read")
                continue
            exp = base_ids[(layer, site)].copy()
            mask = np.zeros(exp.shape, bool)
            tsel = positions if positions is not None else list(range(T))
            for t in tsel:
                if site == "mlp":
                    mask[:, t, slice(None) if slot is None else slot] = True
                else:
                    mask[:, t, slice(None) if head is None else head, slice(None) if slot is None else slot] = True
            exp[mask] = code
            same_upstream = all(cc[:2] == (layer, site) or cc[0] > layer or (cc[0] == layer and cc[1] == "mlp")
                                for cc in clamps)
            if same_upstream:
                check(np.array_equal(c, exp), f"{what}: ids changed exactly at the clamped positions/heads/slots")
            check(np.all(c[mask] == code), f"{what}: clamped ids hold the code")

    # generate: a clamp on generated positions (greedy), against the reference's greedy loop
    if cfg["model_type"] == "gpt2":
        prompt = "ab"
        rc, out, err = run("tokenize", "--model", fixture, "--text", prompt)
        if rc != 0:
            check(False, f"{name}: tokenize ({err.strip()})")
            return
        pids = json.loads(out)["ids"]
        n_new = 4
        clamp = (L - 1, "mlp", None, 9, None, [len(pids) + 1, len(pids) + 2])
        rc, out, err = run("generate", "--model", fixture, "--prompt", prompt, "--max-tokens", str(n_new),
                           "--no-stop", "--codebooks", cbdir, "--clamp-code", clamp_arg(clamp))
        check(rc == 0, f"{name}: generate --clamp-code runs ({err.strip()[-200:]})")
        if rc == 0:
            gen = json.loads(out)["ids"]
            seq = list(pids)
            refg = Reference(fixture, books, k, [clamp])
            for _ in range(n_new):
                lg = refg.logits(torch.tensor([seq]))
                seq.append(int(np.argmax(lg[0, -1])))
            check(gen[-n_new:] == seq[-n_new:], f"{name}: generate with a clamp on generated positions == reference "
                                                f"greedy ({gen[-n_new:]} vs {seq[-n_new:]})")


def case_bad(tmp, rng):
    fixture = os.path.join(FIX, "gpt2")
    cfg = hf_models.load_config(fixture)
    with open(os.path.join(fixture, "parity", "ids.txt")) as f:
        ids_text = f.read().strip()
    good = os.path.join(tmp, "good")
    write_set(good, cfg, 2, 8, [(0, "attn")], rng)
    out = os.path.join(tmp, "bad.npy")

    def expect(args, field, what):
        if os.path.exists(out):
            os.remove(out)
        rc, _, err = run("logits", "--model", fixture, "--ids", ids_text, "--out", out, *args)
        check(rc == 2 and field in err and not os.path.exists(out),
              f"bad input: {what} -> exit 2 naming {field!r} (rc {rc}: {err.strip()[-160:]})")

    def bad_set(tag, **kw):
        d = os.path.join(tmp, tag)
        write_set(d, cfg, kw.pop("k", 2), kw.pop("C", 8), kw.pop("sites", [(0, "attn")]), rng, **kw)
        return d

    wrong = {"blocks.0.attn.codebook": np.zeros((4, 8, 15), np.float32)}
    expect(["--codebooks", bad_set("width", tensors=wrong)], "blocks.0.attn.codebook", "a code width that does not fit")
    expect(["--codebooks", bad_set("kc", meta={"k": 9, "num_codes": 8, "sites": [{"layer": 0, "site": "attn"}]})],
           "\"k\"", "k > C")
    expect(["--codebooks", bad_set("layer", meta={"k": 2, "num_codes": 8, "sites": [{"layer": 2, "site": "attn"}]})],
           "layer 2", "a site on a missing layer")
    expect(["--codebooks", bad_set("site", meta={"k": 2, "num_codes": 8, "sites": [{"layer": 0, "site": "resid"}]})],
           "\"site\"", "an unknown site")
    nan = {"blocks.0.attn.codebook": np.full((4, 8, 16), np.nan, np.float32)}
    expect(["--codebooks", bad_set("nan", tensors=nan)], "not finite", "a NaN code")
    expect(["--codebooks", good, "--clamp-code", "0:attn=8"], "code 8", "a clamped code >= C")
    expect(["--codebooks", good, "--clamp-code", "0:attn:4=1"], "head", "a head >= the head count")
    expect(["--codebooks", good, "--clamp-code", "0:attn=1@10"], "position 10", "a position past the sequence")
    expect(["--codebooks", good, "--clamp-code", "0:mlp=1"], "site", "a clamp on a site without a codebook")
    expect(["--codebooks", good, "--clamp-code", "0:attn=1#2"], "slot 2", "a slot >= k")
    expect(["--clamp-code", "0:attn=1"], "--codebooks", "a clamp without --codebooks")
    expect(["--codebooks", os.path.join(tmp, "missing")], "codebooks.json", "a missing folder")


def main():
    tmp = tempfile.mkdtemp(prefix="lmwb-cb-cli-")
    rng = np.random.default_rng(17)
    try:
        for name in ("gpt2", "llama_gqa", "neox"):
            case_fixture(name, tmp, rng)
        case_bad(tmp, rng)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failure(s)")
        sys.exit(1)
    print("all ok")


if __name__ == "__main__":
    main()
