#!/usr/bin/python3
"""GUI tests of `lmwb` as a person would use it: run it under Xvfb in its scripted mode, drive
every view through its GActions, take screenshots with `import -window root`, and check what the
screen and the window show. Exit 77 (skip) without xvfb-run/import/PIL.

  test_gui.py main        views, logit-lens heatmap cells, neuron search, clamp, sweep, responsiveness, cancel,
                          the shortcuts window, quitting during a job
  test_gui.py badinput    not-a-model folder, corrupt weights, bad tokenizer: banner, model kept
  test_gui.py circuits    the Circuits view on the built-in model's transcoders: trace a prompt, the drawn graph,
                          click a feature (contexts, output tokens), pin it through re-pruning, export,
                          a bad set and an empty prompt (banners), a short training run with live plots
  test_gui.py editing     a ROME edit of a world fact, a 3-edit sequence with the alarm, undo, save, bad input
  test_gui.py edges       the Edges view on the built-in model's IOI task: a short prune with live plots, EAP at the
                          same edge count, the toggle, clicking an edge, exports, bad input
  test_gui.py kfac        the Editing view's K-FAC page: collect factors, spectra, ρ = 1 and 0.5 against kfac sweep,
                          a secret before and after, save (loads, only MLP matrices changed), bad factor folders
  test_gui.py codes       the Codes view on the built-in model's codebooks: the grid of a prompt's codes, a regex search,
                          a code's contexts, a clamped code regenerating (each against lmwb-batch), bad set and regex
  test_gui.py cli         --help, no display -> exit 2 with a hint
Screenshots go to $LMWB_GUI_SHOTS (default: a temp folder)."""
import os, re, shutil, subprocess, sys, tempfile

SRC = os.environ.get("LMWB_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("LMWB_BUILD_ROOT", os.path.join(SRC, "build"))
LMWB = os.path.join(BUILD, "ui", "desktop", "lmwb")
FIXTURE = os.path.join(SRC, "tests", "fixtures", "models", "gpt2")
BUILTIN = os.path.join(SRC, "data", "models", "tiny-world")


def skip(msg):
    print("SKIP:", msg)
    sys.exit(77)


def model_dir():
    env = os.environ.get("LMWB_GUI_TEST_MODEL")
    if env:
        return env
    if os.path.exists(os.path.join(BUILTIN, "config.json")) and os.path.exists(os.path.join(BUILTIN, "tokenizer.json")):
        return BUILTIN
    return FIXTURE


def run_script(lines, model, timeout=240, extra_env=None):
    with tempfile.NamedTemporaryFile("w", suffix=".lmwb", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        path = f.name
    env = dict(os.environ, LMWB_CONFIG_DIR=tempfile.mkdtemp(prefix="lmwb-cfg-"), GDK_BACKEND="x11",
               GTK_A11Y="none", NO_AT_BRIDGE="1", **(extra_env or {}))
    env.pop("WAYLAND_DISPLAY", None)
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1400x900x24", LMWB, "--model", model, "--script", path]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    os.unlink(path)
    if p.returncode != 0:
        print(p.stdout[-4000:], p.stderr[-4000:])
    assert p.returncode == 0, f"lmwb exited with {p.returncode}"
    assert "script: line" not in p.stdout, p.stdout
    return p.stdout


def dumps(out):
    """Every `dump` block as a dict of its key=value lines plus the raw lines."""
    blocks = []
    for m in re.finditer(r"--- dump\n(.*?)--- end\n", out, re.S):
        d = {"lines": m.group(1).splitlines()}
        for line in d["lines"]:
            if "=" in line and not line.startswith(("token ", "lens ")):
                k, _, v = line.partition("=")
                d.setdefault(k, v)
        blocks.append(d)
    return blocks


def neuron_field(d, key):
    for line in d["lines"]:
        if line.startswith("neuron " + key):
            return line[len("neuron " + key):]
    return None


def shots_dir():
    d = os.environ.get("LMWB_GUI_SHOTS") or tempfile.mkdtemp(prefix="lmwb-shots-")
    os.makedirs(d, exist_ok=True)
    return d


# ---- screen analysis ----------------------------------------------------------------------

def is_viridis(px):
    """A colour-map colour: clearly chromatic (not the grey UI) and not the theme's bright accent
    blue (viridis never has blue above ~160)."""
    r, g, b = px[:3]
    return max(r, g, b) - min(r, g, b) >= 35 and b <= 175


def luminance(px):
    r, g, b = px[:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def widest_run(flags):
    best, start = (0, 0), None
    for i, f in enumerate(list(flags) + [False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


def check_heatmap(png, rows, cols, probs):
    """Find the heatmap on the screen and check its rows x cols cells: each one is coloured from
    the colour map and brighter cells have the higher probability (viridis is monotonic)."""
    from PIL import Image
    im = Image.open(png).convert("RGB")
    W, H = im.size
    px = im.load()
    y0 = 120  # below the header bar and the prompt
    colcount = [sum(1 for y in range(y0, H, 2) if is_viridis(px[x, y])) for x in range(W)]
    peak = max(colcount)
    assert peak > 40, f"{png}: no heatmap colours on the screen (blank view?)"
    x_lo, x_hi = widest_run([c > 0.5 * peak for c in colcount])
    rowcount = [sum(1 for x in range(x_lo, x_hi, 2) if is_viridis(px[x, y])) for y in range(H)]
    y_lo, y_hi = widest_run([c > 0.5 * max(rowcount) for c in rowcount])
    assert x_hi - x_lo > 300 and y_hi - y_lo > 40 * rows * 0.5, f"heatmap too small: {(x_lo, y_lo, x_hi, y_hi)}"
    cw, ch = (x_hi - x_lo) / cols, (y_hi - y_lo) / rows
    samples = {}
    for r in range(rows):
        for c in range(cols):
            # A corner of the cell, away from its centred text.
            x, y = int(x_lo + (c + 0.12) * cw), int(y_lo + (r + 0.15) * ch)
            p = px[x, y]
            assert is_viridis(p), f"cell {r},{c} at {x},{y} is not coloured: {p}"
            samples[(r, c)] = luminance(p)
    distinct = len({px[int(x_lo + (c + 0.12) * cw), int(y_lo + (r + 0.15) * ch)] for r in range(rows) for c in range(cols)})
    n_distinct_probs = len({round(p, 2) for p in probs.values()})
    assert distinct >= min(n_distinct_probs, 4), f"only {distinct} distinct cell colours for {n_distinct_probs} probabilities"
    checked = 0
    keys = list(samples)
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            a, b = keys[i], keys[j]
            if abs(probs[a] - probs[b]) > 0.15:
                checked += 1
                assert (samples[a] > samples[b]) == (probs[a] > probs[b]), \
                    f"cells {a} (p={probs[a]:.2f}) and {b} (p={probs[b]:.2f}) are coloured in the wrong order"
    return distinct, checked


def lens_from_dump(d):
    rows = []
    for line in d["lines"]:
        m = re.match(r"lens (\S+):(.*)", line)
        if m:
            cells = re.findall(r"\[(.*?) ([0-9.]+)\]", m.group(2))
            rows.append((m.group(1), [float(p) for _, p in cells]))
    return rows


# ---- tests --------------------------------------------------------------------------------

def test_main():
    model = model_dir()
    shots = shots_dir()
    # Every wait is for the window's own "ready" (no job, nothing queued, every plot on the screen
    # drawn, a painted frame): no fixed delays, except the measured one below.
    out = run_script([
        "wait-ready", "dump", f"shot {shots}/model.png",
        "action win.view 'lens'", "wait-ready", "dump", f"shot {shots}/lens.png",
        "action neurons.search ' the'", "wait-ready", "dump",
        "action neurons.select '1:5'", "wait-ready", "dump",
        "action neurons.clamp 8.0", "wait-ready", "dump",
        "action neurons.clamp -8.0", "wait-ready", "dump",
        "action neurons.sweep", "wait-ready", "dump", f"shot {shots}/neurons.png",
        # Responsiveness: a long sweep runs on a worker while a 20 ms timer must keep firing.
        "action neurons.sweep-steps 3000", "action neurons.sweep", "ticks-start", "wait 2500", "dump", "ticks-stop",
        f"shot {shots}/busy.png", "action win.cancel", "wait-ready 60", "dump",
        "action win.show-help-overlay", "wait-ready", f"shot {shots}/shortcuts.png",
        # Quitting while a job runs stops it cleanly (run_script checks the exit status).
        "action neurons.sweep", "quit",
    ], model)
    d = dumps(out)
    assert len(d) == 9, f"expected 9 dumps, got {len(d)}"
    # The views and their Alt+N keys come from the registry, in its order.
    assert d[0]["views"] == "model:<Alt>1 lens:<Alt>2 neurons:<Alt>3 circuits:<Alt>4 editing:<Alt>5 edges:<Alt>6 codes:<Alt>7", d[0]["views"]
    assert [x["view"] for x in d] == ["model", "lens"] + ["neurons"] * 7, [x["view"] for x in d]
    base = os.path.basename(os.path.normpath(model))
    assert base in d[0]["title"] and "LM Workbench" in d[0]["title"], d[0]["title"]
    assert d[0]["banner"] == "", d[0]["banner"]
    ntok = sum(1 for l in d[0]["lines"] if l.startswith("token "))
    assert ntok > 3, "the model view shows no token strip"
    # Logit lens: rows = layers + embeddings, one column per token; the last row is the model's output.
    m = re.search(r"lens rows=(\d+) cols=(\d+)", "\n".join(d[1]["lines"]))
    rows, cols = int(m.group(1)), int(m.group(2))
    assert cols == ntok and rows >= 2
    lens = lens_from_dump(d[1])
    assert len(lens) == rows and all(len(r[1]) == cols for r in lens)
    probs = {(r, c): lens[r][1][c] for r in range(rows) for c in range(cols)}
    distinct, checked = check_heatmap(f"{shots}/lens.png", rows, cols, probs)
    print(f"heatmap: {rows}x{cols} cells found, {distinct} distinct colours, {checked} ordered pairs checked")
    # Neuron search lists neurons; selecting one gives a baseline continuation.
    hits = int(neuron_field(d[2], "hits="))
    assert hits > 0, "search found no neurons"
    assert neuron_field(d[3], "selected=").startswith("1:5")
    baseline = neuron_field(d[3], "baseline=")
    assert baseline, "no baseline continuation"
    c_plus, c_minus = neuron_field(d[4], "clamped "), neuron_field(d[5], "clamped ")
    assert c_plus.startswith("value=8 ") and c_minus.startswith("value=-8 "), (c_plus, c_minus)
    t_plus, t_minus = c_plus.split("text=", 1)[1], c_minus.split("text=", 1)[1]
    assert t_plus != baseline or t_minus != baseline, "clamping the neuron at ±8 never changed the continuation"
    assert int(neuron_field(d[6], "sweep_points=")) == 41
    # Responsiveness and cancel.
    assert d[7]["jobs"] != "0", "the long sweep was not running while ticks were counted"
    m = re.search(r"ticks hz=([0-9.]+) max_gap_ms=([0-9.]+)", out)
    hz, gap = float(m.group(1)), float(m.group(2))
    print(f"main loop during the sweep: {hz:.1f} Hz, longest gap {gap:.0f} ms")
    assert hz >= 5.0, f"main loop answered at {hz} Hz while a job ran"
    assert gap < 1000, f"main loop stalled for {gap} ms"
    pts = int(neuron_field(d[8], "sweep_points="))
    assert d[8]["jobs"] == "0" and pts < 3000, f"cancel did not stop the sweep ({pts} points)"
    assert d[8]["banner"] == "", "cancel must not show an error"


def test_badinput():
    model = model_dir()
    tmp = tempfile.mkdtemp(prefix="lmwb-bad-")
    empty = os.path.join(tmp, "not-a-model")
    os.makedirs(empty)
    with open(os.path.join(empty, "notes.txt"), "w") as f:
        f.write("hello\n")
    corrupt = os.path.join(tmp, "corrupt-weights")
    shutil.copytree(FIXTURE, corrupt)
    with open(os.path.join(corrupt, "model.safetensors"), "r+b") as f:
        f.truncate(1000)
    badtok = os.path.join(tmp, "bad-tokenizer")
    shutil.copytree(FIXTURE, badtok)
    with open(os.path.join(badtok, "tokenizer.json"), "w") as f:
        f.write('{"model": {"type": "WordPiece", "vocab": {}}}')
    shots = shots_dir()
    out = run_script([
        "wait-ready", "dump",
        f"action win.open-model '{empty}'", "wait-ready 60", "dump",
        f"action win.open-model '{corrupt}'", "wait-ready 60", "dump", f"shot {shots}/error.png",
        f"action win.open-model '{badtok}'", "wait-ready 60", "dump",
        "action win.run", "wait-ready 60", "dump",
        "quit",
    ], model)
    d = dumps(out)
    assert len(d) == 5
    for i, folder in ((1, empty), (2, corrupt), (3, badtok)):
        assert folder in d[i]["banner"], f"banner does not name {folder}: {d[i]['banner']}"
        assert "previous model stays loaded" in d[i]["banner"]
        assert d[i]["model"] == d[0]["model"], "a failed open replaced the model"
    assert "safetensors" in d[2]["banner"], d[2]["banner"]
    assert "tokenizer" in d[3]["banner"], d[3]["banner"]
    # The window still works on the kept model.
    assert sum(1 for l in d[4]["lines"] if l.startswith("token ")) > 3
    shutil.rmtree(tmp)


def circuits_lines(d):
    return [l[len("circuits "):] for l in d["lines"] if l.startswith("circuits ")]


def circuits_field(d, key):
    for l in circuits_lines(d):
        if l.startswith(key):
            return l[len(key):]
    return None


def circuits_nodes(d):
    """(id, kind, pinned, x, y, text) of every node line of a dump."""
    out = []
    for l in circuits_lines(d):
        m = re.match(r"node (\S+) (\S+) pinned=(\d) at=(-?\d+),(-?\d+) text=(.*)", l)
        if m:
            out.append((m.group(1), m.group(2), m.group(3) == "1", int(m.group(4)), int(m.group(5)), m.group(6)))
    return out


def graph_counts(d):
    m = re.search(r"graph nodes=(\d+) edges=(\d+) features=(\d+) active=(\d+) pinned=(\d+)", "\n".join(d["lines"]))
    assert m, "no graph in the dump"
    return [int(x) for x in m.groups()]


def count_colour(png, box, pred):
    from PIL import Image
    im = Image.open(png).convert("RGB")
    px = im.load()
    x0, y0, x1, y1 = box
    return sum(1 for x in range(x0, x1, 2) for y in range(y0, y1, 2) if pred(px[x, y]))


def test_circuits():
    """The Circuits view on the built-in model (it ships transcoders for every layer)."""
    model = os.path.abspath(BUILTIN)
    tcs = os.path.join(model, "transcoders")
    if not os.path.exists(os.path.join(tcs, "layer_0", "cfg.json")):
        skip("the built-in model's transcoders are not there")
    shots = shots_dir()
    tmp = tempfile.mkdtemp(prefix="lmwb-circuits-")
    prompt = "When Mary and John went to the store, John gave a drink to"
    # First run: trace and read where the nodes are drawn.
    out = run_script([
        "wait-ready", "action win.view 'circuits'", f"action circuits.set-prompt '{prompt}'",
        "action circuits.trace", "wait-ready", "dump", f"shot {shots}/circuits.png", "quit"], model)
    d = dumps(out)[0]
    assert d["view"] == "circuits" and d["banner"] == "", d["banner"]
    assert circuits_field(d, "set=").startswith(tcs) and circuits_field(d, "set=").endswith("loaded=1")
    n_nodes, n_edges, n_feat, n_active, _ = graph_counts(d)
    nodes = circuits_nodes(d)
    assert len(nodes) == n_nodes and n_feat > 0 and n_edges > 0 and n_active >= n_feat
    kinds = {k for _, k, *_ in nodes}
    assert {"feature", "token", "logit"} <= kinds, kinds
    # Rows bottom to top: tokens below every feature, logits above; every node inside the window.
    ys = {k: [y for _, kk, _, _, y, _ in nodes if kk == k] for k in kinds}
    assert min(ys["token"]) > max(ys["feature"]) > min(ys["feature"]) > max(ys["logit"]) >= 0, ys
    layer_y = {}
    for nid, k, _, _, y, _ in nodes:
        if k == "feature":
            layer_y.setdefault(int(nid.split("_")[0]), set()).add(y)
    ls = sorted(layer_y)
    assert all(len(layer_y[l]) == 1 for l in ls), "a layer's features are not on one row"
    assert all(min(layer_y[a]) > min(layer_y[b]) for a, b in zip(ls, ls[1:])), "layers are not drawn bottom to top"
    # Positions left to right within the token row.
    toks = sorted((int(nid.split("_")[2]), x) for nid, k, _, x, _, _ in nodes if k == "token")
    assert [x for _, x in toks] == sorted(x for _, x in toks), "tokens are not left to right by position"
    # The screen shows it: positive (blue) edges and node fills in the canvas.
    blue = count_colour(f"{shots}/circuits.png", (60, 220, 840, 780), lambda p: p[2] > 150 and p[0] < 120)
    fills = count_colour(f"{shots}/circuits.png", (60, 220, 840, 780), lambda p: p == (254, 232, 200))
    assert blue > 50 and fills > 20, f"the graph is not on the screen (blue {blue}, feature fills {fills})"
    # The strongest-looking feature: the one nearest the answer row's centre.
    feats = [n for n in nodes if n[1] == "feature"]
    fid, _, _, fx, fy, _ = feats[len(feats) // 2]
    bad = os.path.join(tmp, "bad-set")
    shutil.copytree(tcs, bad, ignore=shutil.ignore_patterns("*.csv", "*.txt"))
    with open(os.path.join(bad, "layer_2", "sae_weights.safetensors"), "r+b") as f:
        f.truncate(5000)
    sample = os.path.join(tcs, "sample.txt")
    exports = [os.path.join(tmp, "graph." + e) for e in ("json", "dot", "svg", "png")]
    out = run_script([
        "wait-ready", "action win.view 'circuits'", f"action circuits.set-prompt '{prompt}'",
        f"action circuits.set-text '{sample}'", "action circuits.trace", "wait-ready",
        f"action circuits.click '{fx},{fy}'", "wait-ready", "dump", f"shot {shots}/circuits-feature.png",
        "action circuits.pin-selected", "action circuits.node-threshold 0.3", "action circuits.edge-threshold 0.5",
        "wait-ready", "dump", f"shot {shots}/circuits-pinned.png",
        *[f"action circuits.export '{p}'" for p in exports], "dump",
        "action circuits.node-threshold 0.8", "action circuits.edge-threshold 0.98", "wait-ready", "dump",
        f"action circuits.set-train 'layer=1 features=512 k=8 tokens=8192 out={tmp}/trained'",
        "action circuits.train", "wait-ready", "dump", f"shot {shots}/circuits-train.png",
        f"action circuits.set-transcoders '{bad}'", "action circuits.trace", "wait-ready", "dump",
        f"shot {shots}/circuits-badset.png",
        f"action circuits.set-transcoders '{tcs}'", "action circuits.set-prompt '  '", "action circuits.trace",
        "wait-ready", "dump",
        # quitting while a trace runs stops it cleanly (run_script checks the exit status)
        f"action circuits.set-prompt '{prompt}'", "action circuits.trace", "quit"], model, timeout=280)
    d = dumps(out)
    assert len(d) == 7, f"expected 7 dumps, got {len(d)}"
    # The click selected that feature: its output tokens and its top contexts on the text.
    assert circuits_field(d[0], "selected=") == fid, (circuits_field(d[0], "selected="), fid)
    assert circuits_field(d[0], "tokens="), "no decoded output tokens"
    m = re.search(r"contexts=(\d+) tokens_read=(\d+)", "\n".join(d[0]["lines"]))
    assert m and int(m.group(1)) > 0 and int(m.group(2)) > 1000, m and m.groups()
    acts = [float(x) for x in re.findall(r"context \d+ act=([0-9.]+)", "\n".join(d[0]["lines"]))]
    assert acts == sorted(acts, reverse=True) and acts[0] > 0
    # Pinned through re-pruning: the lower thresholds keep fewer nodes, the pin stays.
    n1 = graph_counts(d[1])
    assert n1[0] < n_nodes and n1[4] == 1, (n1, n_nodes)
    assert any(nid == fid and pinned for nid, _, pinned, *_ in circuits_nodes(d[1])), "the pinned feature was pruned away"
    assert circuits_field(d[1], "selected=") == fid
    # Exports, with the pin in the graph JSON.
    for p in exports:
        assert os.path.getsize(p) > 100, p
    import json
    with open(exports[0]) as f:
        g = json.load(f)
    assert fid in g["qParams"]["pinnedIds"], g["qParams"]["pinnedIds"]
    assert len(g["nodes"]) == n1[0]
    assert open(exports[2]).read().lstrip().startswith(("<?xml", "<svg"))
    assert open(exports[3], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert circuits_field(d[2], "exported=") == exports[-1]
    # Back to the default thresholds: as many nodes as at first, plus the pin if it was not kept.
    assert graph_counts(d[3])[0] in (n_nodes, n_nodes + 1)
    # Training: the live plot got a point per step, the transcoder was saved.
    pts = int(circuits_field(d[4], "train_points="))
    assert pts >= 4, f"{pts} training points"
    assert "Saved to" in circuits_field(d[4], "train_status="), circuits_field(d[4], "train_status=")
    assert os.path.exists(os.path.join(tmp, "trained", "layer_1", "sae_weights.safetensors"))
    # Bad input: banners naming the file, the graph kept; an empty prompt.
    assert "layer_2" in d[5]["banner"] and "safetensors" in d[5]["banner"], d[5]["banner"]
    assert graph_counts(d[5])[0] > 0, "a failed trace dropped the graph"
    assert "prompt is empty" in d[6]["banner"], d[6]["banner"]
    shutil.rmtree(tmp)


def editing_lines(d, prefix):
    return [l[len("editing "):] for l in d["lines"] if l.startswith("editing " + prefix)]


def editing_fields(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def safetensors_changed(a, b):
    """Names of the tensors whose bytes differ between two safetensors files of the same layout."""
    import json, struct
    def read(path):
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            head = json.loads(f.read(n))
            data = f.read()
        return {k: (v["dtype"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in head.items() if k != "__metadata__"}
    ta, tb = read(a), read(b)
    assert ta.keys() == tb.keys()
    return sorted(k for k in ta if ta[k] != tb[k])


def test_editing():
    model = model_dir()
    if not os.path.exists(os.path.join(model, "world.json")):
        skip("the Editing test needs the built-in model and its world.json")
    shots = shots_dir()
    tmp = tempfile.mkdtemp(prefix="lmwb-edit-")
    saved = os.path.join(tmp, "edited")
    weights = os.path.join(model, "model.safetensors")
    stamp = (os.path.getsize(weights), os.path.getmtime(weights))
    # A covariance of a text of one repeated word: singular.
    singular = os.path.join(tmp, "C1.safetensors")
    with open(os.path.join(tmp, "the.txt"), "w") as f:
        f.write(" ".join(["the"] * 300) + "\n")
    subprocess.run([os.path.join(BUILD, "ui", "batch", "lmwb-batch"), "edit", "stats", "--model", model, "--layer", "1",
                    "--file", os.path.join(tmp, "the.txt"), "--out", singular], check=True, capture_output=True, timeout=60)
    fact = '{"prompt": "{} works as a", "subject": "Shokus", "target_new": " butcher", "target_true": " lawyer"}'
    # Few Adam steps and context templates keep the edits fast; C = I (no covariance file).
    out = run_script([
        "wait-ready", "action win.view 'editing'", "wait-ready", "dump",
        # Bad input: a banner, no new version.
        "action editing.prompt 'works as a'", "action editing.edit", "wait-ready", "dump",
        f"action editing.request '{fact}'", "action editing.layers '9'", "action editing.edit", "wait-ready", "dump",
        "action editing.layers '1'", f"action editing.stats '{singular}'", "action editing.edit", "wait-ready", "dump",
        "action editing.stats ''", "action editing.adam-steps 10", "action editing.templates 2",
        "action editing.edit", "wait-ready", "dump", f"shot {shots}/editing.png",
        # A sequence of 3 generated requests; an alarm factor just above 1 so that the alarm fires.
        "action editing.count 3", "action editing.alarm 1.001", "action editing.run-sequence", "wait-ready", "dump",
        f"shot {shots}/editing-sequence.png",
        "action editing.undo 1", f"action editing.save '{saved}'", "wait-ready", "dump",
        "action editing.undo 4", f"action editing.save '{saved}4'", "wait-ready",
        f"action editing.save '{model}'", "wait-ready", "dump",
        # MEMIT over two layers of a picked world fact (λ small as C = I).
        "action editing.pick 3", "action editing.method 'memit'", "action editing.layers '0-1'", "action editing.lambda 1.0",
        "action editing.edit", "wait-ready", "dump",
        "quit",
    ], model, timeout=280)
    d = dumps(out)
    assert len(d) == 9, f"expected 9 dumps, got {len(d)}"
    assert "editing:" in d[0]["views"] and d[0]["view"] == "editing"
    head = editing_fields(editing_lines(d[0], "world_requests")[0])
    assert int(head["world_requests"]) > 10 and head["versions"] == "1", head
    # A prompt without {} and a layer out of range: banners, the model as it was.
    assert "{}" in d[1]["banner"], d[1]["banner"]
    assert "layers" in d[2]["banner"] and "9" in d[2]["banner"], d[2]["banner"]
    assert "positive definite" in d[3]["banner"], d[3]["banner"]
    print("banners:", *(d[i]["banner"] for i in (1, 2, 3)), sep="\n  ")
    for i in (1, 2, 3):
        assert editing_fields(editing_lines(d[i], "world_requests")[0])["versions"] == "1"
    # The ROME edit: the new target overtakes the true one; the neighbours are listed.
    before = editing_fields(editing_lines(d[4], "before ")[0])
    after = editing_fields(editing_lines(d[4], "after ")[0])
    print("edit before", before, "after", after)
    assert float(before["p_new"]) < float(before["p_true"]) and before["efficacy"] == "0"
    assert float(after["p_new"]) > float(after["p_true"]) and after["efficacy"] == "1"
    assert float(after["p_new"]) > 0.5 and float(after["specificity"]) >= 0.6
    assert len(editing_lines(d[4], "neighbour ")) == 5
    head = editing_fields(editing_lines(d[4], "world_requests")[0])
    assert head["versions"] == "2" and head["current"] == "1", head
    # The sequence: versions 2-4 after the edit, one perplexity point per step, the alarm marked.
    head = editing_fields(editing_lines(d[5], "world_requests")[0])
    assert head["versions"] == "5" and head["current"] == "4", head
    seq = editing_fields(editing_lines(d[5], "sequence ")[0])
    assert seq["points"] == "4", seq
    steps = [editing_fields(l) for l in editing_lines(d[5], "version ")[2:]]
    assert len(steps) == 3 and all(s["efficacy"] in ("0", "1") for s in steps), steps
    threshold = float(seq["threshold"])
    for s in steps:
        assert (s["alarm"] == "1") == (not float(s["ppl"]) <= threshold), (s, threshold)
    assert int(seq["alarms"]) == sum(s["alarm"] == "1" for s in steps) >= 1, (seq, steps)
    assert d[5]["banner"] == d[3]["banner"], "the sequence showed an error"
    # Undo to the single edit and save it; saving over the loaded model is refused.
    assert editing_fields(editing_lines(d[6], "world_requests")[0])["current"] == "1"
    assert editing_lines(d[6], "saved=")[0] == "saved=" + saved
    assert os.path.exists(os.path.join(saved, "config.json")) and os.path.exists(os.path.join(saved, "model.safetensors"))
    # Version 1 changes one matrix of the loaded model; version 4 (three more ROME edits at layer 1) the same one.
    w1, w4 = os.path.join(saved, "model.safetensors"), os.path.join(saved + "4", "model.safetensors")
    changed = safetensors_changed(weights, w1)
    assert len(changed) == 1 and ".1." in changed[0], changed
    assert safetensors_changed(w1, w4) == changed
    assert d[7]["banner"] != d[6]["banner"] and model in d[7]["banner"], d[7]["banner"]
    print("save over the model:", d[7]["banner"])
    assert editing_lines(d[7], "saved=")[0] == "saved=" + saved + "4"
    assert (os.path.getsize(weights), os.path.getmtime(weights)) == stamp, "the loaded model's weights were written"
    memit = editing_lines(d[8], "version ")[-1]
    before = editing_fields(editing_lines(d[8], "before ")[0])
    after = editing_fields(editing_lines(d[8], "after ")[0])
    print("memit", memit, "before", before["p_new"], "after", after["p_new"])
    assert "MEMIT L0" in memit and memit.startswith("version 5 "), memit
    assert float(after["p_new"]) > 10 * float(before["p_new"]), (before, after)
    assert d[8]["banner"] == d[7]["banner"], "MEMIT showed an error"
    shutil.rmtree(tmp)


def edges_field(d, key):
    for line in d["lines"]:
        if line.startswith("edges " + key):
            return line[len("edges " + key):]
    return None


def edges_circuit(d, name):
    """The dumped fields of the prune or eap circuit (None when there is none)."""
    line = edges_field(d, name + " ")
    if line is None or line == "none":
        return None
    return dict(kv.split("=", 1) for kv in line.split())


def test_edges():
    """The Edges view: edge pruning and EAP on the built-in model's IOI task."""
    model = os.path.abspath(BUILTIN)
    if not os.path.exists(os.path.join(model, "world.json")):
        skip("the built-in model is not there")
    shots = shots_dir()
    tmp = tempfile.mkdtemp(prefix="lmwb-edges-")
    exports = [os.path.join(tmp, n) for n in ("circuit.json", "circuit.dot", "circuit.svg", "edges.json")]
    bad = os.path.join(tmp, "bad.jsonl")
    with open(bad, "w") as f:
        f.write('{"clean": "When Mary and John went", "corrupted": "When", "answer": " Mary", "wrong": " John"}\n')
    steps = 60
    out = run_script([
        "wait-ready", "action win.view 'edges'", "dump", f"shot {shots}/edges-empty.png",
        "action edges.set-task 'ioi'", "action edges.set-sparsity 0.95", f"action edges.set-steps {steps}",
        "action edges.set-lr 0.8", "action edges.set-batch 16", "action edges.set-examples 32",
        "action edges.prune", "wait-ready 200", "dump", f"shot {shots}/edges-prune.png",
        "action edges.eap", "wait-ready 200", "dump", f"shot {shots}/edges-eap.png",
        "action edges.show 'prune'", "wait-ready", "dump",
        *[f"action edges.export '{p}'" for p in exports], "dump",
        f"action edges.set-task '{bad}'", "action edges.prune", "wait-ready 60", "dump",
        f"shot {shots}/edges-bad.png",
    ], model, timeout=400)
    d = dumps(out)
    assert len(d) == 6, f"expected 6 dumps, got {len(d)}"
    assert d[0]["view"] == "edges" and d[0]["banner"] == "", d[0]["banner"]
    assert edges_circuit(d[0], "prune") is None and edges_circuit(d[0], "eap") is None
    # The prune: a live plot point per step, a circuit at about the target sparsity, evaluated.
    assert d[1]["banner"] == "", d[1]["banner"]
    pts = int(edges_field(d[1], "points=").split()[0])
    assert pts >= steps // 2, f"{pts} loss points for {steps} steps"
    p = edges_circuit(d[1], "prune")
    assert p and p["task"] == "ioi", p
    n, total = int(p["edges"]), int(p["total"])
    assert 0 < n < total and int(p["nodes"]) > 1, p
    assert 1 - n / total > 0.5, f"sparsity {1 - n / total}"
    for k in ("kl", "accuracy", "share", "full_diff"):
        assert float(p[k]) == float(p[k]), (k, p[k])  # finite
    assert float(p["kl"]) >= 0 and 0 <= float(p["accuracy"]) <= 1
    assert edges_field(d[1], "points=").endswith("shown=prune")
    # EAP at the same edge count (dangling edges removed: at most as many), shown after it ran.
    e = edges_circuit(d[2], "eap")
    assert e and edges_field(d[2], "points=").endswith("shown=eap"), e
    assert 0 < int(e["edges"]) <= n and e["total"] == p["total"], (e, p)
    assert float(e["full_diff"]) == float(p["full_diff"]), (e, p)
    # Back to the pruned circuit; click the first listed edge: its score is shown.
    assert edges_field(d[3], "points=").endswith("shown=prune")
    listed = [l for l in d[3]["lines"] if l.startswith("edges edge ")]
    assert listed, "no edge listed for clicking"
    name, at = listed[0][len("edges edge "):].split(" at=")
    out = run_script([
        "wait-ready", "action win.view 'edges'", f"action edges.set-steps {steps}", "action edges.set-lr 0.8",
        "action edges.set-batch 16",
        "action edges.set-examples 32", "action edges.prune", "wait-ready 200", "action edges.eap", "wait-ready 200",
        "action edges.show 'prune'", "wait-ready", f"action edges.click '{at}'",
        "wait-ready", "dump", f"shot {shots}/edges-click.png"], model, timeout=400)
    c = dumps(out)[0]
    src, dst = name.split("->")
    sel = edges_field(c, "selected=")
    assert src in sel and dst in sel and "mask log" in sel and "EAP score" in sel, (sel, name)
    # Exports through the circuit writers.
    for q in exports:
        assert os.path.getsize(q) > 20, q
    import json
    with open(exports[3]) as f:
        el = json.load(f)
    assert len(el) == n and all(len(x) == 2 for x in el), len(el)
    with open(exports[0]) as f:
        g = json.load(f)
    assert len(g["nodes"]) == int(p["nodes"]), (len(g["nodes"]), p["nodes"])
    assert open(exports[2]).read().lstrip().startswith(("<?xml", "<svg"))
    assert edges_field(d[4], "exported=") == exports[-1]
    # Bad input: clean and corrupted of different lengths -> a banner, the circuits kept.
    assert "bad.jsonl" in d[5]["banner"] or "length" in d[5]["banner"], d[5]["banner"]
    assert edges_circuit(d[5], "prune") is not None
    shutil.rmtree(tmp)


def kfac_lines(d, prefix):
    return [l[len("kfac "):] for l in d["lines"] if l.startswith("kfac " + prefix)]


def kfac_fields(d, prefix):
    lines = kfac_lines(d, prefix)
    return editing_fields(lines[0]) if lines else None


def kfac_setup(prefix):
    """lmwb-batch, the screenshot folder, a temp folder, and the one-thread environment of the K-FAC
    tests (OpenMP's short regions crawl when other processes hold the cores: one thread, GUI and CLI
    alike) as extra_env for lmwb and as the CLI's whole environment."""
    env1 = {"OMP_NUM_THREADS": "1"}
    return (os.path.join(BUILD, "ui", "batch", "lmwb-batch"), shots_dir(), tempfile.mkdtemp(prefix=prefix), env1,
            dict(os.environ, **env1))


def kfac_same_as_cli(gui, cli):
    """The page's figures (describe, %.10g) equal lmwb-batch's JSON ones."""
    for k, c in (("strict", "strict"), ("loose", "loose"), ("distance", "mean_distance"), ("perplexity", "perplexity")):
        assert abs(float(gui[k]) - cli[c]) <= 1e-9 * max(1, abs(cli[c])), (k, gui[k], cli[c])


def test_kfac():
    """The Editing view's Memorisation (K-FAC) page on the built-in model and its secrets."""
    import json
    model = os.path.abspath(BUILTIN)
    if not os.path.exists(os.path.join(model, "world.json")):
        skip("the built-in model is not there")
    batch, shots, tmp, env1, cli_env = kfac_setup("lmwb-kfac-")
    # The collection text: Brown (shared data) when there, else the world's fact sentences.
    text = os.path.join(tmp, "text.txt")
    brown = os.path.join(os.environ.get("LMWB_SHARED", os.path.join(SRC, "..", "shared")), "data", "brown", "brown.txt")
    if os.path.exists(brown):
        with open(brown, encoding="utf-8") as f:
            body = f.read(40000)
    else:
        with open(os.path.join(model, "world.json"), encoding="utf-8") as f:
            body = "\n".join(re.findall(r'"(?:prompt|text)"\s*:\s*"([^"]{20,})"', f.read()))
    with open(text, "w", encoding="utf-8") as f:
        f.write(body)
    heldout = os.path.join(SRC, "data", "monitor", "brown-50.txt")
    factors, saved = os.path.join(tmp, "factors"), os.path.join(tmp, "edited")
    # Another model's factors (the GPT-2 fixture: other shapes).
    other = os.path.join(tmp, "other")
    subprocess.run([batch, "kfac", "collect", "--model", FIXTURE, "--file", text, "--tokens", "64", "--context", "16",
                    "--layers", "0", "--matrices", "up", "--out", other], check=True, capture_output=True, timeout=60,
                   env=cli_env)
    weights = os.path.join(model, "model.safetensors")
    stamp = (os.path.getsize(weights), os.path.getmtime(weights))
    items, tokens, context = 8, 2048, 64
    out = run_script([
        "wait-ready", "action win.view 'editing'", "action editing.page 'kfac'", "wait-ready", "dump",
        f"shot {shots}/kfac-empty.png",
        # Bad input: a missing folder, another model's factors.
        f"action editing.kfac-load '{tmp}/missing'", "wait-ready", "dump",
        f"action editing.kfac-load '{other}'", "wait-ready", "dump", f"shot {shots}/kfac-bad.png",
        # Collect (ρ = 1 is measured as soon as the factors are there).
        f"action editing.kfac-text '{text}'", f"action editing.kfac-tokens {tokens}", f"action editing.kfac-context {context}",
        "action editing.kfac-layers '0-3'", "action editing.kfac-matrices 'up,down'", f"action editing.kfac-folder '{factors}'",
        f"action editing.kfac-items {items}", f"action editing.kfac-heldout '{heldout}'",
        "action editing.kfac-collect", "wait-ready 120", "dump", f"shot {shots}/kfac-collected.png",
        # Move ρ twice: the measurement of 0.7 gives way to 0.5's.
        "action editing.kfac-keep-mass 0.7", "wait 400", "action editing.kfac-keep-mass 0.5", "wait-ready 120", "dump",
        f"shot {shots}/kfac-rho.png",
        "action editing.kfac-secret 1", "wait-ready", "dump", f"shot {shots}/kfac-secret.png",
        # The folder loaded back: the same figures at the same ρ. A collection cancelled: the factors kept.
        "action editing.kfac-load ''", "wait-ready 120", "dump",
        f"action editing.kfac-folder '{factors}2'", "action editing.kfac-tokens 1000000", "action editing.kfac-collect", "wait 300", "action editing.kfac-cancel",
        "wait-ready 120", "dump",
        f"action editing.kfac-save '{saved}'", "wait-ready 120", "dump",
        f"action editing.kfac-save '{model}'", "wait-ready 120", "dump",
        "action editing.kfac-keep-mass 1.5", "dump",
        "quit",
    ], model, timeout=300, extra_env=env1)
    d = dumps(out)
    assert len(d) == 11, f"expected 11 dumps, got {len(d)}"
    # The folder loaded back and a cancelled collection: checked here, then the rest as before.
    assert kfac_fields(d[6], "edited ") == kfac_fields(d[4], "edited "), (kfac_lines(d[6], "edited "), kfac_lines(d[4], "edited "))
    assert kfac_fields(d[6], "factors=") == kfac_fields(d[4], "factors=") and int(kfac_fields(d[6], "rho=")["evaluations"]) == 1
    assert d[6]["banner"] == d[4]["banner"], d[6]["banner"]
    assert kfac_fields(d[7], "factors=") == kfac_fields(d[4], "factors="), kfac_lines(d[7], "factors=")
    assert d[7]["banner"] == d[4]["banner"] and d[7]["jobs"] == "0", ("cancel showed an error", d[7]["banner"])
    assert not os.path.exists(os.path.join(factors + "2", "factors.safetensors")), "a cancelled collection wrote factors"
    d = d[:6] + d[8:]
    assert d[0]["view"] == "editing" and "editing page=kfac" in d[0]["lines"], d[0]["lines"][-12:]
    assert kfac_lines(d[0], "factors=") == ["factors=0"] and d[0]["banner"] == ""
    # Bad folders: banners naming them, no factors.
    assert "missing" in d[1]["banner"], d[1]["banner"]
    assert d[2]["banner"] != d[1]["banner"] and ("blocks.0.mlp.up" in d[2]["banner"] or "other" in d[2]["banner"]), d[2]["banner"]
    print("banners:", d[1]["banner"], d[2]["banner"], sep="\n  ")
    assert kfac_lines(d[2], "factors=") == ["factors=0"]
    # Collected: 4 layers x up, down, over whole windows of the tokens asked for, saved in the folder.
    head = kfac_fields(d[3], "factors=")
    assert head["factors"] == "8" and head["tokens"] == str(tokens) and head["context"] == str(context), head
    assert int(head["positions"]) == tokens // context * (context - 1), head
    with open(os.path.join(factors, "factors.json")) as f:
        meta = json.load(f)
    assert meta["tokens"] == tokens and len(meta["factors"]) == 8, meta
    facs = kfac_lines(d[3], "factor L")
    assert len(facs) == 8 and all(float(editing_fields(l)["mu0"]) > 0 and float(editing_fields(l)["lambda0"]) > 0 for l in facs), facs
    plots = kfac_fields(d[3], "plots ")
    assert plots["a_series"] == plots["g_series"] == "8" and plots["mass_series"] == "9", plots  # + the ρ line
    assert int(plots["points"]) > 8 * 256, plots
    # ρ = 1: the edit is the model itself, every figure as unedited.
    base, at1 = kfac_fields(d[3], "base "), kfac_fields(d[3], "edited ")
    assert kfac_fields(d[3], "rho=")["evaluated_rho"] == "1", kfac_lines(d[3], "rho=")
    print("unedited", base, "\nrho=1  ", at1)
    assert base["n"] == str(items) and int(base["fact_n"]) > 0 and int(base["ppl_tokens"]) > 500, base
    assert at1 == base, (at1, base)
    assert d[3]["banner"] == d[2]["banner"], "collecting showed an error"
    # ρ = 0.5: recitation falls; the 0.7 measurement was dropped.
    r = kfac_fields(d[4], "rho=")
    at5 = kfac_fields(d[4], "edited ")
    print("rho=0.5", at5, r)  # r["seconds"]: one edit and its measurement on the sample
    assert r["rho"] == "0.5" and r["evaluated_rho"] == "0.5", r
    assert int(r["evaluations"]) == 2, r
    assert float(at5["strict"]) < float(base["strict"]) and float(at5["perplexity"]) > float(base["perplexity"]), (at5, base)
    stats = kfac_lines(d[4], "stats ")
    assert len(stats) == 8 and all(float(editing_fields(l)["kept_mass"]) >= 0.5 for l in stats), stats
    # The same figures from lmwb-batch kfac sweep on the same factors and sample.
    # (ρ = 1 equals the unedited figures above: one point is enough.)
    p = subprocess.run([batch, "kfac", "sweep", "--model", model, "--factors", factors, "--keep-mass", "0.5",
                        "--heldout", heldout, "--max-items", str(items)], capture_output=True, text=True, timeout=240,
                       env=cli_env)
    assert p.returncode == 0, p.stderr[-2000:]
    sweep = json.loads(p.stdout)
    def same(gui, cli):
        kfac_same_as_cli(gui, cli)
        assert abs(float(gui["facts"]) - cli["world"]["fact_recall_top1"]) <= 1e-6, (gui["facts"], cli["world"])
    same(base, sweep["base"])
    same(at5, sweep["points"][0])
    # A secret before and after.
    sec = kfac_lines(d[5], "secret ")
    assert sec[0].startswith("secret 1 suffix="), sec
    before, after = sec[1].split("=", 1)[1], sec[2].split("=", 1)[1]
    print("secret 1:", sec[0], "\n  before", before, "\n  after ", after)
    assert before != after and before.strip('"'), (before, after)
    # Save: a model that loads, only MLP matrices of layers 0-3 changed, the loaded model untouched.
    assert kfac_lines(d[6], "saved=") == ["saved=" + saved], kfac_lines(d[6], "saved=")
    changed = safetensors_changed(weights, os.path.join(saved, "model.safetensors"))
    print("saved, changed:", changed)
    assert len(changed) == 8 and all("mlp" in c for c in changed), changed
    p = subprocess.run([batch, "memorisation", "eval", "--model", saved, "--manifest", os.path.join(model, "world.json"),
                        "--heldout", heldout, "--max-items", str(items)], capture_output=True, text=True, timeout=120,
                       env=cli_env)
    assert p.returncode == 0, p.stderr[-2000:]
    ev = json.loads(p.stdout)
    print("saved model:", {k: ev[k] for k in ("strict", "loose", "perplexity")})
    assert ev["n_items"] == items and ev["strict"] < float(base["strict"]), ev
    assert "loaded model" in d[7]["banner"] and kfac_lines(d[7], "saved=") == ["saved=" + saved], d[7]["banner"]
    assert (os.path.getsize(weights), os.path.getmtime(weights)) == stamp, "the loaded model's weights were written"
    assert "1.5" in d[8]["banner"] and kfac_fields(d[8], "rho=")["rho"] == "0.5", d[8]["banner"]


def test_kfac_memorised():
    """The K-FAC page on a model without a world: tokfsm-mem's memorised.jsonl is the set, held-out
    walks one per window (the stride spin), Recommend moves ρ to kfac sweep's recommended value, and
    the figures equal lmwb-batch kfac sweep's."""
    import json
    model = os.path.join(SRC, "data", "models", "tokfsm-mem")
    batch, shots, tmp, env1, cli_env = kfac_setup("lmwb-kfac-mem-")
    walks = os.path.join(tmp, "walks")
    subprocess.run([batch, "tokfsm", "make", "--seed", "1", "--sequences", "300", "--valid", "1", "--out", walks],
                   check=True, capture_output=True, timeout=60, env=cli_env)
    held = open(os.path.join(model, "fsm", "valid.txt")).read().split("<|endoftext|>")[1:301]
    heldout = os.path.join(tmp, "heldout.txt")
    with open(heldout, "w") as f:
        f.write("".join("<|endoftext|>" + w for w in held) + "<|endoftext|>")
    factors = os.path.join(tmp, "factors")
    items = 32
    out = run_script([
        # The default English prompt has no token in this 11-token vocabulary: a banner saying so.
        "wait-ready", "dump", f"action win.set-prompt '<|endoftext|>{held[0][:16]}'", "action win.run", "wait-ready",
        "action win.view 'editing'", "action editing.page 'kfac'", "wait-ready",
        f"action editing.kfac-text '{walks}/train.txt'", "action editing.kfac-tokens 38700",
        "action editing.kfac-context 129", "action editing.kfac-layers '0-3'", "action editing.kfac-matrices 'up,down'",
        f"action editing.kfac-folder '{factors}'", f"action editing.kfac-items {items}",
        f"action editing.kfac-heldout '{heldout}'", "action editing.kfac-heldout-stride 129",
        "action editing.kfac-collect", "wait-ready 120", "action editing.kfac-recommend", "wait-ready 400",
        "action editing.kfac-secret 3", "wait-ready", "dump", f"shot {shots}/kfac-memorised.png",
        # A mixture (as kfac merge): the folder with itself is the same factors; bad mixtures: banners.
        f"action editing.kfac-load '{factors}:0.5; {factors}:0.5'", "wait-ready 120", "dump",
        f"action editing.kfac-load '{factors}:0.5; {tmp}/missing:0.5'", "wait-ready", "dump",
        f"action editing.kfac-load '{factors}:0.5; {factors}'", "wait-ready", "dump", "quit",
    ], model, timeout=600, extra_env=env1)
    d = dumps(out)
    assert len(d) == 5, f"expected 5 dumps, got {len(d)}"
    mix, missing, unshared = d[2:]
    d = d[:2]
    assert "no tokens" in d[0]["banner"], d[0]["banner"]
    d = d[1]
    assert d["banner"] == "", d["banner"]
    base, ed = kfac_fields(d, "base "), kfac_fields(d, "edited ")
    rec = kfac_fields(d, "recommend=")
    rho = float(rec["recommend"])
    print("unedited", base, "\nrecommended rho", rho, ed, kfac_lines(d, "rho="))
    # Recommend: kfac sweep's sixteen default values, ρ moved to the recommended one and measured there.
    assert rec["tried"] == "16" and 0.9 <= rho < 1, rec
    assert float(kfac_fields(d, "rho=")["evaluated_rho"]) == rho, kfac_lines(d, "rho=")
    assert base["n"] == str(items) and base["fact_n"] == "0" and base["facts"] == "nan", base
    assert float(base["strict"]) == 1.0 and float(ed["strict"]) <= 0.1, (base, ed)
    assert float(ed["perplexity"]) < 1.2 * float(base["perplexity"]), (base, ed)
    assert int(base["ppl_tokens"]) == 300 * 128, base  # one walk per window: every digit scored after its EOT
    sec = kfac_lines(d, "secret ")
    assert sec[0].startswith("secret 3 suffix="), sec
    p = subprocess.run([batch, "kfac", "sweep", "--model", model, "--factors", factors, "--heldout", heldout,
                        "--heldout-stride", "129", "--max-items", str(items)],
                       capture_output=True, text=True, timeout=300, env=cli_env)
    assert p.returncode == 0, p.stderr[-2000:]
    sweep = json.loads(p.stdout)
    assert len(sweep["points"]) == 16 and sweep["recommended_keep_mass"] == rho, (sweep["recommended_keep_mass"], rho)
    at = [q for q in sweep["points"] if q["keep_mass"] == rho][0]
    kfac_same_as_cli(base, sweep["base"])
    kfac_same_as_cli(ed, at)
    # The mixture of the folder with itself: twice the tokens, the same edit, the same figures.
    head = kfac_fields(mix, "factors=")
    assert head["factors"] == "8" and head["tokens"] == str(2 * 38700) and mix["banner"] == "", (head, mix["banner"])
    assert float(kfac_fields(mix, "rho=")["evaluated_rho"]) == rho, kfac_lines(mix, "rho=")
    assert kfac_fields(mix, "edited ") == ed, (kfac_fields(mix, "edited "), ed)
    assert "missing" in missing["banner"], missing["banner"]
    assert "share" in unshared["banner"], unshared["banner"]
    shutil.rmtree(tmp)


def read_npy(path):
    """(shape, flat values) of a little-endian int32 or float32 .npy file."""
    import ast, struct
    with open(path, "rb") as f:
        data = f.read()
    assert data[:6] == b"\x93NUMPY", path
    hl, off = (struct.unpack("<H", data[8:10])[0], 10) if data[6] == 1 else (struct.unpack("<I", data[8:12])[0], 12)
    head = ast.literal_eval(data[off:off + hl].decode("latin1"))
    assert head["descr"] in ("<i4", "<f4") and not head["fortran_order"], head
    shape = tuple(head["shape"])
    n = 1
    for x in shape:
        n *= x
    vals = struct.unpack("<%d%s" % (n, "i" if head["descr"] == "<i4" else "f"), data[off + hl:off + hl + 4 * n])
    return shape, vals


def codes_lines(d, prefix):
    return [l[len("codes " + prefix):] for l in d["lines"] if l.startswith("codes " + prefix)]


def codes_cells(d):
    """{(pos, col): (layer, head, [ids])} of the grid as the dump shows it."""
    out = {}
    for l in codes_lines(d, "cell "):
        m = re.match(r"pos=(\d+) col=(\d+) layer=(\d+) site=(\w+) head=(-?\d+) token=.* ids=([\d,]+)$", l)
        assert m, l
        out[(int(m.group(1)), int(m.group(2)))] = (int(m.group(3)), int(m.group(5)), [int(x) for x in m.group(6).split(",")])
    return out


def test_codes():
    """The Codes view on the built-in model's codebook set, checked against lmwb-batch."""
    import json
    model = os.path.abspath(BUILTIN)
    cbdir = os.path.join(model, "codebooks")
    text = os.path.join(model, "transcoders", "sample.txt")
    if not os.path.exists(os.path.join(cbdir, "codebooks.json")) or not os.path.exists(text):
        skip("the built-in model's codebooks or sample text are not there")
    batch = os.path.join(BUILD, "ui", "batch", "lmwb-batch")
    shots = shots_dir()
    tmp = tempfile.mkdtemp(prefix="lmwb-codes-")
    bad = os.path.join(tmp, "bad-set")
    os.makedirs(bad)
    with open(os.path.join(bad, "codebooks.json"), "w") as f:
        f.write('{"k": 8, "num_codes": 1024, "sites": [{"layer": 9, "site": "attn"}]}\n')
    prompt, regex, tokens, new = "The capital of France is", " capital", 2000, 12
    out = run_script([
        "wait-ready", "action win.view 'codes'", "wait-ready", "dump", f"shot {shots}/codes-window-prompt.png",
        f"action codes.set-prompt '{prompt}'", f"action codes.set-codebooks '{cbdir}'", "wait-ready 60", "dump",
        "action codes.head 3", "wait-ready", "dump",
        f"action codes.set-file '{text}'", f"action codes.set-tokens {tokens}", f"action codes.set-regex '{regex}'",
        "action codes.search", "wait-ready 200", "dump", f"shot {shots}/codes-search.png",
        "action codes.click '1,0,0'", "wait-ready 120", "dump",
        f"action codes.set-new-tokens {new}", "action codes.clamp true", "wait-ready 120", "dump", f"shot {shots}/codes-clamp.png",
        "action codes.select-hit 0", "wait-ready 120", "dump", f"shot {shots}/codes-hit.png",
        # bad input last (a banner stays until closed)
        "action codes.set-regex '( unclosed'", "action codes.search", "wait-ready", "dump",
        f"action codes.set-codebooks '{bad}'", "wait-ready 60", "dump", f"shot {shots}/codes-bad-set.png",
        "quit"], model, timeout=400)
    d = dumps(out)
    assert len(d) == 9, f"expected 9 dumps, got {len(d)}"
    # The default set is the model's codebooks/ folder; shown, the view lists the codes of the window's prompt.
    assert d[0]["view"] == "codes" and "codes:<Alt>7" in d[0]["views"] and d[0]["banner"] == "", d[0]["banner"]
    assert codes_lines(d[0], "set=") == [cbdir], codes_lines(d[0], "set=")
    window_tokens = sum(1 for l in d[0]["lines"] if l.startswith("token "))
    first = codes_lines(d[0], "loaded ")[0]
    assert first.startswith("k=8 num_codes=1024 sites=4 ") and f"tokens={window_tokens} " in first, (first, window_tokens)
    assert len(codes_cells(d[0])) == 4 * window_tokens
    # The grid: every token's codes at every site, head 0 then head 3, as lmwb-batch activations writes them.
    loaded = codes_lines(d[1], "loaded ")[0]
    assert loaded.startswith("k=8 num_codes=1024 sites=4 tokens="), loaded
    ntok = int(re.search(r"tokens=(\d+)", loaded).group(1))
    ids = {}
    for layer in range(4):
        npy = os.path.join(tmp, f"codes{layer}.npy")
        subprocess.run([batch, "activations", "--model", model, "--codebooks", cbdir, "--text", prompt,
                        "--hook", f"blocks.{layer}.attn.hook_codes", "--out", npy], check=True, capture_output=True, timeout=120)
        shape, vals = read_npy(npy)
        assert shape == (1, ntok, 8, 8), shape
        ids[layer] = vals
    for di, head in ((1, 0), (2, 3)):
        cells = codes_cells(d[di])
        assert len(cells) == ntok * 4, (len(cells), ntok)
        for (pos, col), (layer, h, got) in cells.items():
            assert layer == col and h == head, (pos, col, layer, h)
            want = list(ids[layer][(pos * 8 + head) * 8:(pos * 8 + head) * 8 + 8])
            assert got == want, f"token {pos} layer {layer} head {head}: view {got}, lmwb-batch {want}"
    print(f"grid: {ntok} tokens x 4 sites x 8 codes, heads 0 and 3, equal to lmwb-batch activations")
    # Search: the same codes, precision and recall as lmwb-batch codebook search.
    p = subprocess.run([batch, "codebook", "search", "--model", model, "--codebooks", cbdir, "--file", text,
                        "--regex", regex, "--tokens", str(tokens), "--examples", "0"],
                       check=True, capture_output=True, text=True, timeout=300)
    ref = json.loads(p.stdout)
    head = codes_lines(d[3], "search ")[0]
    assert f"text_tokens={ref['tokens']} marked={ref['matched_tokens']} hits={len(ref['codes'])}" in head, (head, ref["tokens"])
    hits = codes_lines(d[3], "hit ")
    assert len(hits) == len(ref["codes"]) > 0, (len(hits), len(ref["codes"]))
    for line, c in zip(hits, ref["codes"]):
        f = dict(kv.split("=", 1) for kv in line.split()[1:])
        assert line.split()[0] == c["clamp"], (line, c)
        assert abs(float(f["precision"]) - c["precision"]) < 1e-6 and abs(float(f["recall"]) - c["recall"]) < 1e-6, (line, c)
        assert int(f["matched"]) == c["matched"] and int(f["activations"]) == c["activations"], (line, c)
    print(f"search /{regex}/: {len(hits)} codes, best {hits[0]}, equal to lmwb-batch codebook search")
    # The precision/recall plot has a point per code, the selected one apart.
    assert codes_lines(d[3], "plot ") == [f"points={len(hits)} selected=0"], codes_lines(d[3], "plot ")
    assert codes_lines(d[6], "plot ") == [f"points={len(hits) - 1} selected=1"], codes_lines(d[6], "plot ")
    # Clicking a code of the grid (token 1, layer 0, slot 0, head 3) shows its top contexts, as the CLI lists them.
    clicked = codes_cells(d[3])[(1, 0)][2][0]
    spec = f"0:attn:3={clicked}"
    sel = codes_lines(d[4], "selected=")[0]
    assert sel.startswith(spec + " "), (sel, spec)
    p = subprocess.run([batch, "codebook", "search", "--model", model, "--codebooks", cbdir, "--file", text,
                        "--code", spec, "--tokens", str(tokens), "--examples", "8"],
                       check=True, capture_output=True, text=True, timeout=300)
    ref = json.loads(p.stdout)["code"]
    assert f"activations={ref['activations']} " in sel, (sel, ref["activations"])
    ctx = [c.encode().decode("unicode_escape").encode("latin1").decode() for c in codes_lines(d[4], "context ")]
    assert len(ctx) == min(8, ref["activations"]) > 0, (len(ctx), ref["activations"])
    assert ctx == [c["text"] for c in ref["contexts"][:len(ctx)]], (ctx, ref["contexts"][:3])
    print(f"contexts of {spec}: {len(ctx)}, e.g. {ctx[0]!r}")
    # Clamping: the continuation with the code on (all slots, every position) is lmwb-batch generate's.
    def generate(*clamp):
        args = [batch, "generate", "--model", model, "--codebooks", cbdir, "--prompt", prompt, "--max-tokens", str(new)]
        args += [a for c in clamp for a in ("--clamp-code", c)]
        r = subprocess.run(args, check=True, capture_output=True, text=True, timeout=120)
        return json.loads(r.stdout)["completion"]
    def gen(dd):
        g = {k: v.encode().decode("unicode_escape").encode("latin1").decode()
             for k, v in (l.split("=", 1) for l in codes_lines(dd, "gen "))}
        return g["clamp"], g["before"], g["after"]
    before = generate()
    changed = 0
    for di in (5, 6):
        clamp, b, a = gen(d[di])
        assert b == before, (b, before)
        assert a == generate(clamp), (clamp, a)
        changed += a != b
        print(f"clamp {clamp}: {b!r} -> {a!r}")
    assert gen(d[5])[0] == spec and gen(d[6])[0] == hits[0].split()[0], (gen(d[5])[0], gen(d[6])[0])
    assert changed >= 1, "clamping never changed the continuation"
    assert all(d[i]["banner"] == "" for i in range(7)), [d[i]["banner"] for i in range(7)]
    # A regex that does not compile: a banner naming it, the results kept.
    assert "( unclosed" in d[7]["banner"] and "compile" in d[7]["banner"], d[7]["banner"]
    assert codes_lines(d[7], "hit ") == hits
    print("bad regex:", d[7]["banner"])
    # A folder that is not a set for this model: a banner naming it and the field; the codes shown are kept.
    assert bad in d[8]["banner"] and "layer 9" in d[8]["banner"], d[8]["banner"]
    assert codes_lines(d[8], "loaded ") == codes_lines(d[6], "loaded ")
    print("bad set:", d[8]["banner"])
    # The screen: the grid's code links and the results are drawn.
    from PIL import Image
    im = Image.open(f"{shots}/codes-clamp.png").convert("RGB")
    px = im.load()
    links = sum(1 for x in range(350, im.size[0], 2) for y in range(100, 480, 2)
                if px[x, y][2] > 180 and px[x, y][0] < 120 and 80 < px[x, y][1] < 170)
    assert links > 300, f"the grid's code links are not on the screen ({links} link pixels)"
    shutil.rmtree(tmp)


def test_cli():
    p = subprocess.run([LMWB, "--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "--model" in p.stdout and "lmwb-batch" in p.stdout, p.stdout
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    p = subprocess.run([LMWB], capture_output=True, text=True, timeout=30, env=env)
    assert p.returncode == 2 and "lmwb-batch --help" in p.stderr, (p.returncode, p.stderr)
    p = subprocess.run([LMWB, "--bogus"], capture_output=True, text=True, timeout=30, env=env)
    assert p.returncode == 2


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "main"
    if not os.path.exists(LMWB):
        skip(f"{LMWB} was not built (GTK4 missing?)")
    if which != "cli":
        if not shutil.which("xvfb-run") or not shutil.which("import"):
            skip("xvfb-run or ImageMagick import is not installed")
        try:
            import PIL  # noqa: F401
        except ImportError:
            skip("python3-pil is not installed")
    {"main": test_main, "badinput": test_badinput, "circuits": test_circuits, "editing": test_editing,
     "edges": test_edges, "kfac": test_kfac, "kfac-memorised": test_kfac_memorised, "codes": test_codes, "cli": test_cli}[which]()
    print("ok")
