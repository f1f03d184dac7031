/* lmwb-batch graph: the attribution graph of a prompt through a transcoder set (circuits/
 * attribution.h), pruned as circuit-tracer prunes or whole, written as Neuronpedia graph JSON,
 * Graphviz DOT, SVG or PNG (circuits/graph.h). Everything is checked before the attribution runs;
 * nothing is written on an error. */
#include "ui/batch/cli.h"
#include "ui/batch/commands.h"
#include "circuits/attribution.h"
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef enum { OUT_JSON, OUT_DOT, OUT_SVG, OUT_PNG } OutFormat;

static gboolean parse_format(const char *text, const char *out, OutFormat *f, GError **error) {
  const char *names[] = {"json", "dot", "svg", "png"};
  const char *name = text;
  if (!name && out) { /* from the extension */
    const char *dot = strrchr(out, '.');
    name = "json";
    for (int i = 0; dot && i < 4; i++)
      if (g_ascii_strcasecmp(dot + 1, names[i]) == 0) name = names[i];
  }
  if (!name) name = "json";
  for (int i = 0; i < 4; i++)
    if (strcmp(name, names[i]) == 0) {
      *f = (OutFormat)i;
      return TRUE;
    }
  lmwb_input_error(error, "--format \"%s\" is not json, dot, svg or png", name);
  return FALSE;
}

static gboolean write_graph(const LmwbGraph *g, OutFormat f, const char *out, GError **error) {
  LmwbGraphDrawOptions d = {0};
  switch (f) {
  case OUT_JSON:
    if (out) return lmwb_graph_write_json(g, out, error);
    break;
  case OUT_DOT:
    if (out) return lmwb_graph_write_dot(g, &d, out, error);
    break;
  case OUT_SVG: return lmwb_graph_write_image(g, &d, LMWB_GRAPH_SVG, out, error);
  case OUT_PNG: return lmwb_graph_write_image(g, &d, LMWB_GRAPH_PNG, out, error);
  }
  g_autofree char *text = f == OUT_JSON ? lmwb_graph_to_json(g, NULL, error) : lmwb_graph_to_dot(g, &d, error);
  if (!text) return FALSE;
  fputs(text, stdout);
  return fflush(stdout) == 0;
}

/* What a script wants to know without reading the graph: sizes, scores and the logits. */
static void print_summary(const LmwbAttribution *a, const LmwbAttributionPrune *p, const LmwbGraph *g,
                          const LmwbModel *m, const char *out, const char *format) {
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "out");
  json_builder_add_string_value(b, out);
  json_builder_set_member_name(b, "format");
  json_builder_add_string_value(b, format);
  json_builder_set_member_name(b, "tokens");
  lmwb_json_add_tokens(b, m, a->tokens, (size_t)a->n_pos);
  json_builder_set_member_name(b, "active_features");
  json_builder_add_int_value(b, a->n_active);
  json_builder_set_member_name(b, "nodes");
  json_builder_add_int_value(b, g->n_nodes);
  json_builder_set_member_name(b, "edges");
  json_builder_add_int_value(b, g->n_edges);
  if (p) {
    const char *k[2] = {"replacement_score", "completeness_score"};
    double v[2] = {p->replacement, p->completeness};
    for (int i = 0; i < 2; i++) {
      json_builder_set_member_name(b, k[i]);
      if (isfinite(v[i])) json_builder_add_double_value(b, v[i]);
      else json_builder_add_null_value(b);
    }
  }
  json_builder_set_member_name(b, "logits");
  json_builder_begin_array(b);
  for (int i = 0; i < a->n_logits; i++) {
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "token");
    lmwb_json_add_tokens(b, m, &a->logit_token[i], 1);
    json_builder_set_member_name(b, "prob");
    json_builder_add_double_value(b, a->logit_prob[i]);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  GError *err = NULL;
  if (!lmwb_cli_emit_json(json_builder_get_root(b), NULL, &err)) lmwb_cli_fail(err);
}

int lmwb_cmd_graph(int argc, char **argv) {
  char *set_dir = NULL, *prompt = NULL, *ids_text = NULL, *format = NULL;
  double node_thr = LMWB_ATTRIBUTION_NODE_THRESHOLD, edge_thr = LMWB_ATTRIBUTION_EDGE_THRESHOLD;
  gboolean no_prune = FALSE;
  int max_features = 0, batch = 0;
  GOptionEntry e[] = {
    {"transcoders", 'T', 0, G_OPTION_ARG_FILENAME, &set_dir, "The transcoder set (one per MLP layer): SET/layer_{L}/ SAELens folders, or circuit-tracer's layer_{L}.safetensors + config.yaml (required)", "SET"},
    {"prompt", 'p', 0, G_OPTION_ARG_STRING, &prompt, "The prompt (encoded as the model's tokenizer does by default)", "TEXT"},
    {"ids", 0, 0, G_OPTION_ARG_STRING, &ids_text, "The prompt as token ids instead, e.g. 464,3290,318", "IDS"},
    {"node-threshold", 0, 0, G_OPTION_ARG_DOUBLE, &node_thr, "Keep the fewest nodes holding this share of the influence on the logits (default 0.8)", "X"},
    {"edge-threshold", 0, 0, G_OPTION_ARG_DOUBLE, &edge_thr, "Then the fewest edges holding this share of the edge influence (default 0.98)", "Y"},
    {"no-prune", 0, 0, G_OPTION_ARG_NONE, &no_prune, "Write every node and every non-zero edge, unpruned", NULL},
    {"max-feature-nodes", 0, 0, G_OPTION_ARG_INT, &max_features, "Attribute at most N features, the most influential (default: all active)", "N"},
    {"batch", 'b', 0, G_OPTION_ARG_INT, &batch, "Targets per backward pass (default 32; memory grows with it)", "N"},
    {"format", 'f', 0, G_OPTION_ARG_STRING, &format, "json (Neuronpedia / circuit-tracer graph JSON), dot, svg or png; default from --out's extension, else json", "FMT"},
    {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- the attribution graph of a prompt through transcoders",
                      "Replaces every MLP by its transcoder plus an error node, freezes attention patterns and norm\n"
                      "scales at their values on the prompt, and computes the direct effect of every node (active\n"
                      "feature, error, token embedding) on every other and on the top logits (until probability 0.95,\n"
                      "at most 10), as circuit-tracer does (Ameisen et al. 2025). The graph is pruned by influence on\n"
                      "the logits (--node-threshold, --edge-threshold) unless --no-prune. JSON and DOT go to --out or\n"
                      "stdout; SVG and PNG need --out. With --out, a summary is printed as JSON:\n"
                      "  {\"out\", \"format\", \"tokens\", \"active_features\", \"nodes\", \"edges\", \"replacement_score\",\n"
                      "   \"completeness_score\", \"logits\": [{\"token\", \"prob\"}, ...]}\n"
                      "Examples:\n"
                      "  lmwb-batch graph --transcoders data/models/tiny-world/transcoders --prompt \"...\" --out g.json\n"
                      "  lmwb-batch graph -T SET --prompt \"...\" --no-prune --out all.json\n"
                      "  lmwb-batch graph -T SET --prompt \"...\" --out g.svg",
                      "The JSON loads in Neuronpedia's graph viewer; node ids: features {layer}_{feature}_{pos}, errors\n"
                      "{layer}_-1_{pos}, embeddings E_{token}_{pos}, logits {n_layers+1}_{token}_{pos}. Without --model\n"
                      "the built-in model is used. Exit status: 0 ok, 2 bad input (the message names the file, tensor or\n"
                      "option; nothing is written), 1 other failure.",
                      e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if (!set_dir) return lmwb_cli_usage_error("--transcoders SET is required");
  if (!prompt && !ids_text) return lmwb_cli_usage_error("--prompt TEXT (or --ids) is required");
  if (prompt && ids_text) return lmwb_cli_usage_error("give --prompt or --ids, not both");
  if (prompt && !*prompt) return lmwb_cli_usage_error("--prompt is empty");
  if (!(node_thr >= 0 && node_thr <= 1) || !(edge_thr >= 0 && edge_thr <= 1))
    return lmwb_cli_usage_error("--node-threshold and --edge-threshold must be in [0, 1]");
  if (max_features < 0 || batch < 0) return lmwb_cli_usage_error("--max-feature-nodes and --batch must not be negative");
  GError *err = NULL;
  OutFormat f;
  if (!parse_format(format, lmwb_cli.out, &f, &err)) return lmwb_cli_fail(err);
  if ((f == OUT_SVG || f == OUT_PNG) && !lmwb_cli.out) return lmwb_cli_usage_error("--format svg and png need --out FILE");
  LmwbModel *m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  int32_t *ids = NULL;
  int B = 0, T = 0;
  LmwbTranscoderSet *set = NULL;
  LmwbAttribution *a = NULL;
  LmwbAttributionPrune *p = NULL;
  LmwbGraph *g = NULL;
  gboolean ok = lmwb_cli_input_ids(m, ids_text, prompt, &ids, &B, &T, &err);
  if (ok && B != 1) ok = (lmwb_input_error(&err, "--ids: give one prompt (no ';')"), FALSE);
  if (ok) ok = (set = lmwb_transcoder_set_load(set_dir, &m->cfg, &err)) != NULL;
  if (ok) {
    LmwbAttributionOptions o = {.batch = batch, .max_feature_nodes = max_features};
    ok = (a = lmwb_attribute(m, set, ids, T, &o, lmwb_cli_reporter(), &err)) != NULL;
    if (isatty(2)) fputc('\n', stderr);
  }
  if (ok && !no_prune) ok = (p = lmwb_attribution_prune(a, node_thr, edge_thr, &err)) != NULL;
  if (ok) ok = (g = lmwb_attribution_to_graph(a, p, m, set, prompt ? prompt : ids_text, &err)) != NULL;
  if (ok) ok = write_graph(g, f, lmwb_cli.out, &err);
  const char *names[] = {"json", "dot", "svg", "png"};
  if (ok && lmwb_cli.out) print_summary(a, p, g, m, lmwb_cli.out, names[f]);
  lmwb_graph_free(g);
  lmwb_attribution_prune_free(p);
  lmwb_attribution_free(a);
  lmwb_transcoder_set_free(set);
  g_free(ids);
  lmwb_model_unref(m);
  return ok ? 0 : lmwb_cli_fail(err);
}
