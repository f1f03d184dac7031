"""lmwb-batch tokfsm make / eval (analysis/tokfsm.h, analysis/tokfsm_eval.h).

(a) make: every sequence of train.txt and valid.txt is EOT + 2*length digits whose every transition
    is an edge of fsm.json; each state has --edges distinct successors (10 at the paper's defaults);
    the same seed gives the same bytes, another seed another machine; tokenizer.json encodes
    "<|endoftext|>0512" as [10, 0, 5, 1, 2] through the workbench's loader.
(b) eval on a random 2-layer GPT-2 with the TokFSM vocabulary and a random MLP codebook set (k=1):
    loss, next-token accuracy and state accuracy (plain and with codebooks), the best code's
    precision/recall per state and the best neuron's precision at that recall, against an
    independent float64 reimplementation here (hf_models forward, the codebook written out in torch,
    the greedy two-digit continuation run in full, neurons by brute force over every threshold).
(c) bad input -> exit 2 naming the field or file, nothing written.
(m) make --memorised N --repeats R: train.txt holds the ordinary walks in order with exactly R
    copies of each of N other legal walks between them, spread over the file (not bunched);
    memorised.jsonl gives each walk's first --prefix-states states after <|endoftext|> and the next
    --suffix-states; the same seed gives the same bytes.
(d) the pieces rebuild.sh uses: `train` with "window_start": "eos" and `codebook train --eos-windows`
    run on TokFSM data (and refuse a text without end-of-text tokens).
Usage: test_tokfsm_cli.py LMWB_BATCH
"""
import json
import math
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

BATCH = sys.argv[1]
EOT = 10


def run(*args):
    return run_batch(BATCH, *args)


def read_seqs(path, length):
    text = open(path).read()
    parts = text.split("<|endoftext|>")
    check(parts[0] == "" and parts[-1] == "", f"{os.path.basename(path)} starts and ends with <|endoftext|>")
    return [[EOT] + [int(c) for c in p] for p in parts[1:-1]], all(len(p) == 2 * length and p.isdigit() for p in parts[1:-1])


def case_make(tmp):
    d = os.path.join(tmp, "fsm")
    rc, out, err = run("tokfsm", "make", "--states", "12", "--edges", "3", "--length", "6", "--seed", "5",
                       "--sequences", "300", "--valid", "40", "--out", d)
    check(rc == 0, f"make runs ({err.strip()[-200:]})")
    fsm = json.load(open(os.path.join(d, "fsm.json")))
    nxt = fsm["next"]
    check(fsm["states"] == 12 and fsm["edges"] == 3 and fsm["length"] == 6 and len(nxt) == 12, "fsm.json sizes")
    check(all(len(r) == 3 and len(set(r)) == 3 and all(0 <= t < 12 for t in r) for r in nxt),
          "every state has 3 distinct successors among the states")
    for split, n in (("train.txt", 300), ("valid.txt", 40)):
        seqs, shaped = read_seqs(os.path.join(d, split), 6)
        check(len(seqs) == n and shaped, f"{split}: {n} sequences of 12 digits")
        bad = 0
        starts = set()
        for s in seqs:
            states = [10 * s[1 + 2 * j] + s[2 + 2 * j] for j in range(6)]
            starts.add(states[0])
            bad += sum(states[j + 1] not in nxt[states[j]] for j in range(5)) + sum(x >= 12 for x in states)
        check(bad == 0, f"{split}: every transition is an edge of fsm.json ({bad} not)")
        check(len(starts) >= 10, f"{split}: starts spread over the states ({len(starts)} of 12)")
    d2 = os.path.join(tmp, "fsm2")
    run("tokfsm", "make", "--states", "12", "--edges", "3", "--length", "6", "--seed", "5", "--sequences", "300",
        "--valid", "40", "--out", d2)
    same = all(open(os.path.join(d, f), "rb").read() == open(os.path.join(d2, f), "rb").read()
               for f in ("fsm.json", "train.txt", "valid.txt", "tokenizer.json"))
    check(same, "the same seed gives the same files")
    d3 = os.path.join(tmp, "fsm3")
    run("tokfsm", "make", "--states", "12", "--edges", "3", "--length", "6", "--seed", "6", "--sequences", "300",
        "--out", d3)
    check(json.load(open(os.path.join(d3, "fsm.json")))["next"] != nxt, "another seed gives another machine")
    d4 = os.path.join(tmp, "paper")
    rc, _, _ = run("tokfsm", "make", "--seed", "1", "--sequences", "3", "--out", d4)
    p = json.load(open(os.path.join(d4, "fsm.json")))
    check(rc == 0 and p["states"] == 100 and all(len(set(r)) == 10 for r in p["next"]) and p["length"] == 64,
          "defaults: 100 states, 10 distinct out-edges each, 64 states a sequence")
    return d, fsm


def case_memorised(tmp):
    d = os.path.join(tmp, "mem")
    args = ["tokfsm", "make", "--states", "12", "--edges", "3", "--length", "10", "--seed", "5", "--sequences", "300",
            "--valid", "20", "--memorised", "4", "--repeats", "7", "--prefix-states", "3", "--suffix-states", "5"]
    rc, out, err = run(*args, "--out", d)
    check(rc == 0 and json.loads(out)["memorised"] == 4, f"make --memorised runs ({err.strip()[-200:]})")
    plain = os.path.join(tmp, "mem-plain")
    run(*args[:args.index("--memorised")], "--out", plain)
    fsm = json.load(open(os.path.join(d, "fsm.json")))
    nxt = fsm["next"]
    items = [json.loads(line) for line in open(os.path.join(d, "memorised.jsonl"))]
    check(len(items) == 4 and all(i["prefix"].startswith("<|endoftext|>") and len(i["prefix"]) == 13 + 6
                                  and len(i["suffix"]) == 10 for i in items),
          "memorised.jsonl: 4 items, prefix <|endoftext|> + 3 states, suffix 5 states")
    walks = open(os.path.join(d, "train.txt")).read().split("<|endoftext|>")[1:-1]
    ordinary = open(os.path.join(plain, "train.txt")).read().split("<|endoftext|>")[1:-1]
    keys = [i["prefix"][13:] + i["suffix"] for i in items]
    copies = [k for k, w in enumerate(walks) if any(w.startswith(key) for key in keys)]
    check(len(walks) == 300 + 28 and len(copies) == 28, f"train.txt: 300 walks + 28 copies ({len(walks)}, {len(copies)})")
    check(all(sum(walks[k].startswith(key) for k in copies) == 7 for key in keys), "each memorised walk 7 times")
    check([w for k, w in enumerate(walks) if k not in copies] == ordinary,
          "the ordinary walks are those of make without --memorised, in order")
    check(copies[0] < 60 and copies[-1] > 268, f"copies spread over the file (first {copies[0]}, last {copies[-1]})")
    bad = 0
    for k in copies:
        st = [int(walks[k][2 * j:2 * j + 2]) for j in range(10)]
        bad += sum(st[j + 1] not in nxt[st[j]] for j in range(9))
    check(bad == 0, "memorised walks are legal walks of the machine")
    d2 = os.path.join(tmp, "mem2")
    run(*args, "--out", d2)
    check(all(open(os.path.join(d, f), "rb").read() == open(os.path.join(d2, f), "rb").read()
              for f in ("train.txt", "memorised.jsonl")), "memorised: the same seed gives the same files")
    o = os.path.join(tmp, "mem-bad")
    for extra, field in ((["--memorised", "-1"], "memorised"), (["--memorised", "2", "--repeats", "0"], "repeats"),
                         (["--memorised", "2", "--prefix-states", "8", "--suffix-states", "5"], "prefix-states")):
        rc, _, err = run(*args[:args.index("--memorised")], *extra, "--out", o)
        check(rc == 2 and field in err and not os.path.exists(o), f"make {' '.join(extra)}: exit 2 naming {field}")


def random_model(tmp, fsm_dir):
    cfg = hf_write.make_config("gpt2", vocab_size=11, n_positions=13, n_embd=16, n_layer=2, n_head=2, n_inner=32,
                               bos_token_id=EOT, eos_token_id=EOT)
    state = hf_write.random_state(cfg, np.random.default_rng(3), gain=2.0)
    m = os.path.join(tmp, "model")
    hf_write.write_hf_folder(m, cfg, state)
    shutil.copy(os.path.join(fsm_dir, "tokenizer.json"), m)
    return m, cfg


def select(x, codes):
    xn = torch.nn.functional.layer_norm(x, (x.shape[-1],), eps=1e-5)
    c = torch.from_numpy(codes).to(torch.float64)
    return torch.argmax(xn @ (c / c.norm(dim=-1, keepdim=True)).T, dim=-1)


def reference(model_dir, books, seqs, nxt):
    """Everything tokfsm eval reports for (a) and (b), from its definitions."""
    model = hf_models.load_model(model_dir)
    ids_store = {}

    def edits():
        e = {}
        for layer, codes in books.items():
            def fn(x, layer=layer, codes=codes):
                ids = select(x, codes)
                ids_store[layer] = ids.numpy().copy()
                return torch.from_numpy(codes).to(torch.float64)[ids]
            e[f"blocks.{layer}.hook_mlp_out"] = fn
        return e

    def forward(ids, with_cb):
        with torch.no_grad():
            return model.run(torch.tensor(ids), edits=edits() if with_cb else None).numpy()

    out = {}
    S = len(nxt)
    for with_cb in (False, True):
        ids = np.array(seqs)
        lg = forward(ids, with_cb)
        T = ids.shape[1]
        L = (T - 1) // 2
        logp = lg - np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1, keepdims=True)) - lg.max(-1, keepdims=True)
        tgt = ids[:, 1:]
        loss = -np.take_along_axis(logp[:, :-1], tgt[..., None], -1).mean()
        acc = (lg[:, :-1].argmax(-1) == tgt).mean()
        codes = {l: ids_store[l].copy() for l in books} if with_cb else None
        post = {l: model.hooks[f"blocks.{l}.mlp.hook_post"].numpy().copy() for l in range(2)} if with_cb else None
        valid = n = 0
        for b in range(len(seqs)):
            for j in range(L - 1):
                p = 2 + 2 * j
                state = 10 * ids[b, p - 1] + ids[b, p]
                d1 = int(lg[b, p].argmax())
                d2 = int(forward(np.array([list(ids[b, :p + 1]) + [d1]]), with_cb)[0, -1].argmax())
                valid += d1 < 10 and d2 < 10 and (10 * d1 + d2) in nxt[state]
                n += 1
        out["codebooks" if with_cb else "plain"] = {"loss": loss, "accuracy": acc, "state_accuracy": valid / n}
    # (b): digit positions, marked states, best code by F1, best neuron at that recall
    ids = np.array(seqs)
    T = ids.shape[1]
    pos = [(b, t) for b in range(len(seqs)) for t in range(1, T)]
    marked = np.array([10 * ids[b, t - 1] + ids[b, t] if t >= 2 and t % 2 == 0 else -1 for b, t in pos])
    per_state = {}
    for s in range(S):
        M = marked == s
        if not M.any():
            continue
        best = None
        for layer in sorted(books):
            act = np.array([codes[layer][b, t] for b, t in pos])
            for c in range(books[layer].shape[0]):
                on = act == c
                h = int((on & M).sum())
                if h == 0:
                    continue
                f1 = 2 * h / (on.sum() + M.sum())
                if best is None or f1 > best[0] + 1e-12:
                    best = (f1, h / on.sum(), h / M.sum())
        prec, rec = (best[1], best[2]) if best else (0.0, 0.0)
        need = max(1, math.ceil(rec * M.sum() - 1e-9)) if best else 0
        nprec = 0.0
        if need:
            for l in range(2):
                vals = np.array([post[l][b, t] for b, t in pos])
                for u in range(vals.shape[1]):
                    order = np.lexsort((np.arange(len(pos)), -vals[:, u]))
                    cum = np.cumsum(M[order])
                    i = int(np.searchsorted(cum, need))  # first index where need marked positions are reached
                    nprec = max(nprec, need / (i + 1))
        per_state[s] = (prec, rec, nprec, need / M.sum() if need else 0.0)
    v = np.array(list(per_state.values()))
    out["codes_vs_neurons"] = {"states_measured": len(per_state), "code_precision": v[:, 0].mean(),
                               "code_recall": v[:, 1].mean(), "neuron_precision": v[:, 2].mean(),
                               "neuron_recall": v[:, 3].mean()}
    return out


def case_eval(tmp, fsm_dir, fsm):
    m, cfg = random_model(tmp, fsm_dir)
    rc, out, err = run("tokenize", "--model", m, "--text", "<|endoftext|>0512")
    check(rc == 0 and json.loads(out)["ids"] == [10, 0, 5, 1, 2],
          f"tokenizer.json: <|endoftext|>0512 -> [10, 0, 5, 1, 2] ({out.strip()[:80]} {err.strip()[-120:]})")
    rng = np.random.default_rng(11)
    C = 12
    books = {0: rng.standard_normal((C, 16)).astype(np.float32), 1: rng.standard_normal((C, 16)).astype(np.float32)}
    cb = os.path.join(tmp, "cb")
    os.makedirs(cb)
    hf_write.write_safetensors(os.path.join(cb, "codebooks.safetensors"),
                               {f"blocks.{l}.mlp.codebook": c for l, c in books.items()})
    json.dump({"k": 1, "num_codes": C, "sites": [{"layer": l, "site": "mlp"} for l in books]},
              open(os.path.join(cb, "codebooks.json"), "w"))
    n = 24
    res_path = os.path.join(tmp, "eval.json")
    rc, out, err = run("tokfsm", "eval", "--model", m, "--fsm", fsm_dir, "--codebooks", cb, "--sequences", str(n),
                       "--transitions", "60", "--batch", "5", "--threads", "1", "--out", res_path)
    check(rc == 0, f"eval runs ({err.strip()[-300:]})")
    if rc != 0:
        return
    got = json.load(open(res_path))
    seqs, _ = read_seqs(os.path.join(fsm_dir, "valid.txt"), fsm["length"])
    want = reference(m, books, seqs[:n], fsm["next"])
    check(got["sequences"] == n, "sequences counted")
    trans = n * (fsm["length"] - 1)
    for part in ("plain", "codebooks"):
        g, w = got[part], want[part]
        check(abs(g["loss"] - w["loss"]) < 1e-4 * max(1, w["loss"]), f"{part}: loss {g['loss']:.6f} == {w['loss']:.6f}")
        check(abs(g["accuracy"] - w["accuracy"]) < 1e-9 + 1.0 / g["tokens"],
              f"{part}: accuracy {g['accuracy']:.4f} == {w['accuracy']:.4f}")
        check(g["transitions"] == trans and abs(g["state_accuracy"] - w["state_accuracy"]) < 1e-9 + 1.0 / trans,
              f"{part}: state accuracy {g['state_accuracy']:.4f} == {w['state_accuracy']:.4f}")
    check(got["plain"]["loss"] != got["codebooks"]["loss"], "the codebooks change the loss")
    g, w = got["codes_vs_neurons"], want["codes_vs_neurons"]
    check(g["states_measured"] == w["states_measured"], f"states measured {g['states_measured']} == {w['states_measured']}")
    for key in ("code_precision", "code_recall", "neuron_precision", "neuron_recall"):
        check(abs(g[key] - w[key]) < 1e-6, f"{key} {g[key]:.6f} == reference {w[key]:.6f}")
    check(0 < g["code_precision"] <= 1 and 0 < g["neuron_precision"] <= 1, "precisions are in (0, 1]")
    p = got["patching"]
    check(p["transitions"] == 60 and len(p["patches"]) == 3 and p["patches"][0]["layers"] == "all"
          and [x.get("layer") for x in p["patches"][1:]] == [0, 1], "patching: all MLP codebooks, then each layer")
    check(p["jsd_unpatched"] > 0 and all(x["jsd"] >= 0 and math.isfinite(x["normalised"]) for x in p["patches"]),
          "patching: finite divergences")
    check(abs(p["patches"][0]["normalised"] - p["patches"][0]["jsd"] / p["jsd_unpatched"]) < 1e-9,
          "patching: normalised = patched / unpatched")
    # without codebooks: (a) only
    rc, out, err = run("tokfsm", "eval", "--model", m, "--fsm", fsm_dir, "--sequences", "4", "--threads", "1")
    j = json.loads(out) if rc == 0 else {}
    check(rc == 0 and "plain" in j and "codebooks" not in j and "patching" not in j, "eval without codebooks: (a) only")
    return m


def case_bad(tmp, fsm_dir, model):
    def bad(args, field, out_path):
        rc, _, err = run(*args)
        check(rc == 2 and field in err and not os.path.exists(out_path),
              f"{' '.join(args[:2])} {field}: exit 2 naming it, nothing written (rc {rc}: {err.strip()[-160:]})")
    o = os.path.join(tmp, "bad-out")
    bad(["tokfsm", "make", "--states", "101", "--sequences", "5", "--out", o], "states", o)
    bad(["tokfsm", "make", "--states", "10", "--edges", "11", "--sequences", "5", "--out", o], "edges", o)
    bad(["tokfsm", "make", "--states", "0", "--sequences", "5", "--out", o], "states", o)
    bad(["tokfsm", "make", "--sequences", "0", "--out", o], "sequences", o)
    empty = os.path.join(tmp, "empty")
    os.makedirs(empty)
    shutil.copy(os.path.join(fsm_dir, "valid.txt"), empty)
    r = os.path.join(tmp, "r.json")
    bad(["tokfsm", "eval", "--model", model, "--fsm", empty, "--out", r], "fsm.json", r)
    broken = os.path.join(tmp, "broken")
    shutil.copytree(fsm_dir, broken)
    j = json.load(open(os.path.join(broken, "fsm.json")))
    j["edges"] = j["states"] + 1
    json.dump(j, open(os.path.join(broken, "fsm.json"), "w"))
    bad(["tokfsm", "eval", "--model", model, "--fsm", broken, "--out", r], "edges", r)
    j["edges"], j["states"] = 3, 101
    json.dump(j, open(os.path.join(broken, "fsm.json"), "w"))
    bad(["tokfsm", "eval", "--model", model, "--fsm", broken, "--out", r], "states", r)
    other = os.path.join(tmp, "other")
    run("tokfsm", "make", "--states", "12", "--edges", "3", "--length", "6", "--seed", "9", "--sequences", "5",
        "--out", other)
    shutil.copy(os.path.join(fsm_dir, "valid.txt"), other)  # walks of another machine
    bad(["tokfsm", "eval", "--model", model, "--fsm", other, "--out", r], "edge", r)
    long_fsm = os.path.join(tmp, "long")
    run("tokfsm", "make", "--states", "12", "--edges", "3", "--length", "9", "--sequences", "5", "--out", long_fsm)
    bad(["tokfsm", "eval", "--model", model, "--fsm", long_fsm, "--out", r], "context", r)
    rc, out, _ = run("tokfsm", "make", "--help")
    check(rc == 0 and "--states" in out and "fsm.json" in out, "tokfsm make --help")
    rc, out, _ = run("tokfsm", "eval", "--help")
    check(rc == 0 and "--codebooks" in out and "state accuracy" in out, "tokfsm eval --help")


def case_train(tmp, fsm_dir, model):
    recipe = {"out": os.path.join(tmp, "trained"), "tokenizer": fsm_dir,
              "model": {"architecture": "gpt2", "n_layer": 1, "d_model": 16, "n_head": 2, "d_ff": 32, "context": 13},
              "train_files": [os.path.join(fsm_dir, "train.txt")], "valid_files": [os.path.join(fsm_dir, "valid.txt")],
              "batch": 4, "seq": 13, "steps": 6, "warmup": 1, "lr": 0.003, "eval_every": 3, "eval_batches": 2,
              "checkpoint_every": 3, "threads": 1, "window_start": "eos"}
    rp = os.path.join(tmp, "recipe.json")
    json.dump(recipe, open(rp, "w"))
    rc, out, err = run("train", "--recipe", rp)
    check(rc == 0 and os.path.exists(os.path.join(tmp, "trained", "model.safetensors")),
          f"train with window_start eos runs on TokFSM data ({err.strip()[-200:]})")
    rc, out, err = run("tokfsm", "eval", "--model", os.path.join(tmp, "trained"), "--fsm", fsm_dir, "--sequences", "4")
    check(rc == 0 and json.loads(out)["plain"]["loss"] < 3.0, "tokfsm eval reads the trained folder")
    recipe["window_start"] = "middle"
    recipe["out"] = os.path.join(tmp, "trained2")
    json.dump(recipe, open(rp, "w"))
    rc, _, err = run("train", "--recipe", rp)
    check(rc == 2 and "window_start" in err and not os.path.exists(recipe["out"]), "window_start middle: exit 2 naming it")
    cbo = os.path.join(tmp, "cbtrained")
    rc, out, err = run("codebook", "train", "--model", model, "--file", os.path.join(fsm_dir, "train.txt"),
                       "--sites", "attn,mlp", "--codes", "8", "--k", "1", "--steps", "3", "--context", "13",
                       "--batch", "4", "--eos-windows", "--finetune", "--eval-windows", "4", "--threads", "1", "--out", cbo)
    check(rc == 0 and os.path.exists(os.path.join(cbo, "model", "model.safetensors")),
          f"codebook train --eos-windows --finetune runs ({err.strip()[-200:]})")
    # tokfsm train: the paper's model and its codebooks in one command (tiny step counts here)
    tf = os.path.join(tmp, "tokfsm-model")
    rc, out, err = run("tokfsm", "train", "--data", fsm_dir, "--out", tf, "--steps", "4", "--batch", "4",
                       "--codes", "8", "--codebook-steps", "2", "--threads", "1")
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    cfg = json.load(open(os.path.join(tf, "config.json"))) if rc == 0 else {}
    cbj = json.load(open(os.path.join(tf, "codebooks", "codebooks.json"))) if rc == 0 else {}
    check(rc == 0 and len(lines) == 2 and lines[0]["steps"] == 4 and lines[1]["steps"] == 2 and
          (cfg.get("n_layer"), cfg.get("n_embd"), cfg.get("n_head"), cfg.get("n_inner")) == (4, 128, 4, 512) and
          cbj.get("k") == 1 and cbj.get("num_codes") == 8 and len(cbj.get("sites", [])) == 8,
          f"tokfsm train: the paper's 4x128 GPT-2 and attn+mlp codebooks (k 1) at 4 layers ({err.strip()[-200:]})")
    rc, out, _ = run("tokfsm", "eval", "--model", tf, "--fsm", fsm_dir, "--codebooks", os.path.join(tf, "codebooks"),
                     "--sequences", "4", "--transitions", "4")
    check(rc == 0 and "codes_vs_neurons" in json.loads(out), "tokfsm eval reads what tokfsm train wrote")
    nodata = os.path.join(tmp, "nodata")
    os.makedirs(nodata)
    rc, _, err = run("tokfsm", "train", "--data", nodata, "--out", os.path.join(tmp, "tf2"))
    check(rc == 2 and "fsm.json" in err and not os.path.exists(os.path.join(tmp, "tf2")),
          "tokfsm train without tokfsm make's files: exit 2 naming the file, nothing written")
    digits = os.path.join(tmp, "digits.txt")
    open(digits, "w").write("0123456789" * 20)
    rc, _, err = run("codebook", "train", "--model", model, "--file", digits, "--codes", "8", "--k", "1", "--steps", "2",
                     "--context", "13", "--eos-windows", "--out", os.path.join(tmp, "cbbad"))
    check(rc == 2 and "end-of-text" in err and not os.path.exists(os.path.join(tmp, "cbbad", "codebooks.json")),
          f"codebook train --eos-windows on a text without <|endoftext|>: exit 2 ({err.strip()[-160:]})")


def main():
    tmp = tempfile.mkdtemp(prefix="lmwb-tokfsm-")
    try:
        fsm_dir, fsm = case_make(tmp)
        case_memorised(tmp)
        model = case_eval(tmp, fsm_dir, fsm)
        if model:
            case_bad(tmp, fsm_dir, model)
            case_train(tmp, fsm_dir, model)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failure(s)")
        sys.exit(1)
    print("all passed")


main()
