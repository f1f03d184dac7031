/* lmwb-batch codebook train | search: train codebooks for chosen sites of a frozen model into a
 * codebook set folder (analysis/codebook_train.h), with before/after figures as JSON; find the codes
 * that stand for a regex over a text, a code's contexts and topic codes (codebook_search.h); steer
 * generations with code clamps (codebook_steer.h). */
#include "ui/batch/cli.h"
#include "ui/batch/commands.h"
#include "analysis/codebook_search.h"
#include "analysis/codebook_steer.h"
#include "analysis/codebook_train.h"
#include "app/core/atomic_file.h"
#include "app/core/inputs.h"
#include "app/formats/tokenizer.h"
#include "ui/plot/plot.h"
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CB_HELP \
  "Codebook features (Tamkin, Taufeeque & Goodman 2023): at each chosen site (attn: every head's\n" \
  "blocks.L.attn.hook_z; mlp: blocks.L.hook_mlp_out) the activation is replaced by the mean of the k codes\n" \
  "scoring highest by LN(x)·c/‖c‖. Sets are folders with codebooks.json + codebooks.safetensors; any\n" \
  "command that runs the model takes --codebooks DIR (and --clamp-code). Exit status: 0 ok, 2 bad input\n" \
  "(the message names the option or file), 1 other failure."

/* --sites attn,mlp and --layers 0-3 / 0,2 (default: every layer) -> site specs. */
static LmwbCodebookSiteSpec *parse_sites(const LmwbConfig *cfg, const char *sites, const char *layers, int *n,
                                         GError **error) {
  gboolean want[2] = {FALSE, FALSE};
  g_auto(GStrv) sp = g_strsplit(sites ? sites : "attn", ",", -1);
  for (char **s = sp; *s; s++) {
    LmwbCodebookSite k;
    if (!lmwb_codebook_site_parse(g_strstrip(*s), &k)) {
      lmwb_input_error(error, "--sites: \"%s\" is not attn or mlp", *s);
      return NULL;
    }
    want[k] = TRUE;
  }
  g_autofree gboolean *lay = g_new0(gboolean, cfg->n_layer);
  if (!layers) {
    for (int l = 0; l < cfg->n_layer; l++) lay[l] = TRUE;
  } else {
    g_auto(GStrv) lp = g_strsplit(layers, ",", -1);
    for (char **s = lp; *s; s++) {
      char *dash = strchr(*s, '-'), *e1 = NULL, *e2 = NULL;
      long a = strtol(*s, &e1, 10), b = dash ? strtol(dash + 1, &e2, 10) : a;
      gboolean ok = e1 != *s && (dash ? (e1 == dash && e2 != dash + 1 && !*e2) : !*e1);
      if (!ok || a < 0 || b < a || b >= cfg->n_layer) {
        lmwb_input_error(error, "--layers: \"%s\" is not a layer or range within 0..%d", *s, cfg->n_layer - 1);
        return NULL;
      }
      for (long l = a; l <= b; l++) lay[l] = TRUE;
    }
  }
  LmwbCodebookSiteSpec *out = g_new(LmwbCodebookSiteSpec, 2 * cfg->n_layer);
  *n = 0;
  for (int l = 0; l < cfg->n_layer; l++)
    for (int k = 0; k < 2; k++)
      if (lay[l] && want[k]) out[(*n)++] = (LmwbCodebookSiteSpec){l, (LmwbCodebookSite)k};
  return out;
}

static void add_eval(JsonBuilder *b, const char *name, const LmwbCodebookEval *e) {
  json_builder_set_member_name(b, name);
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "loss");
  json_builder_add_double_value(b, e->loss);
  json_builder_set_member_name(b, "accuracy");
  json_builder_add_double_value(b, e->accuracy);
  json_builder_set_member_name(b, "mse");
  json_builder_add_double_value(b, e->mse);
  json_builder_end_object(b);
}

/* train.json (when the run finished; its checkpoint removed) and the same on stdout. */
static gboolean emit_result(const LmwbCodebookTrainResult *res, const char *out, gboolean stopped, gboolean evaluated,
                            const char *json_path, const char *ckpt, GError **err) {
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "out");
  json_builder_add_string_value(b, out);
  json_builder_set_member_name(b, "steps");
  json_builder_add_int_value(b, res->steps);
  json_builder_set_member_name(b, "stopped");
  json_builder_add_boolean_value(b, stopped);
  json_builder_set_member_name(b, "k");
  json_builder_add_int_value(b, res->cb->k);
  json_builder_set_member_name(b, "num_codes");
  json_builder_add_int_value(b, res->cb->num_codes);
  json_builder_set_member_name(b, "sites");
  json_builder_begin_array(b);
  for (int i = 0; i < res->cb->n; i++) {
    g_autofree char *s = g_strdup_printf("%d:%s", res->cb->books[i].layer, lmwb_codebook_site_name(res->cb->books[i].site));
    json_builder_add_string_value(b, s);
  }
  json_builder_end_array(b);
  if (!stopped && evaluated) {
    add_eval(b, "plain", &res->plain);
    add_eval(b, "before", &res->before);
    add_eval(b, "after", &res->after);
    json_builder_set_member_name(b, "active_fraction");
    json_builder_add_double_value(b, res->active_fraction);
  }
  json_builder_set_member_name(b, "dead_replaced");
  json_builder_add_int_value(b, res->dead_replaced);
  json_builder_set_member_name(b, "seconds");
  json_builder_add_double_value(b, res->seconds);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  if (!stopped) {
    g_autoptr(JsonGenerator) gen = json_generator_new();
    json_generator_set_pretty(gen, TRUE);
    json_generator_set_root(gen, root);
    gsize len = 0;
    g_autofree char *text = json_generator_to_data(gen, &len);
    if (!lmwb_file_write_atomic(json_path, text, len, err)) return FALSE;
    g_autofree char *state = g_build_filename(ckpt, "state.safetensors", NULL);
    g_unlink(state);
    g_rmdir(ckpt);
  }
  return lmwb_cli_emit_json(json_node_ref(root), NULL, err);
}

int lmwb_cmd_codebook_train(int argc, char **argv) {
  char **files = NULL, *out = NULL, *sites = NULL, *layers = NULL, *init_dir = NULL;
  int codes = 1024, k = 8, batch = 0, context = 0, eval_windows = 0, kmeans_iters = 0;
  double lr = 0, lambda = 0, dead_noise = 0;
  gint64 steps = 0, seed = 1, dead_every = 0, ckpt_every = 0, stop_after = 0;
  gboolean kmeans = FALSE, resume = FALSE, finetune = FALSE, eos_windows = FALSE;
  double model_lr = 0;
  GOptionEntry e[] = {
    {"sites", 0, 0, G_OPTION_ARG_STRING, &sites, "Sites: attn (per head, hook_z), mlp (hook_mlp_out) or both (default attn)", "attn,mlp"},
    {"layers", 0, 0, G_OPTION_ARG_STRING, &layers, "Layers (default all), e.g. 0-3 or 0,2", "L"},
    {"codes", 'C', 0, G_OPTION_ARG_INT, &codes, "Codes per codebook (default 1024)", "C"},
    {"k", 'k', 0, G_OPTION_ARG_INT, &k, "Codes chosen per activation (default 8)", "K"},
    {"init", 0, 0, G_OPTION_ARG_FILENAME, &init_dir, "Continue training this codebook set (its sites, k and codes)", "DIR"},
    {"steps", 's', 0, G_OPTION_ARG_INT64, &steps, "Training steps (required)", "N"},
    {"file", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &files, "Training text (repeatable; required)", "TEXT"},
    {"batch", 'b', 0, G_OPTION_ARG_INT, &batch, "Windows per step (default 8)", "N"},
    {"context", 'c', 0, G_OPTION_ARG_INT, &context, "Tokens per window (default min(64, the model's context))", "N"},
    {"lr", 0, 0, G_OPTION_ARG_DOUBLE, &lr, "Adam learning rate (default 5e-4, the paper's, constant)", "X"},
    {"lambda", 0, 0, G_OPTION_ARG_DOUBLE, &lambda, "Weight of the reconstruction MSE (default 1; negative: none)", "X"},
    {"kmeans", 0, 0, G_OPTION_ARG_NONE, &kmeans, "Initialise the codes by k-means of the model's activations", NULL},
    {"kmeans-iters", 0, 0, G_OPTION_ARG_INT, &kmeans_iters, "k-means iterations (default 10)", "N"},
    {"dead-every", 0, 0, G_OPTION_ARG_INT64, &dead_every, "Re-seed codes unused for N steps from the batch's inputs (default: never)", "N"},
    {"dead-noise", 0, 0, G_OPTION_ARG_DOUBLE, &dead_noise, "Noise of a re-seeded code, relative to the input's norm (default 0.01)", "X"},
    {"eval-windows", 0, 0, G_OPTION_ARG_INT, &eval_windows, "Windows for the before/after figures (default 16; negative: none)", "N"},
    {"seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Random seed (default 1)", "S"},
    {"checkpoint-every", 0, 0, G_OPTION_ARG_INT64, &ckpt_every, "Steps between checkpoints (default 200)", "N"},
    {"resume", 0, 0, G_OPTION_ARG_NONE, &resume, "Continue the run whose checkpoint is in OUT/checkpoint", NULL},
    {"stop-after", 0, 0, G_OPTION_ARG_INT64, &stop_after, "Stop (with a checkpoint) after N steps of this run", "N"},
    {"finetune", 0, 0, G_OPTION_ARG_NONE, &finetune, "Train the model's weights with the codes (the paper's setting); writes OUT/model", NULL},
    {"model-lr", 0, 0, G_OPTION_ARG_DOUBLE, &model_lr, "Learning rate of the model's weights with --finetune (default: --lr)", "X"},
    {"eos-windows", 0, 0, G_OPTION_ARG_NONE, &eos_windows, "Start every window at an end-of-text token (documents such as TokFSM sequences)", NULL},
    {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- train codebooks for a model (frozen, or fine-tuned with them)",
                      "Trains with the LM loss plus lambda x the reconstruction MSE (straight-through gradient; only the\n"
                      "chosen codes move; analysis/codebook_train.h) and writes OUT/codebooks.json,\n"
                      "OUT/codebooks.safetensors and OUT/train.json (with --finetune also the model in OUT/model), also printed:\n"
                      "  {\"out\", \"steps\", \"k\", \"num_codes\", \"sites\", \"plain\", \"before\", \"after\" (each {loss, accuracy,\n"
                      "   mse}: the model alone, with the initial codes, with the trained codes), \"active_fraction\",\n"
                      "   \"dead_replaced\", \"seconds\"}\n"
                      "Ctrl-C stops with a checkpoint in OUT/checkpoint; --resume continues it exactly.\n"
                      "Example: lmwb-batch codebook train --sites attn,mlp --layers 0-3 --codes 512 --k 8 --steps 500 "
                      "--file text.txt --out cb",
                      CB_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  out = lmwb_cli.out;
  if (!out) return lmwb_cli_usage_error("--out DIR is required (the codebook set's folder)");
  if (steps < 1) return lmwb_cli_usage_error("--steps N (at least 1) is required");
  if (!files) return lmwb_cli_usage_error("--file TEXT is required");
  if (seed < 0) return lmwb_cli_usage_error("--seed must not be negative");
  /* the model check refuses --out inside the model folder; the folder itself is made here */
  lmwb_cli.out = NULL;
  GError *err = NULL;
  LmwbModel *m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  int status = 0, n_sites = 0;
  LmwbCodebooks *init = NULL;
  g_autofree LmwbCodebookSiteSpec *sp = NULL;
  g_autofree int32_t *ids = NULL;
  g_autofree char *ckpt = g_build_filename(out, "checkpoint", NULL);
  g_autofree char *json_path = g_build_filename(out, "train.json", NULL);
  g_autofree char *w_path = g_build_filename(out, "codebooks.safetensors", NULL);
  g_autofree char *j_path = g_build_filename(out, "codebooks.json", NULL);
  size_t n = 0;
  LmwbCodebookTrainResult res = {0};
  const char *outs[4] = {json_path, w_path, j_path, NULL};
  for (int i = 0; outs[i]; i++)
    if (!lmwb_input_guard_check_output(outs[i], &err)) goto fail;
  if (!m->tokenizer) {
    lmwb_input_error(&err, "%s has no tokenizer to read the text with", m->dir ? m->dir : "the model");
    goto fail;
  }
  if (init_dir && !(init = lmwb_codebooks_load(init_dir, &m->cfg, &err))) {
    g_prefix_error(&err, "--init: ");
    goto fail;
  }
  if (!init && !(sp = parse_sites(&m->cfg, sites, layers, &n_sites, &err))) goto fail;
  if (!(ids = lmwb_cli_read_token_files(m, files, &n, &err))) goto fail;
  LmwbCodebookTrainOptions o = {.k = k, .num_codes = codes, .sites = sp, .n_sites = n_sites, .steps = steps,
                                .batch = batch, .context = context, .lr = lr, .lambda = lambda, .kmeans = kmeans,
                                .kmeans_iters = kmeans_iters, .dead_every = dead_every, .dead_noise = dead_noise,
                                .eval_windows = eval_windows, .seed = (guint64)seed, .checkpoint_dir = ckpt,
                                .checkpoint_every = ckpt_every, .resume = resume, .max_steps_this_run = stop_after,
                                .finetune = finetune, .model_lr = model_lr, .eos_windows = eos_windows};
  if (!lmwb_codebook_train(m, ids, n, init, &o, lmwb_cli_reporter(), &res, &err)) goto fail;
  if (isatty(2)) fputc('\n', stderr);
  gboolean stopped = res.steps < steps;
  if (!stopped && !lmwb_codebooks_save(res.cb, out, &err)) goto fail;
  if (res.model) {
    g_autofree char *mdir = g_build_filename(out, "model", NULL);
    if (!lmwb_model_save(res.model, mdir, "F32", m->dir, &err)) goto fail;
  }
  if (!emit_result(&res, out, stopped, eval_windows >= 0, json_path, ckpt, &err)) goto fail;
  goto done;
fail:
  status = lmwb_cli_fail(err);
done:
  lmwb_codebook_train_result_clear(&res);
  lmwb_codebooks_free(init);
  g_strfreev(files);
  lmwb_model_unref(m);
  return status;
}

/* ---- search ------------------------------------------------------------------------------------ */

/* The tokens around t in its window, the token itself in «». */
static void add_hit(JsonBuilder *b, const LmwbCodeCache *c, const LmwbCodeHit *h, gboolean pr, int examples) {
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "layer");
  json_builder_add_int_value(b, h->layer);
  json_builder_set_member_name(b, "site");
  json_builder_add_string_value(b, lmwb_codebook_site_name(h->site));
  if (h->head >= 0) {
    json_builder_set_member_name(b, "head");
    json_builder_add_int_value(b, h->head);
  }
  json_builder_set_member_name(b, "code");
  json_builder_add_int_value(b, h->code);
  if (pr) {
    json_builder_set_member_name(b, "precision");
    json_builder_add_double_value(b, h->precision);
    json_builder_set_member_name(b, "recall");
    json_builder_add_double_value(b, h->recall);
    json_builder_set_member_name(b, "matched");
    json_builder_add_int_value(b, h->matched);
  }
  json_builder_set_member_name(b, "activations");
  json_builder_add_int_value(b, h->activations);
  g_autofree char *clamp = h->head >= 0 ? g_strdup_printf("%d:%s:%d=%d", h->layer, lmwb_codebook_site_name(h->site), h->head, h->code)
                                        : g_strdup_printf("%d:%s=%d", h->layer, lmwb_codebook_site_name(h->site), h->code);
  json_builder_set_member_name(b, "clamp");
  json_builder_add_string_value(b, clamp);
  if (examples > 0) {
    int n = 0;
    g_autofree int64_t *occ = lmwb_code_cache_occurrences(c, h->book, MAX(h->head, 0), h->code, examples, &n);
    json_builder_set_member_name(b, "contexts");
    json_builder_begin_array(b);
    for (int i = 0; i < n; i++) {
      g_autofree char *t = lmwb_code_cache_context(c, occ[i], 8, 3);
      json_builder_begin_object(b);
      json_builder_set_member_name(b, "window");
      json_builder_add_int_value(b, occ[i] / c->context);
      json_builder_set_member_name(b, "position");
      json_builder_add_int_value(b, occ[i] % c->context);
      json_builder_set_member_name(b, "text");
      json_builder_add_string_value(b, t);
      json_builder_end_object(b);
    }
    json_builder_end_array(b);
  }
  json_builder_end_object(b);
}

int lmwb_cmd_codebook_search(int argc, char **argv) {
  char *cb_dir = NULL, *file = NULL, *regex = NULL, *code = NULL;
  int context = 0, top = 0, examples = 3;
  double min_p = 0, min_r = 0;
  gint64 tokens = 0;
  gboolean topics = FALSE;
  GOptionEntry e[] = {
    {"codebooks", 0, 0, G_OPTION_ARG_FILENAME, &cb_dir, "The codebook set (required)", "DIR"},
    {"file", 0, 0, G_OPTION_ARG_FILENAME, &file, "Text to search (required)", "TEXT"},
    {"regex", 'r', 0, G_OPTION_ARG_STRING, &regex, "Pattern over each window's token text (group 1 if any marks the token)", "R"},
    {"code", 0, 0, G_OPTION_ARG_STRING, &code, "Show this code's contexts instead", "L:SITE[:HEAD]=CODE"},
    {"topics", 0, 0, G_OPTION_ARG_NONE, &topics, "Also list topic codes (active on > 50% of a window's tokens)", NULL},
    {"context", 'c', 0, G_OPTION_ARG_INT, &context, "Window length in tokens (default min(64, the model's context))", "N"},
    {"tokens", 't', 0, G_OPTION_ARG_INT64, &tokens, "At most N tokens of the text", "N"},
    {"top", 0, 0, G_OPTION_ARG_INT, &top, "Codes kept per codebook (default 5)", "N"},
    {"min-precision", 0, 0, G_OPTION_ARG_DOUBLE, &min_p, "Keep codes above this precision (default 0.5; negative: all)", "P"},
    {"min-recall", 0, 0, G_OPTION_ARG_DOUBLE, &min_r, "Consider codes above this recall (default 0.01; negative: all)", "R"},
    {"examples", 0, 0, G_OPTION_ARG_INT, &examples, "Contexts shown per code (default 3)", "N"},
    {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- find the codes that stand for a pattern",
                      "Caches every code of the set on the windows of --file, marks the tokens where --regex matches\n"
                      "(analysis/codebook_search.h) and prints, sorted by precision:\n"
                      "  {\"regex\", \"tokens\", \"windows\", \"matched_tokens\", \"codes\": [{\"layer\", \"site\", \"head\", \"code\",\n"
                      "   \"precision\", \"recall\", \"matched\", \"activations\", \"clamp\", \"contexts\": [{\"window\", \"position\",\n"
                      "   \"text\"}]}], \"topic_codes\": [...]}\n"
                      "precision = marked tokens with the code / all tokens with it; recall = marked tokens with the code /\n"
                      "marked tokens. --code L:SITE[:HEAD]=CODE lists one code's contexts instead.\n"
                      "Example: lmwb-batch codebook search --codebooks cb --file text.txt --regex ' dragon'",
                      CB_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if (!cb_dir) return lmwb_cli_usage_error("--codebooks DIR is required");
  if (!file) return lmwb_cli_usage_error("--file TEXT is required");
  if (!regex && !code && !topics) return lmwb_cli_usage_error("give --regex R, --code L:SITE[:HEAD]=CODE or --topics");
  if (examples < 0 || top < 0) return lmwb_cli_usage_error("--examples and --top must not be negative");
  GError *err = NULL;
  LmwbModel *m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  int status = 0;
  LmwbCodebooks *cb = NULL;
  LmwbCodeCache *cache = NULL;
  g_autofree int32_t *ids = NULL;
  g_autofree int64_t *marked = NULL;
  g_autofree LmwbCodeHit *hits = NULL, *tops = NULL;
  g_autofree int *tw = NULL;
  int n_hits = 0, n_tops = 0;
  int64_t n_marked = 0;
  size_t n = 0;
  char *files[2] = {file, NULL};
  LmwbCodeClamp want = {0};
  JsonBuilder *b = NULL;
  if (!m->tokenizer) {
    lmwb_input_error(&err, "%s has no tokenizer to read the text with", m->dir ? m->dir : "the model");
    goto fail;
  }
  if (!(cb = lmwb_codebooks_load(cb_dir, &m->cfg, &err))) {
    g_prefix_error(&err, "--codebooks: ");
    goto fail;
  }
  if (code) {
    if (!lmwb_code_clamp_parse(&m->cfg, code, &want, &err)) {
      g_prefix_error(&err, "--code: ");
      goto fail;
    }
    if (want.positions || want.slot >= 0 || (want.site == LMWB_CODEBOOK_ATTN && want.head < 0) ||
        !lmwb_codebooks_find(cb, want.layer, want.site) || want.code >= cb->num_codes) {
      lmwb_input_error(&err, "--code \"%s\": expected L:attn:HEAD=CODE or L:mlp=CODE of a site of the set, CODE < %d",
                       code, cb->num_codes);
      goto fail;
    }
  }
  GError *re_err = NULL;
  GRegex *probe = regex ? g_regex_new(regex, 0, 0, &re_err) : NULL;
  if (regex && !probe) {
    lmwb_input_error(&err, "--regex \"%s\" does not compile: %s", regex, re_err->message);
    g_error_free(re_err);
    goto fail;
  }
  if (probe) g_regex_unref(probe);
  if (!(ids = lmwb_cli_read_token_files(m, files, &n, &err))) goto fail;
  if (!(cache = lmwb_code_cache_build(m, cb, ids, n, context > 0 ? context : MIN(64, m->cfg.n_ctx), tokens,
                                      lmwb_cli_reporter(), &err)))
    goto fail;
  if (isatty(2)) fputc('\n', stderr);
  b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "tokens");
  json_builder_add_int_value(b, cache->n_tokens);
  json_builder_set_member_name(b, "windows");
  json_builder_add_int_value(b, cache->n_windows);
  if (regex) {
    if (!(marked = lmwb_code_cache_match(cache, regex, &n_marked, &err))) goto fail;
    LmwbCodeSearchOptions so = {.top = top, .min_precision = min_p, .min_recall = min_r};
    hits = lmwb_code_search(cache, marked, n_marked, &so, &n_hits);
    json_builder_set_member_name(b, "regex");
    json_builder_add_string_value(b, regex);
    json_builder_set_member_name(b, "matched_tokens");
    json_builder_add_int_value(b, n_marked);
    json_builder_set_member_name(b, "codes");
    json_builder_begin_array(b);
    for (int i = 0; i < n_hits; i++) add_hit(b, cache, &hits[i], TRUE, examples);
    json_builder_end_array(b);
  }
  if (code) {
    int book = (int)(lmwb_codebooks_find(cb, want.layer, want.site) - cb->books);
    int g = want.site == LMWB_CODEBOOK_ATTN ? want.head : 0;
    LmwbCodeHit h = {.book = book, .layer = want.layer, .site = want.site, .head = want.site == LMWB_CODEBOOK_ATTN ? g : -1,
                     .code = want.code, .activations = cache->active[book][(size_t)g * cb->num_codes + want.code]};
    json_builder_set_member_name(b, "code");
    add_hit(b, cache, &h, FALSE, MAX(examples, 1) * (regex ? 1 : 10));
  }
  if (topics) {
    tops = lmwb_code_cache_topics(cache, &tw, &n_tops);
    json_builder_set_member_name(b, "topic_codes");
    json_builder_begin_array(b);
    for (int i = 0; i < n_tops; i++) add_hit(b, cache, &tops[i], FALSE, 0);
    json_builder_end_array(b);
  }
  json_builder_end_object(b);
  if (!lmwb_cli_emit_json(json_builder_get_root(b), lmwb_cli.out, &err)) goto fail;
  goto done;
fail:
  status = lmwb_cli_fail(err);
done:
  g_clear_object(&b);
  lmwb_code_clamp_clear(&want);
  lmwb_code_cache_free(cache);
  lmwb_codebooks_free(cb);
  lmwb_model_unref(m);
  return status;
}

/* ---- steer ------------------------------------------------------------------------------------- */

int lmwb_cmd_codebook_steer(int argc, char **argv) {
  char *cb_dir = NULL, *word = NULL, *plot = NULL, **prompts = NULL, **clamp_text = NULL;
  int samples = 0, max_tokens = 32, top_k = 0;
  double temperature = 1.0, top_p = 1.0;
  gint64 seed = 1;
  GOptionEntry e[] = {
    {"codebooks", 0, 0, G_OPTION_ARG_FILENAME, &cb_dir, "The codebook set (required)", "DIR"},
    {"clamp-code", 0, 0, G_OPTION_ARG_STRING_ARRAY, &clamp_text, "A code to turn on (repeatable; as --clamp-code of generate)", "L:SITE[:HEAD]=CODE[@P][#SLOT]"},
    {"prompt", 'p', 0, G_OPTION_ARG_STRING_ARRAY, &prompts, "A prompt (repeatable; required)", "STR"},
    {"word", 'w', 0, G_OPTION_ARG_STRING, &word, "The word counted in the continuations (case-insensitive; required)", "W"},
    {"samples", 0, 0, G_OPTION_ARG_INT, &samples, "Samples per prompt, clamp off and on (default 10)", "N"},
    {"max-tokens", 'n', 0, G_OPTION_ARG_INT, &max_tokens, "New tokens per sample (default 32)", "N"},
    {"temperature", 0, 0, G_OPTION_ARG_DOUBLE, &temperature, "Sampling temperature (default 1)", "T"},
    {"top-k", 0, 0, G_OPTION_ARG_INT, &top_k, "Sample only from the K most likely tokens (0 = off)", "K"},
    {"top-p", 0, 0, G_OPTION_ARG_DOUBLE, &top_p, "Nucleus sampling mass (1 = off)", "P"},
    {"seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Seed of the first sample (default 1)", "S"},
    {"plot", 0, 0, G_OPTION_ARG_FILENAME, &plot, "Also draw the shares off/on to a .png, .svg or .pdf", "F"},
    {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- share of generations containing a word, code clamps off vs on",
                      "Samples --samples continuations of every --prompt with the codebooks spliced in, without and with the\n"
                      "--clamp-code clamps (the same seeds), and prints\n"
                      "  {\"word\", \"samples\", \"share_off\", \"share_on\", \"prompts\": [{\"prompt\", \"hits_off\", \"hits_on\",\n"
                      "   \"example_off\", \"example_on\"}]}\n"
                      "Example: lmwb-batch codebook steer --codebooks cb --clamp-code 2:attn=77 --prompt \"Once\" --word dragon",
                      CB_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if (!cb_dir) return lmwb_cli_usage_error("--codebooks DIR is required");
  if (!prompts) return lmwb_cli_usage_error("--prompt STR is required");
  if (!word || !*word) return lmwb_cli_usage_error("--word W is required");
  if (!clamp_text) return lmwb_cli_usage_error("--clamp-code is required (the codes to turn on)");
  if (max_tokens < 1 || samples < 0 || seed < 0 || !(temperature >= 0) || !(top_p > 0 && top_p <= 1))
    return lmwb_cli_usage_error("--max-tokens must be positive; --samples and --seed not negative; --temperature >= 0; "
                                "--top-p in (0, 1]");
  if (plot && !(g_str_has_suffix(plot, ".png") || g_str_has_suffix(plot, ".svg") || g_str_has_suffix(plot, ".pdf")))
    return lmwb_cli_usage_error("--plot \"%s\": expected a .png, .svg or .pdf file", plot);
  GError *err = NULL;
  LmwbModel *m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  int status = 0, nc = (int)g_strv_length(clamp_text);
  LmwbCodebooks *cb = NULL;
  LmwbCodeClamp *clamps = g_new0(LmwbCodeClamp, nc);
  LmwbSteerResult res = {0};
  JsonBuilder *b = NULL;
  if (!(cb = lmwb_codebooks_load(cb_dir, &m->cfg, &err))) {
    g_prefix_error(&err, "--codebooks: ");
    goto fail;
  }
  for (int i = 0; i < nc; i++)
    if (!lmwb_code_clamp_parse(&m->cfg, clamp_text[i], &clamps[i], &err)) {
      g_prefix_error(&err, "--clamp-code: ");
      goto fail;
    }
  LmwbSteerOptions so = {.prompts = (const char *const *)prompts, .word = word, .samples = samples};
  lmwb_generate_options_init(&so.gen);
  so.gen.max_tokens = max_tokens;
  so.gen.temperature = (float)temperature;
  so.gen.top_k = top_k;
  so.gen.top_p = (float)top_p;
  so.gen.seed = (guint64)seed;
  so.gen.stop_at_eos = FALSE;
  if (!lmwb_codebook_steer(m, cb, clamps, nc, &so, lmwb_cli_reporter(), &res, &err)) goto fail;
  if (isatty(2)) fputc('\n', stderr);
  b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "word");
  json_builder_add_string_value(b, word);
  json_builder_set_member_name(b, "samples");
  json_builder_add_int_value(b, res.samples);
  json_builder_set_member_name(b, "share_off");
  json_builder_add_double_value(b, res.share_off);
  json_builder_set_member_name(b, "share_on");
  json_builder_add_double_value(b, res.share_on);
  json_builder_set_member_name(b, "prompts");
  json_builder_begin_array(b);
  for (int p = 0; p < res.n_prompts; p++) {
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "prompt");
    json_builder_add_string_value(b, prompts[p]);
    json_builder_set_member_name(b, "hits_off");
    json_builder_add_int_value(b, res.hits_off[p]);
    json_builder_set_member_name(b, "hits_on");
    json_builder_add_int_value(b, res.hits_on[p]);
    json_builder_set_member_name(b, "example_off");
    json_builder_add_string_value(b, res.examples_off[p]);
    json_builder_set_member_name(b, "example_on");
    json_builder_add_string_value(b, res.examples_on[p]);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  if (plot) {
    g_autofree char *title = g_strdup_printf("generations containing \"%s\"", word);
    LmwbPlot *pl = lmwb_plot_new(LMWB_PLOT_BAR, title, NULL, "share of samples");
    const char *labels[2] = {"code off", "code on"};
    double values[2] = {res.share_off, res.share_on};
    lmwb_plot_set_bars(pl, 2, labels, values);
    lmwb_plot_set_y_range(pl, 0, 1);
    gboolean ok = lmwb_plot_save(pl, plot, 600, 400, &err);
    lmwb_plot_free(pl);
    if (!ok) goto fail;
  }
  if (!lmwb_cli_emit_json(json_builder_get_root(b), lmwb_cli.out, &err)) goto fail;
  goto done;
fail:
  status = lmwb_cli_fail(err);
done:
  g_clear_object(&b);
  lmwb_steer_result_clear(&res);
  for (int i = 0; i < nc; i++) lmwb_code_clamp_clear(&clamps[i]);
  g_free(clamps);
  lmwb_codebooks_free(cb);
  lmwb_model_unref(m);
  return status;
}
