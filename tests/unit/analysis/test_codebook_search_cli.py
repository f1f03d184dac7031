"""lmwb-batch codebook search and steer against independent computations on the GPT-2 fixture.

The code ids come from `activations --hook blocks.L.*.hook_codes` on the same windows, the marked
tokens from Python's re over each window's token text (the tokens' bytes decoded), and precision,
recall and topic codes are recomputed from the paper's definitions (codebook_search.h); every code
the search reports (all of them, with the thresholds off) must agree, and none may be missing.
codebook steer: its counts equal those of `generate` runs with the same seeds, clamps off and on.
Bad input -> exit 2 naming the option.
Usage: test_codebook_search_cli.py LMWB_BATCH FIXTURES_DIR
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "reference"))
import hf_write  # noqa: E402
from cli_checks import check, failures, run_batch  # noqa: E402

BATCH, FIX = sys.argv[1], sys.argv[2]
GPT2 = os.path.join(FIX, "gpt2")
CTX = 16
TEXT = ("The cat sat on the mat. The dog sat on the log and the cat ran to the dog. "
        "Then the bird sang to the tree, and the tree was tall. A man and the dog went to the sea; "
        "the sea was cold and the man was tired, so the dog sat on the sand by the sea.")


def run(*args):
    return run_batch(BATCH, *args)


def main():
    tmp = tempfile.mkdtemp(prefix="lmwb-cb-search-")
    try:
        text = os.path.join(tmp, "text.txt")
        with open(text, "w") as f:
            f.write(TEXT)
        rng = np.random.default_rng(5)
        cb = os.path.join(tmp, "cb")
        os.makedirs(cb)
        hf_write.write_safetensors(os.path.join(cb, "codebooks.safetensors"), {
            "blocks.0.attn.codebook": rng.standard_normal((4, 8, 16)).astype(np.float32),
            "blocks.1.mlp.codebook": rng.standard_normal((8, 64)).astype(np.float32)})
        with open(os.path.join(cb, "codebooks.json"), "w") as f:
            json.dump({"k": 2, "num_codes": 8, "sites": [{"layer": 0, "site": "attn"}, {"layer": 1, "site": "mlp"}]}, f)
        rc, out, err = run("tokenize", "--model", GPT2, "--text", TEXT)
        tok = json.loads(out)
        nw = len(tok["ids"]) // CTX
        ids = np.array(tok["ids"][:nw * CTX]).reshape(nw, CTX)
        b2u = {v: k for k, v in hf_write.bytes_to_unicode().items()}
        texts = [bytes(b2u[ch] for ch in t).decode("utf-8") for t in tok["tokens"][:nw * CTX]]
        ids_arg = ";".join(",".join(str(x) for x in row) for row in ids)
        codes = {}
        for key, hook in (((0, "attn"), "blocks.0.attn.hook_codes"), ((1, "mlp"), "blocks.1.mlp.hook_codes")):
            o = os.path.join(tmp, "c.npy")
            rc, _, err = run("activations", "--model", GPT2, "--ids", ids_arg, "--hook", hook, "--codebooks", cb, "--out", o)
            check(rc == 0, f"codes of {hook} ({err.strip()[-200:]})")
            c = np.load(o).reshape(nw * CTX, -1, 2)  # [tokens, groups, k]
            codes[key] = c

        pattern = r" (the|dog)"
        marked = []
        for w in range(nw):
            ends = np.cumsum([len(texts[w * CTX + t].encode()) for t in range(CTX)])
            s = "".join(texts[w * CTX:(w + 1) * CTX])
            last = -1
            for m in re.finditer(pattern, s):
                a, e = m.span(1)
                if e <= a:
                    continue
                a = len(s[:a].encode())
                t = int(np.searchsorted(ends, a, side="right"))
                at = w * CTX + min(t, CTX - 1)
                if at != last:
                    marked.append(at)
                last = at
        marked = np.array(marked)
        expect = {}
        topics = set()
        for (layer, site), c in codes.items():
            for g in range(c.shape[1]):
                act = np.zeros(8, int)
                hit = np.zeros(8, int)
                for t in range(c.shape[0]):
                    for code in set(c[t, g]):
                        act[code] += 1
                        if t in set(marked.tolist()):
                            hit[code] += 1
                for code in range(8):
                    if hit[code]:
                        expect[(layer, site, g if site == "attn" else -1, code)] = (hit[code] / act[code],
                                                                                     hit[code] / len(marked))
                for w in range(nw):
                    cnt = np.zeros(8, int)
                    for t in range(w * CTX, (w + 1) * CTX):
                        for code in set(c[t, g]):
                            cnt[code] += 1
                    for code in np.nonzero(2 * cnt > CTX)[0]:
                        topics.add((layer, site, g if site == "attn" else -1, int(code)))

        rc, out, err = run("codebook", "search", "--model", GPT2, "--codebooks", cb, "--file", text, "--regex", pattern,
                           "--context", str(CTX), "--top", "1000", "--min-precision", "-1", "--min-recall", "-1",
                           "--examples", "1", "--topics")
        check(rc == 0, f"search runs ({err.strip()[-200:]})")
        if rc == 0:
            d = json.loads(out)
            check(d["windows"] == nw and d["matched_tokens"] == len(marked),
                  f"windows {d['windows']} == {nw}, marked tokens {d['matched_tokens']} == {len(marked)}")
            got = {(h["layer"], h["site"], h.get("head", -1), h["code"]): (h["precision"], h["recall"]) for h in d["codes"]}
            check(set(got) == set(expect), f"the same codes ({len(got)} vs {len(expect)})")
            bad = [k for k in expect if k in got and not np.allclose(got[k], expect[k], atol=1e-12)]
            check(not bad, f"precision and recall == the definition ({len(bad)} differ)")
            precs = [h["precision"] for h in d["codes"]]
            check(precs == sorted(precs, reverse=True), "sorted by precision")
            check(all(h["contexts"] and "\u00ab" in h["contexts"][0]["text"] for h in d["codes"]), "contexts shown")
            got_t = {(h["layer"], h["site"], h.get("head", -1), h["code"]) for h in d["topic_codes"]}
            check(got_t == topics, f"topic codes == the definition ({len(got_t)} vs {len(topics)})")
        # the paper's defaults keep the top 5 per codebook above precision 0.5
        rc, out, err = run("codebook", "search", "--model", GPT2, "--codebooks", cb, "--file", text, "--regex", pattern,
                           "--context", str(CTX))
        if rc == 0:
            d = json.loads(out)
            check(all(h["precision"] > 0.5 and h["recall"] > 0.01 for h in d["codes"]), "default thresholds applied")

        # steer == generate with the same seeds (sample s of prompt p: seed + p * 1000003 + s)
        prompts, word, S = ["The cat", "A dog"], "a", 3
        plot = os.path.join(tmp, "steer.svg")
        rc, out, err = run("codebook", "steer", "--model", GPT2, "--codebooks", cb, "--clamp-code", "1:mlp=3",
                           "--clamp-code", "0:attn:2=5#1", *[a for p in prompts for a in ("--prompt", p)], "--word", word,
                           "--samples", str(S), "--max-tokens", "6", "--seed", "7", "--plot", plot)
        check(rc == 0 and os.path.getsize(plot) > 0, f"steer runs and draws ({err.strip()[-200:]})")
        if rc == 0:
            d = json.loads(out)
            for p, prompt in enumerate(prompts):
                for on in (False, True):
                    hits = 0
                    for smp in range(S):
                        extra = ["--clamp-code", "1:mlp=3", "--clamp-code", "0:attn:2=5#1"] if on else []
                        rc, o, e = run("generate", "--model", GPT2, "--prompt", prompt, "--max-tokens", "6", "--no-stop",
                                       "--temperature", "1", "--seed", str(7 + p * 1000003 + smp), "--codebooks", cb, *extra)
                        hits += word in json.loads(o)["completion"].casefold()
                    got = d["prompts"][p]["hits_on" if on else "hits_off"]
                    check(got == hits, f"steer {prompt!r} clamp {'on' if on else 'off'}: {got} == generate's {hits}")
            total = sum(x["hits_off"] for x in d["prompts"]) / (S * len(prompts))
            check(abs(d["share_off"] - total) < 1e-12, "share_off is the mean over prompts and samples")

        def bad(args, field, what):
            rc, _, err = run("codebook", "search", "--model", GPT2, "--codebooks", cb, "--file", text, *args)
            check(rc == 2 and field in err, f"bad input: {what} -> exit 2 naming {field!r} (rc {rc}: {err.strip()[-160:]})")
        bad(["--regex", "(the"], "--regex", "an invalid regex")
        bad(["--code", "0:attn:0=8"], "--code", "a code >= C")
        bad(["--code", "1:attn:0=1"], "--code", "a site without a codebook")
        bad(["--regex", "x", "--context", "1000"], "context", "a context past the model's")
        rc, _, err = run("codebook", "steer", "--model", GPT2, "--codebooks", cb, "--clamp-code", "1:mlp=9",
                         "--prompt", "x", "--word", "a")
        check(rc == 2 and "code 9" in err, f"bad input: steer with a code >= C -> exit 2 ({err.strip()[-160:]})")
        rc, _, err = run("codebook", "steer", "--model", GPT2, "--codebooks", cb, "--clamp-code", "1:mlp=1",
                         "--prompt", "x")
        check(rc == 2 and "--word" in err, f"bad input: steer without --word -> exit 2 ({err.strip()[-160:]})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failure(s)")
        sys.exit(1)
    print("all ok")


if __name__ == "__main__":
    main()
