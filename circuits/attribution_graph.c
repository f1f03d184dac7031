/* An attribution as a circuit graph (circuits/graph.h): what the exporters and the desktop read. */
#include "analysis/neurons.h"
#include "app/core/errors.h"
#include "app/formats/tokenizer.h"
#include "circuits/attribution.h"
#include <math.h>

gboolean lmwb_attribution_feature_tokens(const LmwbModel *m, const LmwbTranscoder *tc, int feature, int top_k,
                                         int32_t *ids, float *logits, float *probs, GError **error) {
  if (!m || !tc) {
    lmwb_input_error(error, "feature tokens: no model or transcoder");
    return FALSE;
  }
  if (tc->d_out != m->cfg.d_model) {
    lmwb_input_error(error, "feature tokens: the transcoder writes %d values, the model's residual has %d", tc->d_out,
                     m->cfg.d_model);
    return FALSE;
  }
  if (feature < 0 || feature >= tc->d_sae) {
    lmwb_input_error(error, "feature %d is not in 0..%d", feature, tc->d_sae - 1);
    return FALSE;
  }
  return lmwb_neurons_decode_vector(m, tc->W_dec + (size_t)feature * tc->d_out, true, top_k, ids, logits, probs, NULL,
                                    error);
}

/* The token's text, quoted as circuit-tracer's labels quote it. */
static char *token_text(const LmwbModel *m, int32_t id) {
  if (m->tokenizer) {
    char *t = lmwb_tokenizer_token_text(m->tokenizer, id);
    if (t) return t;
  }
  return g_strdup_printf("<%d>", id);
}

/* A feature's label: its top decoded output tokens, `→ " the" " a" " an"`. */
static char *feature_label(const LmwbModel *m, const LmwbTranscoder *tc, int feature, GError **error) {
  int32_t ids[LMWB_ATTRIBUTION_LABEL_TOKENS];
  float probs[LMWB_ATTRIBUTION_LABEL_TOKENS];
  int k = MIN(LMWB_ATTRIBUTION_LABEL_TOKENS, m->cfg.vocab_size);
  if (!lmwb_attribution_feature_tokens(m, tc, feature, k, ids, NULL, probs, error)) return NULL;
  GString *s = g_string_new("→");
  for (int j = 0; j < k; j++) {
    char *t = token_text(m, ids[j]);
    g_string_append_printf(s, " \"%s\"", t);
    g_free(t);
  }
  return g_string_free(s, FALSE);
}

static gboolean add_nodes(LmwbGraph *g, const LmwbAttribution *a, const LmwbAttributionPrune *p, const LmwbModel *m,
                          const LmwbTranscoderSet *set, int *map, GError **error) {
  for (int i = 0; i < a->n_nodes; i++) {
    map[i] = -1;
    if (p && !p->node_keep[i]) continue;
    int node;
    char *label = NULL;
    if (i < a->n_features) {
      node = lmwb_graph_add_node(g, LMWB_GRAPH_FEATURE, a->feat_layer[i], a->feat_pos[i], a->feat_index[i],
                                 LMWB_GRAPH_PART_NONE, error);
      if (node < 0) return FALSE;
      g->nodes[node].activation = a->feat_act[i];
      g->nodes[node].has_activation = true;
      label = feature_label(m, set->layers[a->feat_layer[i]], a->feat_index[i], error);
      if (!label) return FALSE;
    } else if (i < lmwb_attr_token_node(a, 0)) {
      int e = i - a->n_features;
      node = lmwb_graph_add_node(g, LMWB_GRAPH_ERROR, e / a->n_pos, e % a->n_pos, -1, LMWB_GRAPH_PART_NONE, error);
      label = g_strdup_printf("MLP %d error @%d", e / a->n_pos, e % a->n_pos);
    } else if (i < lmwb_attr_logit_node(a, 0)) {
      int pos = i - lmwb_attr_token_node(a, 0);
      node = lmwb_graph_add_node(g, LMWB_GRAPH_TOKEN, -1, pos, a->tokens[pos], LMWB_GRAPH_PART_NONE, error);
      char *t = token_text(m, a->tokens[pos]);
      label = g_strdup_printf("\"%s\" @%d", t, pos);
      g_free(t);
    } else {
      int l = i - lmwb_attr_logit_node(a, 0);
      node = lmwb_graph_add_node(g, LMWB_GRAPH_LOGIT, 0, a->n_pos - 1, a->logit_token[l], LMWB_GRAPH_PART_NONE, error);
      if (node >= 0) {
        g->nodes[node].token_prob = a->logit_prob[l];
        g->nodes[node].target_logit = l == 0;
        char *t = token_text(m, a->logit_token[l]);
        label = lmwb_graph_logit_label(t, a->logit_prob[l]);
        g_free(t);
      }
    }
    if (node < 0) {
      g_free(label);
      return FALSE;
    }
    if (p) {
      g->nodes[node].influence = p->influence[i];
      g->nodes[node].has_influence = true;
    }
    gboolean ok = !label || lmwb_graph_node_set_label(g, node, label, error);
    g_free(label);
    if (!ok) return FALSE;
    map[i] = node;
  }
  return TRUE;
}

static gboolean add_edges(LmwbGraph *g, const LmwbAttribution *a, const LmwbAttributionPrune *p, const int *map,
                          GError **error) {
  size_t n = (size_t)a->n_nodes;
  for (size_t t = 0; t < n; t++) {
    if (map[t] < 0) continue;
    for (size_t s = 0; s < n; s++) {
      float w = a->adj[t * n + s];
      if (map[s] < 0 || w == 0.0f || (p && !p->edge_keep[t * n + s])) continue;
      if (lmwb_graph_add_edge(g, map[s], map[t], w, error) < 0) return FALSE;
    }
  }
  return TRUE;
}

static gboolean set_metadata(LmwbGraph *g, const LmwbAttribution *a, const LmwbAttributionPrune *p,
                             const LmwbModel *m, const LmwbTranscoderSet *set, const char *prompt, GError **error) {
  char **texts = g_new0(char *, a->n_pos + 1);
  for (int i = 0; i < a->n_pos; i++) texts[i] = token_text(m, a->tokens[i]);
  gboolean ok = lmwb_graph_set_prompt(g, prompt ? prompt : "", (const char *const *)texts, a->tokens, a->n_pos, error);
  g_strfreev(texts);
  if (!ok) return FALSE;
  g_free(g->model_name);
  g->model_name = m->dir ? g_path_get_basename(m->dir) : g_strdup(lmwb_arch_name(m->cfg.arch));
  if (set->source) g_ptr_array_add(g->transcoders, g_strdup(set->source));
  if (!p) return TRUE;
  g->node_threshold = p->node_threshold;
  g->edge_threshold = p->edge_threshold;
  g->has_node_threshold = g->has_edge_threshold = true;
  const char *keys[2] = {"replacement_score", "completeness_score"};
  double values[2] = {p->replacement, p->completeness};
  for (int i = 0; i < 2; i++) {
    char buf[G_ASCII_DTOSTR_BUF_SIZE];
    if (isfinite(values[i]) && !lmwb_graph_set_extra(g, keys[i], g_ascii_dtostr(buf, sizeof buf, values[i]), error))
      return FALSE;
  }
  return TRUE;
}

LmwbGraph *lmwb_attribution_to_graph(const LmwbAttribution *a, const LmwbAttributionPrune *prune, const LmwbModel *m,
                                     const LmwbTranscoderSet *set, const char *prompt, GError **error) {
  if (!a || !m || !set) {
    lmwb_input_error(error, "attribution graph: no attribution, model or transcoder set");
    return NULL;
  }
  if (set->n_layers != a->n_layers || m->cfg.n_layer != a->n_layers) {
    lmwb_input_error(error, "attribution graph: the attribution has %d layers, the set %d and the model %d",
                     a->n_layers, set->n_layers, m->cfg.n_layer);
    return NULL;
  }
  LmwbGraph *g = lmwb_graph_new(LMWB_GRAPH_ATTRIBUTION, a->n_layers, error);
  if (!g) return NULL;
  int *map = g_new(int, a->n_nodes);
  gboolean ok = set_metadata(g, a, prune, m, set, prompt, error) && add_nodes(g, a, prune, m, set, map, error) &&
                add_edges(g, a, prune, map, error);
  g_free(map);
  if (!ok) {
    lmwb_graph_free(g);
    return NULL;
  }
  return g;
}
