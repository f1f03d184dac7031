/* Cairo drawing of a circuit graph from its Graphviz layout. Contract: lmwb-graph-canvas.h. */
#include "ui/desktop/lmwb-graph-canvas.h"
#include "ui/desktop/lmwb-analysis.h"
#include <math.h>

#define MARGIN 16.0      /* pixels around the graph when it fits the widget */
#define MAX_FIT 1.6      /* a small graph is not blown up beyond this */
#define FONT_PT 9.0      /* node text, in layout points (Graphviz sized the nodes for 10 pt Helvetica) */
#define ROW_FONT_PT 10.0
#define MIN_ZOOM 0.2
#define MAX_ZOOM 12.0

struct _LmwbGraphCanvas {
  GtkDrawingArea parent;
  const LmwbGraph *g;
  const LmwbGraphLayout *l;
  char *message;
  int selected;
  double zoom, pan_x, pan_y; /* user zoom on top of the fit, and pan in pixels */
  double drag_x, drag_y;
  double max_weight;
};

G_DEFINE_FINAL_TYPE(LmwbGraphCanvas, lmwb_graph_canvas, GTK_TYPE_DRAWING_AREA)

enum { SIGNAL_NODE_CLICKED, N_SIGNALS };
static guint signals[N_SIGNALS];

/* ---- geometry -------------------------------------------------------------------------------- */

typedef struct {
  double s, ox, oy; /* widget = layout * s + (ox, oy) */
} View;

static View view_of(LmwbGraphCanvas *c) {
  View v = {1, 0, 0};
  if (!c->l) return v;
  double W = gtk_widget_get_width(GTK_WIDGET(c)), H = gtk_widget_get_height(GTK_WIDGET(c));
  double lw = MAX(c->l->width, 1), lh = MAX(c->l->height, 1);
  double fit = MIN((W - 2 * MARGIN) / lw, (H - 2 * MARGIN) / lh);
  fit = CLAMP(fit, 0.05, MAX_FIT);
  v.s = fit * c->zoom;
  v.ox = (W - lw * v.s) / 2 + c->pan_x;
  v.oy = (H - lh * v.s) / 2 + c->pan_y;
  return v;
}

int lmwb_graph_canvas_node_at(LmwbGraphCanvas *c, double x, double y) {
  if (!c->l || !c->g) return -1;
  View v = view_of(c);
  double lx = (x - v.ox) / v.s, ly = (y - v.oy) / v.s;
  for (int i = 0; i < c->l->n_nodes; i++) {
    const LmwbGraphLayoutNode *n = &c->l->nodes[i];
    if (fabs(lx - n->x) <= n->width / 2 && fabs(ly - n->y) <= n->height / 2) return i;
  }
  return -1;
}

gboolean lmwb_graph_canvas_node_point(LmwbGraphCanvas *c, int node, double *x, double *y) {
  if (!c->l || node < 0 || node >= c->l->n_nodes) return FALSE;
  View v = view_of(c);
  *x = v.ox + c->l->nodes[node].x * v.s;
  *y = v.oy + c->l->nodes[node].y * v.s;
  return TRUE;
}

/* ---- what nodes say ---------------------------------------------------------------------------- */

char *lmwb_graph_canvas_node_text(const LmwbGraph *g, int node) {
  const LmwbGraphNode *n = &g->nodes[node];
  if (n->kind == LMWB_GRAPH_TOKEN && n->pos >= 0 && n->pos < g->n_prompt && g->prompt_tokens)
    return lmwb_token_display(g->prompt_tokens[n->pos]);
  if (n->kind == LMWB_GRAPH_ERROR) return g_strdup_printf("L%d error", n->layer);
  return lmwb_graph_node_caption(g, node);
}

static char *row_name(const LmwbGraph *g, int rank) {
  if (rank == 0) return g_strdup("Emb");
  return rank > g->n_layers ? g_strdup("Logits") : g_strdup_printf("L%d", rank - 1);
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

static void draw_edge(LmwbGraphCanvas *c, cairo_t *cr, const LmwbGraphLayoutEdge *e, gboolean dim) {
  double w = e->edge >= 0 ? c->g->edges[e->edge].weight : 0;
  double rel = c->max_weight > 0 && isfinite(w) ? fabs(w) / c->max_weight : 0;
  double pen = MAX(LMWB_GRAPH_PEN_MIN, LMWB_GRAPH_PEN_MAX * rel);
  double alpha = dim ? 0.12 : 0.35 + 0.6 * rel;
  if (e->edge < 0) set_hex(cr, "#969696", dim ? 0.15 : 0.6);
  else set_hex(cr, w >= 0 ? LMWB_GRAPH_COLOR_POSITIVE : LMWB_GRAPH_COLOR_NEGATIVE, alpha);
  cairo_set_line_width(cr, pen);
  const double *p = e->points;
  cairo_move_to(cr, p[0], p[1]);
  for (int k = 1; k + 2 < e->n_points; k += 3)
    cairo_curve_to(cr, p[2 * k], p[2 * k + 1], p[2 * k + 2], p[2 * k + 3], p[2 * k + 4], p[2 * k + 5]);
  cairo_stroke(cr);
  if (e->has_arrow) {
    /* an arrowhead from the spline's end to the arrow point */
    double x0 = p[2 * (e->n_points - 1)], y0 = p[2 * (e->n_points - 1) + 1];
    double dx = e->arrow_x - x0, dy = e->arrow_y - y0, len = hypot(dx, dy);
    if (len > 0) {
      double ux = dx / len, uy = dy / len, half = MAX(2.0, pen * 0.9);
      cairo_move_to(cr, e->arrow_x, e->arrow_y);
      cairo_line_to(cr, x0 - uy * half, y0 + ux * half);
      cairo_line_to(cr, x0 + uy * half, y0 - ux * half);
      cairo_close_path(cr);
      cairo_fill(cr);
    }
  }
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

static void draw_node(LmwbGraphCanvas *c, cairo_t *cr, PangoLayout *pl, int i) {
  const LmwbGraphNode *n = &c->g->nodes[i];
  const LmwbGraphLayoutNode *ln = &c->l->nodes[i];
  double x = ln->x - ln->width / 2, y = ln->y - ln->height / 2, rgb[3];
  node_fill(n, rgb);
  rounded_rect(cr, x, y, ln->width, ln->height, 4);
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
    rounded_rect(cr, x - 3, y - 3, ln->width + 6, ln->height + 6, 6);
    set_hex(cr, "#e66100", 1);
    cairo_set_line_width(cr, 2.0);
    cairo_stroke(cr);
  }
  g_autofree char *text = lmwb_graph_canvas_node_text(c->g, i);
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  draw_text(cr, pl, text, ln->x, ln->y, ln->width - 6, PANGO_ALIGN_CENTER);
}

/* Each row's name at the left of its first node. */
static void draw_rows(LmwbGraphCanvas *c, cairo_t *cr, PangoLayout *pl, GdkRGBA *fg) {
  int n_ranks = c->g->n_layers + 2;
  g_autofree double *left = g_new(double, n_ranks), *y = g_new(double, n_ranks);
  for (int r = 0; r < n_ranks; r++) left[r] = INFINITY;
  for (int i = 0; i < c->g->n_nodes; i++) {
    int r = lmwb_graph_node_rank(c->g, i);
    if (r < 0 || r >= n_ranks) continue;
    const LmwbGraphLayoutNode *ln = &c->l->nodes[i];
    if (ln->x - ln->width / 2 < left[r]) left[r] = ln->x - ln->width / 2, y[r] = ln->y;
  }
  cairo_set_source_rgba(cr, fg->red, fg->green, fg->blue, 0.6);
  for (int r = 0; r < n_ranks; r++) {
    if (!isfinite(left[r])) continue;
    g_autofree char *name = row_name(c->g, r);
    draw_text(cr, pl, name, left[r] - 6, y[r], 40, PANGO_ALIGN_RIGHT);
  }
}

static void draw(GtkDrawingArea *da, cairo_t *cr, int W, int H, gpointer user) {
  LmwbGraphCanvas *c = LMWB_GRAPH_CANVAS(da);
  GdkRGBA fg;
  G_GNUC_BEGIN_IGNORE_DEPRECATIONS /* gtk_widget_get_color is GTK 4.10 */
  gtk_style_context_get_color(gtk_widget_get_style_context(GTK_WIDGET(c)), &fg);
  G_GNUC_END_IGNORE_DEPRECATIONS
  PangoLayout *pl = gtk_widget_create_pango_layout(GTK_WIDGET(c), NULL);
  if (!c->g || !c->l) {
    PangoFontDescription *fd = pango_font_description_from_string("Sans 11");
    pango_layout_set_font_description(pl, fd);
    pango_font_description_free(fd);
    pango_layout_set_wrap(pl, PANGO_WRAP_WORD);
    cairo_set_source_rgba(cr, fg.red, fg.green, fg.blue, 0.6);
    draw_text(cr, pl, c->message ? c->message : "", W / 2.0, H / 2.0, MIN(W - 40.0, 520.0), PANGO_ALIGN_CENTER);
    g_object_unref(pl);
    return;
  }
  View v = view_of(c);
  cairo_save(cr);
  cairo_translate(cr, v.ox, v.oy);
  cairo_scale(cr, v.s, v.s);
  cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
  PangoFontDescription *fd = pango_font_description_from_string("Sans");
  pango_font_description_set_absolute_size(fd, FONT_PT * PANGO_SCALE);
  pango_layout_set_font_description(pl, fd);
  pango_layout_set_ellipsize(pl, PANGO_ELLIPSIZE_END);
  pango_layout_set_single_paragraph_mode(pl, TRUE);
  /* text at the size it is drawn: hinting and metrics for the scaled font */
  pango_cairo_update_layout(cr, pl);
  gboolean has_sel = c->selected >= 0 && c->selected < c->g->n_nodes;
  for (int pass = 0; pass < 2; pass++)
    for (int k = 0; k < c->l->n_edges; k++) {
      const LmwbGraphLayoutEdge *e = &c->l->edges[k];
      gboolean hot = has_sel && touches(e, c->selected);
      if (pass == (hot ? 1 : 0)) draw_edge(c, cr, e, has_sel && !hot);
    }
  for (int i = 0; i < c->g->n_nodes; i++) draw_node(c, cr, pl, i);
  pango_font_description_set_absolute_size(fd, ROW_FONT_PT * PANGO_SCALE);
  pango_layout_set_font_description(pl, fd);
  draw_rows(c, cr, pl, &fg);
  pango_font_description_free(fd);
  cairo_restore(cr);
  g_object_unref(pl);
}

/* ---- input ------------------------------------------------------------------------------------ */

static void on_click(GtkGestureClick *g, int n_press, double x, double y, gpointer user) {
  LmwbGraphCanvas *c = user;
  if (n_press != 1) return;
  g_signal_emit(c, signals[SIGNAL_NODE_CLICKED], 0, lmwb_graph_canvas_node_at(c, x, y));
}

static gboolean on_scroll(GtkEventControllerScroll *s, double dx, double dy, gpointer user) {
  LmwbGraphCanvas *c = user;
  if (!c->l) return FALSE;
  double px, py;
  GdkEvent *ev = gtk_event_controller_get_current_event(GTK_EVENT_CONTROLLER(s));
  if (!ev || !gdk_event_get_position(ev, &px, &py)) px = gtk_widget_get_width(GTK_WIDGET(c)) / 2.0, py = gtk_widget_get_height(GTK_WIDGET(c)) / 2.0;
  View before = view_of(c);
  double lx = (px - before.ox) / before.s, ly = (py - before.oy) / before.s;
  c->zoom = CLAMP(c->zoom * pow(1.15, -dy), MIN_ZOOM, MAX_ZOOM);
  /* keep the layout point under the pointer where it was */
  View after = view_of(c);
  c->pan_x += px - (after.ox + lx * after.s);
  c->pan_y += py - (after.oy + ly * after.s);
  gtk_widget_queue_draw(GTK_WIDGET(c));
  return TRUE;
}

static void on_drag_begin(GtkGestureDrag *d, double x, double y, gpointer user) {
  LmwbGraphCanvas *c = user;
  c->drag_x = c->pan_x, c->drag_y = c->pan_y;
}

static void on_drag_update(GtkGestureDrag *d, double dx, double dy, gpointer user) {
  LmwbGraphCanvas *c = user;
  c->pan_x = c->drag_x + dx, c->pan_y = c->drag_y + dy;
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

void lmwb_graph_canvas_set_graph(LmwbGraphCanvas *c, const LmwbGraph *g, const LmwbGraphLayout *l, gboolean keep_view) {
  c->g = g && l ? g : NULL;
  c->l = g && l ? l : NULL;
  c->max_weight = 0;
  if (c->g)
    for (int k = 0; k < c->l->n_edges; k++) {
      int e = c->l->edges[k].edge;
      if (e >= 0 && isfinite(g->edges[e].weight)) c->max_weight = MAX(c->max_weight, fabs(g->edges[e].weight));
    }
  if (!keep_view) c->zoom = 1, c->pan_x = c->pan_y = 0;
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
  c->zoom = 1, c->pan_x = c->pan_y = 0;
  gtk_widget_queue_draw(GTK_WIDGET(c));
}

GtkWidget *lmwb_graph_canvas_new(void) { return g_object_new(LMWB_TYPE_GRAPH_CANVAS, NULL); }

static void finalize(GObject *o) {
  g_free(LMWB_GRAPH_CANVAS(o)->message);
  G_OBJECT_CLASS(lmwb_graph_canvas_parent_class)->finalize(o);
}

static void lmwb_graph_canvas_class_init(LmwbGraphCanvasClass *k) {
  G_OBJECT_CLASS(k)->finalize = finalize;
  signals[SIGNAL_NODE_CLICKED] = g_signal_new("node-clicked", G_TYPE_FROM_CLASS(k), G_SIGNAL_RUN_LAST, 0, NULL, NULL,
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
  GtkEventController *scroll = gtk_event_controller_scroll_new(GTK_EVENT_CONTROLLER_SCROLL_VERTICAL);
  g_signal_connect(scroll, "scroll", G_CALLBACK(on_scroll), c);
  gtk_widget_add_controller(GTK_WIDGET(c), scroll);
  gtk_widget_set_has_tooltip(GTK_WIDGET(c), TRUE);
  g_signal_connect(c, "query-tooltip", G_CALLBACK(on_tooltip), NULL);
}
