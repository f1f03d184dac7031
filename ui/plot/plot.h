/* Plot: a model of one plot (title, axis labels, data, theme) drawn with plain Cairo.
 *
 * Shared by the GTK4 GUI (draw into a widget's cairo_t, hit-test for tooltips) and the headless
 * batch front end (save PNG/SVG/PDF); includes no GTK or Pango header. Text uses Cairo's toy
 * font API with a sans face and is measured with cairo_text_extents.
 *
 * Kinds: LINE and SCATTER hold named series of (x, y) points that can be streamed in from a
 * worker thread (every call takes the plot's mutex, so append while the GUI draws is safe).
 * BAR is horizontal: one bar per category label, categories down the left edge (named by
 * y_label), values along the bottom axis (named by x_label). HEATMAP is a rows×cols grid
 * (row 0 at the top) with a colour bar, optional per-cell text, row and column labels.
 *
 * Bad input never aborts: non-finite values are skipped (a line breaks at a NaN), an empty plot
 * draws "no data", invalid UTF-8 and control characters in labels are made printable, and the
 * setters that take sizes return FALSE (leaving the plot empty) when the sizes are unusable. */
#pragma once
#include <cairo.h>
#include <glib.h>

typedef enum { LMWB_PLOT_LINE, LMWB_PLOT_SCATTER, LMWB_PLOT_BAR, LMWB_PLOT_HEATMAP } LmwbPlotKind;

/* Heatmap colour maps: VIRIDIS (perceptually uniform, sequential) or DIVERGING (blue-white-red,
 * white at the middle of [vmin, vmax]; for signed data such as attributions). */
typedef enum { LMWB_PLOT_CMAP_VIRIDIS, LMWB_PLOT_CMAP_DIVERGING } LmwbPlotColormap;

typedef struct LmwbPlot LmwbPlot;

/* What lies under a point of a drawn plot. Fields not meaningful for the kind are -1 / NaN. */
typedef struct {
  LmwbPlotKind kind;
  int series;   /* LINE/SCATTER: series index */
  int index;    /* LINE/SCATTER: point index within the series; BAR: bar index */
  int row, col; /* HEATMAP: cell */
  double x, y;  /* LINE/SCATTER: the point's data coordinates */
  double value; /* BAR: the bar's value; HEATMAP: the cell's value; LINE/SCATTER: y */
} LmwbPlotHit;

/* Limits on sizes accepted by the setters and savers. */
#define LMWB_PLOT_MAX_CELLS (1 << 24)   /* heatmap rows*cols */
#define LMWB_PLOT_MAX_BARS 100000
#define LMWB_PLOT_MAX_SIDE 16384        /* saved image width/height in pixels */

/* Any string may be NULL (nothing drawn for it). */
LmwbPlot *lmwb_plot_new(LmwbPlotKind kind, const char *title, const char *x_label, const char *y_label);
void lmwb_plot_free(LmwbPlot *p);

LmwbPlotKind lmwb_plot_kind(LmwbPlot *p);
void lmwb_plot_set_title(LmwbPlot *p, const char *title);
void lmwb_plot_set_labels(LmwbPlot *p, const char *x_label, const char *y_label);

/* Line/scatter: add a named series and return its index (0, 1, ...). */
int lmwb_plot_add_series(LmwbPlot *p, const char *name);
int lmwb_plot_series_count(LmwbPlot *p);
/* Number of points in a series (0 for an unknown index). */
gsize lmwb_plot_series_length(LmwbPlot *p, int series);
/* Streaming: append one point (amortised O(1)); an unknown series index is ignored. */
void lmwb_plot_append(LmwbPlot *p, int series, double x, double y);
/* Drop every series' points, keeping the series. */
void lmwb_plot_clear_points(LmwbPlot *p);

/* Bar plot (switches the plot's kind to BAR). labels may be NULL or hold NULLs. Copies the data.
 * FALSE (and no bars) when n < 0 or n > LMWB_PLOT_MAX_BARS or values is NULL with n > 0. */
gboolean lmwb_plot_set_bars(LmwbPlot *p, int n, const char *const *labels, const double *values);

/* Heatmap (switches the kind to HEATMAP). values, cell_text are row-major rows*cols; cell_text,
 * row_labels, col_labels may be NULL (or hold NULLs). The colour range is [vmin, vmax]; pass
 * NaN for either (or vmin >= vmax) to take it from the finite data. Copies everything.
 * FALSE (and an empty heatmap) when rows/cols <= 0, rows*cols > LMWB_PLOT_MAX_CELLS or
 * values is NULL. */
gboolean lmwb_plot_set_heatmap(LmwbPlot *p, int rows, int cols, const double *values,
                               const char *const *cell_text, const char *const *row_labels,
                               const char *const *col_labels, double vmin, double vmax);
void lmwb_plot_set_colormap(LmwbPlot *p, LmwbPlotColormap cmap);

/* Log-scaled value axis (y for line/scatter, the value axis for bars); values <= 0 are skipped. */
void lmwb_plot_set_log_y(LmwbPlot *p, gboolean on);
void lmwb_plot_set_dark(LmwbPlot *p, gboolean dark);
/* Fixed axis ranges for line/scatter (e.g. 0..1 for an accuracy curve); NaN = automatic. */
void lmwb_plot_set_x_range(LmwbPlot *p, double min, double max);
void lmwb_plot_set_y_range(LmwbPlot *p, double min, double max);

/* A counter bumped by every change; a live view redraws when it moves. */
guint64 lmwb_plot_version(LmwbPlot *p);

/* Draw the whole plot (background included) into the rectangle (0,0)-(width,height) of cr.
 * Leaves cr's state as it found it. */
void lmwb_plot_draw(LmwbPlot *p, cairo_t *cr, double width, double height);

/* Hit testing for tooltips: what is under (x, y) of the plot drawn at width×height: the nearest
 * line/scatter point within a few pixels, the bar whose row contains y, or the heatmap cell.
 * FALSE if nothing. */
gboolean lmwb_plot_hit(LmwbPlot *p, double width, double height, double x, double y, LmwbPlotHit *hit);
/* A one-line description of a hit for a tooltip ("loss: x=12, y=3.41"); free with g_free. */
char *lmwb_plot_hit_describe(LmwbPlot *p, const LmwbPlotHit *hit);

/* Render at width×height pixels (points for PDF) and write atomically (temp file in the same
 * folder, then rename). Sizes outside 1..LMWB_PLOT_MAX_SIDE and unwritable paths give
 * LMWB_ERROR_INPUT naming the file. */
gboolean lmwb_plot_save_png(LmwbPlot *p, const char *path, int width, int height, GError **error);
gboolean lmwb_plot_save_svg(LmwbPlot *p, const char *path, int width, int height, GError **error);
gboolean lmwb_plot_save_pdf(LmwbPlot *p, const char *path, int width, int height, GError **error);
/* By the file's extension (.png, .svg, .pdf; any case); another extension -> LMWB_ERROR_INPUT. */
gboolean lmwb_plot_save(LmwbPlot *p, const char *path, int width, int height, GError **error);
