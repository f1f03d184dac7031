/* Node ids (Neuronpedia / circuit-tracer and Edge-Pruning names), captions and drawing rows
 * (circuits/graph.h). */
#include <string.h>

#include "app/core/errors.h"
#include "circuits/graph.h"
#include "circuits/graph_private.h"

static const char part_letter[] = "?qkv";

char *lmwb_graph_node_id(const LmwbGraph *g, int node) {
  return node >= 0 && node < g->n_nodes ? lmwb_graph_id_of(g, &g->nodes[node]) : NULL;
}

char *lmwb_graph_id_of(const LmwbGraph *g, const LmwbGraphNode *n) {
  switch (n->kind) {
    case LMWB_GRAPH_FEATURE: return g_strdup_printf("%d_%" G_GINT64_FORMAT "_%d", n->layer, n->index, n->pos);
    case LMWB_GRAPH_ERROR: return g_strdup_printf("%d_-1_%d", n->layer, n->pos);
    case LMWB_GRAPH_TOKEN: return g_strdup_printf("E_%" G_GINT64_FORMAT "_%d", n->index, n->pos);
    case LMWB_GRAPH_LOGIT: return g_strdup_printf("%d_%" G_GINT64_FORMAT "_%d", g->n_layers + 1, n->index, n->pos);
    case LMWB_GRAPH_INPUT: return g_strdup("input");
    case LMWB_GRAPH_HEAD: return g_strdup_printf("a%d.h%" G_GINT64_FORMAT, n->layer, n->index);
    case LMWB_GRAPH_MLP: return g_strdup_printf("m%d", n->layer);
    case LMWB_GRAPH_READER:
      return g_strdup_printf("a%d.h%" G_GINT64_FORMAT "<%c>", n->layer, n->index, part_letter[n->part & 3]);
    case LMWB_GRAPH_OUTPUT: return g_strdup("logits");
  }
  return NULL;
}

/* A decimal integer in [s, s+n) within [min, max]: optional '-', no leading zeros, nothing else. */
static gboolean parse_int(const char *s, size_t n, gint64 min, gint64 max, gint64 *out) {
  gboolean neg = n > 0 && s[0] == '-';
  const char *d = s + neg;
  size_t nd = n - neg;
  if (nd == 0 || nd > 19 || (nd > 1 && d[0] == '0') || (neg && nd == 1 && d[0] == '0')) return FALSE;
  guint64 v = 0;
  for (size_t i = 0; i < nd; i++) {
    if (!g_ascii_isdigit(d[i])) return FALSE;
    v = v * 10 + (guint64)(d[i] - '0');
  }
  if (v > (guint64)G_MAXINT64) return FALSE;
  gint64 x = neg ? -(gint64)v : (gint64)v;
  if (x < min || x > max) return FALSE;
  *out = x;
  return TRUE;
}

static gboolean parse_str_int(const char *s, gint64 min, gint64 max, gint64 *out) {
  return parse_int(s, strlen(s), min, max, out);
}

/* "{a}_{b}_{c}" of an attribution id. */
static gboolean parse_attribution(const LmwbGraph *g, const char *id, LmwbGraphNodeKind kind, int *layer, int *pos,
                                  gint64 *index) {
  g_auto(GStrv) p = g_strsplit(id, "_", 0);
  if (g_strv_length(p) != 3) return FALSE;
  gint64 a = 0, b = 0, c = 0;
  if (!parse_str_int(p[2], 0, G_MAXINT, &c)) return FALSE;
  *pos = (int)c;
  switch (kind) {
    case LMWB_GRAPH_TOKEN:
      if (strcmp(p[0], "E") || !parse_str_int(p[1], 0, G_MAXINT64, &b)) return FALSE;
      *layer = -1;
      *index = b;
      return TRUE;
    case LMWB_GRAPH_FEATURE:
      if (!parse_str_int(p[0], 0, g->n_layers - 1, &a) || !parse_str_int(p[1], 0, G_MAXINT64, &b)) return FALSE;
      *layer = (int)a;
      *index = b;
      return TRUE;
    case LMWB_GRAPH_ERROR:
      /* "{layer}_-1_{pos}", or circuit-tracer's older "0_{layer}_{pos}" */
      if (!strcmp(p[1], "-1")) {
        if (!parse_str_int(p[0], 0, g->n_layers - 1, &a)) return FALSE;
      } else if (strcmp(p[0], "0") || !parse_str_int(p[1], 0, g->n_layers - 1, &a)) {
        return FALSE;
      }
      *layer = (int)a;
      *index = -1;
      return TRUE;
    case LMWB_GRAPH_LOGIT:
      if (!parse_str_int(p[0], g->n_layers + 1, g->n_layers + 1, &a) || !parse_str_int(p[1], 0, G_MAXINT64, &b))
        return FALSE;
      *layer = g->n_layers + 1;
      *index = b;
      return TRUE;
    default:
      return FALSE;
  }
}

/* "input", "logits", "m{L}", "a{L}.h{H}", "a{L}.h{H}<q|k|v>". */
static gboolean parse_edge_pruning(const LmwbGraph *g, const char *id, LmwbGraphNodeKind *kind, int *layer,
                                   gint64 *index, LmwbGraphPart *part) {
  gint64 l = 0, h = 0;
  *index = -1;
  if (!strcmp(id, "input") || !strcmp(id, "logits")) {
    *kind = id[0] == 'i' ? LMWB_GRAPH_INPUT : LMWB_GRAPH_OUTPUT;
    *layer = id[0] == 'i' ? -1 : g->n_layers + 1;
    return TRUE;
  }
  if (id[0] == 'm') {
    if (!parse_str_int(id + 1, 0, g->n_layers - 1, &l)) return FALSE;
    *kind = LMWB_GRAPH_MLP;
    *layer = (int)l;
    return TRUE;
  }
  const char *dot = strstr(id, ".h");
  if (id[0] != 'a' || !dot || !parse_int(id + 1, (size_t)(dot - id - 1), 0, g->n_layers - 1, &l)) return FALSE;
  const char *head = dot + 2, *lt = strchr(head, '<');
  if (!parse_int(head, lt ? (size_t)(lt - head) : strlen(head), 0, G_MAXINT64, &h)) return FALSE;
  *layer = (int)l;
  *index = h;
  if (!lt) {
    *kind = LMWB_GRAPH_HEAD;
    return TRUE;
  }
  const char *letter = strchr(part_letter + 1, lt[1]);
  if (!lt[1] || !letter || strcmp(lt + 2, ">")) return FALSE;
  *kind = LMWB_GRAPH_READER;
  *part = (LmwbGraphPart)(letter - part_letter);
  return TRUE;
}

static const char *const id_forms[] = {"{layer}_{feature}_{pos}", "{layer}_-1_{pos}", "E_{token}_{pos}",
                                       "{n_layers+1}_{vocab}_{pos}", "input", "a{L}.h{H}", "m{L}",
                                       "a{L}.h{H}<q|k|v>", "logits"};

gboolean lmwb_graph_parse_node_id(const LmwbGraph *g, const char *id, LmwbGraphNodeKind kind, int *layer, int *pos,
                                  int64_t *index, LmwbGraphPart *part, GError **error) {
  const char *kname = lmwb_graph_kind_name(kind);
  if ((unsigned)kind > LMWB_GRAPH_OUTPUT || lmwb_graph_kind_is_edge_pruning(kind) != (g->method == LMWB_GRAPH_EDGE_PRUNING)) {
    lmwb_input_error(error, "graph: a %s node does not belong in an %s graph", kname, lmwb_graph_method_name(g->method));
    return FALSE;
  }
  int l = 0, p = -1;
  gint64 x = -1;
  LmwbGraphPart pt = LMWB_GRAPH_PART_NONE;
  gboolean ok;
  if (lmwb_graph_kind_is_edge_pruning(kind)) {
    LmwbGraphNodeKind found = kind;
    ok = id && parse_edge_pruning(g, id, &found, &l, &x, &pt) && found == kind;
  } else {
    ok = id && parse_attribution(g, id, kind, &l, &p, &x);
  }
  if (!ok) {
    lmwb_input_error(error, "graph: \"%s\" is not the id of a %s node of this %d-layer graph (%s)", id ? id : "",
                     kname, g->n_layers, id_forms[kind]);
    return FALSE;
  }
  *layer = l;
  *pos = p;
  *index = x;
  *part = pt;
  return TRUE;
}

char *lmwb_graph_node_caption(const LmwbGraph *g, int node) {
  if (node < 0 || node >= g->n_nodes) return NULL;
  const char *label = g->nodes[node].label;
  return label && *label ? g_strdup(label) : lmwb_graph_node_id(g, node);
}

int lmwb_graph_node_rank(const LmwbGraph *g, int node) {
  if (node < 0 || node >= g->n_nodes) return -1;
  const LmwbGraphNode *n = &g->nodes[node];
  switch (n->kind) {
    case LMWB_GRAPH_TOKEN: case LMWB_GRAPH_INPUT: return 0;
    case LMWB_GRAPH_FEATURE: case LMWB_GRAPH_ERROR: return 1 + n->layer;
    case LMWB_GRAPH_LOGIT: return g->n_layers + 1;
    case LMWB_GRAPH_READER: return 3 * n->layer + 1;
    case LMWB_GRAPH_HEAD: return 3 * n->layer + 2;
    case LMWB_GRAPH_MLP: return 3 * n->layer + 3;
    case LMWB_GRAPH_OUTPUT: return 3 * g->n_layers + 1;
  }
  return -1;
}

int lmwb_graph_reader_head(const LmwbGraph *g, int reader) {
  if (reader < 0 || reader >= g->n_nodes || g->nodes[reader].kind != LMWB_GRAPH_READER) return -1;
  g_autofree char *id =
      g_strdup_printf("a%d.h%" G_GINT64_FORMAT, g->nodes[reader].layer, g->nodes[reader].index);
  return lmwb_graph_find(g, id);
}

char *lmwb_graph_row_name(const LmwbGraph *g, int rank) {
  if (g->method == LMWB_GRAPH_ATTRIBUTION) {
    if (rank == 0) return g_strdup("Emb");
    return rank > g->n_layers ? g_strdup("Logits") : g_strdup_printf("L%d", rank - 1);
  }
  if (rank == 0) return g_strdup("Input");
  if (rank > 3 * g->n_layers) return g_strdup("Logits");
  static const char *const sub[] = {"qkv", "heads", "MLP"};
  return g_strdup_printf("L%d %s", (rank - 1) / 3, sub[(rank - 1) % 3]);
}
