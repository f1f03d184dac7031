/* Drawing circuit graphs (circuits/graph.h): DOT text, the Graphviz layout the desktop draws, SVG
 * and PNG. */
#include <math.h>
#include <string.h>
#include <glib/gstdio.h>
#include <unistd.h>

#include "app/core/errors.h"
#include "graph_test_util.h"

static char *dot_of(const LmwbGraph *g, const LmwbGraphDrawOptions *opt) {
  GError *err = NULL;
  char *dot = lmwb_graph_to_dot(g, opt, &err);
  g_assert_no_error(err);
  return dot;
}

static void assert_has(const char *text, const char *needle) {
  if (!strstr(text, needle)) g_error("\"%s\" not in:\n%s", needle, text);
}

static void test_dot_attribution(void) {
  g_autoptr(LmwbGraph) g = tu_attribution_graph();
  g_autofree char *dot = dot_of(g, NULL);
  assert_has(dot, "rankdir=BT");
  /* rows bottom to top, named, each node once, in position then index order */
  assert_has(dot, "row0 [shape=plaintext, style=\"\", fontcolor=\"#737373\", label=\"Emb\"]");
  assert_has(dot, "label=\"L0\"");
  assert_has(dot, "label=\"L1\"");
  assert_has(dot, "label=\"Logits\"");
  assert_has(dot, "row0 -> n0 -> n1 [style=invis]");
  assert_has(dot, "row1 -> n2 -> n5 -> n3 [style=invis]");
  assert_has(dot, "row2 -> n6 -> n4 [style=invis]");
  assert_has(dot, "row3 -> n8 -> n7 [style=invis]");
  assert_has(dot, "row0 -> row1 [style=invis]");
  assert_has(dot, "row1 -> row2 [style=invis]");
  assert_has(dot, "row2 -> row3 [style=invis]");
  g_auto(GStrv) rows = g_strsplit(dot, "rank=same", -1);
  g_assert_cmpuint(g_strv_length(rows), ==, 5);
  /* nodes: id, caption, flags */
  assert_has(dot, "n4 [id=\"1_42_1\", label=\"cat-ness\", tooltip=\"1_42_1: cat-ness\"");
  assert_has(dot, "n2 [id=\"0_17_0\", label=\"0_17_0\"");
  assert_has(dot, "peripheries=2"); /* pinned 1_42_1 */
  assert_has(dot, "n7 [id=\"3_9246_1\", label=\"Output \\\" dog\\\" (p=0.600)\"");
  /* edges: width 6 |w| / max|w| (max 2.0), at least 0.3; colour by sign */
  assert_has(dot, "n4 -> n7 [id=\"e5\", penwidth=6.00, color=\"" LMWB_GRAPH_COLOR_POSITIVE "\"");
  assert_has(dot, "n1 -> n3 [id=\"e1\", penwidth=3.75, color=\"" LMWB_GRAPH_COLOR_POSITIVE "\"");
  assert_has(dot, "n2 -> n4 [id=\"e2\", penwidth=0.90, color=\"" LMWB_GRAPH_COLOR_NEGATIVE "\"");
  assert_has(dot, "n6 -> n7 [id=\"e6\", penwidth=1.20, color=\"" LMWB_GRAPH_COLOR_NEGATIVE "\"");
  assert_has(dot, "n5 -> n4 [id=\"e4\", penwidth=0.30, color=");
  assert_has(dot, "tooltip=\"0_17_0 → 1_42_1: -0.3\"");
  g_assert_null(strstr(dot, "style=dashed")); /* every edge is in the circuit */
  for (int e = 0; e < 8; e++) {
    g_autofree char *id = g_strdup_printf("id=\"e%d\"", e);
    assert_has(dot, id);
  }
  /* the strongest edges only */
  LmwbGraphDrawOptions top2 = {.max_edges = 2};
  g_autofree char *dot2 = dot_of(g, &top2);
  assert_has(dot2, "id=\"e5\", penwidth=6.00");
  assert_has(dot2, "id=\"e1\", penwidth=3.75");
  g_assert_null(strstr(dot2, "id=\"e3\""));
  g_assert_null(strstr(dot2, "id=\"e0\""));
}

static void test_dot_escapes(void) {
  g_autoptr(LmwbGraph) g = tu_attribution_graph();
  GError *err = NULL;
  g_assert_true(lmwb_graph_node_set_label(g, 2, "a \"q\" \\N b\nc\x01", &err));
  g_assert_true(lmwb_graph_node_set_label(g, 3, "0123456789012345678901234567890123456789ÄBCDEF", &err));
  g_free(g->slug), g->slug = g_strdup("evil\"];\ndigraph x {");
  g_autofree char *dot = dot_of(g, NULL);
  assert_has(dot, "label=\"a \\\"q\\\" \\\\N b\\nc \"");
  assert_has(dot, "label=\"0123456789012345678901234567890123456789…\"");
  assert_has(dot, "label=\"evil\\\"];\\ndigraph x {");
  /* Graphviz reads it as one graph with these labels */
  g_autoptr(LmwbGraphLayout) l = lmwb_graph_layout(g, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpint(l->n_nodes, ==, g->n_nodes);
}

static void test_dot_edge_pruning(void) {
  g_autoptr(LmwbGraph) g = tu_edge_pruning_graph();
  g_autofree char *dot = dot_of(g, NULL);
  const char *rows[] = {"Input", "L0 qkv", "L0 heads", "L0 MLP", "L1 qkv", "L1 heads", "L1 MLP", "Logits"};
  for (int r = 0; r < 8; r++) {
    g_autofree char *want = g_strdup_printf("row%d [shape=plaintext, style=\"\", fontcolor=\"#737373\", label=\"%s\"]",
                                            r, rows[r]);
    assert_has(dot, want);
  }
  assert_has(dot, "row1 -> n1 -> n2 [style=invis]"); /* a0.h0<q>, a0.h1<v> */
  assert_has(dot, "row4 -> n6 -> n7 -> n8 [style=invis]");
  assert_has(dot, "n3 [id=\"a0.h0\", label=\"a0.h0\"");
  assert_has(dot, "n1 [id=\"a0.h0<q>\", label=\"a0.h0<q>\"");
  /* readers feed their heads */
  assert_has(dot, "n1 -> n3 [id=\"r1\", style=dotted");
  assert_has(dot, "n2 -> n4 [id=\"r2\", style=dotted");
  assert_has(dot, "n7 -> n9 [id=\"r7\", style=dotted");
  /* edges outside the circuit are left out, or drawn dashed when asked for */
  assert_has(dot, "n9 -> n12 [id=\"e7\", penwidth=6.00");
  g_assert_null(strstr(dot, "id=\"e1\""));
  g_assert_null(strstr(dot, "id=\"e5\""));
  LmwbGraphDrawOptions all = {.all_edges = true};
  g_autofree char *dot_all = dot_of(g, &all);
  assert_has(dot_all, "n4 -> n7 [id=\"e5\", penwidth=1.89, color=\"" LMWB_GRAPH_COLOR_NEGATIVE "\", style=dashed");
  assert_has(dot_all, "id=\"e1\"");
}

static void test_dot_non_finite(void) {
  g_autoptr(LmwbGraph) g = tu_attribution_graph();
  g->edges[3].weight = NAN;
  GError *err = NULL;
  g_assert_null(lmwb_graph_to_dot(g, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_FAILED);
  g_assert_nonnull(strstr(err->message, "0_5_1 -> 1_42_1"));
  g_clear_error(&err);
  g_assert_null(lmwb_graph_layout(g, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_FAILED);
  g_clear_error(&err);
  /* an edge left out of the drawing may hold anything */
  LmwbGraphDrawOptions top1 = {.max_edges = 1};
  g->edges[3].weight = 0.8;
  g->edges[0].in_circuit = false;
  g->edges[0].weight = INFINITY;
  g_autofree char *dot = dot_of(g, &top1);
  assert_has(dot, "id=\"e5\"");
}

/* The layout: every node placed inside the drawing, rows bottom to top, positions left to right. */
static void check_layout(const LmwbGraph *g, const LmwbGraphLayout *l) {
  g_assert_cmpint(l->n_nodes, ==, g->n_nodes);
  g_assert_cmpfloat(l->width, >, 0);
  g_assert_cmpfloat(l->height, >, 0);
  for (int i = 0; i < g->n_nodes; i++) {
    const LmwbGraphLayoutNode *a = &l->nodes[i];
    g_assert_cmpfloat(a->width, >, 10);
    g_assert_cmpfloat(a->height, >, 5);
    g_assert_true(a->x - a->width / 2 >= -0.5 && a->x + a->width / 2 <= l->width + 0.5);
    g_assert_true(a->y - a->height / 2 >= -0.5 && a->y + a->height / 2 <= l->height + 0.5);
    for (int j = 0; j < g->n_nodes; j++) {
      const LmwbGraphLayoutNode *b = &l->nodes[j];
      const LmwbGraphNode *x = &g->nodes[i], *y = &g->nodes[j];
      int ri = lmwb_graph_node_rank(g, i), rj = lmwb_graph_node_rank(g, j);
      if (ri < rj) g_assert_cmpfloat(a->y, >, b->y + a->height / 2); /* lower rows lower on the page */
      if (ri == rj) g_assert_cmpfloat(fabs(a->y - b->y), <, 0.01);
      if (ri == rj && (x->pos < y->pos || (x->pos == y->pos && (x->index < y->index || (x->index == y->index && x->part < y->part)))))
        g_assert_cmpfloat(a->x + a->width / 2, <, b->x - b->width / 2 + 0.01);
    }
  }
  for (int k = 0; k < l->n_edges; k++) {
    const LmwbGraphLayoutEdge *e = &l->edges[k];
    g_assert_cmpint(e->n_points, >=, 4);
    g_assert_cmpint((e->n_points - 1) % 3, ==, 0);
    if (e->edge >= 0) {
      g_assert_cmpint(e->source, ==, g->edges[e->edge].source);
      g_assert_cmpint(e->target, ==, g->edges[e->edge].target);
      g_assert_true(e->has_arrow);
    }
    if (k > 0 && e->edge >= 0) g_assert_cmpint(e->edge, >, l->edges[k - 1].edge);
    /* it starts on its source and ends (arrow tip, else last point) on its target */
    const LmwbGraphLayoutNode *s = &l->nodes[e->source], *t = &l->nodes[e->target];
    double tx = e->has_arrow ? e->arrow_x : e->points[2 * e->n_points - 2];
    double ty = e->has_arrow ? e->arrow_y : e->points[2 * e->n_points - 1];
    g_assert_cmpfloat(fabs(e->points[0] - s->x), <=, s->width / 2 + 2);
    g_assert_cmpfloat(fabs(e->points[1] - s->y), <=, s->height / 2 + 2);
    g_assert_cmpfloat(fabs(tx - t->x), <=, t->width / 2 + 2);
    g_assert_cmpfloat(fabs(ty - t->y), <=, t->height / 2 + 2);
  }
}

static void test_layout(void) {
  GError *err = NULL;
  g_autoptr(LmwbGraph) a = tu_attribution_graph();
  g_autoptr(LmwbGraphLayout) la = lmwb_graph_layout(a, NULL, &err);
  g_assert_no_error(err);
  check_layout(a, la);
  g_assert_cmpint(la->n_edges, ==, 8);
  g_autoptr(LmwbGraph) e = tu_edge_pruning_graph();
  g_autoptr(LmwbGraphLayout) le = lmwb_graph_layout(e, NULL, &err);
  g_assert_no_error(err);
  check_layout(e, le);
  g_assert_cmpint(le->n_edges, ==, 8 + 5); /* 8 edges in the circuit, 5 readers */
  for (int k = 8; k < 13; k++) {
    g_assert_cmpint(le->edges[k].edge, ==, -1);
    g_assert_cmpint(e->nodes[le->edges[k].source].kind, ==, LMWB_GRAPH_READER);
    g_assert_cmpint(e->nodes[le->edges[k].target].kind, ==, LMWB_GRAPH_HEAD);
  }
}

static void test_layout_limits(void) {
  GError *err = NULL;
  g_autoptr(LmwbGraph) g = lmwb_graph_new(LMWB_GRAPH_ATTRIBUTION, 1, &err);
  for (int i = 0; i <= LMWB_GRAPH_LAYOUT_MAX_NODES; i++) tu_node(g, LMWB_GRAPH_FEATURE, 0, 0, i, 0);
  g_assert_null(lmwb_graph_layout(g, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_assert_nonnull(strstr(err->message, "prune"));
  g_clear_error(&err);
  g_autoptr(LmwbGraph) dense = lmwb_graph_new(LMWB_GRAPH_ATTRIBUTION, 1, &err);
  tu_node(dense, LMWB_GRAPH_TOKEN, 0, 0, 1, 0);
  tu_node(dense, LMWB_GRAPH_FEATURE, 0, 0, 1, 0);
  for (int i = 0; i <= LMWB_GRAPH_LAYOUT_MAX_EDGES; i++) lmwb_graph_add_edge(dense, 0, 1, 1.0, NULL);
  g_assert_null(lmwb_graph_render(dense, NULL, LMWB_GRAPH_SVG, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_assert_nonnull(strstr(err->message, "max_edges"));
  g_clear_error(&err);
}

typedef struct {
  GPtrArray *node_ids, *edge_ids;
  int svg_elements;
} SvgSeen;

static void svg_start(GMarkupParseContext *ctx, const char *name, const char **names, const char **values,
                      gpointer user, GError **error) {
  SvgSeen *seen = user;
  if (!strcmp(name, "svg")) seen->svg_elements++;
  if (strcmp(name, "g")) return;
  const char *id = NULL, *cls = NULL;
  for (int i = 0; names[i]; i++) {
    if (!strcmp(names[i], "id")) id = values[i];
    if (!strcmp(names[i], "class")) cls = values[i];
  }
  if (id && cls && !strcmp(cls, "node")) g_ptr_array_add(seen->node_ids, g_strdup(id));
  if (id && cls && !strcmp(cls, "edge")) g_ptr_array_add(seen->edge_ids, g_strdup(id));
}

static gboolean has_string(GPtrArray *a, const char *s) {
  for (guint i = 0; i < a->len; i++)
    if (!strcmp(g_ptr_array_index(a, i), s)) return TRUE;
  return FALSE;
}

static void test_svg(void) {
  GError *err = NULL;
  for (int pass = 0; pass < 2; pass++) {
    g_autoptr(LmwbGraph) g = pass ? tu_edge_pruning_graph() : tu_attribution_graph();
    size_t len = 0;
    g_autofree guint8 *svg = lmwb_graph_render(g, NULL, LMWB_GRAPH_SVG, &len, &err);
    g_assert_no_error(err);
    g_assert_true(g_str_has_prefix((const char *)svg, "<?xml"));
    g_autofree char *text = g_strndup((const char *)svg, len);
    /* well-formed XML with one <svg>, every node and drawn edge in it under its id */
    SvgSeen seen = {g_ptr_array_new_with_free_func(g_free), g_ptr_array_new_with_free_func(g_free), 0};
    GMarkupParser parser = {.start_element = svg_start};
    GMarkupParseContext *ctx = g_markup_parse_context_new(&parser, 0, &seen, NULL);
    g_assert_true(g_markup_parse_context_parse(ctx, text, (gssize)len, &err) &&
                  g_markup_parse_context_end_parse(ctx, &err));
    g_assert_no_error(err);
    g_markup_parse_context_free(ctx);
    g_assert_cmpint(seen.svg_elements, ==, 1);
    for (int i = 0; i < g->n_nodes; i++) {
      g_autofree char *id = lmwb_graph_node_id(g, i);
      if (!has_string(seen.node_ids, id)) g_error("node %s not in the SVG", id);
    }
    for (int e = 0; e < g->n_edges; e++) {
      g_autofree char *id = g_strdup_printf("e%d", e);
      g_assert_cmpint(has_string(seen.edge_ids, id), ==, g->edges[e].in_circuit);
    }
    g_ptr_array_unref(seen.node_ids);
    g_ptr_array_unref(seen.edge_ids);
  }
}

static guint32 be32(const guint8 *p) {
  return (guint32)p[0] << 24 | (guint32)p[1] << 16 | (guint32)p[2] << 8 | p[3];
}

static void test_png(void) {
  GError *err = NULL;
  g_autoptr(LmwbGraph) g = tu_attribution_graph();
  size_t len = 0;
  g_autofree guint8 *png = lmwb_graph_render(g, NULL, LMWB_GRAPH_PNG, &len, &err);
  g_assert_no_error(err);
  static const guint8 sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  g_assert_cmpuint(len, >, 33);
  g_assert_cmpmem(png, 8, sig, 8);
  g_assert_cmpmem(png + 12, 4, "IHDR", 4);
  /* the layout's size at 96 dpi, plus Graphviz's 4-point margin on each side */
  g_autoptr(LmwbGraphLayout) l = lmwb_graph_layout(g, NULL, &err);
  double want_w = (l->width + 8) * 96 / 72, want_h = (l->height + 8) * 96 / 72;
  g_assert_cmpfloat(fabs(be32(png + 16) - want_w), <=, 3);
  g_assert_cmpfloat(fabs(be32(png + 20) - want_h), <=, 3);
  g_assert_cmpuint(be32(png + 16), >, 100);
  /* a drawing too wide for 96 dpi is drawn at a lower resolution, the longer side at the maximum */
  g_autoptr(LmwbGraph) wide = lmwb_graph_new(LMWB_GRAPH_ATTRIBUTION, 1, &err);
  tu_node(wide, LMWB_GRAPH_TOKEN, 0, 0, 1, 0);
  for (int i = 0; i < 400; i++) {
    tu_node(wide, LMWB_GRAPH_FEATURE, 0, i, i, 0);
    lmwb_graph_add_edge(wide, 0, i + 1, 1.0 + i, &err);
  }
  g_autofree guint8 *big = lmwb_graph_render(wide, NULL, LMWB_GRAPH_PNG, &len, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(be32(big + 16), <=, (guint32)LMWB_GRAPH_PNG_MAX_SIDE);
  g_assert_cmpuint(be32(big + 16), >, (guint32)LMWB_GRAPH_PNG_MAX_SIDE - 64);
  g_assert_cmpuint(be32(big + 20), >, 10);
}

static void test_files(void) {
  GError *err = NULL;
  g_autofree char *dir = g_dir_make_tmp("lmwb-graph-XXXXXX", &err);
  g_autoptr(LmwbGraph) g = tu_edge_pruning_graph();
  const char *names[] = {"g.dot", "g.svg", "g.png"};
  for (int i = 0; i < 3; i++) {
    g_autofree char *path = g_build_filename(dir, names[i], NULL);
    gboolean ok = i == 0 ? lmwb_graph_write_dot(g, NULL, path, &err)
                         : lmwb_graph_write_image(g, NULL, i == 1 ? LMWB_GRAPH_SVG : LMWB_GRAPH_PNG, path, &err);
    g_assert_no_error(err);
    g_assert_true(ok);
    g_autofree char *data = NULL;
    gsize n = 0;
    g_assert_true(g_file_get_contents(path, &data, &n, NULL));
    g_assert_true(g_str_has_prefix(data, i == 0 ? "digraph lmwb {" : i == 1 ? "<?xml" : "\x89PNG"));
    unlink(path);
  }
  g_assert_false(lmwb_graph_write_image(g, NULL, LMWB_GRAPH_SVG, dir, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  LmwbGraphImageFormat f;
  g_assert_true(lmwb_graph_image_format_parse("PNG", &f, NULL) && f == LMWB_GRAPH_PNG);
  g_assert_false(lmwb_graph_image_format_parse("pdf", &f, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  g_rmdir(dir);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/graph-draw/dot-attribution", test_dot_attribution);
  g_test_add_func("/graph-draw/dot-escapes", test_dot_escapes);
  g_test_add_func("/graph-draw/dot-edge-pruning", test_dot_edge_pruning);
  g_test_add_func("/graph-draw/dot-non-finite", test_dot_non_finite);
  g_test_add_func("/graph-draw/layout", test_layout);
  g_test_add_func("/graph-draw/layout-limits", test_layout_limits);
  g_test_add_func("/graph-draw/svg", test_svg);
  g_test_add_func("/graph-draw/png", test_png);
  g_test_add_func("/graph-draw/files", test_files);
  return g_test_run();
}
