"""lmwb-batch against hostile files and outputs. Every case builds its own hostile files in a
temporary folder, runs lmwb-batch, checks the exit status (2: bad input, 1: failure, never a
crash or a hang) and the message, and compares the bytes (and kinds, modes, links) of every
input folder before and after: no command may change an input.

 1 --out onto the command's own input (model files, --file, symlinks and hard links to them, any
   path inside the model folder) is refused naming both.
 2 --out to /dev/null, a fifo, /dev/stdout writes through; a symlink is followed; an existing
   file keeps its mode and its hard links.
 3 100,000 levels of nesting in config.json, tokenizer.json, a safetensors header or index.
 4 NaN/Inf weights are refused at load naming the tensor; weights that overflow give exit 1 and
   no number (no npy, no JSON) is written.
 5 Interrupted writes (SIGINT/SIGTERM at random moments) leave no temporary file; a stale
   temporary of the target is removed by the next run, a live one is not.
 6 /dev/zero, fifos and huge sparse files as inputs are refused before they are read.
 7 Oversized batches and configs, 64-bit-overflowing shapes and sizes, duplicated tensor names.
 8 UTF-8 command-line text under LC_ALL=C.
Usage: test_hostile_cli.py LMWB_BATCH FIXTURES_MODELS_DIR   (stdlib only)
"""
import fcntl
import hashlib
import json
import math
import os
import random
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time

BATCH, FIX = sys.argv[1], sys.argv[2]
failures = []
ENV = dict(os.environ, LC_ALL="C.UTF-8")


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def run(*args, env=None, timeout=120, stdin=subprocess.DEVNULL):
    p = subprocess.run([BATCH, *args], capture_output=True, env=env or ENV, timeout=timeout, stdin=stdin)
    err = p.stderr.decode(errors="replace")
    # In the sanitizer build a report fails the test even when the exit status looks right.
    if "runtime error:" in err or "Sanitizer" in err:
        check(False, "no sanitizer report from %s: %s" % (" ".join(args[:3]), err.strip()[:300]))
    return p.returncode, p.stdout, err


def snapshot(root):
    """Kind, mode, inode, link count and content hash of everything under root (links not followed)."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h = None
            if stat.S_ISREG(st.st_mode) and st.st_size > (64 << 20):  # the sparse giants: size and time
                h = (st.st_size, st.st_mtime_ns)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    h = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                h = os.readlink(p)
            snap[os.path.relpath(p, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_ino, st.st_nlink, h)
    return snap


def model_copy(tmp, name="gpt2", to="M"):
    dst = os.path.join(tmp, to)
    os.mkdir(dst)
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(os.path.join(FIX, name, f), dst)
    return dst


def st_read(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), bytearray(data[8 + n:])


def st_write(path, header, buf, raw_header=None):
    h = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + bytes(buf))


def set_f32(path, tensor, values):
    """Overwrite the first elements of an F32 tensor."""
    header, buf = st_read(path)
    begin = header[tensor]["data_offsets"][0]
    struct.pack_into("<%df" % len(values), buf, begin, *values)
    st_write(path, header, buf)


def fill_f32(path, tensor, value):
    header, buf = st_read(path)
    b, e = header[tensor]["data_offsets"]
    struct.pack_into("<%df" % ((e - b) // 4), buf, b, *([value] * ((e - b) // 4)))
    st_write(path, header, buf)


def no_temps(d):
    return [n for n in os.listdir(d) if ".tmp-" in n]


def refused(rc, err, *frags):
    return rc == 2 and all(f in err for f in frags)


# ---- 1: --out onto an input -----------------------------------------------------------------

def case_out_onto_input(tmp):
    M = model_copy(tmp)
    text = os.path.join(tmp, "text.txt")
    with open(text, "w") as f:
        f.write("Hello world. Hello world again.\n")
    os.symlink(os.path.join(M, "model.safetensors"), os.path.join(tmp, "link.npy"))
    os.link(os.path.join(M, "config.json"), os.path.join(tmp, "hard.npy"))
    before = snapshot(tmp)
    for target in ("model.safetensors", "config.json", "tokenizer.json"):
        out = os.path.join(M, target)
        rc, _, err = run("logits", "--model", M, "--ids", "1,2,3", "--out", out)
        check(refused(rc, err, out, "reads"), "1: logits --out %s is refused naming it (rc %d: %s)" % (target, rc, err.strip()))
        rc, _, err = run("info", "--model", M, "--out", out)
        check(refused(rc, err, out), "1: info --out %s is refused" % target)
    rc, _, err = run("logits", "--model", M, "--ids", "1,2,3", "--out", os.path.join(M, "new.npy"))
    check(refused(rc, err, "new.npy", M), "1: --out into the model folder is refused naming the folder")
    rc, _, err = run("neurons", "decode", "--model", M, "--layers", "0", "--out", os.path.join(M, "n.json"))
    check(refused(rc, err, M), "1: neurons decode --out into the model folder is refused")
    rc, _, err = run("logits", "--model", M, "--ids", "1,2,3", "--out", os.path.join(tmp, "link.npy"))
    check(refused(rc, err, "model.safetensors"), "1: --out through a symlink to model.safetensors is refused naming it")
    rc, _, err = run("logits", "--model", M, "--ids", "1,2,3", "--out", os.path.join(tmp, "hard.npy"))
    check(refused(rc, err, "hard.npy", "config.json"), "1: --out to a hard link of config.json is refused naming both")
    rc, _, err = run("perplexity", "--model", M, "--file", text, "--out", text)
    check(refused(rc, err, text), "1: perplexity --file X --out X is refused")
    rc, _, err = run("tokenize", "--model", M, "--file", text, "--out", text)
    check(refused(rc, err, text), "1: tokenize --file X --out X is refused")
    corpus_dir = os.path.join(tmp, "tok")
    os.mkdir(corpus_dir)
    corpus = os.path.join(corpus_dir, "tokenizer.json")
    with open(corpus, "w") as f:
        f.write("the cat sat on the mat. " * 200)
    before_tok = snapshot(tmp)
    rc, _, err = run("train-tokenizer", "--corpus", corpus, "--vocab-size", "262", "--out", corpus_dir)
    check(refused(rc, err, corpus), "1: train-tokenizer whose --out would replace its corpus is refused")
    check(snapshot(tmp) == before_tok, "1: the corpus is unchanged")
    shutil.rmtree(corpus_dir)
    check(snapshot(tmp) == before, "1: the model folder, the text, the links: byte for byte unchanged")
    check(run("info", "--model", M)[0] == 0, "1: the model still loads")


# ---- 2: special outputs ---------------------------------------------------------------------

def case_special_outputs(tmp):
    M = model_copy(tmp)
    before = snapshot(M)
    ids = ["--model", M, "--ids", "1,2,3"]
    if os.geteuid() == 0:
        st = os.stat("/dev/null")
        rc, _, err = run("logits", *ids, "--out", "/dev/null")
        st2 = os.stat("/dev/null")
        check(rc == 0 and stat.S_ISCHR(st2.st_mode) and st2.st_rdev == st.st_rdev,
              "2: --out /dev/null as root writes through and /dev/null stays a device (%s)" % err.strip())
    fifo = os.path.join(tmp, "fifo")
    os.mkfifo(fifo)
    got = {}

    def reader():
        with open(fifo, "rb") as f:
            got["data"] = f.read()
    th = threading.Thread(target=reader)
    th.start()
    rc, _, err = run("logits", *ids, "--out", fifo)
    th.join(30)
    check(rc == 0 and got.get("data", b"").startswith(b"\x93NUMPY") and stat.S_ISFIFO(os.lstat(fifo).st_mode),
          "2: --out FIFO writes the .npy through the fifo, which stays a fifo")
    rc, out, err = run("logits", *ids, "--out", "/dev/stdout")
    check(rc == 0 and out.startswith(b"\x93NUMPY"), "2: --out /dev/stdout writes to stdout")
    rc, out, err = run("info", "--model", M, "--out", "/dev/stdout")
    check(rc == 0 and json.loads(out)["n_layer"] == 2, "2: info --out /dev/stdout prints the JSON")
    real = os.path.join(tmp, "real.npy")
    with open(real, "wb") as f:
        f.write(b"old")
    link = os.path.join(tmp, "link.npy")
    os.symlink("real.npy", link)
    rc, _, err = run("logits", *ids, "--out", link)
    check(rc == 0 and os.path.islink(link) and open(real, "rb").read().startswith(b"\x93NUMPY"),
          "2: --out SYMLINK follows it: the link stays, its target gets the array")
    dangling = os.path.join(tmp, "dangling.npy")
    os.symlink("created.npy", dangling)
    rc, _, err = run("logits", *ids, "--out", dangling)
    check(rc == 0 and os.path.islink(dangling) and os.path.isfile(os.path.join(tmp, "created.npy")),
          "2: a dangling symlink's target is created")
    for mode in (0o600, 0o640, 0o444):
        p = os.path.join(tmp, "mode-%o.npy" % mode)
        with open(p, "wb") as f:
            f.write(b"x")
        os.chmod(p, mode)
        rc, _, err = run("logits", *ids, "--out", p)
        check(rc == 0 and stat.S_IMODE(os.stat(p).st_mode) == mode and open(p, "rb").read(6) == b"\x93NUMPY",
              "2: an existing file of mode %o keeps it" % mode)
    a, b = os.path.join(tmp, "a.npy"), os.path.join(tmp, "b.npy")
    with open(a, "wb") as f:
        f.write(b"old")
    os.link(a, b)
    rc, _, err = run("logits", *ids, "--out", a)
    check(rc == 0 and os.stat(a).st_ino == os.stat(b).st_ino and open(b, "rb").read(6) == b"\x93NUMPY",
          "2: a file with two hard links is rewritten in place: both names see the array")
    check(not no_temps(tmp), "2: no temporary file is left")
    check(snapshot(M) == before, "2: the model folder is unchanged")


# ---- 3: deep nesting ------------------------------------------------------------------------

def case_deep_nesting(tmp):
    deep = [b"[" * 100000, b'{"a":' * 100000, b"[" * 60000 + b"]" * 60000]
    for i, doc in enumerate(deep):
        for target in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors",
                       "model.safetensors.index.json"):
            d = tempfile.mkdtemp(dir=tmp)
            M = model_copy(d)
            p = os.path.join(M, target)
            if target == "model.safetensors":
                st_write(p, None, b"", raw_header=doc)
            else:
                with open(p, "wb") as f:
                    f.write(doc)
            before = snapshot(d)
            rc, _, err = run("info", "--model", M)
            if target == "tokenizer_config.json":  # optional metadata: ignored, never a crash
                check(rc == 0, "3: nesting doc %d in %s: ignored, model loads (rc %d)" % (i, target, rc))
            else:
                check(refused(rc, err, target, "nested deeper"),
                      "3: nesting doc %d in %s: exit 2 naming it (rc %d: %s)" % (i, target, rc, err.strip()[:120]))
            check(snapshot(d) == before, "3: folder unchanged (%s)" % target)


# ---- 4: non-finite weights and results ------------------------------------------------------

def case_nonfinite(tmp):
    for name, tensor, value in (("nan", "transformer.ln_f.weight", float("nan")),
                                ("inf", "transformer.wte.weight", float("inf")),
                                ("-inf", "transformer.h.1.mlp.c_proj.weight", float("-inf"))):
        d = tempfile.mkdtemp(dir=tmp)
        M = model_copy(d)
        set_f32(os.path.join(M, "model.safetensors"), tensor, [1.0, value])
        before = snapshot(d)
        for args in (["info"], ["logits", "--ids", "1,2,3", "--out", os.path.join(d, "l.npy")],
                     ["perplexity", "--file", os.path.join(M, "config.json")],
                     ["generate", "--prompt", "Hello", "--max-tokens", "3"]):
            rc, out, err = run(*args, "--model", M)
            check(refused(rc, err, tensor, "non-finite") and out == b"",
                  "4: %s in %s: %s exits 2 naming the tensor (rc %d: %s)" % (name, tensor, args[0], rc, err.strip()[:160]))
        check(snapshot(d) == before and not os.path.exists(os.path.join(d, "l.npy")), "4: nothing written (%s)" % name)
    # F16 infinity (0x7C00) in the half-precision fixture.
    d = tempfile.mkdtemp(dir=tmp)
    M = model_copy(d, "gpt2_noprefix_f16")
    p = os.path.join(M, "model.safetensors")
    header, buf = st_read(p)
    struct.pack_into("<H", buf, header["ln_f.bias"]["data_offsets"][0] + 2, 0x7C00)
    st_write(p, header, buf)
    rc, _, err = run("info", "--model", M)
    check(refused(rc, err, "ln_f.bias", "non-finite"), "4: an F16 infinity is refused naming the tensor")
    # Finite weights whose outputs overflow: the results are not finite -> exit 1, nothing written.
    d = tempfile.mkdtemp(dir=tmp)
    M = model_copy(d)
    for t in ("transformer.ln_f.weight", "transformer.ln_f.bias"):
        fill_f32(os.path.join(M, "model.safetensors"), t, 3e38)
    text = os.path.join(d, "text.txt")
    with open(text, "w") as f:
        f.write("Hello world. Hello world.\nAnother line here.\n")
    before = snapshot(d)
    rc, out, err = run("info", "--model", M)
    check(rc == 0, "4: huge but finite weights load")
    for args, what in ((["logits", "--ids", "1,2,3", "--out", os.path.join(d, "l.npy")], "logit"),
                       (["activations", "--ids", "1,2,3", "--hook", "blocks.1.hook_resid_post", "--out",
                         os.path.join(d, "a.npy")], None),
                       (["perplexity", "--file", text], "finite"),
                       (["perplexity", "--file", text, "--per-line"], "finite"),
                       (["perplexity", "--file", text, "--out", os.path.join(d, "p.json")], "finite"),
                       (["generate", "--prompt", "Hello", "--max-tokens", "3"], "not finite"),
                       (["neurons", "decode", "--layers", "0"], "not a finite"),
                       (["neurons", "decode", "--layers", "0", "--out", os.path.join(d, "n.csv")], "not a finite")):
        rc, out, err = run(*args, "--model", M)
        if what is None:  # activations before the head stay finite: written
            check(rc == 0, "4: finite activations are still written")
            continue
        check(rc == 1 and what in err and out == b"",
              "4: overflowing %s: exit 1, nothing on stdout (rc %d: %s)" % (args[0], rc, err.strip()[:160]))
    for f in ("l.npy", "p.json", "n.csv"):
        check(not os.path.exists(os.path.join(d, f)), "4: no %s written" % f)
    check(not no_temps(d), "4: no temporary left")


# ---- 5: interrupted writes ------------------------------------------------------------------

def case_interrupt(tmp):
    M = model_copy(tmp)
    out_dir = os.path.join(tmp, "out")
    os.mkdir(out_dir)
    out = os.path.join(out_dir, "logits.npy")
    stale = os.path.join(out_dir, ".logits.npy.tmp-0badcafe")
    live = os.path.join(out_dir, ".logits.npy.tmp-0000cafe")
    other = os.path.join(out_dir, ".other.npy.tmp-0badcafe")
    for p in (stale, live, other):
        with open(p, "wb") as f:
            f.write(b"\0" * 4096)
    holder = open(live, "rb")
    fcntl.flock(holder, fcntl.LOCK_EX)
    rc, _, err = run("logits", "--model", M, "--ids", "1,2,3", "--out", out)
    check(rc == 0 and not os.path.exists(stale), "5: a stale temporary of the target is removed by the next run")
    check(os.path.exists(live), "5: a temporary locked by a live writer is left alone")
    check(os.path.exists(other), "5: another target's temporary is left alone")
    holder.close()
    for p in (live, other, out):
        os.unlink(p)
    # Many runs cut at random moments: the target is absent or complete, never a temp.
    row = ",".join(str(i % 300) for i in range(32))
    ids = ";".join([row] * 64)
    expected = None
    rc, _, _ = run("logits", "--model", M, "--ids", ids, "--out", out)
    if rc == 0:
        expected = os.path.getsize(out)
        os.unlink(out)
    t0 = time.monotonic()
    p = subprocess.Popen([BATCH, "logits", "--model", M, "--ids", ids, "--out", out], env=ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p.wait()
    full = time.monotonic() - t0
    rng = random.Random(20)
    bad = []
    for k in range(24):
        if os.path.exists(out):
            os.unlink(out)
        sig = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)[k % 3]
        p = subprocess.Popen([BATCH, "logits", "--model", M, "--ids", ids, "--out", out], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, full))
        p.send_signal(sig)
        p.wait()
        left = no_temps(out_dir)
        size = os.path.getsize(out) if os.path.exists(out) else None
        if left or (size is not None and size != expected):
            bad.append((sig, left, size))
    check(expected is not None and not bad, "5: 24 runs interrupted by SIGINT/SIGTERM/SIGHUP leave no temporary "
          "and no partial file (%s)" % bad)


# ---- 6: inputs that are not regular files, or huge --------------------------------------------

def case_not_regular(tmp):
    for target, src in (("config.json", "/dev/zero"), ("tokenizer.json", "/dev/zero"), ("model.safetensors", "/dev/zero"),
                        ("config.json", "fifo"), ("tokenizer.json", "fifo"), ("config.json", "sparse"),
                        ("tokenizer.json", "sparse"), ("model.safetensors.index.json", "sparse")):
        d = tempfile.mkdtemp(dir=tmp)
        M = model_copy(d)
        p = os.path.join(M, target)
        if os.path.exists(p):
            os.unlink(p)
        if src == "fifo":
            os.mkfifo(p)
        elif src == "sparse":
            with open(p, "wb") as f:
                f.truncate(3 << 30)
        else:
            os.symlink(src, p)
        before = snapshot(d)
        t0 = time.monotonic()
        rc, _, err = run("info", "--model", M, timeout=60)
        dt = time.monotonic() - t0
        check(refused(rc, err, target) and dt < 20,
              "6: %s as %s: exit 2 naming it in %.1fs, nothing read (%s)" % (src, target, dt, err.strip()[:120]))
        check(snapshot(d) == before, "6: folder unchanged (%s as %s)" % (src, target))
    M = model_copy(tmp)
    rc, _, err = run("perplexity", "--model", M, "--file", "/dev/zero", timeout=60)
    check(refused(rc, err, "/dev/zero", "character device"), "6: perplexity --file /dev/zero: exit 2 at once")
    sparse = os.path.join(tmp, "big.txt")
    with open(sparse, "wb") as f:
        f.truncate(3 << 30)
    rc, _, err = run("perplexity", "--model", M, "--file", sparse, timeout=60)
    check(refused(rc, err, sparse, "limit"), "6: perplexity --file (3 GiB): refused before reading")
    rc, out, err = run("tokenize", "--model", M, "--file", "/dev/stdin", stdin=open(os.path.join(M, "config.json"), "rb"))
    check(rc == 0 and json.loads(out)["ids"], "6: tokenize --file /dev/stdin still reads a redirected file")


# ---- 7: sizes ---------------------------------------------------------------------------------

def write_config(M, **changes):
    p = os.path.join(M, "config.json")
    with open(p) as f:
        cfg = json.load(f)
    cfg.update(changes)
    with open(p, "w") as f:
        json.dump(cfg, f)


def case_sizes(tmp):
    M = model_copy(tmp)
    for args in (["--batch", "2147483647"], ["--batch", "2147483647", "--seq", "2"], ["--batch", "70000", "--seq", "32"],
                 ["--seq", "2147483647"]):
        rc, _, err = run("bench", "--model", M, *args)
        check(rc == 2, "7: bench %s: exit 2 (rc %d: %s)" % (" ".join(args), rc, err.strip()[:120]))
    rc, _, err = run("logits", "--model", M, "--ids", ";".join(["1,2"] * 30000), "--out", os.path.join(tmp, "x.npy"))
    check(rc in (0, 2), "7: a large --ids batch: exit 0 or 2, no crash (rc %d)" % rc)
    cases = [
        ("n_embd 2^31-1", dict(n_embd=2147483647)),
        ("n_embd 2^20, 48 layers (beyond memory)", dict(n_embd=1 << 20, n_layer=48, n_head=16)),
        ("n_inner 2^31-1", dict(n_inner=2147483647)),
        ("n_head 2^31-1", dict(n_head=2147483647)),
        ("vocab 2^31-1", dict(vocab_size=2147483647)),
        ("30-digit n_embd", None),
        ("layer_norm_epsilon 1e300", dict(layer_norm_epsilon=1e300)),
    ]
    for what, ch in cases:
        d = tempfile.mkdtemp(dir=tmp)
        M2 = model_copy(d)
        if ch is None:
            p = os.path.join(M2, "config.json")
            text = open(p).read().replace('"n_embd": 64', '"n_embd": 123456789012345678901234567890')
            open(p, "w").write(text)
        else:
            write_config(M2, **ch)
        before = snapshot(d)
        rc, _, err = run("info", "--model", M2)
        check(refused(rc, err, "config.json"), "7: config %s: exit 2 (rc %d: %s)" % (what, rc, err.strip()[:140]))
        check(snapshot(d) == before, "7: folder unchanged (%s)" % what)
    # A config that fits the memory limit but that the files cannot fill: refused before allocating.
    d = tempfile.mkdtemp(dir=tmp)
    M2 = model_copy(d)
    write_config(M2, n_embd=4096, n_layer=64, n_head=32, n_inner=16384)  # 12.9e9 bytes of float32
    env = dict(ENV, LMWB_MEMORY_LIMIT="64G")
    rc, _, err = run("info", "--model", M2, env=env)
    check(refused(rc, err, "implies", "hold only"), "7: a 12.9 GB config over a 361 kB file: exit 2 before allocating (%s)" % err.strip()[:160])
    env = dict(ENV, LMWB_MEMORY_LIMIT="1G")
    rc, _, err = run("info", "--model", M2, env=env)
    check(refused(rc, err, "GiB"), "7: the same config over a 1 GiB budget: exit 2 naming the sizes")
    # Hostile safetensors headers.
    for what, mutate, frag in (
            ("30-digit shape", lambda h: h["transformer.ln_f.bias"].__setitem__("shape", [10 ** 29]), "64 bits"),
            ("30-digit offset", lambda h: h["transformer.ln_f.bias"].__setitem__("data_offsets", [0, 10 ** 29]), "64 bits"),
            ("1e400 in metadata", None, "too large"),
            ("duplicate tensor name", None, "listed twice")):
        d = tempfile.mkdtemp(dir=tmp)
        M2 = model_copy(d)
        p = os.path.join(M2, "model.safetensors")
        header, buf = st_read(p)
        raw = None
        if mutate:
            mutate(header)
            raw = json.dumps(header, separators=(",", ":")).replace(str(10 ** 29), "123456789012345678901234567890").encode()
        elif what.startswith("1e400"):
            raw = json.dumps(header, separators=(",", ":")).replace('"format":"pt"', '"format":"pt","x":1e400').encode()
        else:
            body = json.dumps(header, separators=(",", ":"))
            entry = '"transformer.ln_f.bias":' + json.dumps(header["transformer.ln_f.bias"], separators=(",", ":"))
            raw = (body[:-1] + "," + entry + "}").encode()
        st_write(p, None, buf, raw_header=raw)
        before = snapshot(d)
        rc, _, err = run("info", "--model", M2)
        check(refused(rc, err, "model.safetensors", frag), "7: %s: exit 2 (%s)" % (what, err.strip()[:160]))
        check("negative" not in err, "7: %s is not reported as a negative dimension" % what)
        check(snapshot(d) == before, "7: folder unchanged (%s)" % what)


# ---- 8: UTF-8 arguments whatever the locale ---------------------------------------------------

def case_utf8(tmp):
    M = model_copy(tmp)
    text = "héllo wörld, 日本 — ok"
    outs = {}
    for loc in ("C.UTF-8", "C", "POSIX"):
        env = dict(os.environ, LC_ALL=loc, LANG=loc)
        rc, out, err = run("tokenize", "--model", M, "--text", text, env=env)
        outs[loc] = out
        check(rc == 0, "8: tokenize --text under LC_ALL=%s (rc %d: %s)" % (loc, rc, err.strip()))
        rc, out, err = run("generate", "--model", M, "--prompt", text, "--max-tokens", "2", env=env)
        check(rc == 0 and json.loads(out)["prompt"] == text, "8: generate --prompt under LC_ALL=%s keeps the prompt" % loc)
    check(outs["C"] == outs["C.UTF-8"] == outs["POSIX"], "8: the same ids in every locale")
    p = subprocess.run([BATCH.encode(), b"tokenize", b"--model", M.encode(), b"--text", b"bad \xff\xfe"],
                       capture_output=True, env=dict(os.environ, LC_ALL="C"))
    check(p.returncode == 2, "8: invalid UTF-8 in --text is exit 2")


def main():
    cases = [case_out_onto_input, case_special_outputs, case_deep_nesting, case_nonfinite, case_interrupt,
             case_not_regular, case_sizes, case_utf8]
    for case in cases:
        t0 = time.monotonic()
        tmp = tempfile.mkdtemp(prefix="lmwb-hostile-")
        try:
            case(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print("# %s: %.1f s" % (case.__name__, time.monotonic() - t0), flush=True)
    if failures:
        print("%d check(s) failed:\n  " % len(failures) + "\n  ".join(failures))
        sys.exit(1)
    print("all hostile-input checks passed")


main()
