/* The circuit graph model (circuits/graph.h): node ids, validation, lookups and the pruning helpers. */
#include <math.h>
#include <string.h>

#include "app/core/errors.h"
#include "circuits/graph_private.h"
#include "graph_test_util.h"

static void assert_input_error(GError **err, const char *needle) {
  g_assert_error(*err, LMWB_ERROR, LMWB_ERROR_INPUT);
  if (!strstr((*err)->message, needle)) g_error("\"%s\" not in the message \"%s\"", needle, (*err)->message);
  g_clear_error(err);
}

static void test_attribution_ids(void) {
  g_autoptr(LmwbGraph) g = tu_attribution_graph();
  const char *want[] = {"E_464_0", "E_3797_1", "0_17_0", "0_5_1", "1_42_1", "0_-1_1", "1_-1_1", "3_9246_1", "3_3290_1"};
  g_assert_cmpint(g->n_nodes, ==, G_N_ELEMENTS(want));
  for (int i = 0; i < g->n_nodes; i++) {
    g_autofree char *id = lmwb_graph_node_id(g, i);
    g_assert_cmpstr(id, ==, want[i]);
    g_assert_cmpint(lmwb_graph_find(g, want[i]), ==, i);
  }
  /* layers the kinds imply, whatever was passed */
  g_assert_cmpint(g->nodes[0].layer, ==, -1);
  g_assert_cmpint(g->nodes[7].layer, ==, 3);
  g_assert_cmpint(g->nodes[5].index, ==, -1);
  g_assert_cmpint(lmwb_graph_find(g, "2_17_0"), ==, -1);
  g_assert_cmpint(lmwb_graph_find(g, NULL), ==, -1);
  g_assert_null(lmwb_graph_node_id(g, 9));
  g_assert_null(lmwb_graph_node_id(g, -1));
  g_autofree char *caption = lmwb_graph_node_caption(g, 4), *bare = lmwb_graph_node_caption(g, 2);
  g_assert_cmpstr(caption, ==, "cat-ness");
  g_assert_cmpstr(bare, ==, "0_17_0");
  g_assert_cmpstr(g->nodes[7].label, ==, "Output \" dog\" (p=0.600)");
}

static void test_edge_pruning_ids(void) {
  g_autoptr(LmwbGraph) g = tu_edge_pruning_graph();
  const char *want[] = {"input", "a0.h0<q>", "a0.h1<v>", "a0.h0", "a0.h1", "m0", "a1.h0<q>",
                        "a1.h0<k>", "a1.h1<v>", "a1.h0", "a1.h1", "m1", "logits"};
  g_assert_cmpint(g->n_nodes, ==, G_N_ELEMENTS(want));
  for (int i = 0; i < g->n_nodes; i++) {
    g_autofree char *id = lmwb_graph_node_id(g, i);
    g_assert_cmpstr(id, ==, want[i]);
  }
  /* each reader feeds its own head; other nodes feed none */
  g_assert_cmpint(lmwb_graph_reader_head(g, 1), ==, 3);
  g_assert_cmpint(lmwb_graph_reader_head(g, 7), ==, 9);
  g_assert_cmpint(lmwb_graph_reader_head(g, 8), ==, 10);
  g_assert_cmpint(lmwb_graph_reader_head(g, 3), ==, -1);
  g_assert_cmpint(g->nodes[12].layer, ==, 3);
  g_assert_cmpint(g->nodes[0].layer, ==, -1);
  g_assert_cmpint(g->nodes[8].part, ==, LMWB_GRAPH_PART_V);
}

/* parse_node_id is the inverse of node_id, and refuses what is not an id of the kind. */
static void test_parse_ids(void) {
  g_autoptr(LmwbGraph) a = tu_attribution_graph();
  g_autoptr(LmwbGraph) e = tu_edge_pruning_graph();
  GError *err = NULL;
  for (int pass = 0; pass < 2; pass++) {
    LmwbGraph *g = pass ? e : a;
    for (int i = 0; i < g->n_nodes; i++) {
      g_autofree char *id = lmwb_graph_node_id(g, i);
      int layer = 99, pos = 99;
      int64_t index = 99;
      LmwbGraphPart part = 99;
      g_assert_true(lmwb_graph_parse_node_id(g, id, g->nodes[i].kind, &layer, &pos, &index, &part, &err));
      g_assert_no_error(err);
      g_assert_cmpint(layer, ==, g->nodes[i].layer);
      g_assert_cmpint(pos, ==, g->nodes[i].pos);
      g_assert_cmpint(index, ==, g->nodes[i].index);
      g_assert_cmpint(part, ==, g->nodes[i].part);
    }
  }
  int layer, pos;
  int64_t index;
  LmwbGraphPart part;
  /* circuit-tracer's older error ids "0_{layer}_{pos}" */
  g_assert_true(lmwb_graph_parse_node_id(a, "0_1_4", LMWB_GRAPH_ERROR, &layer, &pos, &index, &part, &err));
  g_assert_cmpint(layer, ==, 1);
  g_assert_cmpint(pos, ==, 4);
  const struct { LmwbGraph *g; const char *id; LmwbGraphNodeKind kind; } bad[] = {
      {a, "2_17_0", LMWB_GRAPH_FEATURE},  /* layer 2 of a 2-layer model */
      {a, "0_17", LMWB_GRAPH_FEATURE},    {a, "0_17_0_1", LMWB_GRAPH_FEATURE}, {a, "0_017_0", LMWB_GRAPH_FEATURE},
      {a, "0_-3_0", LMWB_GRAPH_FEATURE},  {a, "0_+3_0", LMWB_GRAPH_FEATURE},   {a, " 0_3_0", LMWB_GRAPH_FEATURE},
      {a, "0_3_-1", LMWB_GRAPH_FEATURE},  {a, "X_3_1", LMWB_GRAPH_TOKEN},      {a, "2_3_1", LMWB_GRAPH_LOGIT},
      {a, "1_5_1", LMWB_GRAPH_ERROR},     {a, "0_99999999999999999999_1", LMWB_GRAPH_FEATURE},
      {a, "input", LMWB_GRAPH_INPUT},     {e, "a2.h0", LMWB_GRAPH_HEAD},       {e, "a0.h0<x>", LMWB_GRAPH_READER},
      {e, "a0.h0<q>z", LMWB_GRAPH_READER}, {e, "a0.h0", LMWB_GRAPH_READER},    {e, "m", LMWB_GRAPH_MLP},
      {e, "a0h0", LMWB_GRAPH_HEAD},       {e, "a0.h", LMWB_GRAPH_HEAD},        {e, "0_1_1", LMWB_GRAPH_FEATURE},
      {e, "a0.h0<", LMWB_GRAPH_READER},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_assert_false(lmwb_graph_parse_node_id(bad[i].g, bad[i].id, bad[i].kind, &layer, &pos, &index, &part, &err));
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
    g_clear_error(&err);
  }
}

static void test_add_refuses(void) {
  g_autoptr(LmwbGraph) g = tu_attribution_graph();
  GError *err = NULL;
  int n = g->n_nodes;
  g_assert_cmpint(lmwb_graph_add_node(g, LMWB_GRAPH_FEATURE, 0, 0, 17, 0, &err), ==, -1);
  assert_input_error(&err, "\"0_17_0\" is already");
  g_assert_cmpint(lmwb_graph_add_node(g, LMWB_GRAPH_FEATURE, 2, 0, 1, 0, &err), ==, -1);
  assert_input_error(&err, "layer 2");
  g_assert_cmpint(lmwb_graph_add_node(g, LMWB_GRAPH_ERROR, -1, 0, 0, 0, &err), ==, -1);
  assert_input_error(&err, "layer -1");
  g_assert_cmpint(lmwb_graph_add_node(g, LMWB_GRAPH_FEATURE, 0, -1, 1, 0, &err), ==, -1);
  assert_input_error(&err, "position -1");
  g_assert_cmpint(lmwb_graph_add_node(g, LMWB_GRAPH_TOKEN, 0, 3, -5, 0, &err), ==, -1);
  assert_input_error(&err, "index -5");
  g_assert_cmpint(lmwb_graph_add_node(g, LMWB_GRAPH_HEAD, 0, -1, 0, 0, &err), ==, -1);
  assert_input_error(&err, "does not belong in an attribution graph");
  g_assert_cmpint(lmwb_graph_add_node(g, (LmwbGraphNodeKind)42, 0, 0, 0, 0, &err), ==, -1);
  assert_input_error(&err, "unknown node kind");
  g_assert_cmpint(lmwb_graph_add_edge(g, 0, n, 1.0, &err), ==, -1);
  assert_input_error(&err, "no such node");
  g_assert_cmpint(lmwb_graph_add_edge(g, -1, 0, 1.0, &err), ==, -1);
  assert_input_error(&err, "no such node");
  g_assert_false(lmwb_graph_node_set_label(g, n, "x", &err));
  assert_input_error(&err, "no node");
  g_assert_false(lmwb_graph_node_set_label(g, 0, "bad \xff utf-8", &err));
  assert_input_error(&err, "UTF-8");
  g_assert_false(lmwb_graph_set_extra(g, "", "v", &err));
  assert_input_error(&err, "key");
  const char *toks[] = {"a", NULL};
  g_assert_false(lmwb_graph_set_prompt(g, "a", toks, NULL, 2, &err));
  assert_input_error(&err, "prompt token 1");
  g_assert_cmpint(g->n_nodes, ==, n);
  g_assert_cmpint(g->n_prompt, ==, 2);

  g_autoptr(LmwbGraph) e = tu_edge_pruning_graph();
  g_assert_cmpint(lmwb_graph_add_node(e, LMWB_GRAPH_HEAD, 0, 3, 0, 0, &err), ==, -1);
  assert_input_error(&err, "no position");
  g_assert_cmpint(lmwb_graph_add_node(e, LMWB_GRAPH_READER, 0, -1, 5, LMWB_GRAPH_PART_NONE, &err), ==, -1);
  assert_input_error(&err, "part");
  g_assert_cmpint(lmwb_graph_add_node(e, LMWB_GRAPH_FEATURE, 0, 0, 1, 0, &err), ==, -1);
  assert_input_error(&err, "does not belong in an edge-pruning graph");
  g_assert_cmpint(lmwb_graph_add_node(e, LMWB_GRAPH_INPUT, 0, -1, 0, 0, &err), ==, -1);
  assert_input_error(&err, "\"input\" is already");

  g_assert_null(lmwb_graph_new(LMWB_GRAPH_ATTRIBUTION, 0, &err));
  assert_input_error(&err, "n_layers 0");
  LmwbGraphMethod m;
  g_assert_true(lmwb_graph_method_parse("edge-pruning", &m, NULL));
  g_assert_cmpint(m, ==, LMWB_GRAPH_EDGE_PRUNING);
  g_assert_false(lmwb_graph_method_parse("acdc", &m, &err));
  assert_input_error(&err, "acdc");
}

static void test_ranks(void) {
  g_autoptr(LmwbGraph) a = tu_attribution_graph();
  const int want_a[] = {0, 0, 1, 1, 2, 1, 2, 3, 3};
  for (int i = 0; i < a->n_nodes; i++) g_assert_cmpint(lmwb_graph_node_rank(a, i), ==, want_a[i]);
  g_autoptr(LmwbGraph) e = tu_edge_pruning_graph();
  const int want_e[] = {0, 1, 1, 2, 2, 3, 4, 4, 4, 5, 5, 6, 7};
  for (int i = 0; i < e->n_nodes; i++) g_assert_cmpint(lmwb_graph_node_rank(e, i), ==, want_e[i]);
  g_assert_cmpint(lmwb_graph_node_rank(e, e->n_nodes), ==, -1);
}

static void test_subgraph(void) {
  g_autoptr(LmwbGraph) g = tu_attribution_graph();
  /* drop 0_5_1 (node 3) and the edge E_464_0 -> 0_17_0 (edge 0) */
  uint8_t keep_nodes[9] = {1, 1, 1, 0, 1, 1, 1, 1, 1}, keep_edges[8] = {0, 1, 1, 1, 1, 1, 1, 1};
  int map[9];
  g_autoptr(LmwbGraph) s = lmwb_graph_subgraph(g, keep_nodes, keep_edges, map);
  g_assert_cmpint(s->n_nodes, ==, 8);
  g_assert_cmpint(map[3], ==, -1);
  g_assert_cmpint(map[4], ==, 3);
  g_assert_cmpint(lmwb_graph_find(s, "0_5_1"), ==, -1);
  g_assert_cmpint(lmwb_graph_find(s, "1_42_1"), ==, 3);
  /* edges 0 (dropped), 1 and 3 (touch node 3) go; 5 remain, in order */
  g_assert_cmpint(s->n_edges, ==, 5);
  g_assert_cmpfloat(s->edges[0].weight, ==, -0.3);
  g_assert_cmpint(s->edges[0].source, ==, lmwb_graph_find(s, "0_17_0"));
  g_assert_cmpint(s->edges[0].target, ==, lmwb_graph_find(s, "1_42_1"));
  /* fields and metadata are copies */
  g_assert_cmpstr(s->nodes[3].label, ==, "cat-ness");
  g_assert_true(s->nodes[3].label != g->nodes[4].label);
  g_assert_true(s->nodes[3].pinned);
  g_assert_cmpfloat(s->nodes[3].activation, ==, 0.75);
  g_assert_cmpstr(s->slug, ==, "cat-dog");
  g_assert_cmpstr(s->prompt_tokens[1], ==, " cat");
  g_assert_cmpint(s->prompt_ids[1], ==, 3797);
  g_assert_cmpstr(g_hash_table_lookup(s->extras, "seed"), ==, "7");
  g_assert_cmpstr(g_ptr_array_index(s->transcoders, 1), ==, "tc-layer1");
  g_assert_true(s->has_edge_threshold && s->edge_threshold == 0.98);
  g_autoptr(LmwbGraph) all = lmwb_graph_subgraph(g, NULL, NULL, NULL);
  g_assert_cmpint(all->n_nodes, ==, g->n_nodes);
  g_assert_cmpint(all->n_edges, ==, g->n_edges);
}

static void test_sort_edges(void) {
  g_autoptr(LmwbGraph) g = tu_attribution_graph();
  lmwb_graph_sort_edges(g, LMWB_GRAPH_BY_ABS_WEIGHT);
  const double want[] = {2.0, 1.25, 0.8, 0.5, -0.4, -0.3, 0.1, 0.05};
  for (int e = 0; e < g->n_edges; e++) g_assert_cmpfloat(g->edges[e].weight, ==, want[e]);
  /* equal |w|: by endpoints */
  tu_edge(g, "E_464_0", "3_3290_1", -2.0, true);
  lmwb_graph_sort_edges(g, LMWB_GRAPH_BY_ABS_WEIGHT);
  g_assert_cmpfloat(g->edges[0].weight, ==, -2.0); /* source 0 before source 4 */
  g_assert_cmpfloat(g->edges[1].weight, ==, 2.0);
  lmwb_graph_sort_edges(g, LMWB_GRAPH_BY_ENDPOINTS);
  for (int e = 1; e < g->n_edges; e++) {
    const LmwbGraphEdge *p = &g->edges[e - 1], *q = &g->edges[e];
    g_assert_true(p->source < q->source || (p->source == q->source && p->target <= q->target));
  }
}

static void test_mask_connected(void) {
  g_autoptr(LmwbGraph) e = tu_edge_pruning_graph();
  uint8_t keep[13];
  /* in the circuit: a0.h1<v>, a0.h1 and a1.h0<k> hang on edges outside it */
  g_assert_cmpint(lmwb_graph_mask_connected(e, true, keep), ==, 10);
  const char *dropped[] = {"a0.h1<v>", "a0.h1", "a1.h0<k>"};
  for (size_t i = 0; i < G_N_ELEMENTS(dropped); i++) g_assert_cmpint(keep[lmwb_graph_find(e, dropped[i])], ==, 0);
  g_assert_cmpint(keep[lmwb_graph_find(e, "a1.h1")], ==, 1); /* reached through its reader a1.h1<v> */
  g_assert_cmpint(lmwb_graph_mask_connected(e, false, keep), ==, 13);

  g_autoptr(LmwbGraph) a = tu_attribution_graph();
  int dead_end = tu_node(a, LMWB_GRAPH_FEATURE, 1, 0, 99, 0); /* fed, but feeds nothing */
  int no_source = tu_node(a, LMWB_GRAPH_FEATURE, 0, 0, 8, 0); /* feeds the logit, fed by nothing */
  tu_edge(a, "0_17_0", "1_99_0", 0.3, true);
  tu_edge(a, "0_8_0", "3_9246_1", 0.3, true);
  uint8_t k2[11];
  g_assert_cmpint(lmwb_graph_mask_connected(a, true, k2), ==, 9);
  g_assert_cmpint(k2[dead_end], ==, 0);
  g_assert_cmpint(k2[no_source], ==, 0);
  g_assert_cmpint(k2[5], ==, 1); /* an error node is a source */
  /* the pruned graph: what a pruner does with the mask */
  g_autoptr(LmwbGraph) p = lmwb_graph_subgraph(a, k2, NULL, NULL);
  g_assert_cmpint(p->n_nodes, ==, 9);
  g_assert_cmpint(p->n_edges, ==, 8);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/graph/attribution-ids", test_attribution_ids);
  g_test_add_func("/graph/edge-pruning-ids", test_edge_pruning_ids);
  g_test_add_func("/graph/parse-ids", test_parse_ids);
  g_test_add_func("/graph/add-refuses", test_add_refuses);
  g_test_add_func("/graph/ranks", test_ranks);
  g_test_add_func("/graph/subgraph", test_subgraph);
  g_test_add_func("/graph/sort-edges", test_sort_edges);
  g_test_add_func("/graph/mask-connected", test_mask_connected);
  return g_test_run();
}
