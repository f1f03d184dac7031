/* Neuron explorer: search MLP neurons by the token they promote (decoded through the LM head by
 * analysis/neurons.h), list them with their decoded top tokens, and for the selected neuron show
 * its top tokens (bar plot), its activation at each prompt position (blocks.L.mlp.hook_post), a
 * clamp slider that regenerates the continuation live (debounced, on a worker thread) and a sweep
 * that plots the target token's probability against the clamp value as the points arrive.
 * Actions (neurons.*): search 'TOKEN' (or 'L:N'), select 'L:N', clamp VALUE, unclamp, sweep,
 * sweep-steps N (clamp values per sweep, 2..10000), find (focus the search entry). */
#include "ui/desktop/lmwb-view.h"
#include "analysis/neurons.h"
#include "app/core/errors.h"
#include "app/engine/generate.h"
#include "app/formats/tokenizer.h"
#include "ui/desktop/lmwb-job.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOP_TOKENS 10      /* bars in the selected neuron's token plot */
#define LIST_TOKENS 6      /* decoded tokens shown per list row */
#define SEARCH_LIMIT 100   /* neurons listed per search */
#define CONTINUATION 16    /* tokens generated for the baseline and the clamped continuation */
#define CLAMP_DEBOUNCE_MS 150
#define SWEEP_STEPS 41

#define LMWB_TYPE_NEURON_VIEW (lmwb_neuron_view_get_type())
G_DECLARE_FINAL_TYPE(LmwbNeuronView, lmwb_neuron_view, LMWB, NEURON_VIEW, GtkBox)

struct _LmwbNeuronView {
  GtkBox parent;
  GtkSearchEntry *search_entry;
  GtkDropDown *which_drop;
  GtkLabel *search_status, *neuron_title, *baseline_label, *clamped_label;
  GtkListBox *hit_list;
  LmwbPlotView *tokens_plot, *act_plot, *sweep_plot;
  GtkScale *clamp_scale;
  GtkAdjustment *clamp_adj;
  GtkEntry *target_entry;

  LmwbModel *model;
  LmwbAnalysis *analysis;

  int layer, neuron;      /* selected; -1 none */
  int32_t top_token;      /* the selected neuron's top decoded token */
  guint serial;           /* bumped by every selection / model / prompt change: stale results are dropped */
  char *baseline, *clamped;
  double clamped_value;
  gboolean clamp_on;
  guint debounce_id;      /* the clamp waits for the slider to rest: the view is busy meanwhile */
  LmwbJob *clamp_job;     /* running jobs (valid until their done has run) */
  gboolean clamp_pending;
  LmwbJob *sweep_job;
  int n_hits;
  int sweep_points;
  int sweep_steps;
};

static void view_iface_init(LmwbViewInterface *iface);

G_DEFINE_FINAL_TYPE_WITH_CODE(LmwbNeuronView, lmwb_neuron_view, GTK_TYPE_BOX,
                              G_IMPLEMENT_INTERFACE(LMWB_TYPE_VIEW, view_iface_init))

static LmwbNeuronWhich current_which(LmwbNeuronView *v) {
  return gtk_drop_down_get_selected(v->which_drop) == 1 ? LMWB_NEURON_OUT : LMWB_NEURON_IN;
}

static char *decode_ids(const LmwbModel *m, const int32_t *ids, int n) {
  return lmwb_tokenizer_decode(m->tokenizer, ids, n, FALSE, NULL);
}

/* ---- jobs (worker side: no GTK) ------------------------------------------------------------ */

typedef struct {
  LmwbModel *model;
  guint serial;
  char *text;
  LmwbNeuronWhich which;
  int layer, neuron;
  int32_t *ids;
  int n;
  double value, from, to;
  int32_t target;
  int steps;
} JobIn;

static JobIn *job_in_new(LmwbNeuronView *v) {
  JobIn *in = g_new0(JobIn, 1);
  in->model = lmwb_model_ref(v->model);
  in->serial = v->serial;
  in->which = current_which(v);
  in->layer = v->layer;
  in->neuron = v->neuron;
  if (v->analysis) {
    in->n = v->analysis->n;
    in->ids = g_memdup2(v->analysis->ids, sizeof(int32_t) * in->n);
  }
  return in;
}

static void job_in_free(gpointer p) {
  JobIn *in = p;
  lmwb_model_unref(in->model);
  g_free(in->text);
  g_free(in->ids);
  g_free(in);
}

typedef struct {
  int n;
  LmwbNeuronHit *hits;
  char **tops; /* [n] "dog, cat, …" */
  char *token;
} SearchOut;

static void search_out_free(gpointer p) {
  SearchOut *o = p;
  for (int i = 0; i < o->n; i++) g_free(o->tops[i]);
  g_free(o->tops);
  g_free(o->hits);
  g_free(o->token);
  g_free(o);
}

static char *top_tokens_line(const LmwbModel *m, LmwbNeuronWhich which, int layer, int neuron, int k, GError **error) {
  int32_t ids[TOP_TOKENS];
  float probs[TOP_TOKENS];
  k = MIN(k, m->cfg.vocab_size);
  if (!lmwb_neurons_decode_one(m, which, layer, neuron, true, k, ids, NULL, probs, NULL, error)) return NULL;
  GString *s = g_string_new(NULL);
  for (int i = 0; i < k; i++) {
    g_autofree char *t = lmwb_tokenizer_token_text(m->tokenizer, ids[i]);
    g_autofree char *d = lmwb_token_display(t);
    g_string_append_printf(s, "%s%s", i ? "  " : "", d);
  }
  return g_string_free(s, FALSE);
}

static gpointer run_search(gpointer data, LmwbReporter *rep, GError **error) {
  JobIn *in = data;
  LmwbModel *m = in->model;
  int32_t tok;
  if (!lmwb_neurons_token_lookup(m, in->text, &tok, error)) return NULL;
  LmwbNeuronSearchOptions o = {0};
  lmwb_neuron_decode_options_init(&o.decode);
  o.decode.which = in->which;
  o.tokens = &tok;
  o.n_tokens = 1;
  o.limit = SEARCH_LIMIT;
  SearchOut *out = g_new0(SearchOut, 1);
  out->hits = lmwb_neurons_search(m, &o, &out->n, rep, error);
  if (!out->hits) {
    g_free(out);
    return NULL;
  }
  out->token = lmwb_tokenizer_token_text(m->tokenizer, tok);
  out->tops = g_new0(char *, MAX(out->n, 1));
  for (int i = 0; i < out->n; i++) {
    out->tops[i] = top_tokens_line(m, in->which, out->hits[i].layer, out->hits[i].index, LIST_TOKENS, error);
    if (!out->tops[i]) {
      search_out_free(out);
      return NULL;
    }
  }
  return out;
}

typedef struct {
  int k;
  int32_t ids[TOP_TOKENS];
  float probs[TOP_TOKENS];
  char *texts[TOP_TOKENS];
  float *act; /* [n] */
  int n;
  char **pos_texts;
  char *baseline;
  float act_absmax;
} SelectOut;

static void select_out_free(gpointer p) {
  SelectOut *o = p;
  for (int i = 0; i < o->k; i++) g_free(o->texts[i]);
  for (int i = 0; i < o->n; i++) g_free(o->pos_texts[i]);
  g_free(o->pos_texts);
  g_free(o->act);
  g_free(o->baseline);
  g_free(o);
}

/* Greedy continuation of the prompt, with the neuron clamped when clamp is TRUE. */
static char *continuation(LmwbModel *m, const JobIn *in, gboolean clamp, double value, LmwbReporter *rep,
                          GError **error) {
  LmwbRunner *r = lmwb_runner_new(m);
  if (clamp) {
    LmwbNeuronClamp c = {.layer = in->layer, .neuron = in->neuron, .value = (float)value};
    if (!lmwb_neuron_clamp_add(r, &c, error)) {
      lmwb_runner_free(r);
      return NULL;
    }
  }
  LmwbGenerateOptions go;
  lmwb_generate_options_init(&go);
  go.max_tokens = MIN(CONTINUATION, m->cfg.n_ctx - in->n);
  go.temperature = 0;
  go.stop_at_eos = true;
  int n_out = 0;
  char *text = NULL;
  if (go.max_tokens <= 0) {
    text = g_strdup("(the prompt fills the context)");
  } else {
    int32_t *ids = lmwb_generate(r, in->ids, in->n, &go, &n_out, NULL, rep, error);
    if (ids) text = decode_ids(m, ids, n_out);
    g_free(ids);
  }
  lmwb_runner_free(r);
  return text;
}

static gpointer run_select(gpointer data, LmwbReporter *rep, GError **error) {
  JobIn *in = data;
  LmwbModel *m = in->model;
  SelectOut *o = g_new0(SelectOut, 1);
  o->k = MIN(TOP_TOKENS, m->cfg.vocab_size);
  if (!lmwb_neurons_decode_one(m, in->which, in->layer, in->neuron, true, o->k, o->ids, NULL, o->probs, NULL, error)) {
    o->k = 0;
    goto fail;
  }
  for (int i = 0; i < o->k; i++) o->texts[i] = lmwb_tokenizer_token_text(m->tokenizer, o->ids[i]);
  if (in->n > 0) {
    lmwb_report_progress(rep, 0.3, "activations");
    LmwbRunner *r = lmwb_runner_new(m);
    gboolean ok = lmwb_runner_forward(r, in->ids, 1, in->n, NULL, error);
    int64_t shape[4];
    int nd = 0;
    const float *a = ok ? lmwb_runner_activation(r, (LmwbSite){LMWB_SITE_MLP_POST, in->layer}, shape, &nd, error) : NULL;
    if (a && (nd != 3 || shape[1] != in->n || in->neuron >= shape[2])) {
      lmwb_input_error(error, "blocks.%d.mlp.hook_post has an unexpected shape", in->layer);
      a = NULL;
    }
    if (a) {
      o->n = in->n;
      o->act = g_new(float, in->n);
      o->pos_texts = g_new0(char *, in->n);
      for (int t = 0; t < in->n; t++) {
        o->act[t] = a[(size_t)t * shape[2] + in->neuron];
        o->act_absmax = MAX(o->act_absmax, fabsf(o->act[t]));
        g_autofree char *tt = lmwb_tokenizer_token_text(m->tokenizer, in->ids[t]);
        o->pos_texts[t] = g_strdup_printf("%d %s", t, tt ? tt : "?");
      }
    }
    lmwb_runner_free(r);
    if (!a) goto fail;
    lmwb_report_progress(rep, 0.6, "baseline continuation");
    o->baseline = continuation(m, in, FALSE, 0, rep, error);
    if (!o->baseline) goto fail;
  }
  return o;
fail:
  select_out_free(o);
  return NULL;
}

typedef struct {
  double value;
  char *text;
} ClampOut;

static void clamp_out_free(gpointer p) {
  ClampOut *o = p;
  g_free(o->text);
  g_free(o);
}

static gpointer run_clamp(gpointer data, LmwbReporter *rep, GError **error) {
  JobIn *in = data;
  ClampOut *o = g_new0(ClampOut, 1);
  o->value = in->value;
  o->text = continuation(in->model, in, TRUE, in->value, rep, error);
  if (!o->text) {
    g_free(o);
    return NULL;
  }
  return o;
}

static gpointer run_sweep(gpointer data, LmwbReporter *rep, GError **error) {
  JobIn *in = data;
  LmwbModel *m = in->model;
  int32_t target = in->target;
  if (in->text && *in->text && !lmwb_neurons_token_lookup(m, in->text, &target, error)) return NULL;
  LmwbNeuronSweepOptions o = {.layer = in->layer, .neuron = in->neuron, .target = target, .prompt = in->ids,
                              .n_prompt = in->n, .from = in->from, .to = in->to, .steps = in->steps};
  return lmwb_neurons_sweep(m, &o, rep, error);
}

/* ---- main-loop side ------------------------------------------------------------------------ */

static LmwbJob *start(LmwbNeuronView *v, const char *title, LmwbJobFunc fn, JobIn *in, GDestroyNotify result_free,
                      LmwbJobDone done, LmwbJobMetric metric) {
  LmwbJob *job = lmwb_job_new(title, fn, in, job_in_free);
  lmwb_job_on_done(job, done, result_free);
  lmwb_job_on_metric(job, metric);
  return lmwb_job_start(job, GTK_WIDGET(v));
}

static void set_title(LmwbNeuronView *v) {
  if (v->layer < 0) {
    gtk_label_set_text(v->neuron_title, "No neuron selected");
    return;
  }
  g_autofree char *t = g_strdup_printf("Layer %d · neuron %d · decoded from its %s vector", v->layer, v->neuron,
                                       current_which(v) == LMWB_NEURON_OUT ? "output" : "input");
  gtk_label_set_text(v->neuron_title, t);
}

static void select_neuron(LmwbNeuronView *v, int layer, int neuron);

static void on_row_activated(GtkListBox *box, GtkListBoxRow *row, gpointer user) {
  LmwbNeuronView *v = user;
  int layer = GPOINTER_TO_INT(g_object_get_data(G_OBJECT(row), "layer"));
  int neuron = GPOINTER_TO_INT(g_object_get_data(G_OBJECT(row), "neuron"));
  select_neuron(v, layer, neuron);
}

static void clear_hits(LmwbNeuronView *v) {
  GtkWidget *c;
  while ((c = gtk_widget_get_first_child(GTK_WIDGET(v->hit_list)))) gtk_list_box_remove(v->hit_list, c);
  v->n_hits = 0;
}

static void search_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbNeuronView *v = LMWB_NEURON_VIEW(owner);
  JobIn *in = data;
  if (in->serial != v->serial && !v->model) return;
  if (error) {
    gtk_label_set_text(v->search_status, lmwb_job_cancelled(error) ? "Search cancelled." : error->message);
    lmwb_view_show_job_error(LMWB_VIEW(v), error);
    return;
  }
  SearchOut *o = result;
  clear_hits(v);
  v->n_hits = o->n;
  g_autofree char *tok = lmwb_token_display(o->token);
  g_autofree char *status = g_strdup_printf("%d neurons rank “%s” highest (best first). Click one to explore it.", o->n, tok);
  gtk_label_set_text(v->search_status, status);
  for (int i = 0; i < o->n; i++) {
    const LmwbNeuronHit *h = &o->hits[i];
    GtkWidget *box = gtk_box_new(GTK_ORIENTATION_VERTICAL, 2);
    gtk_widget_set_margin_start(box, 8), gtk_widget_set_margin_end(box, 8);
    gtk_widget_set_margin_top(box, 4), gtk_widget_set_margin_bottom(box, 4);
    g_autofree char *head = g_strdup_printf("<b>L%d · N%d</b>   rank %d · p=%.3g", h->layer, h->index, h->rank, h->prob);
    GtkWidget *hl = gtk_label_new(NULL);
    gtk_label_set_markup(GTK_LABEL(hl), head);
    gtk_label_set_xalign(GTK_LABEL(hl), 0);
    GtkWidget *tl = gtk_label_new(o->tops[i]);
    gtk_label_set_xalign(GTK_LABEL(tl), 0);
    gtk_label_set_ellipsize(GTK_LABEL(tl), PANGO_ELLIPSIZE_END);
    gtk_widget_add_css_class(tl, "dim-label");
    gtk_widget_add_css_class(tl, "monospace");
    gtk_box_append(GTK_BOX(box), hl);
    gtk_box_append(GTK_BOX(box), tl);
    GtkWidget *row = gtk_list_box_row_new();
    gtk_list_box_row_set_child(GTK_LIST_BOX_ROW(row), box);
    g_object_set_data(G_OBJECT(row), "layer", GINT_TO_POINTER(h->layer));
    g_object_set_data(G_OBJECT(row), "neuron", GINT_TO_POINTER(h->index));
    gtk_list_box_append(v->hit_list, row);
  }
}

static void search(LmwbNeuronView *v, const char *text) {
  if (!v->model || !text || !*text) return;
  if (g_strcmp0(gtk_editable_get_text(GTK_EDITABLE(v->search_entry)), text))
    gtk_editable_set_text(GTK_EDITABLE(v->search_entry), text);
  /* "3:127" jumps straight to a neuron. */
  int layer, neuron;
  char tail;
  if (sscanf(text, "%d:%d%c", &layer, &neuron, &tail) == 2) {
    select_neuron(v, layer, neuron);
    return;
  }
  JobIn *in = job_in_new(v);
  in->text = g_strdup(text);
  gtk_label_set_text(v->search_status, "Searching…");
  start(v, "Searching neurons", run_search, in, search_out_free, search_done, NULL);
}

static void update_clamp_label(LmwbNeuronView *v) {
  if (!v->clamp_on || !v->clamped) {
    gtk_label_set_text(v->clamped_label, v->layer >= 0 ? "Clamped: drag the slider to clamp this neuron" : " ");
    return;
  }
  g_autofree char *esc = g_markup_escape_text(v->clamped, -1);
  g_autofree char *t = g_strdup_printf("<b>Clamped at %.2f:</b> %s", v->clamped_value, esc);
  gtk_label_set_markup(v->clamped_label, t);
}

static void set_clamp(LmwbNeuronView *v, double value);

static void select_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbNeuronView *v = LMWB_NEURON_VIEW(owner);
  JobIn *in = data;
  if (in->serial != v->serial) return;
  if (error) {
    lmwb_view_show_job_error(LMWB_VIEW(v), error);
    return;
  }
  SelectOut *o = result;
  v->top_token = o->k > 0 ? o->ids[0] : -1;
  char *labels[TOP_TOKENS];
  double vals[TOP_TOKENS];
  for (int i = 0; i < o->k; i++) {
    labels[i] = lmwb_token_display(o->texts[i]);
    vals[i] = o->probs[i];
  }
  LmwbPlot *tp = lmwb_plot_new(LMWB_PLOT_BAR, "Decoded top tokens", "probability", NULL);
  lmwb_plot_set_bars(tp, o->k, (const char *const *)labels, vals);
  for (int i = 0; i < o->k; i++) g_free(labels[i]);
  lmwb_plot_view_set_plot(v->tokens_plot, tp);

  LmwbPlot *ap = lmwb_plot_new(LMWB_PLOT_BAR, "Activation at each prompt position", "mlp.hook_post", NULL);
  if (o->n > 0) {
    double *av = g_new(double, o->n);
    char **al = g_new0(char *, o->n);
    for (int t = 0; t < o->n; t++) {
      av[t] = o->act[t];
      al[t] = lmwb_token_display(o->pos_texts[t]);
    }
    lmwb_plot_set_bars(ap, o->n, (const char *const *)al, av);
    for (int t = 0; t < o->n; t++) g_free(al[t]);
    g_free(al), g_free(av);
  }
  lmwb_plot_view_set_plot(v->act_plot, ap);

  /* Slider range: a few times the largest activation seen on the prompt, at least ±10. */
  double range = MAX(10.0, ceil(4.0 * o->act_absmax));
  gtk_adjustment_configure(v->clamp_adj, gtk_adjustment_get_value(v->clamp_adj), -range, range, range / 100, range / 10, 0);
  gtk_widget_set_sensitive(GTK_WIDGET(v->clamp_scale), TRUE);
  g_free(v->baseline);
  v->baseline = g_strdup(o->baseline ? o->baseline : "");
  g_autofree char *esc = g_markup_escape_text(v->baseline, -1);
  g_autofree char *bl = g_strdup_printf("<b>Continuation:</b> %s", esc);
  gtk_label_set_markup(v->baseline_label, bl);
  if (v->clamp_on) set_clamp(v, gtk_adjustment_get_value(v->clamp_adj));
  update_clamp_label(v);
}

static void empty_plots(LmwbNeuronView *v) {
  lmwb_plot_view_set_plot(v->tokens_plot, lmwb_plot_new(LMWB_PLOT_BAR, "Decoded top tokens", "probability", NULL));
  lmwb_plot_view_set_plot(v->act_plot, lmwb_plot_new(LMWB_PLOT_BAR, "Activation at each prompt position", "mlp.hook_post", NULL));
  lmwb_plot_view_set_plot(v->sweep_plot, lmwb_plot_new(LMWB_PLOT_LINE, "Clamp sweep", "clamp value", "p(target)"));
}

static void reset_selection_views(LmwbNeuronView *v) {
  v->serial++;
  g_clear_pointer(&v->clamped, g_free);
  g_clear_pointer(&v->baseline, g_free);
  v->clamp_on = FALSE;
  v->sweep_points = 0;
  gtk_label_set_text(v->baseline_label, " ");
  update_clamp_label(v);
  lmwb_plot_view_set_plot(v->sweep_plot, lmwb_plot_new(LMWB_PLOT_LINE, "Clamp sweep", "clamp value", "p(target)"));
}

static void select_neuron(LmwbNeuronView *v, int layer, int neuron) {
  if (!v->model) return;
  LmwbModel *m = v->model;
  if (layer < 0 || layer >= m->cfg.n_layer || neuron < 0 || neuron >= m->cfg.d_ff) {
    g_autofree char *msg = g_strdup_printf("neuron %d:%d does not exist: the model has %d layers of %d neurons",
                                           layer, neuron, m->cfg.n_layer, m->cfg.d_ff);
    lmwb_view_show_error(LMWB_VIEW(v), msg);
    return;
  }
  v->layer = layer;
  v->neuron = neuron;
  reset_selection_views(v);
  set_title(v);
  start(v, "Loading neuron", run_select, job_in_new(v), select_out_free, select_done, NULL);
}

static void clamp_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data);

static void start_clamp_job(LmwbNeuronView *v) {
  JobIn *in = job_in_new(v);
  in->value = gtk_adjustment_get_value(v->clamp_adj);
  v->clamp_job = start(v, "Generating with the clamp", run_clamp, in, clamp_out_free, clamp_done, NULL);
}

static void clamp_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbNeuronView *v = LMWB_NEURON_VIEW(owner);
  JobIn *in = data;
  if (v->clamp_job == job) v->clamp_job = NULL;
  if (lmwb_job_cancelled(error)) return;
  if (in->serial == v->serial) {
    if (error) {
      lmwb_view_show_job_error(LMWB_VIEW(v), error);
    } else {
      ClampOut *o = result;
      g_free(v->clamped);
      v->clamped = g_strdup(o->text);
      v->clamped_value = o->value;
      update_clamp_label(v);
    }
  }
  if (v->clamp_pending && v->clamp_on && v->layer >= 0) {
    v->clamp_pending = FALSE;
    start_clamp_job(v);
  }
}

static void stop_debounce(LmwbNeuronView *v) {
  if (!v->debounce_id) return;
  g_source_remove(v->debounce_id);
  v->debounce_id = 0;
  lmwb_view_busy_changed(LMWB_VIEW(v));
}

static gboolean debounce_fire(gpointer user) {
  LmwbNeuronView *v = user;
  v->debounce_id = 0;
  if (v->layer >= 0 && v->model && v->analysis) {
    if (v->clamp_job) v->clamp_pending = TRUE; /* regenerate with the newest value when this one ends */
    else start_clamp_job(v);
  }
  lmwb_view_busy_changed(LMWB_VIEW(v));
  return G_SOURCE_REMOVE;
}

static void on_clamp_changed(GtkAdjustment *adj, gpointer user) {
  LmwbNeuronView *v = user;
  if (v->layer < 0) return;
  v->clamp_on = TRUE;
  if (v->debounce_id) g_source_remove(v->debounce_id);
  v->debounce_id = g_timeout_add(CLAMP_DEBOUNCE_MS, debounce_fire, v);
  lmwb_view_busy_changed(LMWB_VIEW(v));
}

static void set_clamp(LmwbNeuronView *v, double value) {
  if (v->layer < 0) return;
  if (gtk_adjustment_get_value(v->clamp_adj) == value) on_clamp_changed(v->clamp_adj, v);
  else gtk_adjustment_set_value(v->clamp_adj, value);
}

static void clear_clamp(LmwbNeuronView *v) {
  stop_debounce(v);
  v->clamp_on = FALSE;
  v->clamp_pending = FALSE;
  g_clear_pointer(&v->clamped, g_free);
  update_clamp_label(v);
}

static void sweep_point(GtkWidget *owner, const char *series, double x, double y, gpointer data) {
  LmwbNeuronView *v = LMWB_NEURON_VIEW(owner);
  JobIn *in = data;
  if (in->serial != v->serial) return;
  LmwbPlot *p = lmwb_plot_view_get_plot(v->sweep_plot);
  if (p && lmwb_plot_series_count(p) > 0) {
    lmwb_plot_append(p, 0, x, y);
    v->sweep_points++;
  }
}

static void sweep_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbNeuronView *v = LMWB_NEURON_VIEW(owner);
  JobIn *in = data;
  if (v->sweep_job == job) v->sweep_job = NULL;
  if (in->serial != v->serial) return;
  if (error) {
    lmwb_view_show_job_error(LMWB_VIEW(v), error);
    return;
  }
  LmwbNeuronSweep *s = result;
  LmwbPlot *p = lmwb_plot_view_get_plot(v->sweep_plot);
  if (p && lmwb_plot_series_count(p) > 1 && isfinite(s->baseline)) {
    /* The unclamped probability as a flat reference line. */
    lmwb_plot_append(p, 1, s->values[0], s->baseline);
    lmwb_plot_append(p, 1, s->values[s->n - 1], s->baseline);
  }
}

static void sweep(LmwbNeuronView *v) {
  if (v->layer < 0 || !v->model || !v->analysis) {
    lmwb_view_show_error(LMWB_VIEW(v), "Select a neuron first: search for a token and click a neuron.");
    return;
  }
  if (v->sweep_job) lmwb_job_cancel(v->sweep_job);
  JobIn *in = job_in_new(v);
  in->text = g_strdup(gtk_editable_get_text(GTK_EDITABLE(v->target_entry)));
  in->target = v->top_token;
  in->steps = v->sweep_steps;
  in->from = gtk_adjustment_get_lower(v->clamp_adj);
  in->to = gtk_adjustment_get_upper(v->clamp_adj);
  g_autofree char *tt = NULL;
  if (*in->text) tt = g_strdup(in->text);
  else tt = lmwb_tokenizer_token_text(v->model->tokenizer, v->top_token);
  g_autofree char *disp = lmwb_token_display(tt);
  g_autofree char *title = g_strdup_printf("p(“%s”) at the next position vs clamp of L%d·N%d", disp, v->layer, v->neuron);
  LmwbPlot *p = lmwb_plot_new(LMWB_PLOT_LINE, title, "clamp value", "p(target)");
  lmwb_plot_add_series(p, "clamped");
  lmwb_plot_add_series(p, "unclamped");
  lmwb_plot_set_x_range(p, in->from, in->to);
  lmwb_plot_view_set_plot(v->sweep_plot, p);
  v->sweep_points = 0;
  v->sweep_job = start(v, "Sweeping the clamp", run_sweep, in, (GDestroyNotify)lmwb_neuron_sweep_free, sweep_done,
                       sweep_point);
}

static void on_search_activate(GtkSearchEntry *e, gpointer user) { search(user, gtk_editable_get_text(GTK_EDITABLE(e))); }

static void on_which_changed(GObject *o, GParamSpec *ps, gpointer user) {
  LmwbNeuronView *v = user;
  const char *text = gtk_editable_get_text(GTK_EDITABLE(v->search_entry));
  if (text && *text) search(v, text);
  if (v->layer >= 0) select_neuron(v, v->layer, v->neuron);
}

/* ---- actions (neurons.*) ------------------------------------------------------------------- */

static void act_search(GSimpleAction *a, GVariant *p, gpointer user) {
  lmwb_view_present(user);
  search(user, g_variant_get_string(p, NULL));
}

static void act_select(GSimpleAction *a, GVariant *p, gpointer user) {
  int layer, neuron;
  if (sscanf(g_variant_get_string(p, NULL), "%d:%d", &layer, &neuron) != 2) {
    lmwb_view_show_error(user, "neurons.select expects LAYER:NEURON, e.g. 3:127");
    return;
  }
  lmwb_view_present(user);
  select_neuron(user, layer, neuron);
}

static void act_clamp(GSimpleAction *a, GVariant *p, gpointer user) { set_clamp(user, g_variant_get_double(p)); }
static void act_unclamp(GSimpleAction *a, GVariant *p, gpointer user) { clear_clamp(user); }
static void act_sweep(GSimpleAction *a, GVariant *p, gpointer user) { sweep(user); }

static void act_sweep_steps(GSimpleAction *a, GVariant *p, gpointer user) {
  LMWB_NEURON_VIEW(user)->sweep_steps = CLAMP(g_variant_get_int32(p), 2, 10000);
  g_simple_action_set_state(a, p);
}

static void act_find(GSimpleAction *a, GVariant *p, gpointer user) {
  lmwb_view_present(user);
  gtk_widget_grab_focus(GTK_WIDGET(LMWB_NEURON_VIEW(user)->search_entry));
}

static const GActionEntry actions[] = {
  {"search", act_search, "s"}, {"select", act_select, "s"}, {"clamp", act_clamp, "d"}, {"unclamp", act_unclamp},
  {"sweep", act_sweep}, {"sweep-steps", NULL, "i", G_STRINGIFY(SWEEP_STEPS), act_sweep_steps}, {"find", act_find},
};

static const LmwbShortcut shortcuts[] = {
  {"neurons.find", "<Control>f", "Search neurons by token"},
  {"neurons.sweep", "<Control><Shift>s", "Sweep the clamp"},
  {"neurons.unclamp", "<Control>u", "Remove the clamp"},
};

/* ---- LmwbView ------------------------------------------------------------------------------ */

static void set_model(LmwbView *view, LmwbModel *m) {
  LmwbNeuronView *v = LMWB_NEURON_VIEW(view);
  if (m) lmwb_model_ref(m);
  g_clear_pointer(&v->model, lmwb_model_unref);
  v->model = m;
  v->layer = v->neuron = -1;
  reset_selection_views(v);
  set_title(v);
  clear_hits(v);
  gtk_label_set_text(v->search_status, "Search the neurons whose decoded top tokens include a token.");
  gtk_widget_set_sensitive(GTK_WIDGET(v->clamp_scale), FALSE);
  empty_plots(v);
}

static void set_analysis(LmwbView *view, LmwbAnalysis *a) {
  LmwbNeuronView *v = LMWB_NEURON_VIEW(view);
  if (a) lmwb_analysis_ref(a);
  g_clear_pointer(&v->analysis, lmwb_analysis_unref);
  v->analysis = a;
  /* A new prompt: reload the selected neuron's activations and continuations. */
  if (v->layer >= 0 && v->model) select_neuron(v, v->layer, v->neuron);
}

static LmwbPlotView *current_plot(LmwbView *view) { return LMWB_NEURON_VIEW(view)->sweep_plot; }

static gboolean busy(LmwbView *view) { return LMWB_NEURON_VIEW(view)->debounce_id != 0; }

static char *describe(LmwbView *view) {
  LmwbNeuronView *v = LMWB_NEURON_VIEW(view);
  GString *s = g_string_new(NULL);
  g_string_append_printf(s, "neuron hits=%d\n", v->n_hits);
  g_string_append_printf(s, "neuron selected=%d:%d top_token=%d\n", v->layer, v->neuron, v->top_token);
  g_autofree char *eb = g_strescape(v->baseline ? v->baseline : "", NULL);
  g_string_append_printf(s, "neuron baseline=%s\n", eb);
  g_autofree char *ec = g_strescape(v->clamped ? v->clamped : "", NULL);
  if (v->clamp_on && v->clamped) g_string_append_printf(s, "neuron clamped value=%g text=%s\n", v->clamped_value, ec);
  else g_string_append(s, "neuron clamped none\n");
  g_string_append_printf(s, "neuron sweep_points=%d\n", v->sweep_points);
  return g_string_free(s, FALSE);
}

static void view_iface_init(LmwbViewInterface *iface) {
  static const LmwbViewInfo info = {.id = "neurons", .title = "Neurons", .icon_name = "system-search-symbolic",
                                    .actions = actions, .n_actions = G_N_ELEMENTS(actions),
                                    .shortcuts = shortcuts, .n_shortcuts = G_N_ELEMENTS(shortcuts)};
  iface->info = &info;
  iface->set_model = set_model;
  iface->set_analysis = set_analysis;
  iface->current_plot = current_plot;
  iface->describe = describe;
  iface->busy = busy;
}

/* ---- object -------------------------------------------------------------------------------- */

static void dispose(GObject *o) {
  LmwbNeuronView *v = LMWB_NEURON_VIEW(o);
  if (v->debounce_id) g_source_remove(v->debounce_id);
  v->debounce_id = 0;
  lmwb_job_cancel(v->clamp_job);
  lmwb_job_cancel(v->sweep_job);
  v->clamp_job = v->sweep_job = NULL;
  g_clear_pointer(&v->model, lmwb_model_unref);
  g_clear_pointer(&v->analysis, lmwb_analysis_unref);
  g_clear_pointer(&v->baseline, g_free);
  g_clear_pointer(&v->clamped, g_free);
  gtk_widget_dispose_template(GTK_WIDGET(o), LMWB_TYPE_NEURON_VIEW);
  G_OBJECT_CLASS(lmwb_neuron_view_parent_class)->dispose(o);
}

static void lmwb_neuron_view_class_init(LmwbNeuronViewClass *k) {
  G_OBJECT_CLASS(k)->dispose = dispose;
  g_type_ensure(LMWB_TYPE_PLOT_VIEW);
  GtkWidgetClass *wk = GTK_WIDGET_CLASS(k);
  gtk_widget_class_set_template_from_resource(wk, "/org/lmwb/Workbench/lmwb-neuron-view.ui");
#define BIND(x) gtk_widget_class_bind_template_child(wk, LmwbNeuronView, x)
  BIND(search_entry), BIND(which_drop), BIND(search_status), BIND(neuron_title), BIND(baseline_label);
  BIND(clamped_label), BIND(hit_list), BIND(tokens_plot), BIND(act_plot), BIND(sweep_plot);
  BIND(clamp_scale), BIND(clamp_adj), BIND(target_entry);
#undef BIND
}

static void lmwb_neuron_view_init(LmwbNeuronView *v) {
  gtk_widget_init_template(GTK_WIDGET(v));
  v->layer = v->neuron = -1;
  v->top_token = -1;
  v->sweep_steps = SWEEP_STEPS;
  g_signal_connect(v->search_entry, "activate", G_CALLBACK(on_search_activate), v);
  g_signal_connect(v->hit_list, "row-activated", G_CALLBACK(on_row_activated), v);
  g_signal_connect(v->clamp_adj, "value-changed", G_CALLBACK(on_clamp_changed), v);
  g_signal_connect(v->which_drop, "notify::selected", G_CALLBACK(on_which_changed), v);
  empty_plots(v);
}
