/* Model view: what the model is (architecture, sizes, tokenizer) and what it predicts for the
 * prompt: the token strip (each position's token with its top next-token predictions and their
 * probabilities; the tooltip lists the top 5) and a bar plot of the prediction after the last
 * token. Dump lines: "token POS "TEXT" -> "TOP1" P1" per position. */
#include "ui/desktop/lmwb-view.h"
#include "app/formats/tokenizer.h"

#define LMWB_TYPE_MODEL_VIEW (lmwb_model_view_get_type())
G_DECLARE_FINAL_TYPE(LmwbModelView, lmwb_model_view, LMWB, MODEL_VIEW, GtkBox)

struct _LmwbModelView {
  GtkBox parent;
  GtkGrid *info_grid;
  GtkFlowBox *strip;
  LmwbPlotView *next_plot;
  LmwbAnalysis *analysis;
};

static void view_iface_init(LmwbViewInterface *iface);

G_DEFINE_FINAL_TYPE_WITH_CODE(LmwbModelView, lmwb_model_view, GTK_TYPE_BOX,
                              G_IMPLEMENT_INTERFACE(LMWB_TYPE_VIEW, view_iface_init))

static void dispose(GObject *o) {
  LmwbModelView *v = LMWB_MODEL_VIEW(o);
  g_clear_pointer(&v->analysis, lmwb_analysis_unref);
  gtk_widget_dispose_template(GTK_WIDGET(o), LMWB_TYPE_MODEL_VIEW);
  G_OBJECT_CLASS(lmwb_model_view_parent_class)->dispose(o);
}

static void lmwb_model_view_class_init(LmwbModelViewClass *k) {
  G_OBJECT_CLASS(k)->dispose = dispose;
  g_type_ensure(LMWB_TYPE_PLOT_VIEW);
  GtkWidgetClass *wk = GTK_WIDGET_CLASS(k);
  gtk_widget_class_set_template_from_resource(wk, "/org/lmwb/Workbench/lmwb-model-view.ui");
  gtk_widget_class_bind_template_child(wk, LmwbModelView, info_grid);
  gtk_widget_class_bind_template_child(wk, LmwbModelView, strip);
  gtk_widget_class_bind_template_child(wk, LmwbModelView, next_plot);
}

static void lmwb_model_view_init(LmwbModelView *v) {
  gtk_widget_init_template(GTK_WIDGET(v));
  lmwb_plot_view_set_plot(v->next_plot, lmwb_plot_new(LMWB_PLOT_BAR, "Next token after the prompt", "probability", NULL));
}

static void clear_children(GtkWidget *w) {
  GtkWidget *c;
  while ((c = gtk_widget_get_first_child(w))) {
    if (GTK_IS_FLOW_BOX(w)) gtk_flow_box_remove(GTK_FLOW_BOX(w), c);
    else if (GTK_IS_GRID(w)) gtk_grid_remove(GTK_GRID(w), c);
    else gtk_widget_unparent(c);
  }
}

static void add_info(LmwbModelView *v, int row, int col, const char *key, const char *value) {
  GtkWidget *k = gtk_label_new(key), *val = gtk_label_new(value);
  gtk_label_set_xalign(GTK_LABEL(k), 0);
  gtk_label_set_xalign(GTK_LABEL(val), 0);
  gtk_label_set_selectable(GTK_LABEL(val), TRUE);
  gtk_widget_add_css_class(k, "dim-label");
  gtk_grid_attach(v->info_grid, k, col * 2, row, 1, 1);
  gtk_grid_attach(v->info_grid, val, col * 2 + 1, row, 1, 1);
}

static void set_model(LmwbView *view, LmwbModel *m) {
  LmwbModelView *v = LMWB_MODEL_VIEW(view);
  clear_children(GTK_WIDGET(v->info_grid));
  if (!m) return;
  const LmwbConfig *c = &m->cfg;
  char buf[256];
  add_info(v, 0, 0, "Folder", m->dir ? m->dir : "(in memory)");
  g_snprintf(buf, sizeof buf, "%s (%s)", c->model_type, lmwb_arch_name(c->arch));
  add_info(v, 1, 0, "Architecture", buf);
  uint64_t np = lmwb_model_param_count(m);
  g_snprintf(buf, sizeof buf, np >= 1000000 ? "%.2f M (%s on disk)" : "%.1f k (%s on disk)",
             np >= 1000000 ? np / 1e6 : np / 1e3, m->source_dtype);
  add_info(v, 2, 0, "Parameters", buf);
  g_snprintf(buf, sizeof buf, "%d layers · d_model %d · d_ff %d", c->n_layer, c->d_model, c->d_ff);
  add_info(v, 0, 1, "Sizes", buf);
  g_snprintf(buf, sizeof buf, "%d query / %d key-value heads of %d", c->n_head, c->n_kv_head, c->head_dim);
  add_info(v, 1, 1, "Attention", buf);
  g_snprintf(buf, sizeof buf, "%s · %s MLP · %s positions%s", c->norm == LMWB_NORM_LAYER ? "LayerNorm" : "RMSNorm",
             c->gated_mlp ? "gated" : "dense", c->learned_pos ? "learned" : "rotary",
             c->parallel_residual ? " · parallel residual" : "");
  add_info(v, 2, 1, "Layout", buf);
  g_snprintf(buf, sizeof buf, "%s · vocabulary %d · context %d",
             m->tokenizer ? lmwb_tokenizer_kind(m->tokenizer) : "none", c->vocab_size, c->n_ctx);
  add_info(v, 3, 0, "Tokenizer", buf);
}

/* One token card: the token, then the top 3 next-token predictions with probabilities. */
static GtkWidget *token_card(const LmwbAnalysis *a, int pos) {
  const LmwbLogitLens *l = a->lens;
  int last = l->n_rows - 1;
  const float *p = lmwb_logit_lens_probs(l, last, pos);
  GtkWidget *box = gtk_box_new(GTK_ORIENTATION_VERTICAL, 1);
  gtk_widget_add_css_class(box, "token-card");
  g_autofree char *tok = lmwb_token_display(a->texts[pos]);
  GtkWidget *t = gtk_label_new(tok);
  gtk_widget_add_css_class(t, "token");
  gtk_box_append(GTK_BOX(box), t);
  GString *tip = g_string_new(NULL);
  g_string_append_printf(tip, "position %d: “%s” (id %d)\nnext token:", pos, tok, a->ids[pos]);
  for (int i = 0; i < l->k; i++) {
    g_autofree char *pred = lmwb_token_display(lmwb_analysis_lens_text(a, last, pos, i));
    g_string_append_printf(tip, "\n  %5.1f%%  %s", 100.0 * p[i], pred);
    if (i < 3) {
      g_autofree char *line = g_strdup_printf("%s %.0f%%", pred, 100.0 * p[i]);
      GtkWidget *pl = gtk_label_new(line);
      gtk_label_set_xalign(GTK_LABEL(pl), 0);
      gtk_label_set_ellipsize(GTK_LABEL(pl), PANGO_ELLIPSIZE_END);
      gtk_label_set_max_width_chars(GTK_LABEL(pl), 14);
      gtk_widget_add_css_class(pl, i == 0 ? "pred-top" : "pred");
      gtk_box_append(GTK_BOX(box), pl);
    }
  }
  gtk_widget_set_tooltip_text(box, tip->str);
  g_string_free(tip, TRUE);
  return box;
}

static void set_analysis(LmwbView *view, LmwbAnalysis *a) {
  LmwbModelView *v = LMWB_MODEL_VIEW(view);
  clear_children(GTK_WIDGET(v->strip));
  if (a) lmwb_analysis_ref(a);
  g_clear_pointer(&v->analysis, lmwb_analysis_unref);
  v->analysis = a;
  LmwbPlot *plot = lmwb_plot_new(LMWB_PLOT_BAR, "Next token after the prompt", "probability", NULL);
  if (a) {
    for (int i = 0; i < a->n; i++) gtk_flow_box_append(v->strip, token_card(a, i));
    const LmwbLogitLens *l = a->lens;
    int last = l->n_rows - 1, pos = a->n - 1;
    const float *p = lmwb_logit_lens_probs(l, last, pos);
    char *labels[LMWB_LOGIT_LENS_MAX_K];
    double vals[LMWB_LOGIT_LENS_MAX_K];
    for (int i = 0; i < l->k; i++) {
      labels[i] = lmwb_token_display(lmwb_analysis_lens_text(a, last, pos, i));
      vals[i] = p[i];
    }
    lmwb_plot_set_bars(plot, l->k, (const char *const *)labels, vals);
    for (int i = 0; i < l->k; i++) g_free(labels[i]);
  }
  lmwb_plot_view_set_plot(v->next_plot, plot);
}

static LmwbPlotView *current_plot(LmwbView *view) { return LMWB_MODEL_VIEW(view)->next_plot; }

static char *describe(LmwbView *view) {
  LmwbAnalysis *a = LMWB_MODEL_VIEW(view)->analysis;
  if (!a) return g_strdup("model-view: no prompt analysed\n");
  GString *s = g_string_new(NULL);
  int last = a->lens->n_rows - 1;
  for (int i = 0; i < a->n; i++) {
    const float *p = lmwb_logit_lens_probs(a->lens, last, i);
    g_string_append_printf(s, "token %d \"%s\" -> \"%s\" %.4f\n", i, a->texts[i],
                           lmwb_analysis_lens_text(a, last, i, 0), p[0]);
  }
  return g_string_free(s, FALSE);
}

static void view_iface_init(LmwbViewInterface *iface) {
  static const LmwbViewInfo info = {.id = "model", .title = "Model", .icon_name = "dialog-information-symbolic"};
  iface->info = &info;
  iface->set_model = set_model;
  iface->set_analysis = set_analysis;
  iface->current_plot = current_plot;
  iface->describe = describe;
}
