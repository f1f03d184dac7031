/* lmwb-batch tokfsm make | train | eval: the TokFSM language of the codebook-features paper
 * (analysis/tokfsm.h), its model and codebooks trained by the ordinary `train --recipe` and
 * `codebook train` with the paper's settings, and the paper's measurements (analysis/tokfsm_eval.h). */
#include "ui/batch/cli.h"
#include "ui/batch/commands.h"
#include "analysis/tokfsm.h"
#include "analysis/tokfsm_eval.h"
#include "app/core/atomic_file.h"
#include "app/core/inputs.h"
#include "app/formats/json_text.h"
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define TOKFSM_HELP \
  "TokFSM (Tamkin, Taufeeque & Goodman 2023, section 5): a machine of N states (2-digit strings), each with\n" \
  "E random successors of probability 1/E; sequences are random walks written as digits after <|endoftext|>.\n" \
  "Exit status: 0 ok, 2 bad input (the message names the option, file or field), 1 other failure."

/* Memorised walks placed among the training walks (lmwb_tokfsm_memorised_schedule). */
typedef struct {
  size_t n;
  int64_t *slot;
  int32_t *walk;
} Copies;

static void append_walk(GString *s, const int32_t *seq, size_t T) {
  g_string_append(s, "<|endoftext|>");
  for (size_t t = 1; t < T; t++) g_string_append_c(s, (char)('0' + seq[t]));
}

/* Writes sequences [0, n) of a split as text: per sequence "<|endoftext|>" and its digits, with
 * the memorised copies (if any) before the training walk their slot names; one more
 * "<|endoftext|>" at the end (the last sequence's EOS). */
static gboolean write_split(const LmwbTokfsm *f, LmwbTokfsmSplit split, gint64 n, const Copies *copies,
                            const char *path, LmwbReporter *rep, double p0, double p1, GError **error) {
  LmwbAtomicFile *af = lmwb_atomic_file_begin(path, error);
  if (!af) return FALSE;
  size_t T = 1 + 2 * (size_t)f->length, c = 0;
  g_autofree int32_t *seq = g_new(int32_t, T);
  GString *s = g_string_sized_new(1 << 16);
  for (gint64 i = 0; i <= n; i++) {
    for (; copies && c < copies->n && copies->slot[c] == i; c++) {
      lmwb_tokfsm_sequence(f, LMWB_TOKFSM_MEMORISED, copies->walk[c], seq);
      append_walk(s, seq, T);
    }
    if (i < n) {
      lmwb_tokfsm_sequence(f, split, i, seq);
      append_walk(s, seq, T);
    } else {
      g_string_append(s, "<|endoftext|>");
    }
    if (s->len > (1 << 16) || i == n) {
      if (!lmwb_atomic_file_write(af, s->str, s->len, error)) {
        lmwb_atomic_file_abort(af);
        g_string_free(s, TRUE);
        return FALSE;
      }
      g_string_truncate(s, 0);
    }
    if ((i & 1023) == 0) {
      lmwb_report_progress(rep, p0 + (p1 - p0) * (double)i / (double)n, "writing sequences");
      if (lmwb_reporter_cancelled(rep, error)) {
        lmwb_atomic_file_abort(af);
        g_string_free(s, TRUE);
        return FALSE;
      }
    }
  }
  g_string_free(s, TRUE);
  return lmwb_atomic_file_commit(af, error);
}

/* memorised.jsonl: per memorised walk {"prefix": EOT + its first `prefix` states, "suffix": the
 * next `suffix` states}, the set `memorisation eval --set` and `kfac sweep --set` read. */
static gboolean write_memorised_set(const LmwbTokfsm *f, int n, int prefix, int suffix, const char *path,
                                    GError **error) {
  size_t T = 1 + 2 * (size_t)f->length;
  g_autofree int32_t *seq = g_new(int32_t, T);
  GString *s = g_string_new(NULL);
  for (int j = 0; j < n; j++) {
    lmwb_tokfsm_sequence(f, LMWB_TOKFSM_MEMORISED, j, seq);
    g_string_append(s, "{\"prefix\": \"<|endoftext|>");
    for (int t = 1; t <= 2 * prefix; t++) g_string_append_c(s, (char)('0' + seq[t]));
    g_string_append(s, "\", \"suffix\": \"");
    for (int t = 2 * prefix + 1; t <= 2 * (prefix + suffix); t++) g_string_append_c(s, (char)('0' + seq[t]));
    g_string_append(s, "\"}\n");
  }
  gboolean ok = lmwb_file_write_atomic(path, s->str, s->len, error);
  g_string_free(s, TRUE);
  return ok;
}

int lmwb_cmd_tokfsm_make(int argc, char **argv) {
  int states = LMWB_TOKFSM_DEFAULT_STATES, edges = LMWB_TOKFSM_DEFAULT_EDGES, length = LMWB_TOKFSM_DEFAULT_LENGTH;
  gint64 seed = 1, sequences = 0, valid = -1;
  int memorised = 0, repeats = 100, prefix = -1, suffix = -1;
  char *out = NULL;
  GOptionEntry e[] = {
    {"states", 0, 0, G_OPTION_ARG_INT, &states, "States, at most 100 (default 100, the paper's)", "N"},
    {"edges", 0, 0, G_OPTION_ARG_INT, &edges, "Random successors per state, at most --states (default 10, the paper's)", "E"},
    {"length", 0, 0, G_OPTION_ARG_INT, &length, "States per sequence (default 64: 128 digit tokens, the paper's)", "L"},
    {"seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Seed of the machine and the walks (default 1)", "S"},
    {"sequences", 'n', 0, G_OPTION_ARG_INT64, &sequences, "Training sequences (required)", "N"},
    {"valid", 0, 0, G_OPTION_ARG_INT64, &valid, "Held-out sequences (default max(1, N/10))", "N"},
    {"memorised", 0, 0, G_OPTION_ARG_INT, &memorised, "Memorised walks placed among the training walks (default 0)", "N"},
    {"repeats", 0, 0, G_OPTION_ARG_INT, &repeats, "Copies of each memorised walk in train.txt (default 100)", "R"},
    {"prefix-states", 0, 0, G_OPTION_ARG_INT, &prefix, "States of a memorised walk given as the prompt (default length/2)", "P"},
    {"suffix-states", 0, 0, G_OPTION_ARG_INT, &suffix, "States to recite after it (default min(24, the rest))", "S"},
    {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- generate the TokFSM language",
                      "Writes into --out DIR (created; files replaced atomically):\n"
                      "  fsm.json        {\"states\", \"edges\", \"seed\", \"length\", \"next\": [[successors of state 0], ...]}\n"
                      "  train.txt       the training sequences, each \"<|endoftext|>\" then its digits\n"
                      "  valid.txt       the held-out sequences (other walks on the same machine)\n"
                      "  tokenizer.json  the 11-token vocabulary (\"0\"..\"9\" = ids 0..9, <|endoftext|> = 10)\n"
                      "  memorised.jsonl with --memorised N: N walks of their own, each copied --repeats times into\n"
                      "                  train.txt at random places, as {\"prefix\", \"suffix\"} lines (the first\n"
                      "                  --prefix-states states after <|endoftext|>, then the next --suffix-states):\n"
                      "                  the memorised set of `memorisation eval --set` and `kfac sweep --set`\n"
                      "and prints {\"out\", \"states\", \"edges\", \"length\", \"sequences\", \"valid\", \"tokens\"}.\n"
                      "The text files are what `lmwb-batch train --recipe` reads with tokenizer.json.\n"
                      "Example: lmwb-batch tokfsm make --states 100 --edges 10 --seed 1 --sequences 20000 --out fsm/",
                      TOKFSM_HELP, e, LMWB_CLI_OUT))
    return 2;
  out = lmwb_cli.out;
  if (!out) return lmwb_cli_usage_error("--out DIR is required");
  if (sequences < 1 || sequences > 100000000) return lmwb_cli_usage_error("--sequences: %" G_GINT64_FORMAT " is outside 1..100000000", sequences);
  if (valid < 0) valid = MAX(1, sequences / 10);
  if (valid < 1 || valid > 100000000) return lmwb_cli_usage_error("--valid: %" G_GINT64_FORMAT " is outside 1..100000000", valid);
  if (seed < 0) return lmwb_cli_usage_error("--seed must not be negative");
  if (memorised < 0 || memorised > 100000) return lmwb_cli_usage_error("--memorised: %d is outside 0..100000", memorised);
  if (repeats < 1 || repeats > 100000) return lmwb_cli_usage_error("--repeats: %d is outside 1..100000", repeats);
  if (prefix < 0) prefix = length / 2;
  if (suffix < 0) suffix = MIN(24, length - prefix);
  if (memorised > 0 && (prefix < 1 || suffix < 1 || prefix + suffix > length))
    return lmwb_cli_usage_error("--prefix-states %d and --suffix-states %d must be at least 1 and fit in --length %d",
                                prefix, suffix, length);
  GError *err = NULL;
  LmwbTokfsm *f = lmwb_tokfsm_new(states, edges, length, (guint64)seed, &err);
  if (!f) {
    g_prefix_error(&err, "--");
    return lmwb_cli_fail(err);
  }
  int status = 0;
  LmwbReporter *rep = lmwb_cli_reporter();
  g_autofree char *p_fsm = g_build_filename(out, "fsm.json", NULL);
  g_autofree char *p_train = g_build_filename(out, "train.txt", NULL);
  g_autofree char *p_valid = g_build_filename(out, "valid.txt", NULL);
  g_autofree char *p_tok = g_build_filename(out, "tokenizer.json", NULL);
  g_autofree char *p_mem = g_build_filename(out, "memorised.jsonl", NULL);
  g_autofree char *tok = NULL, *fj = NULL;
  Copies copies = {.n = (size_t)memorised * (size_t)repeats};
  g_autoptr(JsonBuilder) b = NULL;
  size_t len = 0;
  const char *outs[] = {p_fsm, p_train, p_valid, p_tok, p_mem, NULL};
  for (int i = 0; outs[i]; i++)
    if (!lmwb_input_guard_check_output(outs[i], &err)) goto fail;
  if (g_mkdir_with_parents(out, 0755) != 0) {
    lmwb_input_error(&err, "--out: cannot create the folder %s", out);
    goto fail;
  }
  tok = lmwb_tokfsm_tokenizer_json(&len);
  if (!lmwb_file_write_atomic(p_tok, tok, len, &err)) goto fail;
  fj = lmwb_tokfsm_to_json(f, &len);
  if (!lmwb_file_write_atomic(p_fsm, fj, len, &err)) goto fail;
  if (memorised > 0) {
    copies.slot = g_new(int64_t, copies.n);
    copies.walk = g_new(int32_t, copies.n);
    lmwb_tokfsm_memorised_schedule(f, sequences, memorised, repeats, copies.slot, copies.walk);
    if (!write_memorised_set(f, memorised, prefix, suffix, p_mem, &err)) goto fail;
  }
  if (!write_split(f, LMWB_TOKFSM_TRAIN, sequences, memorised > 0 ? &copies : NULL, p_train, rep, 0, 0.9, &err))
    goto fail;
  if (!write_split(f, LMWB_TOKFSM_HELDOUT, valid, NULL, p_valid, rep, 0.9, 1, &err)) goto fail;
  if (isatty(2)) fputc('\n', stderr);
  b = json_builder_new();
  json_builder_begin_object(b);
  lmwb_json_member_string(b, "out", out);
  lmwb_json_member_int(b, "states", states);
  lmwb_json_member_int(b, "edges", edges);
  lmwb_json_member_int(b, "length", length);
  lmwb_json_member_int(b, "seed", seed);
  lmwb_json_member_int(b, "sequences", sequences);
  lmwb_json_member_int(b, "valid", valid);
  if (memorised > 0) {
    lmwb_json_member_int(b, "memorised", memorised);
    lmwb_json_member_int(b, "repeats", repeats);
    lmwb_json_member_int(b, "prefix_states", prefix);
    lmwb_json_member_int(b, "suffix_states", suffix);
  }
  lmwb_json_member_int(b, "tokens", (sequences + (gint64)copies.n + valid) * (1 + 2 * (gint64)length) + 2);
  json_builder_end_object(b);
  if (!lmwb_cli_emit_json(json_builder_get_root(b), NULL, &err)) goto fail;
  goto done;
fail:
  status = lmwb_cli_fail(err);
done:
  g_free(copies.slot);
  g_free(copies.walk);
  lmwb_tokfsm_free(f);
  return status;
}

/* ---- eval ---- */

static void add_lm(JsonBuilder *b, const char *name, const LmwbTokfsmLm *lm) {
  json_builder_set_member_name(b, name);
  json_builder_begin_object(b);
  lmwb_json_member_double(b, "loss", lm->loss);
  lmwb_json_member_double(b, "accuracy", lm->accuracy);
  lmwb_json_member_double(b, "state_accuracy", lm->state_accuracy);
  lmwb_json_member_int(b, "tokens", lm->tokens);
  lmwb_json_member_int(b, "transitions", lm->transitions);
  json_builder_end_object(b);
}

static void add_states(JsonBuilder *b, const LmwbTokfsmEvalResult *r) {
  json_builder_set_member_name(b, "codes_vs_neurons");
  json_builder_begin_object(b);
  lmwb_json_member_int(b, "states_measured", r->states_measured);
  lmwb_json_member_double(b, "code_precision", r->code_precision);
  lmwb_json_member_double(b, "code_recall", r->code_recall);
  lmwb_json_member_double(b, "neuron_precision", r->neuron_precision);
  lmwb_json_member_double(b, "neuron_recall", r->neuron_recall);
  json_builder_set_member_name(b, "states");
  json_builder_begin_array(b);
  for (int s = 0; s < r->n_states; s++) {
    const LmwbTokfsmStateBest *st = &r->states[s];
    if (!st->support) continue;
    json_builder_begin_object(b);
    lmwb_json_member_int(b, "state", st->state);
    lmwb_json_member_int(b, "support", st->support);
    if (st->code >= 0) {
      lmwb_json_member_int(b, "code_layer", st->code_layer);
      lmwb_json_member_int(b, "code", st->code);
    }
    lmwb_json_member_double(b, "code_precision", st->code_precision);
    lmwb_json_member_double(b, "code_recall", st->code_recall);
    if (st->neuron >= 0) {
      lmwb_json_member_int(b, "neuron_layer", st->neuron_layer);
      lmwb_json_member_int(b, "neuron", st->neuron);
    }
    lmwb_json_member_double(b, "neuron_precision", st->neuron_precision);
    lmwb_json_member_double(b, "neuron_recall", st->neuron_recall);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
}

static void add_patching(JsonBuilder *b, const LmwbTokfsmEvalResult *r) {
  json_builder_set_member_name(b, "patching");
  json_builder_begin_object(b);
  lmwb_json_member_int(b, "transitions", r->transitions);
  lmwb_json_member_double_or_null(b, "jsd_unpatched", r->jsd_unpatched);
  json_builder_set_member_name(b, "patches");
  json_builder_begin_array(b);
  for (int i = 0; i < r->n_patches; i++) {
    json_builder_begin_object(b);
    if (r->patches[i].layer < 0) lmwb_json_member_string(b, "layers", "all");
    else lmwb_json_member_int(b, "layer", r->patches[i].layer);
    lmwb_json_member_double_or_null(b, "jsd", r->patches[i].jsd);
    lmwb_json_member_double_or_null(b, "normalised", r->patches[i].normalised);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
}

int lmwb_cmd_tokfsm_eval(int argc, char **argv) {
  char *fsm_dir = NULL, *file = NULL, *cb_dir = NULL;
  int sequences = 0, batch = 0, transitions = 0;
  gint64 seed = 1;
  GOptionEntry e[] = {
    {"fsm", 0, 0, G_OPTION_ARG_FILENAME, &fsm_dir, "Folder of `tokfsm make` (fsm.json, valid.txt; required)", "DIR"},
    {"file", 0, 0, G_OPTION_ARG_FILENAME, &file, "Held-out sequences (default: the --fsm folder's valid.txt)", "TEXT"},
    {"codebooks", 0, 0, G_OPTION_ARG_FILENAME, &cb_dir, "Codebook set of the model (attn/mlp, any k): adds (b) and (c)", "DIR"},
    {"sequences", 'n', 0, G_OPTION_ARG_INT, &sequences, "Held-out sequences evaluated (default 100)", "N"},
    {"transitions", 0, 0, G_OPTION_ARG_INT, &transitions, "Patched transitions in (c) (default 500; negative: none)", "N"},
    {"batch", 'b', 0, G_OPTION_ARG_INT, &batch, "Sequences per forward (default 16)", "N"},
    {"seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Seed of the patched transitions (default 1)", "S"},
    {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- measure a TokFSM model as the codebook paper does",
                      "Runs the held-out sequences (analysis/tokfsm_eval.h has the exact definitions) and prints:\n"
                      "  {\"sequences\", \"plain\": {loss, accuracy, state_accuracy, tokens, transitions}, \"codebooks\": {...},\n"
                      "   \"codes_vs_neurons\": {states_measured, code_precision, code_recall, neuron_precision,\n"
                      "    neuron_recall, \"states\": [{state, support, code_layer, code, code_precision, code_recall,\n"
                      "    neuron_layer, neuron, neuron_precision, neuron_recall}]},\n"
                      "   \"patching\": {transitions, jsd_unpatched, \"patches\": [{\"layers\": \"all\" | \"layer\": L, jsd,\n"
                      "    normalised}]}, \"seconds\"}\n"
                      "(a) plain/codebooks: next-token loss and accuracy over the digits; state accuracy = share of greedy\n"
                      "    next states (two digits) that are edges of the machine. (b) per state, the MLP code with the best F1\n"
                      "    for \"this token is the second digit of state s\" vs the best MLP neuron at the same recall.\n"
                      "(c) MLP code ids at the last position replaced by another state's: Jensen-Shannon divergence to\n"
                      "    that state's true next-token distribution, normalised so that no patch = 1.\n"
                      "Example: lmwb-batch tokfsm eval --model data/models/tokfsm --fsm fsm/ --codebooks data/models/tokfsm/codebooks",
                      TOKFSM_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if (!fsm_dir) return lmwb_cli_usage_error("--fsm DIR is required (a folder written by tokfsm make)");
  if (sequences < 0 || batch < 0) return lmwb_cli_usage_error("--sequences and --batch must not be negative");
  if (seed < 0) return lmwb_cli_usage_error("--seed must not be negative");
  GError *err = NULL;
  g_autofree char *fsm_path = g_build_filename(fsm_dir, "fsm.json", NULL);
  g_autofree char *valid_path = file ? g_strdup(file) : g_build_filename(fsm_dir, "valid.txt", NULL);
  LmwbTokfsm *f = lmwb_tokfsm_load(fsm_path, &err);
  if (!f) {
    g_prefix_error(&err, "--fsm: ");
    return lmwb_cli_fail(err);
  }
  int n = 0, status = 0;
  LmwbModel *m = NULL;
  LmwbCodebooks *cb = NULL;
  LmwbTokfsmEvalResult res = {0};
  g_autoptr(JsonBuilder) b = NULL;
  g_autofree int32_t *seqs = lmwb_tokfsm_read_sequences(f, valid_path, &n, &err);
  if (!seqs) {
    g_prefix_error(&err, file ? "--file: " : "--fsm: ");
    goto fail;
  }
  if (!(m = lmwb_cli_load_model(&err))) goto fail;
  if (cb_dir && !(cb = lmwb_codebooks_load(cb_dir, &m->cfg, &err))) {
    g_prefix_error(&err, "--codebooks: ");
    goto fail;
  }
  LmwbTokfsmEvalOptions o = {.sequences = sequences, .batch = batch, .transitions = transitions, .seed = (guint64)seed};
  if (!lmwb_tokfsm_eval(m, cb, f, seqs, n, &o, lmwb_cli_reporter(), &res, &err)) goto fail;
  if (isatty(2)) fputc('\n', stderr);
  b = json_builder_new();
  json_builder_begin_object(b);
  lmwb_json_member_string(b, "model", m->dir ? m->dir : "");
  if (cb_dir) lmwb_json_member_string(b, "codebooks", cb_dir);
  lmwb_json_member_string(b, "sequences_file", valid_path);
  lmwb_json_member_int(b, "sequences", res.sequences);
  add_lm(b, "plain", &res.plain);
  if (res.has_codebooks) add_lm(b, "codebooks", &res.codebooks);
  if (res.has_codes) add_states(b, &res);
  if (res.has_codes && res.n_patches > 0) add_patching(b, &res);
  lmwb_json_member_double(b, "seconds", res.seconds);
  json_builder_end_object(b);
  if (!lmwb_cli_emit_json(json_builder_get_root(b), lmwb_cli.out, &err)) goto fail;
  goto done;
fail:
  status = lmwb_cli_fail(err);
done:
  lmwb_tokfsm_eval_result_clear(&res);
  lmwb_codebooks_free(cb);
  if (m) lmwb_model_unref(m);
  lmwb_tokfsm_free(f);
  return status;
}

/* The paper's TokFSM model (GPT-2 here; 4 layers, 4 heads, d 128, MLP 512; windows of one walk,
 * each starting at <|endoftext|>) as a recipe for `train`. The context is one walk: 1 + 2 * length. */
static char *tokfsm_recipe(const char *data, const char *out, int context, gint64 steps, int batch, gint64 seed, int threads) {
  g_autofree char *train = g_build_filename(data, "train.txt", NULL), *valid = g_build_filename(data, "valid.txt", NULL);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
#define S(k, v) (json_builder_set_member_name(b, k), json_builder_add_string_value(b, v))
#define I(k, v) (json_builder_set_member_name(b, k), json_builder_add_int_value(b, v))
#define D(k, v) (json_builder_set_member_name(b, k), json_builder_add_double_value(b, v))
  S("out", out);
  S("tokenizer", data);
  json_builder_set_member_name(b, "model");
  json_builder_begin_object(b);
  S("architecture", "gpt2");
  I("n_layer", 4), I("d_model", 128), I("n_head", 4), I("d_ff", 512), I("context", context);
  json_builder_end_object(b);
  json_builder_set_member_name(b, "train_files");
  json_builder_begin_array(b);
  json_builder_add_string_value(b, train);
  json_builder_end_array(b);
  json_builder_set_member_name(b, "valid_files");
  json_builder_begin_array(b);
  json_builder_add_string_value(b, valid);
  json_builder_end_array(b);
  I("seed", seed), I("batch", batch), I("seq", context), I("steps", steps), I("warmup", MIN(100, steps / 10));
  D("lr", 2e-3), D("min_lr", 1e-4), D("weight_decay", 0.1), D("grad_clip", 1.0);
  I("eval_every", MAX(1, steps / 6)), I("eval_batches", 8), I("checkpoint_every", MAX(1, steps / 6));
  S("dtype", "F32"), S("window_start", "eos");
  if (threads > 0) I("threads", threads);
#undef S
#undef I
#undef D
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  return lmwb_json_generate(root, TRUE, NULL);
}

int lmwb_cmd_tokfsm_train(int argc, char **argv) {
  char *data = NULL, *out = NULL;
  gint64 steps = 3000, cb_steps = 1000, seed = 1;
  int batch = 16, codes = 512, threads = 0;
  GOptionEntry e[] = {
    {"data", 0, 0, G_OPTION_ARG_FILENAME, &data, "Folder of `tokfsm make` (fsm.json, train.txt, valid.txt, tokenizer.json; required)", "DIR"},
    {"out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "The model folder to write; its codebooks go to OUT/codebooks (required)", "DIR"},
    {"steps", 0, 0, G_OPTION_ARG_INT64, &steps, "Model training steps (default 3000; the paper: 20k at batch 512)", "N"},
    {"batch", 'b', 0, G_OPTION_ARG_INT, &batch, "Walks per step (default 16)", "N"},
    {"codes", 0, 0, G_OPTION_ARG_INT, &codes, "Codes per codebook (default 512; the paper: 10k)", "C"},
    {"codebook-steps", 0, 0, G_OPTION_ARG_INT64, &cb_steps, "Codebook training steps (default 1000)", "N"},
    {"seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Seed of the model's initialisation and batches (default 1)", "S"},
    {"threads", 0, 0, G_OPTION_ARG_INT, &threads, "Compute threads (default: all cores)", "N"},
    {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- train the TokFSM model and its codebooks (the codebook paper, section 5)",
                      "Two stages, each the ordinary command with the paper's settings:\n"
                      "  1. train --recipe: a 4-layer GPT-2 (4 heads, d_model 128, MLP 512) on DIR/train.txt, every\n"
                      "     window one walk starting at <|endoftext|>; the model goes to OUT.\n"
                      "  2. codebook train: attention + MLP codebooks at every layer, k = 1, k-means start, dead codes\n"
                      "     re-seeded, the model frozen, windows starting at <|endoftext|>; the set goes to OUT/codebooks.\n"
                      "Each stage prints its JSON line. Then: lmwb-batch tokfsm eval --model OUT --fsm DIR --codebooks OUT/codebooks\n"
                      "Example: lmwb-batch tokfsm make --out fsm && lmwb-batch tokfsm train --data fsm --out tokfsm-model",
                      TOKFSM_HELP, e, 0))
    return 2;
  if (!data) return lmwb_cli_usage_error("--data DIR (from tokfsm make) is required");
  if (!out) return lmwb_cli_usage_error("--out DIR is required");
  if (steps < 1 || cb_steps < 1 || batch < 1 || codes < 2)
    return lmwb_cli_usage_error("--steps, --codebook-steps and --batch must be positive and --codes at least 2");
  const char *need[] = {"fsm.json", "train.txt", "valid.txt", "tokenizer.json"};
  for (size_t i = 0; i < G_N_ELEMENTS(need); i++) {
    g_autofree char *p = g_build_filename(data, need[i], NULL);
    if (!g_file_test(p, G_FILE_TEST_IS_REGULAR)) {
      g_autofree char *msg = g_strdup_printf("--data %s has no %s: make it with `lmwb-batch tokfsm make --out DIR`", data, need[i]);
      return lmwb_cli_usage_error(msg);
    }
  }
  GError *err = NULL;
  g_autofree char *fsm_path = g_build_filename(data, "fsm.json", NULL);
  LmwbTokfsm *fsm = lmwb_tokfsm_load(fsm_path, &err);
  if (!fsm) return lmwb_cli_fail(err);
  int context = 1 + 2 * fsm->length; /* one walk per window, its end-of-text first */
  lmwb_tokfsm_free(fsm);
  g_autofree char *context_s = g_strdup_printf("%d", context);
  g_autofree char *recipe_text = tokfsm_recipe(data, out, context, steps, batch, seed, threads);
  g_autofree char *recipe = NULL;
  int fd = g_file_open_tmp("lmwb-tokfsm-XXXXXX.json", &recipe, &err);
  if (fd < 0) return lmwb_cli_fail(err);
  gboolean ok = write(fd, recipe_text, strlen(recipe_text)) == (ssize_t)strlen(recipe_text);
  close(fd);
  if (!ok) {
    g_unlink(recipe);
    return lmwb_cli_fail(g_error_new(G_FILE_ERROR, G_FILE_ERROR_IO, "cannot write the recipe %s", recipe));
  }
  char *train_argv[] = {"train", "--recipe", recipe, NULL};
  int rc = lmwb_cmd_train(3, train_argv);
  g_unlink(recipe);
  if (rc != 0) return rc;
  g_autofree char *cb_out = g_build_filename(out, "codebooks", NULL);
  g_autofree char *train_txt = g_build_filename(data, "train.txt", NULL);
  g_autofree char *codes_s = g_strdup_printf("%d", codes), *steps_s = g_strdup_printf("%" G_GINT64_FORMAT, cb_steps);
  g_autofree char *threads_s = g_strdup_printf("%d", threads);
  char *cb_argv[] = {"codebook train", "--model", out, "--file", train_txt, "--eos-windows", "--context", context_s,
                     "--sites", "attn,mlp", "--layers", "0-3", "--codes", codes_s, "--k", "1", "--kmeans",
                     "--dead-every", "100", "--lr", "1e-3", "--batch", "8", "--steps", steps_s, "--out", cb_out,
                     threads > 0 ? "--threads" : NULL, threads_s, NULL};
  int n = 0;
  while (cb_argv[n]) n++;
  return lmwb_cmd_codebook_train(n, cb_argv);
}
