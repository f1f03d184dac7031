/* Axis scales, tick labels, colour maps and the series palette for ui/plot. */
#include "ui/plot/plot_private.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double lmwb_plot_nice_number(double x, gboolean round) {
  /* Heckbert, "Nice numbers for graph labels", Graphics Gems (1990). */
  if (!(x > 0) || !isfinite(x)) return 1.0;
  double e = floor(log10(x));
  double base = pow(10.0, e);
  double f = x / base;
  double nf;
  if (round) nf = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
  else nf = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
  return nf * base;
}

static double tick_count(double min, double max, double step) {
  return floor(max / step + 1e-9) - ceil(min / step - 1e-9) + 1;
}

static void linear_ticks(LmwbPlotAxis *a, double min, double max, int target) {
  if (target < 2) target = 2;
  /* The 1-2-5 step whose tick count inside [min, max] is closest to the target (ties: fewer). */
  /* Halves keep the span finite for ranges near ±DBL_MAX. */
  double base = pow(10.0, floor(log10((max / 2 - min / 2) / target * 2)));
  static const double mult[] = {0.5, 1, 2, 5, 10, 20, 50};
  double step = 0, best = INFINITY;
  for (gsize i = 0; i < G_N_ELEMENTS(mult); i++) {
    double c = mult[i] * base, n = tick_count(min, max, c);
    if (!isfinite(c) || !(n <= LMWB_PLOT_MAX_TICKS)) continue;
    double score = fabs(n - target) - (n < target ? 0.1 : 0) + (n < 2 ? 10 : 0); /* fewer on a tie, but two at least */
    if (score < best) {
      best = score;
      step = c;
    }
  }
  if (!(step > 0) || !isfinite(step)) step = lmwb_plot_nice_number(max / 2 - min / 2, FALSE);
  a->step = step;
  double k0 = ceil(min / step - 1e-9), k1 = floor(max / step + 1e-9);
  for (double k = k0; k <= k1 && a->n < LMWB_PLOT_MAX_TICKS; k += 1) {
    double t = k * step; /* multiply, don't accumulate, so 0.1*3 stays clean */
    if (fabs(t) < step * 1e-9) t = 0;
    a->ticks[a->n++] = t;
  }
}

void lmwb_plot_axis_ticks(LmwbPlotAxis *a, double min, double max, gboolean log, int target) {
  memset(a, 0, sizeof *a);
  a->min = min;
  a->max = max;
  a->log = log && min > 0 && max > 0;
  if (!(max > min) || !isfinite(min) || !isfinite(max)) return;
  if (target < 2) target = 2;
  if (!a->log) {
    linear_ticks(a, min, max, target);
    return;
  }
  double l0 = log10(min), l1 = log10(max);
  double decades = l1 - l0;
  if (decades < 0.7) {
    /* Less than a factor of 5: powers of ten would give one tick or none. */
    linear_ticks(a, min, max, target);
    a->log = TRUE;
    return;
  }
  if (decades < 2.5) {
    static const double mult[] = {1, 2, 5};
    for (double e = floor(l0); e <= ceil(l1) && a->n < LMWB_PLOT_MAX_TICKS; e += 1)
      for (int m = 0; m < 3; m++) {
        double t = mult[m] * pow(10.0, e);
        if (t >= min * (1 - 1e-9) && t <= max * (1 + 1e-9) && a->n < LMWB_PLOT_MAX_TICKS) a->ticks[a->n++] = t;
      }
    a->step = 0;
    if (a->n >= 2 && a->n <= target + 1) return;
    a->n = 0; /* too few or too crowded: decades only */
  }
  /* Every k-th decade, the smallest k that does not crowd the axis. */
  double k = 1;
  while (floor(l1 / k + 1e-9) - ceil(l0 / k - 1e-9) + 1 > target + 1 && k < 1000) k += 1;
  a->step = k;
  for (double e = ceil(l0 / k - 1e-9) * k; e <= l1 + 1e-9 && a->n < LMWB_PLOT_MAX_TICKS; e += k)
    a->ticks[a->n++] = pow(10.0, e);
}

double lmwb_plot_axis_frac(const LmwbPlotAxis *a, double v) {
  if (a->log) {
    if (!(v > 0)) return -INFINITY;
    return (log10(v) - log10(a->min)) / (log10(a->max) - log10(a->min));
  }
  return (v / 2 - a->min / 2) / (a->max / 2 - a->min / 2);
}

/* "1.5e6" instead of "1.5e+06". */
static void format_exp(double v, int digits, char *buf, gsize size) {
  char tmp[64];
  g_snprintf(tmp, sizeof tmp, "%.*e", digits, v);
  char *e = strchr(tmp, 'e');
  if (!e) {
    g_strlcpy(buf, tmp, size);
    return;
  }
  *e = 0;
  int ex = atoi(e + 1);
  /* Trim trailing zeros of the mantissa. */
  if (strchr(tmp, '.')) {
    char *end = tmp + strlen(tmp) - 1;
    while (*end == '0') *end-- = 0;
    if (*end == '.') *end = 0;
  }
  g_snprintf(buf, size, "%se%d", tmp, ex);
}

void lmwb_plot_format_tick(const LmwbPlotAxis *a, double v, char *buf, gsize size) {
  if (!isfinite(v)) {
    g_strlcpy(buf, isnan(v) ? "NaN" : v > 0 ? "inf" : "-inf", size);
    return;
  }
  if (a->log) {
    double av = fabs(v);
    if (av >= 1e-3 && av < 1e5) g_snprintf(buf, size, "%g", v);
    else format_exp(v, 2, buf, size);
    return;
  }
  double step = a->step > 0 ? a->step : fabs(a->max - a->min) / 4;
  if (!(step > 0)) step = 1;
  if (fabs(v) < step * 1e-9) v = 0; /* never print "-0" */
  double mag = fmax(fabs(a->min), fabs(a->max));
  if (mag >= 1e6 || (mag < 1e-3 && mag > 0)) {
    /* Enough mantissa digits to tell neighbouring ticks apart. */
    int digits = (int)ceil(log10(mag) - log10(step) + 1e-9);
    digits = CLAMP(digits, 1, 8);
    if (v == 0) g_strlcpy(buf, "0", size);
    else format_exp(v, digits, buf, size);
    return;
  }
  int decimals = (int)ceil(-log10(step) - 1e-9);
  decimals = CLAMP(decimals, 0, 10);
  g_snprintf(buf, size, "%.*f", decimals, v);
}

/* matplotlib's viridis sampled at 11 evenly spaced points (van der Walt & Smith, 2015). */
static const unsigned char viridis[][3] = {
    {68, 1, 84},    {72, 36, 117},  {65, 68, 135},  {53, 95, 141},  {42, 120, 142}, {33, 145, 140},
    {34, 168, 132}, {68, 191, 112}, {122, 209, 81}, {189, 223, 38}, {253, 231, 37},
};
/* ColorBrewer RdBu (11 classes), reversed so that low = blue, high = red. */
static const unsigned char rdbu[][3] = {
    {5, 48, 97},     {33, 102, 172},  {67, 147, 195}, {146, 197, 222}, {209, 229, 240}, {247, 247, 247},
    {253, 219, 199}, {244, 165, 130}, {214, 96, 77},  {178, 24, 43},   {103, 0, 31},
};

void lmwb_plot_colormap(LmwbPlotColormap cmap, double t, double rgb[3]) {
  if (isnan(t)) {
    rgb[0] = rgb[1] = rgb[2] = 0.5;
    return;
  }
  t = CLAMP(t, 0.0, 1.0);
  const unsigned char(*lut)[3] = cmap == LMWB_PLOT_CMAP_DIVERGING ? rdbu : viridis;
  const int n = 11;
  double pos = t * (n - 1);
  int i = (int)floor(pos);
  if (i >= n - 1) i = n - 2;
  double f = pos - i;
  for (int c = 0; c < 3; c++) rgb[c] = ((1 - f) * lut[i][c] + f * lut[i + 1][c]) / 255.0;
}

/* Okabe & Ito (2008) colour-universal-design palette, ordered per theme so the first colours
 * have good contrast on that background (dark blue is late on dark). On light backgrounds
 * orange, sky blue and yellow are darkened (same hues) to reach about 3:1 contrast with white. */
static const unsigned char okabe_light[][3] = {
    {0, 114, 178}, {213, 94, 0}, {0, 158, 115}, {204, 121, 167}, {200, 130, 0}, {50, 145, 205}, {90, 90, 90}, {160, 140, 0},
};
static const unsigned char okabe_dark[][3] = {
    {86, 180, 233}, {230, 159, 0}, {0, 158, 115}, {204, 121, 167}, {240, 228, 66}, {213, 94, 0}, {200, 200, 200}, {0, 114, 178},
};

void lmwb_plot_palette(int i, gboolean dark, double rgb[3]) {
  const unsigned char(*pal)[3] = dark ? okabe_dark : okabe_light;
  int n = 8;
  i = ((i % n) + n) % n;
  for (int c = 0; c < 3; c++) rgb[c] = pal[i][c] / 255.0;
}

static double srgb_lin(double c) { return c <= 0.03928 ? c / 12.92 : pow((c + 0.055) / 1.055, 2.4); }

double lmwb_plot_luminance(const double rgb[3]) {
  return 0.2126 * srgb_lin(rgb[0]) + 0.7152 * srgb_lin(rgb[1]) + 0.0722 * srgb_lin(rgb[2]);
}

char *lmwb_plot_printable(const char *s) {
  if (!s) return NULL;
  char *valid = g_utf8_make_valid(s, -1);
  GString *out = g_string_sized_new(strlen(valid) + 8);
  for (const char *q = valid; *q; q = g_utf8_next_char(q)) {
    gunichar c = g_utf8_get_char(q);
    if (c == '\n') g_string_append(out, "\\n");
    else if (c == '\t') g_string_append(out, "\\t");
    else if (c == '\r') g_string_append(out, "\\r");
    else if (g_unichar_iscntrl(c)) g_string_append_printf(out, "\\x%02X", (unsigned)c);
    else g_string_append_unichar(out, c);
  }
  g_free(valid);
  return g_string_free(out, FALSE);
}
