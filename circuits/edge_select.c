/* Choosing edges: top by |score|, and dangling edges removed (circuits/edge_circuit.h). */
#include "circuits/edge_circuit.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int64_t lmwb_edge_count(const LmwbEdgeGraph *g, const uint8_t *keep) {
  int64_t n = 0;
  for (int64_t e = 0; e < g->n_edges; e++) n += keep ? keep[e] != 0 : 1;
  return n;
}

static const float *sort_scores;

static int by_abs_score(const void *a, const void *b) {
  int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
  float x = fabsf(sort_scores[i]), y = fabsf(sort_scores[j]);
  if (isnan(x)) x = -1.f;
  if (isnan(y)) y = -1.f;
  if (x != y) return x > y ? -1 : 1;
  return (i > j) - (i < j);
}

int64_t lmwb_edge_select_top(const LmwbEdgeGraph *g, const float *score, int64_t n, uint8_t *keep) {
  int64_t E = g->n_edges;
  g_autofree int64_t *order = g_new(int64_t, E);
  for (int64_t e = 0; e < E; e++) order[e] = e;
  G_LOCK_DEFINE_STATIC(sort);
  G_LOCK(sort); /* qsort has no user pointer */
  sort_scores = score;
  qsort(order, (size_t)E, sizeof *order, by_abs_score);
  G_UNLOCK(sort);
  memset(keep, 0, (size_t)E);
  for (int64_t i = 0; i < MIN(n, E); i++) keep[order[i]] = 1;
  return lmwb_edge_remove_dangling(g, keep);
}

/* The writer a reader belongs to (a key/value reader: the first of the heads it serves), and how
 * many writers share it (GQA: heads per key-value head). */
static int reader_owner(const LmwbEdgeGraph *g, int v, int *n_owners) {
  int per = g->n_head + 2 * g->n_kv_head + 1, l = v / per, i = v % per, rep = g->n_head / g->n_kv_head;
  *n_owners = 1;
  if (v == g->n_readers - 1) return -1; /* logits */
  if (i < g->n_head) return lmwb_edge_writer_head(g, l, i);
  if (i == per - 1) return lmwb_edge_writer_mlp(g, l);
  int kv = (i - g->n_head) % g->n_kv_head;
  *n_owners = rep;
  return lmwb_edge_writer_head(g, l, kv * rep);
}

int64_t lmwb_edge_remove_dangling(const LmwbEdgeGraph *g, uint8_t *keep) {
  if (g->n_readers < 1 || g->n_writers < 1) return 0;
  size_t nw = (size_t)g->n_writers + 1, nr = (size_t)g->n_readers + 1; /* + 1: gcc's overflow check */
  g_autofree uint8_t *reach_w = g_malloc0(nw), *reach_v = g_malloc0(nr), *alive_w = g_malloc0(nw), *alive_v = g_malloc0(nr);
  /* Readers come in layer order, each reading only writers of earlier readers' owners: one pass up
   * finds what the input reaches, one pass down what reaches the logits. A writer's readers all
   * precede the readers of its outputs. */
  reach_w[0] = 1;
  for (int v = 0; v < g->n_readers; v++) {
    for (int w = 0; w < g->reader_n_in[v] && !reach_v[v]; w++) reach_v[v] = keep[g->reader_offset[v] + w] && reach_w[w];
    int k = 0, o = reader_owner(g, v, &k);
    for (int j = 0; o >= 0 && j < k; j++) reach_w[o + j] |= reach_v[v];
  }
  alive_v[nr - 2] = 1; /* logits */
  for (int v = g->n_readers - 1; v >= 0; v--) {
    int k = 0, o = reader_owner(g, v, &k);
    for (int j = 0; o >= 0 && j < k; j++) alive_v[v] |= alive_w[o + j];
    if (!alive_v[v]) continue;
    for (int w = 0; w < g->reader_n_in[v]; w++) alive_w[w] |= keep[g->reader_offset[v] + w] != 0;
  }
  int64_t n = 0;
  for (int v = 0; v < g->n_readers; v++)
    for (int w = 0; w < g->reader_n_in[v]; w++) {
      int64_t e = g->reader_offset[v] + w;
      keep[e] = keep[e] && reach_w[w] && alive_v[v];
      n += keep[e];
    }
  return n;
}
