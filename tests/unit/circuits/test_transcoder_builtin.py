"""The built-in model's shipped transcoders (data/models/tiny-world/transcoders): one SAELens folder
per MLP layer with the shapes the model needs, and, measured again with `lmwb-batch transcoder
eval` on the held-out sample shipped beside them, the figures of CARD.md (eval-sample.json): the
loss recovered no lower than those figures minus a margin, L0 below 64 and FVU no higher than the
figures plus a margin, for every layer and with every layer spliced at once; and the README's
attribution graph of an IOI prompt through them.
Skips (exit 77) with a message while the set is absent.
Usage: test_transcoder_builtin.py LMWB_BATCH MODEL_DIR
"""
import json
import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "reference"))
from cli_checks import check, failures  # noqa: E402

BATCH, MODEL = sys.argv[1], sys.argv[2]
SET = os.path.join(MODEL, "transcoders")
MARGIN_RECOVERED, MARGIN_FVU = 0.05, 0.02


def header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def ioi_graph():
    """The README's IOI graph: the answer, and the feature it names as carrying it, driven by the
    non-repeated name and pushed down by the repeated one."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ioi.json")
        p = subprocess.run([BATCH, "graph", "--model", MODEL, "--transcoders", SET, "--prompt",
                            "When Mary and John went to the store, John gave a drink to", "--out", out],
                           capture_output=True, text=True)
        check(p.returncode == 0, f"IOI graph: exit {p.returncode} {p.stderr.strip()[-300:]}")
        if p.returncode != 0:
            return
        summary = json.loads(p.stdout)
        check(summary["logits"][0]["token"] == [" Mary"] and summary["logits"][0]["prob"] > 0.9,
              f"IOI graph: the answer is \" Mary\" ({summary['logits'][0]})")
        g = json.load(open(out))
    w = {(l["source"], l["target"]): l["weight"] for l in g["links"]}
    logit = [n["node_id"] for n in g["nodes"] if n["is_target_logit"]][0]
    f = "0_3217_13"
    check(w.get((f, logit), 0) > 1 and w.get(("E_2179_1", f), 0) > 5 and w.get(("E_1544_3", f), 0) < 0
          and w.get(("E_1544_9", f), 0) < 0,
          f"IOI graph: {f} promotes \" Mary\" ({w.get((f, logit))}), fed by \" Mary\"@1 ({w.get(('E_2179_1', f))}), "
          f"pushed down by both \" John\"s ({w.get(('E_1544_3', f))}, {w.get(('E_1544_9', f))})")


def main():
    if not os.path.exists(os.path.join(SET, "layer_0", "cfg.json")):
        print(f"no shipped transcoders in {SET}: skipping")
        sys.exit(77)
    cfg = json.load(open(os.path.join(MODEL, "config.json")))
    n_layer, d_model = cfg["n_layer"], cfg["n_embd"]
    for L in range(n_layer):
        d = os.path.join(SET, f"layer_{L}")
        c = json.load(open(os.path.join(d, "cfg.json")))
        check(c["d_in"] == d_model and c["d_out"] == d_model and c["architecture"].endswith("transcoder")
              and c["metadata"]["hook_name"] == f"blocks.{L}.ln2.hook_normalized"
              and c["metadata"]["hook_name_out"] == f"blocks.{L}.hook_mlp_out", f"layer {L}: cfg.json")
        h = header(os.path.join(d, "sae_weights.safetensors"))
        ds = c["d_sae"]
        want = {"W_enc": [d_model, ds], "b_enc": [ds], "W_dec": [ds, d_model], "b_dec": [d_model]}
        check(all(h[k]["shape"] == v for k, v in want.items()), f"layer {L}: tensor shapes {[h[k]['shape'] for k in want]}")
    expected = json.load(open(os.path.join(SET, "eval-sample.json")))
    p = subprocess.run([BATCH, "transcoder", "eval", "--model", MODEL, "--transcoders", SET,
                        "--file", os.path.join(SET, "sample.txt")], capture_output=True, text=True)
    check(p.returncode == 0, f"eval on the sample: exit {p.returncode} {p.stderr.strip()[-300:]}")
    if p.returncode != 0:
        sys.exit(1)
    got = json.loads(p.stdout)
    check(got["tokens"] == expected["tokens"], f"the sample's {got['tokens']} tokens")
    for g, e in zip(got["layers"], expected["layers"]):
        L = g["layer"]
        check(g["ce_recovered"] >= e["ce_recovered"] - MARGIN_RECOVERED,
              f"layer {L}: loss recovered {g['ce_recovered']:.3f} (card {e['ce_recovered']:.3f})")
        check(g["l0"] < 64, f"layer {L}: L0 {g['l0']:.1f} < 64")
        check(g["fvu"] <= e["fvu"] + MARGIN_FVU, f"layer {L}: FVU {g['fvu']:.4f} (card {e['fvu']:.4f})")
    check(got["ce_all_recovered"] >= expected["ce_all_recovered"] - MARGIN_RECOVERED,
          f"all layers spliced: loss recovered {got['ce_all_recovered']:.3f} (card {expected['ce_all_recovered']:.3f})")
    ioi_graph()
    if failures:
        print(f"{len(failures)} failed")
        sys.exit(1)


main()
