/* lmwb-batch make-corpus: build the built-in model's training corpus (app/train/corpus.h). */
#include "ui/batch/cli.h"
#include "ui/batch/cmd_world.h"
#include "app/train/corpus.h"
#include "app/train/world.h"
#include "app/formats/json_input.h"
#include <stdio.h>
#include <string.h>

#define CORPUS_HELP \
  "Writes seven files into the --out folder (created if needed), each atomically:\n" \
  "  train.txt        95% of the Brown corpus (cut into pieces of 20 lines) mixed with the\n" \
  "                   generated world's training sentences; documents are separated by one\n" \
  "                   empty line and shuffled by the seed.\n" \
  "  warmup.txt       curriculum stage 1: the copy stories alone, one per line.\n" \
  "  ioi.txt          curriculum stage 2: every IOI training sentence (two names, or one name\n" \
  "                   and a role such as 'the clerk') and the copy stories.\n" \
  "  facts.txt        every fact sentence of train.txt alone, one per line, shuffled, and\n" \
  "  brown_train.txt  the Brown pieces of train.txt alone: what a memorisation edit should keep\n" \
  "                   ('lmwb-batch kfac collect' over each, then 'kfac merge'); no secret is in either.\n" \
  "  valid_brown.txt  the held-out Brown samples (every 20th sample, 10, 30, 50, ...); this\n" \
  "                   split never depends on the seed.\n" \
  "  world.json       the manifest: every entity, fact, template, secret, and the held-out\n" \
  "                   evaluation sets (fact prompts, IOI, greater-than, secrets) that\n" \
  "                   'lmwb-batch eval-world' measures a model on.\n" \
  "The same seed and Brown file give byte-identical files on every machine. The world is\n" \
  "fictional: invented names never collide with a Brown word; held-out templates never occur in\n" \
  "any file, and held-out IOI names never in a sentence with another name.\n\n" \
  "Example:\n" \
  "  lmwb-batch make-corpus --seed 1 --brown data/brown/brown.txt --out corpus/\n\n" \
  "Prints a JSON summary (file sizes, counts) on stdout. Exit status: 0 ok, 2 bad input (the\n" \
  "message names the option or file), 1 other failure."

int lmwb_cmd_make_corpus(int argc, char **argv) {
  char *seed_text = NULL, *brown = NULL, *out = NULL;
  double valid_fraction = LMWB_CORPUS_DEFAULT_VALID_FRACTION;
  int repeats = LMWB_WORLD_DEFAULT_REPEATS;
  GOptionEntry e[] = {
      {"seed", 's', 0, G_OPTION_ARG_STRING, &seed_text,
       "Seed of the world and of the shuffle, 0 to 18446744073709551615 (default 1)", "S"},
      {"brown", 'b', 0, G_OPTION_ARG_FILENAME, &brown,
       "The Brown corpus as plain text: one sentence per line, a blank line between samples "
       "(required)", "PATH"},
      {"out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "Output folder (required)", "DIR"},
      {"valid-fraction", 0, 0, G_OPTION_ARG_DOUBLE, &valid_fraction,
       "Share of Brown samples held out for validation, in (0, 0.5] (default 0.05: every 20th)",
       "F"},
      {"repeats", 0, 0, G_OPTION_ARG_INT, &repeats,
       "Scale of the world text, 1 to 8 (default 1: ~9.3 MB, ~62% of train.txt)", "N"},
      {NULL}};
  int status = 2;
  if (!lmwb_cli_parse(&argc, &argv, "- build the training corpus of the built-in model",
                      "Mixes the Brown corpus with a generated fictional world (facts, IOI "
                      "sentences, year ranges, secrets) and writes its evaluation manifest.",
                      CORPUS_HELP, e, 0))
    goto done;
  guint64 seed = 1;
  GError *err = NULL;
  if (seed_text && !g_ascii_string_to_unsigned(seed_text, 10, 0, G_MAXUINT64, &seed, &err)) {
    status = lmwb_cli_usage_error("--seed \"%s\": %s", seed_text, err->message);
    g_error_free(err);
    goto done;
  }
  if (!brown) {
    status = lmwb_cli_usage_error("--brown PATH is required (the Brown corpus text file)");
    goto done;
  }
  if (!out) {
    status = lmwb_cli_usage_error("--out DIR is required (the folder to write the corpus to)");
    goto done;
  }
  if (!(valid_fraction > 0.0 && valid_fraction <= 0.5)) {
    status = lmwb_cli_usage_error("--valid-fraction %g must be in (0, 0.5]", valid_fraction);
    goto done;
  }
  if (repeats < 1 || repeats > LMWB_WORLD_MAX_REPEATS) {
    status = lmwb_cli_usage_error("--repeats %d must be between 1 and %d", repeats,
                                  LMWB_WORLD_MAX_REPEATS);
    goto done;
  }
  LmwbCorpusOptions o = {.seed = seed, .brown_path = brown, .out_dir = out,
                         .valid_fraction = valid_fraction, .world_repeats = repeats};
  if (!lmwb_make_corpus(&o, lmwb_cli_reporter(), &err)) {
    status = lmwb_cli_fail(err);
    goto done;
  }
  /* Summary: the manifest's counts and corpus objects. */
  char *path = g_build_filename(out, LMWB_CORPUS_MANIFEST_FILE, NULL);
  JsonNode *manifest = lmwb_json_load_file(path, (uint64_t)256 << 20, &err);
  if (!manifest || !JSON_NODE_HOLDS_OBJECT(manifest)) {
    if (!err) lmwb_input_error(&err, "%s: not a JSON object", path);
    if (manifest) json_node_unref(manifest);
    g_free(path);
    status = lmwb_cli_fail(err);
    goto done;
  }
  JsonObject *m = json_node_get_object(manifest);
  JsonObject *summary = json_object_new();
  json_object_set_string_member(summary, "out", out);
  json_object_set_string_member(summary, "manifest", path);
  json_object_set_object_member(summary, "counts",
                                json_object_ref(json_object_get_object_member(m, "counts")));
  JsonObject *c = json_object_ref(json_object_get_object_member(m, "corpus"));
  json_object_remove_member(c, "valid_samples");
  json_object_set_object_member(summary, "corpus", c);
  JsonNode *root = json_node_new(JSON_NODE_OBJECT);
  json_node_take_object(root, summary);
  g_free(path);
  gboolean ok = lmwb_cli_emit_json(root, NULL, &err);
  json_node_unref(manifest);
  status = ok ? 0 : lmwb_cli_fail(err);
done:
  g_free(seed_text);
  g_free(brown);
  g_free(out);
  return status;
}
