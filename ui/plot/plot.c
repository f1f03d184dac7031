/* The plot model (data, labels, theme) and saving to PNG/SVG/PDF. Drawing is in plot_draw.c. */
#include "ui/plot/plot_private.h"

#include "app/core/atomic_file.h"
#include "app/core/errors.h"

#include <cairo-pdf.h>
#include <cairo-svg.h>
#include <math.h>
#include <string.h>

LmwbPlot *lmwb_plot_new(LmwbPlotKind kind, const char *title, const char *x_label, const char *y_label) {
  LmwbPlot *p = g_new0(LmwbPlot, 1);
  g_mutex_init(&p->lock);
  p->kind = kind <= LMWB_PLOT_HEATMAP ? kind : LMWB_PLOT_LINE;
  p->title = lmwb_plot_printable(title);
  p->x_label = lmwb_plot_printable(x_label);
  p->y_label = lmwb_plot_printable(y_label);
  p->x_fixed[0] = p->x_fixed[1] = p->y_fixed[0] = p->y_fixed[1] = NAN;
  p->vmin = p->vmax = NAN;
  p->series = g_ptr_array_new();
  return p;
}

static void free_strv_n(char **v, gsize n) {
  if (!v) return;
  for (gsize i = 0; i < n; i++) g_free(v[i]);
  g_free(v);
}

static void clear_bars(LmwbPlot *p) {
  free_strv_n(p->bar_labels, (gsize)p->n_bars);
  g_free(p->bar_values);
  p->bar_labels = NULL;
  p->bar_values = NULL;
  p->n_bars = 0;
}

static void clear_heatmap(LmwbPlot *p) {
  gsize cells = (gsize)p->rows * (gsize)p->cols;
  g_free(p->cells);
  free_strv_n(p->cell_text, cells);
  free_strv_n(p->row_labels, (gsize)p->rows);
  free_strv_n(p->col_labels, (gsize)p->cols);
  p->cells = NULL;
  p->cell_text = p->row_labels = p->col_labels = NULL;
  p->rows = p->cols = 0;
}

void lmwb_plot_free(LmwbPlot *p) {
  if (!p) return;
  for (guint i = 0; i < p->series->len; i++) {
    LmwbPlotSeries *s = g_ptr_array_index(p->series, i);
    g_free(s->name);
    g_array_unref(s->xy);
    g_free(s);
  }
  g_ptr_array_unref(p->series);
  clear_bars(p);
  clear_heatmap(p);
  g_free(p->title);
  g_free(p->x_label);
  g_free(p->y_label);
  g_free(p->hit_layout);
  g_mutex_clear(&p->lock);
  g_free(p);
}

LmwbPlotKind lmwb_plot_kind(LmwbPlot *p) {
  g_mutex_lock(&p->lock);
  LmwbPlotKind k = p->kind;
  g_mutex_unlock(&p->lock);
  return k;
}

void lmwb_plot_set_title(LmwbPlot *p, const char *title) {
  char *t = lmwb_plot_printable(title);
  g_mutex_lock(&p->lock);
  g_free(p->title);
  p->title = t;
  p->version++;
  g_mutex_unlock(&p->lock);
}

void lmwb_plot_set_labels(LmwbPlot *p, const char *x_label, const char *y_label) {
  char *x = lmwb_plot_printable(x_label), *y = lmwb_plot_printable(y_label);
  g_mutex_lock(&p->lock);
  g_free(p->x_label);
  g_free(p->y_label);
  p->x_label = x;
  p->y_label = y;
  p->version++;
  g_mutex_unlock(&p->lock);
}

int lmwb_plot_add_series(LmwbPlot *p, const char *name) {
  LmwbPlotSeries *s = g_new0(LmwbPlotSeries, 1);
  s->name = lmwb_plot_printable(name ? name : "");
  s->xy = g_array_new(FALSE, FALSE, sizeof(double));
  g_mutex_lock(&p->lock);
  g_ptr_array_add(p->series, s);
  int idx = (int)p->series->len - 1;
  p->version++;
  g_mutex_unlock(&p->lock);
  return idx;
}

int lmwb_plot_series_count(LmwbPlot *p) {
  g_mutex_lock(&p->lock);
  int n = (int)p->series->len;
  g_mutex_unlock(&p->lock);
  return n;
}

gsize lmwb_plot_series_length(LmwbPlot *p, int series) {
  gsize n = 0;
  g_mutex_lock(&p->lock);
  if (series >= 0 && (guint)series < p->series->len)
    n = ((LmwbPlotSeries *)g_ptr_array_index(p->series, series))->xy->len / 2;
  g_mutex_unlock(&p->lock);
  return n;
}

void lmwb_plot_append(LmwbPlot *p, int series, double x, double y) {
  double xy[2] = {x, y};
  g_mutex_lock(&p->lock);
  if (series >= 0 && (guint)series < p->series->len) {
    g_array_append_vals(((LmwbPlotSeries *)g_ptr_array_index(p->series, series))->xy, xy, 2);
    p->version++;
  }
  g_mutex_unlock(&p->lock);
}

void lmwb_plot_clear_points(LmwbPlot *p) {
  g_mutex_lock(&p->lock);
  for (guint i = 0; i < p->series->len; i++) g_array_set_size(((LmwbPlotSeries *)g_ptr_array_index(p->series, i))->xy, 0);
  p->version++;
  g_mutex_unlock(&p->lock);
}

static char **copy_labels(const char *const *src, gsize n) {
  if (!src) return NULL;
  char **out = g_new0(char *, n);
  for (gsize i = 0; i < n; i++) out[i] = lmwb_plot_printable(src[i]);
  return out;
}

gboolean lmwb_plot_set_bars(LmwbPlot *p, int n, const char *const *labels, const double *values) {
  gboolean ok = n >= 0 && n <= LMWB_PLOT_MAX_BARS && (values || n == 0);
  char **l = NULL;
  double *v = NULL;
  if (ok && n > 0) {
    l = copy_labels(labels, (gsize)n);
    v = g_memdup2(values, sizeof(double) * (gsize)n);
  }
  g_mutex_lock(&p->lock);
  clear_bars(p);
  p->kind = LMWB_PLOT_BAR;
  if (ok) {
    p->n_bars = n;
    p->bar_labels = l;
    p->bar_values = v;
  }
  p->version++;
  g_mutex_unlock(&p->lock);
  return ok;
}

gboolean lmwb_plot_set_heatmap(LmwbPlot *p, int rows, int cols, const double *values, const char *const *cell_text,
                               const char *const *row_labels, const char *const *col_labels, double vmin, double vmax) {
  gboolean ok = rows > 0 && cols > 0 && values && (gint64)rows * (gint64)cols <= LMWB_PLOT_MAX_CELLS;
  double *cells = NULL;
  char **ct = NULL, **rl = NULL, **cl = NULL;
  if (ok) {
    gsize n = (gsize)rows * (gsize)cols;
    cells = g_memdup2(values, sizeof(double) * n);
    ct = copy_labels(cell_text, n);
    rl = copy_labels(row_labels, (gsize)rows);
    cl = copy_labels(col_labels, (gsize)cols);
  }
  g_mutex_lock(&p->lock);
  clear_heatmap(p);
  p->kind = LMWB_PLOT_HEATMAP;
  if (ok) {
    p->rows = rows;
    p->cols = cols;
    p->cells = cells;
    p->cell_text = ct;
    p->row_labels = rl;
    p->col_labels = cl;
    p->vmin = vmin;
    p->vmax = vmax;
  }
  p->version++;
  g_mutex_unlock(&p->lock);
  return ok;
}

void lmwb_plot_set_colormap(LmwbPlot *p, LmwbPlotColormap cmap) {
  g_mutex_lock(&p->lock);
  p->cmap = cmap == LMWB_PLOT_CMAP_DIVERGING ? cmap : LMWB_PLOT_CMAP_VIRIDIS;
  p->version++;
  g_mutex_unlock(&p->lock);
}

void lmwb_plot_set_log_y(LmwbPlot *p, gboolean on) {
  g_mutex_lock(&p->lock);
  p->log_y = on != FALSE;
  p->version++;
  g_mutex_unlock(&p->lock);
}

void lmwb_plot_set_dark(LmwbPlot *p, gboolean dark) {
  g_mutex_lock(&p->lock);
  p->dark = dark != FALSE;
  p->version++;
  g_mutex_unlock(&p->lock);
}

void lmwb_plot_set_x_range(LmwbPlot *p, double min, double max) {
  g_mutex_lock(&p->lock);
  p->x_fixed[0] = min;
  p->x_fixed[1] = max;
  p->version++;
  g_mutex_unlock(&p->lock);
}

void lmwb_plot_set_y_range(LmwbPlot *p, double min, double max) {
  g_mutex_lock(&p->lock);
  p->y_fixed[0] = min;
  p->y_fixed[1] = max;
  p->version++;
  g_mutex_unlock(&p->lock);
}

guint64 lmwb_plot_version(LmwbPlot *p) {
  g_mutex_lock(&p->lock);
  guint64 v = p->version;
  g_mutex_unlock(&p->lock);
  return v;
}

/* ---- saving ---- */

static cairo_status_t append_bytes(void *closure, const unsigned char *data, unsigned int length) {
  g_byte_array_append(closure, data, length);
  return CAIRO_STATUS_SUCCESS;
}

static gboolean check_size(const char *path, int width, int height, GError **error) {
  if (width < 1 || height < 1 || width > LMWB_PLOT_MAX_SIDE || height > LMWB_PLOT_MAX_SIDE) {
    lmwb_input_error(error, "%s: plot size %d×%d is outside 1..%d pixels", path ? path : "(null)", width, height,
                     LMWB_PLOT_MAX_SIDE);
    return FALSE;
  }
  if (!path || !*path) {
    lmwb_input_error(error, "plot: no output file name given");
    return FALSE;
  }
  return TRUE;
}

/* Temp file in the same folder, fsync, rename (app/core/atomic_file.h): a reader never sees
 * half a plot, and a failed save leaves an older file in place. */
static gboolean write_atomic(const char *path, GByteArray *bytes, GError **error) {
  return lmwb_file_write_atomic(path, bytes->data, bytes->len, error);
}

static gboolean cairo_failed(const char *path, cairo_status_t st, GError **error) {
  g_set_error(error, LMWB_ERROR, LMWB_ERROR_FAILED, "%s: cannot render plot: %s", path, cairo_status_to_string(st));
  return FALSE;
}

gboolean lmwb_plot_save_png(LmwbPlot *p, const char *path, int width, int height, GError **error) {
  if (!check_size(path, width, height, error)) return FALSE;
  cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, width, height);
  cairo_status_t st = cairo_surface_status(s);
  if (st != CAIRO_STATUS_SUCCESS) {
    cairo_surface_destroy(s);
    return cairo_failed(path, st, error);
  }
  cairo_t *cr = cairo_create(s);
  lmwb_plot_draw(p, cr, width, height);
  st = cairo_status(cr);
  cairo_destroy(cr);
  GByteArray *bytes = g_byte_array_new();
  if (st == CAIRO_STATUS_SUCCESS) st = cairo_surface_write_to_png_stream(s, append_bytes, bytes);
  cairo_surface_destroy(s);
  gboolean ok = st == CAIRO_STATUS_SUCCESS ? write_atomic(path, bytes, error) : cairo_failed(path, st, error);
  g_byte_array_unref(bytes);
  return ok;
}

typedef cairo_surface_t *(*StreamSurfaceNew)(cairo_write_func_t, void *, double, double);

static gboolean save_vector(LmwbPlot *p, const char *path, int width, int height, StreamSurfaceNew make,
                            GError **error) {
  if (!check_size(path, width, height, error)) return FALSE;
  GByteArray *bytes = g_byte_array_new();
  cairo_surface_t *s = make(append_bytes, bytes, width, height);
  cairo_status_t st = cairo_surface_status(s);
  if (st == CAIRO_STATUS_SUCCESS) {
    cairo_t *cr = cairo_create(s);
    lmwb_plot_draw(p, cr, width, height);
    st = cairo_status(cr);
    cairo_destroy(cr);
    cairo_surface_finish(s); /* flushes the document into `bytes` */
    if (st == CAIRO_STATUS_SUCCESS) st = cairo_surface_status(s);
  }
  cairo_surface_destroy(s);
  gboolean ok = st == CAIRO_STATUS_SUCCESS ? write_atomic(path, bytes, error) : cairo_failed(path, st, error);
  g_byte_array_unref(bytes);
  return ok;
}

gboolean lmwb_plot_save_svg(LmwbPlot *p, const char *path, int width, int height, GError **error) {
  return save_vector(p, path, width, height, cairo_svg_surface_create_for_stream, error);
}

gboolean lmwb_plot_save_pdf(LmwbPlot *p, const char *path, int width, int height, GError **error) {
  return save_vector(p, path, width, height, cairo_pdf_surface_create_for_stream, error);
}

gboolean lmwb_plot_save(LmwbPlot *p, const char *path, int width, int height, GError **error) {
  const char *dot = path ? strrchr(path, '.') : NULL;
  const char *slash = path ? strrchr(path, '/') : NULL;
  if (dot && slash && dot < slash) dot = NULL;
  if (dot && !g_ascii_strcasecmp(dot, ".png")) return lmwb_plot_save_png(p, path, width, height, error);
  if (dot && !g_ascii_strcasecmp(dot, ".svg")) return lmwb_plot_save_svg(p, path, width, height, error);
  if (dot && !g_ascii_strcasecmp(dot, ".pdf")) return lmwb_plot_save_pdf(p, path, width, height, error);
  lmwb_input_error(error, "%s: unknown plot file type '%s' (use .png, .svg or .pdf)", path ? path : "(null)",
                   dot ? dot : "");
  return FALSE;
}
