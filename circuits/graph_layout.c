/* Graphviz (libgvc) layout of a graph's DOT text: node positions and edge splines for the
 * desktop, SVG and PNG images (circuits/graph.h). */
#include <graphviz/gvc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/core/atomic_file.h"
#include "app/core/errors.h"
#include "circuits/graph.h"
#include "circuits/graph_private.h"

/* libgvc keeps global state (error level, the last error, plugin tables): one caller at a time.
 * One context serves the whole process and is never freed: Graphviz 2.43's pango plugin keeps a
 * pointer into the font table of the context it last measured text for, and reads it on the next
 * call, so freeing a context and making another reads freed memory (seen under ASan). */
static GMutex gv_lock;
static GVC_t *gv_context;

typedef struct {
  GVC_t *gvc;
  Agraph_t *ag;
  agerrlevel_t old_level;
} Laid;

/* Graphviz's last message as the error (its own text, else `what`). */
static void gv_error(GError **error, const char *what) {
  char *last = aglasterr();
  g_autofree char *msg = last ? g_strstrip(g_strdup(last)) : NULL;
  free(last);
  g_set_error(error, LMWB_ERROR, LMWB_ERROR_FAILED, "Graphviz: %s%s%s", what, msg && *msg ? ": " : "",
              msg ? msg : "");
}

static void layout_end(Laid *l) {
  if (l->ag) {
    gvFreeLayout(l->gvc, l->ag);
    agclose(l->ag);
  }
  agseterr(l->old_level);
  g_mutex_unlock(&gv_lock);
}

/* Lays out the graph's DOT text with `dot`; on success the lock is held until layout_end. */
static gboolean layout_begin(const LmwbGraph *g, const LmwbGraphDrawOptions *opt, Laid *l, GError **error) {
  *l = (Laid){0};
  if (g->n_nodes > LMWB_GRAPH_LAYOUT_MAX_NODES) {
    lmwb_input_error(error, "graph layout: %d nodes are more than Graphviz is given (%d); prune the graph first",
                     g->n_nodes, LMWB_GRAPH_LAYOUT_MAX_NODES);
    return FALSE;
  }
  int n_drawn = 0;
  g_autofree char *dot = lmwb_graph_dot_build(g, opt, &n_drawn, error);
  if (!dot) return FALSE;
  if (n_drawn > LMWB_GRAPH_LAYOUT_MAX_EDGES) {
    lmwb_input_error(error, "graph layout: %d edges are more than Graphviz is given (%d); draw fewer (max_edges) "
                     "or prune the graph first", n_drawn, LMWB_GRAPH_LAYOUT_MAX_EDGES);
    return FALSE;
  }
  g_mutex_lock(&gv_lock);
  l->old_level = agseterr(AGMAX); /* keep Graphviz off stderr; its messages come back as errors */
  if (!gv_context) gv_context = gvContext();
  l->gvc = gv_context;
  l->ag = agmemread(dot);
  if (!l->ag) {
    gv_error(error, "cannot read the DOT text");
  } else if (gvLayout(l->gvc, l->ag, "dot") != 0) {
    gv_error(error, "the dot layout failed");
    agclose(l->ag);
    l->ag = NULL;
  } else {
    return TRUE;
  }
  layout_end(l);
  return FALSE;
}

/* The index in "n12" / "e12" / "r12" with the given letter, or -1. */
static int name_index(const char *name, char letter) {
  if (!name || name[0] != letter || !g_ascii_isdigit(name[1])) return -1;
  gint64 v = -1;
  return g_ascii_string_to_signed(name + 1, 10, 0, G_MAXINT, &v, NULL) ? (int)v : -1;
}

static void point_add(GArray *pts, pointf p, boxf bb) {
  double xy[2] = {p.x - bb.LL.x, bb.UR.y - p.y};
  g_array_append_vals(pts, xy, 2);
}

/* The edge's spline as one Bézier chain; pieces joined by straight cubic segments. */
static void edge_points(Agedge_t *e, boxf bb, LmwbGraphLayoutEdge *out) {
  splines *spl = ED_spl(e);
  GArray *pts = g_array_new(FALSE, FALSE, sizeof(double));
  pointf last = {0, 0};
  for (int b = 0; spl && b < spl->size; b++) {
    const bezier *bz = &spl->list[b];
    if (bz->size < 1) continue;
    if (pts->len > 0) {
      point_add(pts, last, bb);
      point_add(pts, bz->list[0], bb);
    }
    for (int i = 0; i < bz->size; i++) point_add(pts, bz->list[i], bb);
    last = bz->list[bz->size - 1];
    out->has_arrow = bz->eflag != 0;
    if (bz->eflag) {
      out->arrow_x = bz->ep.x - bb.LL.x;
      out->arrow_y = bb.UR.y - bz->ep.y;
    }
  }
  out->n_points = (int)(pts->len / 2);
  out->points = (double *)g_array_free(pts, FALSE);
}

static gint cmp_layout_edges(gconstpointer pa, gconstpointer pb) {
  const LmwbGraphLayoutEdge *a = pa, *b = pb;
  /* graph edges by index, then reader -> head links by reader */
  if ((a->edge < 0) != (b->edge < 0)) return a->edge < 0 ? 1 : -1;
  if (a->edge != b->edge) return a->edge < b->edge ? -1 : 1;
  return a->source < b->source ? -1 : a->source > b->source;
}

static LmwbGraphLayout *layout_read(const LmwbGraph *g, Agraph_t *ag) {
  boxf bb = GD_bb(ag);
  LmwbGraphLayout *l = g_new0(LmwbGraphLayout, 1);
  l->width = bb.UR.x - bb.LL.x;
  l->height = bb.UR.y - bb.LL.y;
  l->n_nodes = g->n_nodes;
  l->nodes = g_new0(LmwbGraphLayoutNode, (size_t)MAX(g->n_nodes, 1));
  GArray *edges = g_array_new(FALSE, TRUE, sizeof(LmwbGraphLayoutEdge));
  for (Agnode_t *n = agfstnode(ag); n; n = agnxtnode(ag, n)) {
    int i = name_index(agnameof(n), 'n');
    if (i < 0 || i >= g->n_nodes) continue; /* a row's name */
    l->nodes[i] = (LmwbGraphLayoutNode){ND_coord(n).x - bb.LL.x, bb.UR.y - ND_coord(n).y, ND_width(n) * 72.0,
                                        ND_height(n) * 72.0};
    for (Agedge_t *e = agfstout(ag, n); e; e = agnxtout(ag, e)) {
      const char *id = agget(e, "id");
      int k = name_index(id, 'e'), reader = name_index(id, 'r');
      int t = name_index(agnameof(aghead(e)), 'n');
      if ((k < 0 && reader < 0) || t < 0) continue; /* an invisible ordering edge */
      LmwbGraphLayoutEdge le = {.edge = k, .source = i, .target = t};
      edge_points(e, bb, &le);
      g_array_append_val(edges, le);
    }
  }
  g_array_sort(edges, cmp_layout_edges);
  l->n_edges = (int)edges->len;
  l->edges = (LmwbGraphLayoutEdge *)g_array_free(edges, FALSE);
  return l;
}

LmwbGraphLayout *lmwb_graph_layout(const LmwbGraph *g, const LmwbGraphDrawOptions *opt, GError **error) {
  Laid laid;
  if (!layout_begin(g, opt, &laid, error)) return NULL;
  LmwbGraphLayout *l = layout_read(g, laid.ag);
  layout_end(&laid);
  return l;
}

void lmwb_graph_layout_free(LmwbGraphLayout *l) {
  if (!l) return;
  for (int i = 0; i < l->n_edges; i++) g_free(l->edges[i].points);
  g_free(l->edges);
  g_free(l->nodes);
  g_free(l);
}

static const char *const format_names[] = {"svg", "png"};

const char *lmwb_graph_image_format_name(LmwbGraphImageFormat f) {
  return (unsigned)f < G_N_ELEMENTS(format_names) ? format_names[f] : "?";
}

gboolean lmwb_graph_image_format_parse(const char *text, LmwbGraphImageFormat *out, GError **error) {
  int i = lmwb_graph_name_index(format_names, G_N_ELEMENTS(format_names), text, TRUE);
  if (i >= 0) {
    *out = (LmwbGraphImageFormat)i;
    return TRUE;
  }
  lmwb_input_error(error, "unknown image format \"%s\" (svg or png)", text ? text : "");
  return FALSE;
}

guint8 *lmwb_graph_render(const LmwbGraph *g, const LmwbGraphDrawOptions *opt, LmwbGraphImageFormat format,
                          size_t *len, GError **error) {
  if ((unsigned)format >= G_N_ELEMENTS(format_names)) {
    lmwb_input_error(error, "graph image: unknown format %d", (int)format);
    return NULL;
  }
  Laid laid;
  if (!layout_begin(g, opt, &laid, error)) return NULL;
  if (format == LMWB_GRAPH_PNG) {
    boxf bb = GD_bb(laid.ag);
    /* Graphviz adds a pad of 4 points on each side */
    double side = (MAX(bb.UR.x - bb.LL.x, bb.UR.y - bb.LL.y) + 8.0) / 72.0 * LMWB_GRAPH_PNG_DPI;
    if (side > LMWB_GRAPH_PNG_MAX_SIDE) GD_drawing(laid.ag)->dpi = LMWB_GRAPH_PNG_DPI * LMWB_GRAPH_PNG_MAX_SIDE / side;
  }
  char *data = NULL;
  unsigned int n = 0;
  guint8 *out = NULL;
  if (gvRenderData(laid.gvc, laid.ag, format_names[format], &data, &n) != 0 || !data) {
    g_autofree char *what = g_strdup_printf("cannot draw %s (is Graphviz's cairo plugin installed?)", format_names[format]);
    gv_error(error, what);
  } else {
    out = g_memdup2(data, n);
    if (len) *len = n;
  }
  if (data) gvFreeRenderData(data);
  layout_end(&laid);
  return out;
}

gboolean lmwb_graph_write_image(const LmwbGraph *g, const LmwbGraphDrawOptions *opt, LmwbGraphImageFormat format,
                                const char *path, GError **error) {
  size_t len = 0;
  g_autofree guint8 *data = lmwb_graph_render(g, opt, format, &len, error);
  return data && lmwb_file_write_atomic(path, data, len, error);
}
