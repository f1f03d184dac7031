/* The circuit graph model: creation, metadata, nodes and edges (circuits/graph.h). */
#include "circuits/graph.h"

#include <string.h>

#include "app/core/errors.h"
#include "circuits/graph_private.h"

static const char *const method_names[] = {"attribution", "edge-pruning"};
static const char *const kind_names[] = {"feature", "error", "token", "logit", "input",
                                         "head",    "mlp",   "reader", "output"};

const char *lmwb_graph_method_name(LmwbGraphMethod m) {
  return (unsigned)m < G_N_ELEMENTS(method_names) ? method_names[m] : "?";
}

int lmwb_graph_name_index(const char *const *names, unsigned n, const char *text, gboolean fold_case) {
  for (unsigned i = 0; text && i < n; i++)
    if (fold_case ? !g_ascii_strcasecmp(text, names[i]) : !strcmp(text, names[i])) return (int)i;
  return -1;
}

gboolean lmwb_graph_method_parse(const char *text, LmwbGraphMethod *out, GError **error) {
  int i = lmwb_graph_name_index(method_names, G_N_ELEMENTS(method_names), text, FALSE);
  if (i >= 0) {
    *out = (LmwbGraphMethod)i;
    return TRUE;
  }
  lmwb_input_error(error, "unknown graph method \"%s\" (attribution or edge-pruning)", text ? text : "");
  return FALSE;
}

const char *lmwb_graph_kind_name(LmwbGraphNodeKind k) {
  return (unsigned)k < G_N_ELEMENTS(kind_names) ? kind_names[k] : "?";
}

gboolean lmwb_graph_kind_is_edge_pruning(LmwbGraphNodeKind k) {
  return k >= LMWB_GRAPH_INPUT;
}

LmwbGraph *lmwb_graph_new(LmwbGraphMethod method, int n_layers, GError **error) {
  if ((unsigned)method > LMWB_GRAPH_EDGE_PRUNING) {
    lmwb_input_error(error, "graph: unknown method %d", (int)method);
    return NULL;
  }
  if (n_layers < 1 || n_layers > LMWB_GRAPH_MAX_LAYERS) {
    lmwb_input_error(error, "graph: n_layers %d is outside 1..%d", n_layers, LMWB_GRAPH_MAX_LAYERS);
    return NULL;
  }
  LmwbGraph *g = g_new0(LmwbGraph, 1);
  g->method = method;
  g->n_layers = n_layers;
  g->slug = g_strdup("");
  g->model_name = g_strdup("");
  g->prompt = g_strdup("");
  g->prompt_tokens = g_new0(char *, 1);
  g->clicked_id = g_strdup("");
  g->sg_pos = g_strdup("");
  g->transcoders = g_ptr_array_new_with_free_func(g_free);
  g->supernodes = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
  g->extras = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  g->priv = g_new0(LmwbGraphPrivate, 1);
  g->priv->ids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  return g;
}

void lmwb_graph_free(LmwbGraph *g) {
  if (!g) return;
  for (int i = 0; i < g->n_nodes; i++) g_free(g->nodes[i].label);
  g_free(g->nodes);
  g_free(g->edges);
  g_free(g->slug);
  g_free(g->model_name);
  g_free(g->prompt);
  g_strfreev(g->prompt_tokens);
  g_free(g->prompt_ids);
  g_free(g->clicked_id);
  g_free(g->sg_pos);
  g_ptr_array_unref(g->transcoders);
  g_ptr_array_unref(g->supernodes);
  g_hash_table_unref(g->extras);
  g_hash_table_unref(g->priv->ids);
  g_free(g->priv);
  g_free(g);
}

static gboolean check_text(const char *text, const char *what, GError **error) {
  if (!text || g_utf8_validate(text, -1, NULL)) return TRUE;
  lmwb_input_error(error, "graph: the %s is not UTF-8 text", what);
  return FALSE;
}

gboolean lmwb_graph_set_prompt(LmwbGraph *g, const char *prompt, const char *const *tokens, const int32_t *ids, int n,
                               GError **error) {
  if (n < 0 || (n > 0 && !tokens)) {
    lmwb_input_error(error, "graph: %d prompt tokens without their texts", n);
    return FALSE;
  }
  if (!check_text(prompt, "prompt", error)) return FALSE;
  for (int i = 0; i < n; i++) {
    g_autofree char *what = g_strdup_printf("prompt token %d", i);
    if (!tokens[i]) {
      lmwb_input_error(error, "graph: %s is missing", what);
      return FALSE;
    }
    if (!check_text(tokens[i], what, error)) return FALSE;
  }
  g_free(g->prompt);
  g->prompt = g_strdup(prompt ? prompt : "");
  g_strfreev(g->prompt_tokens);
  g->prompt_tokens = g_new0(char *, (size_t)n + 1);
  g_free(g->prompt_ids);
  g->prompt_ids = g_new(int32_t, (size_t)n + 1);
  for (int i = 0; i < n; i++) {
    g->prompt_tokens[i] = g_strdup(tokens[i]);
    g->prompt_ids[i] = ids ? ids[i] : -1;
  }
  g->n_prompt = n;
  return TRUE;
}

gboolean lmwb_graph_set_extra(LmwbGraph *g, const char *key, const char *value, GError **error) {
  if (!key || !*key) {
    lmwb_input_error(error, "graph: an extra needs a key");
    return FALSE;
  }
  if (!check_text(key, "extra's key", error) || !check_text(value, "extra's value", error)) return FALSE;
  if (value)
    g_hash_table_replace(g->extras, g_strdup(key), g_strdup(value));
  else
    g_hash_table_remove(g->extras, key);
  return TRUE;
}

/* What the kind needs of layer, pos, index and part; fixes the fields the kind implies. */
static gboolean check_identity(const LmwbGraph *g, LmwbGraphNode *n, GError **error) {
  LmwbGraphNodeKind k = n->kind;
  const char *kind = lmwb_graph_kind_name(k);
  if ((unsigned)k > LMWB_GRAPH_OUTPUT) {
    lmwb_input_error(error, "graph: unknown node kind %d", (int)k);
    return FALSE;
  }
  gboolean ep = lmwb_graph_kind_is_edge_pruning(k);
  if (ep != (g->method == LMWB_GRAPH_EDGE_PRUNING)) {
    lmwb_input_error(error, "graph: a %s node does not belong in an %s graph", kind, lmwb_graph_method_name(g->method));
    return FALSE;
  }
  if (k == LMWB_GRAPH_TOKEN || k == LMWB_GRAPH_INPUT) n->layer = -1;
  if (k == LMWB_GRAPH_LOGIT || k == LMWB_GRAPH_OUTPUT) n->layer = g->n_layers + 1;
  if (k == LMWB_GRAPH_ERROR || k == LMWB_GRAPH_INPUT || k == LMWB_GRAPH_MLP || k == LMWB_GRAPH_OUTPUT) n->index = -1;
  if (k != LMWB_GRAPH_READER) n->part = LMWB_GRAPH_PART_NONE;
  gboolean in_block = k == LMWB_GRAPH_FEATURE || k == LMWB_GRAPH_ERROR || k == LMWB_GRAPH_HEAD ||
                      k == LMWB_GRAPH_MLP || k == LMWB_GRAPH_READER;
  if (in_block && (n->layer < 0 || n->layer >= g->n_layers)) {
    lmwb_input_error(error, "graph: %s node: layer %d is outside 0..%d", kind, n->layer, g->n_layers - 1);
    return FALSE;
  }
  if (!ep && n->pos < 0) {
    lmwb_input_error(error, "graph: %s node: position %d is negative", kind, n->pos);
    return FALSE;
  }
  if (ep && n->pos != -1) {
    lmwb_input_error(error, "graph: %s node: edge-pruning nodes have no position (-1), not %d", kind, n->pos);
    return FALSE;
  }
  if (n->index < 0 && (k == LMWB_GRAPH_FEATURE || k == LMWB_GRAPH_TOKEN || k == LMWB_GRAPH_LOGIT ||
                       k == LMWB_GRAPH_HEAD || k == LMWB_GRAPH_READER)) {
    lmwb_input_error(error, "graph: %s node: index %" G_GINT64_FORMAT " is negative", kind, n->index);
    return FALSE;
  }
  if (k == LMWB_GRAPH_READER && (n->part < LMWB_GRAPH_PART_Q || n->part > LMWB_GRAPH_PART_V)) {
    lmwb_input_error(error, "graph: a reader node needs its part (q, k or v)");
    return FALSE;
  }
  return TRUE;
}

int lmwb_graph_add_node(LmwbGraph *g, LmwbGraphNodeKind kind, int layer, int pos, int64_t index, LmwbGraphPart part,
                        GError **error) {
  LmwbGraphNode n = {.kind = kind, .layer = layer, .pos = pos, .index = index, .part = part};
  if (!check_identity(g, &n, error)) return -1;
  if (g->n_nodes == G_MAXINT) {
    lmwb_input_error(error, "graph: too many nodes");
    return -1;
  }
  char *id = lmwb_graph_id_of(g, &n);
  if (g_hash_table_contains(g->priv->ids, id)) {
    lmwb_input_error(error, "graph: node \"%s\" is already in the graph", id);
    g_free(id);
    return -1;
  }
  if (g->n_nodes == g->priv->node_cap) {
    g->priv->node_cap = g->priv->node_cap ? (int)MIN((gint64)g->priv->node_cap * 2, G_MAXINT) : 64;
    g->nodes = g_renew(LmwbGraphNode, g->nodes, g->priv->node_cap);
  }
  int i = g->n_nodes;
  g->nodes[i] = n;
  g_hash_table_insert(g->priv->ids, id, GINT_TO_POINTER(i + 1));
  g->nodes[i].label = g_strdup("");
  g->n_nodes++;
  return i;
}

gboolean lmwb_graph_node_set_label(LmwbGraph *g, int node, const char *text, GError **error) {
  if (node < 0 || node >= g->n_nodes) {
    lmwb_input_error(error, "graph: no node %d (the graph has %d)", node, g->n_nodes);
    return FALSE;
  }
  if (!check_text(text, "label", error)) return FALSE;
  g_free(g->nodes[node].label);
  g->nodes[node].label = g_strdup(text ? text : "");
  return TRUE;
}

char *lmwb_graph_logit_label(const char *token, double prob) {
  char p[G_ASCII_DTOSTR_BUF_SIZE];
  g_ascii_formatd(p, sizeof p, "%.3f", prob);
  return g_strdup_printf("Output \"%s\" (p=%s)", token ? token : "", p);
}

int lmwb_graph_add_edge(LmwbGraph *g, int source, int target, double weight, GError **error) {
  if (source < 0 || source >= g->n_nodes || target < 0 || target >= g->n_nodes) {
    lmwb_input_error(error, "graph: edge %d -> %d: no such node (the graph has %d)", source, target, g->n_nodes);
    return -1;
  }
  if (g->n_edges == G_MAXINT) {
    lmwb_input_error(error, "graph: too many edges");
    return -1;
  }
  if (g->n_edges == g->priv->edge_cap) {
    g->priv->edge_cap = g->priv->edge_cap ? (int)MIN((gint64)g->priv->edge_cap * 2, G_MAXINT) : 256;
    g->edges = g_renew(LmwbGraphEdge, g->edges, g->priv->edge_cap);
  }
  g->edges[g->n_edges] = (LmwbGraphEdge){.source = source, .target = target, .weight = weight, .in_circuit = true};
  return g->n_edges++;
}

int lmwb_graph_find(const LmwbGraph *g, const char *id) {
  if (!id) return -1;
  return GPOINTER_TO_INT(g_hash_table_lookup(g->priv->ids, id)) - 1;
}
