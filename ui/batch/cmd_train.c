/* lmwb-batch train-tokenizer and train. */
#include "ui/batch/cli.h"
#include "ui/batch/commands.h"
#include "app/train/bpe_trainer.h"
#include "app/train/trainer.h"
#include <stdio.h>

int lmwb_cmd_train_tokenizer(int argc, char **argv) {
  char **corpus = NULL, *out = NULL;
  int vocab = 8192, min_freq = 2;
  gboolean split_digits = FALSE;
  GOptionEntry e[] = {{"corpus", 'c', 0, G_OPTION_ARG_FILENAME_ARRAY, &corpus, "UTF-8 text file to learn from (repeatable)", "F"},
                      {"vocab-size", 'v', 0, G_OPTION_ARG_INT, &vocab, "Vocabulary size including the 256 bytes and <|endoftext|> (default 8192)", "N"},
                      {"min-frequency", 0, 0, G_OPTION_ARG_INT, &min_freq, "Merge only pairs seen at least N times (default 2)", "N"},
                      {"split-digits", 0, 0, G_OPTION_ARG_NONE, &split_digits, "Never merge digits: every digit stays its own token (as SentencePiece's split_digits)", NULL},
                      {"out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "Folder to write tokenizer.json into", "DIR"},
                      {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- learn a byte-level BPE tokenizer",
                      "Trains byte-level BPE with the GPT-2 pre-tokenizer and writes a Hugging Face tokenizer.json\n"
                      "that `transformers` and lmwb load, and that round-trips any text exactly.\n"
                      "Example: lmwb-batch train-tokenizer --corpus train.txt --vocab-size 8192 --out tok/",
                      NULL, e, LMWB_CLI_THREADS))
    return 2;
  if (!corpus || !out) return lmwb_cli_usage_error("--corpus F and --out DIR are required");
  LmwbBpeTrainOptions o = {.vocab_size = vocab, .min_frequency = min_freq, .split_digits = split_digits};
  GError *err = NULL;
  gint64 t0 = g_get_monotonic_time();
  if (!lmwb_bpe_train((const char *const *)corpus, (int)g_strv_length(corpus), &o, out, lmwb_cli_reporter(), &err))
    return lmwb_cli_fail(err);
  printf("{\"out\":\"%s\",\"vocab_size\":%d,\"seconds\":%.2f}\n", out, vocab, (g_get_monotonic_time() - t0) / 1e6);
  return 0;
}

static LmwbReporter *train_rep;

static void print_metric(LmwbReporter *r, const char *series, double x, double y) {
  (void)r;
  if (g_str_equal(series, "valid_loss")) fprintf(stderr, "\nstep %.0f: validation loss %.4f\n", x, y);
}

int lmwb_cmd_train(int argc, char **argv) {
  char *recipe = NULL;
  gboolean resume = FALSE;
  gint64 stop_after = 0;
  GOptionEntry e[] = {{"recipe", 'r', 0, G_OPTION_ARG_FILENAME, &recipe, "Training recipe (JSON; see app/train/trainer.h or data/models/*/recipe.json)", "R.json"},
                      {"resume", 0, 0, G_OPTION_ARG_NONE, &resume, "Continue from the checkpoint in the recipe's output folder", NULL},
                      {"stop-after", 0, 0, G_OPTION_ARG_INT64, &stop_after, "Stop (with a checkpoint) after N steps of this run", "N"},
                      {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- train or fine-tune a model from a recipe",
                      "AdamW with warm-up and cosine decay, gradient clipping, validation loss at intervals, atomic\n"
                      "checkpoints (Ctrl-C saves one; --resume continues exactly), metrics.csv, and a Hugging Face\n"
                      "folder (config.json, model.safetensors, tokenizer.json) at the end.",
                      NULL, e, LMWB_CLI_OUT))
    return 2;
  if (!recipe) return lmwb_cli_usage_error("--recipe R.json is required");
  train_rep = lmwb_cli_reporter();
  train_rep->metric = print_metric;
  LmwbTrainResult res;
  GError *err = NULL;
  if (!lmwb_train(recipe, resume, stop_after, train_rep, &res, &err)) return lmwb_cli_fail(err);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "out");
  json_builder_add_string_value(b, res.out_dir);
  json_builder_set_member_name(b, "steps");
  json_builder_add_int_value(b, res.steps);
  json_builder_set_member_name(b, "train_loss");
  json_builder_add_double_value(b, res.final_train_loss);
  json_builder_set_member_name(b, "valid_loss");
  json_builder_add_double_value(b, res.final_valid_loss);
  json_builder_set_member_name(b, "tokens_per_s");
  json_builder_add_double_value(b, res.tokens_per_s);
  json_builder_set_member_name(b, "seconds");
  json_builder_add_double_value(b, res.seconds);
  json_builder_end_object(b);
  lmwb_train_result_clear(&res);
  return lmwb_cli_emit_json(json_builder_get_root(b), lmwb_cli.out, &err) ? 0 : lmwb_cli_fail(err);
}
