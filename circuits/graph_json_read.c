/* Neuronpedia / circuit-tracer graph JSON: reading, every field checked (circuits/graph.h). */
#include <json-glib/json-glib.h>
#include <string.h>

#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/formats/json_input.h"
#include "circuits/graph.h"
#include "circuits/graph_private.h"

/* Where a field is, for messages: "origin: nodes[3].ctx_idx". */
typedef struct {
  const char *origin;
  GError **error;
} Reader;

static gboolean fail(Reader *r, const char *where, const char *key, const char *what) {
  lmwb_input_error(r->error, "%s: %s%s%s %s", r->origin, where, *where && *key ? "." : "", key, what);
  return FALSE;
}

/* The member, NULL when absent. A JSON null counts as absent where `null_is_absent`. */
static JsonNode *member(JsonObject *o, const char *key, gboolean null_is_absent) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  return n && null_is_absent && JSON_NODE_HOLDS_NULL(n) ? NULL : n;
}

static gboolean is_type(JsonNode *n, GType t) {
  return JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == t;
}

static gboolean get_string(Reader *r, JsonObject *o, const char *where, const char *key, gboolean required,
                           const char **out) {
  JsonNode *n = member(o, key, !required);
  if (!n) return required ? fail(r, where, key, "is missing") : TRUE;
  if (!is_type(n, G_TYPE_STRING)) return fail(r, where, key, "must be a string");
  *out = json_node_get_string(n);
  return TRUE;
}

static gboolean get_int(Reader *r, JsonObject *o, const char *where, const char *key, gboolean required, gint64 min,
                        gint64 max, gint64 *out) {
  JsonNode *n = member(o, key, !required);
  if (!n) return required ? fail(r, where, key, "is missing") : TRUE;
  if (!is_type(n, G_TYPE_INT64) || json_node_get_int(n) < min || json_node_get_int(n) > max) {
    g_autofree char *what = g_strdup_printf("must be an integer from %" G_GINT64_FORMAT " to %" G_GINT64_FORMAT, min, max);
    return fail(r, where, key, what);
  }
  *out = json_node_get_int(n);
  return TRUE;
}

/* A number (integer or not); null or absent leaves *present FALSE when present is given. */
static gboolean get_number(Reader *r, JsonObject *o, const char *where, const char *key, bool *present, double *out) {
  JsonNode *n = member(o, key, present != NULL);
  if (!n) return present ? (*present = false, TRUE) : fail(r, where, key, "is missing");
  if (!is_type(n, G_TYPE_INT64) && !is_type(n, G_TYPE_DOUBLE))
    return fail(r, where, key, present ? "must be a number or null" : "must be a number");
  *out = is_type(n, G_TYPE_INT64) ? (double)json_node_get_int(n) : json_node_get_double(n);
  if (present) *present = true;
  return TRUE;
}

static gboolean get_bool(Reader *r, JsonObject *o, const char *where, const char *key, bool *out) {
  JsonNode *n = member(o, key, TRUE);
  if (!n) return TRUE;
  if (!is_type(n, G_TYPE_BOOLEAN)) return fail(r, where, key, "must be true or false");
  *out = json_node_get_boolean(n);
  return TRUE;
}

/* A member that must be an array or an object; absent (when optional) gives NULL and TRUE. */
static gboolean get_container(Reader *r, JsonObject *o, const char *where, const char *key, gboolean required,
                              JsonNodeType type, JsonNode **out) {
  JsonNode *n = member(o, key, !required);
  *out = NULL;
  if (!n) return required ? fail(r, where, key, "is missing") : TRUE;
  if (JSON_NODE_TYPE(n) != type) return fail(r, where, key, type == JSON_NODE_ARRAY ? "must be an array" : "must be an object");
  *out = n;
  return TRUE;
}

static gboolean get_array(Reader *r, JsonObject *o, const char *where, const char *key, gboolean required,
                          JsonArray **out) {
  JsonNode *n = NULL;
  gboolean ok = get_container(r, o, where, key, required, JSON_NODE_ARRAY, &n);
  *out = n ? json_node_get_array(n) : NULL;
  return ok;
}

static gboolean get_object(Reader *r, JsonObject *o, const char *where, const char *key, gboolean required,
                           JsonObject **out) {
  JsonNode *n = NULL;
  gboolean ok = get_container(r, o, where, key, required, JSON_NODE_OBJECT, &n);
  *out = n ? json_node_get_object(n) : NULL;
  return ok;
}

/* Element i of an array as an object, or NULL with an error naming `where`. */
static JsonObject *element_object(Reader *r, JsonArray *a, guint i, const char *where) {
  JsonNode *n = json_array_get_element(a, i);
  if (JSON_NODE_HOLDS_OBJECT(n)) return json_node_get_object(n);
  fail(r, where, "", "must be an object");
  return NULL;
}

/* The strings of an array member (borrowed, NULL-terminated; g_free the vector), NULL when absent. */
static gboolean get_strings(Reader *r, JsonObject *o, const char *where, const char *key, gboolean required,
                            const char ***out, guint *n) {
  JsonArray *a = NULL;
  *out = NULL;
  *n = 0;
  if (!get_array(r, o, where, key, required, &a)) return FALSE;
  if (!a) return TRUE;
  guint len = json_array_get_length(a);
  const char **v = g_new0(const char *, len + 1);
  for (guint i = 0; i < len; i++) {
    JsonNode *e = json_array_get_element(a, i);
    if (!is_type(e, G_TYPE_STRING)) {
      g_free(v);
      g_autofree char *k = g_strdup_printf("%s[%u]", key, i);
      return fail(r, where, k, "must be a string");
    }
    v[i] = json_node_get_string(e);
  }
  *out = v;
  *n = len;
  return TRUE;
}

/* The layer of graph JSON ("E" or a decimal number), G_MININT when it is neither. */
static int layer_value(const char *text) {
  if (!strcmp(text, "E")) return -1;
  gint64 v = 0;
  if (!g_ascii_string_to_signed(text, 10, 0, LMWB_GRAPH_MAX_LAYERS + 1, &v, NULL)) return G_MININT;
  g_autofree char *back = lmwb_graph_layer_text((int)v);
  return strcmp(back, text) ? G_MININT : (int)v;
}

/* n_layers: metadata.lmwb.n_layers, else a logit's layer - 1, else the highest layer + 1. */
static gboolean find_n_layers(Reader *r, JsonObject *lmwb, JsonArray *nodes, int *n_layers) {
  gint64 v = 0;
  if (member(lmwb, "n_layers", TRUE)) {
    if (!get_int(r, lmwb, "metadata.lmwb", "n_layers", TRUE, 1, LMWB_GRAPH_MAX_LAYERS, &v)) return FALSE;
    *n_layers = (int)v;
    return TRUE;
  }
  int top = 0, logit = 0;
  for (guint i = 0; i < json_array_get_length(nodes); i++) {
    JsonNode *n = json_array_get_element(nodes, i);
    JsonObject *o = JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
    JsonNode *l = member(o, "layer", TRUE), *t = member(o, "feature_type", TRUE);
    if (!l || !t || !is_type(l, G_TYPE_STRING) || !is_type(t, G_TYPE_STRING)) continue;
    int layer = layer_value(json_node_get_string(l));
    LmwbGraphNodeKind k;
    if (layer == G_MININT || !lmwb_graph_feature_type_parse(json_node_get_string(t), &k)) continue;
    if ((k == LMWB_GRAPH_LOGIT || k == LMWB_GRAPH_OUTPUT) && !logit) logit = layer - 1;
    top = MAX(top, layer + 1);
  }
  *n_layers = CLAMP(logit > 0 ? logit : top, 1, LMWB_GRAPH_MAX_LAYERS);
  return TRUE;
}

static gboolean read_metadata(Reader *r, LmwbGraph *g, JsonObject *meta, JsonObject *lmwb) {
  const char *slug = NULL, *scan = "", *prompt = NULL;
  const char **tokens = NULL, **transcoders = NULL;
  guint n_tokens = 0, n_transcoders = 0;
  gint64 schema = 1;
  gboolean ok = get_string(r, meta, "metadata", "slug", TRUE, &slug) &&
                get_string(r, meta, "metadata", "scan", FALSE, &scan) &&
                get_string(r, meta, "metadata", "prompt", TRUE, &prompt) &&
                get_int(r, meta, "metadata", "schema_version", FALSE, G_MININT64, G_MAXINT64, &schema) &&
                get_number(r, meta, "metadata", "node_threshold", &g->has_node_threshold, &g->node_threshold) &&
                get_number(r, lmwb, "metadata.lmwb", "edge_threshold", &g->has_edge_threshold, &g->edge_threshold) &&
                get_strings(r, meta, "metadata", "transcoder_list", FALSE, &transcoders, &n_transcoders) &&
                get_strings(r, meta, "metadata", "prompt_tokens", TRUE, &tokens, &n_tokens);
  if (ok && schema != 1) {
    g_autofree char *what = g_strdup_printf("is %" G_GINT64_FORMAT "; only schema version 1 is read", schema);
    ok = fail(r, "metadata", "schema_version", what);
  }
  if (ok && n_tokens > G_MAXINT / 2) ok = fail(r, "metadata", "prompt_tokens", "is too long");
  JsonArray *ids = NULL;
  if (ok) ok = get_array(r, lmwb, "metadata.lmwb", "prompt_ids", FALSE, &ids);
  if (ok && ids && json_array_get_length(ids) != n_tokens)
    ok = fail(r, "metadata.lmwb", "prompt_ids", "must have one id per prompt token");
  if (ok) ok = lmwb_graph_set_prompt(g, prompt, tokens, NULL, (int)n_tokens, r->error);
  for (guint i = 0; ok && ids && i < n_tokens; i++) {
    JsonNode *e = json_array_get_element(ids, i);
    if (!is_type(e, G_TYPE_INT64) || json_node_get_int(e) < -1 || json_node_get_int(e) > G_MAXINT32) {
      g_autofree char *k = g_strdup_printf("prompt_ids[%u]", i);
      ok = fail(r, "metadata.lmwb", k, "must be a token id (or -1)");
    } else {
      g->prompt_ids[i] = (int32_t)json_node_get_int(e);
    }
  }
  for (guint i = 0; ok && i < n_transcoders; i++) g_ptr_array_add(g->transcoders, g_strdup(transcoders[i]));
  g_free(tokens);
  g_free(transcoders);
  if (!ok) return FALSE;
  g_free(g->slug);
  g->slug = g_strdup(slug);
  g_free(g->model_name);
  g->model_name = g_strdup(scan);
  JsonObject *extras = NULL;
  if (!get_object(r, lmwb, "metadata.lmwb", "extras", FALSE, &extras)) return FALSE;
  g_autoptr(GList) keys = extras ? json_object_get_members(extras) : NULL;
  for (GList *k = keys; k; k = k->next) {
    const char *value = NULL;
    if (!get_string(r, extras, "metadata.lmwb.extras", k->data, TRUE, &value)) return FALSE;
    if (!lmwb_graph_set_extra(g, k->data, value, r->error)) {
      g_prefix_error(r->error, "%s: metadata.lmwb.extras: ", r->origin);
      return FALSE;
    }
  }
  return TRUE;
}

/* One node: its identity from node_id and feature_type, checked against layer, ctx_idx and feature. */
static gboolean read_node(Reader *r, LmwbGraph *g, JsonArray *nodes, guint i, GHashTable *file_ids) {
  g_autofree char *where = g_strdup_printf("nodes[%u]", i);
  JsonObject *o = element_object(r, nodes, i, where);
  if (!o) return FALSE;
  const char *id = NULL, *type = NULL, *layer_text = NULL, *clerp = "", *js = NULL;
  gint64 ctx = 0, feature = 0, run = 0, rev = 0;
  LmwbGraphNode v = {0};
  if (!get_string(r, o, where, "node_id", TRUE, &id) || !get_string(r, o, where, "feature_type", TRUE, &type) ||
      !get_string(r, o, where, "layer", TRUE, &layer_text) ||
      !get_int(r, o, where, "ctx_idx", TRUE, -1, G_MAXINT, &ctx) ||
      !get_int(r, o, where, "feature", TRUE, G_MININT64, G_MAXINT64, &feature) ||
      !get_string(r, o, where, "clerp", FALSE, &clerp) || !get_string(r, o, where, "jsNodeId", FALSE, &js) ||
      !get_int(r, o, where, "run_idx", FALSE, G_MININT64, G_MAXINT64, &run) ||
      !get_int(r, o, where, "reverse_ctx_idx", FALSE, G_MININT64, G_MAXINT64, &rev) ||
      !get_bool(r, o, where, "is_target_logit", &v.target_logit) ||
      !get_number(r, o, where, "influence", &v.has_influence, &v.influence) ||
      !get_number(r, o, where, "activation", &v.has_activation, &v.activation))
    return FALSE;
  bool has_prob = false;
  if (!get_number(r, o, where, "token_prob", &has_prob, &v.token_prob)) return FALSE;
  if (!lmwb_graph_feature_type_parse(type, &v.kind)) {
    g_autofree char *what = g_strdup_printf("\"%s\" is not a node type this workbench knows", type);
    return fail(r, where, "feature_type", what);
  }
  if (g_hash_table_contains(file_ids, id)) {
    g_autofree char *what = g_strdup_printf("\"%s\" names an earlier node too", id);
    return fail(r, where, "node_id", what);
  }
  GError *err = NULL;
  if (!lmwb_graph_parse_node_id(g, id, v.kind, &v.layer, &v.pos, &v.index, &v.part, &err)) {
    lmwb_input_error(r->error, "%s: %s.node_id: %s", r->origin, where, err->message);
    g_error_free(err);
    return FALSE;
  }
  if (layer_value(layer_text) != v.layer) {
    g_autofree char *what = g_strdup_printf("\"%s\" does not match node_id \"%s\"", layer_text, id);
    return fail(r, where, "layer", what);
  }
  if (ctx != v.pos) {
    g_autofree char *what = g_strdup_printf("%" G_GINT64_FORMAT " does not match node_id \"%s\"", ctx, id);
    return fail(r, where, "ctx_idx", what);
  }
  if (v.kind == LMWB_GRAPH_LOGIT && feature != v.index) {
    g_autofree char *what = g_strdup_printf("%" G_GINT64_FORMAT " does not match node_id \"%s\"", feature, id);
    return fail(r, where, "feature", what);
  }
  int k = lmwb_graph_add_node(g, v.kind, v.layer, v.pos, v.index, v.part, &err);
  if (k < 0) {
    lmwb_input_error(r->error, "%s: %s: %s", r->origin, where, err->message);
    g_error_free(err);
    return FALSE;
  }
  char *label = g->nodes[k].label;
  g->nodes[k] = v;
  g->nodes[k].label = label;
  g_hash_table_insert(file_ids, (gpointer)id, GINT_TO_POINTER(k + 1));
  return lmwb_graph_node_set_label(g, k, clerp, r->error);
}

/* The node a link or pinned id names (by the file's own ids), or -1 with an error. */
static int node_named(Reader *r, GHashTable *file_ids, JsonObject *o, const char *where, const char *key) {
  const char *id = NULL;
  if (!get_string(r, o, where, key, TRUE, &id)) return -1;
  int k = GPOINTER_TO_INT(g_hash_table_lookup(file_ids, id)) - 1;
  if (k < 0) {
    g_autofree char *what = g_strdup_printf("\"%s\" is not the node_id of any node", id);
    fail(r, where, key, what);
  }
  return k;
}

static gboolean read_link(Reader *r, LmwbGraph *g, JsonArray *links, guint i, GHashTable *file_ids) {
  g_autofree char *where = g_strdup_printf("links[%u]", i);
  JsonObject *o = element_object(r, links, i, where);
  if (!o) return FALSE;
  double w = 0;
  bool in_circuit = true;
  int s = node_named(r, file_ids, o, where, "source");
  int t = s < 0 ? -1 : node_named(r, file_ids, o, where, "target");
  if (t < 0 || !get_number(r, o, where, "weight", NULL, &w) || !get_bool(r, o, where, "in_circuit", &in_circuit))
    return FALSE;
  int e = lmwb_graph_add_edge(g, s, t, w, r->error);
  if (e < 0) return FALSE;
  g->edges[e].in_circuit = in_circuit;
  return TRUE;
}

static gboolean read_qparams(Reader *r, LmwbGraph *g, JsonObject *q, GHashTable *file_ids) {
  const char *link_type = NULL, *clicked = "", *sg_pos = "";
  JsonArray *pinned = NULL, *supernodes = NULL;
  if (!get_string(r, q, "qParams", "linkType", FALSE, &link_type) ||
      !get_string(r, q, "qParams", "clickedId", FALSE, &clicked) ||
      !get_string(r, q, "qParams", "sg_pos", FALSE, &sg_pos) ||
      !get_array(r, q, "qParams", "pinnedIds", FALSE, &pinned) ||
      !get_array(r, q, "qParams", "supernodes", FALSE, &supernodes))
    return FALSE;
  for (guint i = 0; pinned && i < json_array_get_length(pinned); i++) {
    g_autofree char *k = g_strdup_printf("pinnedIds[%u]", i);
    JsonNode *e = json_array_get_element(pinned, i);
    int n = is_type(e, G_TYPE_STRING) ? GPOINTER_TO_INT(g_hash_table_lookup(file_ids, json_node_get_string(e))) - 1 : -1;
    if (n < 0) return fail(r, "qParams", k, "must be the node_id of a node");
    g->nodes[n].pinned = true;
  }
  for (guint i = 0; supernodes && i < json_array_get_length(supernodes); i++) {
    g_autofree char *where = g_strdup_printf("qParams.supernodes[%u]", i);
    JsonNode *e = json_array_get_element(supernodes, i);
    if (!JSON_NODE_HOLDS_ARRAY(e)) return fail(r, where, "", "must be an array of strings");
    JsonArray *a = json_node_get_array(e);
    guint len = json_array_get_length(a);
    char **v = g_new0(char *, len + 1);
    g_ptr_array_add(g->supernodes, v);
    for (guint j = 0; j < len; j++) {
      if (!is_type(json_array_get_element(a, j), G_TYPE_STRING)) return fail(r, where, "", "must be an array of strings");
      v[j] = g_strdup(json_array_get_string_element(a, j));
    }
  }
  g_free(g->clicked_id);
  g->clicked_id = g_strdup(clicked);
  g_free(g->sg_pos);
  g->sg_pos = g_strdup(sg_pos);
  return TRUE;
}

/* Without metadata.lmwb.prompt_ids, the token nodes tell each position's id. */
static void prompt_ids_from_tokens(LmwbGraph *g) {
  for (int i = 0; i < g->n_nodes; i++) {
    const LmwbGraphNode *n = &g->nodes[i];
    if (n->kind == LMWB_GRAPH_TOKEN && n->pos < g->n_prompt && n->index <= G_MAXINT32)
      g->prompt_ids[n->pos] = (int32_t)n->index;
  }
}

static LmwbGraph *read_root(Reader *r, JsonNode *root) {
  if (!JSON_NODE_HOLDS_OBJECT(root)) {
    lmwb_input_error(r->error, "%s: not graph JSON (the top level must be an object)", r->origin);
    return NULL;
  }
  JsonObject *top = json_node_get_object(root), *meta = NULL, *lmwb = NULL, *q = NULL;
  JsonArray *nodes = NULL, *links = NULL;
  const char *method_text = NULL;
  LmwbGraphMethod method = LMWB_GRAPH_ATTRIBUTION;
  int n_layers = 1;
  if (!get_object(r, top, "", "metadata", TRUE, &meta) || !get_array(r, top, "", "nodes", TRUE, &nodes) ||
      !get_array(r, top, "", "links", TRUE, &links) || !get_object(r, top, "", "qParams", FALSE, &q) ||
      !get_object(r, meta, "metadata", "lmwb", FALSE, &lmwb) ||
      !get_string(r, lmwb, "metadata.lmwb", "method", FALSE, &method_text) ||
      (method_text && !lmwb_graph_method_parse(method_text, &method, NULL) &&
       !fail(r, "metadata.lmwb", "method", "must be \"attribution\" or \"edge-pruning\"")) ||
      !find_n_layers(r, lmwb, nodes, &n_layers))
    return NULL;
  g_autoptr(LmwbGraph) g = lmwb_graph_new(method, n_layers, r->error);
  if (!g || !read_metadata(r, g, meta, lmwb)) return NULL;
  g_autoptr(GHashTable) file_ids = g_hash_table_new(g_str_hash, g_str_equal);
  for (guint i = 0; i < json_array_get_length(nodes); i++)
    if (!read_node(r, g, nodes, i, file_ids)) return NULL;
  for (guint i = 0; i < json_array_get_length(links); i++)
    if (!read_link(r, g, links, i, file_ids)) return NULL;
  if (!read_qparams(r, g, q, file_ids)) return NULL;
  if (!member(lmwb, "prompt_ids", TRUE)) prompt_ids_from_tokens(g);
  return g_steal_pointer(&g);
}

LmwbGraph *lmwb_graph_from_json(const char *data, size_t len, const char *origin, GError **error) {
  Reader r = {origin ? origin : "graph JSON", error};
  JsonNode *root = lmwb_json_parse(data, len, r.origin, error);
  if (!root) return NULL;
  LmwbGraph *g = read_root(&r, root);
  json_node_unref(root);
  return g;
}

LmwbGraph *lmwb_graph_read_json(const char *path, GError **error) {
  size_t len = 0;
  g_autofree char *data = lmwb_file_read(path, LMWB_GRAPH_JSON_MAX_BYTES, LMWB_READ_REGULAR, &len, error);
  return data ? lmwb_graph_from_json(data, len, path, error) : NULL;
}
