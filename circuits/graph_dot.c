/* Graphviz DOT text of a graph: rows by layer, positions left to right, edges by weight
 * (circuits/graph.h). The Graphviz layout (graph_layout.c) reads exactly this text. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "app/core/atomic_file.h"
#include "app/core/errors.h"
#include "circuits/graph.h"
#include "circuits/graph_private.h"

/* Appends text as the inside of a DOT quoted string, at most max_chars characters (0: all). A
 * backslash is doubled (else Graphviz reads \N, \G, \l ... as escapes), a quote escaped, a line
 * break kept as \n and other control characters made spaces. */
static void append_escaped(GString *s, const char *text, int max_chars) {
  int n = 0;
  for (const char *p = text ? text : ""; *p; p = g_utf8_next_char(p), n++) {
    if (max_chars > 0 && n == max_chars) {
      g_string_append(s, "…");
      return;
    }
    gunichar c = g_utf8_get_char(p);
    if (c == '\\' || c == '"')
      g_string_append_c(s, '\\'), g_string_append_c(s, (char)c);
    else if (c == '\n')
      g_string_append(s, "\\n");
    else if (c < 0x20 || c == 0x7f)
      g_string_append_c(s, ' ');
    else
      g_string_append_len(s, p, g_utf8_next_char(p) - p);
  }
}

static void append_number(GString *s, const char *format, double v) {
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  g_string_append(s, g_ascii_formatd(buf, sizeof buf, format, v));
}

static const char *node_style(const LmwbGraphNode *n) {
  switch (n->kind) {
    case LMWB_GRAPH_FEATURE: return "fillcolor=\"#fee8c8\"";
    case LMWB_GRAPH_ERROR: return "fillcolor=\"#e0e0e0\", style=\"rounded,filled,dashed\"";
    case LMWB_GRAPH_TOKEN: case LMWB_GRAPH_INPUT: return "fillcolor=\"#deebf7\"";
    case LMWB_GRAPH_LOGIT: case LMWB_GRAPH_OUTPUT: return "fillcolor=\"#e5f5e0\"";
    case LMWB_GRAPH_HEAD: return "shape=ellipse, style=filled, fillcolor=\"#fdd0a2\"";
    case LMWB_GRAPH_MLP: return "fillcolor=\"#fdae6b\"";
    case LMWB_GRAPH_READER: return "fontsize=8, height=0.2, fillcolor=\"#ffffff\"";
  }
  return "";
}

static int cmp_in_row(const void *pa, const void *pb, void *data) {
  const LmwbGraph *g = data;
  int a = *(const int *)pa, b = *(const int *)pb;
  const LmwbGraphNode *x = &g->nodes[a], *y = &g->nodes[b];
  int ra = lmwb_graph_node_rank(g, a), rb = lmwb_graph_node_rank(g, b);
  if (ra != rb) return ra < rb ? -1 : 1;
  if (x->pos != y->pos) return x->pos < y->pos ? -1 : 1;
  if (x->index != y->index) return x->index < y->index ? -1 : 1;
  if (x->part != y->part) return x->part < y->part ? -1 : 1;
  return a < b ? -1 : a > b;
}

static void append_node(GString *s, const LmwbGraph *g, int i) {
  const LmwbGraphNode *n = &g->nodes[i];
  g_autofree char *id = lmwb_graph_node_id(g, i);
  g_autofree char *caption = lmwb_graph_node_caption(g, i);
  g_string_append_printf(s, "    n%d [id=\"", i);
  append_escaped(s, id, 0);
  g_string_append(s, "\", label=\"");
  append_escaped(s, caption, LMWB_GRAPH_LABEL_MAX);
  g_string_append(s, "\", tooltip=\"");
  append_escaped(s, id, 0);
  if (*n->label) {
    g_string_append(s, ": ");
    append_escaped(s, n->label, 0);
  }
  g_string_append_printf(s, "\", %s", node_style(n));
  if (n->target_logit) g_string_append(s, ", penwidth=2.5");
  if (n->pinned) g_string_append(s, ", peripheries=2");
  g_string_append(s, "];\n");
}

/* Rows bottom to top, each with its name at the left and its nodes in order, chained invisibly so
 * that Graphviz keeps both orders. */
static void append_rows(GString *s, const LmwbGraph *g) {
  int *order = g_new(int, (size_t)MAX(g->n_nodes, 1));
  for (int i = 0; i < g->n_nodes; i++) order[i] = i;
  qsort_r(order, (size_t)g->n_nodes, sizeof *order, cmp_in_row, (void *)g);
  int prev_rank = -1;
  for (int k = 0; k < g->n_nodes;) {
    int rank = lmwb_graph_node_rank(g, order[k]), end = k;
    while (end < g->n_nodes && lmwb_graph_node_rank(g, order[end]) == rank) end++;
    g_autofree char *name = lmwb_graph_row_name(g, rank);
    g_string_append_printf(s, "  { rank=same;\n    row%d [shape=plaintext, style=\"\", fontcolor=\"#737373\", label=\"%s\"];\n",
                           rank, name);
    for (int j = k; j < end; j++) append_node(s, g, order[j]);
    g_string_append_printf(s, "    row%d", rank);
    for (int j = k; j < end; j++) g_string_append_printf(s, " -> n%d", order[j]);
    g_string_append(s, " [style=invis];\n  }\n");
    if (prev_rank >= 0) g_string_append_printf(s, "  row%d -> row%d [style=invis];\n", prev_rank, rank);
    prev_rank = rank;
    k = end;
  }
  g_free(order);
}

/* Edge indices by |weight| descending (NaN last), then index. */
static int cmp_abs_desc(const void *pa, const void *pb, void *data) {
  const LmwbGraph *g = data;
  int a = *(const int *)pa, b = *(const int *)pb;
  double x = g->edges[a].weight, y = g->edges[b].weight;
  x = isnan(x) ? -1.0 : fabs(x), y = isnan(y) ? -1.0 : fabs(y);
  if (x != y) return x > y ? -1 : 1;
  return (a > b) - (a < b);
}

static int cmp_index(const void *pa, const void *pb) {
  int a = *(const int *)pa, b = *(const int *)pb;
  return (a > b) - (a < b);
}

/* The edges drawn, in index order: in the circuit (or all), the max_edges largest. */
static int *drawn_edges(const LmwbGraph *g, const LmwbGraphDrawOptions *opt, int *n) {
  int *e = g_new(int, (size_t)MAX(g->n_edges, 1));
  *n = 0;
  for (int i = 0; i < g->n_edges; i++)
    if (opt->all_edges || g->edges[i].in_circuit) e[(*n)++] = i;
  if (opt->max_edges > 0 && *n > opt->max_edges) {
    qsort_r(e, (size_t)*n, sizeof *e, cmp_abs_desc, (void *)g);
    *n = opt->max_edges;
    qsort(e, (size_t)*n, sizeof *e, cmp_index);
  }
  return e;
}

char *lmwb_graph_dot_build(const LmwbGraph *g, const LmwbGraphDrawOptions *opt, int *n_drawn, GError **error) {
  LmwbGraphDrawOptions defaults = {0};
  if (!opt) opt = &defaults;
  int n = 0;
  g_autofree int *edges = drawn_edges(g, opt, &n);
  double max_w = 0;
  for (int k = 0; k < n; k++) {
    const LmwbGraphEdge *x = &g->edges[edges[k]];
    if (!isfinite(x->weight)) {
      g_autofree char *s = lmwb_graph_node_id(g, x->source), *t = lmwb_graph_node_id(g, x->target);
      g_set_error(error, LMWB_ERROR, LMWB_ERROR_FAILED,
                  "graph drawing: the weight of edge %s -> %s is not a finite number (NaN or infinity); nothing drawn",
                  s, t);
      return NULL;
    }
    max_w = MAX(max_w, fabs(x->weight));
  }
  GString *s = g_string_new("digraph lmwb {\n  graph [rankdir=BT, newrank=true, ranksep=0.45, nodesep=0.15, "
                            "charset=\"UTF-8\", fontname=\"Helvetica\", fontsize=12, labelloc=t, label=\"");
  append_escaped(s, g->slug, 60);
  if (*g->slug && *g->prompt) g_string_append(s, ": ");
  append_escaped(s, g->prompt, 80);
  g_string_append(s, "\"];\n  node [fontname=\"Helvetica\", fontsize=10, shape=box, style=\"rounded,filled\", "
                     "color=\"#4d4d4d\", height=0.3, margin=\"0.06,0.03\"];\n  edge [arrowsize=0.5];\n");
  append_rows(s, g);
  for (int k = 0; k < n; k++) {
    const LmwbGraphEdge *x = &g->edges[edges[k]];
    double pen = max_w > 0 ? LMWB_GRAPH_PEN_MAX * fabs(x->weight) / max_w : 0;
    g_string_append_printf(s, "  n%d -> n%d [id=\"e%d\", penwidth=", x->source, x->target, edges[k]);
    append_number(s, "%.2f", MAX(pen, LMWB_GRAPH_PEN_MIN));
    g_string_append_printf(s, ", color=\"%s\"%s, tooltip=\"",
                           x->weight < 0 ? LMWB_GRAPH_COLOR_NEGATIVE : LMWB_GRAPH_COLOR_POSITIVE,
                           x->in_circuit ? "" : ", style=dashed");
    g_autofree char *src = lmwb_graph_node_id(g, x->source), *dst = lmwb_graph_node_id(g, x->target);
    append_escaped(s, src, 0);
    g_string_append(s, " → ");
    append_escaped(s, dst, 0);
    g_string_append(s, ": ");
    append_number(s, "%.4g", x->weight);
    g_string_append(s, "\"];\n");
  }
  for (int i = 0; i < g->n_nodes; i++) {
    int head = lmwb_graph_reader_head(g, i);
    if (head >= 0)
      g_string_append_printf(s, "  n%d -> n%d [id=\"r%d\", style=dotted, color=\"#969696\", arrowhead=none];\n", i,
                             head, i);
  }
  g_string_append(s, "}\n");
  if (n_drawn) *n_drawn = n;
  return g_string_free(s, FALSE);
}

char *lmwb_graph_to_dot(const LmwbGraph *g, const LmwbGraphDrawOptions *opt, GError **error) {
  return lmwb_graph_dot_build(g, opt, NULL, error);
}

gboolean lmwb_graph_write_dot(const LmwbGraph *g, const LmwbGraphDrawOptions *opt, const char *path, GError **error) {
  g_autofree char *text = lmwb_graph_to_dot(g, opt, error);
  return text && lmwb_file_write_atomic(path, text, strlen(text), error);
}
