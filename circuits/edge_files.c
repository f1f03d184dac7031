/* Circuit files: Edge-Pruning's edges.json and the scores JSON (circuits/edge_circuit.h). */
#include "app/core/atomic_file.h"
#include "app/core/errors.h"
#include "app/formats/json_input.h"
#include "app/formats/json_text.h"
#include "circuits/edge_circuit.h"
#include <math.h>
#include <string.h>

#define CIRCUIT_MAX_BYTES ((uint64_t)256 << 20)

/* The edge source -> target, or -1 with an error naming where. */
static int64_t edge_of(const LmwbEdgeGraph *g, const char *src, const char *dst, const char *where, GError **error) {
  GError *e = NULL;
  int w = lmwb_edge_writer_parse(g, src, &e), v = w >= 0 ? lmwb_edge_reader_parse(g, dst, &e) : -1;
  if (v < 0) {
    lmwb_input_error(error, "%s: %s", where, e->message);
    g_error_free(e);
    return -1;
  }
  int64_t i = lmwb_edge_index(g, w, v);
  if (i < 0) lmwb_input_error(error, "%s: the model has no edge %s -> %s (a reader reads only writers below it)", where, src, dst);
  return i;
}

static const char *string_at(JsonNode *n) {
  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING ? json_node_get_string(n) : NULL;
}

gboolean lmwb_edge_circuit_read(const LmwbEdgeGraph *g, const char *path, uint8_t *keep, GError **error) {
  JsonNode *root = lmwb_json_load_file(path, CIRCUIT_MAX_BYTES, error);
  if (!root) return FALSE;
  memset(keep, 0, (size_t)g->n_edges);
  gboolean ok = TRUE;
  JsonArray *list = NULL;
  gboolean pairs = JSON_NODE_HOLDS_ARRAY(root);
  if (pairs) {
    list = json_node_get_array(root);
  } else if (JSON_NODE_HOLDS_OBJECT(root)) {
    JsonNode *edges = json_object_get_member(json_node_get_object(root), "edges");
    if (edges && JSON_NODE_HOLDS_ARRAY(edges)) list = json_node_get_array(edges);
  }
  if (!list) {
    lmwb_input_error(error, "%s: a circuit file is a list of [source, target] pairs or an object with \"edges\"", path);
    ok = FALSE;
  }
  for (guint i = 0; ok && i < json_array_get_length(list); i++) {
    JsonNode *n = json_array_get_element(list, i);
    g_autofree char *where = g_strdup_printf("%s: edges[%u]", path, i);
    const char *src = NULL, *dst = NULL;
    gboolean in = TRUE;
    if (pairs && JSON_NODE_HOLDS_ARRAY(n) && json_array_get_length(json_node_get_array(n)) == 2) {
      src = string_at(json_array_get_element(json_node_get_array(n), 0));
      dst = string_at(json_array_get_element(json_node_get_array(n), 1));
    } else if (!pairs && JSON_NODE_HOLDS_OBJECT(n)) {
      JsonObject *o = json_node_get_object(n);
      src = string_at(json_object_get_member(o, "source"));
      dst = string_at(json_object_get_member(o, "target"));
      JsonNode *ic = json_object_get_member(o, "in_circuit");
      if (ic && (!JSON_NODE_HOLDS_VALUE(ic) || json_node_get_value_type(ic) != G_TYPE_BOOLEAN)) {
        lmwb_input_error(error, "%s.in_circuit: not true or false", where);
        ok = FALSE;
        break;
      }
      in = !ic || json_node_get_boolean(ic);
    }
    if (!src || !dst) {
      lmwb_input_error(error, "%s: %s", where, pairs ? "not a [source, target] pair of names" : "\"source\" and \"target\" must be names");
      ok = FALSE;
      break;
    }
    int64_t e = edge_of(g, src, dst, where, error);
    if (e < 0) ok = FALSE;
    else if (in) keep[e] = 1;
  }
  json_node_unref(root);
  return ok;
}

/* The edge's writer and reader names as JSON strings, `between` between them. */
static void append_names(GString *out, const LmwbEdgeGraph *g, int64_t e, const char *between) {
  int w = 0, v = 0;
  lmwb_edge_ends(g, e, &w, &v);
  g_autofree char *a = lmwb_edge_writer_name(g, w), *b = lmwb_edge_reader_name(g, v);
  lmwb_json_append_string(out, a);
  g_string_append(out, between);
  lmwb_json_append_string(out, b);
}

static gboolean write_text(const char *path, char *text, size_t len, GError **error) {
  gboolean ok = lmwb_file_write_atomic(path, text, len, error);
  g_free(text);
  return ok;
}

/* "fields" first (their JSON text), then the edges. */
char *lmwb_edge_scores_json(const LmwbEdgeGraph *g, const float *score, const uint8_t *keep, JsonObject *fields,
                            size_t *len, GError **error) {
  for (int64_t e = 0; score && e < g->n_edges; e++)
    if (!isfinite(score[e])) {
      int w = 0, v = 0;
      lmwb_edge_ends(g, e, &w, &v);
      g_autofree char *a = lmwb_edge_writer_name(g, w), *b = lmwb_edge_reader_name(g, v);
      g_set_error(error, LMWB_ERROR, LMWB_ERROR_FAILED, "the score of edge %s -> %s is not a finite number: nothing written",
                  a, b);
      return NULL;
    }
  GString *out = g_string_new("{");
  if (fields) {
    GList *keys = json_object_get_members(fields);
    for (GList *k = keys; k; k = k->next) {
      JsonNode *n = json_node_copy(json_object_get_member(fields, k->data));
      g_autofree char *text = lmwb_json_generate(n, FALSE, NULL);
      json_node_unref(n);
      lmwb_json_append_string(out, k->data);
      g_string_append_printf(out, ":%s,", text);
    }
    g_list_free(keys);
  }
  g_string_append_printf(out, "\"n_edges\":%" G_GINT64_FORMAT ",\"in_circuit\":%" G_GINT64_FORMAT ",\"edges\":[",
                         g->n_edges, lmwb_edge_count(g, keep));
  char num[G_ASCII_DTOSTR_BUF_SIZE];
  for (int64_t e = 0; e < g->n_edges; e++) {
    g_string_append(out, e ? ",{\"source\":" : "{\"source\":");
    append_names(out, g, e, ",\"target\":");
    g_ascii_formatd(num, sizeof num, "%.9g", score ? score[e] : 1.0);
    g_string_append_printf(out, ",\"score\":%s,\"in_circuit\":%s}", num, !keep || keep[e] ? "true" : "false");
  }
  g_string_append(out, "]}\n");
  if (len) *len = out->len;
  return g_string_free(out, FALSE);
}

gboolean lmwb_edge_scores_write(const LmwbEdgeGraph *g, const float *score, const uint8_t *keep, JsonObject *fields,
                                const char *path, GError **error) {
  size_t len = 0;
  char *text = lmwb_edge_scores_json(g, score, keep, fields, &len, error);
  return text && write_text(path, text, len, error);
}

gboolean lmwb_edge_list_write(const LmwbEdgeGraph *g, const uint8_t *keep, const char *path, GError **error) {
  GString *out = g_string_new("[");
  gboolean first = TRUE;
  for (int64_t e = 0; e < g->n_edges; e++) {
    if (keep && !keep[e]) continue;
    g_string_append(out, first ? "[" : ",[");
    append_names(out, g, e, ",");
    g_string_append_c(out, ']');
    first = FALSE;
  }
  g_string_append(out, "]\n");
  size_t len = out->len;
  return write_text(path, g_string_free(out, FALSE), len, error);
}
