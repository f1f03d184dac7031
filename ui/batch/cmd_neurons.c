/* lmwb-batch neurons decode | search | sweep | compare: LM-head neuron decoding and clamping.
 * Each parses, calls analysis/neurons.h, and writes JSON (decode also CSV; sweep also a plot). */
#include "ui/batch/cli.h"
#include "app/formats/json_text.h"
#include "ui/batch/commands.h"
#include "analysis/neurons.h"
#include "app/core/atomic_file.h"
#include "app/formats/half.h"
#include "app/formats/tokenizer.h"
#include "ui/plot/plot.h"
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define NEURONS_HELP \
  "A neuron's vectors: in = its input weights (GPT-2 c_fc column, Llama up_proj row, NeoX dense_h_to_4h\n" \
  "row), gate = the SwiGLU gate_proj row (Llama family only), out = its output weights (GPT-2 c_proj row,\n" \
  "Llama down_proj column). Decoding multiplies the vector by the final norm's gain (LayerNorm/RMSNorm\n" \
  "weight; the LayerNorm bias is ignored) unless --no-norm, projects it through the unembedding and\n" \
  "ranks tokens by softmax probability over the whole vocabulary.\n" \
  "Without --model the built-in model is used. Exit status: 0 ok, 2 bad input (the message names it),\n" \
  "1 other failure."


static void csv_field(GString *g, const char *s) {
  g_string_append_c(g, '"');
  for (const char *p = s ? s : ""; *p; p++) {
    if (*p == '"') g_string_append_c(g, '"');
    g_string_append_c(g, *p);
  }
  g_string_append_c(g, '"');
}

static char *token_text(const LmwbModel *m, int32_t id) {
  char *t = m->tokenizer ? lmwb_tokenizer_token_text(m->tokenizer, id) : NULL;
  return t ? t : g_strdup_printf("<%d>", id);
}

static gboolean write_text(const char *out, const GString *g, GError **error) {
  if (out) return lmwb_file_write_atomic(out, g->str, g->len, error);
  fwrite(g->str, 1, g->len, stdout);
  fflush(stdout);
  return TRUE;
}

static gboolean has_suffix_ci(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !g_ascii_strcasecmp(s + n - k, suffix);
}

/* --layers and --which shared by decode, search and compare. */
static gboolean common_decode_options(const LmwbModel *m, const char *layers, const char *which, gboolean no_norm,
                                      LmwbNeuronDecodeOptions *o, int **layer_list, GError **err) {
  lmwb_neuron_decode_options_init(o);
  int n = 0;
  if (!lmwb_neurons_parse_layers(layers, m->cfg.n_layer, layer_list, &n, err)) {
    g_prefix_error(err, "--layers: ");
    return FALSE;
  }
  o->layers = *layer_list;
  o->n_layers = n;
  o->no_norm = no_norm;
  if ((which && !lmwb_neuron_which_parse(which, &o->which, err)) || !lmwb_neuron_which_check(m, o->which, err)) {
    g_prefix_error(err, "--which: ");
    return FALSE;
  }
  return TRUE;
}

/* ---- decode ---------------------------------------------------------------------------------- */

int lmwb_cmd_neurons_decode(int argc, char **argv) {
  char *layers = NULL, *which = NULL;
  int top = LMWB_NEURONS_DEFAULT_TOP_K, block = 0;
  gboolean no_norm = FALSE;
  GOptionEntry e[] = {{"layers", 'l', 0, G_OPTION_ARG_STRING, &layers, "Layers to decode, e.g. 0,3-5 (default: all)", "LIST"},
                      {"which", 'w', 0, G_OPTION_ARG_STRING, &which, "Vector to decode: in (default), out or gate", "in|out|gate"},
                      {"top", 'k', 0, G_OPTION_ARG_INT, &top, "Tokens per neuron (default 10)", "K"},
                      {"no-norm", 0, 0, G_OPTION_ARG_NONE, &no_norm, "Do not multiply by the final norm's gain", NULL},
                      {"block", 0, 0, G_OPTION_ARG_INT, &block, "Neurons per GEMM block (default: ~128 MB of logits)", "N"},
                      {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- decode MLP neurons through the LM head",
                      "Writes every neuron of the chosen layers with its top-K tokens as JSON\n"
                      "  {\"neurons\":[{\"layer\":L,\"index\":N,\"which\":\"in\",\"top\":[{\"id\":..,\"token\":\"..\",\"prob\":..,\"logit\":..},..]},..]}\n"
                      "or, when --out ends in .csv, one row per neuron: layer,index,which,rank1_token,rank1_prob,...\n"
                      "Example: lmwb-batch neurons decode --model gpt2 --layers 0,3-5 --which out --top 5 --out out.json",
                      NEURONS_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if (top < 1) return lmwb_cli_usage_error("--top %d must be at least 1", top);
  if (block < 0) return lmwb_cli_usage_error("--block %d must be positive", block);
  GError *err = NULL;
  LmwbModel *m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  LmwbNeuronDecodeOptions o;
  g_autofree int *ll = NULL;
  LmwbNeuronDecode *d = NULL;
  if (common_decode_options(m, layers, which, no_norm, &o, &ll, &err)) {
    o.top_k = top;
    o.block = block;
    d = lmwb_neurons_decode(m, &o, lmwb_cli_reporter(), &err);
  }
  if (!d) {
    lmwb_model_unref(m);
    return lmwb_cli_fail(err);
  }
  if (isatty(2)) fputc('\n', stderr);
  /* The rows are written by hand below: a NaN would come out as "nan", which is not JSON. */
  size_t nq = (size_t)d->n_rows * d->top_k;
  if (lmwb_f32_find_nonfinite(d->logits, nq) < nq || lmwb_f32_find_nonfinite(d->probs, nq) < nq) {
    g_set_error(&err, LMWB_ERROR, LMWB_ERROR_FAILED, "a decoded logit or probability is not a finite number "
                "(NaN or infinity): the model's weights overflow; nothing written");
    lmwb_neuron_decode_free(d);
    lmwb_model_unref(m);
    return lmwb_cli_fail(err);
  }
  gboolean csv = lmwb_cli.out && has_suffix_ci(lmwb_cli.out, ".csv");
  GString *g = g_string_sized_new((size_t)d->n_rows * d->top_k * 48 + 64);
  const char *wn = lmwb_neuron_which_name(d->which);
  char num[G_ASCII_DTOSTR_BUF_SIZE];
  if (csv) {
    g_string_append(g, "layer,index,which");
    for (int j = 0; j < d->top_k; j++) g_string_append_printf(g, ",rank%d_token,rank%d_prob", j + 1, j + 1);
    g_string_append_c(g, '\n');
  } else {
    g_string_append(g, "{\"neurons\":[");
  }
  for (int r = 0; r < d->n_rows; r++) {
    if (csv) g_string_append_printf(g, "%d,%d,%s", d->layer[r], d->index[r], wn);
    else g_string_append_printf(g, "%s{\"layer\":%d,\"index\":%d,\"which\":\"%s\",\"top\":[", r ? "," : "", d->layer[r], d->index[r], wn);
    for (int j = 0; j < d->top_k; j++) {
      size_t q = (size_t)r * d->top_k + j;
      g_autofree char *t = token_text(m, d->ids[q]);
      if (csv) {
        g_string_append_c(g, ',');
        csv_field(g, t);
        g_string_append_printf(g, ",%s", g_ascii_formatd(num, sizeof num, "%.8g", d->probs[q]));
      } else {
        g_string_append_printf(g, "%s{\"id\":%d,\"token\":", j ? "," : "", d->ids[q]);
        lmwb_json_append_string(g, t);
        g_string_append_printf(g, ",\"prob\":%s", g_ascii_formatd(num, sizeof num, "%.8g", d->probs[q]));
        g_string_append_printf(g, ",\"logit\":%s}", g_ascii_formatd(num, sizeof num, "%.8g", d->logits[q]));
      }
    }
    g_string_append(g, csv ? "\n" : "]}");
  }
  if (!csv) g_string_append(g, "]}\n");
  gboolean ok = write_text(lmwb_cli.out, g, &err);
  g_string_free(g, TRUE);
  lmwb_neuron_decode_free(d);
  lmwb_model_unref(m);
  return ok ? 0 : lmwb_cli_fail(err);
}

/* ---- search ---------------------------------------------------------------------------------- */

int lmwb_cmd_neurons_search(int argc, char **argv) {
  char *token = NULL, *tokens = NULL, *regex = NULL, *layers = NULL, *which = NULL;
  int top = 0, limit = 50;
  gboolean no_norm = FALSE;
  GOptionEntry e[] = {{"token", 't', 0, G_OPTION_ARG_STRING, &token, "One token, as text (\" dog\", mind the leading space) or raw (\"Ġdog\")", "TOK"},
                      {"tokens", 0, 0, G_OPTION_ARG_STRING, &tokens, "Several tokens, comma-separated (\" dog, cat\" = \" dog\" and \" cat\"); the best rank counts", "A,B"},
                      {"regex", 'r', 0, G_OPTION_ARG_STRING, &regex, "Every token whose text matches a regular expression (GRegex), e.g. \"^ [Dd]ogs?$\"", "RE"},
                      {"layers", 'l', 0, G_OPTION_ARG_STRING, &layers, "Layers to search, e.g. 0,3-5 (default: all)", "LIST"},
                      {"which", 'w', 0, G_OPTION_ARG_STRING, &which, "Vector to decode: in (default), out or gate", "in|out|gate"},
                      {"top", 'k', 0, G_OPTION_ARG_INT, &top, "Only neurons that rank a target token within their top K (default: no filter)", "K"},
                      {"limit", 'n', 0, G_OPTION_ARG_INT, &limit, "At most N neurons (default 50; 0 = all)", "N"},
                      {"no-norm", 0, 0, G_OPTION_ARG_NONE, &no_norm, "Do not multiply by the final norm's gain", NULL},
                      {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- find the neurons that promote given tokens",
                      "Ranks every neuron by the rank (1 = top) of the best target token in its decoded row, then by\n"
                      "that token's probability. Prints {\"tokens\":[..],\"neurons\":[{\"layer\",\"index\",\"which\",\"rank\",\"id\",\"token\",\"prob\"},..]}.\n"
                      "Example: lmwb-batch neurons search --model gpt2 --token \" dog\" --top 10 --limit 20\n"
                      "Example: lmwb-batch neurons search --regex \"^ (cat|cats|kitten)$\" --which out",
                      NEURONS_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if ((token != NULL) + (tokens != NULL) + (regex != NULL) != 1) return lmwb_cli_usage_error("give exactly one of --token, --tokens or --regex");
  if (top < 0 || limit < 0) return lmwb_cli_usage_error("--top and --limit must not be negative");
  GError *err = NULL;
  LmwbModel *m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  LmwbNeuronSearchOptions so = {0};
  g_autofree int *ll = NULL;
  g_autofree int32_t *ids = NULL;
  int n_ids = 0;
  gboolean ok = common_decode_options(m, layers, which, no_norm, &so.decode, &ll, &err);
  if (ok && regex) {
    ok = (ids = lmwb_neurons_tokens_matching(m, regex, &n_ids, &err)) != NULL;
    if (!ok) g_prefix_error(&err, "--regex: ");
  } else if (ok) {
    g_auto(GStrv) parts = token ? g_strsplit(token, "\x01", -1) : g_strsplit(tokens, ",", -1);
    ids = g_new(int32_t, MAX(g_strv_length(parts), 1));
    for (char **p = parts; *p && ok; p++) {
      if (!**p) continue;
      ok = lmwb_neurons_token_lookup(m, *p, &ids[n_ids], &err);
      if (ok) n_ids++;
    }
    if (ok && n_ids == 0) {
      lmwb_input_error(&err, "--tokens \"%s\": no token given", tokens);
      ok = FALSE;
    }
  }
  LmwbNeuronHit *hits = NULL;
  int n_hits = 0;
  if (ok) {
    so.tokens = ids;
    so.n_tokens = n_ids;
    so.max_rank = top;
    so.limit = limit;
    ok = (hits = lmwb_neurons_search(m, &so, &n_hits, lmwb_cli_reporter(), &err)) != NULL;
  }
  if (!ok) {
    lmwb_model_unref(m);
    return lmwb_cli_fail(err);
  }
  if (isatty(2)) fputc('\n', stderr);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "which");
  json_builder_add_string_value(b, lmwb_neuron_which_name(so.decode.which));
  json_builder_set_member_name(b, "tokens");
  lmwb_json_add_tokens(b, m, ids, MIN(n_ids, 1000));
  json_builder_set_member_name(b, "neurons");
  json_builder_begin_array(b);
  for (int i = 0; i < n_hits; i++) {
    g_autofree char *t = token_text(m, hits[i].token);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "layer");
    json_builder_add_int_value(b, hits[i].layer);
    json_builder_set_member_name(b, "index");
    json_builder_add_int_value(b, hits[i].index);
    json_builder_set_member_name(b, "which");
    json_builder_add_string_value(b, lmwb_neuron_which_name(so.decode.which));
    json_builder_set_member_name(b, "rank");
    json_builder_add_int_value(b, hits[i].rank);
    json_builder_set_member_name(b, "id");
    json_builder_add_int_value(b, hits[i].token);
    json_builder_set_member_name(b, "token");
    json_builder_add_string_value(b, t);
    json_builder_set_member_name(b, "prob");
    json_builder_add_double_value(b, hits[i].prob);
    json_builder_set_member_name(b, "logit");
    json_builder_add_double_value(b, hits[i].logit);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  g_free(hits);
  lmwb_model_unref(m);
  return lmwb_cli_emit_json(json_builder_get_root(b), lmwb_cli.out, &err) ? 0 : lmwb_cli_fail(err);
}

/* ---- sweep ----------------------------------------------------------------------------------- */

static void sweep_metric(LmwbReporter *r, const char *series, double x, double y) {
  LmwbPlot *p = r->user;
  if (p) lmwb_plot_append(p, 0, x, y);
}

int lmwb_cmd_neurons_sweep(int argc, char **argv) {
  int layer = G_MININT, neuron = G_MININT, steps = 11, generate = 0;
  double from = 0, to = 10, temperature = 0;
  gint64 seed = 0;
  char *target = NULL, *prompt = NULL, *plot = NULL, *site = NULL, *positions = NULL;
  GOptionEntry e[] = {{"layer", 'L', 0, G_OPTION_ARG_INT, &layer, "Layer of the neuron", "L"},
                      {"neuron", 'N', 0, G_OPTION_ARG_INT, &neuron, "Neuron index within the layer", "N"},
                      {"target", 0, 0, G_OPTION_ARG_STRING, &target, "Token whose probability is measured (\" dog\" or raw \"Ġdog\")", "TOK"},
                      {"prompt", 'p', 0, G_OPTION_ARG_STRING, &prompt, "Prompt text", "STR"},
                      {"from", 0, 0, G_OPTION_ARG_DOUBLE, &from, "First clamp value (default 0)", "A"},
                      {"to", 0, 0, G_OPTION_ARG_DOUBLE, &to, "Last clamp value (default 10)", "B"},
                      {"steps", 0, 0, G_OPTION_ARG_INT, &steps, "Number of values from A to B (default 11)", "S"},
                      {"generate", 'g', 0, G_OPTION_ARG_INT, &generate, "Measure the mean probability over an N-token continuation instead of the next token", "N"},
                      {"temperature", 0, 0, G_OPTION_ARG_DOUBLE, &temperature, "Sampling temperature of the continuation (0 = greedy, default)", "T"},
                      {"seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Sampling seed (default 0)", "S"},
                      {"positions", 0, 0, G_OPTION_ARG_STRING, &positions, "Clamp only at these absolute positions (default: every position)", "P1,P2"},
                      {"clamp-site", 0, 0, G_OPTION_ARG_STRING, &site, "post (after the activation, default) or pre", "post|pre"},
                      {"plot", 0, 0, G_OPTION_ARG_FILENAME, &plot, "Also draw the curve to a .png, .svg or .pdf", "F"},
                      {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- probability of a token as a neuron's clamp value moves",
                      "Clamps blocks.L.mlp.hook_post[N] (or hook_pre) to each value and measures the target's probability:\n"
                      "at the next position, or with --generate N averaged over an N-token continuation (clamped too).\n"
                      "Prints {\"layer\",\"neuron\",\"target\",\"baseline\",\"points\":[{\"value\",\"prob\"},..]}.\n"
                      "Example: lmwb-batch neurons sweep --layer 3 --neuron 1021 --target \" dog\" --prompt \"My favourite animal is\"\n"
                      "         --from 0 --to 20 --steps 21 --plot sweep.png",
                      NEURONS_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if (layer == G_MININT || neuron == G_MININT) return lmwb_cli_usage_error("--layer L and --neuron N are required");
  if (!target || !prompt) return lmwb_cli_usage_error("--target TOKEN and --prompt STR are required");
  if (site && strcmp(site, "post") && strcmp(site, "pre")) return lmwb_cli_usage_error("--clamp-site \"%s\": expected post or pre", site);
  if (plot && !lmwb_cli_plot_path_ok(plot))
    return lmwb_cli_usage_error("--plot \"%s\": expected a .png, .svg or .pdf file", plot);
  GError *err = NULL;
  LmwbModel *m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  LmwbNeuronSweepOptions o = {.layer = layer, .neuron = neuron, .at_pre = site && !strcmp(site, "pre"), .from = from,
                              .to = to, .steps = steps, .generate = generate, .temperature = (float)temperature,
                              .seed = (guint64)seed};
  g_autofree int32_t *ids = NULL;
  g_autofree int *pos = NULL;
  int B = 0, T = 0;
  gboolean ok = lmwb_neurons_token_lookup(m, target, &o.target, &err) &&
                lmwb_cli_input_ids(m, NULL, prompt, &ids, &B, &T, &err);
  if (ok && positions) {
    ok = lmwb_neuron_clamp_parse_positions(&m->cfg, positions, &pos, &o.n_positions, &err);
    if (ok) o.positions = pos;
    else g_prefix_error(&err, "--positions: ");
  }
  LmwbPlot *p = NULL;
  LmwbNeuronSweep *s = NULL;
  if (ok) {
    o.prompt = ids;
    o.n_prompt = T;
    g_autofree char *tt = token_text(m, o.target);
    g_autofree char *title = g_strdup_printf("Clamp L%d N%d (%s): p(\"%s\")%s", layer, neuron, o.at_pre ? "pre" : "post", tt,
                                             generate > 0 ? " over the continuation" : " at the next token");
    p = lmwb_plot_new(LMWB_PLOT_LINE, title, "clamp value", "probability");
    lmwb_plot_add_series(p, "p(target)");
    LmwbReporter *rep = lmwb_cli_reporter();
    rep->metric = sweep_metric; /* live points into the plot, as a GUI would */
    rep->user = p;
    s = lmwb_neurons_sweep(m, &o, rep, &err);
    rep->metric = NULL;
    rep->user = NULL;
    ok = s != NULL;
  }
  if (ok && plot) {
    int bs = lmwb_plot_add_series(p, "no clamp");
    lmwb_plot_append(p, bs, s->values[0], s->baseline);
    lmwb_plot_append(p, bs, s->values[s->n - 1], s->baseline);
    ok = lmwb_plot_save(p, plot, 800, 500, &err);
  }
  if (p) lmwb_plot_free(p);
  if (!ok) {
    lmwb_neuron_sweep_free(s);
    lmwb_model_unref(m);
    return lmwb_cli_fail(err);
  }
  if (isatty(2)) fputc('\n', stderr);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "layer");
  json_builder_add_int_value(b, layer);
  json_builder_set_member_name(b, "neuron");
  json_builder_add_int_value(b, neuron);
  json_builder_set_member_name(b, "site");
  json_builder_add_string_value(b, o.at_pre ? "hook_pre" : "hook_post");
  json_builder_set_member_name(b, "target");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "id");
  json_builder_add_int_value(b, o.target);
  json_builder_set_member_name(b, "token");
  g_autofree char *tt = token_text(m, o.target);
  json_builder_add_string_value(b, tt);
  json_builder_end_object(b);
  json_builder_set_member_name(b, "measure");
  json_builder_add_string_value(b, generate > 0 ? "mean over continuation" : "next token");
  json_builder_set_member_name(b, "baseline");
  json_builder_add_double_value(b, s->baseline);
  json_builder_set_member_name(b, "points");
  json_builder_begin_array(b);
  for (int i = 0; i < s->n; i++) {
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "value");
    json_builder_add_double_value(b, s->values[i]);
    json_builder_set_member_name(b, "prob");
    json_builder_add_double_value(b, s->probs[i]);
    if (s->generated) {
      g_autofree char *text = m->tokenizer ? lmwb_tokenizer_decode(m->tokenizer, s->generated[i], s->n_generated[i], TRUE, NULL) : g_strdup("");
      json_builder_set_member_name(b, "completion");
      json_builder_add_string_value(b, text);
    }
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  lmwb_neuron_sweep_free(s);
  lmwb_model_unref(m);
  return lmwb_cli_emit_json(json_builder_get_root(b), lmwb_cli.out, &err) ? 0 : lmwb_cli_fail(err);
}

/* ---- compare --------------------------------------------------------------------------------- */

int lmwb_cmd_neurons_compare(int argc, char **argv) {
  char *other = NULL, *layers = NULL, *which = NULL;
  int top = 10, changed = 20;
  gboolean no_norm = FALSE;
  GOptionEntry e[] = {{"other", 0, 0, G_OPTION_ARG_FILENAME, &other, "The second model folder (same shapes as --model)", "DIR"},
                      {"layers", 'l', 0, G_OPTION_ARG_STRING, &layers, "Layers to compare, e.g. 0,3-5 (default: all)", "LIST"},
                      {"which", 'w', 0, G_OPTION_ARG_STRING, &which, "Vector to decode: in (default), out or gate", "in|out|gate"},
                      {"top", 'k', 0, G_OPTION_ARG_INT, &top, "K of the top-K overlap reported for changed neurons (default 10)", "K"},
                      {"changed", 'n', 0, G_OPTION_ARG_INT, &changed, "How many most-changed neurons to list (default 20)", "N"},
                      {"no-norm", 0, 0, G_OPTION_ARG_NONE, &no_norm, "Do not multiply by the final norm's gain", NULL},
                      {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- compare two models' decoded neurons (e.g. base vs fine-tuned)",
                      "Prints the share of neurons whose top-1 token is the same, per layer and overall, and the neurons\n"
                      "that changed most: lowest cosine similarity between their two mean-centred decoded logit rows\n"
                      "(with their top-K overlap). The models must have the same shapes.\n"
                      "Example: lmwb-batch neurons compare --model base/ --other finetuned/ --which in",
                      NEURONS_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if (!other) return lmwb_cli_usage_error("--other DIR (the second model) is required");
  if (top < 1 || changed < 1) return lmwb_cli_usage_error("--top and --changed must be at least 1");
  GError *err = NULL;
  LmwbModel *a = lmwb_cli_load_model(&err);
  if (!a) return lmwb_cli_fail(err);
  LmwbModel *b2 = lmwb_model_load(other, &err);
  if (!b2) {
    lmwb_model_unref(a);
    return lmwb_cli_fail(err);
  }
  LmwbNeuronDecodeOptions o;
  g_autofree int *ll = NULL;
  LmwbNeuronCompare *c = NULL;
  if (common_decode_options(a, layers, which, no_norm, &o, &ll, &err)) {
    o.top_k = top;
    c = lmwb_neurons_compare(a, b2, &o, changed, lmwb_cli_reporter(), &err);
  }
  if (!c) {
    lmwb_model_unref(a);
    lmwb_model_unref(b2);
    return lmwb_cli_fail(err);
  }
  if (isatty(2)) fputc('\n', stderr);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "which");
  json_builder_add_string_value(b, lmwb_neuron_which_name(c->which));
  json_builder_set_member_name(b, "same_top1_overall");
  json_builder_add_double_value(b, c->overall);
  json_builder_set_member_name(b, "mean_cosine");
  json_builder_add_double_value(b, c->mean_cosine);
  json_builder_set_member_name(b, "layers");
  json_builder_begin_array(b);
  for (int i = 0; i < c->n_layers; i++) {
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "layer");
    json_builder_add_int_value(b, c->layers[i]);
    json_builder_set_member_name(b, "same_top1");
    json_builder_add_double_value(b, c->same_top1[i]);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_set_member_name(b, "most_changed");
  json_builder_begin_array(b);
  for (int i = 0; i < c->n_changed; i++) {
    const LmwbNeuronChange *x = &c->changed[i];
    g_autofree char *ta = token_text(a, x->top_a);
    g_autofree char *tb = token_text(b2, x->top_b);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "layer");
    json_builder_add_int_value(b, x->layer);
    json_builder_set_member_name(b, "index");
    json_builder_add_int_value(b, x->index);
    json_builder_set_member_name(b, "cosine");
    json_builder_add_double_value(b, x->cosine);
    json_builder_set_member_name(b, "top_overlap");
    json_builder_add_double_value(b, x->overlap);
    json_builder_set_member_name(b, "top1_model");
    json_builder_add_string_value(b, ta);
    json_builder_set_member_name(b, "top1_other");
    json_builder_add_string_value(b, tb);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  lmwb_neuron_compare_free(c);
  lmwb_model_unref(a);
  lmwb_model_unref(b2);
  return lmwb_cli_emit_json(json_builder_get_root(b), lmwb_cli.out, &err) ? 0 : lmwb_cli_fail(err);
}
