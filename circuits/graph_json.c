/* Neuronpedia / circuit-tracer graph JSON: writing (circuits/graph.h). */
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "app/core/atomic_file.h"
#include "app/core/errors.h"
#include "app/formats/json_text.h"
#include "circuits/graph.h"
#include "circuits/graph_private.h"

static const char *const feature_types[] = {"cross layer transcoder", "mlp reconstruction error", "embedding", "logit",
                                            "input", "attention head", "mlp", "attention input", "output"};

const char *lmwb_graph_feature_type(LmwbGraphNodeKind k) {
  return (unsigned)k < G_N_ELEMENTS(feature_types) ? feature_types[k] : "?";
}

gboolean lmwb_graph_feature_type_parse(const char *name, LmwbGraphNodeKind *out) {
  int i = lmwb_graph_name_index(feature_types, G_N_ELEMENTS(feature_types), name, FALSE);
  if (i >= 0) *out = (LmwbGraphNodeKind)i;
  return i >= 0;
}

char *lmwb_graph_layer_text(int layer) {
  return layer < 0 ? g_strdup("E") : g_strdup_printf("%d", layer);
}

/* What graph JSON's `feature` holds for a node. */
static gint64 feature_field(const LmwbGraphNode *n) {
  switch (n->kind) {
    case LMWB_GRAPH_TOKEN: return n->pos;
    case LMWB_GRAPH_ERROR: return -1;
    default: return n->index;
  }
}

static char *js_node_id(const LmwbGraph *g, int i) {
  const LmwbGraphNode *n = &g->nodes[i];
  switch (n->kind) {
    case LMWB_GRAPH_FEATURE: return g_strdup_printf("%d_%" G_GINT64_FORMAT "-0", n->layer, n->index);
    case LMWB_GRAPH_ERROR: return g_strdup_printf("%d_-1-%d", n->layer, n->pos);
    case LMWB_GRAPH_TOKEN: return g_strdup_printf("E_%" G_GINT64_FORMAT "-%d", n->index, n->pos);
    case LMWB_GRAPH_LOGIT: return g_strdup_printf("L_%" G_GINT64_FORMAT "-%d", n->index, n->pos);
    default: return lmwb_graph_node_id(g, i);
  }
}

/* Every number written is finite; otherwise an error naming where, and nothing is written. */
static gboolean finite_or_fail(double v, const char *what, const char *where, GError **error) {
  if (isfinite(v)) return TRUE;
  g_set_error(error, LMWB_ERROR, LMWB_ERROR_FAILED,
              "graph JSON: %s: %s is not a finite number (NaN or infinity); nothing written", where, what);
  return FALSE;
}

static gboolean utf8_or_fail(const char *s, const char *what, GError **error) {
  if (!s || g_utf8_validate(s, -1, NULL)) return TRUE;
  lmwb_input_error(error, "graph JSON: the %s is not UTF-8 text; nothing written", what);
  return FALSE;
}

/* Strings a caller may have assigned directly are checked before anything is built. */
static gboolean check_strings(const LmwbGraph *g, GError **error) {
  if (!utf8_or_fail(g->slug, "slug", error) || !utf8_or_fail(g->model_name, "model name", error) ||
      !utf8_or_fail(g->prompt, "prompt", error) || !utf8_or_fail(g->clicked_id, "clickedId", error) ||
      !utf8_or_fail(g->sg_pos, "sg_pos", error))
    return FALSE;
  for (int i = 0; i < g->n_prompt; i++)
    if (!utf8_or_fail(g->prompt_tokens[i], "prompt token", error)) return FALSE;
  for (guint i = 0; i < g->transcoders->len; i++)
    if (!utf8_or_fail(g_ptr_array_index(g->transcoders, i), "transcoder list", error)) return FALSE;
  for (guint i = 0; i < g->supernodes->len; i++)
    for (char **s = g_ptr_array_index(g->supernodes, i); s && *s; s++)
      if (!utf8_or_fail(*s, "supernode", error)) return FALSE;
  for (int i = 0; i < g->n_nodes; i++)
    if (!utf8_or_fail(g->nodes[i].label, "node label", error)) return FALSE;
  return TRUE;
}

static void add_string(JsonBuilder *b, const char *key, const char *value) {
  json_builder_set_member_name(b, key);
  json_builder_add_string_value(b, value ? value : "");
}

static void add_optional_double(JsonBuilder *b, const char *key, bool has, double v) {
  json_builder_set_member_name(b, key);
  if (has)
    json_builder_add_double_value(b, v);
  else
    json_builder_add_null_value(b);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static gboolean build_metadata(JsonBuilder *b, const LmwbGraph *g, GError **error) {
  if ((g->has_node_threshold && !finite_or_fail(g->node_threshold, "node_threshold", "metadata", error)) ||
      (g->has_edge_threshold && !finite_or_fail(g->edge_threshold, "edge_threshold", "metadata", error)))
    return FALSE;
  json_builder_set_member_name(b, "metadata");
  json_builder_begin_object(b);
  add_string(b, "slug", g->slug);
  add_string(b, "scan", g->model_name);
  json_builder_set_member_name(b, "transcoder_list");
  json_builder_begin_array(b);
  for (guint i = 0; i < g->transcoders->len; i++) json_builder_add_string_value(b, g_ptr_array_index(g->transcoders, i));
  json_builder_end_array(b);
  json_builder_set_member_name(b, "prompt_tokens");
  json_builder_begin_array(b);
  for (int i = 0; i < g->n_prompt; i++) json_builder_add_string_value(b, g->prompt_tokens[i]);
  json_builder_end_array(b);
  add_string(b, "prompt", g->prompt);
  add_optional_double(b, "node_threshold", g->has_node_threshold, g->node_threshold);
  json_builder_set_member_name(b, "schema_version");
  json_builder_add_int_value(b, 1);
  /* what Neuronpedia's schema has no place for */
  json_builder_set_member_name(b, "lmwb");
  json_builder_begin_object(b);
  add_string(b, "method", lmwb_graph_method_name(g->method));
  json_builder_set_member_name(b, "n_layers");
  json_builder_add_int_value(b, g->n_layers);
  add_optional_double(b, "edge_threshold", g->has_edge_threshold, g->edge_threshold);
  json_builder_set_member_name(b, "prompt_ids");
  json_builder_begin_array(b);
  for (int i = 0; i < g->n_prompt; i++) json_builder_add_int_value(b, g->prompt_ids[i]);
  json_builder_end_array(b);
  json_builder_set_member_name(b, "extras");
  json_builder_begin_object(b);
  guint n_keys = 0;
  g_autofree gpointer *keys = g_hash_table_get_keys_as_array(g->extras, &n_keys);
  qsort(keys, n_keys, sizeof *keys, cmp_str);
  for (guint i = 0; i < n_keys; i++) add_string(b, keys[i], g_hash_table_lookup(g->extras, keys[i]));
  json_builder_end_object(b);
  json_builder_end_object(b);
  json_builder_end_object(b);
  return TRUE;
}

static void build_qparams(JsonBuilder *b, const LmwbGraph *g) {
  json_builder_set_member_name(b, "qParams");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "pinnedIds");
  json_builder_begin_array(b);
  for (int i = 0; i < g->n_nodes; i++) {
    if (!g->nodes[i].pinned) continue;
    g_autofree char *id = lmwb_graph_node_id(g, i);
    json_builder_add_string_value(b, id);
  }
  json_builder_end_array(b);
  json_builder_set_member_name(b, "supernodes");
  json_builder_begin_array(b);
  for (guint i = 0; i < g->supernodes->len; i++) {
    json_builder_begin_array(b);
    for (char **s = g_ptr_array_index(g->supernodes, i); s && *s; s++) json_builder_add_string_value(b, *s);
    json_builder_end_array(b);
  }
  json_builder_end_array(b);
  add_string(b, "linkType", "both");
  add_string(b, "clickedId", g->clicked_id);
  add_string(b, "sg_pos", g->sg_pos);
  json_builder_end_object(b);
}

static gboolean build_node(JsonBuilder *b, const LmwbGraph *g, int i, GError **error) {
  const LmwbGraphNode *n = &g->nodes[i];
  g_autofree char *id = lmwb_graph_node_id(g, i);
  if (!finite_or_fail(n->token_prob, "token_prob", id, error) ||
      (n->has_influence && !finite_or_fail(n->influence, "influence", id, error)) ||
      (n->has_activation && !finite_or_fail(n->activation, "activation", id, error)))
    return FALSE;
  g_autofree char *layer = lmwb_graph_layer_text(n->layer);
  g_autofree char *js = js_node_id(g, i);
  json_builder_begin_object(b);
  add_string(b, "node_id", id);
  json_builder_set_member_name(b, "feature");
  json_builder_add_int_value(b, feature_field(n));
  add_string(b, "layer", layer);
  json_builder_set_member_name(b, "ctx_idx");
  json_builder_add_int_value(b, n->pos);
  add_string(b, "feature_type", lmwb_graph_feature_type(n->kind));
  json_builder_set_member_name(b, "token_prob");
  json_builder_add_double_value(b, n->token_prob);
  json_builder_set_member_name(b, "is_target_logit");
  json_builder_add_boolean_value(b, n->target_logit);
  json_builder_set_member_name(b, "run_idx");
  json_builder_add_int_value(b, 0);
  json_builder_set_member_name(b, "reverse_ctx_idx");
  json_builder_add_int_value(b, 0);
  add_string(b, "jsNodeId", js);
  add_string(b, "clerp", n->label);
  add_optional_double(b, "influence", n->has_influence, n->influence);
  add_optional_double(b, "activation", n->has_activation, n->activation);
  json_builder_end_object(b);
  return TRUE;
}

static gboolean build_link(JsonBuilder *b, const LmwbGraph *g, int e, char *const *ids, GError **error) {
  const LmwbGraphEdge *x = &g->edges[e];
  g_autofree char *where = g_strdup_printf("link %s -> %s", ids[x->source], ids[x->target]);
  if (!finite_or_fail(x->weight, "weight", where, error)) return FALSE;
  json_builder_begin_object(b);
  add_string(b, "source", ids[x->source]);
  add_string(b, "target", ids[x->target]);
  json_builder_set_member_name(b, "weight");
  json_builder_add_double_value(b, x->weight);
  if (!x->in_circuit) {
    json_builder_set_member_name(b, "in_circuit");
    json_builder_add_boolean_value(b, FALSE);
  }
  json_builder_end_object(b);
  return TRUE;
}

static gboolean build(JsonBuilder *b, const LmwbGraph *g, GError **error) {
  json_builder_begin_object(b);
  if (!build_metadata(b, g, error)) return FALSE;
  build_qparams(b, g);
  json_builder_set_member_name(b, "nodes");
  json_builder_begin_array(b);
  for (int i = 0; i < g->n_nodes; i++)
    if (!build_node(b, g, i, error)) return FALSE;
  json_builder_end_array(b);
  char **ids = g_new0(char *, (size_t)g->n_nodes + 1);
  for (int i = 0; i < g->n_nodes; i++) ids[i] = lmwb_graph_node_id(g, i);
  json_builder_set_member_name(b, "links");
  json_builder_begin_array(b);
  gboolean ok = TRUE;
  for (int e = 0; ok && e < g->n_edges; e++) ok = build_link(b, g, e, ids, error);
  g_strfreev(ids);
  if (!ok) return FALSE;
  json_builder_end_array(b);
  json_builder_end_object(b);
  return TRUE;
}

char *lmwb_graph_to_json(const LmwbGraph *g, size_t *len, GError **error) {
  if (!check_strings(g, error)) return NULL;
  g_autoptr(JsonBuilder) b = json_builder_new();
  if (!build(b, g, error)) return NULL;
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  size_t n = 0;
  char *text = lmwb_json_generate(root, FALSE, &n);
  text = g_realloc(text, n + 2);
  text[n++] = '\n';
  text[n] = 0;
  if (len) *len = n;
  return text;
}

gboolean lmwb_graph_write_json(const LmwbGraph *g, const char *path, GError **error) {
  size_t len = 0;
  g_autofree char *text = lmwb_graph_to_json(g, &len, error);
  return text && lmwb_file_write_atomic(path, text, len, error);
}
