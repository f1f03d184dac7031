/* Pinned nodes kept through pruning (circuits/attribution_pins.h), on a random transcoder set of a
 * fixture model: every kind of node is found by its identity; a pinned feature that pruning left out
 * comes back with exactly its non-zero edges to and from the kept nodes; pins of nodes the
 * attribution lacks change nothing. */
#include "circuits/attribution_pins.h"
#include <string.h>

static guint32 rng = 5;
static float urand(void) {
  rng = rng * 1664525u + 1013904223u;
  return (rng >> 8) / 16777216.0f * 2 - 1;
}

static LmwbTranscoderSet *random_set(const LmwbConfig *c, int d_sae) {
  LmwbTranscoderSet *set = lmwb_transcoder_set_new(c->n_layer);
  GError *err = NULL;
  for (int L = 0; L < c->n_layer; L++) {
    LmwbTranscoder *tc = lmwb_transcoder_new(c->d_model, d_sae, c->d_model, LMWB_TC_RELU, 0, &err);
    g_assert_no_error(err);
    for (size_t i = 0; i < (size_t)c->d_model * d_sae; i++) tc->W_enc[i] = 0.15f * urand(), tc->W_dec[i] = 0.3f * urand();
    for (int j = 0; j < d_sae; j++) tc->b_enc[j] = 0.1f * urand() - 0.05f;
    tc->in = (LmwbSite){LMWB_SITE_LN2, L};
    tc->out = (LmwbSite){LMWB_SITE_MLP_OUT, L};
    set->layers[L] = tc;
  }
  return set;
}

static void test_pins(void) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_autofree char *dir = g_build_filename(root ? root : ".", "tests/fixtures/models/gpt2", NULL);
  GError *err = NULL;
  LmwbModel *m = lmwb_model_load(dir, &err);
  g_assert_no_error(err);
  LmwbTranscoderSet *set = random_set(&m->cfg, 24);
  int32_t ids[6] = {3, 14, 15, 92, 65, 35};
  LmwbAttribution *a = lmwb_attribute(m, set, ids, 6, NULL, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpint(a->n_features, >, 10);
  /* every node is found by its identity */
  for (int i = 0; i < a->n_features; i++) {
    LmwbAttributionPin p = {LMWB_GRAPH_FEATURE, a->feat_layer[i], a->feat_pos[i], a->feat_index[i]};
    g_assert_cmpint(lmwb_attribution_find_node(a, &p), ==, i);
  }
  LmwbAttributionPin err_pin = {LMWB_GRAPH_ERROR, 1, 4, -1}, tok = {LMWB_GRAPH_TOKEN, -1, 2, ids[2]};
  LmwbAttributionPin logit = {LMWB_GRAPH_LOGIT, m->cfg.n_layer + 1, 5, a->logit_token[0]};
  g_assert_cmpint(lmwb_attribution_find_node(a, &err_pin), ==, lmwb_attr_error_node(a, 1, 4));
  g_assert_cmpint(lmwb_attribution_find_node(a, &tok), ==, lmwb_attr_token_node(a, 2));
  g_assert_cmpint(lmwb_attribution_find_node(a, &logit), ==, lmwb_attr_logit_node(a, 0));
  /* a feature the transcoders do not have, another token at position 2, a layer the model lacks */
  LmwbAttributionPin absent[3] = {{LMWB_GRAPH_FEATURE, 0, 0, 24}, {LMWB_GRAPH_TOKEN, -1, 2, ids[2] + 1},
                                  {LMWB_GRAPH_ERROR, 7, 0, -1}};
  for (int k = 0; k < 3; k++) g_assert_cmpint(lmwb_attribution_find_node(a, &absent[k]), ==, -1);

  /* a strict pruning leaves features out; pin one of them */
  LmwbAttributionPrune *p = lmwb_attribution_prune(a, 0.3, 0.5, &err);
  g_assert_no_error(err);
  int left_out = -1;
  for (int i = 0; i < a->n_features && left_out < 0; i++)
    if (!p->node_keep[i]) left_out = i;
  g_assert_cmpint(left_out, >=, 0);
  int n = a->n_nodes, nodes_before = p->nodes_kept, edges_before = p->edges_kept;
  g_autofree guint8 *keep_before = g_memdup2(p->node_keep, n), *edges_keep_before = g_memdup2(p->edge_keep, (size_t)n * n);
  LmwbAttributionPin pins[4] = {absent[0], {LMWB_GRAPH_FEATURE, a->feat_layer[left_out], a->feat_pos[left_out],
                                            a->feat_index[left_out]}, absent[1], absent[2]};
  g_assert_cmpint(lmwb_attribution_prune_keep_pins(a, p, pins, 4), ==, 1);
  g_assert_true(p->node_keep[left_out]);
  g_assert_cmpint(p->nodes_kept, ==, nodes_before + 1);
  int added = 0, kept_nodes = 0, kept_edges = 0;
  for (int v = 0; v < n; v++) {
    kept_nodes += p->node_keep[v];
    if (v != left_out) g_assert_cmpint(p->node_keep[v], ==, keep_before[v]);
  }
  for (size_t e = 0; e < (size_t)n * n; e++) {
    kept_edges += p->edge_keep[e];
    int t = (int)(e / n), s = (int)(e % n);
    gboolean touches = t == left_out || s == left_out;
    gboolean expect = edges_keep_before[e] ||
                      (touches && a->adj[e] != 0.f && p->node_keep[t] && p->node_keep[s]);
    g_assert_cmpint(p->edge_keep[e], ==, expect);
    added += p->edge_keep[e] && !edges_keep_before[e];
  }
  g_assert_cmpint(added, >, 0);
  g_assert_cmpint(kept_nodes, ==, p->nodes_kept);
  g_assert_cmpint(kept_edges, ==, p->edges_kept);
  g_assert_cmpint(p->edges_kept, ==, edges_before + added);
  /* pinning again changes nothing */
  g_assert_cmpint(lmwb_attribution_prune_keep_pins(a, p, pins, 4), ==, 1);
  g_assert_cmpint(p->edges_kept, ==, edges_before + added);
  lmwb_attribution_prune_free(p);
  lmwb_attribution_free(a);
  lmwb_transcoder_set_free(set);
  lmwb_model_unref(m);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/attribution/pins", test_pins);
  return g_test_run();
}
