/* What pruners need of a graph: subgraphs, edge orders, the connected part (circuits/graph.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "circuits/graph.h"
#include "circuits/graph_private.h"

static gpointer copy_str(gconstpointer s, gpointer unused) {
  return g_strdup(s);
}

static gpointer copy_strv(gconstpointer v, gpointer unused) {
  return g_strdupv((char **)v);
}

static GPtrArray *copy_array(GPtrArray *from, GCopyFunc copy, GDestroyNotify free_fn) {
  GPtrArray *a = g_ptr_array_copy(from, copy, NULL);
  g_ptr_array_set_free_func(a, free_fn);
  return a;
}

static void copy_metadata(LmwbGraph *to, const LmwbGraph *from) {
  g_free(to->slug);
  to->slug = g_strdup(from->slug);
  g_free(to->model_name);
  to->model_name = g_strdup(from->model_name);
  lmwb_graph_set_prompt(to, from->prompt, (const char *const *)from->prompt_tokens, from->prompt_ids, from->n_prompt,
                        NULL);
  to->node_threshold = from->node_threshold;
  to->edge_threshold = from->edge_threshold;
  to->has_node_threshold = from->has_node_threshold;
  to->has_edge_threshold = from->has_edge_threshold;
  g_ptr_array_unref(to->transcoders);
  to->transcoders = copy_array(from->transcoders, copy_str, g_free);
  g_ptr_array_unref(to->supernodes);
  to->supernodes = copy_array(from->supernodes, copy_strv, (GDestroyNotify)g_strfreev);
  g_free(to->clicked_id);
  to->clicked_id = g_strdup(from->clicked_id);
  g_free(to->sg_pos);
  to->sg_pos = g_strdup(from->sg_pos);
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, from->extras);
  while (g_hash_table_iter_next(&it, &k, &v)) g_hash_table_replace(to->extras, g_strdup(k), g_strdup(v));
}

LmwbGraph *lmwb_graph_subgraph(const LmwbGraph *g, const uint8_t *keep_nodes, const uint8_t *keep_edges, int *node_map) {
  LmwbGraph *s = lmwb_graph_new(g->method, g->n_layers, NULL);
  copy_metadata(s, g);
  int *map = node_map ? node_map : g_new(int, (size_t)MAX(g->n_nodes, 1));
  for (int i = 0; i < g->n_nodes; i++) {
    map[i] = -1;
    if (keep_nodes && !keep_nodes[i]) continue;
    const LmwbGraphNode *n = &g->nodes[i];
    /* cannot fail: the node is valid and its id unique in g */
    int j = lmwb_graph_add_node(s, n->kind, n->layer, n->pos, n->index, n->part, NULL);
    char *label = s->nodes[j].label;
    s->nodes[j] = *n;
    s->nodes[j].label = label;
    lmwb_graph_node_set_label(s, j, n->label, NULL);
    map[i] = j;
  }
  for (int e = 0; e < g->n_edges; e++) {
    const LmwbGraphEdge *x = &g->edges[e];
    if ((keep_edges && !keep_edges[e]) || map[x->source] < 0 || map[x->target] < 0) continue;
    int k = lmwb_graph_add_edge(s, map[x->source], map[x->target], x->weight, NULL);
    s->edges[k].in_circuit = x->in_circuit;
  }
  if (!node_map) g_free(map);
  return s;
}

static int cmp_endpoints(const LmwbGraphEdge *a, const LmwbGraphEdge *b) {
  if (a->source != b->source) return a->source < b->source ? -1 : 1;
  if (a->target != b->target) return a->target < b->target ? -1 : 1;
  return 0;
}

/* |weight| descending; NaN counts as the smallest. */
static int cmp_abs(const LmwbGraphEdge *a, const LmwbGraphEdge *b) {
  double x = isnan(a->weight) ? -1.0 : fabs(a->weight), y = isnan(b->weight) ? -1.0 : fabs(b->weight);
  return x > y ? -1 : x < y;
}

typedef struct {
  const LmwbGraph *g;
  LmwbGraphEdgeOrder order;
} EdgeSort;

/* Over edge indices; the index breaks the last tie, which makes the sort stable. */
static int cmp_edges(const void *pa, const void *pb, void *data) {
  const EdgeSort *s = data;
  int a = *(const int *)pa, b = *(const int *)pb;
  const LmwbGraphEdge *x = &s->g->edges[a], *y = &s->g->edges[b];
  int c = s->order == LMWB_GRAPH_BY_ABS_WEIGHT ? cmp_abs(x, y) : cmp_endpoints(x, y);
  if (!c) c = s->order == LMWB_GRAPH_BY_ABS_WEIGHT ? cmp_endpoints(x, y) : cmp_abs(x, y);
  return c ? c : (a > b) - (a < b);
}

void lmwb_graph_sort_edges(LmwbGraph *g, LmwbGraphEdgeOrder order) {
  if (g->n_edges < 2) return;
  int *idx = g_new(int, (size_t)g->n_edges);
  for (int e = 0; e < g->n_edges; e++) idx[e] = e;
  EdgeSort s = {g, order};
  qsort_r(idx, (size_t)g->n_edges, sizeof *idx, cmp_edges, &s);
  LmwbGraphEdge *sorted = g_new(LmwbGraphEdge, (size_t)g->priv->edge_cap);
  for (int e = 0; e < g->n_edges; e++) sorted[e] = g->edges[idx[e]];
  g_free(g->edges);
  g->edges = sorted;
  g_free(idx);
}

/* Edges usable for paths as an adjacency list in one direction (CSR). */
typedef struct {
  int *start; /* [n_nodes + 1] */
  int *to;    /* [start[n_nodes]] */
} Adjacency;

static void adjacency_build(const LmwbGraph *g, bool circuit_only, gboolean forward, Adjacency *a) {
  int n = g->n_nodes;
  a->start = g_new0(int, (size_t)n + 1);
  int *heads = g_new(int, (size_t)MAX(n, 1));
  for (int i = 0; i < n; i++) heads[i] = lmwb_graph_reader_head(g, i);
  /* two passes: count, then fill */
  for (int pass = 0; pass < 2; pass++) {
    int *fill = pass ? g_memdup2(a->start, sizeof(int) * (size_t)n) : NULL;
    for (int e = 0; e < g->n_edges + n; e++) {
      int s, t;
      if (e < g->n_edges) {
        if (circuit_only && !g->edges[e].in_circuit) continue;
        s = g->edges[e].source, t = g->edges[e].target;
      } else {
        s = e - g->n_edges, t = heads[s];
        if (t < 0) continue;
      }
      int from = forward ? s : t, to = forward ? t : s;
      if (pass)
        a->to[fill[from]++] = to;
      else
        a->start[from + 1]++;
    }
    if (!pass) {
      for (int i = 0; i < n; i++) a->start[i + 1] += a->start[i];
      a->to = g_new(int, (size_t)MAX(a->start[n], 1));
    }
    g_free(fill);
  }
  g_free(heads);
}

/* Marks in seen[] what is reachable from the nodes that are_roots. */
static void reach(const LmwbGraph *g, const Adjacency *a, gboolean (*is_root)(LmwbGraphNodeKind), uint8_t *seen) {
  int *stack = g_new(int, (size_t)MAX(g->n_nodes, 1));
  int top = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    seen[i] = is_root(g->nodes[i].kind) ? 1 : 0;
    if (seen[i]) stack[top++] = i;
  }
  while (top > 0) {
    int u = stack[--top];
    for (int k = a->start[u]; k < a->start[u + 1]; k++) {
      if (!seen[a->to[k]]) {
        seen[a->to[k]] = 1;
        stack[top++] = a->to[k];
      }
    }
  }
  g_free(stack);
}

static gboolean is_source(LmwbGraphNodeKind k) {
  return k == LMWB_GRAPH_TOKEN || k == LMWB_GRAPH_ERROR || k == LMWB_GRAPH_INPUT;
}

static gboolean is_sink(LmwbGraphNodeKind k) {
  return k == LMWB_GRAPH_LOGIT || k == LMWB_GRAPH_OUTPUT;
}

int lmwb_graph_mask_connected(const LmwbGraph *g, bool circuit_only, uint8_t *keep) {
  int n = g->n_nodes;
  Adjacency fwd, bwd;
  adjacency_build(g, circuit_only, TRUE, &fwd);
  adjacency_build(g, circuit_only, FALSE, &bwd);
  uint8_t *from_source = g_new(uint8_t, (size_t)MAX(n, 1)), *to_sink = g_new(uint8_t, (size_t)MAX(n, 1));
  reach(g, &fwd, is_source, from_source);
  reach(g, &bwd, is_sink, to_sink);
  int kept = 0;
  for (int i = 0; i < n; i++) {
    LmwbGraphNodeKind k = g->nodes[i].kind;
    gboolean anchor = k == LMWB_GRAPH_TOKEN || k == LMWB_GRAPH_INPUT || is_sink(k);
    keep[i] = anchor || (from_source[i] && to_sink[i]);
    kept += keep[i];
  }
  g_free(from_source);
  g_free(to_sink);
  g_free(fwd.start);
  g_free(fwd.to);
  g_free(bwd.start);
  g_free(bwd.to);
  return kept;
}
