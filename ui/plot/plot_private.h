/* Internals of ui/plot shared by its .c files and its unit tests: the plot model, axis scales
 * ("nice number" ticks), colour maps and the palette. Not for other modules. */
#pragma once
#include "ui/plot/plot.h"

typedef struct {
  char *name;
  GArray *xy; /* double pairs x0,y0,x1,y1,... */
} LmwbPlotSeries;

struct LmwbPlot {
  GMutex lock; /* guards everything below; taken by every public call */
  LmwbPlotKind kind;
  char *title, *x_label, *y_label;
  gboolean log_y, dark;
  double x_fixed[2], y_fixed[2]; /* NaN = automatic */
  guint64 version;
  GPtrArray *series; /* LmwbPlotSeries* */
  /* bars */
  int n_bars;
  char **bar_labels; /* n_bars entries, may be NULL */
  double *bar_values;
  /* heatmap */
  int rows, cols;
  double *cells;      /* rows*cols */
  char **cell_text;   /* rows*cols or NULL */
  char **row_labels;  /* rows or NULL */
  char **col_labels;  /* cols or NULL */
  double vmin, vmax;  /* as given (NaN = automatic) */
  LmwbPlotColormap cmap;
  /* The layout last computed for hit testing (plot_draw.c), reused while version and size hold:
   * a tooltip probes many points of an unchanged plot. */
  gpointer hit_layout;
  guint64 hit_version;
  double hit_w, hit_h;
};

/* ---- scales (plot_scale.c) ---- */

#define LMWB_PLOT_MAX_TICKS 64

typedef struct {
  double min, max;  /* the axis range, in data units */
  gboolean log;     /* log10 axis (min, max > 0) */
  int n;            /* ticks */
  double ticks[LMWB_PLOT_MAX_TICKS];
  double step;      /* linear: tick step (for label precision); log: decades per tick */
} LmwbPlotAxis;

/* Heckbert's nice number: the 1, 2, 5 (or 10) times a power of ten nearest to x (round) or the
 * smallest one >= x (!round). x > 0. */
double lmwb_plot_nice_number(double x, gboolean round);
/* Ticks on [min, max] (min < max), about `target` of them, at multiples of a 1-2-5 step that
 * lie inside the range. Log axes get ticks at powers of ten (with 2 and 5 when the range is
 * under two decades). */
void lmwb_plot_axis_ticks(LmwbPlotAxis *axis, double min, double max, gboolean log, int target);
/* Tick label for `v` on `axis` into buf (size >= 32): enough decimals for the step, exponent
 * form for very large or small magnitudes, never "-0". */
void lmwb_plot_format_tick(const LmwbPlotAxis *axis, double v, char *buf, gsize size);
/* Position of v along the axis as a fraction 0..1 (log-aware; may fall outside). */
double lmwb_plot_axis_frac(const LmwbPlotAxis *axis, double v);

/* Colour of t in [0,1] (clamped; NaN -> mid grey) under the map, as r,g,b in [0,1]. */
void lmwb_plot_colormap(LmwbPlotColormap cmap, double t, double rgb[3]);
/* Series colour i (cycles) for the theme: Okabe-Ito colour-blind-safe palette. */
void lmwb_plot_palette(int i, gboolean dark, double rgb[3]);
/* Relative luminance (WCAG) of an sRGB colour. */
double lmwb_plot_luminance(const double rgb[3]);

/* A printable copy of a label: invalid UTF-8 repaired, control characters shown as \n, \t,
 * \xNN. NULL -> NULL. */
char *lmwb_plot_printable(const char *s);
