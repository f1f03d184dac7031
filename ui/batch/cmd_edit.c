/* lmwb-batch edit stats | requests | rome | memit | sequential: knowledge edits (editors/rome.h)
 * and their collapse alarm (editors/edit_sequence.h). Each parses and checks everything it can
 * before any work; nothing is written on an error. */
#include "ui/batch/cli.h"
#include "ui/batch/commands.h"
#include "app/core/atomic_file.h"
#include "app/core/inputs.h"
#include "app/formats/json_input.h"
#include "app/formats/json_text.h"
#include "editors/edit_sequence.h"
#include "ui/plot/plot.h"
#include <glib/gstdio.h>
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

/* How the covariances are found when --stats is not given (stats_for). */
#define STATS_OPTIONS \
  {"stats-file", 0, 0, G_OPTION_ARG_FILENAME, &stats_file, "Text to compute the covariance on when --stats is not given (default: the Brown corpus); cached", "TEXT"}, \
  {"stats-tokens", 0, 0, G_OPTION_ARG_INT64, &stats_tokens, "Tokens of it to use (default 100000)", "N"}, \
  {"no-stats", 0, 0, G_OPTION_ARG_NONE, &no_stats, "Use C = I (no covariance, as EasyEdit's mom2_adjustment: false)", NULL}

/* The world's facts beside the model (the built-in model's world.json). */
static char *default_world(void) {
  return g_build_filename(lmwb_cli.model ? lmwb_cli.model : lmwb_cli_default_model_dir(), "world.json", NULL);
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
  lmwb_json_member_double_or_null(b, "fluency", s->fluency);
  json_builder_end_object(b);
}

static void add_info(JsonBuilder *b, const LmwbEditInfo *in) {
  lmwb_json_member_int(b, "steps", in->steps);
  lmwb_json_member_double_or_null(b, "nll_first", in->nll_first);
  lmwb_json_member_double_or_null(b, "nll_last", in->nll_last);
  lmwb_json_member_double_or_null(b, "delta_norm", in->delta_norm);
  lmwb_json_member_double_or_null(b, "update_norm", in->update_norm);
}

/* Where computed statistics are cached: one file per (model weights, layer, text, tokens). */
static char *stats_cache_path(const LmwbModel *m, int layer, const char *text_path, gint64 tokens) {
  GChecksum *h = g_checksum_new(G_CHECKSUM_SHA256);
  const char *paths[2] = {m->dir ? m->dir : "", text_path};
  for (int i = 0; i < 2; i++) {
    g_autofree char *abs = g_canonicalize_filename(paths[i], NULL);
    g_checksum_update(h, (const guchar *)abs, -1);
    GStatBuf st;
    g_autofree char *w = i == 0 ? g_build_filename(abs, "model.safetensors", NULL) : g_strdup(abs);
    if (g_stat(w, &st) == 0) {
      g_autofree char *stamp = g_strdup_printf("|%lld|%lld|", (long long)st.st_size, (long long)st.st_mtime);
      g_checksum_update(h, (const guchar *)stamp, -1);
    }
  }
  g_autofree char *tail = g_strdup_printf("|%d|%" G_GINT64_FORMAT, layer, tokens);
  g_checksum_update(h, (const guchar *)tail, -1);
  g_autofree char *name = g_strdup_printf("C%d-%.16s.safetensors", layer, g_checksum_get_string(h));
  g_checksum_free(h);
  return g_build_filename(g_get_user_cache_dir(), "lmwb", "edit-stats", name, NULL);
}

/* The statistics of a layer: --stats FILE (or a folder of C{L}.safetensors for several layers),
 * none with --no-stats (C = I), else computed on --stats-file (default: the Brown corpus) and
 * cached in the user's cache folder. */
static LmwbEditStats *stats_for(LmwbModel *m, int layer, const char *stats, const char *text_path,
                                gint64 tokens, GError **error) {
  if (stats) return lmwb_edit_stats_load_for(stats, m, layer, error);
  g_autofree char *brown = text_path ? NULL : lmwb_cli_default_brown(error);
  const char *file = text_path ? text_path : brown;
  if (!file) return NULL;
  g_autofree char *cache = stats_cache_path(m, layer, file, tokens);
  if (g_file_test(cache, G_FILE_TEST_IS_REGULAR)) {
    LmwbEditStats *s = lmwb_edit_stats_load(cache, m, layer, NULL);
    if (s) return s;
  }
  g_autofree char *text = lmwb_cli_read_text(file, error);
  LmwbEditStatsOptions so = {.max_tokens = tokens};
  LmwbEditStats *s = text ? lmwb_edit_stats_collect(m, layer, text, &so, lmwb_cli_reporter(), error) : NULL;
  if (s) {
    g_autofree char *dir = g_path_get_dirname(cache);
    GError *ignored = NULL;
    if (g_mkdir_with_parents(dir, 0755) != 0 || !lmwb_edit_stats_save(s, cache, &ignored)) g_clear_error(&ignored);
  }
  return s;
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
    {"world", 0, 0, G_OPTION_ARG_FILENAME, &world, "The world's world.json (default: the one in the model's folder)", "FILE"},
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
                      EDIT_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_OUT))
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

/* --layers A-B, named as the option in its error. */
static gboolean parse_layers(const LmwbModel *m, const char *text, int **layers, int *n, GError **error) {
  if (lmwb_edit_layers_parse(m, text, layers, n, error)) return TRUE;
  g_prefix_error(error, "--");
  return FALSE;
}

static int run_edit(int argc, char **argv, gboolean memit) {
  char *request = NULL, *stats = NULL, *keys = NULL, *layers_text = NULL, *dtype = NULL, *stats_file = NULL;
  int layer = -1, steps = 0;
  gint64 stats_tokens = 100000;
  gboolean no_stats = FALSE;
  gint64 seed = 1;
  double lambda = 0;
  GOptionEntry rome_e[] = {
    {"request", 'r', 0, G_OPTION_ARG_STRING, &request, "The request: a JSON file (CounterFact or flat) or inline JSON (required)", "FILE|JSON"},
    {"layer", 'l', 0, G_OPTION_ARG_INT, &layer, "Layer to edit (default: the model's recommended one)", "L"},
    {"stats", 0, 0, G_OPTION_ARG_FILENAME, &stats, "Key covariance of the layer from `edit stats` (default: computed on --stats-file and cached)", "C"},
    STATS_OPTIONS,
    {"keys", 0, 0, G_OPTION_ARG_STRING, &keys, "paper (the default: ROME as published) or consistent (r-ROME's same key in both places)", "K"},
    {"steps", 0, 0, G_OPTION_ARG_INT, &steps, "Adam steps for the value (default 25)", "N"},
    {"seed", 's', 0, G_OPTION_ARG_INT64, &seed, "Seed of the sampled context prefixes (default 1)", "S"},
    {"dtype", 0, 0, G_OPTION_ARG_STRING, &dtype, "Save as F32, F16 or BF16 (default: the source's)", "T"},
    {NULL}};
  GOptionEntry memit_e[] = {
    {"requests", 'r', 0, G_OPTION_ARG_STRING, &request, "Requests: JSON Lines, a JSON array or inline JSON (required)", "FILE|JSON"},
    {"layers", 0, 0, G_OPTION_ARG_STRING, &layers_text, "Layers A-B to spread the edit over (required)", "A-B"},
    {"stats", 0, 0, G_OPTION_ARG_FILENAME, &stats, "Folder of `edit stats` files C{L}.safetensors, one per layer (default: computed on --stats-file and cached)", "DIR"},
    STATS_OPTIONS,
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
                              "\"efficacy\", \"generalisation\", \"specificity\", \"fluency\"}; with --out the edited model is saved there as a\n"
                              "Hugging Face folder (nothing else is written).\n"
                              "Example: lmwb-batch edit rome --request '{\"prompt\": \"{} lives in\", \"subject\": \"Soren\",\n"
                              "         \"target_new\": \" Tekun\", \"target_true\": \" Shekova\"}' --layer 1 --out edited/",
                      EDIT_HELP, memit ? memit_e : rome_e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if (!request) return lmwb_cli_usage_error(memit ? "--requests is required" : "--request is required");
  if (memit && !layers_text) return lmwb_cli_usage_error("--layers A-B is required");
  if (no_stats && (stats || stats_file)) return lmwb_cli_usage_error("--no-stats goes with neither --stats nor --stats-file");
  if (stats_tokens < 1) return lmwb_cli_usage_error("--stats-tokens must be at least 1");
  if (steps < 0 || seed < 0 || lambda < 0 || !isfinite(lambda)) return lmwb_cli_usage_error("--steps, --seed and --lambda must not be negative");
  if (dtype && strcmp(dtype, "F32") && strcmp(dtype, "F16") && strcmp(dtype, "BF16"))
    return lmwb_cli_usage_error("--dtype %s: expected F32, F16 or BF16", dtype);
  LmwbRomeOptions o;
  lmwb_edit_method_options_init(&o, memit ? LMWB_EDIT_MEMIT : LMWB_EDIT_ROME);
  GError *err = NULL;
  if (keys && !lmwb_rome_keys_parse(keys, &o.keys, &err)) return lmwb_cli_fail(err);
  if (steps) o.steps = steps;
  if (lambda > 0) o.lambda = lambda;
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
    for (int i = 0; ok && !no_stats && i < n_layers; i++)
      ok = (st[i] = stats_for(m, layers[i], stats, stats_file, stats_tokens, &err)) != NULL;
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

/* ---- sequential -------------------------------------------------------------------------------- */

static char *step_line(const LmwbEditStep *st) {
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  lmwb_json_member_int(b, "edit", st->edit);
  json_builder_set_member_name(b, "subject");
  if (st->subject) json_builder_add_string_value(b, st->subject);
  else json_builder_add_null_value(b);
  lmwb_json_member_double_or_null(b, "ppl", st->ppl);
  lmwb_json_member_double_or_null(b, "efficacy", st->efficacy);
  lmwb_json_member_double_or_null(b, "p_new", st->p_new);
  json_builder_set_member_name(b, "alarm");
  json_builder_add_boolean_value(b, st->alarm);
  json_builder_set_member_name(b, "rolled_back");
  json_builder_add_boolean_value(b, st->rolled_back);
  lmwb_json_member_double(b, "seconds", st->seconds);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  return lmwb_json_generate(root, FALSE, NULL);
}

/* Each step as it arrives, on stderr (the log itself is written, atomically, at the end). */
static void show_step(const LmwbEditStep *st, void *user) {
  fprintf(stderr, "%sedit %d%s%s: monitor perplexity %.6g, efficacy %g%s\n", isatty(2) ? "\n" : "", st->edit,
          st->subject ? " " : "", st->subject ? st->subject : "", st->ppl, st->efficacy, st->alarm ? "  ALARM" : "");
}

/* Monitor perplexity against the edit number for each log (log y), and the alarm line of the first. */
static gboolean plot_logs(char **names, LmwbEditStep **steps, const int *n_steps, int n_logs, double alarm,
                          const char *path, GError **error) {
  LmwbPlot *p = lmwb_plot_new(LMWB_PLOT_LINE, "Monitor perplexity after each edit", "edits", "mean per-sentence perplexity");
  lmwb_plot_set_log_y(p, TRUE);
  int last = 0;
  for (int k = 0; k < n_logs; k++) {
    int s = lmwb_plot_add_series(p, names[k]);
    for (int i = 0; i < n_steps[k]; i++) {
      if (isfinite(steps[k][i].ppl)) lmwb_plot_append(p, s, steps[k][i].edit, steps[k][i].ppl);
      last = MAX(last, steps[k][i].edit);
    }
  }
  if (n_logs > 0 && n_steps[0] > 0 && alarm > 0) {
    g_autofree char *name = g_strdup_printf("alarm (%gx unedited)", alarm);
    int s = lmwb_plot_add_series(p, name);
    lmwb_plot_append(p, s, 0, alarm * steps[0][0].ppl);
    lmwb_plot_append(p, s, MAX(last, 1), alarm * steps[0][0].ppl);
  }
  gboolean ok = lmwb_plot_save(p, path, 900, 520, error);
  lmwb_plot_free(p);
  return ok;
}

/* A log written by `edit sequential` (JSON Lines). */
static LmwbEditStep *read_log(const char *path, int *n, GError **error) {
  g_autofree char *text = lmwb_cli_read_text(path, error);
  if (!text) return NULL;
  GArray *a = g_array_new(FALSE, TRUE, sizeof(LmwbEditStep));
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  for (int i = 0; lines[i]; i++) {
    if (!*g_strstrip(lines[i])) continue;
    g_autofree char *where = g_strdup_printf("%s: line %d", path, i + 1);
    JsonNode *node = lmwb_json_parse(lines[i], strlen(lines[i]), where, error);
    JsonObject *o = node && JSON_NODE_HOLDS_OBJECT(node) ? json_node_get_object(node) : NULL;
    JsonNode *e = o ? json_object_get_member(o, "edit") : NULL, *pp = o ? json_object_get_member(o, "ppl") : NULL;
    if (!e || !pp || !JSON_NODE_HOLDS_VALUE(e) || (!JSON_NODE_HOLDS_VALUE(pp) && !JSON_NODE_HOLDS_NULL(pp))) {
      if (node && !(error && *error)) lmwb_input_error(error, "%s: not a step of `edit sequential` (\"edit\", \"ppl\")", where);
      if (node) json_node_unref(node);
      g_array_free(a, TRUE);
      return NULL;
    }
    LmwbEditStep st = {.edit = (int)json_node_get_int(e), .ppl = JSON_NODE_HOLDS_NULL(pp) ? INFINITY : json_node_get_double(pp)};
    g_array_append_val(a, st);
    json_node_unref(node);
  }
  if (a->len == 0) {
    lmwb_input_error(error, "%s: no steps", path);
    g_array_free(a, TRUE);
    return NULL;
  }
  *n = (int)a->len;
  return (LmwbEditStep *)g_array_free(a, FALSE);
}

int lmwb_cmd_edit_plot(int argc, char **argv) {
  char **logs = NULL;
  double alarm = LMWB_EDIT_ALARM_FACTOR;
  GOptionEntry e[] = {
    {"log", 0, 0, G_OPTION_ARG_STRING_ARRAY, &logs, "NAME=FILE: a log of `edit sequential` and its name in the legend (repeatable)", "NAME=FILE"},
    {"alarm", 0, 0, G_OPTION_ARG_DOUBLE, &alarm, "Draw the alarm line at this factor of the first log's unedited perplexity (default 2; 0: none)", "X"},
    {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- plot logs of edit sequences together",
                      "Draws each log's monitor perplexity against the edit number (log scale) into --out (.png, .svg\n"
                      "or .pdf). Example:\n"
                      "  lmwb-batch edit plot --log rome=paper.jsonl --log memit=memit.jsonl --out collapse.png",
                      EDIT_HELP, e, LMWB_CLI_OUT))
    return 2;
  if (!logs || !logs[0]) return lmwb_cli_usage_error("give at least one --log NAME=FILE");
  if (!lmwb_cli.out || !lmwb_cli_plot_path_ok(lmwb_cli.out)) return lmwb_cli_usage_error("--out must be a .png, .svg or .pdf file");
  if (!(alarm >= 0) || !isfinite(alarm)) return lmwb_cli_usage_error("--alarm must be a number >= 0");
  int n = (int)g_strv_length(logs);
  g_autofree char **names = g_new0(char *, n);
  g_autofree LmwbEditStep **steps = g_new0(LmwbEditStep *, n);
  g_autofree int *counts = g_new0(int, n);
  GError *err = NULL;
  gboolean ok = TRUE;
  for (int i = 0; ok && i < n; i++) {
    char *eq = strchr(logs[i], '=');
    if (!eq || eq == logs[i] || !eq[1]) ok = (lmwb_input_error(&err, "--log \"%s\": expected NAME=FILE", logs[i]), FALSE);
    else {
      *eq = 0;
      names[i] = logs[i];
      ok = (steps[i] = read_log(eq + 1, &counts[i], &err)) != NULL;
    }
  }
  if (ok) ok = plot_logs(names, steps, counts, n, alarm, lmwb_cli.out, &err);
  for (int i = 0; i < n; i++) g_free(steps[i]);
  return ok ? 0 : lmwb_cli_fail(err);
}

int lmwb_cmd_edit_sequential(int argc, char **argv) {
  char *method = NULL, *requests = NULL, *monitor = NULL, *stats = NULL, *stats_file = NULL, *layers_text = NULL,
       *save = NULL, *dtype = NULL, *keys = NULL, *plot = NULL;
  int layer = -1, steps = 0;
  gint64 seed = 1, stats_tokens = 100000;
  double alarm = LMWB_EDIT_ALARM_FACTOR, lambda = 0;
  gboolean stop = FALSE, rollback = FALSE, no_stats = FALSE;
  GOptionEntry e[] = {
    {"method", 0, 0, G_OPTION_ARG_STRING, &method, "rome (default) or memit", "M"},
    {"requests", 'r', 0, G_OPTION_ARG_STRING, &requests, "Requests, edited in order: JSON Lines or a JSON array (required)", "FILE"},
    {"monitor", 0, 0, G_OPTION_ARG_FILENAME, &monitor, "Monitor sentences, one a line (required; Yang et al. use 50)", "TEXT"},
    {"layer", 'l', 0, G_OPTION_ARG_INT, &layer, "ROME's layer (default: the model's recommended one)", "L"},
    {"layers", 0, 0, G_OPTION_ARG_STRING, &layers_text, "MEMIT's layers A-B (default: the recommended layer and the one below)", "A-B"},
    {"keys", 0, 0, G_OPTION_ARG_STRING, &keys, "ROME's keys: paper (default) or consistent", "K"},
    {"stats", 0, 0, G_OPTION_ARG_FILENAME, &stats, "Covariance file (ROME) or folder of C{L}.safetensors (MEMIT) (default: computed and cached)", "C"},
    STATS_OPTIONS,
    {"steps", 0, 0, G_OPTION_ARG_INT, &steps, "Adam steps per value (default 25)", "N"},
    {"lambda", 0, 0, G_OPTION_ARG_DOUBLE, &lambda, "MEMIT's weight of the covariance (default 15000)", "X"},
    {"seed", 's', 0, G_OPTION_ARG_INT64, &seed, "Seed of the sampled context prefixes (default 1)", "S"},
    {"alarm", 0, 0, G_OPTION_ARG_DOUBLE, &alarm, "Alarm when the monitor perplexity exceeds this factor of the unedited one (default 2)", "X"},
    {"stop-on-alarm", 0, 0, G_OPTION_ARG_NONE, &stop, "Stop the sequence at the first alarm", NULL},
    {"rollback-on-alarm", 0, 0, G_OPTION_ARG_NONE, &rollback, "Undo an edit that raises the alarm and go on", NULL},
    {"save", 0, 0, G_OPTION_ARG_FILENAME, &save, "Save the model after the last edit kept as a Hugging Face folder", "DIR"},
    {"plot", 0, 0, G_OPTION_ARG_FILENAME, &plot, "Also draw the monitor perplexity per edit with the alarm line (.png, .svg or .pdf)", "F"},
    {"dtype", 0, 0, G_OPTION_ARG_STRING, &dtype, "Save as F32, F16 or BF16 (default: the source's)", "T"},
    {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- edit facts one after another, watching for collapse",
                      "After every edit the mean per-sentence perplexity of the monitor set is measured (Yang et al.\n"
                      "2024); the alarm fires when it exceeds --alarm times the unedited value or is not finite.\n"
                      "Writes --out as JSON Lines, one line per step (line 0 = unedited):\n"
                      "  {\"edit\", \"subject\", \"ppl\", \"efficacy\", \"p_new\", \"alarm\", \"rolled_back\", \"seconds\"}\n"
                      "(a perplexity that is not finite is null), and prints {\"edits\", \"ppl0\", \"first_alarm\",\n"
                      "\"stopped\", \"failure\"}. An edit that fails (NaN, a singular covariance) ends the sequence;\n"
                      "the steps before it are written and the exit status is 2.\n"
                      "Example: lmwb-batch edit sequential --requests r.jsonl --monitor monitor.txt --layer 1 --out log.jsonl",
                      EDIT_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if (!requests) return lmwb_cli_usage_error("--requests FILE is required");
  if (!monitor) return lmwb_cli_usage_error("--monitor TEXT is required");
  if (!lmwb_cli.out) return lmwb_cli_usage_error("--out log.jsonl is required");
  if (stop && rollback) return lmwb_cli_usage_error("give --stop-on-alarm or --rollback-on-alarm, not both");
  if (!(alarm > 1) || !isfinite(alarm)) return lmwb_cli_usage_error("--alarm %g must be a number above 1", alarm);
  if (plot && !lmwb_cli_plot_path_ok(plot)) return lmwb_cli_usage_error("--plot \"%s\": expected a .png, .svg or .pdf file", plot);
  if (no_stats && (stats || stats_file)) return lmwb_cli_usage_error("--no-stats goes with neither --stats nor --stats-file");
  if (steps < 0 || seed < 0 || stats_tokens < 1) return lmwb_cli_usage_error("--steps and --seed must not be negative, --stats-tokens positive");
  if (dtype && strcmp(dtype, "F32") && strcmp(dtype, "F16") && strcmp(dtype, "BF16"))
    return lmwb_cli_usage_error("--dtype %s: expected F32, F16 or BF16", dtype);
  LmwbEditSequenceOptions so = {.alarm_factor = alarm,
                                .on_alarm = stop ? LMWB_ALARM_STOP : rollback ? LMWB_ALARM_ROLLBACK : LMWB_ALARM_CONTINUE};
  if (method && !strcmp(method, "memit")) so.method = LMWB_EDIT_MEMIT;
  else if (method && strcmp(method, "rome")) return lmwb_cli_usage_error("--method %s: expected rome or memit", method);
  lmwb_edit_method_options_init(&so.rome, so.method);
  if (steps) so.rome.steps = steps;
  if (!(lambda >= 0) || !isfinite(lambda)) return lmwb_cli_usage_error("--lambda must be a number >= 0");
  if (lambda > 0) so.rome.lambda = lambda;
  so.rome.seed = (guint64)seed;
  GError *err = NULL;
  if (keys && !lmwb_rome_keys_parse(keys, &so.rome.keys, &err)) return lmwb_cli_fail(err);
  LmwbModel *m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  LmwbEditRequests *reqs = lmwb_edit_requests_read(requests, &err);
  g_auto(GStrv) mon = reqs ? lmwb_edit_monitor_read(monitor, &err) : NULL;
  g_autofree int *layers = NULL;
  int n_layers = 0;
  LmwbEditStats **st = NULL;
  LmwbEditSequence *seq = NULL;
  gboolean ok = mon != NULL && lmwb_input_guard_check_output(lmwb_cli.out, &err);
  if (ok && so.method == LMWB_EDIT_MEMIT && layers_text) ok = parse_layers(m, layers_text, &layers, &n_layers, &err);
  else if (ok) {
    int L = layer >= 0 ? layer : lmwb_edit_default_layer(m);
    if (L >= m->cfg.n_layer) ok = (lmwb_input_error(&err, "--layer %d is not in 0..%d", L, m->cfg.n_layer - 1), FALSE);
    n_layers = so.method == LMWB_EDIT_MEMIT && L > 0 ? 2 : 1;
    layers = g_new(int, n_layers);
    for (int i = 0; i < n_layers; i++) layers[i] = L - (n_layers - 1) + i;
  }
  if (ok) {
    st = g_new0(LmwbEditStats *, n_layers);
    for (int i = 0; ok && !no_stats && i < n_layers; i++)
      ok = (st[i] = stats_for(m, layers[i], stats, stats_file, stats_tokens, &err)) != NULL;
  }
  if (ok) {
    so.layers = layers, so.n_layers = n_layers, so.stats = st;
    so.monitor = (const char *const *)mon, so.n_monitor = g_strv_length(mon);
    seq = lmwb_edit_sequence_run(m, reqs, &so, show_step, NULL, lmwb_cli_reporter(), &err);
    if (isatty(2)) fputc('\n', stderr);
    ok = seq != NULL;
  }
  if (ok) {
    GString *log = g_string_new(NULL);
    int first_alarm = -1;
    for (int i = 0; i < seq->n_steps; i++) {
      g_autofree char *line = step_line(&seq->steps[i]);
      g_string_append(log, line);
      g_string_append_c(log, '\n');
      if (seq->steps[i].alarm && first_alarm < 0) first_alarm = seq->steps[i].edit;
    }
    ok = lmwb_file_write_atomic(lmwb_cli.out, log->str, log->len, &err);
    g_string_free(log, TRUE);
    if (ok && plot) {
      char *name = (char *)(so.method == LMWB_EDIT_MEMIT ? "MEMIT" : so.rome.keys == LMWB_ROME_KEYS_CONSISTENT ? "ROME, consistent keys" : "ROME");
      ok = plot_logs(&name, &seq->steps, &seq->n_steps, 1, alarm, plot, &err);
    }
    if (ok && save)
      ok = lmwb_model_save(seq->versions[seq->n_steps - 1], save, dtype ? dtype : m->source_dtype, m->dir, &err);
    if (ok) {
      g_autoptr(JsonBuilder) b = json_builder_new();
      json_builder_begin_object(b);
      lmwb_json_member_int(b, "edits", seq->n_steps - 1);
      lmwb_json_member_double(b, "ppl0", seq->steps[0].ppl);
      json_builder_set_member_name(b, "first_alarm");
      if (first_alarm >= 0) json_builder_add_int_value(b, first_alarm);
      else json_builder_add_null_value(b);
      json_builder_set_member_name(b, "stopped");
      json_builder_add_boolean_value(b, seq->stopped);
      json_builder_set_member_name(b, "failure");
      if (seq->failure) json_builder_add_string_value(b, seq->failure);
      else json_builder_add_null_value(b);
      lmwb_json_member_string(b, "out", lmwb_cli.out);
      json_builder_end_object(b);
      ok = lmwb_cli_emit_json(json_builder_get_root(b), NULL, &err);
    }
    if (ok && seq->failure) {
      lmwb_input_error(&err, "%s", seq->failure);
      ok = FALSE;
    }
  }
  lmwb_edit_sequence_free(seq);
  for (int i = 0; st && i < n_layers; i++) lmwb_edit_stats_free(st[i]);
  g_free(st);
  lmwb_edit_requests_free(reqs);
  lmwb_model_unref(m);
  return ok ? 0 : lmwb_cli_fail(err);
}
