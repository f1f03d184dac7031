"""lmwb-batch transcoder train / eval end to end on the fixture models.

(a) train writes a SAELens folder (cfg.json, sae_weights.safetensors), metrics.csv with a row per
    step and train.json, and leaves no checkpoint; eval reads a set built layer by layer and prints
    the documented JSON.
(b) a run stopped by --stop-after and one stopped by Ctrl-C (SIGINT) leave a checkpoint; --resume
    finishes them with the same bytes as a run never stopped.
(c) bad input -> exit 2 with a message naming the option, file or tensor, and nothing written.
Usage: test_transcoder_cli.py LMWB_BATCH FIXTURES_DIR TEXT
"""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "reference"))
from cli_checks import check, failures  # noqa: E402

BATCH, FIX, TEXT = sys.argv[1], sys.argv[2], sys.argv[3]
GPT2 = os.path.join(FIX, "gpt2")


def run(*args, env=None):
    p = subprocess.run([BATCH, *args], capture_output=True, text=True, env=env)
    return p.returncode, p.stdout, p.stderr


SMALL = ["--features", "128", "--batch", "256", "--context", "16", "--lr", "3e-3", "--file", TEXT]


def train(out, layer=0, tokens=6000, extra=(), model=GPT2, env=None):
    return run("transcoder", "train", "--model", model, "--layer", str(layer), "--tokens", str(tokens), *SMALL,
               *extra, "--out", out, env=env)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def safetensors_header(path):
    data = read(path)
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), 8 + n, data


def main():
    tmp = tempfile.mkdtemp(prefix="lmwb-tc-cli-")
    try:
        # (a) train and eval
        s = os.path.join(tmp, "set")
        rc, out, err = train(os.path.join(s, "layer_0"), 0)
        check(rc == 0, f"train layer 0: exit {rc} {err.strip()[-300:]}")
        res = json.loads(out) if rc == 0 else {}
        check(res.get("steps") == 24 and res.get("features") == 128 and res.get("activation") == "relu",
              f"train prints the run: {out.strip()[:200]}")
        for f in ["cfg.json", "sae_weights.safetensors", "metrics.csv", "train.json"]:
            check(os.path.exists(os.path.join(s, "layer_0", f)), f"train wrote {f}")
        check(not os.path.exists(os.path.join(s, "layer_0", "checkpoint")), "no checkpoint left after a finished run")
        rows = read(os.path.join(s, "layer_0", "metrics.csv")).decode().strip().splitlines()
        check(rows[0].startswith("step,tokens,lr,loss,mse,sparsity,fvu,l0,dead_fraction") and len(rows) == 25,
              f"metrics.csv: a header and a row per step ({len(rows)} lines)")
        cfg = json.load(open(os.path.join(s, "layer_0", "cfg.json")))
        check(cfg["architecture"] == "transcoder" and cfg["metadata"]["hook_name"] == "blocks.0.ln2.hook_normalized"
              and cfg["metadata"]["hook_name_out"] == "blocks.0.hook_mlp_out", "cfg.json names the hooks")
        rc, out, err = train(os.path.join(s, "layer_1"), 1, extra=["--dtype", "F16"])
        hdr, _, _ = safetensors_header(os.path.join(s, "layer_1", "sae_weights.safetensors"))
        check(rc == 0 and hdr["W_enc"]["dtype"] == "F16", "--dtype F16 stores F16 weights")
        rc, out, err = run("transcoder", "eval", "--model", GPT2, "--transcoders", s, "--file", TEXT, "--context", "16",
                           "--tokens", "2048")
        check(rc == 0, f"eval: exit {rc} {err.strip()[-300:]}")
        ev = json.loads(out) if rc == 0 else {}
        keys = {"tokens", "context", "ce_clean", "ce_all_spliced", "ce_all_ablated", "ce_all_recovered", "layers"}
        check(keys <= set(ev) and ev["tokens"] == 2048 and len(ev["layers"]) == 2, f"eval JSON: {sorted(ev)}")
        lk = {"layer", "fvu", "l0", "dead_fraction", "ce_spliced", "ce_ablated", "ce_recovered"}
        check(all(lk <= set(layer) for layer in ev.get("layers", [])), "eval: every layer's figures")
        check(all(layer["fvu"] < 0.6 for layer in ev.get("layers", [])), "eval: the trained transcoders reconstruct")
        # an SAE on a residual site
        rc, out, err = run("transcoder", "train", "--model", GPT2, "--sae", "blocks.1.hook_resid_post", "--tokens", "3000",
                           *SMALL, "--out", os.path.join(tmp, "sae"))
        cfg = json.load(open(os.path.join(tmp, "sae", "cfg.json"))) if rc == 0 else {}
        check(rc == 0 and cfg.get("architecture") == "standard" and cfg.get("apply_b_dec_to_input") is True,
              f"--sae trains a plain SAE: exit {rc} {err.strip()[-200:]}")

        # (b) stopped and resumed = uninterrupted
        full = os.path.join(tmp, "full")
        rc, _, err = train(full, 1, tokens=12000)
        want = read(os.path.join(full, "sae_weights.safetensors")) if rc == 0 else b""
        cut = os.path.join(tmp, "cut")
        rc1, _, err1 = train(cut, 1, tokens=12000, extra=["--stop-after", "17", "--checkpoint-every", "5"])
        ck = os.path.join(cut, "checkpoint", "state.safetensors")
        check(rc1 == 1 and os.path.exists(ck) and not os.path.exists(os.path.join(cut, "cfg.json")),
              f"--stop-after: exit {rc1}, a checkpoint and no transcoder yet ({err1.strip()[-120:]})")
        rc2, _, err2 = train(cut, 1, tokens=12000)
        check(rc2 == 2 and "--resume" not in err2 and "checkpoint" in err2, f"a new run onto a checkpoint is refused: {err2.strip()[-160:]}")
        rc3, _, err3 = train(cut, 1, tokens=12000, extra=["--resume"])
        check(rc3 == 0 and read(os.path.join(cut, "sae_weights.safetensors")) == want,
              f"--resume ends with the uninterrupted weights: exit {rc3} {err3.strip()[-200:]}")
        # Ctrl-C
        sig = os.path.join(tmp, "sig")
        big = ["--tokens", "600000", "--buffer", "16384"]
        full2 = os.path.join(tmp, "full2")
        args = ["transcoder", "train", "--model", GPT2, "--layer", "0", *SMALL, *big]
        rc, _, err = run(*args, "--out", full2)
        want2 = read(os.path.join(full2, "sae_weights.safetensors")) if rc == 0 else b""
        p = subprocess.Popen([BATCH, *args, "--out", sig], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # once training has begun (metrics.csv is opened at the first step), and a little later
        deadline = time.time() + 60
        while not os.path.exists(os.path.join(sig, "metrics.csv")) and p.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        t0 = time.time()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        dt = time.time() - t0
        if p.returncode == 0:
            print("note: the run finished before Ctrl-C; not checked")
        else:
            check(p.returncode == 1 and os.path.exists(os.path.join(sig, "checkpoint", "state.safetensors"))
                  and "resume" in err, f"Ctrl-C stops with a checkpoint: exit {p.returncode} {err.strip()[-160:]}")
            check(dt < 2.0, f"Ctrl-C is obeyed within a second or so ({dt:.2f} s)")
            rc, _, err = run(*args, "--out", sig, "--resume")
            check(rc == 0 and read(os.path.join(sig, "sae_weights.safetensors")) == want2,
                  f"--resume after Ctrl-C ends with the uninterrupted weights: exit {rc} {err.strip()[-200:]}")

        # (c) bad input: exit 2, the message names it, nothing written
        empty = os.path.join(tmp, "empty.txt")
        open(empty, "w").close()
        short = os.path.join(tmp, "short.txt")
        with open(short, "w") as f:
            f.write("the cat sat")
        nobrown = os.path.join(tmp, "nobrown")
        os.makedirs(nobrown)

        def bad_train(name, args, needle, env=None):
            o = os.path.join(tmp, "bad", name)
            rc, _, err = run("transcoder", "train", *args, "--out", o, env=env)
            check(rc == 2 and needle in err and not os.path.exists(o),
                  f"train {name}: exit {rc}, names '{needle}', nothing written ({err.strip()[-200:]})")

        base = ["--model", GPT2, "--tokens", "3000", "--features", "64", "--batch", "256", "--context", "16"]
        bad_train("l1-and-k", base + ["--layer", "0", "--l1", "0.01", "--k", "4", "--file", TEXT], "--l1")
        bad_train("layer-out-of-range", base + ["--layer", "2", "--file", TEXT], "--layer 2: the model has 2 layers")
        bad_train("k-too-big", base + ["--layer", "0", "--k", "65", "--file", TEXT], "k 65 must be in 1..64")
        bad_train("context-too-long", base[:-2] + ["--context", "64", "--layer", "0", "--file", TEXT], "context 64")
        bad_train("batch-over-buffer", base + ["--layer", "0", "--buffer", "100", "--file", TEXT], "buffer")
        bad_train("negative-features", base + ["--layer", "0", "--features", "-5", "--file", TEXT], "negative")
        bad_train("empty-text", base + ["--layer", "0", "--file", empty], empty)
        bad_train("short-text", base + ["--layer", "0", "--file", short], short)
        bad_train("missing-text", base + ["--layer", "0", "--file", os.path.join(tmp, "nope.txt")], "nope.txt")
        bad_train("no-tokens", ["--model", GPT2, "--layer", "0", "--file", TEXT], "--tokens")
        bad_train("no-brown", base + ["--layer", "0"], "no Brown corpus", env=dict(os.environ, LMWB_SHARED=nobrown))
        bad_train("bad-hook", base + ["--sae", "blocks.9.hook_nothing", "--file", TEXT], "--sae")
        bad_train("no-model", ["--model", os.path.join(tmp, "nomodel")] + base[2:] + ["--layer", "0", "--file", TEXT], "nomodel")
        # into the model folder itself
        rc, _, err = run("transcoder", "train", *base, "--layer", "0", "--file", TEXT, "--out", GPT2)
        check(rc == 2 and "gpt2" in err, f"train --out the model folder: exit {rc} ({err.strip()[-160:]})")
        # a resume with other settings, naming the setting, changing nothing
        before = read(ck) if os.path.exists(ck) else None
        o2 = os.path.join(tmp, "cut2")
        train(o2, 1, tokens=12000, extra=["--stop-after", "3"])
        ck2 = os.path.join(o2, "checkpoint", "state.safetensors")
        snap = read(ck2)
        rc, _, err = train(o2, 1, tokens=12000, extra=["--resume", "--lr", "1e-3"])
        check(rc == 2 and "lr=" in err and read(ck2) == snap and not os.path.exists(os.path.join(o2, "cfg.json")),
              f"a resume with another learning rate is refused, naming it ({err.strip()[-200:]})")
        del before

        def bad_eval(name, set_dir, needle, text=TEXT, model=GPT2):
            o = os.path.join(tmp, "bad", "eval-" + name + ".json")
            rc, _, err = run("transcoder", "eval", "--model", model, "--transcoders", set_dir, "--file", text,
                             "--context", "16", "--out", o)
            check(rc == 2 and needle in err and not os.path.exists(o),
                  f"eval {name}: exit {rc}, names '{needle}', nothing written ({err.strip()[-200:]})")

        def copy_set(name):
            d = os.path.join(tmp, name)
            shutil.copytree(s, d)
            return d

        d = copy_set("missing")
        shutil.rmtree(os.path.join(d, "layer_1"))
        bad_eval("missing-layer", d, "layer_1")
        bad_eval("too-few-layers", s, "layer_2", model=os.path.join(FIX, "llama_bf16_sharded"))
        d = copy_set("truncated")
        w = os.path.join(d, "layer_0", "sae_weights.safetensors")
        data = read(w)
        with open(w, "wb") as f:
            f.write(data[: len(data) // 2])
        bad_eval("truncated", d, "layer_0")
        d = copy_set("nan")
        w = os.path.join(d, "layer_1", "sae_weights.safetensors")
        hdr, start, data = safetensors_header(w)
        off = start + hdr["b_enc"]["data_offsets"][0]
        nan16 = struct.pack("<H", 0x7E00) if hdr["b_enc"]["dtype"] == "F16" else struct.pack("<f", float("nan"))
        with open(w, "wb") as f:
            f.write(data[:off] + nan16 + data[off + len(nan16):])
        bad_eval("nan-weights", d, "b_enc")
        d = copy_set("narrow")
        c = os.path.join(d, "layer_0", "cfg.json")
        cfg = json.load(open(c))
        cfg["d_in"] = 32
        json.dump(cfg, open(c, "w"))
        bad_eval("sizes", d, "W_enc")
        bad_eval("empty-text", s, "empty", text=empty)
        bad_eval("short-text", s, short, text=short)
        bad_eval("no-set", os.path.join(tmp, "noset"), "noset")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failed")
        sys.exit(1)


main()
