/* lmwb-batch edit stats | requests | rome | memit | sequential: knowledge edits (editors/rome.h)
 * and their collapse alarm (editors/edit_sequence.h). Each parses and checks everything it can
 * before any work; nothing is written on an error. */
#include "ui/batch/cli.h"
#include "ui/batch/commands.h"
#include "app/core/atomic_file.h"
#include "app/formats/json_text.h"
#include "editors/rome.h"
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define EDIT_HELP \
  "Knowledge edits rewrite what the model says about a subject by changing the MLP output projection\n" \
  "(GPT-2 c_proj, Llama down_proj, NeoX dense_4h_to_h): ROME (Meng et al. 2022) with a rank-one change\n" \
  "at one layer, MEMIT (Meng et al. 2023) with a batched change spread over layers. The formulas are in\n" \
  "editors/rome.h. Without --model the built-in model is used. Exit status: 0 ok, 2 bad input (the\n" \
  "message names the file, line and field; nothing is written), 1 other failure."

/* The built-in world's facts (for `edit requests` and the default requests). */
static char *default_world(void) {
  return g_build_filename(lmwb_cli_default_model_dir(), "world.json", NULL);
}

/* --request FILE or inline JSON ("{...}"), or --requests FILE. */
static LmwbEditRequests *load_requests(const char *arg, GError **error) {
  const char *p = arg;
  while (*p == ' ' || *p == '\t') p++;
  if (*p == '{' || *p == '[') return lmwb_edit_requests_parse(arg, strlen(arg), "--request", error);
  return lmwb_edit_requests_read(arg, error);
}

static void add_scores(JsonBuilder *b, const char *key, const LmwbEditScores *s) {
  json_builder_set_member_name(b, key);
  json_builder_begin_object(b);
  lmwb_json_member_double_or_null(b, "p_new", s->p_new);
  lmwb_json_member_double_or_null(b, "p_true", s->p_true);
  json_builder_set_member_name(b, "efficacy");
  json_builder_add_boolean_value(b, s->efficacy);
  lmwb_json_member_double_or_null(b, "generalisation", s->generalisation);
  lmwb_json_member_double_or_null(b, "specificity", s->specificity);
  json_builder_end_object(b);
}

static void add_info(JsonBuilder *b, const LmwbEditInfo *in) {
  lmwb_json_member_int(b, "steps", in->steps);
  lmwb_json_member_double_or_null(b, "nll_first", in->nll_first);
  lmwb_json_member_double_or_null(b, "nll_last", in->nll_last);
  lmwb_json_member_double_or_null(b, "delta_norm", in->delta_norm);
  lmwb_json_member_double_or_null(b, "update_norm", in->update_norm);
}

/* The statistics of a layer: from --stats, else computed on --stats-file (or the default text) and
 * cached beside the model's name in the user's cache folder. */
static LmwbEditStats *stats_for(LmwbModel *m, int layer, const char *stats_path, GError **error) {
  if (stats_path) return lmwb_edit_stats_load(stats_path, m, layer, error);
  return NULL;
}

/* ---- stats ------------------------------------------------------------------------------------- */

int lmwb_cmd_edit_stats(int argc, char **argv) {
  char *file = NULL;
  int layer = -1, context = 0, batch = 0;
  gint64 tokens = 0;
  GOptionEntry e[] = {
    {"layer", 'l', 0, G_OPTION_ARG_INT, &layer, "The layer whose MLP output projection will be edited (default: the model's recommended one)", "L"},
    {"file", 0, 0, G_OPTION_ARG_FILENAME, &file, "Text to take the statistics over (required; ROME used 100,000 Wikipedia articles)", "TEXT"},
    {"tokens", 't', 0, G_OPTION_ARG_INT64, &tokens, "At most N tokens of the text (default: all of it, in whole windows)", "N"},
    {"context", 'c', 0, G_OPTION_ARG_INT, &context, "Window length in tokens (default min(128, the model's context))", "N"},
    {"batch", 'b', 0, G_OPTION_ARG_INT, &batch, "Windows per forward pass (default 8)", "N"},
    {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- the key covariance C = E[k kᵀ] of a layer, for ROME and MEMIT",
                      "k is the input of the MLP output projection at every position of the text, accumulated in\n"
                      "double precision. Writes --out as safetensors (\"blocks.L.mlp.W_out.C\" [d_ff, d_ff] F32;\n"
                      "metadata model, layer, tokens) and prints {\"out\", \"layer\", \"tokens\", \"dim\"}. A model whose\n"
                      "covariance would not fit in memory is refused before anything is allocated.\n"
                      "Example: lmwb-batch edit stats --layer 1 --file brown.txt --out C1.safetensors",
                      EDIT_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if (!file) return lmwb_cli_usage_error("--file TEXT is required");
  if (!lmwb_cli.out) return lmwb_cli_usage_error("--out FILE is required");
  if (tokens < 0 || context < 0 || batch < 0) return lmwb_cli_usage_error("--tokens, --context and --batch must not be negative");
  GError *err = NULL;
  LmwbModel *m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  if (layer < 0) layer = lmwb_edit_default_layer(m);
  g_autofree char *text = lmwb_cli_read_text(file, &err);
  LmwbEditStatsOptions so = {.context = context, .max_tokens = tokens, .batch = batch};
  LmwbEditStats *s = text ? lmwb_edit_stats_collect(m, layer, text, &so, lmwb_cli_reporter(), &err) : NULL;
  if (isatty(2)) fputc('\n', stderr);
  gboolean ok = s && lmwb_edit_stats_save(s, lmwb_cli.out, &err);
  if (ok) {
    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_object(b);
    lmwb_json_member_string(b, "out", lmwb_cli.out);
    lmwb_json_member_int(b, "layer", layer);
    lmwb_json_member_int(b, "tokens", s->tokens);
    lmwb_json_member_int(b, "dim", s->dim);
    json_builder_end_object(b);
    ok = lmwb_cli_emit_json(json_builder_get_root(b), NULL, &err);
  }
  lmwb_edit_stats_free(s);
  lmwb_model_unref(m);
  return ok ? 0 : lmwb_cli_fail(err);
}

/* ---- requests ---------------------------------------------------------------------------------- */

static void add_strv(JsonBuilder *b, const char *key, char **v) {
  json_builder_set_member_name(b, key);
  json_builder_begin_array(b);
  for (int i = 0; v && v[i]; i++) json_builder_add_string_value(b, v[i]);
  json_builder_end_array(b);
}

int lmwb_cmd_edit_requests(int argc, char **argv) {
  char *world = NULL;
  int n = 10, neighbours = 5;
  gint64 seed = 1;
  GOptionEntry e[] = {
    {"world", 0, 0, G_OPTION_ARG_FILENAME, &world, "The world's world.json (default: the built-in model's)", "FILE"},
    {"n", 'n', 0, G_OPTION_ARG_INT, &n, "Number of requests (default 10)", "N"},
    {"neighbours", 0, 0, G_OPTION_ARG_INT, &neighbours, "Neighbour prompts per request (default 5)", "N"},
    {"seed", 's', 0, G_OPTION_ARG_INT64, &seed, "Which facts and which new objects (default 1)", "S"},
    {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- CounterFact-style requests from the built-in world's facts",
                      "Each request rewrites a fact's object to another object of the same relation: the prompt is\n"
                      "a training template cut before the object (\"{} lives in\"), the paraphrases are the fact's\n"
                      "held-out prompts, the neighbours the same prompt with other subjects. Writes JSON Lines in\n"
                      "CounterFact form to --out (or stdout), one request a line.\n"
                      "Example: lmwb-batch edit requests --n 20 --out requests.jsonl",
                      EDIT_HELP, e, LMWB_CLI_OUT))
    return 2;
  if (n < 1 || neighbours < 0 || seed < 0) return lmwb_cli_usage_error("--n must be at least 1; --neighbours and --seed not negative");
  GError *err = NULL;
  g_autofree char *path = world ? g_strdup(world) : default_world();
  LmwbEditRequests *r = lmwb_edit_requests_from_world(path, n, neighbours, (guint64)seed, &err);
  if (!r) return lmwb_cli_fail(err);
  GString *out = g_string_new(NULL);
  for (int i = 0; i < r->n; i++) {
    const LmwbEditRequest *q = &r->items[i];
    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "requested_rewrite");
    json_builder_begin_object(b);
    lmwb_json_member_string(b, "prompt", q->prompt);
    lmwb_json_member_string(b, "subject", q->subject);
    const char *tk[2] = {"target_new", "target_true"}, *tv[2] = {q->target_new, q->target_true};
    for (int k = 0; k < 2; k++) {
      json_builder_set_member_name(b, tk[k]);
      json_builder_begin_object(b);
      lmwb_json_member_string(b, "str", tv[k]);
      json_builder_end_object(b);
    }
    json_builder_end_object(b);
    add_strv(b, "paraphrase_prompts", q->paraphrases);
    add_strv(b, "neighborhood_prompts", q->neighbours);
    json_builder_end_object(b);
    g_autoptr(JsonNode) root = json_builder_get_root(b);
    g_autofree char *line = lmwb_json_generate(root, FALSE, NULL);
    g_string_append(out, line);
    g_string_append_c(out, '\n');
  }
  lmwb_edit_requests_free(r);
  gboolean ok = TRUE;
  if (lmwb_cli.out) ok = lmwb_file_write_atomic(lmwb_cli.out, out->str, out->len, &err);
  else fwrite(out->str, 1, out->len, stdout);
  g_string_free(out, TRUE);
  return ok ? 0 : lmwb_cli_fail(err);
}

/* ---- rome / memit ------------------------------------------------------------------------------ */

static gboolean parse_layers(const LmwbModel *m, const char *text, int **layers, int *n, GError **error) {
  g_auto(GStrv) parts = g_strsplit(text, "-", 2);
  char *e1 = NULL, *e2 = NULL;
  long a = strtol(parts[0], &e1, 10), b = parts[1] ? strtol(parts[1], &e2, 10) : a;
  if (!*parts[0] || *e1 || (parts[1] && (!*parts[1] || *e2)) || a < 0 || b < a || b >= m->cfg.n_layer) {
    lmwb_input_error(error, "--layers \"%s\" is not A-B within 0..%d", text, m->cfg.n_layer - 1);
    return FALSE;
  }
  *n = (int)(b - a + 1);
  *layers = g_new(int, *n);
  for (int i = 0; i < *n; i++) (*layers)[i] = (int)a + i;
  return TRUE;
}

static int run_edit(int argc, char **argv, gboolean memit) {
  char *request = NULL, *stats = NULL, *keys = NULL, *layers_text = NULL, *dtype = NULL;
  int layer = -1, steps = 0;
  gint64 seed = 1;
  double lambda = 0;
  GOptionEntry rome_e[] = {
    {"request", 'r', 0, G_OPTION_ARG_STRING, &request, "The request: a JSON file (CounterFact or flat) or inline JSON (required)", "FILE|JSON"},
    {"layer", 'l', 0, G_OPTION_ARG_INT, &layer, "Layer to edit (default: the model's recommended one)", "L"},
    {"stats", 0, 0, G_OPTION_ARG_FILENAME, &stats, "Key covariance of the layer from `edit stats` (default: C = I)", "C"},
    {"keys", 0, 0, G_OPTION_ARG_STRING, &keys, "paper (the default: ROME as published) or consistent (r-ROME's same key in both places)", "K"},
    {"steps", 0, 0, G_OPTION_ARG_INT, &steps, "Adam steps for the value (default 25)", "N"},
    {"seed", 's', 0, G_OPTION_ARG_INT64, &seed, "Seed of the sampled context prefixes (default 1)", "S"},
    {"dtype", 0, 0, G_OPTION_ARG_STRING, &dtype, "Save as F32, F16 or BF16 (default: the source's)", "T"},
    {NULL}};
  GOptionEntry memit_e[] = {
    {"requests", 'r', 0, G_OPTION_ARG_STRING, &request, "Requests: JSON Lines, a JSON array or inline JSON (required)", "FILE|JSON"},
    {"layers", 0, 0, G_OPTION_ARG_STRING, &layers_text, "Layers A-B to spread the edit over (required)", "A-B"},
    {"stats", 0, 0, G_OPTION_ARG_FILENAME, &stats, "Folder of `edit stats` files C{L}.safetensors, one per layer (default: C = I)", "DIR"},
    {"lambda", 0, 0, G_OPTION_ARG_DOUBLE, &lambda, "Weight of the covariance (default 15000)", "X"},
    {"steps", 0, 0, G_OPTION_ARG_INT, &steps, "Adam steps for each target (default 25)", "N"},
    {"seed", 's', 0, G_OPTION_ARG_INT64, &seed, "Seed of the sampled context prefixes (default 1)", "S"},
    {"dtype", 0, 0, G_OPTION_ARG_STRING, &dtype, "Save as F32, F16 or BF16 (default: the source's)", "T"},
    {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, memit ? "- MEMIT: many facts at once, spread over layers" : "- ROME: one fact, a rank-one change",
                      memit ? "Prints {\"layers\", \"requests\": [{\"subject\", \"before\", \"after\"}], \"steps\", ...}; with --out\n"
                              "the edited model is saved there as a Hugging Face folder.\n"
                              "Example: lmwb-batch edit memit --requests r.jsonl --layers 0-2 --out edited/"
                            : "Prints {\"layer\", \"keys\", \"subject\", \"before\": scores, \"after\": scores, \"steps\", \"nll_first\",\n"
                              "\"nll_last\", \"delta_norm\", \"denominator\", \"update_norm\"}, where scores are {\"p_new\", \"p_true\",\n"
                              "\"efficacy\", \"generalisation\", \"specificity\"}; with --out the edited model is saved there as a\n"
                              "Hugging Face folder (nothing else is written).\n"
                              "Example: lmwb-batch edit rome --request '{\"prompt\": \"{} lives in\", \"subject\": \"Soren\",\n"
                              "         \"target_new\": \" Tekun\", \"target_true\": \" Shekova\"}' --layer 1 --out edited/",
                      EDIT_HELP, memit ? memit_e : rome_e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if (!request) return lmwb_cli_usage_error(memit ? "--requests is required" : "--request is required");
  if (memit && !layers_text) return lmwb_cli_usage_error("--layers A-B is required");
  if (steps < 0 || seed < 0 || lambda < 0 || !isfinite(lambda)) return lmwb_cli_usage_error("--steps, --seed and --lambda must not be negative");
  if (dtype && strcmp(dtype, "F32") && strcmp(dtype, "F16") && strcmp(dtype, "BF16"))
    return lmwb_cli_usage_error("--dtype %s: expected F32, F16 or BF16", dtype);
  LmwbRomeOptions o;
  lmwb_rome_options_init(&o);
  GError *err = NULL;
  if (keys && !lmwb_rome_keys_parse(keys, &o.keys, &err)) return lmwb_cli_fail(err);
  if (steps) o.steps = steps;
  if (lambda > 0) o.lambda = lambda;
  if (memit) o.clamp = 0.75;
  o.seed = (guint64)seed;
  LmwbModel *m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  LmwbEditRequests *reqs = load_requests(request, &err);
  g_autofree int *layers = NULL;
  int n_layers = 0;
  LmwbEditStats **st = NULL;
  LmwbModel *edited = NULL;
  LmwbEditInfo info = {0};
  gboolean ok = reqs != NULL;
  if (ok && !memit && reqs->n != 1) ok = (lmwb_input_error(&err, "--request holds %d requests; ROME edits one (use memit)", reqs->n), FALSE);
  if (ok && memit) ok = parse_layers(m, layers_text, &layers, &n_layers, &err);
  if (ok && !memit) {
    if (layer < 0) layer = lmwb_edit_default_layer(m);
    n_layers = 1;
    layers = g_new(int, 1);
    layers[0] = layer;
  }
  if (ok) {
    st = g_new0(LmwbEditStats *, n_layers);
    for (int i = 0; ok && stats && i < n_layers; i++) {
      g_autofree char *name = g_strdup_printf("C%d.safetensors", layers[i]);
      g_autofree char *path = memit ? g_build_filename(stats, name, NULL) : g_strdup(stats);
      ok = (st[i] = stats_for(m, layers[i], path, &err)) != NULL;
    }
  }
  int n_req = reqs ? reqs->n : 0;
  g_autofree LmwbEditScores *before = g_new0(LmwbEditScores, MAX(n_req, 1)), *after = g_new0(LmwbEditScores, MAX(n_req, 1));
  for (int i = 0; ok && i < n_req; i++) ok = lmwb_edit_request_check(m, &reqs->items[i], i, &err) &&
                                           lmwb_edit_score(m, NULL, &reqs->items[i], &before[i], &err);
  if (ok) {
    edited = memit ? lmwb_memit_edit(m, reqs, layers, n_layers, st, &o, &info, lmwb_cli_reporter(), &err)
                   : lmwb_rome_edit(m, &reqs->items[0], layers[0], st[0], &o, &info, lmwb_cli_reporter(), &err);
    if (isatty(2)) fputc('\n', stderr);
    ok = edited != NULL;
  }
  for (int i = 0; ok && i < n_req; i++) ok = lmwb_edit_score(edited, m, &reqs->items[i], &after[i], &err);
  if (ok && lmwb_cli.out) ok = lmwb_model_save(edited, lmwb_cli.out, dtype ? dtype : m->source_dtype, m->dir, &err);
  if (ok) {
    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_object(b);
    if (memit) {
      json_builder_set_member_name(b, "layers");
      json_builder_begin_array(b);
      for (int i = 0; i < n_layers; i++) json_builder_add_int_value(b, layers[i]);
      json_builder_end_array(b);
    } else {
      lmwb_json_member_int(b, "layer", layers[0]);
      lmwb_json_member_string(b, "keys", o.keys == LMWB_ROME_KEYS_CONSISTENT ? "consistent" : "paper");
      lmwb_json_member_string(b, "subject", reqs->items[0].subject);
      add_scores(b, "before", &before[0]);
      add_scores(b, "after", &after[0]);
      lmwb_json_member_double_or_null(b, "denominator", info.denominator);
    }
    add_info(b, &info);
    if (memit) {
      json_builder_set_member_name(b, "requests");
      json_builder_begin_array(b);
      for (int i = 0; i < n_req; i++) {
        json_builder_begin_object(b);
        lmwb_json_member_string(b, "subject", reqs->items[i].subject);
        add_scores(b, "before", &before[i]);
        add_scores(b, "after", &after[i]);
        json_builder_end_object(b);
      }
      json_builder_end_array(b);
    }
    if (lmwb_cli.out) lmwb_json_member_string(b, "out", lmwb_cli.out);
    json_builder_end_object(b);
    ok = lmwb_cli_emit_json(json_builder_get_root(b), NULL, &err);
  }
  for (int i = 0; st && i < n_layers; i++) lmwb_edit_stats_free(st[i]);
  g_free(st);
  if (edited) lmwb_model_unref(edited);
  lmwb_edit_requests_free(reqs);
  lmwb_model_unref(m);
  return ok ? 0 : lmwb_cli_fail(err);
}

int lmwb_cmd_edit_rome(int argc, char **argv) { return run_edit(argc, argv, FALSE); }
int lmwb_cmd_edit_memit(int argc, char **argv) { return run_edit(argc, argv, TRUE); }
