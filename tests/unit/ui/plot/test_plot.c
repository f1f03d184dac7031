/* ui/plot: ticks and colour maps, rendering every kind to PNG/SVG/PDF and reading the pixels
 * back, hit testing, streaming, bad input. Set LMWB_PLOT_OUT=<dir> to keep the example images. */
#include "app/core/errors.h"
#include "ui/plot/plot.h"
#include "ui/plot/plot_private.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

static char *tmpdir;

static char *out_path(const char *name) {
  const char *keep = g_getenv("LMWB_PLOT_OUT");
  return g_build_filename(keep && *keep ? keep : tmpdir, name, NULL);
}

typedef struct {
  cairo_surface_t *s;
  int w, h, stride;
  unsigned char *data;
} Image;

static Image load_png(const char *path) {
  Image im = {0};
  im.s = cairo_image_surface_create_from_png(path);
  g_assert_cmpint(cairo_surface_status(im.s), ==, CAIRO_STATUS_SUCCESS);
  cairo_surface_flush(im.s);
  im.w = cairo_image_surface_get_width(im.s);
  im.h = cairo_image_surface_get_height(im.s);
  im.stride = cairo_image_surface_get_stride(im.s);
  im.data = cairo_image_surface_get_data(im.s);
  return im;
}

static guint32 px(const Image *im, int x, int y) {
  g_assert_true(x >= 0 && x < im->w && y >= 0 && y < im->h);
  return ((const guint32 *)(im->data + (gsize)y * (gsize)im->stride))[x] & 0xFFFFFF;
}

static void px_rgb(const Image *im, int x, int y, double rgb[3]) {
  guint32 v = px(im, x, y);
  rgb[0] = ((v >> 16) & 255) / 255.0;
  rgb[1] = ((v >> 8) & 255) / 255.0;
  rgb[2] = (v & 255) / 255.0;
}

/* Pixels that differ from the background (taken at the top-left corner). */
static int count_ink(const Image *im) {
  guint32 bg = px(im, 0, 0);
  int n = 0;
  for (int y = 0; y < im->h; y++)
    for (int x = 0; x < im->w; x++) n += px(im, x, y) != bg;
  return n;
}

static gboolean near_colour(const double a[3], const double b[3], double tol) {
  return fabs(a[0] - b[0]) <= tol && fabs(a[1] - b[1]) <= tol && fabs(a[2] - b[2]) <= tol;
}

static int count_colour(const Image *im, const double rgb[3], double tol) {
  int n = 0;
  for (int y = 0; y < im->h; y++)
    for (int x = 0; x < im->w; x++) {
      double c[3];
      px_rgb(im, x, y, c);
      n += near_colour(c, rgb, tol);
    }
  return n;
}

static Image render(LmwbPlot *p, const char *name, int w, int h) {
  char *path = out_path(name);
  GError *err = NULL;
  g_assert_true(lmwb_plot_save(p, path, w, h, &err));
  g_assert_no_error(err);
  Image im = load_png(path);
  g_assert_cmpint(im.w, ==, w);
  g_assert_cmpint(im.h, ==, h);
  g_free(path);
  return im;
}

static void image_free(Image *im) { cairo_surface_destroy(im->s); }

/* ---- scales ---- */

static gboolean is_125(double step) {
  double m = step / pow(10, floor(log10(step)));
  return fabs(m - 1) < 1e-9 || fabs(m - 2) < 1e-9 || fabs(m - 5) < 1e-9 || fabs(m - 10) < 1e-9;
}

static void test_ticks(void) {
  g_assert_cmpfloat(lmwb_plot_nice_number(0.63, TRUE), ==, 0.5);
  g_assert_cmpfloat(lmwb_plot_nice_number(0.73, FALSE), ==, 1.0);
  g_assert_cmpfloat(lmwb_plot_nice_number(170, TRUE), ==, 200);
  g_assert_cmpfloat(lmwb_plot_nice_number(3.2, FALSE), ==, 5);

  const double ranges[][2] = {{0, 1}, {-3.7, 12.2}, {0.0012, 0.0049}, {1e6, 7.3e6}, {-1e-9, 1e-9}, {99.5, 100.5}};
  for (gsize r = 0; r < G_N_ELEMENTS(ranges); r++) {
    LmwbPlotAxis a;
    lmwb_plot_axis_ticks(&a, ranges[r][0], ranges[r][1], FALSE, 6);
    g_assert_cmpint(a.n, >=, 2);
    g_assert_cmpint(a.n, <=, 12);
    g_assert_true(is_125(a.step));
    char prev[64] = "";
    for (int i = 0; i < a.n; i++) {
      g_assert_cmpfloat(a.ticks[i], >=, ranges[r][0] - 1e-12);
      g_assert_cmpfloat(a.ticks[i], <=, ranges[r][1] + 1e-12);
      if (i) g_assert_cmpfloat(fabs(a.ticks[i] - a.ticks[i - 1] - a.step), <, a.step * 1e-6);
      char buf[64];
      lmwb_plot_format_tick(&a, a.ticks[i], buf, sizeof buf);
      g_assert_cmpstr(buf, !=, "-0");
      g_assert_cmpstr(buf, !=, prev); /* neighbouring labels are distinguishable */
      g_strlcpy(prev, buf, sizeof prev);
    }
  }
  LmwbPlotAxis a;
  lmwb_plot_axis_ticks(&a, 0, 1, FALSE, 6);
  char buf[64];
  lmwb_plot_format_tick(&a, a.ticks[1], buf, sizeof buf);
  g_assert_cmpstr(buf, ==, "0.2");
  lmwb_plot_axis_ticks(&a, -3.7, 12.2, FALSE, 6);
  g_assert_cmpfloat(a.ticks[0], ==, -2);
  lmwb_plot_format_tick(&a, 0.0, buf, sizeof buf);
  g_assert_cmpstr(buf, ==, "0");
  lmwb_plot_axis_ticks(&a, 1e6, 7.3e6, FALSE, 6);
  lmwb_plot_format_tick(&a, 2e6, buf, sizeof buf);
  g_assert_cmpstr(buf, ==, "2e6");

  /* Log axis: decades. */
  lmwb_plot_axis_ticks(&a, 0.5, 2e4, TRUE, 8);
  g_assert_true(a.log);
  g_assert_cmpint(a.n, ==, 5);
  g_assert_cmpfloat(fabs(a.ticks[0] - 1), <, 1e-12);
  g_assert_cmpfloat(fabs(a.ticks[4] - 1e4), <, 1e-8);
  g_assert_cmpfloat(fabs(lmwb_plot_axis_frac(&a, sqrt(0.5 * 2e4)) - 0.5), <, 1e-12);
  lmwb_plot_format_tick(&a, 1e4, buf, sizeof buf);
  g_assert_cmpstr(buf, ==, "10000");
  lmwb_plot_format_tick(&a, 1e-5, buf, sizeof buf);
  g_assert_cmpstr(buf, ==, "1e-5");
}

static void test_colormap(void) {
  /* Viridis ends and monotone luminance (the point of a perceptual map). */
  double rgb[3], prev = -1;
  lmwb_plot_colormap(LMWB_PLOT_CMAP_VIRIDIS, 0, rgb);
  g_assert_true(near_colour(rgb, (double[]){68 / 255.0, 1 / 255.0, 84 / 255.0}, 1e-9));
  lmwb_plot_colormap(LMWB_PLOT_CMAP_VIRIDIS, 1, rgb);
  g_assert_true(near_colour(rgb, (double[]){253 / 255.0, 231 / 255.0, 37 / 255.0}, 1e-9));
  for (int i = 0; i <= 100; i++) {
    lmwb_plot_colormap(LMWB_PLOT_CMAP_VIRIDIS, i / 100.0, rgb);
    double l = lmwb_plot_luminance(rgb);
    g_assert_cmpfloat(l, >, prev);
    prev = l;
  }
  lmwb_plot_colormap(LMWB_PLOT_CMAP_DIVERGING, 0.5, rgb);
  g_assert_cmpfloat(lmwb_plot_luminance(rgb), >, 0.9); /* white middle */
  lmwb_plot_colormap(LMWB_PLOT_CMAP_DIVERGING, 0, rgb);
  g_assert_cmpfloat(rgb[2], >, rgb[0]); /* blue low */
  lmwb_plot_colormap(LMWB_PLOT_CMAP_DIVERGING, 1, rgb);
  g_assert_cmpfloat(rgb[0], >, rgb[2]); /* red high */
  /* Palette colours stand out from their background (WCAG contrast >= 2.5:1 for the first 6). */
  for (int dark = 0; dark < 2; dark++)
    for (int i = 0; i < 6; i++) {
      lmwb_plot_palette(i, dark, rgb);
      double l = lmwb_plot_luminance(rgb), bg = dark ? 0.0137 : 1.0;
      double contrast = (fmax(l, bg) + 0.05) / (fmin(l, bg) + 0.05);
      g_assert_cmpfloat(contrast, >=, 2.5);
    }
  char *s = lmwb_plot_printable("a\nb\t\x01\xff");
  g_assert_cmpstr(s, ==, "a\\nb\\t\\x01\xef\xbf\xbd");
  g_free(s);
}

/* ---- rendering ---- */

static void test_line(void) {
  LmwbPlot *p = lmwb_plot_new(LMWB_PLOT_LINE, "Training loss", "step", "loss");
  int a = lmwb_plot_add_series(p, "train");
  int b = lmwb_plot_add_series(p, "validation");
  g_assert_cmpint(a, ==, 0);
  g_assert_cmpint(b, ==, 1);
  for (int i = 0; i <= 200; i++) {
    lmwb_plot_append(p, a, i, 4.0 * exp(-i / 60.0) + 0.6 + 0.05 * sin(i * 0.7));
    if (i % 20 == 0) lmwb_plot_append(p, b, i, 4.1 * exp(-i / 70.0) + 0.75);
  }
  lmwb_plot_append(p, 7, 1, 1); /* unknown series: ignored */
  g_assert_cmpuint(lmwb_plot_series_length(p, a), ==, 201);
  g_assert_cmpuint(lmwb_plot_series_length(p, b), ==, 11);
  g_assert_cmpuint(lmwb_plot_series_length(p, 7), ==, 0);
  Image im = render(p, "line.png", 640, 400);
  g_assert_cmpint(count_ink(&im), >, 640 * 400 / 50);
  /* Both series are drawn in their palette colours. */
  double c0[3], c1[3];
  lmwb_plot_palette(0, FALSE, c0);
  lmwb_plot_palette(1, FALSE, c1);
  g_assert_cmpint(count_colour(&im, c0, 0.03), >, 300);
  g_assert_cmpint(count_colour(&im, c1, 0.03), >, 50);
  image_free(&im);

  /* Streaming: more points change the picture and the version. */
  guint64 v0 = lmwb_plot_version(p);
  Image before = render(p, "line_before.png", 320, 200);
  for (int i = 201; i <= 400; i++) lmwb_plot_append(p, a, i, 3.0);
  g_assert_cmpuint(lmwb_plot_version(p), >, v0);
  Image after = render(p, "line_after.png", 320, 200);
  g_assert_true(memcmp(before.data, after.data, (gsize)before.stride * (gsize)before.h) != 0);
  image_free(&before);
  image_free(&after);

  /* Dark theme: dark background, light text. */
  lmwb_plot_set_dark(p, TRUE);
  Image dark = render(p, "line_dark.png", 640, 400);
  double bg[3];
  px_rgb(&dark, 0, 0, bg);
  g_assert_cmpfloat(lmwb_plot_luminance(bg), <, 0.05);
  double d0[3];
  lmwb_plot_palette(0, TRUE, d0);
  g_assert_cmpint(count_colour(&dark, d0, 0.03), >, 300);
  image_free(&dark);
  lmwb_plot_free(p);
}

static void test_line_hit(void) {
  LmwbPlot *p = lmwb_plot_new(LMWB_PLOT_SCATTER, "pts", "x", "y");
  int s = lmwb_plot_add_series(p, "s");
  const double xs[] = {0, 1, 2, 3, 4}, ys[] = {0, 3, 1, 4, 2};
  for (int i = 0; i < 5; i++) lmwb_plot_append(p, s, xs[i], ys[i]);
  lmwb_plot_append(p, s, NAN, 1); /* skipped, never hit */
  /* Probe every other pixel: every hit is a real point, and every point is found. */
  gboolean found[5] = {0};
  for (int y = 0; y < 300; y += 2)
    for (int x = 0; x < 400; x += 2) {
      LmwbPlotHit h;
      if (!lmwb_plot_hit(p, 400, 300, x, y, &h)) continue;
      g_assert_cmpint(h.kind, ==, LMWB_PLOT_SCATTER);
      g_assert_cmpint(h.series, ==, 0);
      g_assert_cmpint(h.index, >=, 0);
      g_assert_cmpint(h.index, <, 5);
      g_assert_cmpfloat(h.x, ==, xs[h.index]);
      g_assert_cmpfloat(h.y, ==, ys[h.index]);
      found[h.index] = TRUE;
    }
  for (int i = 0; i < 5; i++) g_assert_true(found[i]);
  LmwbPlotHit h;
  g_assert_false(lmwb_plot_hit(p, 400, 300, 1, 1, &h));
  lmwb_plot_free(p);
}

static void test_scatter_log(void) {
  LmwbPlot *p = lmwb_plot_new(LMWB_PLOT_SCATTER, "Neuron activation vs frequency", "token frequency rank", "mean activation");
  int a = lmwb_plot_add_series(p, "layer 3");
  int b = lmwb_plot_add_series(p, "layer 9");
  GRand *r = g_rand_new_with_seed(7);
  for (int i = 0; i < 400; i++) {
    double x = g_rand_double_range(r, 0, 1000);
    lmwb_plot_append(p, a, x, exp(g_rand_double_range(r, -6, 3)));
    lmwb_plot_append(p, b, x, exp(g_rand_double_range(r, -3, 5)));
  }
  g_rand_free(r);
  lmwb_plot_append(p, a, 5, -1); /* not drawable on a log axis */
  lmwb_plot_append(p, a, 5, 0);
  lmwb_plot_set_log_y(p, TRUE);
  Image im = render(p, "scatter_log.png", 640, 400);
  g_assert_cmpint(count_ink(&im), >, 640 * 400 / 30);
  image_free(&im);
  lmwb_plot_free(p);
}

static void test_bars(void) {
  const char *labels[] = {" dog", " dogs", " puppy", " Dog", "\n", " canine"};
  const double values[] = {0.42, 0.21, 0.105, 0.084, 0.042, 0.021};
  LmwbPlot *p = lmwb_plot_new(LMWB_PLOT_BAR, "Neuron L5/N1337: top tokens", "probability", NULL);
  g_assert_true(lmwb_plot_set_bars(p, 6, labels, values));
  int W = 600, H = 300;
  Image im = render(p, "bars.png", W, H);
  g_assert_cmpint(count_ink(&im), >, W * H / 20);

  /* Hit: walking down a column meets bars 0..5 in order, each one. */
  int last = -1, seen = 0;
  for (int y = 0; y < H; y++) {
    LmwbPlotHit h;
    if (!lmwb_plot_hit(p, W, H, W / 2.0, y, &h)) continue;
    g_assert_cmpint(h.kind, ==, LMWB_PLOT_BAR);
    g_assert_cmpint(h.index, >=, last);
    if (h.index != last) seen++;
    last = h.index;
    g_assert_cmpfloat(h.value, ==, values[h.index]);
    char *d = lmwb_plot_hit_describe(p, &h);
    g_assert_nonnull(strstr(d, h.index == 4 ? "\\n" : labels[h.index]));
    g_free(d);
  }
  g_assert_cmpint(seen, ==, 6);
  g_assert_cmpint(last, ==, 5);

  /* Bar lengths (the run of bar colour across each bar's centre row) follow the values. */
  double c0[3];
  lmwb_plot_palette(0, FALSE, c0);
  double len[6] = {0};
  for (int i = 0; i < 6; i++) {
    int ycentre = -1;
    for (int y = 0; y < H && ycentre < 0; y++) {
      LmwbPlotHit h;
      if (lmwb_plot_hit(p, W, H, W / 2.0, y, &h) && h.index == i) {
        int y1 = y;
        while (y1 + 1 < H && lmwb_plot_hit(p, W, H, W / 2.0, y1 + 1, &h) && h.index == i) y1++;
        ycentre = (y + y1) / 2;
      }
    }
    g_assert_cmpint(ycentre, >=, 0);
    for (int x = 0; x < W; x++) {
      double c[3];
      px_rgb(&im, x, ycentre, c);
      len[i] += near_colour(c, c0, 0.02);
    }
  }
  for (int i = 1; i < 6; i++) g_assert_cmpfloat(fabs(len[i] / len[0] - values[i] / values[0]), <, 0.03);
  image_free(&im);

  /* Signed values: negative bars in the second palette colour. */
  const double signed_v[] = {2.5, -1.25, 0.5, -3.0};
  const char *sl[] = {"head 0.1", "head 3.7", "head 5.5", "head 9.9"};
  g_assert_true(lmwb_plot_set_bars(p, 4, sl, signed_v));
  lmwb_plot_set_title(p, "Logit difference by head");
  lmwb_plot_set_labels(p, "logit difference", NULL);
  im = render(p, "bars_signed.png", W, H);
  double c1[3];
  lmwb_plot_palette(1, FALSE, c1);
  g_assert_cmpint(count_colour(&im, c1, 0.02), >, 1000);
  image_free(&im);

  g_assert_false(lmwb_plot_set_bars(p, -1, NULL, NULL));
  g_assert_false(lmwb_plot_set_bars(p, 3, NULL, NULL));
  LmwbPlotHit h;
  g_assert_false(lmwb_plot_hit(p, W, H, W / 2.0, H / 2.0, &h));
  lmwb_plot_free(p);
}

static void test_heatmap(void) {
  enum { R = 3, C = 4 };
  double v[R * C];
  char *text[R * C];
  for (int i = 0; i < R * C; i++) {
    v[i] = i;
    text[i] = g_strdup_printf("%d", i);
  }
  const char *rows[R] = {"L0", "L1", "L2"};
  const char *cols[C] = {"H0", "H1", "H2", "H3"};
  LmwbPlot *p = lmwb_plot_new(LMWB_PLOT_HEATMAP, "Head importance", "head", "layer");
  g_assert_true(lmwb_plot_set_heatmap(p, R, C, v, (const char *const *)text, rows, cols, 0, R * C - 1));
  int W = 500, H = 320;
  Image im = render(p, "heatmap.png", W, H);

  /* Find each cell's pixels by hit testing, sample near its centre (clear of the cell text). */
  double sx[R * C] = {0}, sy[R * C] = {0}, n[R * C] = {0};
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      LmwbPlotHit h;
      if (!lmwb_plot_hit(p, W, H, x, y, &h)) continue;
      g_assert_cmpint(h.kind, ==, LMWB_PLOT_HEATMAP);
      int k = h.row * C + h.col;
      g_assert_cmpfloat(h.value, ==, v[k]);
      sx[k] += x;
      sy[k] += y;
      n[k]++;
    }
  double prev_l = -1;
  for (int k = 0; k < R * C; k++) {
    g_assert_cmpfloat(n[k], >, 100);
    int cx = (int)(sx[k] / n[k]), cy = (int)(sy[k] / n[k]) - 12; /* above the centred number */
    double got[3], want[3];
    px_rgb(&im, cx, cy, got);
    lmwb_plot_colormap(LMWB_PLOT_CMAP_VIRIDIS, v[k] / (R * C - 1), want);
    g_assert_true(near_colour(got, want, 2.5 / 255));
    double l = lmwb_plot_luminance(got);
    g_assert_cmpfloat(l, >, prev_l); /* distinct and ordered like the values */
    prev_l = l;
    /* The cell text is drawn: the exact centre has pixels other than the cell colour nearby. */
    int other = 0;
    for (int dy = -6; dy <= 6; dy++)
      for (int dx = -6; dx <= 6; dx++) {
        double c[3];
        px_rgb(&im, (int)(sx[k] / n[k]) + dx, (int)(sy[k] / n[k]) + dy, c);
        other += !near_colour(c, want, 0.1);
      }
    g_assert_cmpint(other, >, 5);
  }
  LmwbPlotHit h;
  g_assert_true(lmwb_plot_hit(p, W, H, sx[1 * C + 2] / n[1 * C + 2], sy[1 * C + 2] / n[1 * C + 2], &h));
  g_assert_cmpint(h.row, ==, 1);
  g_assert_cmpint(h.col, ==, 2);
  char *d = lmwb_plot_hit_describe(p, &h);
  g_assert_cmpstr(d, ==, "L1, H2: 6 (6)");
  g_free(d);
  g_assert_false(lmwb_plot_hit(p, W, H, 2, 2, &h));
  image_free(&im);
  for (int i = 0; i < R * C; i++) g_free(text[i]);

  /* Bad sizes are refused and draw "no data" instead of crashing. */
  g_assert_false(lmwb_plot_set_heatmap(p, 0, 3, v, NULL, NULL, NULL, NAN, NAN));
  g_assert_false(lmwb_plot_set_heatmap(p, 1 << 20, 1 << 20, v, NULL, NULL, NULL, NAN, NAN));
  g_assert_false(lmwb_plot_hit(p, W, H, W / 2.0, H / 2.0, &h));
  im = render(p, "heatmap_empty.png", 200, 100);
  g_assert_cmpint(count_ink(&im), >, 50);
  image_free(&im);
  lmwb_plot_free(p);
}

static void test_heatmap_attention(void) {
  /* A causal attention pattern with token labels: rotated column labels, diverging map. */
  const char *tok[] = {"<|endoftext|>", "When", " Mary", " and", " John", " went", " to", " the", " store", ",",
                       " John", " gave", " a", " drink", " to"};
  enum { T = 15 };
  double a[T * T];
  for (int q = 0; q < T; q++) {
    double z = 0;
    for (int k = 0; k <= q; k++) z += exp(-(q - k) * 0.4) + (k == 2 ? 2.0 : 0);
    for (int k = 0; k < T; k++) a[q * T + k] = k <= q ? (exp(-(q - k) * 0.4) + (k == 2 ? 2.0 : 0)) / z : NAN;
  }
  LmwbPlot *p = lmwb_plot_new(LMWB_PLOT_HEATMAP, "blocks.9.attn.hook_pattern, head 9", "key", "query");
  g_assert_true(lmwb_plot_set_heatmap(p, T, T, a, NULL, tok, tok, 0, 1));
  Image im = render(p, "heatmap_attention.png", 560, 520);
  g_assert_cmpint(count_ink(&im), >, 560 * 520 / 4);
  image_free(&im);

  /* A large grid takes the image path; corners keep their colours. */
  enum { N = 300 };
  double *big = g_new(double, N * N);
  for (int i = 0; i < N * N; i++) big[i] = (i / N) + (i % N);
  lmwb_plot_set_heatmap(p, N, N, big, NULL, NULL, NULL, NAN, NAN);
  lmwb_plot_set_title(p, "large");
  im = render(p, "heatmap_large.png", 400, 400);
  LmwbPlotHit h;
  int found = 0;
  double lo[3] = {0}, hi[3] = {0};
  for (int y = 0; y < 400 && found < 2; y++)
    for (int x = 0; x < 400; x++)
      if (lmwb_plot_hit(p, 400, 400, x, y, &h)) {
        if (h.row == 0 && h.col == 0 && !found) {
          px_rgb(&im, x + 1, y + 1, lo);
          found = 1;
        }
        if (h.row == N - 1 && h.col == N - 1) {
          px_rgb(&im, x, y, hi);
          found = 2;
        }
      }
  g_assert_cmpint(found, ==, 2);
  double want[3];
  lmwb_plot_colormap(LMWB_PLOT_CMAP_VIRIDIS, 0, want);
  g_assert_true(near_colour(lo, want, 0.02));
  lmwb_plot_colormap(LMWB_PLOT_CMAP_VIRIDIS, 1, want);
  g_assert_true(near_colour(hi, want, 0.02));
  image_free(&im);
  g_free(big);
  lmwb_plot_free(p);
}

static void test_empty(void) {
  LmwbPlot *a = lmwb_plot_new(LMWB_PLOT_LINE, "Loss", "step", "loss");
  LmwbPlot *b = lmwb_plot_new(LMWB_PLOT_LINE, "Loss", "step", "loss");
  int s = lmwb_plot_add_series(b, "x");
  lmwb_plot_append(b, s, NAN, 1);
  lmwb_plot_append(b, s, 2, INFINITY);
  Image ia = render(a, "empty_a.png", 300, 200), ib = render(b, "empty_b.png", 300, 200);
  g_assert_cmpint(count_ink(&ia), >, 100); /* title, labels, "no data" */
  g_assert_true(memcmp(ia.data, ib.data, (gsize)ia.stride * (gsize)ia.h) == 0);
  LmwbPlotHit h;
  g_assert_false(lmwb_plot_hit(b, 300, 200, 150, 100, &h));
  image_free(&ia);
  image_free(&ib);
  /* A single point (zero span) still draws. */
  lmwb_plot_append(b, s, 3, 3);
  Image one = render(b, "one_point.png", 300, 200);
  double c0[3];
  lmwb_plot_palette(0, FALSE, c0);
  g_assert_cmpint(count_colour(&one, c0, 0.03), >, 10);
  image_free(&one);
  lmwb_plot_free(a);
  lmwb_plot_free(b);
}

static void test_formats(void) {
  LmwbPlot *p = lmwb_plot_new(LMWB_PLOT_LINE, "Perplexity after each edit", "edit", "perplexity");
  int s = lmwb_plot_add_series(p, "ROME");
  for (int i = 0; i < 50; i++) lmwb_plot_append(p, s, i, 20 + (i > 30 ? (i - 30) * (i - 30) * 3.0 : 0.3 * i));
  GError *err = NULL;
  char *svg = out_path("edits.svg");
  g_assert_true(lmwb_plot_save(p, svg, 480, 300, &err));
  g_assert_no_error(err);
  char *text = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(svg, &text, &len, NULL));
  g_assert_true(g_str_has_prefix(text, "<?xml"));
  g_assert_nonnull(strstr(text, "<svg"));
  g_free(text);
  char *pdf = out_path("edits.PDF");
  g_assert_true(lmwb_plot_save(p, pdf, 480, 300, &err));
  g_assert_no_error(err);
  g_assert_true(g_file_get_contents(pdf, &text, &len, NULL));
  g_assert_true(g_str_has_prefix(text, "%PDF"));
  g_free(text);

  char *bad = out_path("edits.jpg");
  g_assert_false(lmwb_plot_save(p, bad, 480, 300, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_assert_nonnull(strstr(err->message, "edits.jpg"));
  g_clear_error(&err);
  g_assert_false(g_file_test(bad, G_FILE_TEST_EXISTS));
  g_assert_false(lmwb_plot_save(p, "noext", 480, 300, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  char *png = out_path("x.png");
  g_assert_false(lmwb_plot_save_png(p, png, 0, 300, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  g_assert_false(lmwb_plot_save_png(p, png, 100, 100000, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  char *missing = g_build_filename(tmpdir, "no", "such", "dir", "x.png", NULL);
  g_assert_false(lmwb_plot_save(p, missing, 100, 100, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_assert_nonnull(strstr(err->message, missing));
  g_clear_error(&err);
  /* Atomic: no temp files left beside the outputs. */
  GDir *dir = g_dir_open(tmpdir, 0, NULL);
  const char *name;
  while ((name = g_dir_read_name(dir))) g_assert_null(strstr(name, ".tmp"));
  g_dir_close(dir);
  g_free(svg);
  g_free(pdf);
  g_free(bad);
  g_free(png);
  g_free(missing);
  lmwb_plot_free(p);
}

/* Odd sizes, extreme values and long labels: every kind still renders without a cairo error. */
static void test_robust(void) {
  const char *long_label = "an extremely long axis label that cannot possibly fit into a small plot at all";
  LmwbPlot *plots[4];
  plots[0] = lmwb_plot_new(LMWB_PLOT_LINE, long_label, long_label, long_label);
  int s = lmwb_plot_add_series(plots[0], long_label);
  lmwb_plot_add_series(plots[0], "\xc3\x28 bad utf8");
  lmwb_plot_append(plots[0], s, -1e308, 1e308);
  lmwb_plot_append(plots[0], s, 1e308, -1e308);
  lmwb_plot_append(plots[0], s, 0, 5e-324);
  plots[1] = lmwb_plot_new(LMWB_PLOT_SCATTER, NULL, NULL, NULL);
  s = lmwb_plot_add_series(plots[1], NULL);
  lmwb_plot_append(plots[1], s, 1, 1e-300);
  lmwb_plot_append(plots[1], s, 2, 1e300);
  lmwb_plot_set_log_y(plots[1], TRUE);
  lmwb_plot_set_x_range(plots[1], 5, 5); /* invalid fixed range: ignored */
  plots[2] = lmwb_plot_new(LMWB_PLOT_BAR, long_label, NULL, NULL);
  const char *labels[] = {long_label, NULL, "\xff"};
  const double vals[] = {1e300, NAN, -1e300};
  lmwb_plot_set_bars(plots[2], 3, labels, vals);
  plots[3] = lmwb_plot_new(LMWB_PLOT_HEATMAP, long_label, NULL, NULL);
  const double cells[] = {1, NAN, INFINITY, -1e300};
  const char *rl[] = {long_label, NULL};
  const char *ct[] = {long_label, NULL, "\n", ""};
  lmwb_plot_set_heatmap(plots[3], 2, 2, cells, ct, rl, rl, 3, 3);
  const int sizes[][2] = {{1, 1}, {20, 10}, {60, 40}, {2000, 50}, {50, 1500}};
  for (int k = 0; k < 4; k++)
    for (gsize i = 0; i < G_N_ELEMENTS(sizes); i++) {
      cairo_surface_t *surf = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, sizes[i][0], sizes[i][1]);
      cairo_t *cr = cairo_create(surf);
      lmwb_plot_draw(plots[k], cr, sizes[i][0], sizes[i][1]);
      g_assert_cmpint(cairo_status(cr), ==, CAIRO_STATUS_SUCCESS);
      LmwbPlotHit h;
      for (int y = 0; y < sizes[i][1]; y += 7)
        for (int x = 0; x < sizes[i][0]; x += 7) lmwb_plot_hit(plots[k], sizes[i][0], sizes[i][1], x, y, &h);
      cairo_destroy(cr);
      cairo_surface_destroy(surf);
    }
  for (int k = 0; k < 4; k++) {
    char *name = g_strdup_printf("robust%d.png", k);
    Image im = render(plots[k], name, 300, 200);
    g_assert_cmpint(count_ink(&im), >, 50);
    image_free(&im);
    g_free(name);
    lmwb_plot_free(plots[k]);
  }
}

typedef struct {
  LmwbPlot *p;
  int series, n;
} Feed;

static gpointer feeder(gpointer data) {
  Feed *f = data;
  for (int i = 0; i < f->n; i++) lmwb_plot_append(f->p, f->series, i, sin(i * 0.01));
  return NULL;
}

static void test_threads(void) {
  LmwbPlot *p = lmwb_plot_new(LMWB_PLOT_LINE, "live", "step", "metric");
  Feed f = {p, lmwb_plot_add_series(p, "m"), 200000};
  GThread *t = g_thread_new("feeder", feeder, &f);
  cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, 200, 120);
  cairo_t *cr = cairo_create(s);
  for (int i = 0; i < 20; i++) lmwb_plot_draw(p, cr, 200, 120);
  g_thread_join(t);
  g_assert_cmpint(cairo_status(cr), ==, CAIRO_STATUS_SUCCESS);
  g_assert_cmpuint(lmwb_plot_series_length(p, f.series), ==, (gsize)f.n);
  lmwb_plot_clear_points(p);
  g_assert_cmpuint(lmwb_plot_series_length(p, f.series), ==, 0);
  cairo_destroy(cr);
  cairo_surface_destroy(s);
  lmwb_plot_free(p);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  tmpdir = g_dir_make_tmp("lmwb-plot-XXXXXX", NULL);
  g_assert_nonnull(tmpdir);
  g_test_add_func("/plot/ticks", test_ticks);
  g_test_add_func("/plot/colormap", test_colormap);
  g_test_add_func("/plot/line", test_line);
  g_test_add_func("/plot/line_hit", test_line_hit);
  g_test_add_func("/plot/scatter_log", test_scatter_log);
  g_test_add_func("/plot/bars", test_bars);
  g_test_add_func("/plot/heatmap", test_heatmap);
  g_test_add_func("/plot/heatmap_attention", test_heatmap_attention);
  g_test_add_func("/plot/empty", test_empty);
  g_test_add_func("/plot/formats", test_formats);
  g_test_add_func("/plot/threads", test_threads);
  g_test_add_func("/plot/robust", test_robust);
  int rc = g_test_run();
  /* Remove what the tests wrote. */
  GDir *dir = g_dir_open(tmpdir, 0, NULL);
  const char *name;
  while (dir && (name = g_dir_read_name(dir))) {
    char *f = g_build_filename(tmpdir, name, NULL);
    g_remove(f);
    g_free(f);
  }
  if (dir) g_dir_close(dir);
  g_rmdir(tmpdir);
  g_free(tmpdir);
  return rc;
}
