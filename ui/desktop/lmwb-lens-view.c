/* Logit lens view: a heatmap of layers × positions; each cell shows the top token that layer's
 * residual stream predicts (through the final norm and unembedding), coloured by its
 * probability; the tooltip lists the top 5. The last layer is at the top, the embeddings at the
 * bottom, as the residual stream flows upward. Dump lines: "lens rows=R cols=C", then per row
 * "lens NAME: [TOKEN P] …". */
#include "ui/desktop/lmwb-view.h"

#define LMWB_TYPE_LENS_VIEW (lmwb_lens_view_get_type())
G_DECLARE_FINAL_TYPE(LmwbLensView, lmwb_lens_view, LMWB, LENS_VIEW, GtkBox)

struct _LmwbLensView {
  GtkBox parent;
  LmwbPlotView *heatmap;
  LmwbAnalysis *analysis;
};

static void view_iface_init(LmwbViewInterface *iface);

G_DEFINE_FINAL_TYPE_WITH_CODE(LmwbLensView, lmwb_lens_view, GTK_TYPE_BOX,
                              G_IMPLEMENT_INTERFACE(LMWB_TYPE_VIEW, view_iface_init))

/* Heatmap row 0 is drawn at the top: it holds the last layer. */
static int lens_row(const LmwbAnalysis *a, int plot_row) { return a->lens->n_rows - 1 - plot_row; }

static char *cell_tooltip(LmwbPlot *plot, const LmwbPlotHit *hit, gpointer user) {
  LmwbLensView *v = user;
  LmwbAnalysis *a = v->analysis;
  if (!a || hit->kind != LMWB_PLOT_HEATMAP || hit->row < 0 || hit->col < 0 || hit->row >= a->lens->n_rows ||
      hit->col >= a->n)
    return NULL;
  int row = lens_row(a, hit->row), pos = hit->col;
  g_autofree char *rname = lmwb_logit_lens_row_name(row);
  g_autofree char *tok = lmwb_token_display(a->texts[pos]);
  GString *s = g_string_new(NULL);
  g_string_append_printf(s, "%s, position %d (after “%s”)", row == 0 ? "embeddings" : rname, pos, tok);
  const float *p = lmwb_logit_lens_probs(a->lens, row, pos);
  for (int i = 0; i < a->lens->k; i++) {
    g_autofree char *t = lmwb_token_display(lmwb_analysis_lens_text(a, row, pos, i));
    g_string_append_printf(s, "\n%d. %-14s %5.1f%%", i + 1, t, 100.0 * p[i]);
  }
  return g_string_free(s, FALSE);
}

static void dispose(GObject *o) {
  LmwbLensView *v = LMWB_LENS_VIEW(o);
  g_clear_pointer(&v->analysis, lmwb_analysis_unref);
  gtk_widget_dispose_template(GTK_WIDGET(o), LMWB_TYPE_LENS_VIEW);
  G_OBJECT_CLASS(lmwb_lens_view_parent_class)->dispose(o);
}

static void lmwb_lens_view_class_init(LmwbLensViewClass *k) {
  G_OBJECT_CLASS(k)->dispose = dispose;
  g_type_ensure(LMWB_TYPE_PLOT_VIEW);
  GtkWidgetClass *wk = GTK_WIDGET_CLASS(k);
  gtk_widget_class_set_template_from_resource(wk, "/org/lmwb/Workbench/lmwb-lens-view.ui");
  gtk_widget_class_bind_template_child(wk, LmwbLensView, heatmap);
}

static void lmwb_lens_view_init(LmwbLensView *v) {
  gtk_widget_init_template(GTK_WIDGET(v));
  lmwb_plot_view_set_tooltip_func(v->heatmap, cell_tooltip, v);
  lmwb_plot_view_set_plot(v->heatmap, lmwb_plot_new(LMWB_PLOT_HEATMAP, "Logit lens", "position", "layer"));
}

static void set_analysis(LmwbView *view, LmwbAnalysis *a) {
  LmwbLensView *v = LMWB_LENS_VIEW(view);
  if (a) lmwb_analysis_ref(a);
  g_clear_pointer(&v->analysis, lmwb_analysis_unref);
  v->analysis = a;
  LmwbPlot *plot = lmwb_plot_new(LMWB_PLOT_HEATMAP, "Logit lens: top next token per layer and position",
                                 "position (input token)", "layer");
  if (a) {
    int R = a->lens->n_rows, C = a->n;
    double *vals = g_new(double, (size_t)R * C);
    char **cells = g_new0(char *, (size_t)R * C);
    char **rows = g_new0(char *, R), **cols = g_new0(char *, C);
    for (int pr = 0; pr < R; pr++) {
      int row = lens_row(a, pr);
      rows[pr] = row == 0 ? g_strdup("embed") : lmwb_logit_lens_row_name(row);
      for (int t = 0; t < C; t++) {
        vals[(size_t)pr * C + t] = lmwb_logit_lens_probs(a->lens, row, t)[0];
        cells[(size_t)pr * C + t] = lmwb_token_display(lmwb_analysis_lens_text(a, row, t, 0));
      }
    }
    for (int t = 0; t < C; t++) cols[t] = lmwb_token_display(a->texts[t]);
    /* Probabilities: a fixed 0..1 scale so colours compare across prompts and models. */
    lmwb_plot_set_heatmap(plot, R, C, vals, (const char *const *)cells, (const char *const *)rows,
                          (const char *const *)cols, 0.0, 1.0);
    for (size_t i = 0; i < (size_t)R * C; i++) g_free(cells[i]);
    for (int i = 0; i < R; i++) g_free(rows[i]);
    for (int i = 0; i < C; i++) g_free(cols[i]);
    g_free(cells), g_free(rows), g_free(cols), g_free(vals);
  }
  lmwb_plot_view_set_plot(v->heatmap, plot);
}

static LmwbPlotView *current_plot(LmwbView *view) { return LMWB_LENS_VIEW(view)->heatmap; }

static char *describe(LmwbView *view) {
  LmwbAnalysis *a = LMWB_LENS_VIEW(view)->analysis;
  if (!a) return g_strdup("lens rows=0 cols=0\n");
  GString *s = g_string_new(NULL);
  g_string_append_printf(s, "lens rows=%d cols=%d\n", a->lens->n_rows, a->n);
  for (int row = a->lens->n_rows - 1; row >= 0; row--) {
    g_autofree char *name = lmwb_logit_lens_row_name(row);
    g_string_append_printf(s, "lens %s:", name);
    for (int t = 0; t < a->n; t++) {
      g_autofree char *e = g_strescape(lmwb_analysis_lens_text(a, row, t, 0), NULL);
      g_string_append_printf(s, " [%s %.4f]", e, lmwb_logit_lens_probs(a->lens, row, t)[0]);
    }
    g_string_append_c(s, '\n');
  }
  return g_string_free(s, FALSE);
}

static void view_iface_init(LmwbViewInterface *iface) {
  static const LmwbViewInfo info = {.id = "lens", .title = "Logit Lens", .icon_name = "view-grid-symbolic"};
  iface->info = &info;
  iface->set_analysis = set_analysis;
  iface->current_plot = current_plot;
  iface->describe = describe;
}
