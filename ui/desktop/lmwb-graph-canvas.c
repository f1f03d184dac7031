/* Cairo drawing of a circuit graph from its Graphviz layout. Contract: lmwb-graph-canvas.h. */
#include "ui/desktop/lmwb-graph-canvas.h"
#include "ui/desktop/lmwb-analysis.h"
#include <math.h>

#define MARGIN 14.0       /* pixels around the drawing */
#define GUTTER 72.0       /* pixels at the left for the row names ("L11 heads") */
#define TOKEN_LINE 20.0   /* pixels under the bottom row for the prompt tokens */
#define CALLOUT_H 18.0    /* pixels above the top row for the answer's plate */
#define MAX_SX 1.6        /* a small graph is not blown up beyond this */
#define MIN_TEXT_SX 0.45  /* below this horizontal scale boxes are too narrow for their text: none */
#define FONT_PT 9.0       /* node text at scale 1 (Graphviz sized the boxes for 10 pt Helvetica) */
#define MIN_FONT_PX 8.0   /* smaller text is not drawn smaller: it is cut short (…) instead */
#define MIN_BOX_H 12.0    /* pixels: a node stays a visible box at any zoom */
#define MIN_BOX_W 5.0
#define MAX_ROW_GAP 170.0 /* pixels between row centres at most */
#define MIN_ZOOM 0.5
#define MAX_ZOOM 40.0

struct _LmwbGraphCanvas {
  GtkDrawingArea parent;
  const LmwbGraph *g;
  const LmwbGraphLayout *l;
  char *message;
  int selected;
  double zoom, pan_x;        /* horizontal zoom on top of the fit, and pan in pixels */
  double drag_x;
  double max_weight;
  double *rows;              /* [n_rows] the layout's row centres (y), top first */
  int n_rows;
  double node_h;             /* the tallest node's layout height */
};

G_DEFINE_FINAL_TYPE(LmwbGraphCanvas, lmwb_graph_canvas, GTK_TYPE_DRAWING_AREA)

enum { SIGNAL_NODE_CLICKED, SIGNAL_EDGE_CLICKED, N_SIGNALS };
static guint signals[N_SIGNALS];

/* ---- geometry -------------------------------------------------------------------------------- *
 * Horizontally the layout is scaled (sx: the whole width fits at zoom 1, Ctrl+wheel zooms, dragging
 * pans). Vertically the rows fill the widget's height whatever the zoom: a node's band (its row
 * centre ± half the tallest node) maps to a box of its own height in pixels, the space between rows
 * stretches. The map is piecewise linear, so Graphviz's splines, which start and end on the boxes,
 * still do after it. */

typedef struct {
  double sx, ox;    /* X = ox + x * sx */
  double box_h;     /* pixels of the tallest node */
  double *Y;        /* [n_rows] screen row centres */
} View;

static void view_clear(View *v) { g_free(v->Y); }

static View view_of(LmwbGraphCanvas *c) {
  View v = {1, 0, MIN_BOX_H, NULL};
  if (!c->l || c->n_rows == 0) return v;
  double W = gtk_widget_get_width(GTK_WIDGET(c)), H = gtk_widget_get_height(GTK_WIDGET(c));
  double lw = MAX(c->l->width, 1), avail = MAX(W - GUTTER - 2 * MARGIN, 10);
  double fit = MIN(avail / lw, MAX_SX);
  v.sx = fit * c->zoom;
  v.ox = GUTTER + MARGIN + (fit < MAX_SX ? 0 : (avail - lw * fit) / 2) + c->pan_x;
  v.box_h = MAX(MIN_BOX_H, c->node_h * MIN(v.sx, 1.4));
  double top = MARGIN + CALLOUT_H + v.box_h / 2, bottom = H - MARGIN - TOKEN_LINE - v.box_h / 2;
  double gap = c->n_rows > 1 ? MIN((bottom - top) / (c->n_rows - 1), MAX_ROW_GAP) : 0;
  gap = MAX(gap, v.box_h * 1.6);
  double start = (top + bottom) / 2 - gap * (c->n_rows - 1) / 2;
  v.Y = g_new(double, c->n_rows);
  for (int k = 0; k < c->n_rows; k++) v.Y[k] = start + gap * k;
  return v;
}

/* Screen y of a layout y. */
static double map_y(const LmwbGraphCanvas *c, const View *v, double y) {
  double hh = c->node_h / 2, k_in = v->box_h / c->node_h; /* slope inside a node band */
  int n = c->n_rows;
  if (y <= c->rows[0] + hh) return v->Y[0] + (y - c->rows[0]) * k_in;
  for (int k = 0; k + 1 < n; k++) {
    double a = c->rows[k] + hh, b = c->rows[k + 1] - hh; /* the space between rows k and k + 1 */
    if (y <= a) return v->Y[k] + (y - c->rows[k]) * k_in;
    if (y < b) return v->Y[k] + v->box_h / 2 + (y - a) / MAX(b - a, 1e-9) * (v->Y[k + 1] - v->Y[k] - v->box_h);
  }
  return v->Y[n - 1] + (y - c->rows[n - 1]) * k_in;
}

/* A node's box on the screen. */
static void node_box(const LmwbGraphCanvas *c, const View *v, int i, double *x, double *y, double *w, double *h) {
  const LmwbGraphLayoutNode *n = &c->l->nodes[i];
  *w = MAX(MIN_BOX_W, n->width * v->sx);
  *h = n->height * v->box_h / c->node_h;
  *x = v->ox + n->x * v->sx - *w / 2;
  *y = map_y(c, v, n->y) - *h / 2;
}

int lmwb_graph_canvas_node_at(LmwbGraphCanvas *c, double px, double py) {
  if (!c->l || !c->g) return -1;
  View v = view_of(c);
  int hit = -1;
  double best = INFINITY;
  for (int i = 0; i < c->l->n_nodes; i++) {
    double x, y, w, h;
    node_box(c, &v, i, &x, &y, &w, &h);
    /* the nearest centre among the boxes under the point (tiny boxes may overlap when zoomed out) */
    if (px >= x - 2 && px <= x + w + 2 && py >= y - 2 && py <= y + h + 2) {
      double d = fabs(px - (x + w / 2));
      if (d < best) best = d, hit = i;
    }
  }
  view_clear(&v);
  return hit;
}

gboolean lmwb_graph_canvas_node_point(LmwbGraphCanvas *c, int node, double *px, double *py) {
  if (!c->l || node < 0 || node >= c->l->n_nodes) return FALSE;
  View v = view_of(c);
  double x, y, w, h;
  node_box(c, &v, node, &x, &y, &w, &h);
  *px = x + w / 2, *py = y + h / 2;
  view_clear(&v);
  return TRUE;
}

/* A point of layout edge e's spline on the screen, at parameter t in [0, 1] over its segments. */
static void edge_screen_point(const LmwbGraphCanvas *c, const View *v, const LmwbGraphLayoutEdge *e, double t,
                              double *px, double *py) {
  int segs = (e->n_points - 1) / 3;
  if (segs <= 0) {
    *px = v->ox + e->points[0] * v->sx, *py = map_y(c, v, e->points[1]);
    return;
  }
  double u = CLAMP(t, 0, 1) * segs;
  int s = MIN((int)u, segs - 1);
  u -= s;
  const double *p = e->points + 2 * 3 * s;
  double a = (1 - u) * (1 - u) * (1 - u), b = 3 * (1 - u) * (1 - u) * u, cc = 3 * (1 - u) * u * u, d = u * u * u;
  double x = a * p[0] + b * p[2] + cc * p[4] + d * p[6], y = a * p[1] + b * p[3] + cc * p[5] + d * p[7];
  *px = v->ox + x * v->sx, *py = map_y(c, v, y);
}

#define EDGE_HIT_PX 5.0
#define EDGE_SAMPLES 24

int lmwb_graph_canvas_edge_at(LmwbGraphCanvas *c, double px, double py) {
  if (!c->l || !c->g) return -1;
  View v = view_of(c);
  int hit = -1;
  double best = EDGE_HIT_PX;
  for (int k = 0; k < c->l->n_edges; k++) {
    const LmwbGraphLayoutEdge *e = &c->l->edges[k];
    if (e->edge < 0 || e->n_points < 1) continue;
    double x0 = 0, y0 = 0;
    edge_screen_point(c, &v, e, 0, &x0, &y0);
    for (int j = 1; j <= EDGE_SAMPLES; j++) {
      double x1, y1;
      edge_screen_point(c, &v, e, (double)j / EDGE_SAMPLES, &x1, &y1);
      /* distance from the point to the chord (x0, y0) - (x1, y1) */
      double dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
      double t = len2 > 0 ? CLAMP(((px - x0) * dx + (py - y0) * dy) / len2, 0, 1) : 0;
      double d = hypot(px - (x0 + t * dx), py - (y0 + t * dy));
      if (d < best) best = d, hit = e->edge;
      x0 = x1, y0 = y1;
    }
  }
  view_clear(&v);
  return hit;
}

gboolean lmwb_graph_canvas_edge_point(LmwbGraphCanvas *c, int edge, double *px, double *py) {
  if (!c->l || !c->g || edge < 0) return FALSE;
  for (int k = 0; k < c->l->n_edges; k++) {
    const LmwbGraphLayoutEdge *e = &c->l->edges[k];
    if (e->edge != edge || e->n_points < 1) continue;
    View v = view_of(c);
    edge_screen_point(c, &v, e, 0.5, px, py);
    view_clear(&v);
    return TRUE;
  }
  return FALSE;
}

/* ---- what nodes say ---------------------------------------------------------------------------- */

char *lmwb_graph_canvas_node_text(const LmwbGraph *g, int node) {
  const LmwbGraphNode *n = &g->nodes[node];
  /* a row says the layer and the order says the position: a token its text, an error "error" */
  if (n->kind == LMWB_GRAPH_TOKEN && g->prompt_tokens && n->pos >= 0 && n->pos < g->n_prompt)
    return lmwb_token_display(g->prompt_tokens[n->pos]);
  if (n->kind == LMWB_GRAPH_ERROR) return g_strdup("error");
  return lmwb_graph_node_caption(g, node);
}

static void node_fill(const LmwbGraphNode *n, double rgb[3]) {
  guint32 hex;
  switch (n->kind) {
    case LMWB_GRAPH_FEATURE: hex = 0xfee8c8; break;
    case LMWB_GRAPH_ERROR: hex = 0xe0e0e0; break;
    case LMWB_GRAPH_TOKEN: case LMWB_GRAPH_INPUT: hex = 0xdeebf7; break;
    case LMWB_GRAPH_LOGIT: case LMWB_GRAPH_OUTPUT: hex = 0xe5f5e0; break;
    case LMWB_GRAPH_HEAD: hex = 0xfdd0a2; break;
    case LMWB_GRAPH_MLP: hex = 0xfdae6b; break;
    default: hex = 0xffffff;
  }
  rgb[0] = ((hex >> 16) & 255) / 255.0, rgb[1] = ((hex >> 8) & 255) / 255.0, rgb[2] = (hex & 255) / 255.0;
}

/* ---- drawing ------------------------------------------------------------------------------------ */

static void rounded_rect(cairo_t *cr, double x, double y, double w, double h, double r) {
  r = MIN(r, MIN(w, h) / 2);
  cairo_new_sub_path(cr);
  cairo_arc(cr, x + w - r, y + r, r, -G_PI / 2, 0);
  cairo_arc(cr, x + w - r, y + h - r, r, 0, G_PI / 2);
  cairo_arc(cr, x + r, y + h - r, r, G_PI / 2, G_PI);
  cairo_arc(cr, x + r, y + r, r, G_PI, 3 * G_PI / 2);
  cairo_close_path(cr);
}

static void set_hex(cairo_t *cr, const char *hex, double alpha) {
  GdkRGBA c;
  gdk_rgba_parse(&c, hex);
  cairo_set_source_rgba(cr, c.red, c.green, c.blue, alpha);
}

static gboolean touches(const LmwbGraphLayoutEdge *e, int node) { return e->source == node || e->target == node; }

static void draw_edge(LmwbGraphCanvas *c, cairo_t *cr, const View *v, const LmwbGraphLayoutEdge *e, gboolean dim) {
  double w = e->edge >= 0 ? c->g->edges[e->edge].weight : 0;
  double rel = c->max_weight > 0 && isfinite(w) ? fabs(w) / c->max_weight : 0;
  double pen = MAX(LMWB_GRAPH_PEN_MIN, LMWB_GRAPH_PEN_MAX * rel) * CLAMP(v->sx, 0.45, 1.3);
  double alpha = dim ? 0.10 : 0.30 + 0.65 * rel;
  if (e->edge < 0) set_hex(cr, "#969696", dim ? 0.15 : 0.6);
  else set_hex(cr, w >= 0 ? LMWB_GRAPH_COLOR_POSITIVE : LMWB_GRAPH_COLOR_NEGATIVE, alpha);
  cairo_set_line_width(cr, pen);
  const double *p = e->points;
#define PX(k) (v->ox + p[2 * (k)] * v->sx)
#define PY(k) map_y(c, v, p[2 * (k) + 1])
  cairo_move_to(cr, PX(0), PY(0));
  for (int k = 1; k + 2 < e->n_points; k += 3) cairo_curve_to(cr, PX(k), PY(k), PX(k + 1), PY(k + 1), PX(k + 2), PY(k + 2));
  cairo_stroke(cr);
  if (e->has_arrow) {
    /* an arrowhead from the spline's end to the arrow point */
    int last = e->n_points - 1;
    double x0 = PX(last), y0 = PY(last), x1 = v->ox + e->arrow_x * v->sx, y1 = map_y(c, v, e->arrow_y);
    double dx = x1 - x0, dy = y1 - y0, len = hypot(dx, dy);
    if (len > 0) {
      double ux = dx / len, uy = dy / len, half = MAX(2.2, pen * 0.9);
      cairo_move_to(cr, x1, y1);
      cairo_line_to(cr, x0 - uy * half, y0 + ux * half);
      cairo_line_to(cr, x0 + uy * half, y0 - ux * half);
      cairo_close_path(cr);
      cairo_fill(cr);
    }
  }
#undef PX
#undef PY
}

static void draw_text(cairo_t *cr, PangoLayout *pl, const char *text, double cx, double cy, double width,
                      PangoAlignment align) {
  pango_layout_set_text(pl, text, -1);
  pango_layout_set_width(pl, (int)(MAX(width, 4) * PANGO_SCALE));
  pango_layout_set_alignment(pl, align);
  int pw, ph;
  pango_layout_get_size(pl, &pw, &ph);
  double x = align == PANGO_ALIGN_CENTER ? cx - width / 2 : align == PANGO_ALIGN_RIGHT ? cx - width : cx;
  cairo_move_to(cr, x, cy - ph / (2.0 * PANGO_SCALE));
  pango_cairo_show_layout(cr, pl);
}

static void set_font_px(PangoLayout *pl, double px) {
  PangoFontDescription *fd = pango_font_description_from_string("Sans");
  pango_font_description_set_absolute_size(fd, px * PANGO_SCALE);
  pango_layout_set_font_description(pl, fd);
  pango_font_description_free(fd);
}

/* Returns TRUE when the box has no room for all of its text. */
static gboolean draw_node(LmwbGraphCanvas *c, cairo_t *cr, PangoLayout *pl, const View *v, int i) {
  const LmwbGraphNode *n = &c->g->nodes[i];
  double x, y, w, h, rgb[3];
  node_box(c, v, i, &x, &y, &w, &h);
  node_fill(n, rgb);
  rounded_rect(cr, x, y, w, h, MIN(4, w / 3));
  cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
  cairo_fill_preserve(cr);
  gboolean sel = i == c->selected;
  if (n->kind == LMWB_GRAPH_ERROR) cairo_set_dash(cr, (double[]){3, 2}, 2, 0);
  set_hex(cr, sel ? "#1c71d8" : "#4d4d4d", 1);
  cairo_set_line_width(cr, sel ? 2.6 : n->target_logit ? 2.2 : 0.9);
  cairo_stroke(cr);
  cairo_set_dash(cr, NULL, 0, 0);
  if (n->pinned) {
    /* a second, orange frame outside the first (Graphviz's peripheries=2) */
    rounded_rect(cr, x - 3, y - 3, w + 6, h + 6, 6);
    set_hex(cr, "#e66100", 1);
    cairo_set_line_width(cr, 2.0);
    cairo_stroke(cr);
  }
  if (v->sx < MIN_TEXT_SX) return TRUE;
  g_autofree char *text = lmwb_graph_canvas_node_text(c->g, i);
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  set_font_px(pl, CLAMP(FONT_PT * v->sx, MIN_FONT_PX, FONT_PT * 1.4));
  draw_text(cr, pl, text, x + w / 2, y + h / 2, w - 6 * MIN(v->sx, 1), PANGO_ALIGN_CENTER);
  return pango_layout_is_ellipsized(pl);
}

/* Zoomed out, boxes carry no text or cut it short: the nodes that matter most get theirs beside
 * them, on a plate (the answer, the selected node, pinned nodes). */
static void draw_callout(LmwbGraphCanvas *c, cairo_t *cr, PangoLayout *pl, const View *v, int i) {
  double x, y, w, h;
  node_box(c, v, i, &x, &y, &w, &h);
  g_autofree char *text = lmwb_graph_canvas_node_text(c->g, i);
  set_font_px(pl, 11);
  pango_layout_set_width(pl, -1);
  pango_layout_set_text(pl, text, -1);
  int pw, ph;
  pango_layout_get_pixel_size(pl, &pw, &ph);
  double W = gtk_widget_get_width(GTK_WIDGET(c));
  double tx = CLAMP(x + w / 2 - pw / 2.0, 2, MAX(2, W - pw - 4)), ty = y - ph - 6;
  if (ty < 2) ty = y + h + 4; /* no room above the top row: below it */
  rounded_rect(cr, tx - 4, ty - 1, pw + 8, ph + 2, 4);
  cairo_set_source_rgba(cr, 1, 1, 1, 0.92);
  cairo_fill_preserve(cr);
  set_hex(cr, i == c->selected ? "#1c71d8" : c->g->nodes[i].pinned ? "#e66100" : "#4d4d4d", 1);
  cairo_set_line_width(cr, 1);
  cairo_stroke(cr);
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  cairo_move_to(cr, tx, ty);
  pango_cairo_show_layout(cr, pl);
}

/* Under the embeddings' row, each token's text where there is room for it (their boxes are small
 * when zoomed out). */
static void draw_tokens(LmwbGraphCanvas *c, cairo_t *cr, PangoLayout *pl, const View *v, GdkRGBA *fg) {
  set_font_px(pl, 11);
  pango_layout_set_width(pl, -1);
  cairo_set_source_rgba(cr, fg->red, fg->green, fg->blue, 0.85);
  double right = -INFINITY;
  g_autofree int *order = g_new(int, MAX(c->g->n_nodes, 1));
  int n = 0;
  for (int i = 0; i < c->g->n_nodes; i++)
    if (c->g->nodes[i].kind == LMWB_GRAPH_TOKEN) order[n++] = i;
  /* left to right */
  for (int a = 1; a < n; a++)
    for (int b = a; b > 0 && c->l->nodes[order[b]].x < c->l->nodes[order[b - 1]].x; b--) {
      int t = order[b];
      order[b] = order[b - 1], order[b - 1] = t;
    }
  for (int k = 0; k < n; k++) {
    int i = order[k];
    const LmwbGraphNode *nd = &c->g->nodes[i];
    if (nd->pos < 0 || nd->pos >= c->g->n_prompt || !c->g->prompt_tokens) continue;
    double x, y, w, h;
    node_box(c, v, i, &x, &y, &w, &h);
    g_autofree char *t = lmwb_token_display(c->g->prompt_tokens[nd->pos]);
    pango_layout_set_text(pl, t, -1);
    int pw, ph;
    pango_layout_get_pixel_size(pl, &pw, &ph);
    double tx = x + w / 2 - pw / 2.0;
    if (tx < right + 4 || tx < GUTTER) continue; /* no room: its tooltip says it */
    cairo_move_to(cr, tx, y + h + 3);
    pango_cairo_show_layout(cr, pl);
    right = tx + pw;
  }
}

/* Each row's name in the gutter. */
static void draw_rows(LmwbGraphCanvas *c, cairo_t *cr, PangoLayout *pl, const View *v, GdkRGBA *fg) {
  set_font_px(pl, 12);
  cairo_set_source_rgba(cr, fg->red, fg->green, fg->blue, 0.65);
  for (int k = 0; k < c->n_rows; k++) {
    /* the rank of a node of this row names it */
    int rank = -1;
    for (int i = 0; i < c->g->n_nodes && rank < 0; i++)
      if (fabs(c->l->nodes[i].y - c->rows[k]) < 0.5) rank = lmwb_graph_node_rank(c->g, i);
    if (rank < 0) continue;
    g_autofree char *name = lmwb_graph_row_name(c->g, rank);
    draw_text(cr, pl, name, 6, v->Y[k], GUTTER - 10, PANGO_ALIGN_LEFT);
  }
}

static void draw(GtkDrawingArea *da, cairo_t *cr, int W, int H, gpointer user) {
  LmwbGraphCanvas *c = LMWB_GRAPH_CANVAS(da);
  GdkRGBA fg;
  G_GNUC_BEGIN_IGNORE_DEPRECATIONS /* gtk_widget_get_color is GTK 4.10 */
  gtk_style_context_get_color(gtk_widget_get_style_context(GTK_WIDGET(c)), &fg);
  G_GNUC_END_IGNORE_DEPRECATIONS
  PangoLayout *pl = gtk_widget_create_pango_layout(GTK_WIDGET(c), NULL);
  if (!c->g || !c->l || c->n_rows == 0) {
    set_font_px(pl, 14);
    pango_layout_set_wrap(pl, PANGO_WRAP_WORD);
    cairo_set_source_rgba(cr, fg.red, fg.green, fg.blue, 0.6);
    draw_text(cr, pl, c->message ? c->message : "", W / 2.0, H / 2.0, MIN(W - 40.0, 520.0), PANGO_ALIGN_CENTER);
    g_object_unref(pl);
    return;
  }
  View v = view_of(c);
  cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
  pango_layout_set_ellipsize(pl, PANGO_ELLIPSIZE_END);
  pango_layout_set_single_paragraph_mode(pl, TRUE);
  cairo_save(cr);
  cairo_rectangle(cr, GUTTER, 0, W - GUTTER, H);
  cairo_clip(cr);
  gboolean has_sel = c->selected >= 0 && c->selected < c->g->n_nodes;
  for (int pass = 0; pass < 2; pass++)
    for (int k = 0; k < c->l->n_edges; k++) {
      const LmwbGraphLayoutEdge *e = &c->l->edges[k];
      gboolean hot = has_sel && touches(e, c->selected);
      if (pass == (hot ? 1 : 0)) draw_edge(c, cr, &v, e, has_sel && !hot);
    }
  g_autofree guint8 *cut = g_new0(guint8, c->g->n_nodes);
  for (int i = 0; i < c->g->n_nodes; i++) cut[i] = draw_node(c, cr, pl, &v, i);
  pango_layout_set_ellipsize(pl, PANGO_ELLIPSIZE_NONE);
  for (int i = 0; i < c->g->n_nodes; i++)
    if (cut[i] && (c->g->nodes[i].target_logit || c->g->nodes[i].pinned || i == c->selected))
      draw_callout(c, cr, pl, &v, i);
  pango_layout_set_ellipsize(pl, PANGO_ELLIPSIZE_END);
  if (v.sx < MIN_TEXT_SX) draw_tokens(c, cr, pl, &v, &fg);
  cairo_restore(cr);
  draw_rows(c, cr, pl, &v, &fg);
  view_clear(&v);
  g_object_unref(pl);
}

/* ---- input ------------------------------------------------------------------------------------ */

static void on_click(GtkGestureClick *g, int n_press, double x, double y, gpointer user) {
  LmwbGraphCanvas *c = user;
  if (n_press != 1) return;
  int node = lmwb_graph_canvas_node_at(c, x, y);
  g_signal_emit(c, signals[SIGNAL_NODE_CLICKED], 0, node);
  if (node < 0) {
    int edge = lmwb_graph_canvas_edge_at(c, x, y);
    if (edge >= 0) g_signal_emit(c, signals[SIGNAL_EDGE_CLICKED], 0, edge);
  }
}

/* Ctrl+wheel zooms about the pointer (horizontally: the rows always fill the height); the wheel
 * alone pans sideways. */
static gboolean on_scroll(GtkEventControllerScroll *s, double dx, double dy, gpointer user) {
  LmwbGraphCanvas *c = user;
  if (!c->l) return FALSE;
  GdkModifierType mods = gtk_event_controller_get_current_event_state(GTK_EVENT_CONTROLLER(s));
  if (!(mods & GDK_CONTROL_MASK)) {
    c->pan_x -= 40 * (dx + dy);
    gtk_widget_queue_draw(GTK_WIDGET(c));
    return TRUE;
  }
  double px, py;
  GdkEvent *ev = gtk_event_controller_get_current_event(GTK_EVENT_CONTROLLER(s));
  if (!ev || !gdk_event_get_position(ev, &px, &py)) px = gtk_widget_get_width(GTK_WIDGET(c)) / 2.0;
  View before = view_of(c);
  double lx = (px - before.ox) / before.sx;
  view_clear(&before);
  c->zoom = CLAMP(c->zoom * pow(1.15, -dy), MIN_ZOOM, MAX_ZOOM);
  View after = view_of(c);
  c->pan_x += px - (after.ox + lx * after.sx); /* the layout point under the pointer stays there */
  view_clear(&after);
  gtk_widget_queue_draw(GTK_WIDGET(c));
  return TRUE;
}

static void on_drag_begin(GtkGestureDrag *d, double x, double y, gpointer user) {
  LmwbGraphCanvas *c = user;
  c->drag_x = c->pan_x;
}

static void on_drag_update(GtkGestureDrag *d, double dx, double dy, gpointer user) {
  LmwbGraphCanvas *c = user;
  c->pan_x = c->drag_x + dx;
  gtk_widget_queue_draw(GTK_WIDGET(c));
}

static gboolean on_tooltip(GtkWidget *w, int x, int y, gboolean kb, GtkTooltip *tip, gpointer user) {
  LmwbGraphCanvas *c = LMWB_GRAPH_CANVAS(w);
  int i = lmwb_graph_canvas_node_at(c, x, y);
  if (i < 0) return FALSE;
  const LmwbGraphNode *n = &c->g->nodes[i];
  g_autofree char *id = lmwb_graph_node_id(c->g, i);
  GString *s = g_string_new(NULL);
  g_string_append_printf(s, "%s %s", lmwb_graph_kind_name(n->kind), id);
  if (*n->label) g_string_append_printf(s, "\n%s", n->label);
  if (n->pos >= 0 && n->pos < c->g->n_prompt && c->g->prompt_tokens) {
    g_autofree char *t = lmwb_token_display(c->g->prompt_tokens[n->pos]);
    g_string_append_printf(s, "\nposition %d (“%s”)", n->pos, t);
  }
  if (n->has_activation) g_string_append_printf(s, "\nactivation %.4g", n->activation);
  if (n->has_influence) g_string_append_printf(s, "\ninfluence %.3f", n->influence);
  if (n->kind == LMWB_GRAPH_FEATURE) g_string_append(s, "\nclick: contexts and output tokens");
  gtk_tooltip_set_text(tip, s->str);
  g_string_free(s, TRUE);
  return TRUE;
}

/* ---- API --------------------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The layout's rows: the distinct node centres' y, top first. */
static void find_rows(LmwbGraphCanvas *c) {
  g_clear_pointer(&c->rows, g_free);
  c->n_rows = 0;
  c->node_h = 1;
  if (!c->l || c->l->n_nodes == 0) return;
  double *ys = g_new(double, c->l->n_nodes);
  for (int i = 0; i < c->l->n_nodes; i++) ys[i] = c->l->nodes[i].y, c->node_h = MAX(c->node_h, c->l->nodes[i].height);
  qsort(ys, (size_t)c->l->n_nodes, sizeof *ys, cmp_double);
  c->rows = g_new(double, c->l->n_nodes);
  for (int i = 0; i < c->l->n_nodes; i++)
    if (c->n_rows == 0 || ys[i] - c->rows[c->n_rows - 1] > 0.5) c->rows[c->n_rows++] = ys[i];
  g_free(ys);
}

void lmwb_graph_canvas_set_graph(LmwbGraphCanvas *c, const LmwbGraph *g, const LmwbGraphLayout *l, gboolean keep_view) {
  c->g = g && l ? g : NULL;
  c->l = g && l ? l : NULL;
  c->max_weight = 0;
  if (c->g)
    for (int k = 0; k < c->l->n_edges; k++) {
      int e = c->l->edges[k].edge;
      if (e >= 0 && isfinite(g->edges[e].weight)) c->max_weight = MAX(c->max_weight, fabs(g->edges[e].weight));
    }
  find_rows(c);
  if (!keep_view) c->zoom = 1, c->pan_x = 0;
  if (!c->g || c->selected >= c->g->n_nodes) c->selected = -1;
  gtk_widget_queue_draw(GTK_WIDGET(c));
}

void lmwb_graph_canvas_set_message(LmwbGraphCanvas *c, const char *message) {
  g_free(c->message);
  c->message = g_strdup(message);
  gtk_widget_queue_draw(GTK_WIDGET(c));
}

void lmwb_graph_canvas_set_selected(LmwbGraphCanvas *c, int node) {
  c->selected = node;
  gtk_widget_queue_draw(GTK_WIDGET(c));
}

void lmwb_graph_canvas_fit(LmwbGraphCanvas *c) {
  c->zoom = 1, c->pan_x = 0;
  gtk_widget_queue_draw(GTK_WIDGET(c));
}

GtkWidget *lmwb_graph_canvas_new(void) { return g_object_new(LMWB_TYPE_GRAPH_CANVAS, NULL); }

static void finalize(GObject *o) {
  g_free(LMWB_GRAPH_CANVAS(o)->message);
  g_free(LMWB_GRAPH_CANVAS(o)->rows);
  G_OBJECT_CLASS(lmwb_graph_canvas_parent_class)->finalize(o);
}

static void lmwb_graph_canvas_class_init(LmwbGraphCanvasClass *k) {
  G_OBJECT_CLASS(k)->finalize = finalize;
  signals[SIGNAL_NODE_CLICKED] = g_signal_new("node-clicked", G_TYPE_FROM_CLASS(k), G_SIGNAL_RUN_LAST, 0, NULL, NULL,
                                              NULL, G_TYPE_NONE, 1, G_TYPE_INT);
  signals[SIGNAL_EDGE_CLICKED] = g_signal_new("edge-clicked", G_TYPE_FROM_CLASS(k), G_SIGNAL_RUN_LAST, 0, NULL, NULL,
                                              NULL, G_TYPE_NONE, 1, G_TYPE_INT);
}

static void lmwb_graph_canvas_init(LmwbGraphCanvas *c) {
  c->selected = -1;
  c->zoom = 1;
  gtk_widget_set_hexpand(GTK_WIDGET(c), TRUE);
  gtk_widget_set_vexpand(GTK_WIDGET(c), TRUE);
  gtk_drawing_area_set_draw_func(GTK_DRAWING_AREA(c), draw, NULL, NULL);
  GtkGesture *click = gtk_gesture_click_new();
  g_signal_connect(click, "released", G_CALLBACK(on_click), c);
  gtk_widget_add_controller(GTK_WIDGET(c), GTK_EVENT_CONTROLLER(click));
  GtkGesture *drag = gtk_gesture_drag_new();
  g_signal_connect(drag, "drag-begin", G_CALLBACK(on_drag_begin), c);
  g_signal_connect(drag, "drag-update", G_CALLBACK(on_drag_update), c);
  gtk_widget_add_controller(GTK_WIDGET(c), GTK_EVENT_CONTROLLER(drag));
  GtkEventController *scroll = gtk_event_controller_scroll_new(GTK_EVENT_CONTROLLER_SCROLL_BOTH_AXES);
  g_signal_connect(scroll, "scroll", G_CALLBACK(on_scroll), c);
  gtk_widget_add_controller(GTK_WIDGET(c), scroll);
  gtk_widget_set_has_tooltip(GTK_WIDGET(c), TRUE);
  g_signal_connect(c, "query-tooltip", G_CALLBACK(on_tooltip), NULL);
}
