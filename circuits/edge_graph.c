/* The edges of a model: writers, readers, names and the export to a circuit graph
 * (circuits/edge_stream.h). */
#include "app/core/errors.h"
#include "circuits/edge_stream.h"
#include <stdlib.h>
#include <string.h>

LmwbEdgeGraph *lmwb_edge_graph_new(const LmwbConfig *c, GError **error) {
  if (c->n_layer < 1 || c->n_head < 1 || c->n_kv_head < 1) {
    lmwb_input_error(error, "edge graph: the model has no layers or heads");
    return NULL;
  }
  LmwbEdgeGraph *g = g_new0(LmwbEdgeGraph, 1);
  int L = c->n_layer, H = c->n_head, K = c->n_kv_head;
  g->n_layers = L;
  g->n_head = H;
  g->n_kv_head = K;
  g->parallel = c->parallel_residual;
  g->n_writers = 1 + L * (H + 1);
  g->n_readers = L * (H + 2 * K + 1) + 1;
  g->reader_n_in = g_new(int, g->n_readers);
  g->reader_offset = g_new(int64_t, g->n_readers);
  int v = 0;
  for (int l = 0; l < L; l++) {
    int below = 1 + l * (H + 1);
    for (int i = 0; i < H + 2 * K; i++) g->reader_n_in[v++] = below;
    g->reader_n_in[v++] = g->parallel ? below : below + H;
  }
  g->reader_n_in[v++] = g->n_writers;
  int64_t off = 0;
  for (int i = 0; i < g->n_readers; i++) {
    g->reader_offset[i] = off;
    off += g->reader_n_in[i];
  }
  g->n_edges = off;
  return g;
}

void lmwb_edge_graph_free(LmwbEdgeGraph *g) {
  if (!g) return;
  g_free(g->reader_n_in);
  g_free(g->reader_offset);
  g_free(g);
}

int lmwb_edge_writer_head(const LmwbEdgeGraph *g, int layer, int head) { return 1 + layer * (g->n_head + 1) + head; }
int lmwb_edge_writer_mlp(const LmwbEdgeGraph *g, int layer) { return 1 + layer * (g->n_head + 1) + g->n_head; }

int lmwb_edge_reader(const LmwbEdgeGraph *g, LmwbEdgeReadKind kind, int layer, int head) {
  int per = g->n_head + 2 * g->n_kv_head + 1, base = layer * per;
  switch (kind) {
    case LMWB_EDGE_READ_Q: return base + head;
    case LMWB_EDGE_READ_K: return base + g->n_head + head;
    case LMWB_EDGE_READ_V: return base + g->n_head + g->n_kv_head + head;
    case LMWB_EDGE_READ_MLP: return base + per - 1;
    default: return g->n_readers - 1;
  }
}

char *lmwb_edge_writer_name(const LmwbEdgeGraph *g, int w) {
  if (w <= 0) return g_strdup("input");
  int l = (w - 1) / (g->n_head + 1), h = (w - 1) % (g->n_head + 1);
  return h == g->n_head ? g_strdup_printf("m%d", l) : g_strdup_printf("a%d.h%d", l, h);
}

/* The kind, layer and head of reader v. */
static LmwbEdgeReadKind reader_kind(const LmwbEdgeGraph *g, int v, int *layer, int *head) {
  int per = g->n_head + 2 * g->n_kv_head + 1;
  if (v == g->n_readers - 1) return LMWB_EDGE_READ_LOGITS;
  *layer = v / per;
  int i = v % per;
  if (i < g->n_head) return *head = i, LMWB_EDGE_READ_Q;
  i -= g->n_head;
  if (i < g->n_kv_head) return *head = i, LMWB_EDGE_READ_K;
  i -= g->n_kv_head;
  if (i < g->n_kv_head) return *head = i, LMWB_EDGE_READ_V;
  return LMWB_EDGE_READ_MLP;
}

char *lmwb_edge_reader_name(const LmwbEdgeGraph *g, int v) {
  int l = 0, h = 0;
  switch (reader_kind(g, v, &l, &h)) {
    case LMWB_EDGE_READ_Q: return g_strdup_printf("a%d.h%d<q>", l, h);
    case LMWB_EDGE_READ_K: return g_strdup_printf("a%d.h%d<k>", l, h);
    case LMWB_EDGE_READ_V: return g_strdup_printf("a%d.h%d<v>", l, h);
    case LMWB_EDGE_READ_MLP: return g_strdup_printf("m%d", l);
    default: return g_strdup("logits");
  }
}

/* A plain decimal number in [0, max) at *s; advances *s. */
static gboolean number(const char **s, int max, int *out) {
  const char *p = *s;
  if (!g_ascii_isdigit(*p) || (p[0] == '0' && g_ascii_isdigit(p[1]))) return FALSE;
  long v = 0;
  while (g_ascii_isdigit(*p) && v < 100000000) v = v * 10 + (*p++ - '0');
  if (v >= max) return FALSE;
  *out = (int)v;
  *s = p;
  return TRUE;
}

int lmwb_edge_writer_parse(const LmwbEdgeGraph *g, const char *name, GError **error) {
  const char *p = name;
  int l = 0, h = 0;
  if (!strcmp(name, "input") || !strcmp(name, "tok_embeds")) return 0;
  if (p[0] == 'm' && (++p, number(&p, g->n_layers, &l)) && !*p) return lmwb_edge_writer_mlp(g, l);
  p = name;
  if (p[0] == 'a' && (++p, number(&p, g->n_layers, &l)) && g_str_has_prefix(p, ".h") && (p += 2, number(&p, g->n_head, &h)) &&
      !*p)
    return lmwb_edge_writer_head(g, l, h);
  lmwb_input_error(error, "\"%s\" is not a writer of this model (input, a{L}.h{H} with L < %d and H < %d, m{L})", name,
                   g->n_layers, g->n_head);
  return -1;
}

int lmwb_edge_reader_parse(const LmwbEdgeGraph *g, const char *name, GError **error) {
  const char *p = name;
  int l = 0, h = 0;
  if (!strcmp(name, "logits") || !strcmp(name, "resid_post")) return g->n_readers - 1;
  if (p[0] == 'm' && (++p, number(&p, g->n_layers, &l)) && !*p) return lmwb_edge_reader(g, LMWB_EDGE_READ_MLP, l, 0);
  p = name;
  if (p[0] == 'a' && (++p, number(&p, g->n_layers, &l)) && g_str_has_prefix(p, ".h")) {
    p += 2;
    const char *q = p;
    while (g_ascii_isdigit(*q)) q++;
    /* Edge-Pruning writes "a7.h2.q"; EAP-IG "a7.h2<q>". */
    char part = (q[0] == '<' && q[1] && q[2] == '>' && !q[3]) ? q[1] : (q[0] == '.' && q[1] && !q[2]) ? q[1] : 0;
    LmwbEdgeReadKind k = part == 'q' ? LMWB_EDGE_READ_Q : part == 'k' ? LMWB_EDGE_READ_K : LMWB_EDGE_READ_V;
    int heads = part == 'q' ? g->n_head : g->n_kv_head;
    if ((part == 'q' || part == 'k' || part == 'v') && number(&p, heads, &h) && p == q) return lmwb_edge_reader(g, k, l, h);
  }
  lmwb_input_error(error, "\"%s\" is not a reader of this model (a{L}.h{H}<q|k|v> with L < %d, H < %d for q and < %d "
                   "for k and v; m{L}; logits)", name, g->n_layers, g->n_head, g->n_kv_head);
  return -1;
}

int64_t lmwb_edge_index(const LmwbEdgeGraph *g, int w, int v) {
  if (v < 0 || v >= g->n_readers || w < 0 || w >= g->reader_n_in[v]) return -1;
  return g->reader_offset[v] + w;
}

void lmwb_edge_ends(const LmwbEdgeGraph *g, int64_t e, int *w, int *v) {
  int lo = 0, hi = g->n_readers - 1;
  while (lo < hi) { /* the last reader whose offset is <= e */
    int mid = (lo + hi + 1) / 2;
    if (g->reader_offset[mid] <= e) lo = mid;
    else hi = mid - 1;
  }
  *v = lo;
  *w = (int)(e - g->reader_offset[lo]);
}

static int add_writer_node(LmwbGraph *gr, const LmwbEdgeGraph *g, int w, GError **error) {
  if (w == 0) return lmwb_graph_add_node(gr, LMWB_GRAPH_INPUT, -1, -1, -1, LMWB_GRAPH_PART_NONE, error);
  int l = (w - 1) / (g->n_head + 1), h = (w - 1) % (g->n_head + 1);
  if (h == g->n_head) return lmwb_graph_add_node(gr, LMWB_GRAPH_MLP, l, -1, -1, LMWB_GRAPH_PART_NONE, error);
  return lmwb_graph_add_node(gr, LMWB_GRAPH_HEAD, l, -1, h, LMWB_GRAPH_PART_NONE, error);
}

LmwbGraph *lmwb_edge_graph_export(const LmwbEdgeGraph *g, const float *score, const uint8_t *keep,
                                  const uint8_t *in_circuit, GError **error) {
  g_autoptr(LmwbGraph) gr = lmwb_graph_new(LMWB_GRAPH_EDGE_PRUNING, g->n_layers, error);
  if (!gr) return NULL;
  g_autofree int *wnode = g_new(int, g->n_writers), *rnode = g_new(int, g->n_readers);
  for (int w = 0; w < g->n_writers; w++)
    if ((wnode[w] = add_writer_node(gr, g, w, error)) < 0) return NULL;
  for (int v = 0; v < g->n_readers; v++) {
    int l = 0, h = 0;
    LmwbEdgeReadKind k = reader_kind(g, v, &l, &h);
    if (k == LMWB_EDGE_READ_MLP) rnode[v] = wnode[lmwb_edge_writer_mlp(g, l)]; /* an MLP reads and writes */
    else if (k == LMWB_EDGE_READ_LOGITS)
      rnode[v] = lmwb_graph_add_node(gr, LMWB_GRAPH_OUTPUT, 0, -1, -1, LMWB_GRAPH_PART_NONE, error);
    else
      rnode[v] = lmwb_graph_add_node(gr, LMWB_GRAPH_READER, l, -1, h, (LmwbGraphPart)(LMWB_GRAPH_PART_Q + (int)k), error);
    if (rnode[v] < 0) return NULL;
  }
  for (int v = 0; v < g->n_readers; v++)
    for (int w = 0; w < g->reader_n_in[v]; w++) {
      int64_t e = g->reader_offset[v] + w;
      if (keep && !keep[e]) continue;
      int i = lmwb_graph_add_edge(gr, wnode[w], rnode[v], score ? score[e] : 1.0, error);
      if (i < 0) return NULL;
      gr->edges[i].in_circuit = in_circuit ? in_circuit[e] != 0 : TRUE;
    }
  return g_steal_pointer(&gr);
}
