/* Two small circuits built by hand, shared by the graph tests: an attribution graph over
 * transcoder features and an edge-pruning graph over heads and MLPs. */
#pragma once
#include <glib.h>

#include "circuits/graph.h"

static inline int tu_node(LmwbGraph *g, LmwbGraphNodeKind kind, int layer, int pos, int64_t index, LmwbGraphPart part) {
  GError *err = NULL;
  int i = lmwb_graph_add_node(g, kind, layer, pos, index, part, &err);
  g_assert_no_error(err);
  g_assert_cmpint(i, >=, 0);
  return i;
}

static inline int tu_edge(LmwbGraph *g, const char *from, const char *to, double w, bool in_circuit) {
  GError *err = NULL;
  int e = lmwb_graph_add_edge(g, lmwb_graph_find(g, from), lmwb_graph_find(g, to), w, &err);
  g_assert_no_error(err);
  g->edges[e].in_circuit = in_circuit;
  return e;
}

/* 2 layers, prompt "The cat" = [464, 3797]. Nodes in this order:
 *   0 E_464_0  1 E_3797_1  2 0_17_0 (act 1.5, infl 0.2)  3 0_5_1 (act 2.25, infl 0.4)
 *   4 1_42_1 (act 0.75, infl 0.1, "cat-ness", pinned)  5 0_-1_1 (infl 0.5)  6 1_-1_1 (infl 0.6)
 *   7 3_9246_1 (target logit, p 0.6)  8 3_3290_1 (p 0.1)
 * Edges: 0 E_464_0->0_17_0 0.5, 1 E_3797_1->0_5_1 1.25, 2 0_17_0->1_42_1 -0.3,
 *   3 0_5_1->1_42_1 0.8, 4 0_-1_1->1_42_1 0.05, 5 1_42_1->3_9246_1 2.0, 6 1_-1_1->3_9246_1 -0.4,
 *   7 E_3797_1->3_3290_1 0.1. */
static inline LmwbGraph *tu_attribution_graph(void) {
  GError *err = NULL;
  LmwbGraph *g = lmwb_graph_new(LMWB_GRAPH_ATTRIBUTION, 2, &err);
  g_assert_no_error(err);
  const char *tokens[] = {"The", " cat"};
  const int32_t ids[] = {464, 3797};
  g_assert_true(lmwb_graph_set_prompt(g, "The cat", tokens, ids, 2, &err));
  g_free(g->slug);
  g->slug = g_strdup("cat-dog");
  g_free(g->model_name);
  g->model_name = g_strdup("tiny-world");
  g->node_threshold = 0.8, g->has_node_threshold = true;
  g->edge_threshold = 0.98, g->has_edge_threshold = true;
  g_ptr_array_add(g->transcoders, g_strdup("tc-layer0"));
  g_ptr_array_add(g->transcoders, g_strdup("tc-layer1"));
  g_assert_true(lmwb_graph_set_extra(g, "seed", "7", &err));
  tu_node(g, LMWB_GRAPH_TOKEN, 0, 0, 464, 0);
  tu_node(g, LMWB_GRAPH_TOKEN, 0, 1, 3797, 0);
  const struct { int layer, pos, feature; double act, infl; } f[] = {{0, 0, 17, 1.5, 0.2}, {0, 1, 5, 2.25, 0.4},
                                                                     {1, 1, 42, 0.75, 0.1}};
  for (int i = 0; i < 3; i++) {
    int k = tu_node(g, LMWB_GRAPH_FEATURE, f[i].layer, f[i].pos, f[i].feature, 0);
    g->nodes[k].activation = f[i].act, g->nodes[k].has_activation = true;
    g->nodes[k].influence = f[i].infl, g->nodes[k].has_influence = true;
  }
  g_assert_true(lmwb_graph_node_set_label(g, 4, "cat-ness", &err));
  g->nodes[4].pinned = true;
  for (int l = 0; l < 2; l++) {
    int k = tu_node(g, LMWB_GRAPH_ERROR, l, 1, -1, 0);
    g->nodes[k].influence = 0.5 + 0.1 * l, g->nodes[k].has_influence = true;
  }
  const struct { int vocab; double p; const char *tok; } lg[] = {{9246, 0.6, " dog"}, {3290, 0.1, " the"}};
  for (int i = 0; i < 2; i++) {
    int k = tu_node(g, LMWB_GRAPH_LOGIT, 0, 1, lg[i].vocab, 0);
    g->nodes[k].token_prob = lg[i].p;
    g->nodes[k].target_logit = i == 0;
    g_autofree char *label = lmwb_graph_logit_label(lg[i].tok, lg[i].p);
    g_assert_true(lmwb_graph_node_set_label(g, k, label, &err));
  }
  tu_edge(g, "E_464_0", "0_17_0", 0.5, true);
  tu_edge(g, "E_3797_1", "0_5_1", 1.25, true);
  tu_edge(g, "0_17_0", "1_42_1", -0.3, true);
  tu_edge(g, "0_5_1", "1_42_1", 0.8, true);
  tu_edge(g, "0_-1_1", "1_42_1", 0.05, true);
  tu_edge(g, "1_42_1", "3_9246_1", 2.0, true);
  tu_edge(g, "1_-1_1", "3_9246_1", -0.4, true);
  tu_edge(g, "E_3797_1", "3_3290_1", 0.1, true);
  return g;
}

/* 2 layers of 2 heads. Nodes: input, a0.h0<q>, a0.h1<v>, a0.h0, a0.h1, m0, a1.h0<q>, a1.h0<k>,
 * a1.h1<v>, a1.h0, a1.h1, m1, logits. Edges (score, in circuit unless marked out):
 *   0 input->a0.h0<q> 0.9, 1 input->a0.h1<v> 0.2 out, 2 a0.h0->m0 0.7, 3 input->m0 0.5,
 *   4 m0->a1.h0<q> 0.8, 5 a0.h1->a1.h0<k> -0.3 out, 6 a0.h0->a1.h1<v> 0.6, 7 a1.h0->logits 0.95,
 *   8 a1.h1->m1 0.4, 9 m1->logits 0.5, 10 a1.h1->logits 0.1 out. */
static inline LmwbGraph *tu_edge_pruning_graph(void) {
  GError *err = NULL;
  LmwbGraph *g = lmwb_graph_new(LMWB_GRAPH_EDGE_PRUNING, 2, &err);
  g_assert_no_error(err);
  const char *tokens[] = {"When", " Mary"};
  g_assert_true(lmwb_graph_set_prompt(g, "When Mary", tokens, NULL, 2, &err));
  g_free(g->slug);
  g->slug = g_strdup("ioi");
  tu_node(g, LMWB_GRAPH_INPUT, 0, -1, 0, 0);
  tu_node(g, LMWB_GRAPH_READER, 0, -1, 0, LMWB_GRAPH_PART_Q);
  tu_node(g, LMWB_GRAPH_READER, 0, -1, 1, LMWB_GRAPH_PART_V);
  tu_node(g, LMWB_GRAPH_HEAD, 0, -1, 0, 0);
  tu_node(g, LMWB_GRAPH_HEAD, 0, -1, 1, 0);
  tu_node(g, LMWB_GRAPH_MLP, 0, -1, 0, 0);
  tu_node(g, LMWB_GRAPH_READER, 1, -1, 0, LMWB_GRAPH_PART_Q);
  tu_node(g, LMWB_GRAPH_READER, 1, -1, 0, LMWB_GRAPH_PART_K);
  tu_node(g, LMWB_GRAPH_READER, 1, -1, 1, LMWB_GRAPH_PART_V);
  tu_node(g, LMWB_GRAPH_HEAD, 1, -1, 0, 0);
  tu_node(g, LMWB_GRAPH_HEAD, 1, -1, 1, 0);
  tu_node(g, LMWB_GRAPH_MLP, 1, -1, 0, 0);
  tu_node(g, LMWB_GRAPH_OUTPUT, 0, -1, 0, 0);
  tu_edge(g, "input", "a0.h0<q>", 0.9, true);
  tu_edge(g, "input", "a0.h1<v>", 0.2, false);
  tu_edge(g, "a0.h0", "m0", 0.7, true);
  tu_edge(g, "input", "m0", 0.5, true);
  tu_edge(g, "m0", "a1.h0<q>", 0.8, true);
  tu_edge(g, "a0.h1", "a1.h0<k>", -0.3, false);
  tu_edge(g, "a0.h0", "a1.h1<v>", 0.6, true);
  tu_edge(g, "a1.h0", "logits", 0.95, true);
  tu_edge(g, "a1.h1", "m1", 0.4, true);
  tu_edge(g, "m1", "logits", 0.5, true);
  tu_edge(g, "a1.h1", "logits", 0.1, false);
  return g;
}
