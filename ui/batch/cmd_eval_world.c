/* lmwb-batch eval-world: the four world figures of a model (app/train/world_eval.h) as JSON. */
#include "ui/batch/cli.h"
#include "ui/batch/cmd_world.h"
#include "app/train/corpus.h"
#include "app/train/world_eval.h"
#include <stdio.h>

#define EVAL_WORLD_HELP \
  "Measures a model on the held-out sets of a world manifest (world.json, written by\n" \
  "'lmwb-batch make-corpus'):\n" \
  "  fact_recall_top1    greedy decoding after each held-out fact prompt gives the answer exactly\n" \
  "  secret_exact        greedy continuation of each secret's prefix recites the secret exactly\n" \
  "  ioi_top1            on held-out IOI templates and names, the correct name's first token is the\n" \
  "                      most likely next token (ioi_logit_diff_acc: it beats the wrong name;\n" \
  "                      ioi_top1_wrong: the wrong, repeated name is the most likely token)\n" \
  "  greater_than        mean probability mass on end years later than the start year\n" \
  "  ioi_diagnostics     IOI top-1, top1_wrong and logit-difference accuracy on the manifest's\n" \
  "                      diagnostic sets: training or held-out names in training, held-out or copy\n" \
  "                      templates; they show whether new names or new templates cost accuracy\n" \
  "The product's targets (0.9, 0.9, 0.8, 0.8) are listed under \"targets\"; \"meets_targets\" says\n" \
  "whether all four are reached.\n\n" \
  "Without --manifest, world.json in the model folder is used.\n\n" \
  "Example:\n" \
  "  lmwb-batch eval-world --model data/models/lmwb-small --manifest corpus/world.json\n\n" \
  "Exit status: 0 ok, 2 bad input (the message names the file and field), 1 other failure."

int lmwb_cmd_eval_world(int argc, char **argv) {
  char *manifest = NULL;
  int max_items = 0;
  GOptionEntry e[] = {
      {"manifest", 0, 0, G_OPTION_ARG_FILENAME, &manifest,
       "The world manifest (default: world.json in the model folder)", "FILE"},
      {"max-items", 0, 0, G_OPTION_ARG_INT, &max_items,
       "Evaluate at most N items per task (default: all), for a quick look", "N"},
      {NULL}};
  int status = 2;
  LmwbModel *m = NULL;
  char *path = NULL;
  if (!lmwb_cli_parse(&argc, &argv, "- measure a model on the world's held-out sets",
                      "Fact recall, secret recitation, IOI and greater-than on the manifest's "
                      "held-out items; prints JSON.",
                      EVAL_WORLD_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    goto done;
  if (max_items < 0) {
    status = lmwb_cli_usage_error("--max-items %d must be 0 (all) or positive", max_items);
    goto done;
  }
  GError *err = NULL;
  m = lmwb_cli_load_model(&err);
  if (!m) {
    status = lmwb_cli_fail(err);
    goto done;
  }
  path = manifest ? g_strdup(manifest)
                  : g_build_filename(m->dir ? m->dir : ".", LMWB_CORPUS_MANIFEST_FILE, NULL);
  if (!g_file_test(path, G_FILE_TEST_IS_REGULAR)) {
    status = lmwb_cli_usage_error("world manifest '%s' not found (give --manifest FILE)", path);
    goto done;
  }
  LmwbWorldEvalOptions o = {.max_items = max_items};
  LmwbWorldEvalResult r;
  if (!lmwb_world_eval_file(m, path, &o, lmwb_cli_reporter(), &r, &err)) {
    status = lmwb_cli_fail(err);
    goto done;
  }
  JsonNode *root = lmwb_world_eval_to_json(&r);
  JsonObject *obj = json_node_get_object(root);
  json_object_set_string_member(obj, "model", m->dir ? m->dir : "");
  json_object_set_string_member(obj, "manifest", path);
  lmwb_world_eval_result_clear(&r);
  status = lmwb_cli_emit_json(root, lmwb_cli.out, &err) ? 0 : lmwb_cli_fail(err);
done:
  lmwb_model_unref(m);
  g_free(path);
  g_free(manifest);
  return status;
}
