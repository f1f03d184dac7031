#!/usr/bin/python3
"""The IOI table of the README: edge pruning against EAP and EAP-IG on the built-in model.

Usage: edge_ioi_table.py LMWB_BATCH OUTDIR [TARGET_SPARSITY] [STEPS] [LR]

Prunes on 64 generated IOI examples (seed 0), or reuses OUTDIR/ep_edges.json when it is there;
scores EAP and EAP-IG (5 steps) on the same examples and takes, for each, the smallest top-N whose
circuit (dangling edges removed) has at least as many edges as edge pruning's; evaluates all three
on 128 other examples (seed 1). Prints a markdown table and writes OUTDIR/table.json."""
import json
import os
import subprocess
import sys


def run(args):
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(args)}: {p.stderr.strip()}")
    return p.stdout


def main(argv):
    lmwb, out = argv[1], argv[2]
    target = argv[3] if len(argv) > 3 else "0.96"
    steps = argv[4] if len(argv) > 4 else "600"
    lr = argv[5] if len(argv) > 5 else "0.1"
    os.makedirs(out, exist_ok=True)
    train = ["--task", "ioi", "-n", "64", "--seed", "0"]
    held = ["--task", "ioi", "-n", "128", "--seed", "1"]
    ep_edges = os.path.join(out, "ep_edges.json")
    if not os.path.exists(ep_edges):
        run([lmwb, "circuit", "prune"] + train + ["--target-sparsity", target, "--steps", steps, "--lr", lr,
                                                  "--out", os.path.join(out, "ep.json"), "--edges", ep_edges])
    rows = {"edge pruning": json.loads(run([lmwb, "circuit", "eval"] + held + ["--circuit", ep_edges]))}
    n_ep = rows["edge pruning"]["edges"]
    for label, ig in (("EAP", "0"), ("EAP-IG (5 steps)", "5")):
        scores = os.path.join(out, f"eap{ig}.json")
        run([lmwb, "circuit", "eap"] + train + ["--ig-steps", ig, "--out", scores])
        lo, hi = n_ep, 20 * n_ep  # the smallest top-N whose circuit has >= n_ep edges
        best = None
        while lo <= hi:
            mid = (lo + hi) // 2
            path = os.path.join(out, f"eap{ig}_top.json")
            run([lmwb, "circuit", "eap"] + train + ["--ig-steps", ig, "--top", str(mid), "--out", path])
            kept = json.load(open(path))["in_circuit"]
            if kept >= n_ep:
                best, hi = (mid, os.path.join(out, f"eap{ig}_best.json")), mid - 1
                os.replace(path, best[1])
            else:
                lo = mid + 1
        rows[label] = json.loads(run([lmwb, "circuit", "eval"] + held + ["--circuit", best[1]]))
        rows[label]["top"] = best[0]
    json.dump(rows, open(os.path.join(out, "table.json"), "w"), indent=1)
    print("| method | edges | sparsity | logit diff (share of full) | accuracy | KL | exact match |")
    print("|---|---|---|---|---|---|---|")
    for k, r in rows.items():
        print(f"| {k} | {r['edges']} | {1 - r['edges'] / r['total_edges']:.1%} | {r['logit_diff']:.2f} "
              f"({r['logit_diff_share']:.0%}) | {r['accuracy']:.3f} | {r['kl']:.3f} | {r['exact_match']:.3f} |")
    full = rows["edge pruning"]["full"]
    print(f"| full model | {rows['edge pruning']['total_edges']} | 0% | {full['logit_diff']:.2f} | {full['accuracy']:.3f} | 0 | 1 |")


if __name__ == "__main__":
    main(sys.argv)
