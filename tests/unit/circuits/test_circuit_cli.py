#!/usr/bin/python3
"""lmwb-batch circuit eap / eval / prune against float64 PyTorch references (edge_reference.py).

Usage: test_circuit_cli.py LMWB_BATCH FIXTURES_DIR

On the GPT-2, Llama-GQA and NeoX fixtures with a JSONL task of examples of different lengths:
  - `circuit eap` (and `--ig-steps 3` on Llama-GQA): every edge's score against the reference's
    -mean dM/dz (M the logit difference, examples one at a time, so padding is checked too);
  - `circuit eval` of a random circuit (edges.json) against the reference's masked runs: KL,
    logit difference, accuracy and exact match; every edge kept = the full model, none = the
    corrupted run; the scores JSON of `circuit eap --top` read back as a circuit;
  - `circuit eap --top`: the top edges without dangling ones, against a fixed-point reference;
  - `circuit prune`: its outputs agree with each other (scores JSON, edges.json, DOT, SVG);
  - bad input: clean and corrupted of different lengths, an answer of two tokens, an empty task
    file, an unknown edge name, an edge the model lacks, a bad sparsity -> exit 2 naming the line,
    field or entry, and nothing written.
Exit 77 (skip) without numpy/torch.
"""
import json
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from edge_reference import eap_grads, hf_models, layout, masked_run, reader_names, shape_of, writer_names  # noqa: E402

failed = 0


def report(ok, label, detail=""):
    global failed
    print(f"{'PASS' if ok else 'FAIL'} {label}: {detail}", flush=True)
    failed += 0 if ok else 1


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-30)


def make_task(path, rng, n=4):
    letters = "ABCDEFGHIKLNOPQR"  # no merges of the fixtures' tokenizers touch these: one token each
    with open(path, "w") as f:
        for i in range(n):
            L = 4 + i % 3  # different lengths: batches are padded
            clean = "".join(rng.choice(list(letters), L))
            corrupt = "".join(rng.choice(list(letters), L))
            ans, wrong = rng.choice(list("SUVXYZ"), 2, replace=False)
            f.write(json.dumps({"clean": clean, "corrupted": corrupt, "answer": str(ans), "wrong": str(wrong)}) + "\n")
    rows = [json.loads(x) for x in open(path)]
    # the fixtures' tokenizers give one token per letter
    return [([ord(c) for c in r["clean"]], [ord(c) for c in r["corrupted"]], ord(r["answer"]), ord(r["wrong"])) for r in rows]


def edge_names(ref):
    readers, offsets = layout(ref)
    wn, rn = writer_names(ref), reader_names(ref)
    return [(wn[w], rn[v]) for v, r in enumerate(readers) for w in range(r[3])]


def check_eap(lmwb, folder, ref, examples, task, tmp, name):
    for ig in ((0, 3) if name == "llama_gqa" else (0,)):  # EAP-IG's input interpolation: one architecture
        out = os.path.join(tmp, f"eap{ig}.json")
        p = run([lmwb, "circuit", "eap", "--model", folder, "--task", task, "--ig-steps", str(ig), "--batch", "2",
                 "--out", out])
        if p.returncode != 0:
            report(False, f"{name} eap ig={ig}", p.stderr.strip())
            continue
        doc = json.load(open(out))
        got = np.array([e["score"] for e in doc["edges"]])
        names_ok = [(e["source"], e["target"]) for e in doc["edges"]] == edge_names(ref)
        want = np.zeros_like(got)
        for clean, corrupt, a, w in examples:
            metric = lambda lg: lg[0, -1, a] - lg[0, -1, w]  # noqa: E731
            for k in range(1, max(ig, 1) + 1):
                alpha = k / ig if ig else 1.0
                want -= eap_grads(ref, [clean], [corrupt], metric, alpha)
        want /= len(examples) * max(ig, 1)
        e = rel_err(got, want)
        report(names_ok and e <= 2e-3 and np.abs(want).max() > 0, f"{name} eap ig={ig} scores",
               f"max rel err {e:.2e}, names {'ok' if names_ok else 'differ'}")


def reference_metrics(ref, examples, z):
    kl = ld = acc = em = 0.0
    for clean, corrupt, a, w in examples:
        full = ref.run([clean]).detach()[0, -1]
        circ = masked_run(ref, [clean], [corrupt], torch.tensor(z, dtype=torch.float64)).detach()[0, -1]
        lf, lc = torch.log_softmax(full, -1), torch.log_softmax(circ, -1)
        kl += float((lf.exp() * (lf - lc)).sum())
        ld += float(circ[a] - circ[w])
        acc += float(int(circ.argmax()) == a)
        em += float(int(circ.argmax()) == int(full.argmax()))
    n = len(examples)
    return {"kl": kl / n, "logit_diff": ld / n, "accuracy": acc / n, "exact_match": em / n}


def check_eval(lmwb, folder, ref, examples, task, tmp, name, rng):
    names = edge_names(ref)
    E = len(names)
    for label, keep in (("random", rng.uniform(size=E) < 0.4), ("all", np.ones(E, bool)), ("none", np.zeros(E, bool))):
        circuit = os.path.join(tmp, "edges.json")
        json.dump([list(names[i]) for i in range(E) if keep[i]], open(circuit, "w"))
        p = run([lmwb, "circuit", "eval", "--model", folder, "--task", task, "--circuit", circuit, "--batch", "2"])
        if p.returncode != 0:
            report(False, f"{name} eval {label}", p.stderr.strip())
            continue
        got = json.loads(p.stdout)
        want = reference_metrics(ref, examples, keep.astype(np.float64))
        ok = (abs(got["kl"] - want["kl"]) <= 1e-4 + 1e-3 * want["kl"] and
              abs(got["logit_diff"] - want["logit_diff"]) <= 1e-3 * max(1, abs(want["logit_diff"])) and
              got["accuracy"] == want["accuracy"] and got["exact_match"] == want["exact_match"] and
              got["edges"] == int(keep.sum()) and got["total_edges"] == E)
        report(ok, f"{name} eval {label}", f"got {[round(got[k], 5) for k in want]} want {[round(v, 5) for v in want.values()]}")
        if label == "all":
            report(got["kl"] < 1e-6 and abs(got["logit_diff"] - got["full"]["logit_diff"]) < 1e-4 and
                   got["exact_match"] == 1.0, f"{name} eval all = full model", "")
        if label == "none":
            report(abs(got["kl"] - got["corrupted"]["kl"]) < 1e-6 and
                   abs(got["logit_diff"] - got["corrupted"]["logit_diff"]) < 1e-4, f"{name} eval none = corrupted run", "")


def owners(ref, reader):
    """The writers a reader feeds: its head (every head of a key-value group), its MLP, or none."""
    kind, L, h, _ = reader
    nl, H, K, _ = shape_of(ref)
    rep = H // K
    if kind == "logits":
        return []
    if kind == "mlp":
        return [f"m{L}"]
    return [f"a{L}.h{h}"] if kind == "q" else [f"a{L}.h{h * rep + j}" for j in range(rep)]


def top_without_dangling(ref, scores, n):
    """The n edges of largest |score| (ties: lower index), then edges off every input-to-logits path
    removed, by fixed-point iteration over the writers."""
    readers, _ = layout(ref)
    names = edge_names(ref)
    rn = reader_names(ref)
    order = sorted(range(len(scores)), key=lambda i: (-abs(scores[i]), i))[:n]
    kept = set(order)
    reader_of = {rn[v]: readers[v] for v in range(len(readers))}
    while True:
        reached, alive = {"input"}, set()
        for _ in range(len(readers)):
            for i in kept:
                w, v = names[i]
                if w in reached:
                    reached.update(owners(ref, reader_of[v]))
        for _ in range(len(readers)):
            for i in kept:
                w, v = names[i]
                if v == "logits" or any(o in alive for o in owners(ref, reader_of[v])):
                    alive.add(w)
        new = {i for i in kept if names[i][0] in reached and (names[i][1] == "logits" or
                                                              any(o in alive for o in owners(ref, reader_of[names[i][1]])))}
        if new == kept:
            return kept
        kept = new


def check_top_and_prune(lmwb, folder, ref, task, tmp, name):
    scores = os.path.join(tmp, "top.json")
    p = run([lmwb, "circuit", "eap", "--model", folder, "--task", task, "--top", "12", "--out", scores])
    doc = json.load(open(scores)) if p.returncode == 0 else {"edges": []}
    got = {i for i, e in enumerate(doc["edges"]) if e["in_circuit"]}
    want = top_without_dangling(ref, [e["score"] for e in doc["edges"]], 12)
    report(p.returncode == 0 and got == want and doc["in_circuit"] == len(got), f"{name} eap --top 12",
           f"{len(got)} edges, reference {len(want)}")
    n_in = len(got)
    p = run([lmwb, "circuit", "eval", "--model", folder, "--task", task, "--circuit", scores])
    report(p.returncode == 0 and json.loads(p.stdout)["edges"] == n_in, f"{name} eval of a scores JSON", p.stderr.strip())
    out, edges, dot, svg, graph, csv = (os.path.join(tmp, f) for f in ("prune.json", "prune_edges.json", "p.dot", "p.svg",
                                                                        "p_graph.json", "p.csv"))
    p = run([lmwb, "circuit", "prune", "--model", folder, "--task", task, "--target-sparsity", "0.6", "--steps", "30",
             "--out", out, "--edges", edges, "--dot", dot, "--svg", svg, "--graph", graph, "--metrics", csv])
    if p.returncode != 0:
        report(False, f"{name} prune", p.stderr.strip())
        return
    doc, lst = json.load(open(out)), json.load(open(edges))
    kept = [[e["source"], e["target"]] for e in doc["edges"] if e["in_circuit"]]
    gdoc = json.load(open(graph))
    drawn = {(lk["source"], lk["target"]) for lk in gdoc["links"] if lk.get("in_circuit", True)}
    rows = open(csv).read().splitlines()
    report(kept == lst and doc["edges"] and doc["steps"] == 30 and os.path.getsize(dot) > 0 and
           open(svg).read().lstrip().startswith(("<?xml", "<svg")) and drawn == {tuple(x) for x in lst} and
           rows[0] == "step,loss,kl,sparsity,target,lambda1" and len(rows) == 31 and rows[-1].startswith("30,"),
           f"{name} prune outputs agree", f"{len(lst)} edges, {len(rows) - 1} curve rows")


def expect_bad(lmwb, args, needles, tmp, label):
    out = os.path.join(tmp, "never.json")
    if os.path.exists(out):
        os.unlink(out)
    p = run([lmwb] + args + ["--out", out])
    msg = p.stderr.strip()
    ok = p.returncode == 2 and all(n in msg for n in needles) and not os.path.exists(out)
    report(ok, f"bad input: {label}", f"exit {p.returncode}: {msg}")


def check_bad(lmwb, folder, tmp):
    def task(lines, name):
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            f.write("".join(json.dumps(x) + "\n" if isinstance(x, dict) else x for x in lines))
        return path

    good = {"clean": "abc", "corrupted": "abd", "answer": "x", "wrong": "y"}
    lengths = task([good, {"clean": "abc", "corrupted": "abcd", "answer": "x", "wrong": "y"}], "len.jsonl")
    two = task([{"clean": "abc", "corrupted": "abd", "answer": "xy", "wrong": "y"}], "two.jsonl")
    empty = task([], "empty.jsonl")
    ok_task = task([good], "good.jsonl")
    m = ["--model", folder]
    expect_bad(lmwb, ["circuit", "eap"] + m + ["--task", lengths], ["len.jsonl:2", "corrupted"], tmp, "lengths differ")
    expect_bad(lmwb, ["circuit", "eap"] + m + ["--task", two], ["two.jsonl:1", "answer"], tmp, "answer of two tokens")
    expect_bad(lmwb, ["circuit", "prune"] + m + ["--task", empty, "--target-sparsity", "0.5"], ["empty.jsonl", "no examples"],
               tmp, "empty task file")
    for circuit, needles, label in (([["input", "a0.h9<q>"]], ["edges[0]", "a0.h9<q>"], "unknown reader"),
                                    ([["input", "logits"], ["bogus", "logits"]], ["edges[1]", "bogus"], "unknown writer"),
                                    ([["m1", "a0.h0<q>"]], ["edges[0]", "no edge m1 -> a0.h0<q>"], "edge the model lacks"),
                                    ({"edges": [{"source": "input", "target": "logits", "in_circuit": 1}]},
                                     ["edges[0].in_circuit"], "in_circuit not a boolean")):
        path = os.path.join(tmp, "bad_circuit.json")
        json.dump(circuit, open(path, "w"))
        expect_bad(lmwb, ["circuit", "eval"] + m + ["--task", ok_task, "--circuit", path], needles, tmp, label)
    expect_bad(lmwb, ["circuit", "prune"] + m + ["--task", ok_task, "--target-sparsity", "1.5"], ["--target-sparsity"],
               tmp, "sparsity out of range")
    expect_bad(lmwb, ["circuit", "eap"] + m + ["--task", os.path.join(tmp, "missing.jsonl")], ["missing.jsonl"], tmp,
               "missing task file")


def main(argv):
    lmwb, fixtures = argv[1], argv[2]
    rng = np.random.default_rng(5)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("gpt2", "llama_gqa", "neox"):
            folder = os.path.join(fixtures, name)
            ref = hf_models.load_model(folder)
            task = os.path.join(tmp, f"{name}.jsonl")
            examples = make_task(task, rng)
            check_eap(lmwb, folder, ref, examples, task, tmp, name)
            check_eval(lmwb, folder, ref, examples, task, tmp, name, rng)
            check_top_and_prune(lmwb, folder, ref, task, tmp, name)
        check_bad(lmwb, os.path.join(fixtures, "gpt2"), tmp)
    print("failed:", failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
