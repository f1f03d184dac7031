#!/usr/bin/python3
"""Interventions of lmwb-batch against the float64 PyTorch references (tests/reference/hf_models.py).

Usage: check_interventions.py LMWB_BATCH FIXTURES_DIR

For every committed fixture checkpoint it compares, with the tolerance of the parity suite
(max |got - want| / max |want| <= 1e-3):
  - the optional per-head sites (hook_q_input/k/v, attn.hook_result, hook_mlp_in) with the
    reference's per-head computation, and the logits with them on against the plain model;
  - patched runs (`logits --patch HOOK=SRC.npy@ALPHA`) against the reference with the same
    interpolation written into the site;
  - backwards: gradients injected at a site (`grad --from`), a logit difference with patterns,
    norm scales and the MLP nonlinearity frozen (`--loss logit-diff --freeze`), a weighted sum of
    KL to reference logits and cross-entropy, KL at the last position read at a per-head site, and
    a backward stopped at a layer, each against autograd on the reference built the same way;
  - bad input: wrong shapes and malformed options exit with status 2 naming the option.
Prints one line per check and "N passed, M failed"; exit 77 (skip) without numpy/torch.
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import hf_models  # noqa: E402

TOL = 1e-3
FIXTURES = ["gpt2", "gpt2_noprefix_f16", "llama_gqa", "llama_qkv_bias", "llama_bf16_sharded", "neox",
            "neox_sequential_f16"]


class Tally:
    def __init__(self):
        self.passed = self.failed = 0

    def report(self, ok, label, detail):
        print(f"{'PASS' if ok else 'FAIL'} {label}: {detail}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1


def compare(got, want):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return False, f"shape {list(got.shape)} != {list(want.shape)}"
    if not np.isfinite(got).all():
        return False, "non-finite values"
    scale = max(float(np.abs(want).max()), 1e-30)
    rel = float(np.abs(got - want).max()) / scale
    return rel <= TOL, f"max rel err {rel:.2e} (scale {scale:.3g})"


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""


class Fixture:
    def __init__(self, batch, folder, tmp):
        self.batch, self.folder, self.tmp = batch, folder, tmp
        self.config = hf_models.load_config(folder)
        ref = hf_models.load_model(folder)
        self.V = ref.vocab_size
        self.n_layer = ref.n_layer
        g = np.random.default_rng(abs(hash(os.path.basename(folder))) % 2**32)
        self.ids = g.integers(0, self.V, size=(2, 6))
        self.ids_text = ";".join(",".join(str(int(t)) for t in row) for row in self.ids)
        self.rng = g
        self.n = 0

    def model(self, split=False, freeze=(), grad=False):
        m = hf_models.load_model(self.folder, grad=grad)
        m.split = split
        m.freeze = set(freeze)
        return m

    def save(self, arr):
        self.n += 1
        path = os.path.join(self.tmp, f"a{self.n}.npy")
        np.save(path, np.asarray(arr, dtype=np.float32))
        return path

    def lmwb(self, cmd, hook=None, extra=()):
        out = os.path.join(self.tmp, f"out{self.n}.npy")
        self.n += 1
        args = [self.batch, cmd, "--model", self.folder, "--ids", self.ids_text, "--out", out, *extra]
        if hook:
            args += ["--hook", hook]
        rc, err = run(args)
        if rc != 0:
            return None, f"exit {rc}: {err}"
        return np.load(out), ""


def check_fixture(t, fx):
    name = os.path.basename(fx.folder)
    L1 = fx.n_layer - 1
    # Per-head sites against the reference's per-head computation.
    ref = fx.model(split=True)
    with torch.no_grad():
        plain_logits = fx.model().run(fx.ids).numpy()
        ref.run(fx.ids)
    for hook in ["blocks.0.hook_q_input", f"blocks.{L1}.hook_k_input", "blocks.0.hook_v_input",
                 "blocks.0.attn.hook_result", f"blocks.{L1}.attn.hook_result", f"blocks.{L1}.hook_mlp_in"]:
        got, err = fx.lmwb("activations", hook)
        ok, detail = compare(got, ref.hooks[hook].numpy()) if got is not None else (False, err)
        t.report(ok, f"{name} activations {hook}", detail)
    got, err = fx.lmwb("logits", extra=["--sites", "result,qkv,mlp-in"])
    ok, detail = compare(got, plain_logits) if got is not None else (False, err)
    t.report(ok, f"{name} logits with every per-head site on", detail)

    # Patched runs: one head's query input half way to a source, one layer's head outputs replaced.
    q_in = ref.hooks[f"blocks.{L1}.hook_q_input"].numpy()
    res = ref.hooks["blocks.0.attn.hook_result"].numpy()
    src_q = fx.rng.standard_normal(q_in.shape)
    src_r = fx.rng.standard_normal(res.shape) * 0.5
    pq, pr = fx.save(src_q), fx.save(src_r)
    edits = {f"blocks.{L1}.hook_q_input": lambda x: x + 0.5 * (torch.from_numpy(np.float32(src_q).astype(np.float64)) - x),
             "blocks.0.attn.hook_result": lambda x: torch.from_numpy(np.float32(src_r).astype(np.float64)) + 0 * x}
    with torch.no_grad():
        want = fx.model(split=True).run(fx.ids, edits=edits).numpy()
    got, err = fx.lmwb("logits", extra=["--patch", f"blocks.{L1}.hook_q_input={pq}@0.5",
                                        "--patch", f"blocks.0.attn.hook_result={pr}"])
    ok, detail = compare(got, want) if got is not None else (False, err)
    t.report(ok, f"{name} logits patched at hook_q_input (alpha 0.5) and hook_result", detail)

    # Injected gradient at ln2 of the last layer, read at resid_pre 0.
    m = fx.model(grad=True)
    m.run(fx.ids)
    n2 = m.hooks[f"blocks.{L1}.ln2.hook_normalized"]
    seed = fx.rng.standard_normal(tuple(n2.shape))
    (n2 * torch.from_numpy(np.float32(seed).astype(np.float64))).sum().backward()
    ps = fx.save(seed)
    got, err = fx.lmwb("grad", "blocks.0.hook_resid_pre", ["--from", f"blocks.{L1}.ln2.hook_normalized={ps}"])
    ok, detail = compare(got, m.hooks["blocks.0.hook_resid_pre"].grad.numpy()) if got is not None else (False, err)
    t.report(ok, f"{name} grad from an injected gradient", detail)
    # ... stopped at the last layer: the same gradient at its resid_pre
    got, err = fx.lmwb("grad", f"blocks.{L1}.hook_resid_pre",
                       ["--from", f"blocks.{L1}.ln2.hook_normalized={ps}", "--stop-layer", str(L1)])
    ok, detail = compare(got, m.hooks[f"blocks.{L1}.hook_resid_pre"].grad.numpy()) if got is not None else (False, err)
    t.report(ok, f"{name} grad stopped at layer {L1}", detail)

    # Logit difference at the last position, with patterns, norm scales and the MLP frozen.
    a, b = 3, 7
    m = fx.model(freeze=("pattern", "norm", "mlp"), grad=True)
    lg = m.run(fx.ids)
    (lg[:, -1, a] - lg[:, -1, b]).mean().backward()
    got, err = fx.lmwb("grad", "hook_embed", ["--loss", f"logit-diff:{a}:{b}", "--freeze", "pattern,norm,mlp"])
    ok, detail = compare(got, m.hooks["hook_embed"].grad.numpy()) if got is not None else (False, err)
    t.report(ok, f"{name} grad of a logit difference, linearised", detail)

    # The local replacement model of attribution graphs: patterns, norm scales and MLP outputs fixed.
    m = fx.model(freeze=("pattern", "norm", "mlp_out"), grad=True)
    lg = m.run(fx.ids)
    (lg[:, -1, a] - lg[:, -1, b]).mean().backward()
    got, err = fx.lmwb("grad", "hook_embed", ["--loss", f"logit-diff:{a}:{b}", "--freeze", "pattern,norm,mlp-out"])
    ok, detail = compare(got, m.hooks["hook_embed"].grad.numpy()) if got is not None else (False, err)
    t.report(ok, f"{name} grad of a logit difference, MLP outputs fixed", detail)

    # 0.5 * KL(ref || model) over every row minus the cross-entropy.
    ref_logits = fx.rng.standard_normal((2, 6, fx.V)) * 2
    pref = fx.save(ref_logits)
    ref_lp = torch.log_softmax(torch.from_numpy(np.float32(ref_logits).astype(np.float64)), -1)
    m = fx.model(grad=True)
    lg = m.run(fx.ids)
    kl = (ref_lp.exp() * (ref_lp - torch.log_softmax(lg, -1))).sum(-1).mean()
    (0.5 * kl - m.lm_loss(lg, fx.ids)).backward()
    got, err = fx.lmwb("grad", "blocks.0.ln2.hook_normalized", ["--loss", f"0.5*kl:{pref}", "--loss", "-1*next-token"])
    ok, detail = compare(got, m.hooks["blocks.0.ln2.hook_normalized"].grad.numpy()) if got is not None else (False, err)
    t.report(ok, f"{name} grad of 0.5 KL - cross-entropy", detail)

    # KL at the last position, read at a per-head site.
    m = fx.model(split=True, grad=True)
    lg = m.run(fx.ids)
    (ref_lp[:, -1].exp() * (ref_lp[:, -1] - torch.log_softmax(lg[:, -1], -1))).sum(-1).mean().backward()
    got, err = fx.lmwb("grad", "blocks.0.attn.hook_result", ["--loss", f"kl-last:{pref}"])
    ok, detail = compare(got, m.hooks["blocks.0.attn.hook_result"].grad.numpy()) if got is not None else (False, err)
    t.report(ok, f"{name} grad of KL at the last position at hook_result", detail)


def check_bad(t, fx):
    bad_src = fx.save(np.zeros((1, 2, 3)))
    cases = [
        (["logits", "--patch", f"blocks.0.hook_resid_pre={bad_src}"], "--patch"),
        (["logits", "--patch", "blocks.0.hook_resid_pre"], "--patch"),
        (["logits", "--sites", "heads"], "--sites"),
        (["grad", "--hook", "hook_embed", "--loss", "entropy"], "--loss"),
        (["grad", "--hook", "hook_embed", "--freeze", "softmax"], "--freeze"),
        (["grad", "--hook", "hook_embed", "--loss", "logit-diff:1"], "--loss"),
        (["grad", "--hook", "hook_embed", "--from", f"hook_embed={bad_src}", "--loss", "next-token"], "--from"),
        (["grad", "--hook", "hook_embed", "--stop-layer", "9"], "stop_layer"),
    ]
    for args, needle in cases:
        out = os.path.join(fx.tmp, "bad.npy")
        rc, err = run([fx.batch, args[0], "--model", fx.folder, "--ids", fx.ids_text, "--out", out, *args[1:]])
        t.report(rc == 2 and needle in err and not os.path.exists(out), f"bad input {' '.join(args[1:3])}",
                 f"exit {rc}: {err}")


def main():
    batch, root = sys.argv[1], sys.argv[2]
    t = Tally()
    with tempfile.TemporaryDirectory(prefix="lmwb-interventions-") as tmp:
        for name in FIXTURES:
            folder = os.path.join(root, name)
            if not os.path.exists(os.path.join(folder, "config.json")):
                continue
            fx = Fixture(batch, folder, tmp)
            check_fixture(t, fx)
            if name == "gpt2":
                check_bad(t, fx)
    print(f"{t.passed} passed, {t.failed} failed")
    sys.exit(0 if t.failed == 0 and t.passed > 0 else 1)


if __name__ == "__main__":
    main()
