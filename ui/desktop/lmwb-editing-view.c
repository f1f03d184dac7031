/* Editing: knowledge edits of the loaded model (editors/rome.h, editors/edit_sequence.h). Type a
 * request or pick one made from the built-in world's facts, edit with ROME or MEMIT, and see the
 * target's probability, efficacy, generalisation and specificity and the neighbours' answers
 * before and after; run a sequence with a live plot of the monitor perplexity, the collapse alarm
 * and efficacy per edit. Every edit is a new version of the model (model.h): the list of versions
 * is the undo history, the chosen one is what the next edit starts from and what Save writes.
 * Actions (editing.*): request JSON (a flat request into the fields), prompt, subject, target-new,
 * target-true TEXT (one field), pick N (the N-th world request), method rome-paper|rome-consistent|
 * memit, layers 'L'|'A-B', stats PATH ('' = C = I), adam-steps N, templates N, lambda X (MEMIT's
 * λ), edit, requests PATH, count N, monitor PATH, alarm X, run-sequence, undo N (the N-th
 * version), save DIR, save-dialog, browse stats|requests|monitor (a file dialog), page knowledge|kfac.
 * The second page, Memorisation (K-FAC), is lmwb-kfac-panel.c: its actions are editing.kfac-*. */
#include "ui/desktop/lmwb-view.h"
#include "app/core/errors.h"
#include "app/formats/json_text.h"
#include "app/formats/tokenizer.h"
#include "editors/edit_sequence.h"
#include "ui/desktop/lmwb-app.h"
#include "ui/desktop/lmwb-job.h"
#include "ui/desktop/lmwb-kfac-panel.h"
#include <math.h>
#include <string.h>

#define WORLD_REQUESTS 1000 /* at most this many in the picker (the built-in world has fewer facts) */
#define WORLD_NEIGHBOURS 5
#define WORLD_SEED 1

#define LMWB_TYPE_EDITING_VIEW (lmwb_editing_view_get_type())
G_DECLARE_FINAL_TYPE(LmwbEditingView, lmwb_editing_view, LMWB, EDITING_VIEW, GtkBox)

/* A version of the model in the undo list. */
typedef struct {
  LmwbModel *model;
  char *label;
  double ppl, efficacy; /* from a sequence; NaN otherwise */
  gboolean alarm;
} Version;

static void version_free(gpointer p) {
  Version *v = p;
  lmwb_model_unref(v->model);
  g_free(v->label);
  g_free(v);
}

/* What a single edit measured (worker result). */
typedef struct {
  LmwbModel *edited;
  LmwbEditScores before, after;
  LmwbEditInfo info;
  int n_nb;
  char **nb_prompts, **nb_before, **nb_after; /* [n_nb] answers as shown */
  double *p_before, *p_after;
  char *label;
} EditOut;

struct _LmwbEditingView {
  GtkBox parent;
  GtkDropDown *world_drop, *method_drop;
  GtkStringList *world_list;
  GtkEntry *prompt_entry, *subject_entry, *new_entry, *true_entry, *layers_entry, *stats_entry;
  GtkEntry *requests_entry, *monitor_entry;
  GtkSpinButton *steps_spin, *templates_spin, *lambda_spin, *count_spin, *alarm_spin;
  GtkCheckButton *stop_check;
  GtkLabel *scores_label, *neighbours_label, *sequence_label;
  GtkListBox *step_list;
  LmwbPlotView *ppl_plot, *efficacy_plot;
  GtkStack *page_stack;
  LmwbKfacPanel *kfac_panel;

  LmwbModel *model;         /* as loaded */
  LmwbEditRequests *world;  /* the picker's requests (NULL without world.json) */
  GPtrArray *versions;      /* Version: [0] the loaded model */
  int current;              /* the chosen version */
  guint serial;             /* bumped by a new model: results of older jobs are dropped */
  LmwbJob *job;             /* the running edit, sequence or save */
  EditOut *last;            /* the last single edit, for the labels and describe */
  char *last_request;       /* its request as text, for describe */
  double seq_edits, seq_threshold, seq_last_ppl;
  int seq_points, seq_alarms;
  char *saved;
};

static void view_iface_init(LmwbViewInterface *iface);

G_DEFINE_FINAL_TYPE_WITH_CODE(LmwbEditingView, lmwb_editing_view, GTK_TYPE_BOX,
                              G_IMPLEMENT_INTERFACE(LMWB_TYPE_VIEW, view_iface_init))

static const char *text_of(GtkEntry *e) { return gtk_editable_get_text(GTK_EDITABLE(e)); }
static void set_text(GtkEntry *e, const char *t) { gtk_editable_set_text(GTK_EDITABLE(e), t ? t : ""); }

static LmwbModel *current_model(LmwbEditingView *v) {
  return v->versions->len ? ((Version *)g_ptr_array_index(v->versions, v->current))->model : NULL;
}

static LmwbEditMethod current_method(LmwbEditingView *v) {
  return gtk_drop_down_get_selected(v->method_drop) == 2 ? LMWB_EDIT_MEMIT : LMWB_EDIT_ROME;
}

/* ---- what a job is given ------------------------------------------------------------------- */

typedef struct {
  guint serial;
  LmwbModel *model;       /* the version the job starts from */
  const char *dir;        /* the loaded model's folder, for a save (borrowed: the version holds its root) */
  const char *dtype;
  LmwbEditMethod method;
  LmwbRomeOptions rome;
  int *layers, n_layers;
  char *stats;            /* NULL: C = I */
  LmwbEditRequests *reqs; /* the edit's request, or a sequence's file (NULL: generated) */
  char *requests, *world, *monitor, *out;
  int count;
  double alarm;
  gboolean stop;
} JobIn;

static void job_in_free(gpointer p) {
  JobIn *in = p;
  lmwb_model_unref(in->model);
  g_free(in->layers);
  g_free(in->stats);
  lmwb_edit_requests_free(in->reqs);
  g_free(in->requests), g_free(in->world), g_free(in->monitor), g_free(in->out);
  g_free(in);
}

/* The method, layers, covariance and optimisation settings of the form; NULL with a banner when
 * they are bad. */
static JobIn *job_in_new(LmwbEditingView *v) {
  JobIn *in = g_new0(JobIn, 1);
  in->serial = v->serial;
  in->model = lmwb_model_ref(current_model(v));
  in->dir = v->model->dir;
  in->dtype = v->model->source_dtype;
  in->method = current_method(v);
  lmwb_edit_method_options_init(&in->rome, in->method);
  in->rome.keys = gtk_drop_down_get_selected(v->method_drop) == 1 ? LMWB_ROME_KEYS_CONSISTENT : LMWB_ROME_KEYS_PAPER;
  in->rome.steps = gtk_spin_button_get_value_as_int(v->steps_spin);
  in->rome.n_short = in->rome.n_long = gtk_spin_button_get_value_as_int(v->templates_spin);
  in->rome.lambda = gtk_spin_button_get_value(v->lambda_spin);
  g_autofree char *st = g_strstrip(g_strdup(text_of(v->stats_entry)));
  in->stats = *st ? g_strdup(st) : NULL;
  GError *err = NULL;
  if (!lmwb_edit_layers_parse(v->model, text_of(v->layers_entry), &in->layers, &in->n_layers, &err)) {
    lmwb_view_show_error(LMWB_VIEW(v), err->message);
    g_error_free(err);
    job_in_free(in);
    return NULL;
  }
  if (in->method == LMWB_EDIT_ROME) in->n_layers = 1; /* ROME edits the first layer given */
  return in;
}

static LmwbEditStats **load_stats(const JobIn *in, GError **error) {
  LmwbEditStats **st = g_new0(LmwbEditStats *, in->n_layers);
  for (int i = 0; in->stats && i < in->n_layers; i++)
    if (!(st[i] = lmwb_edit_stats_load_for(in->stats, in->model, in->layers[i], error))) {
      for (int k = 0; k < i; k++) lmwb_edit_stats_free(st[k]);
      g_free(st);
      return NULL;
    }
  return st;
}

static void free_stats(LmwbEditStats **st, int n) {
  for (int i = 0; st && i < n; i++) lmwb_edit_stats_free(st[i]);
  g_free(st);
}

/* ---- a single edit (worker) ---------------------------------------------------------------- */

static void edit_out_free(gpointer p) {
  EditOut *o = p;
  if (!o) return;
  if (o->edited) lmwb_model_unref(o->edited);
  g_strfreev(o->nb_prompts), g_strfreev(o->nb_before), g_strfreev(o->nb_after);
  g_free(o->p_before), g_free(o->p_after);
  g_free(o->label);
  g_free(o);
}

static char **answers(LmwbModel *m, char **prompts, int n, double *p, GError **error) {
  g_autofree int32_t *ids = g_new(int32_t, MAX(n, 1));
  if (!lmwb_edit_top_answers(m, prompts, n, ids, p, error)) return NULL;
  char **out = g_new0(char *, n + 1);
  for (int i = 0; i < n; i++) {
    g_autofree char *t = lmwb_tokenizer_token_text(m->tokenizer, ids[i]);
    out[i] = lmwb_token_display(t ? t : "?");
  }
  return out;
}

static gpointer run_edit(gpointer data, LmwbReporter *rep, GError **error) {
  JobIn *in = data;
  const LmwbEditRequest *req = &in->reqs->items[0];
  if (!lmwb_edit_request_check(in->model, req, 0, error)) return NULL;
  LmwbEditStats **st = load_stats(in, error);
  if (!st) return NULL;
  EditOut *o = g_new0(EditOut, 1);
  o->n_nb = req->neighbours ? (int)g_strv_length(req->neighbours) : 0;
  o->p_before = g_new0(double, MAX(o->n_nb, 1));
  o->p_after = g_new0(double, MAX(o->n_nb, 1));
  lmwb_report_progress(rep, 0.05, "scoring the unedited version");
  gboolean ok = lmwb_edit_score(in->model, NULL, req, &o->before, error) &&
                (o->nb_before = answers(in->model, req->neighbours, o->n_nb, o->p_before, error)) != NULL;
  if (ok) {
    o->edited = in->method == LMWB_EDIT_MEMIT
                  ? lmwb_memit_edit(in->model, in->reqs, in->layers, in->n_layers, st, &in->rome, &o->info, rep, error)
                  : lmwb_rome_edit(in->model, req, in->layers[0], st[0], &in->rome, &o->info, rep, error);
    ok = o->edited != NULL;
  }
  lmwb_report_progress(rep, 0.95, "scoring the edited version");
  ok = ok && lmwb_edit_score(o->edited, in->model, req, &o->after, error) &&
       (o->nb_after = answers(o->edited, req->neighbours, o->n_nb, o->p_after, error)) != NULL;
  free_stats(st, in->n_layers);
  if (!ok) {
    edit_out_free(o);
    return NULL;
  }
  o->nb_prompts = g_new0(char *, o->n_nb + 1);
  for (int i = 0; i < o->n_nb; i++) o->nb_prompts[i] = g_strdup(req->neighbours[i]);
  const char *how = in->method == LMWB_EDIT_MEMIT                    ? "MEMIT"
                    : in->rome.keys == LMWB_ROME_KEYS_CONSISTENT ? "ROME (consistent)"
                                                                   : "ROME";
  g_autofree char *last = in->n_layers > 1 ? g_strdup_printf("–%d", in->layers[in->n_layers - 1]) : g_strdup("");
  o->label = g_strdup_printf("%s L%d%s: %s →%s", how, in->layers[0], last, req->subject, req->target_new);
  return o;
}

/* ---- a sequence (worker) ------------------------------------------------------------------- */

/* Each step's alarm, after its "ppl" and "efficacy" points (edit_sequence.h reports those). */
static void step_alarm(const LmwbEditStep *st, void *user) { lmwb_report_metric(user, "alarm", st->edit, st->alarm); }

static gpointer run_sequence(gpointer data, LmwbReporter *rep, GError **error) {
  JobIn *in = data;
  LmwbEditRequests *reqs =
    in->requests ? lmwb_edit_requests_read(in->requests, error)
                 : lmwb_edit_requests_from_world(in->world, in->count, WORLD_NEIGHBOURS, WORLD_SEED, error);
  if (!reqs) return NULL;
  lmwb_report_metric(rep, "edits", reqs->n, 0); /* the plots' span, before the first step */
  g_auto(GStrv) monitor = lmwb_edit_monitor_read(in->monitor, error);
  LmwbEditStats **st = monitor ? load_stats(in, error) : NULL;
  LmwbEditSequence *seq = NULL;
  if (st) {
    LmwbEditSequenceOptions so = {.method = in->method, .layers = in->layers, .n_layers = in->n_layers, .stats = st,
                                  .rome = in->rome, .alarm_factor = in->alarm,
                                  .on_alarm = in->stop ? LMWB_ALARM_STOP : LMWB_ALARM_CONTINUE,
                                  .monitor = (const char *const *)monitor, .n_monitor = g_strv_length(monitor)};
    seq = lmwb_edit_sequence_run(in->model, reqs, &so, step_alarm, rep, rep, error);
  }
  /* The steps keep the subjects: they outlive the requests. */
  for (int i = 0; seq && i < seq->n_steps; i++)
    if (seq->steps[i].subject) seq->steps[i].subject = g_intern_string(seq->steps[i].subject);
  free_stats(st, in->n_layers);
  lmwb_edit_requests_free(reqs);
  return seq;
}

/* ---- a save (worker) ----------------------------------------------------------------------- */

static gpointer run_save(gpointer data, LmwbReporter *rep, GError **error) {
  JobIn *in = data;
  lmwb_report_progress(rep, 0.1, "saving");
  if (!lmwb_model_save(in->model, in->out, in->dtype, in->dir, error)) return NULL;
  return g_strdup(in->out);
}

/* ---- main-loop side ------------------------------------------------------------------------ */

/* Newest first: the version an edit just made is at the top, in sight. */
static void show_versions(LmwbEditingView *v) {
  GtkWidget *c;
  while ((c = gtk_widget_get_first_child(GTK_WIDGET(v->step_list)))) gtk_list_box_remove(v->step_list, c);
  for (int i = (int)v->versions->len - 1; i >= 0; i--) {
    Version *ver = g_ptr_array_index(v->versions, i);
    g_autofree char *text = g_strdup_printf("%d · %s%s", i, ver->label, ver->alarm ? "  ⚠ ALARM" : "");
    GtkWidget *l = gtk_label_new(text);
    gtk_label_set_xalign(GTK_LABEL(l), 0);
    gtk_label_set_ellipsize(GTK_LABEL(l), PANGO_ELLIPSIZE_END);
    gtk_widget_set_margin_start(l, 8), gtk_widget_set_margin_end(l, 8);
    gtk_widget_set_margin_top(l, 3), gtk_widget_set_margin_bottom(l, 3);
    if (ver->alarm && i != v->current) gtk_widget_add_css_class(l, "error"); /* red on the selection is unreadable */
    GtkWidget *row = gtk_list_box_row_new();
    gtk_list_box_row_set_child(GTK_LIST_BOX_ROW(row), l);
    gtk_list_box_append(v->step_list, row);
    if (i == v->current) gtk_list_box_select_row(v->step_list, GTK_LIST_BOX_ROW(row));
  }
}

/* A new version after the current one: later versions (undone) are dropped. */
static void push_version(LmwbEditingView *v, LmwbModel *m, char *label, double ppl, double efficacy, gboolean alarm) {
  g_ptr_array_set_size(v->versions, v->current + 1);
  Version *ver = g_new0(Version, 1);
  *ver = (Version){lmwb_model_ref(m), label, ppl, efficacy, alarm};
  g_ptr_array_add(v->versions, ver);
  v->current = (int)v->versions->len - 1;
}

/* One job at a time: each starts from the current version and may add versions after it. */
static void set_busy(LmwbEditingView *v, LmwbJob *job) {
  v->job = job;
  gtk_widget_set_sensitive(GTK_WIDGET(v->step_list), job == NULL);
}

static gboolean refuse_busy(LmwbEditingView *v) {
  if (v->job) lmwb_view_show_error(LMWB_VIEW(v), "An edit, sequence or save is running: wait for it or cancel it (Esc).");
  return v->job != NULL;
}

static char *fmt_p(double x) { return isfinite(x) ? g_strdup_printf("%.4f", x) : g_strdup("—"); }

static void show_scores(LmwbEditingView *v) {
  EditOut *o = v->last;
  if (!o) {
    gtk_label_set_text(v->scores_label, " ");
    gtk_label_set_text(v->neighbours_label, " ");
    return;
  }
  const LmwbEditScores *s[2] = {&o->before, &o->after};
  GString *t = g_string_new("                     before     after\n");
  char *cells[2];
  double pn[2] = {s[0]->p_new, s[1]->p_new}, pt[2] = {s[0]->p_true, s[1]->p_true};
  double ef[2] = {s[0]->efficacy, s[1]->efficacy}, ge[2] = {s[0]->generalisation, s[1]->generalisation};
  double sp[2] = {NAN, s[1]->specificity}, fl[2] = {s[0]->fluency, s[1]->fluency};
  const char *names[] = {"p(new target)", "p(true target)", "efficacy", "generalisation", "specificity", "fluency"};
  const double *rows[] = {pn, pt, ef, ge, sp, fl};
  for (int r = 0; r < 6; r++) {
    for (int k = 0; k < 2; k++) cells[k] = fmt_p(rows[r][k]);
    g_string_append_printf(t, "%-18s %9s %9s\n", names[r], cells[0], cells[1]);
    g_free(cells[0]), g_free(cells[1]);
  }
  /* A tiny ROME denominator k·u makes a huge update: the paper's keys' road to collapse. */
  g_string_append_printf(t, "Adam steps %d · ‖δ‖ %.3g · ‖ΔW‖ %.3g", o->info.steps, o->info.delta_norm, o->info.update_norm);
  if (isfinite(o->info.denominator) && o->info.denominator != 0)
    g_string_append_printf(t, " · k·u %.3g", o->info.denominator);
  gtk_label_set_text(v->scores_label, t->str);
  g_string_free(t, TRUE);
  GString *n = g_string_new(o->n_nb ? "<b>Neighbours' top answers</b> (before → after)"
                                     : "No neighbour prompts: pick a world request to see them.");
  for (int i = 0; i < o->n_nb; i++) {
    g_autofree char *pr = g_markup_escape_text(o->nb_prompts[i], -1);
    g_autofree char *a = g_markup_escape_text(o->nb_before[i], -1), *b = g_markup_escape_text(o->nb_after[i], -1);
    gboolean same = strcmp(o->nb_before[i], o->nb_after[i]) == 0;
    g_string_append_printf(n, "\n%s  <tt>%s</tt> (%.2f) → %s<tt>%s</tt> (%.2f)%s", pr, a, o->p_before[i], same ? "" : "<b>", b,
                           o->p_after[i], same ? "" : "</b>  changed");
  }
  gtk_label_set_markup(v->neighbours_label, n->str);
  g_string_free(n, TRUE);
}

static void edit_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbEditingView *v = LMWB_EDITING_VIEW(owner);
  JobIn *in = data;
  if (v->job == job) set_busy(v, NULL);
  if (in->serial != v->serial) return;
  if (error) {
    lmwb_view_show_job_error(LMWB_VIEW(v), error);
    return;
  }
  EditOut *o = g_memdup2(result, sizeof(EditOut));
  memset(result, 0, sizeof(EditOut)); /* the view keeps what the job made */
  edit_out_free(v->last);
  v->last = o;
  push_version(v, o->edited, g_strdup(o->label), NAN, o->after.efficacy, FALSE);
  show_versions(v);
  show_scores(v);
}

/* The request of the form, read by the same parser as request files (its rules: "{}" once, a
 * target that is not empty, a leading space); a world request with this prompt and subject
 * lends its paraphrases and neighbours. */
static LmwbEditRequests *form_request(LmwbEditingView *v, GError **error) {
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  const char *keys[4] = {"prompt", "subject", "target_new", "target_true"};
  GtkEntry *entries[4] = {v->prompt_entry, v->subject_entry, v->new_entry, v->true_entry};
  for (int k = 0; k < 4; k++) {
    if (k == 3 && !*text_of(entries[k])) continue; /* the true target is optional */
    json_builder_set_member_name(b, keys[k]);
    json_builder_add_string_value(b, text_of(entries[k]));
  }
  for (int i = 0; v->world && i < v->world->n; i++) {
    const LmwbEditRequest *w = &v->world->items[i];
    if (strcmp(w->prompt, text_of(v->prompt_entry)) || strcmp(w->subject, text_of(v->subject_entry))) continue;
    const char *keys[2] = {"paraphrase_prompts", "neighborhood_prompts"};
    char **lists[2] = {w->paraphrases, w->neighbours};
    for (int k = 0; k < 2; k++) {
      json_builder_set_member_name(b, keys[k]);
      json_builder_begin_array(b);
      for (int j = 0; lists[k] && lists[k][j]; j++) json_builder_add_string_value(b, lists[k][j]);
      json_builder_end_array(b);
    }
    break;
  }
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autofree char *text = lmwb_json_generate(root, FALSE, NULL);
  g_free(v->last_request);
  v->last_request = g_strdup(text);
  return lmwb_edit_requests_parse(text, strlen(text), "the request", error);
}

static void start(LmwbEditingView *v, const char *title, LmwbJobFunc fn, JobIn *in, GDestroyNotify result_free,
                  LmwbJobDone done, LmwbJobMetric metric) {
  LmwbJob *job = lmwb_job_new(title, fn, in, job_in_free);
  lmwb_job_on_done(job, done, result_free);
  if (metric) lmwb_job_on_metric(job, metric);
  set_busy(v, lmwb_job_start(job, GTK_WIDGET(v)));
}

static void edit(LmwbEditingView *v) {
  if (!v->model || refuse_busy(v)) return;
  GError *err = NULL;
  LmwbEditRequests *reqs = form_request(v, &err);
  JobIn *in = reqs ? job_in_new(v) : NULL;
  if (!reqs) {
    lmwb_view_show_error(LMWB_VIEW(v), err->message);
    g_error_free(err);
  }
  if (!in) {
    lmwb_edit_requests_free(reqs);
    return;
  }
  in->reqs = reqs;
  start(v, in->method == LMWB_EDIT_MEMIT ? "Editing with MEMIT" : "Editing with ROME", run_edit, in, edit_out_free,
        edit_done, NULL);
}

/* ---- the sequence's live plots ------------------------------------------------------------- */

static void reset_plots(LmwbEditingView *v) {
  LmwbPlot *p = lmwb_plot_new(LMWB_PLOT_LINE, "Monitor perplexity per edit", "edit", "mean per-sentence perplexity");
  lmwb_plot_add_series(p, "perplexity");
  lmwb_plot_add_series(p, "threshold");
  lmwb_plot_add_series(p, "alarmed");
  lmwb_plot_set_log_y(p, TRUE);
  lmwb_plot_view_set_plot(v->ppl_plot, p);
  LmwbPlot *e = lmwb_plot_new(LMWB_PLOT_SCATTER, "Efficacy per edit", "edit", "p(new) > p(true)");
  lmwb_plot_add_series(e, "efficacy");
  lmwb_plot_set_y_range(e, -0.05, 1.05);
  lmwb_plot_set_x_range(e, 0, NAN); /* edit 0 (unedited) has no efficacy: line up with the perplexity plot */
  lmwb_plot_view_set_plot(v->efficacy_plot, e);
  v->seq_points = v->seq_alarms = 0;
  v->seq_threshold = v->seq_last_ppl = NAN;
  v->seq_edits = 0;
}

static void sequence_point(GtkWidget *owner, const char *series, double x, double y, gpointer data) {
  LmwbEditingView *v = LMWB_EDITING_VIEW(owner);
  JobIn *in = data;
  if (in->serial != v->serial) return;
  LmwbPlot *p = lmwb_plot_view_get_plot(v->ppl_plot);
  if (!strcmp(series, "edits")) {
    v->seq_edits = x;
    lmwb_plot_set_x_range(p, 0, x);
    lmwb_plot_set_x_range(lmwb_plot_view_get_plot(v->efficacy_plot), 0, x);
  } else if (!strcmp(series, "ppl")) {
    if (x == 0) { /* the alarm is a factor of the unedited perplexity: a line over the whole sequence */
      v->seq_threshold = in->alarm * y;
      lmwb_plot_append(p, 1, 0, v->seq_threshold);
      lmwb_plot_append(p, 1, v->seq_edits, v->seq_threshold);
    }
    lmwb_plot_append(p, 0, x, y);
    v->seq_last_ppl = y;
    v->seq_points++;
  } else if (!strcmp(series, "efficacy")) {
    lmwb_plot_append(lmwb_plot_view_get_plot(v->efficacy_plot), 0, x, y);
  } else if (!strcmp(series, "alarm")) {
    /* Alarmed steps are marked on the perplexity line; a NaN keeps the marks apart. */
    lmwb_plot_append(p, 2, x, y > 0 ? v->seq_last_ppl : NAN);
    v->seq_alarms += y > 0;
  }
}

static void sequence_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbEditingView *v = LMWB_EDITING_VIEW(owner);
  JobIn *in = data;
  if (v->job == job) set_busy(v, NULL);
  if (in->serial != v->serial) return;
  if (error) {
    gtk_label_set_text(v->sequence_label, lmwb_job_cancelled(error) ? "Sequence cancelled: no version was kept." : " ");
    lmwb_view_show_job_error(LMWB_VIEW(v), error);
    return;
  }
  LmwbEditSequence *s = result;
  int first_alarm = -1;
  for (int i = 1; i < s->n_steps; i++) {
    const LmwbEditStep *st = &s->steps[i];
    if (st->alarm && first_alarm < 0) first_alarm = st->edit;
    push_version(v, s->versions[i],
                 g_strdup_printf("sequence edit %d: %s · perplexity %.4g · efficacy %.0f%s", st->edit, st->subject, st->ppl,
                                 st->efficacy, st->rolled_back ? " · rolled back" : ""),
                 st->ppl, st->efficacy, st->alarm);
  }
  show_versions(v);
  g_autofree char *alarm = first_alarm > 0 ? g_strdup_printf("the alarm fired first at edit %d", first_alarm)
                                           : g_strdup("no alarm");
  g_autofree char *msg = g_strdup_printf("%d edits; unedited monitor perplexity %.4g, alarm above %.4g (%g×); %s%s.",
                                         s->n_steps - 1, s->steps[0].ppl, v->seq_threshold, in->alarm, alarm,
                                         s->stopped ? "; stopped there" : "");
  gtk_label_set_text(v->sequence_label, msg);
  if (s->failure) lmwb_view_show_error(LMWB_VIEW(v), s->failure);
}

static void run_sequence_clicked(LmwbEditingView *v) {
  if (!v->model || refuse_busy(v)) return;
  JobIn *in = job_in_new(v);
  if (!in) return;
  g_autofree char *req = g_strstrip(g_strdup(text_of(v->requests_entry)));
  in->requests = *req ? g_strdup(req) : NULL;
  in->world = g_build_filename(v->model->dir ? v->model->dir : ".", "world.json", NULL);
  in->count = gtk_spin_button_get_value_as_int(v->count_spin);
  in->monitor = g_strstrip(g_strdup(text_of(v->monitor_entry)));
  in->alarm = gtk_spin_button_get_value(v->alarm_spin);
  in->stop = gtk_check_button_get_active(v->stop_check);
  if (!*in->monitor) {
    lmwb_view_show_error(LMWB_VIEW(v), "Choose the monitor sentences: a text file, one sentence a line.");
    job_in_free(in);
    return;
  }
  if (!in->requests && !g_file_test(in->world, G_FILE_TEST_IS_REGULAR)) {
    lmwb_view_show_error(LMWB_VIEW(v), "Give a requests file: this model has no world.json to make requests from.");
    job_in_free(in);
    return;
  }
  reset_plots(v);
  gtk_label_set_text(v->sequence_label, "Editing…");
  start(v, "Editing in sequence", run_sequence, in, (GDestroyNotify)lmwb_edit_sequence_free, sequence_done, sequence_point);
}

/* ---- undo and save ------------------------------------------------------------------------- */

static void undo_to(LmwbEditingView *v, int i) {
  if (refuse_busy(v)) return;
  if (i < 0 || i >= (int)v->versions->len) {
    g_autofree char *msg = g_strdup_printf("There is no version %d (0..%u).", i, v->versions->len - 1);
    lmwb_view_show_error(LMWB_VIEW(v), msg);
    return;
  }
  v->current = i;
  show_versions(v);
}

static void on_row_activated(GtkListBox *box, GtkListBoxRow *row, gpointer user) {
  LmwbEditingView *v = user;
  undo_to(v, (int)v->versions->len - 1 - gtk_list_box_row_get_index(row));
}

static void save_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbEditingView *v = LMWB_EDITING_VIEW(owner);
  if (v->job == job) set_busy(v, NULL);
  if (error) {
    lmwb_view_show_job_error(LMWB_VIEW(v), error);
    return;
  }
  g_free(v->saved);
  v->saved = g_strdup(result);
}

static void save(LmwbEditingView *v, const char *dir) {
  if (!v->model || refuse_busy(v)) return;
  if (!dir || !*dir) {
    lmwb_view_show_error(LMWB_VIEW(v), "Save: choose a folder.");
    return;
  }
  JobIn *in = g_new0(JobIn, 1);
  in->serial = v->serial;
  in->model = lmwb_model_ref(current_model(v));
  in->dir = v->model->dir;
  in->dtype = v->model->source_dtype;
  in->out = g_strdup(dir);
  start(v, "Saving the edited model", run_save, in, g_free, save_done, NULL);
}

static void save_to(gpointer owner, const char *path) { save(owner, path); }

/* A chosen file fills the entry; with entry NULL, a chosen folder is saved to. */
static void choose(LmwbEditingView *v, GtkEntry *entry, const char *title, GtkFileChooserAction action, const char *accept) {
  if (entry) lmwb_ask_path_into(GTK_WIDGET(v), entry, title, action, accept);
  else lmwb_ask_path(GTK_WIDGET(v), title, action, accept, NULL, save_to);
}

/* A file for one of the path fields: stats, requests or monitor. */
static void browse(LmwbEditingView *v, const char *field) {
  GtkEntry *e = !strcmp(field, "stats")      ? v->stats_entry
              : !strcmp(field, "requests") ? v->requests_entry
              : !strcmp(field, "monitor")  ? v->monitor_entry
                                           : NULL;
  if (e) choose(v, e, "Choose a file", GTK_FILE_CHOOSER_ACTION_OPEN, "_Open");
}

/* ---- filling the form ---------------------------------------------------------------------- */

static void fill(LmwbEditingView *v, const LmwbEditRequest *r) {
  set_text(v->prompt_entry, r->prompt);
  set_text(v->subject_entry, r->subject);
  set_text(v->new_entry, r->target_new);
  set_text(v->true_entry, r->target_true);
}

static void on_world_picked(GObject *o, GParamSpec *ps, gpointer user) {
  LmwbEditingView *v = user;
  guint i = gtk_drop_down_get_selected(v->world_drop);
  if (v->world && i < (guint)v->world->n) fill(v, &v->world->items[i]);
}

static void load_world(LmwbEditingView *v) {
  g_clear_pointer(&v->world, lmwb_edit_requests_free);
  guint n = g_list_model_get_n_items(G_LIST_MODEL(v->world_list));
  gtk_string_list_splice(v->world_list, 0, n, NULL);
  g_autofree char *path = v->model && v->model->dir ? g_build_filename(v->model->dir, "world.json", NULL) : NULL;
  if (path && g_file_test(path, G_FILE_TEST_IS_REGULAR)) {
    GError *err = NULL;
    v->world = lmwb_edit_requests_from_world(path, WORLD_REQUESTS, WORLD_NEIGHBOURS, WORLD_SEED, &err);
    if (!v->world) {
      lmwb_view_show_error(LMWB_VIEW(v), err->message);
      g_error_free(err);
    }
  }
  for (int i = 0; v->world && i < v->world->n; i++) {
    const LmwbEditRequest *r = &v->world->items[i];
    g_autofree char *text = lmwb_edit_request_text(r);
    g_autofree char *item = g_strdup_printf("%s →%s (was%s)", text, r->target_new, r->target_true);
    gtk_string_list_append(v->world_list, item);
  }
  if (!v->world) gtk_string_list_append(v->world_list, "No world.json beside this model: type a request");
  gtk_widget_set_sensitive(GTK_WIDGET(v->world_drop), v->world != NULL);
}

/* ---- actions (editing.*) ------------------------------------------------------------------- */

static void act_request(GSimpleAction *a, GVariant *p, gpointer user) {
  LmwbEditingView *v = user;
  const char *json = g_variant_get_string(p, NULL);
  GError *err = NULL;
  LmwbEditRequests *r = lmwb_edit_requests_parse(json, strlen(json), "editing.request", &err);
  if (!r) {
    lmwb_view_show_error(LMWB_VIEW(v), err->message);
    g_error_free(err);
    return;
  }
  lmwb_view_present(LMWB_VIEW(v));
  fill(v, &r->items[0]);
  lmwb_edit_requests_free(r);
}

static void act_pick(GSimpleAction *a, GVariant *p, gpointer user) {
  LmwbEditingView *v = user;
  int i = g_variant_get_int32(p);
  if (!v->world || i < 0 || i >= v->world->n) {
    g_autofree char *msg = g_strdup_printf("There is no world request %d (%d made).", i, v->world ? v->world->n : 0);
    lmwb_view_show_error(LMWB_VIEW(v), msg);
    return;
  }
  gtk_drop_down_set_selected(v->world_drop, (guint)i);
  fill(v, &v->world->items[i]);
}

static void act_method(GSimpleAction *a, GVariant *p, gpointer user) {
  LmwbEditingView *v = user;
  const char *m = g_variant_get_string(p, NULL);
  static const char *const names[] = {"rome-paper", "rome-consistent", "memit"};
  for (guint i = 0; i < G_N_ELEMENTS(names); i++)
    if (!strcmp(m, names[i])) {
      gtk_drop_down_set_selected(v->method_drop, i);
      return;
    }
  g_autofree char *msg = g_strdup_printf("editing.method \"%s\": expected rome-paper, rome-consistent or memit", m);
  lmwb_view_show_error(LMWB_VIEW(v), msg);
}

#define ENTRY_ACTION(name, field) \
  static void act_##name(GSimpleAction *a, GVariant *p, gpointer user) { \
    set_text(LMWB_EDITING_VIEW(user)->field, g_variant_get_string(p, NULL)); \
  }
ENTRY_ACTION(prompt, prompt_entry)
ENTRY_ACTION(subject, subject_entry)
ENTRY_ACTION(target_new, new_entry)
ENTRY_ACTION(target_true, true_entry)
ENTRY_ACTION(layers, layers_entry)
ENTRY_ACTION(stats, stats_entry)
ENTRY_ACTION(requests, requests_entry)
ENTRY_ACTION(monitor, monitor_entry)

#define SPIN_ACTION(name, field, type) \
  static void act_##name(GSimpleAction *a, GVariant *p, gpointer user) { \
    gtk_spin_button_set_value(LMWB_EDITING_VIEW(user)->field, g_variant_get_##type(p)); \
  }
SPIN_ACTION(adam_steps, steps_spin, int32)
SPIN_ACTION(templates, templates_spin, int32)
SPIN_ACTION(lambda, lambda_spin, double)
SPIN_ACTION(count, count_spin, int32)
SPIN_ACTION(alarm, alarm_spin, double)

static void act_edit(GSimpleAction *a, GVariant *p, gpointer user) { edit(user); }
static void act_run_sequence(GSimpleAction *a, GVariant *p, gpointer user) { run_sequence_clicked(user); }
static void act_undo(GSimpleAction *a, GVariant *p, gpointer user) { undo_to(user, g_variant_get_int32(p)); }
static void act_save(GSimpleAction *a, GVariant *p, gpointer user) { save(user, g_variant_get_string(p, NULL)); }
static void act_browse(GSimpleAction *a, GVariant *p, gpointer user) { browse(user, g_variant_get_string(p, NULL)); }

static void act_save_dialog(GSimpleAction *a, GVariant *p, gpointer user) {
  choose(user, NULL, "Save the edited model as a folder", GTK_FILE_CHOOSER_ACTION_SELECT_FOLDER, "_Save");
}

static void act_page(GSimpleAction *a, GVariant *p, gpointer user) {
  LmwbEditingView *v = user;
  const char *name = g_variant_get_string(p, NULL);
  if (!gtk_stack_get_child_by_name(v->page_stack, name)) {
    g_autofree char *msg = g_strdup_printf("editing.page \"%s\": expected knowledge or kfac", name);
    lmwb_view_show_error(LMWB_VIEW(v), msg);
    return;
  }
  lmwb_view_present(LMWB_VIEW(v));
  gtk_stack_set_visible_child_name(v->page_stack, name);
}

static const GActionEntry actions[] = {
  {"request", act_request, "s"},      {"pick", act_pick, "i"},
  {"prompt", act_prompt, "s"},        {"subject", act_subject, "s"},
  {"target-new", act_target_new, "s"}, {"target-true", act_target_true, "s"},
  {"method", act_method, "s"},        {"layers", act_layers, "s"},
  {"stats", act_stats, "s"},          {"adam-steps", act_adam_steps, "i"},
  {"templates", act_templates, "i"},  {"lambda", act_lambda, "d"},
  {"edit", act_edit},                 {"requests", act_requests, "s"},
  {"count", act_count, "i"},          {"monitor", act_monitor, "s"},
  {"alarm", act_alarm, "d"},          {"run-sequence", act_run_sequence},
  {"undo", act_undo, "i"},            {"save", act_save, "s"},
  {"save-dialog", act_save_dialog},   {"browse", act_browse, "s"},
  {"page", act_page, "s"},
};
/* the view's own and the K-FAC page's (filled once, by view_iface_init) */
static GActionEntry all_actions[G_N_ELEMENTS(actions) + LMWB_KFAC_PANEL_N_ACTIONS];

static const LmwbShortcut shortcuts[] = {
  {"editing.edit", "<Control><Shift>Return", "Edit the current version"},
  {"editing.save-dialog", "<Control><Shift>e", "Save the current version as a folder"},
};

/* ---- LmwbView ------------------------------------------------------------------------------ */

static void set_model(LmwbView *view, LmwbModel *m) {
  LmwbEditingView *v = LMWB_EDITING_VIEW(view);
  v->serial++;
  if (v->job) lmwb_job_cancel(v->job);
  set_busy(v, NULL);
  if (m) lmwb_model_ref(m);
  g_clear_pointer(&v->model, lmwb_model_unref);
  v->model = m;
  g_ptr_array_set_size(v->versions, 0);
  v->current = 0;
  if (m) {
    Version *ver = g_new0(Version, 1);
    *ver = (Version){lmwb_model_ref(m), g_strdup("the model as loaded"), NAN, NAN, FALSE};
    g_ptr_array_add(v->versions, ver);
    g_autofree char *layer = g_strdup_printf("%d", lmwb_edit_default_layer(m));
    set_text(v->layers_entry, layer);
  }
  g_clear_pointer(&v->last, edit_out_free);
  g_clear_pointer(&v->saved, g_free);
  lmwb_kfac_panel_set_model(v->kfac_panel, m);
  load_world(v);
  if (v->world) fill(v, &v->world->items[0]);
  show_versions(v);
  show_scores(v);
  reset_plots(v);
  gtk_label_set_text(v->sequence_label, " ");
}

static gboolean on_kfac_page(LmwbEditingView *v) {
  return !g_strcmp0(gtk_stack_get_visible_child_name(v->page_stack), "kfac");
}

static LmwbPlotView *current_plot(LmwbView *view) {
  LmwbEditingView *v = LMWB_EDITING_VIEW(view);
  return on_kfac_page(v) ? lmwb_kfac_panel_current_plot(v->kfac_panel) : v->ppl_plot;
}

static gboolean busy(LmwbView *view) { return lmwb_kfac_panel_busy(LMWB_EDITING_VIEW(view)->kfac_panel); }

static void describe_scores(GString *s, const char *when, const LmwbEditScores *sc) {
  g_string_append_printf(s, "editing %s p_new=%.6g p_true=%.6g efficacy=%d generalisation=%.4g specificity=%.4g fluency=%.4g\n",
                         when, sc->p_new, sc->p_true, sc->efficacy, sc->generalisation, sc->specificity, sc->fluency);
}

static char *describe(LmwbView *view) {
  LmwbEditingView *v = LMWB_EDITING_VIEW(view);
  GString *s = g_string_new(NULL);
  g_string_append_printf(s, "editing world_requests=%d versions=%u current=%d\n", v->world ? v->world->n : 0,
                         v->versions->len, v->current);
  for (guint i = 0; i < v->versions->len; i++) {
    Version *ver = g_ptr_array_index(v->versions, i);
    g_autofree char *label = g_strescape(ver->label, NULL);
    g_string_append_printf(s, "editing version %u ppl=%.6g efficacy=%.4g alarm=%d label=%s\n", i, ver->ppl, ver->efficacy,
                           ver->alarm, label);
  }
  if (v->last) {
    g_autofree char *req = g_strescape(v->last_request ? v->last_request : "", NULL);
    g_string_append_printf(s, "editing request=%s\n", req);
    describe_scores(s, "before", &v->last->before);
    describe_scores(s, "after", &v->last->after);
    g_string_append_printf(s, "editing info steps=%d update_norm=%.6g denominator=%.6g\n", v->last->info.steps,
                           v->last->info.update_norm, v->last->info.denominator);
    for (int i = 0; i < v->last->n_nb; i++)
      g_string_append_printf(s, "editing neighbour %d before=%s after=%s\n", i, v->last->nb_before[i], v->last->nb_after[i]);
  }
  g_string_append_printf(s, "editing sequence points=%d alarms=%d threshold=%.6g\n", v->seq_points, v->seq_alarms,
                         v->seq_threshold);
  g_string_append_printf(s, "editing saved=%s\n", v->saved ? v->saved : "");
  g_string_append_printf(s, "editing page=%s\n", gtk_stack_get_visible_child_name(v->page_stack));
  g_autofree char *kfac = lmwb_kfac_panel_describe(v->kfac_panel);
  g_string_append(s, kfac);
  return g_string_free(s, FALSE);
}

static void view_iface_init(LmwbViewInterface *iface) {
  static const LmwbViewInfo info = {.id = "editing", .title = "Editing", .icon_name = "document-edit-symbolic",
                                    .actions = all_actions, .n_actions = G_N_ELEMENTS(all_actions),
                                    .shortcuts = shortcuts, .n_shortcuts = G_N_ELEMENTS(shortcuts)};
  memcpy(all_actions, actions, sizeof actions);
  memcpy(all_actions + G_N_ELEMENTS(actions), lmwb_kfac_panel_actions, sizeof lmwb_kfac_panel_actions);
  iface->info = &info;
  iface->set_model = set_model;
  iface->current_plot = current_plot;
  iface->describe = describe;
  iface->busy = busy;
}

/* ---- object -------------------------------------------------------------------------------- */

static void dispose(GObject *o) {
  LmwbEditingView *v = LMWB_EDITING_VIEW(o);
  if (v->job) lmwb_job_cancel(v->job);
  v->job = NULL;
  g_clear_pointer(&v->versions, g_ptr_array_unref);
  g_clear_pointer(&v->model, lmwb_model_unref);
  g_clear_pointer(&v->world, lmwb_edit_requests_free);
  g_clear_pointer(&v->last, edit_out_free);
  g_clear_pointer(&v->last_request, g_free);
  g_clear_pointer(&v->saved, g_free);
  gtk_widget_dispose_template(GTK_WIDGET(o), LMWB_TYPE_EDITING_VIEW);
  G_OBJECT_CLASS(lmwb_editing_view_parent_class)->dispose(o);
}

static void lmwb_editing_view_class_init(LmwbEditingViewClass *k) {
  G_OBJECT_CLASS(k)->dispose = dispose;
  g_type_ensure(LMWB_TYPE_PLOT_VIEW);
  g_type_ensure(LMWB_TYPE_KFAC_PANEL);
  GtkWidgetClass *wk = GTK_WIDGET_CLASS(k);
  gtk_widget_class_set_template_from_resource(wk, "/org/lmwb/Workbench/lmwb-editing-view.ui");
#define BIND(x) gtk_widget_class_bind_template_child(wk, LmwbEditingView, x)
  BIND(world_drop), BIND(method_drop), BIND(world_list), BIND(prompt_entry), BIND(subject_entry), BIND(new_entry);
  BIND(true_entry), BIND(layers_entry), BIND(stats_entry), BIND(requests_entry), BIND(monitor_entry);
  BIND(steps_spin), BIND(templates_spin), BIND(lambda_spin), BIND(count_spin), BIND(alarm_spin), BIND(stop_check);
  BIND(scores_label), BIND(neighbours_label), BIND(sequence_label), BIND(step_list), BIND(ppl_plot), BIND(efficacy_plot);
  BIND(page_stack), BIND(kfac_panel);
#undef BIND
}

static void lmwb_editing_view_init(LmwbEditingView *v) {
  gtk_widget_init_template(GTK_WIDGET(v));
  g_object_set_data(G_OBJECT(v), LMWB_KFAC_PANEL_KEY, v->kfac_panel); /* for the panel's actions */
  v->versions = g_ptr_array_new_with_free_func(version_free);
  g_autofree char *monitor = lmwb_app_default_monitor();
  set_text(v->monitor_entry, monitor);
  g_signal_connect(v->world_drop, "notify::selected", G_CALLBACK(on_world_picked), v);
  g_signal_connect(v->step_list, "row-activated", G_CALLBACK(on_row_activated), v);
  reset_plots(v);
}
