/* Layout, drawing and hit testing of a plot. One layout routine serves both drawing and hit
 * testing, so a tooltip always names what is drawn under the pointer. Callers hold p->lock. */
#include "ui/plot/plot_private.h"

#include <float.h>
#include <math.h>
#include <string.h>

#define PAD 10.0
#define FONT_FAMILY "sans-serif"
#define FS_TITLE 15.0
#define FS_LABEL 12.5
#define FS_TICK 11.0
#define FS_EMPTY 13.0
#define TICK_LEN 4.0
#define HIT_RADIUS 8.0
/* Above this many cells a heatmap is drawn as one scaled image instead of one rectangle each. */
#define HEATMAP_RECT_LIMIT 40000
#define HEATMAP_IMAGE_SIDE 2048

typedef struct {
  double bg[3], fg[3], muted[3], grid[3], axis[3];
} Theme;

static void theme_for(gboolean dark, Theme *t) {
  /* Light: near-black text on white. Dark: close to GTK's Adwaita dark window colours. */
  static const Theme light = {{1, 1, 1}, {0.13, 0.13, 0.13}, {0.38, 0.38, 0.38}, {0.90, 0.90, 0.90}, {0.35, 0.35, 0.35}};
  static const Theme darkt = {{0.12, 0.12, 0.13}, {0.89, 0.89, 0.88}, {0.66, 0.66, 0.66}, {0.22, 0.22, 0.23}, {0.62, 0.62, 0.62}};
  *t = dark ? darkt : light;
}

typedef struct {
  double w, h;
  double x0, y0, x1, y1; /* plot area: (x0,y0) top-left, (x1,y1) bottom-right */
  gboolean empty;
  LmwbPlotAxis xa, ya;
  /* line/scatter legend */
  gboolean legend;
  double leg_x, leg_w;
  /* bars */
  double band, bar_font;
  int bar_step;
  /* heatmap */
  double vmin, vmax;
  LmwbPlotAxis ca;
  double cbar_x;
  double cell_w, cell_h, row_font, col_font;
  int row_step, col_step;
  gboolean col_vertical;
} Layout;

/* ---- text helpers (Cairo toy API) ---- */

static void set_font(cairo_t *cr, double size, gboolean bold) {
  cairo_select_font_face(cr, FONT_FAMILY, CAIRO_FONT_SLANT_NORMAL, bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
}

static double text_w(cairo_t *cr, const char *s) {
  if (!s || !*s) return 0;
  cairo_text_extents_t e;
  cairo_text_extents(cr, s, &e);
  return e.x_advance;
}

static double font_h(cairo_t *cr) {
  cairo_font_extents_t fe;
  cairo_font_extents(cr, &fe);
  return fe.ascent + fe.descent;
}

/* halign: 0 left, 0.5 centre, 1 right of x; valign: 0 top, 0.5 middle, 1 bottom of y. */
static void draw_text(cairo_t *cr, const char *s, double x, double y, double halign, double valign) {
  if (!s || !*s) return;
  cairo_font_extents_t fe;
  cairo_font_extents(cr, &fe);
  double w = text_w(cr, s);
  double base = y + fe.ascent - valign * (fe.ascent + fe.descent);
  cairo_move_to(cr, x - halign * w, base);
  cairo_show_text(cr, s);
  cairo_new_path(cr);
}

/* s shortened with "…" to fit max_w (a new string; s itself if it fits). */
static char *ellipsize(cairo_t *cr, const char *s, double max_w) {
  if (!s) return NULL;
  if (text_w(cr, s) <= max_w) return g_strdup(s);
  glong n = g_utf8_strlen(s, -1);
  /* Binary search on the number of characters kept. */
  glong lo = 0, hi = n;
  while (lo < hi) {
    glong mid = (lo + hi + 1) / 2;
    char *head = g_utf8_substring(s, 0, mid);
    char *t = g_strconcat(head, "…", NULL);
    gboolean fits = text_w(cr, t) <= max_w;
    g_free(head);
    g_free(t);
    if (fits) lo = mid;
    else hi = mid - 1;
  }
  if (lo == 0) return g_strdup(max_w >= text_w(cr, "…") ? "…" : "");
  char *head = g_utf8_substring(s, 0, lo);
  char *t = g_strconcat(head, "…", NULL);
  g_free(head);
  return t;
}

static void set_rgb(cairo_t *cr, const double c[3]) { cairo_set_source_rgb(cr, c[0], c[1], c[2]); }

/* Short value label: 3 significant digits without exponent in 1e-3..1e4, else "1.2e5". */
static void format_value(double v, char *buf, gsize size) {
  if (!isfinite(v)) {
    g_strlcpy(buf, isnan(v) ? "NaN" : v > 0 ? "inf" : "-inf", size);
    return;
  }
  double a = fabs(v);
  if (a == 0) {
    g_strlcpy(buf, "0", size);
    return;
  }
  if (a >= 1e4 || a < 1e-3) {
    LmwbPlotAxis ax = {.min = 0, .max = a, .step = a / 100}; /* 3 mantissa digits */
    lmwb_plot_format_tick(&ax, v, buf, size);
    return;
  }
  int dec = CLAMP(2 - (int)floor(log10(a)), 0, 4);
  g_snprintf(buf, size, "%.*f", dec, v);
}

/* ---- data ranges ---- */

static gboolean point_ok(const LmwbPlot *p, double x, double y) {
  return isfinite(x) && isfinite(y) && (!p->log_y || y > 0);
}

/* Pad [lo,hi] by frac of its span (in log space for log axes); widen a single value. */
static void pad_range(double *lo, double *hi, gboolean log, double frac) {
  if (log) {
    double a = log10(*lo), b = log10(*hi);
    if (b - a < 1e-12) {
      a -= 0.3;
      b += 0.3;
    } else {
      double d = (b - a) * frac;
      a -= d;
      b += d;
    }
    *lo = pow(10, a);
    *hi = pow(10, b);
    return;
  }
  double span = *hi / 2 - *lo / 2; /* half the span: finite even near ±DBL_MAX */
  if (!(span > fmax(fabs(*lo), fabs(*hi)) * 1e-12)) {
    double d = fabs(*lo) > 0 ? fabs(*lo) * 0.1 : 1.0;
    *lo = fmax(*lo - d, -DBL_MAX);
    *hi = fmin(*hi + d, DBL_MAX);
    return;
  }
  *lo = fmax(*lo - 2 * span * frac, -DBL_MAX);
  *hi = fmin(*hi + 2 * span * frac, DBL_MAX);
}

/* Apply a user-fixed range (NaN ends stay automatic); keep it valid. */
static void apply_fixed(const double fixed[2], double *lo, double *hi, gboolean log) {
  double a = isfinite(fixed[0]) && (!log || fixed[0] > 0) ? fixed[0] : *lo;
  double b = isfinite(fixed[1]) && (!log || fixed[1] > 0) ? fixed[1] : *hi;
  if (b > a) {
    *lo = a;
    *hi = b;
  }
}

/* ---- layout ---- */

static int tick_target(double pixels, double per_tick) {
  int t = (int)(pixels / per_tick);
  return CLAMP(t, 2, 12);
}

static double max_tick_label_w(cairo_t *cr, const LmwbPlotAxis *a) {
  double m = 0;
  char buf[64];
  for (int i = 0; i < a->n; i++) {
    lmwb_plot_format_tick(a, a->ticks[i], buf, sizeof buf);
    m = fmax(m, text_w(cr, buf));
  }
  return m;
}

/* Margins shared by every kind: title above, x label below, y label at the left. */
static void base_margins(LmwbPlot *p, cairo_t *cr, double *top, double *bottom, double *left, double *right) {
  *top = *bottom = *left = *right = PAD;
  if (p->title && *p->title) {
    set_font(cr, FS_TITLE, TRUE);
    *top += font_h(cr) + 8;
  }
  set_font(cr, FS_LABEL, FALSE);
  double lh = font_h(cr);
  if (p->x_label && *p->x_label) *bottom += lh + 6;
  if (p->y_label && *p->y_label) *left += lh + 6;
}

/* x ticks for a plot area [x0, x1]: fewer ticks until the labels have room between them. */
static void fit_x_ticks(cairo_t *cr, LmwbPlotAxis *xa, double lo, double hi, gboolean log, double pw) {
  set_font(cr, FS_TICK, FALSE);
  for (int target = tick_target(pw, 90); target >= 2; target--) {
    lmwb_plot_axis_ticks(xa, lo, hi, log, target);
    double widest = max_tick_label_w(cr, xa);
    if (xa->n < 2) return;
    double spacing = pw * fabs(lmwb_plot_axis_frac(xa, xa->ticks[1]) - lmwb_plot_axis_frac(xa, xa->ticks[0]));
    if (widest + 12 <= spacing) return;
  }
}

static void layout_xy(LmwbPlot *p, cairo_t *cr, Layout *L, double top, double bottom, double left, double right) {
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  for (guint s = 0; s < p->series->len; s++) {
    GArray *xy = ((LmwbPlotSeries *)g_ptr_array_index(p->series, s))->xy;
    const double *d = (const double *)xy->data;
    for (guint i = 0; i + 1 < xy->len; i += 2) {
      if (!point_ok(p, d[i], d[i + 1])) continue;
      xlo = fmin(xlo, d[i]);
      xhi = fmax(xhi, d[i]);
      ylo = fmin(ylo, d[i + 1]);
      yhi = fmax(yhi, d[i + 1]);
    }
  }
  if (!(xhi >= xlo)) {
    L->empty = TRUE;
    L->x0 = left, L->y0 = top, L->x1 = L->w - right, L->y1 = L->h - bottom;
    return;
  }
  pad_range(&xlo, &xhi, FALSE, p->kind == LMWB_PLOT_SCATTER ? 0.05 : 0.02);
  pad_range(&ylo, &yhi, p->log_y, 0.05);
  apply_fixed(p->x_fixed, &xlo, &xhi, FALSE);
  apply_fixed(p->y_fixed, &ylo, &yhi, p->log_y);

  set_font(cr, FS_TICK, FALSE);
  double th = font_h(cr);
  bottom += TICK_LEN + 3 + th;
  double ph = fmax(L->h - top - bottom, 1);
  lmwb_plot_axis_ticks(&L->ya, ylo, yhi, p->log_y, tick_target(ph, 45));
  left += max_tick_label_w(cr, &L->ya) + TICK_LEN + 4;

  if (p->series->len > 1) {
    set_font(cr, FS_TICK, FALSE);
    double names = 0;
    for (guint s = 0; s < p->series->len; s++)
      names = fmax(names, text_w(cr, ((LmwbPlotSeries *)g_ptr_array_index(p->series, s))->name));
    L->leg_w = 20 + fmin(names, L->w * 0.22);
    L->legend = TRUE;
    right += L->leg_w + 14;
  }
  /* Room for half of the last x tick label hanging past the plot's right edge. */
  LmwbPlotAxis probe;
  lmwb_plot_axis_ticks(&probe, xlo, xhi, FALSE, 2);
  char buf[64];
  lmwb_plot_format_tick(&probe, xhi, buf, sizeof buf);
  if (!L->legend) right = fmax(right, text_w(cr, buf) / 2 + 4);

  L->x0 = left;
  L->y0 = top;
  L->x1 = fmax(L->w - right, left + 1);
  L->y1 = fmax(L->h - bottom, top + 1);
  L->leg_x = L->x1 + 14;
  fit_x_ticks(cr, &L->xa, xlo, xhi, FALSE, L->x1 - L->x0);
}

static void layout_bars(LmwbPlot *p, cairo_t *cr, Layout *L, double top, double bottom, double left, double right) {
  double lo = INFINITY, hi = -INFINITY;
  int n = p->n_bars;
  for (int i = 0; i < n; i++) {
    double v = p->bar_values[i];
    if (!isfinite(v) || (p->log_y && v <= 0)) continue;
    lo = fmin(lo, v);
    hi = fmax(hi, v);
  }
  if (n == 0 || !(hi >= lo)) {
    L->empty = TRUE;
    L->x0 = left, L->y0 = top, L->x1 = L->w - right, L->y1 = L->h - bottom;
    return;
  }
  if (p->log_y) {
    lo = pow(10, floor(log10(lo))); /* bars grow from a power of ten below the smallest */
    pad_range(&lo, &hi, TRUE, 0.0);
    hi = pow(10, log10(hi) + 0.05 * (log10(hi) - log10(lo)));
  } else {
    lo = fmin(lo, 0);
    hi = fmax(hi, 0); /* bars grow from zero */
    double half = hi / 2 - lo / 2;
    if (!(half > 0)) { /* all zero */
      hi = 1;
      half = 0.5;
    }
    if (lo < 0) lo = fmax(lo - half * 0.06, -DBL_MAX);
    if (hi > 0) hi = fmin(hi + half * 0.06, DBL_MAX);
  }

  set_font(cr, FS_TICK, FALSE);
  double th = font_h(cr);
  bottom += TICK_LEN + 3 + th;
  double ph = fmax(L->h - top - bottom, 1);
  L->band = ph / n;
  L->bar_font = CLAMP(L->band * 0.8, 7.0, FS_TICK);
  set_font(cr, L->bar_font, FALSE);
  double fh = font_h(cr);
  L->bar_step = (int)ceil((fh + 1) / L->band);
  if (L->bar_step < 1) L->bar_step = 1;

  double lab = 0, val = 0;
  char buf[64];
  for (int i = 0; i < n; i++) {
    if (p->bar_labels && p->bar_labels[i]) lab = fmax(lab, text_w(cr, p->bar_labels[i]));
    format_value(p->bar_values[i], buf, sizeof buf);
    val = fmax(val, text_w(cr, buf));
  }
  left += fmin(lab, L->w * 0.3) + 8;
  right = fmax(right, val + 8);

  L->x0 = left;
  L->y0 = top;
  L->x1 = fmax(L->w - right, left + 1);
  L->y1 = fmax(L->h - bottom, top + 1);
  fit_x_ticks(cr, &L->xa, lo, hi, p->log_y, L->x1 - L->x0);
}

static void heatmap_range(LmwbPlot *p, double *vmin, double *vmax) {
  double lo = INFINITY, hi = -INFINITY;
  gsize n = (gsize)p->rows * (gsize)p->cols;
  for (gsize i = 0; i < n; i++)
    if (isfinite(p->cells[i])) {
      lo = fmin(lo, p->cells[i]);
      hi = fmax(hi, p->cells[i]);
    }
  if (isfinite(p->vmin) && isfinite(p->vmax) && p->vmax > p->vmin) {
    *vmin = p->vmin;
    *vmax = p->vmax;
    return;
  }
  if (!(hi >= lo)) {
    *vmin = 0;
    *vmax = 1;
    return;
  }
  if (isfinite(p->vmin) && p->vmin < hi) lo = p->vmin;
  if (isfinite(p->vmax) && p->vmax > lo) hi = p->vmax;
  if (p->cmap == LMWB_PLOT_CMAP_DIVERGING) {
    double m = fmax(fabs(lo), fabs(hi)); /* white at zero */
    lo = -m;
    hi = m;
  }
  if (!(hi > lo)) {
    double d = fabs(lo) > 0 ? fabs(lo) * 0.1 : 0.5;
    lo = fmax(lo - d, -DBL_MAX);
    hi = fmin(hi + d, DBL_MAX);
  }
  *vmin = lo;
  *vmax = hi;
}

static void layout_heatmap(LmwbPlot *p, cairo_t *cr, Layout *L, double top, double bottom, double left, double right) {
  gsize n = (gsize)p->rows * (gsize)p->cols;
  gboolean any = FALSE;
  for (gsize i = 0; i < n && !any; i++) any = isfinite(p->cells[i]);
  if (!any) {
    L->empty = TRUE;
    L->x0 = left, L->y0 = top, L->x1 = L->w - right, L->y1 = L->h - bottom;
    return;
  }
  heatmap_range(p, &L->vmin, &L->vmax);

  set_font(cr, FS_TICK, FALSE);
  double fh = font_h(cr);
  double ph_est = fmax(L->h - top - bottom, 1);
  lmwb_plot_axis_ticks(&L->ca, L->vmin, L->vmax, FALSE, tick_target(ph_est, 40));
  right += 12 + 14 + TICK_LEN + 3 + max_tick_label_w(cr, &L->ca);

  if (p->row_labels) {
    double m = 0;
    for (int r = 0; r < p->rows; r++) m = fmax(m, text_w(cr, p->row_labels[r]));
    left += fmin(m, L->w * 0.3) + 6;
  }
  L->x0 = left;
  L->x1 = fmax(L->w - right, left + 1);
  L->cell_w = (L->x1 - L->x0) / p->cols;
  if (p->col_labels) {
    double m = 0;
    for (int c = 0; c < p->cols; c++) m = fmax(m, text_w(cr, p->col_labels[c]));
    L->col_font = CLAMP(L->cell_w * 0.85, 8.0, FS_TICK);
    if (m + 4 <= L->cell_w) {
      L->col_vertical = FALSE;
      L->col_font = FS_TICK;
      L->col_step = 1;
      bottom += fh + 4;
    } else {
      L->col_vertical = TRUE;
      set_font(cr, L->col_font, FALSE);
      L->col_step = MAX(1, (int)ceil((font_h(cr) + 2) / L->cell_w));
      bottom += fmin(m, L->h * 0.3) + 6;
    }
  }
  L->y0 = top;
  L->y1 = fmax(L->h - bottom, top + 1);
  L->cell_h = (L->y1 - L->y0) / p->rows;
  L->row_font = CLAMP(L->cell_h * 0.85, 8.0, FS_TICK);
  set_font(cr, L->row_font, FALSE);
  L->row_step = MAX(1, (int)ceil((font_h(cr) + 1) / L->cell_h));
  L->cbar_x = L->x1 + 12;
  lmwb_plot_axis_ticks(&L->ca, L->vmin, L->vmax, FALSE, tick_target(L->y1 - L->y0, 40));
}

static void compute_layout(LmwbPlot *p, cairo_t *cr, double w, double h, Layout *L) {
  memset(L, 0, sizeof *L);
  L->w = w;
  L->h = h;
  double top, bottom, left, right;
  base_margins(p, cr, &top, &bottom, &left, &right);
  switch (p->kind) {
  case LMWB_PLOT_LINE:
  case LMWB_PLOT_SCATTER: layout_xy(p, cr, L, top, bottom, left, right); break;
  case LMWB_PLOT_BAR: layout_bars(p, cr, L, top, bottom, left, right); break;
  case LMWB_PLOT_HEATMAP:
    if (p->rows > 0 && p->cols > 0) layout_heatmap(p, cr, L, top, bottom, left, right);
    else {
      L->empty = TRUE;
      L->x0 = left, L->y0 = top, L->x1 = w - right, L->y1 = h - bottom;
    }
    break;
  }
  if (L->x1 < L->x0 + 1) L->x1 = L->x0 + 1;
  if (L->y1 < L->y0 + 1) L->y1 = L->y0 + 1;
}

/* Data -> pixels. */
static double px_x(const Layout *L, double x) { return L->x0 + lmwb_plot_axis_frac(&L->xa, x) * (L->x1 - L->x0); }
static double px_y(const Layout *L, double y) { return L->y1 - lmwb_plot_axis_frac(&L->ya, y) * (L->y1 - L->y0); }

/* ---- drawing ---- */

static void draw_title_and_labels(LmwbPlot *p, cairo_t *cr, const Layout *L, const Theme *t) {
  set_rgb(cr, t->fg);
  if (p->title && *p->title) {
    set_font(cr, FS_TITLE, TRUE);
    char *s = ellipsize(cr, p->title, L->w - 2 * PAD);
    double tw = text_w(cr, s);
    /* Centred over the plot area, slid back inside the picture if it would stick out. */
    double cx = (L->x0 + L->x1) / 2;
    cx = CLAMP(cx, PAD + tw / 2, L->w - PAD - tw / 2);
    draw_text(cr, s, cx, PAD, 0.5, 0);
    g_free(s);
  }
  set_font(cr, FS_LABEL, FALSE);
  if (p->x_label && *p->x_label) {
    char *s = ellipsize(cr, p->x_label, L->w - 2 * PAD);
    double tw = text_w(cr, s);
    double cx = CLAMP((L->x0 + L->x1) / 2, PAD + tw / 2, L->w - PAD - tw / 2);
    draw_text(cr, s, cx, L->h - PAD, 0.5, 1);
    g_free(s);
  }
  if (p->y_label && *p->y_label) {
    char *s = ellipsize(cr, p->y_label, fmax(L->y1 - L->y0, 2 * PAD));
    double tw = text_w(cr, s);
    double cy = CLAMP((L->y0 + L->y1) / 2, PAD + tw / 2, L->h - PAD - tw / 2);
    cairo_save(cr);
    cairo_translate(cr, PAD, cy);
    cairo_rotate(cr, -G_PI / 2);
    draw_text(cr, s, 0, 0, 0.5, 0);
    cairo_restore(cr);
    g_free(s);
  }
}

static void draw_empty(cairo_t *cr, const Layout *L, const Theme *t) {
  cairo_set_line_width(cr, 1);
  set_rgb(cr, t->grid);
  cairo_rectangle(cr, floor(L->x0) + 0.5, floor(L->y0) + 0.5, floor(L->x1 - L->x0), floor(L->y1 - L->y0));
  cairo_stroke(cr);
  set_rgb(cr, t->muted);
  set_font(cr, FS_EMPTY, FALSE);
  draw_text(cr, "no data", (L->x0 + L->x1) / 2, (L->y0 + L->y1) / 2, 0.5, 0.5);
}

/* Gridlines, axis lines, ticks and tick labels. y ticks only when draw_y (bars have categories). */
static void draw_axes(cairo_t *cr, const Layout *L, const Theme *t, gboolean draw_y) {
  char buf[64];
  cairo_set_line_width(cr, 1);
  set_rgb(cr, t->grid);
  for (int i = 0; i < L->xa.n; i++) {
    double x = floor(px_x(L, L->xa.ticks[i])) + 0.5;
    cairo_move_to(cr, x, L->y0);
    cairo_line_to(cr, x, L->y1);
  }
  if (draw_y)
    for (int i = 0; i < L->ya.n; i++) {
      double y = floor(px_y(L, L->ya.ticks[i])) + 0.5;
      cairo_move_to(cr, L->x0, y);
      cairo_line_to(cr, L->x1, y);
    }
  cairo_stroke(cr);

  set_rgb(cr, t->axis);
  double ax = floor(L->x0) + 0.5, ay = floor(L->y1) + 0.5;
  cairo_move_to(cr, ax, L->y0);
  cairo_line_to(cr, ax, ay);
  cairo_line_to(cr, L->x1, ay);
  for (int i = 0; i < L->xa.n; i++) {
    double x = floor(px_x(L, L->xa.ticks[i])) + 0.5;
    cairo_move_to(cr, x, ay);
    cairo_line_to(cr, x, ay + TICK_LEN);
  }
  if (draw_y)
    for (int i = 0; i < L->ya.n; i++) {
      double y = floor(px_y(L, L->ya.ticks[i])) + 0.5;
      cairo_move_to(cr, ax, y);
      cairo_line_to(cr, ax - TICK_LEN, y);
    }
  cairo_stroke(cr);

  set_rgb(cr, t->fg);
  set_font(cr, FS_TICK, FALSE);
  for (int i = 0; i < L->xa.n; i++) {
    lmwb_plot_format_tick(&L->xa, L->xa.ticks[i], buf, sizeof buf);
    draw_text(cr, buf, px_x(L, L->xa.ticks[i]), ay + TICK_LEN + 3, 0.5, 0);
  }
  if (draw_y)
    for (int i = 0; i < L->ya.n; i++) {
      lmwb_plot_format_tick(&L->ya, L->ya.ticks[i], buf, sizeof buf);
      draw_text(cr, buf, ax - TICK_LEN - 4, px_y(L, L->ya.ticks[i]), 1, 0.5);
    }
}

static void draw_xy(LmwbPlot *p, cairo_t *cr, const Layout *L, const Theme *t) {
  draw_axes(cr, L, t, TRUE);
  cairo_save(cr);
  cairo_rectangle(cr, L->x0, L->y0 - 4, L->x1 - L->x0 + 4, L->y1 - L->y0 + 4); /* room for markers at the edge */
  cairo_clip(cr);
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
  for (guint s = 0; s < p->series->len; s++) {
    GArray *xy = ((LmwbPlotSeries *)g_ptr_array_index(p->series, s))->xy;
    const double *d = (const double *)xy->data;
    guint n = xy->len / 2;
    double rgb[3];
    lmwb_plot_palette((int)s, p->dark, rgb);
    set_rgb(cr, rgb);
    guint good = 0;
    for (guint i = 0; i < n; i++) good += point_ok(p, d[2 * i], d[2 * i + 1]);
    if (p->kind == LMWB_PLOT_LINE) {
      gboolean pen = FALSE;
      for (guint i = 0; i < n; i++) {
        double x = d[2 * i], y = d[2 * i + 1];
        if (!point_ok(p, x, y)) { /* a gap in the data is a gap in the line */
          pen = FALSE;
          continue;
        }
        if (pen) cairo_line_to(cr, px_x(L, x), px_y(L, y));
        else cairo_move_to(cr, px_x(L, x), px_y(L, y));
        pen = TRUE;
      }
      cairo_set_line_width(cr, 2);
      cairo_stroke(cr);
    }
    /* Markers: always for scatter; for lines when points are far apart (or alone). */
    gboolean markers = p->kind == LMWB_PLOT_SCATTER || good <= 1 || (L->x1 - L->x0) / good > 12;
    if (!markers) continue;
    double r = p->kind == LMWB_PLOT_SCATTER ? (good > 2000 ? 2.0 : 3.5) : 3.0;
    double alpha = p->kind == LMWB_PLOT_LINE ? 1.0 : good > 2000 ? 0.5 : 0.85;
    cairo_set_source_rgba(cr, rgb[0], rgb[1], rgb[2], alpha);
    for (guint i = 0; i < n; i++) {
      double x = d[2 * i], y = d[2 * i + 1];
      if (!point_ok(p, x, y)) continue;
      cairo_new_sub_path(cr);
      cairo_arc(cr, px_x(L, x), px_y(L, y), r, 0, 2 * G_PI);
    }
    cairo_fill(cr);
  }
  cairo_restore(cr);

  if (L->legend) {
    set_font(cr, FS_TICK, FALSE);
    double rh = font_h(cr) + 5;
    double y = L->y0 + 2;
    for (guint s = 0; s < p->series->len && y + rh <= L->h - PAD; s++, y += rh) {
      double rgb[3];
      lmwb_plot_palette((int)s, p->dark, rgb);
      set_rgb(cr, rgb);
      cairo_set_line_width(cr, 3);
      cairo_move_to(cr, L->leg_x, y + rh / 2);
      cairo_line_to(cr, L->leg_x + 14, y + rh / 2);
      cairo_stroke(cr);
      set_rgb(cr, t->fg);
      char *name = ellipsize(cr, ((LmwbPlotSeries *)g_ptr_array_index(p->series, s))->name, L->leg_w - 20);
      draw_text(cr, name, L->leg_x + 20, y + rh / 2, 0, 0.5);
      g_free(name);
    }
  }
}

static void draw_bars(LmwbPlot *p, cairo_t *cr, const Layout *L, const Theme *t) {
  draw_axes(cr, L, t, FALSE);
  double base = p->log_y ? L->xa.min : 0;
  double bx = px_x(L, base);
  double pos[3], neg[3];
  lmwb_plot_palette(0, p->dark, pos);
  lmwb_plot_palette(1, p->dark, neg);
  char buf[64];
  for (int i = 0; i < p->n_bars; i++) {
    double v = p->bar_values[i];
    double yc = L->y0 + (i + 0.5) * L->band;
    double bh = fmax(L->band * 0.75, fmin(L->band, 1.0));
    gboolean drawable = isfinite(v) && (!p->log_y || v > 0);
    double ex = bx;
    if (drawable) {
      ex = px_x(L, v);
      ex = CLAMP(ex, L->x0, L->x1);
      set_rgb(cr, v >= base ? pos : neg);
      cairo_rectangle(cr, fmin(bx, ex), yc - bh / 2, fabs(ex - bx), bh);
      cairo_fill(cr);
    }
    if (i % L->bar_step != 0) continue;
    set_font(cr, L->bar_font, FALSE);
    set_rgb(cr, t->fg);
    if (p->bar_labels && p->bar_labels[i]) {
      char *s = ellipsize(cr, p->bar_labels[i], L->x0 - PAD - 8 - (p->y_label && *p->y_label ? 20 : 0));
      draw_text(cr, s, L->x0 - 6, yc, 1, 0.5);
      g_free(s);
    }
    if (L->band < 6) continue; /* too thin for value labels */
    format_value(v, buf, sizeof buf);
    double tw = text_w(cr, buf);
    if (!drawable || v >= base) {
      draw_text(cr, buf, ex + 4, yc, 0, 0.5); /* the right margin was sized for it */
    } else if (ex - 4 - tw >= L->x0 + 2) {
      draw_text(cr, buf, ex - 4, yc, 1, 0.5);
    } else {
      cairo_set_source_rgb(cr, 1, 1, 1); /* inside the (dark enough) negative bar */
      draw_text(cr, buf, ex + 4, yc, 0, 0.5);
    }
  }
  /* The zero line over the bars when some are negative. */
  if (!p->log_y && L->xa.min < 0) {
    set_rgb(cr, t->axis);
    cairo_set_line_width(cr, 1);
    cairo_move_to(cr, floor(bx) + 0.5, L->y0);
    cairo_line_to(cr, floor(bx) + 0.5, L->y1);
    cairo_stroke(cr);
  }
}

static double cell_t(const Layout *L, double v) {
  return isfinite(v) ? (v / 2 - L->vmin / 2) / (L->vmax / 2 - L->vmin / 2) : NAN;
}

static void draw_heatmap_image(LmwbPlot *p, cairo_t *cr, const Layout *L, const Theme *t) {
  int iw = MIN(p->cols, HEATMAP_IMAGE_SIDE), ih = MIN(p->rows, HEATMAP_IMAGE_SIDE);
  cairo_surface_t *img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, iw, ih);
  if (cairo_surface_status(img) != CAIRO_STATUS_SUCCESS) {
    cairo_surface_destroy(img);
    return;
  }
  cairo_surface_flush(img);
  unsigned char *data = cairo_image_surface_get_data(img);
  int stride = cairo_image_surface_get_stride(img);
  for (int y = 0; y < ih; y++) {
    guint32 *row = (guint32 *)(data + (gsize)y * (gsize)stride);
    int r = (int)((gint64)y * p->rows / ih);
    for (int x = 0; x < iw; x++) {
      int c = (int)((gint64)x * p->cols / iw);
      double v = p->cells[(gsize)r * (gsize)p->cols + (gsize)c], rgb[3];
      if (isfinite(v)) lmwb_plot_colormap(p->cmap, cell_t(L, v), rgb);
      else memcpy(rgb, t->grid, sizeof rgb);
      row[x] = ((guint32)(rgb[0] * 255 + 0.5) << 16) | ((guint32)(rgb[1] * 255 + 0.5) << 8) | (guint32)(rgb[2] * 255 + 0.5);
    }
  }
  cairo_surface_mark_dirty(img);
  cairo_save(cr);
  cairo_rectangle(cr, L->x0, L->y0, L->x1 - L->x0, L->y1 - L->y0);
  cairo_clip(cr);
  cairo_translate(cr, L->x0, L->y0);
  cairo_scale(cr, (L->x1 - L->x0) / iw, (L->y1 - L->y0) / ih);
  cairo_set_source_surface(cr, img, 0, 0);
  cairo_pattern_set_filter(cairo_get_source(cr), CAIRO_FILTER_NEAREST);
  cairo_paint(cr);
  cairo_restore(cr);
  cairo_surface_destroy(img);
}

static void draw_heatmap(LmwbPlot *p, cairo_t *cr, const Layout *L, const Theme *t) {
  gsize ncells = (gsize)p->rows * (gsize)p->cols;
  if (ncells > HEATMAP_RECT_LIMIT) {
    draw_heatmap_image(p, cr, L, t);
  } else {
    cairo_save(cr);
    cairo_set_antialias(cr, CAIRO_ANTIALIAS_NONE); /* no seams between neighbouring cells */
    for (int r = 0; r < p->rows; r++) {
      double ya = round(L->y0 + r * L->cell_h), yb = round(L->y0 + (r + 1) * L->cell_h);
      for (int c = 0; c < p->cols; c++) {
        double xa = round(L->x0 + c * L->cell_w), xb = round(L->x0 + (c + 1) * L->cell_w);
        double v = p->cells[(gsize)r * (gsize)p->cols + (gsize)c], rgb[3];
        if (isfinite(v)) lmwb_plot_colormap(p->cmap, cell_t(L, v), rgb);
        else memcpy(rgb, t->grid, sizeof rgb);
        set_rgb(cr, rgb);
        cairo_rectangle(cr, xa, ya, fmax(xb - xa, 1), fmax(yb - ya, 1));
        cairo_fill(cr);
      }
    }
    cairo_restore(cr);
    /* Cell text where it fits, black or white by the cell's luminance. */
    double fs = fmin(FS_TICK, L->cell_h * 0.55);
    if (p->cell_text && fs >= 7) {
      set_font(cr, fs, FALSE);
      for (int r = 0; r < p->rows; r++)
        for (int c = 0; c < p->cols; c++) {
          gsize k = (gsize)r * (gsize)p->cols + (gsize)c;
          const char *s = p->cell_text[k];
          if (!s || !*s || text_w(cr, s) > L->cell_w - 4) continue;
          double rgb[3];
          if (isfinite(p->cells[k])) lmwb_plot_colormap(p->cmap, cell_t(L, p->cells[k]), rgb);
          else memcpy(rgb, t->grid, sizeof rgb);
          double lum = lmwb_plot_luminance(rgb);
          if (lum > 0.33) cairo_set_source_rgb(cr, 0, 0, 0);
          else cairo_set_source_rgb(cr, 1, 1, 1);
          draw_text(cr, s, L->x0 + (c + 0.5) * L->cell_w, L->y0 + (r + 0.5) * L->cell_h, 0.5, 0.5);
        }
    }
  }

  set_rgb(cr, t->fg);
  if (p->row_labels) {
    set_font(cr, L->row_font, FALSE);
    for (int r = 0; r < p->rows; r += L->row_step) {
      char *s = ellipsize(cr, p->row_labels[r], L->x0 - PAD - 6 - (p->y_label && *p->y_label ? 20 : 0));
      draw_text(cr, s, L->x0 - 6, L->y0 + (r + 0.5) * L->cell_h, 1, 0.5);
      g_free(s);
    }
  }
  if (p->col_labels) {
    set_font(cr, L->col_font, FALSE);
    for (int c = 0; c < p->cols; c += L->col_step) {
      double cx = L->x0 + (c + 0.5) * L->cell_w;
      if (!L->col_vertical) {
        draw_text(cr, p->col_labels[c], cx, L->y1 + 4, 0.5, 0);
        continue;
      }
      /* Reads bottom to top, ending just under the grid. */
      char *s = ellipsize(cr, p->col_labels[c], L->h * 0.3);
      cairo_save(cr);
      cairo_translate(cr, cx, L->y1 + 5);
      cairo_rotate(cr, -G_PI / 2);
      draw_text(cr, s, 0, 0, 1, 0.5);
      cairo_restore(cr);
      g_free(s);
    }
  }

  /* Colour bar: the map as a gradient from vmin (bottom) to vmax (top), with ticks. */
  double cx0 = L->cbar_x, cw = 14;
  cairo_pattern_t *g = cairo_pattern_create_linear(0, L->y1, 0, L->y0);
  for (int i = 0; i <= 20; i++) {
    double rgb[3];
    lmwb_plot_colormap(p->cmap, i / 20.0, rgb);
    cairo_pattern_add_color_stop_rgb(g, i / 20.0, rgb[0], rgb[1], rgb[2]);
  }
  cairo_rectangle(cr, cx0, L->y0, cw, L->y1 - L->y0);
  cairo_set_source(cr, g);
  cairo_fill(cr);
  cairo_pattern_destroy(g);
  set_rgb(cr, t->axis);
  cairo_set_line_width(cr, 1);
  cairo_rectangle(cr, floor(cx0) + 0.5, floor(L->y0) + 0.5, cw, floor(L->y1 - L->y0));
  char buf[64];
  for (int i = 0; i < L->ca.n; i++) {
    double y = floor(L->y1 - lmwb_plot_axis_frac(&L->ca, L->ca.ticks[i]) * (L->y1 - L->y0)) + 0.5;
    cairo_move_to(cr, cx0 + cw, y);
    cairo_line_to(cr, cx0 + cw + TICK_LEN, y);
  }
  cairo_stroke(cr);
  set_rgb(cr, t->fg);
  set_font(cr, FS_TICK, FALSE);
  for (int i = 0; i < L->ca.n; i++) {
    lmwb_plot_format_tick(&L->ca, L->ca.ticks[i], buf, sizeof buf);
    double y = L->y1 - lmwb_plot_axis_frac(&L->ca, L->ca.ticks[i]) * (L->y1 - L->y0);
    draw_text(cr, buf, cx0 + cw + TICK_LEN + 3, y, 0, 0.5);
  }
}

void lmwb_plot_draw(LmwbPlot *p, cairo_t *cr, double width, double height) {
  if (!p || !cr || cairo_status(cr) != CAIRO_STATUS_SUCCESS) return;
  if (!(width >= 1) || !(height >= 1) || !isfinite(width) || !isfinite(height)) return;
  g_mutex_lock(&p->lock);
  cairo_save(cr);
  cairo_new_path(cr);
  cairo_rectangle(cr, 0, 0, width, height);
  cairo_clip(cr);
  Theme t;
  theme_for(p->dark, &t);
  set_rgb(cr, t.bg);
  cairo_paint(cr);

  Layout L;
  compute_layout(p, cr, width, height, &L);
  draw_title_and_labels(p, cr, &L, &t);
  if (L.empty) draw_empty(cr, &L, &t);
  else if (p->kind == LMWB_PLOT_BAR) draw_bars(p, cr, &L, &t);
  else if (p->kind == LMWB_PLOT_HEATMAP) draw_heatmap(p, cr, &L, &t);
  else draw_xy(p, cr, &L, &t);
  cairo_restore(cr);
  g_mutex_unlock(&p->lock);
}

/* ---- hit testing ---- */

gboolean lmwb_plot_hit(LmwbPlot *p, double width, double height, double x, double y, LmwbPlotHit *hit) {
  if (!p || !hit || !(width >= 1) || !(height >= 1) || !isfinite(x) || !isfinite(y)) return FALSE;
  *hit = (LmwbPlotHit){.series = -1, .index = -1, .row = -1, .col = -1, .x = NAN, .y = NAN, .value = NAN};
  gboolean found = FALSE;
  g_mutex_lock(&p->lock);
  if (!p->hit_layout || p->hit_version != p->version || p->hit_w != width || p->hit_h != height) {
    /* Text is measured on a scratch surface: the same toy-font metrics the drawing uses. */
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, 1, 1);
    cairo_t *cr = cairo_create(s);
    if (!p->hit_layout) p->hit_layout = g_new0(Layout, 1);
    compute_layout(p, cr, width, height, p->hit_layout);
    p->hit_version = p->version;
    p->hit_w = width;
    p->hit_h = height;
    cairo_destroy(cr);
    cairo_surface_destroy(s);
  }
  const Layout L = *(const Layout *)p->hit_layout;
  hit->kind = p->kind;
  if (L.empty) {
    /* nothing drawn, nothing to hit */
  } else if (p->kind == LMWB_PLOT_HEATMAP) {
    if (x >= L.x0 && x < L.x1 && y >= L.y0 && y < L.y1) {
      int c = (int)((x - L.x0) / L.cell_w), r = (int)((y - L.y0) / L.cell_h);
      c = CLAMP(c, 0, p->cols - 1);
      r = CLAMP(r, 0, p->rows - 1);
      hit->row = r;
      hit->col = c;
      hit->value = p->cells[(gsize)r * (gsize)p->cols + (gsize)c];
      found = TRUE;
    }
  } else if (p->kind == LMWB_PLOT_BAR) {
    /* The whole row counts, label included: easier to point at than a short bar. */
    if (y >= L.y0 && y < L.y1 && x >= PAD && x <= width - PAD) {
      int i = (int)((y - L.y0) / L.band);
      if (i >= 0 && i < p->n_bars) {
        hit->index = i;
        hit->value = p->bar_values[i];
        found = TRUE;
      }
    }
  } else if (x >= L.x0 - HIT_RADIUS && x <= L.x1 + HIT_RADIUS && y >= L.y0 - HIT_RADIUS && y <= L.y1 + HIT_RADIUS) {
    double best = HIT_RADIUS * HIT_RADIUS;
    for (guint si = 0; si < p->series->len; si++) {
      GArray *xy = ((LmwbPlotSeries *)g_ptr_array_index(p->series, si))->xy;
      const double *d = (const double *)xy->data;
      for (guint i = 0; i + 1 < xy->len; i += 2) {
        if (!point_ok(p, d[i], d[i + 1])) continue;
        double dx = px_x(&L, d[i]) - x, dy = px_y(&L, d[i + 1]) - y;
        double d2 = dx * dx + dy * dy;
        if (d2 <= best) {
          best = d2;
          hit->series = (int)si;
          hit->index = (int)(i / 2);
          hit->x = d[i];
          hit->y = hit->value = d[i + 1];
          found = TRUE;
        }
      }
    }
  }
  g_mutex_unlock(&p->lock);
  return found;
}

char *lmwb_plot_hit_describe(LmwbPlot *p, const LmwbPlotHit *hit) {
  if (!p || !hit) return NULL;
  char v[64], a[64];
  char *out = NULL;
  g_mutex_lock(&p->lock);
  if ((hit->kind == LMWB_PLOT_LINE || hit->kind == LMWB_PLOT_SCATTER) && hit->series >= 0 &&
      (guint)hit->series < p->series->len) {
    const char *name = ((LmwbPlotSeries *)g_ptr_array_index(p->series, hit->series))->name;
    g_snprintf(a, sizeof a, "%.6g", hit->x);
    g_snprintf(v, sizeof v, "%.6g", hit->y);
    out = g_strdup_printf("%s%sx=%s, y=%s", name, *name ? ": " : "", a, v);
  } else if (hit->kind == LMWB_PLOT_BAR && hit->index >= 0 && hit->index < p->n_bars) {
    const char *label = p->bar_labels && p->bar_labels[hit->index] ? p->bar_labels[hit->index] : "";
    g_snprintf(v, sizeof v, "%.6g", p->bar_values[hit->index]);
    out = *label ? g_strdup_printf("%s: %s", label, v) : g_strdup_printf("#%d: %s", hit->index, v);
  } else if (hit->kind == LMWB_PLOT_HEATMAP && hit->row >= 0 && hit->row < p->rows && hit->col >= 0 && hit->col < p->cols) {
    gsize k = (gsize)hit->row * (gsize)p->cols + (gsize)hit->col;
    const char *rl = p->row_labels && p->row_labels[hit->row] ? p->row_labels[hit->row] : NULL;
    const char *cl = p->col_labels && p->col_labels[hit->col] ? p->col_labels[hit->col] : NULL;
    char rb[32], cb[32];
    g_snprintf(rb, sizeof rb, "row %d", hit->row);
    g_snprintf(cb, sizeof cb, "col %d", hit->col);
    g_snprintf(v, sizeof v, "%.6g", p->cells[k]);
    const char *txt = p->cell_text && p->cell_text[k] ? p->cell_text[k] : NULL;
    out = g_strdup_printf("%s, %s: %s%s%s%s", rl ? rl : rb, cl ? cl : cb, v, txt ? " (" : "", txt ? txt : "", txt ? ")" : "");
  }
  g_mutex_unlock(&p->lock);
  return out;
}
