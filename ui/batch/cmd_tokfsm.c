/* lmwb-batch tokfsm make | eval: the TokFSM language of the codebook-features paper (analysis/tokfsm.h)
 * and the paper's measurements on a model trained on it (analysis/tokfsm_eval.h). Training is the
 * existing `train --recipe` and `codebook train --finetune` (data/models/tokfsm/rebuild.sh). */
#include "ui/batch/cli.h"
#include "ui/batch/commands.h"
#include "analysis/tokfsm.h"
#include "app/core/atomic_file.h"
#include "app/core/inputs.h"
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define TOKFSM_HELP \
  "TokFSM (Tamkin, Taufeeque & Goodman 2023, section 5): a machine of N states (2-digit strings), each with\n" \
  "E random successors of probability 1/E; sequences are random walks written as digits after <|endoftext|>.\n" \
  "Exit status: 0 ok, 2 bad input (the message names the option, file or field), 1 other failure."

/* Writes sequences [0, n) of a split as text: per sequence "<|endoftext|>" and its digits; one more
 * "<|endoftext|>" at the end (the last sequence's EOS). */
static gboolean write_split(const LmwbTokfsm *f, LmwbTokfsmSplit split, gint64 n, const char *path, LmwbReporter *rep,
                            double p0, double p1, GError **error) {
  LmwbAtomicFile *af = lmwb_atomic_file_begin(path, error);
  if (!af) return FALSE;
  size_t T = 1 + 2 * (size_t)f->length;
  g_autofree int32_t *seq = g_new(int32_t, T);
  GString *s = g_string_sized_new(1 << 16);
  for (gint64 i = 0; i < n; i++) {
    lmwb_tokfsm_sequence(f, split, i, seq);
    g_string_append(s, "<|endoftext|>");
    for (size_t t = 1; t < T; t++) g_string_append_c(s, (char)('0' + seq[t]));
    if (i + 1 == n) g_string_append(s, "<|endoftext|>");
    if (s->len > (1 << 16) || i + 1 == n) {
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

int lmwb_cmd_tokfsm_make(int argc, char **argv) {
  int states = LMWB_TOKFSM_DEFAULT_STATES, edges = LMWB_TOKFSM_DEFAULT_EDGES, length = LMWB_TOKFSM_DEFAULT_LENGTH;
  gint64 seed = 1, sequences = 0, valid = -1;
  char *out = NULL;
  GOptionEntry e[] = {
    {"states", 0, 0, G_OPTION_ARG_INT, &states, "States, at most 100 (default 100, the paper's)", "N"},
    {"edges", 0, 0, G_OPTION_ARG_INT, &edges, "Random successors per state, at most --states (default 10, the paper's)", "E"},
    {"length", 0, 0, G_OPTION_ARG_INT, &length, "States per sequence (default 64: 128 digit tokens, the paper's)", "L"},
    {"seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Seed of the machine and the walks (default 1)", "S"},
    {"sequences", 'n', 0, G_OPTION_ARG_INT64, &sequences, "Training sequences (required)", "N"},
    {"valid", 0, 0, G_OPTION_ARG_INT64, &valid, "Held-out sequences (default max(1, N/10))", "N"},
    {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- generate the TokFSM language",
                      "Writes into --out DIR (created; files replaced atomically):\n"
                      "  fsm.json        {\"states\", \"edges\", \"seed\", \"length\", \"next\": [[successors of state 0], ...]}\n"
                      "  train.txt       the training sequences, each \"<|endoftext|>\" then its digits\n"
                      "  valid.txt       the held-out sequences (other walks on the same machine)\n"
                      "  tokenizer.json  the 11-token vocabulary (\"0\"..\"9\" = ids 0..9, <|endoftext|> = 10)\n"
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
  g_autofree char *tok = NULL, *fj = NULL;
  g_autoptr(JsonBuilder) b = NULL;
  size_t len = 0;
  const char *outs[] = {p_fsm, p_train, p_valid, p_tok, NULL};
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
  if (!write_split(f, LMWB_TOKFSM_TRAIN, sequences, p_train, rep, 0, 0.9, &err)) goto fail;
  if (!write_split(f, LMWB_TOKFSM_HELDOUT, valid, p_valid, rep, 0.9, 1, &err)) goto fail;
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
  lmwb_json_member_int(b, "tokens", (sequences + valid) * (1 + 2 * (gint64)length) + 2);
  json_builder_end_object(b);
  if (!lmwb_cli_emit_json(json_builder_get_root(b), NULL, &err)) goto fail;
  goto done;
fail:
  status = lmwb_cli_fail(err);
done:
  lmwb_tokfsm_free(f);
  return status;
}
