/* Edges view: edge-pruning circuits of a task (circuits/edge_circuit.h). Choose a task (IOI,
 * greater-than, gendered pronouns, or a JSONL file) and a target sparsity; Prune learns the edge
 * masks as a job with live loss, KL and sparsity plots (the pruner's metric series), then draws the
 * circuit (heads and MLPs by layer, LmwbGraphCanvas). EAP scores every edge by attribution patching
 * and keeps as many edges as the pruned circuit has (or as the target sparsity leaves, before any
 * prune), so the two circuits can be compared side by side (the toggle) with their evaluation:
 * logit difference (greater-than: probability difference) as a share of the full model's, KL and
 * accuracy. Clicking an edge shows its score; Export writes the shown circuit as graph JSON, DOT,
 * SVG (by extension) or Edge-Pruning's edges.json (a name ending in edges.json).
 * Actions (edges.*): set-task ioi|gt|gp|FILE, set-sparsity X, set-steps N, set-lr X, set-batch B,
 * set-examples N, prune, eap, show prune|eap, click 'X,Y' (canvas pixels), select-edge 'SRC->DST',
 * export PATH, export-dialog FORMAT, choose-task, fit. */
#include "ui/desktop/lmwb-view.h"
#include "app/core/errors.h"
#include "circuits/edge_circuit.h"
#include "ui/desktop/lmwb-graph-canvas.h"
#include "ui/desktop/lmwb-job.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_STEPS 200
#define DEFAULT_BATCH 16
#define DEFAULT_EXAMPLES 32
#define DEFAULT_SPARSITY 0.95
#define DEFAULT_LR 0.1 /* the pruner's own default */
#define DRAW_EDGES 400 /* the strongest edges drawn at most (exports have them all) */

enum { SHOW_PRUNE, SHOW_EAP, N_SHOW };
static const char *const show_names[N_SHOW] = {"prune", "eap"};
static const char *const task_specs[] = {"ioi", "gt", "gp"};

#define LMWB_TYPE_EDGES_VIEW (lmwb_edges_view_get_type())
G_DECLARE_FINAL_TYPE(LmwbEdgesView, lmwb_edges_view, LMWB, EDGES_VIEW, GtkBox)

/* One circuit found: by pruning (scores: log alpha) or by EAP (scores: EAP's). */
typedef struct {
  LmwbEdgeGraph *edges;
  float *score;      /* [n_edges] */
  uint8_t *keep;     /* [n_edges] */
  int64_t n_keep;
  LmwbEdgeEval eval;
  gboolean gt;       /* probability difference instead of logit difference */
  LmwbGraph *graph;  /* the circuit's nodes and edges, drawn */
  LmwbGraphLayout *layout;
  int64_t *graph_edge; /* [graph->n_edges] the edge index of each drawn graph edge */
  char *task;
  int steps_done;
} Circuit;

static void circuit_free(gpointer p) {
  Circuit *c = p;
  if (!c) return;
  lmwb_edge_graph_free(c->edges);
  g_free(c->score);
  g_free(c->keep);
  if (c->graph) lmwb_graph_free(c->graph);
  if (c->layout) lmwb_graph_layout_free(c->layout);
  g_free(c->graph_edge);
  g_free(c->task);
  g_free(c);
}

struct _LmwbEdgesView {
  GtkBox parent;
  GtkDropDown *task_drop;
  GtkEntry *file_entry;
  GtkAdjustment *sparsity_adj, *steps_adj, *lr_adj, *batch_adj, *examples_adj;
  GtkLabel *status_label, *summary_label, *edge_label, *prune_metrics, *eap_metrics;
  GtkToggleButton *show_prune, *show_eap;
  LmwbGraphCanvas *canvas;
  LmwbPlotView *loss_plot, *kl_plot, *sparsity_plot;

  LmwbModel *model;
  LmwbJob *prune_job, *eap_job;
  Circuit *circuit[N_SHOW];
  int shown;
  int64_t selected_edge; /* edge index of the selected edge, -1 none */
  int points;            /* metric points received by the last prune */
  char *exported;
};

static void view_iface_init(LmwbViewInterface *iface);

G_DEFINE_FINAL_TYPE_WITH_CODE(LmwbEdgesView, lmwb_edges_view, GTK_TYPE_BOX,
                              G_IMPLEMENT_INTERFACE(LMWB_TYPE_VIEW, view_iface_init))

static const char *entry_text(GtkEntry *e) { return gtk_editable_get_text(GTK_EDITABLE(e)); }
static void set_entry_text(GtkEntry *e, const char *t) { gtk_editable_set_text(GTK_EDITABLE(e), t ? t : ""); }

/* The task as lmwb_edge_task_open takes it, or NULL with a banner. */
static char *task_spec(LmwbEdgesView *v) {
  guint i = gtk_drop_down_get_selected(v->task_drop);
  if (i < G_N_ELEMENTS(task_specs)) return g_strdup(task_specs[i]);
  const char *f = entry_text(v->file_entry);
  if (!*f) {
    lmwb_view_show_error(LMWB_VIEW(v), "Edges: choose a JSONL task file (one {\"clean\", \"corrupted\", \"answer\", "
                                       "\"wrong\"} per line)");
    return NULL;
  }
  return g_strdup(f);
}

/* ---- jobs (worker side) ------------------------------------------------------------------------ */

typedef struct {
  LmwbModel *model;
  char *task;
  int examples, batch, steps;
  double sparsity, lr;
  int64_t top; /* EAP: edges to keep */
} EdgesIn;

static void edges_in_free(gpointer p) {
  EdgesIn *in = p;
  lmwb_model_unref(in->model);
  g_free(in->task);
  g_free(in);
}

static LmwbEdgeTask *open_task(const EdgesIn *in, GError **error) {
  LmwbEdgeTask *t = lmwb_edge_task_open(in->task, in->model, in->examples, 0, error);
  if (t && lmwb_edge_task_max_len(t) > in->model->cfg.n_ctx) {
    g_set_error(error, LMWB_ERROR, LMWB_ERROR_INPUT, "task %s: an example of %d tokens exceeds the model's context of %d",
                in->task, lmwb_edge_task_max_len(t), in->model->cfg.n_ctx);
    g_clear_pointer(&t, lmwb_edge_task_free);
  }
  return t;
}

/* The circuit's graph (nodes with an edge left) and its layout, the strongest DRAW_EDGES drawn. */
static gboolean circuit_draw(Circuit *c, GError **error) {
  g_autoptr(LmwbGraph) full = lmwb_edge_graph_export(c->edges, c->score, c->keep, NULL, error);
  if (!full) return FALSE;
  g_autofree uint8_t *used = g_new0(uint8_t, full->n_nodes);
  for (int e = 0; e < full->n_edges; e++) used[full->edges[e].source] = used[full->edges[e].target] = 1;
  c->graph = lmwb_graph_subgraph(full, used, NULL, NULL);
  /* the graph's edges follow the kept edges in index order */
  c->graph_edge = g_new(int64_t, MAX(c->graph->n_edges, 1));
  int k = 0;
  for (int64_t e = 0; e < c->edges->n_edges && k < c->graph->n_edges; e++)
    if (c->keep[e]) c->graph_edge[k++] = e;
  LmwbGraphDrawOptions opt = {.max_edges = DRAW_EDGES};
  c->layout = lmwb_graph_layout(c->graph, &opt, error);
  return c->layout != NULL;
}

static Circuit *circuit_finish(Circuit *c, LmwbModel *m, const LmwbEdgeTask *t, int batch, LmwbReporter *rep,
                               GError **error) {
  c->n_keep = lmwb_edge_count(c->edges, c->keep);
  c->gt = t->kind == LMWB_EDGE_TASK_GT;
  if (!lmwb_edge_eval(m, t, c->keep, batch, &c->eval, rep, error) || !circuit_draw(c, error)) {
    circuit_free(c);
    return NULL;
  }
  return c;
}

static gpointer run_prune(gpointer data, LmwbReporter *rep, GError **error) {
  EdgesIn *in = data;
  g_autoptr(LmwbEdgeTask) t = open_task(in, error);
  if (!t) return NULL;
  LmwbEdgePruneOptions o = {.target_sparsity = in->sparsity, .steps = in->steps, .batch = in->batch,
                          .lr = in->lr};
  LmwbEdgePruneResult *r = lmwb_edge_prune(in->model, t, &o, rep, error);
  if (!r) return NULL;
  Circuit *c = g_new0(Circuit, 1);
  c->task = g_strdup(in->task);
  c->edges = lmwb_edge_graph_new(&in->model->cfg, error);
  if (!c->edges) {
    lmwb_edge_prune_result_free(r);
    circuit_free(c);
    return NULL;
  }
  c->score = g_steal_pointer(&r->log_alpha);
  c->keep = g_steal_pointer(&r->keep);
  c->steps_done = r->steps_done;
  lmwb_edge_prune_result_free(r);
  return circuit_finish(c, in->model, t, in->batch, rep, error);
}

static gpointer run_eap(gpointer data, LmwbReporter *rep, GError **error) {
  EdgesIn *in = data;
  g_autoptr(LmwbEdgeTask) t = open_task(in, error);
  if (!t) return NULL;
  LmwbEapOptions o = {.batch = in->batch};
  float *score = lmwb_edge_eap(in->model, t, &o, rep, error);
  if (!score) return NULL;
  Circuit *c = g_new0(Circuit, 1);
  c->task = g_strdup(in->task);
  c->score = score;
  c->edges = lmwb_edge_graph_new(&in->model->cfg, error);
  if (!c->edges) {
    circuit_free(c);
    return NULL;
  }
  c->keep = g_new0(uint8_t, c->edges->n_edges);
  int64_t top = in->top >= 0 ? in->top : (int64_t)llround((1 - in->sparsity) * (double)c->edges->n_edges);
  lmwb_edge_select_top(c->edges, c->score, top, c->keep);
  return circuit_finish(c, in->model, t, in->batch, rep, error);
}

/* ---- the screen -------------------------------------------------------------------------------- */

static double share(double a, double b) { return b != 0 ? a / b : 0; }

static char *metrics_text(const Circuit *c) {
  const LmwbEdgeEval *e = &c->eval;
  double diff = c->gt ? e->circuit.prob_diff : e->circuit.logit_diff, full = c->gt ? e->full.prob_diff : e->full.logit_diff;
  return g_strdup_printf("%" G_GINT64_FORMAT " of %" G_GINT64_FORMAT " edges (sparsity %.3f) · %s %.3f (%.0f%% of the "
                         "full model's %.3f) · KL %.4f · accuracy %.3f (full %.3f) · exact match %.3f",
                         e->edges, e->total_edges, 1 - share((double)e->edges, (double)e->total_edges),
                         c->gt ? "prob. diff" : "logit diff", diff, 100 * share(diff, full), full, e->circuit.kl,
                         e->circuit.accuracy, e->full.accuracy, e->circuit.exact_match);
}

static void update_metrics(LmwbEdgesView *v) {
  GtkLabel *labels[N_SHOW] = {v->prune_metrics, v->eap_metrics};
  const char *none[N_SHOW] = {"Edge pruning: not run yet (Prune).", "EAP: not run yet (EAP)."};
  const char *names[N_SHOW] = {"Edge pruning", "EAP"};
  for (int k = 0; k < N_SHOW; k++) {
    if (!v->circuit[k]) {
      gtk_label_set_text(labels[k], none[k]);
      continue;
    }
    g_autofree char *m = metrics_text(v->circuit[k]);
    g_autofree char *t = g_strdup_printf("%s: %s", names[k], m);
    gtk_label_set_text(labels[k], t);
  }
}

static void show_edge(LmwbEdgesView *v) {
  Circuit *c = v->circuit[v->shown];
  if (!c || v->selected_edge < 0) {
    gtk_label_set_text(v->edge_label, "Click an edge of the graph to see its score.");
    return;
  }
  int w, r;
  lmwb_edge_ends(c->edges, v->selected_edge, &w, &r);
  g_autofree char *wn = lmwb_edge_writer_name(c->edges, w);
  g_autofree char *rn = lmwb_edge_reader_name(c->edges, r);
  GString *s = g_string_new(NULL);
  g_string_append_printf(s, "%s → %s · %s %.5g", wn, rn, v->shown == SHOW_PRUNE ? "mask log α" : "EAP score",
                         c->score[v->selected_edge]);
  Circuit *o = v->circuit[1 - v->shown];
  if (o && o->edges->n_edges == c->edges->n_edges)
    g_string_append_printf(s, " · %s %.5g (%s)", v->shown == SHOW_PRUNE ? "EAP score" : "mask log α",
                           o->score[v->selected_edge], o->keep[v->selected_edge] ? "in its circuit too" : "not in its circuit");
  gtk_label_set_text(v->edge_label, s->str);
  g_string_free(s, TRUE);
}

static void show_circuit(LmwbEdgesView *v) {
  Circuit *c = v->circuit[v->shown];
  gtk_toggle_button_set_active(v->show_prune, v->shown == SHOW_PRUNE);
  gtk_toggle_button_set_active(v->show_eap, v->shown == SHOW_EAP);
  lmwb_graph_canvas_set_graph(v->canvas, c ? c->graph : NULL, c ? c->layout : NULL, FALSE);
  if (!c) {
    lmwb_graph_canvas_set_message(v->canvas, v->shown == SHOW_PRUNE
                                               ? "No pruned circuit yet: choose a task and a target sparsity, Prune (Ctrl+R)."
                                               : "No EAP circuit yet: EAP (Ctrl+E) scores every edge and keeps as many as "
                                                 "the pruned circuit has.");
    gtk_label_set_text(v->summary_label, "");
  } else {
    int drawn = 0;
    for (int k = 0; k < c->layout->n_edges; k++) drawn += c->layout->edges[k].edge >= 0;
    g_autofree char *s = g_strdup_printf("%s circuit of %s: %" G_GINT64_FORMAT " edges, %d nodes%s",
                                         v->shown == SHOW_PRUNE ? "Edge-pruning" : "EAP", c->task, c->n_keep,
                                         c->graph->n_nodes, drawn < c->graph->n_edges ? " · the strongest drawn" : "");
    gtk_label_set_text(v->summary_label, s);
  }
  v->selected_edge = -1;
  show_edge(v);
  update_metrics(v);
}

static void set_circuit(LmwbEdgesView *v, int which, Circuit *c) {
  lmwb_graph_canvas_set_graph(v->canvas, NULL, NULL, TRUE);
  circuit_free(v->circuit[which]);
  v->circuit[which] = c;
  v->shown = which;
  show_circuit(v);
}

static void reset_plots(LmwbEdgesView *v, int steps) {
  struct {
    LmwbPlotView *pv;
    const char *title, *y, *series[2];
  } p[] = {{v->loss_plot, "Loss", "KL + sparsity terms", {"loss", NULL}},
           {v->kl_plot, "KL(full ‖ circuit)", "KL (nats)", {"kl", NULL}},
           {v->sparsity_plot, "Edge sparsity", "share of edges removed", {"sparsity", "target"}}};
  for (size_t i = 0; i < G_N_ELEMENTS(p); i++) {
    LmwbPlot *pl = lmwb_plot_new(LMWB_PLOT_LINE, p[i].title, "step", p[i].y);
    for (int s = 0; s < 2 && p[i].series[s]; s++) lmwb_plot_add_series(pl, p[i].series[s]);
    if (steps > 0) lmwb_plot_set_x_range(pl, 0, steps);
    lmwb_plot_view_set_plot(p[i].pv, pl);
  }
  v->points = 0;
}

static void start(LmwbEdgesView *v, LmwbJob **slot, const char *title, LmwbJobFunc fn, EdgesIn *in, LmwbJobDone done,
                  LmwbJobMetric metric) {
  LmwbJob *job = lmwb_job_new(title, fn, in, edges_in_free);
  lmwb_job_on_done(job, done, circuit_free);
  if (metric) lmwb_job_on_metric(job, metric);
  *slot = lmwb_job_start(job, GTK_WIDGET(v));
}

static EdgesIn *edges_in(LmwbEdgesView *v) {
  if (!v->model) {
    lmwb_view_show_error(LMWB_VIEW(v), "Edges: no model is loaded");
    return NULL;
  }
  char *task = task_spec(v);
  if (!task) return NULL;
  EdgesIn *in = g_new0(EdgesIn, 1);
  in->model = lmwb_model_ref(v->model);
  in->task = task;
  in->examples = (int)gtk_adjustment_get_value(v->examples_adj);
  in->batch = (int)gtk_adjustment_get_value(v->batch_adj);
  in->steps = (int)gtk_adjustment_get_value(v->steps_adj);
  in->sparsity = gtk_adjustment_get_value(v->sparsity_adj);
  in->lr = gtk_adjustment_get_value(v->lr_adj);
  in->top = -1;
  return in;
}

static void prune_metric(GtkWidget *owner, const char *series, double x, double y, gpointer data) {
  LmwbEdgesView *v = LMWB_EDGES_VIEW(owner);
  LmwbPlotView *pv = NULL;
  int s = 0;
  if (!strcmp(series, "loss")) pv = v->loss_plot;
  else if (!strcmp(series, "kl")) pv = v->kl_plot;
  else if (!strcmp(series, "sparsity")) pv = v->sparsity_plot;
  else if (!strcmp(series, "target")) pv = v->sparsity_plot, s = 1;
  if (!pv) return;
  lmwb_plot_append(lmwb_plot_view_get_plot(pv), s, x, y);
  if (s == 0 && pv == v->loss_plot) {
    v->points++;
    g_autofree char *t = g_strdup_printf("Pruning: step %.0f of %.0f, loss %.4g", x, gtk_adjustment_get_value(v->steps_adj), y);
    gtk_label_set_text(v->status_label, t);
  }
}

static void prune_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbEdgesView *v = LMWB_EDGES_VIEW(owner);
  EdgesIn *in = data;
  if (v->prune_job == job) v->prune_job = NULL;
  if (in->model != v->model) return;
  if (error) {
    gtk_label_set_text(v->status_label, lmwb_job_cancelled(error) ? "Pruning cancelled." : error->message);
    lmwb_view_show_job_error(LMWB_VIEW(v), error);
    return;
  }
  Circuit *c = result;
  g_autofree char *t = g_strdup_printf("Pruned in %d steps: %" G_GINT64_FORMAT " edges kept.", c->steps_done, c->n_keep);
  gtk_label_set_text(v->status_label, t);
  /* the result is ours from here (done does not free it: taken out of the job's hands) */
  set_circuit(v, SHOW_PRUNE, g_memdup2(c, sizeof *c));
  memset(c, 0, sizeof *c);
}

static void eap_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbEdgesView *v = LMWB_EDGES_VIEW(owner);
  EdgesIn *in = data;
  if (v->eap_job == job) v->eap_job = NULL;
  if (in->model != v->model) return;
  if (error) {
    gtk_label_set_text(v->status_label, lmwb_job_cancelled(error) ? "EAP cancelled." : error->message);
    lmwb_view_show_job_error(LMWB_VIEW(v), error);
    return;
  }
  Circuit *c = result;
  g_autofree char *t = g_strdup_printf("EAP: %" G_GINT64_FORMAT " edges kept.", c->n_keep);
  gtk_label_set_text(v->status_label, t);
  set_circuit(v, SHOW_EAP, g_memdup2(c, sizeof *c));
  memset(c, 0, sizeof *c);
}

static void prune(LmwbEdgesView *v) {
  EdgesIn *in = edges_in(v);
  if (!in) return;
  lmwb_job_cancel(v->prune_job);
  reset_plots(v, in->steps);
  gtk_label_set_text(v->status_label, "Pruning…");
  start(v, &v->prune_job, "Pruning the edges", run_prune, in, prune_done, prune_metric);
}

static void eap(LmwbEdgesView *v) {
  EdgesIn *in = edges_in(v);
  if (!in) return;
  Circuit *p = v->circuit[SHOW_PRUNE];
  if (p && !g_strcmp0(p->task, in->task)) in->top = p->n_keep; /* the same edge count as the pruned circuit */
  lmwb_job_cancel(v->eap_job);
  gtk_label_set_text(v->status_label, "Scoring edges (EAP)…");
  start(v, &v->eap_job, "Scoring edges (EAP)", run_eap, in, eap_done, NULL);
}

static void show(LmwbEdgesView *v, int which) {
  if (which == v->shown) return;
  v->shown = which;
  show_circuit(v);
}

static void select_edge(LmwbEdgesView *v, int graph_edge) {
  Circuit *c = v->circuit[v->shown];
  v->selected_edge = c && graph_edge >= 0 && graph_edge < c->graph->n_edges ? c->graph_edge[graph_edge] : -1;
  show_edge(v);
}

static void export_to(LmwbEdgesView *v, const char *path) {
  Circuit *c = v->circuit[v->shown];
  if (!c) {
    lmwb_view_show_error(LMWB_VIEW(v), "Edges: there is no circuit to export yet: Prune or EAP first");
    return;
  }
  GError *err = NULL;
  gboolean ok;
  if (g_str_has_suffix(path, "edges.json")) ok = lmwb_edge_list_write(c->edges, c->keep, path, &err);
  else if (g_str_has_suffix(path, ".scores.json")) ok = lmwb_edge_scores_write(c->edges, c->score, c->keep, NULL, path, &err);
  else if (g_str_has_suffix(path, ".json")) ok = lmwb_graph_write_json(c->graph, path, &err);
  else if (g_str_has_suffix(path, ".dot") || g_str_has_suffix(path, ".gv")) ok = lmwb_graph_write_dot(c->graph, NULL, path, &err);
  else if (g_str_has_suffix(path, ".svg")) ok = lmwb_graph_write_image(c->graph, NULL, LMWB_GRAPH_SVG, path, &err);
  else if (g_str_has_suffix(path, ".png")) ok = lmwb_graph_write_image(c->graph, NULL, LMWB_GRAPH_PNG, path, &err);
  else {
    g_autofree char *m = g_strdup_printf("Edges: cannot tell the format of %s (edges.json, .scores.json, .json, .dot, "
                                         ".svg or .png)", path);
    lmwb_view_show_error(LMWB_VIEW(v), m);
    return;
  }
  if (!ok) {
    g_autofree char *m = g_strdup_printf("Edges: export failed: %s", err->message);
    lmwb_view_show_error(LMWB_VIEW(v), m);
    g_error_free(err);
    return;
  }
  g_free(v->exported);
  v->exported = g_strdup(path);
  g_autofree char *t = g_strdup_printf("Exported to %s", path);
  gtk_label_set_text(v->status_label, t);
}

/* ---- file choosers ----------------------------------------------------------------------------- */

typedef void (*PathFunc)(LmwbEdgesView *v, const char *path);
static void ask_path(LmwbEdgesView *v, const char *title, gboolean save, const char *suggest, PathFunc fn) {
  lmwb_ask_path(GTK_WIDGET(v), title, save ? GTK_FILE_CHOOSER_ACTION_SAVE : GTK_FILE_CHOOSER_ACTION_OPEN,
                save ? "_Save" : "_Choose", suggest, (LmwbPathFunc)fn);
}

static void set_task_file(LmwbEdgesView *v, const char *path) {
  set_entry_text(v->file_entry, path);
  gtk_drop_down_set_selected(v->task_drop, G_N_ELEMENTS(task_specs));
}

/* ---- actions ----------------------------------------------------------------------------------- */

#define V(u) LMWB_EDGES_VIEW(u)
static void act_set_task(GSimpleAction *a, GVariant *p, gpointer u) {
  const char *t = g_variant_get_string(p, NULL);
  for (guint i = 0; i < G_N_ELEMENTS(task_specs); i++)
    if (!g_ascii_strcasecmp(t, task_specs[i])) {
      gtk_drop_down_set_selected(V(u)->task_drop, i);
      return;
    }
  set_task_file(V(u), t);
}
static void act_set_sparsity(GSimpleAction *a, GVariant *p, gpointer u) {
  double s = g_variant_get_double(p);
  if (!(s >= 0 && s < 1)) {
    lmwb_view_show_error(u, "Edges: the target sparsity must be in [0, 1)");
    return;
  }
  gtk_adjustment_set_value(V(u)->sparsity_adj, s);
}
static void act_set_steps(GSimpleAction *a, GVariant *p, gpointer u) { gtk_adjustment_set_value(V(u)->steps_adj, g_variant_get_int32(p)); }
static void act_set_lr(GSimpleAction *a, GVariant *p, gpointer u) { gtk_adjustment_set_value(V(u)->lr_adj, g_variant_get_double(p)); }
static void act_set_batch(GSimpleAction *a, GVariant *p, gpointer u) { gtk_adjustment_set_value(V(u)->batch_adj, g_variant_get_int32(p)); }
static void act_set_examples(GSimpleAction *a, GVariant *p, gpointer u) { gtk_adjustment_set_value(V(u)->examples_adj, g_variant_get_int32(p)); }
static void act_prune(GSimpleAction *a, GVariant *p, gpointer u) { prune(V(u)); }
static void act_eap(GSimpleAction *a, GVariant *p, gpointer u) { eap(V(u)); }
static void act_show(GSimpleAction *a, GVariant *p, gpointer u) {
  const char *s = g_variant_get_string(p, NULL);
  for (int k = 0; k < N_SHOW; k++)
    if (!strcmp(s, show_names[k])) {
      show(V(u), k);
      return;
    }
  lmwb_view_show_error(u, "edges.show expects prune or eap");
}
static void act_click(GSimpleAction *a, GVariant *p, gpointer u) {
  double x, y;
  if (sscanf(g_variant_get_string(p, NULL), "%lf,%lf", &x, &y) != 2) {
    lmwb_view_show_error(u, "edges.click expects X,Y (canvas pixels)");
    return;
  }
  select_edge(V(u), lmwb_graph_canvas_edge_at(V(u)->canvas, x, y));
}
static void act_export(GSimpleAction *a, GVariant *p, gpointer u) { export_to(V(u), g_variant_get_string(p, NULL)); }
static void act_export_dialog(GSimpleAction *a, GVariant *p, gpointer u) {
  if (!V(u)->circuit[V(u)->shown]) {
    lmwb_view_show_error(u, "Edges: there is no circuit to export yet: Prune or EAP first");
    return;
  }
  const char *f = g_variant_get_string(p, NULL);
  g_autofree char *name = !strcmp(f, "edges") ? g_strdup("edges.json") : g_strdup_printf("circuit.%s", f);
  ask_path(V(u), "Export the circuit", TRUE, name, export_to);
}
static void act_choose_task(GSimpleAction *a, GVariant *p, gpointer u) {
  ask_path(V(u), "Choose a JSONL task file", FALSE, NULL, set_task_file);
}
static void act_fit(GSimpleAction *a, GVariant *p, gpointer u) { lmwb_graph_canvas_fit(V(u)->canvas); }
#undef V

static const GActionEntry actions[] = {
  {"set-task", act_set_task, "s"}, {"set-sparsity", act_set_sparsity, "d"}, {"set-steps", act_set_steps, "i"},
  {"set-lr", act_set_lr, "d"},
  {"set-batch", act_set_batch, "i"}, {"set-examples", act_set_examples, "i"}, {"prune", act_prune}, {"eap", act_eap},
  {"show", act_show, "s"}, {"click", act_click, "s"}, {"export", act_export, "s"},
  {"export-dialog", act_export_dialog, "s"}, {"choose-task", act_choose_task}, {"fit", act_fit},
};

static const LmwbShortcut shortcuts[] = {
  {"edges.prune", "<Control>r", "Prune the task's edges"},
  {"edges.eap", "<Control>e", "Score the edges by attribution patching (EAP)"},
};

/* ---- LmwbView ---------------------------------------------------------------------------------- */

static void set_model(LmwbView *view, LmwbModel *m) {
  LmwbEdgesView *v = LMWB_EDGES_VIEW(view);
  lmwb_job_cancel(v->prune_job);
  lmwb_job_cancel(v->eap_job);
  lmwb_graph_canvas_set_graph(v->canvas, NULL, NULL, TRUE);
  for (int k = 0; k < N_SHOW; k++) g_clear_pointer(&v->circuit[k], circuit_free);
  if (m) lmwb_model_ref(m);
  g_clear_pointer(&v->model, lmwb_model_unref);
  v->model = m;
  v->shown = SHOW_PRUNE;
  show_circuit(v);
}

static LmwbPlotView *current_plot(LmwbView *view) { return LMWB_EDGES_VIEW(view)->loss_plot; }

static void describe_circuit(GString *s, const char *name, const Circuit *c) {
  if (!c) {
    g_string_append_printf(s, "edges %s none\n", name);
    return;
  }
  const LmwbEdgeEval *e = &c->eval;
  double diff = c->gt ? e->circuit.prob_diff : e->circuit.logit_diff, full = c->gt ? e->full.prob_diff : e->full.logit_diff;
  g_string_append_printf(s, "edges %s task=%s edges=%" G_GINT64_FORMAT " total=%" G_GINT64_FORMAT " nodes=%d drawn=%d "
                            "diff=%.6f full_diff=%.6f share=%.6f kl=%.6f accuracy=%.6f full_accuracy=%.6f exact=%.6f\n",
                         name, c->task, e->edges, e->total_edges, c->graph->n_nodes, c->layout->n_edges, diff, full,
                         share(diff, full), e->circuit.kl, e->circuit.accuracy, e->full.accuracy, e->circuit.exact_match);
}

static char *describe(LmwbView *view) {
  LmwbEdgesView *v = LMWB_EDGES_VIEW(view);
  GString *s = g_string_new(NULL);
  g_autofree char *file = g_strescape(entry_text(v->file_entry), NULL);
  guint ti = gtk_drop_down_get_selected(v->task_drop);
  g_string_append_printf(s, "edges task=%s file=%s sparsity=%g steps=%.0f lr=%g batch=%.0f examples=%.0f\n",
                         ti < G_N_ELEMENTS(task_specs) ? task_specs[ti] : "file", file,
                         gtk_adjustment_get_value(v->sparsity_adj), gtk_adjustment_get_value(v->steps_adj),
                         gtk_adjustment_get_value(v->lr_adj), gtk_adjustment_get_value(v->batch_adj), gtk_adjustment_get_value(v->examples_adj));
  g_string_append_printf(s, "edges points=%d shown=%s\n", v->points, show_names[v->shown]);
  describe_circuit(s, "prune", v->circuit[SHOW_PRUNE]);
  describe_circuit(s, "eap", v->circuit[SHOW_EAP]);
  Circuit *c = v->circuit[v->shown];
  if (c) {
    /* a point on each drawn edge (the first few), for tests to click */
    int listed = 0;
    for (int k = 0; k < c->layout->n_edges && listed < 20; k++) {
      int ge = c->layout->edges[k].edge;
      double x, y;
      if (ge < 0 || !lmwb_graph_canvas_edge_point(v->canvas, ge, &x, &y)) continue;
      int w, r;
      lmwb_edge_ends(c->edges, c->graph_edge[ge], &w, &r);
      g_autofree char *wn = lmwb_edge_writer_name(c->edges, w);
      g_autofree char *rn = lmwb_edge_reader_name(c->edges, r);
      g_string_append_printf(s, "edges edge %s->%s at=%.0f,%.0f\n", wn, rn, x, y);
      listed++;
    }
  }
  g_autofree char *el = g_strescape(gtk_label_get_text(v->edge_label), NULL);
  g_string_append_printf(s, "edges selected=%s\n", el);
  g_autofree char *st = g_strescape(gtk_label_get_text(v->status_label), NULL);
  g_string_append_printf(s, "edges status=%s\nedges exported=%s\n", st, v->exported ? v->exported : "");
  return g_string_free(s, FALSE);
}

static void view_iface_init(LmwbViewInterface *iface) {
  static const LmwbViewInfo info = {.id = "edges", .title = "Edges", .icon_name = "network-wired-symbolic",
                                    .actions = actions, .n_actions = G_N_ELEMENTS(actions),
                                    .shortcuts = shortcuts, .n_shortcuts = G_N_ELEMENTS(shortcuts)};
  iface->info = &info;
  iface->set_model = set_model;
  iface->current_plot = current_plot;
  iface->describe = describe;
}

/* ---- object ------------------------------------------------------------------------------------ */

static void on_edge_clicked(LmwbGraphCanvas *c, int edge, gpointer user) { select_edge(user, edge); }
static void on_prune_clicked(GtkButton *b, gpointer user) { prune(user); }
static void on_eap_clicked(GtkButton *b, gpointer user) { eap(user); }
static void on_choose_clicked(GtkButton *b, gpointer user) {
  ask_path(user, "Choose a JSONL task file", FALSE, NULL, set_task_file);
}
static void on_show_toggled(GtkToggleButton *b, gpointer user) {
  LmwbEdgesView *v = user;
  if (gtk_toggle_button_get_active(b)) show(v, b == v->show_eap ? SHOW_EAP : SHOW_PRUNE);
}
static void on_task_changed(GObject *o, GParamSpec *ps, gpointer user) {
  LmwbEdgesView *v = user;
  gtk_widget_set_sensitive(GTK_WIDGET(v->file_entry), gtk_drop_down_get_selected(v->task_drop) >= G_N_ELEMENTS(task_specs));
}

static void dispose(GObject *o) {
  LmwbEdgesView *v = LMWB_EDGES_VIEW(o);
  lmwb_job_cancel(v->prune_job);
  lmwb_job_cancel(v->eap_job);
  v->prune_job = v->eap_job = NULL;
  if (v->canvas) lmwb_graph_canvas_set_graph(v->canvas, NULL, NULL, TRUE);
  for (int k = 0; k < N_SHOW; k++) g_clear_pointer(&v->circuit[k], circuit_free);
  g_clear_pointer(&v->model, lmwb_model_unref);
  g_clear_pointer(&v->exported, g_free);
  gtk_widget_dispose_template(GTK_WIDGET(o), LMWB_TYPE_EDGES_VIEW);
  G_OBJECT_CLASS(lmwb_edges_view_parent_class)->dispose(o);
}

static void lmwb_edges_view_class_init(LmwbEdgesViewClass *k) {
  G_OBJECT_CLASS(k)->dispose = dispose;
  g_type_ensure(LMWB_TYPE_PLOT_VIEW);
  g_type_ensure(LMWB_TYPE_GRAPH_CANVAS);
  GtkWidgetClass *wk = GTK_WIDGET_CLASS(k);
  gtk_widget_class_set_template_from_resource(wk, "/org/lmwb/Workbench/lmwb-edges-view.ui");
#define BIND(x) gtk_widget_class_bind_template_child(wk, LmwbEdgesView, x)
  BIND(task_drop), BIND(file_entry), BIND(sparsity_adj), BIND(steps_adj), BIND(lr_adj), BIND(batch_adj), BIND(examples_adj);
  BIND(status_label), BIND(summary_label), BIND(edge_label), BIND(prune_metrics), BIND(eap_metrics);
  BIND(show_prune), BIND(show_eap), BIND(canvas), BIND(loss_plot), BIND(kl_plot), BIND(sparsity_plot);
#undef BIND
  gtk_widget_class_bind_template_callback(wk, on_prune_clicked);
  gtk_widget_class_bind_template_callback(wk, on_eap_clicked);
  gtk_widget_class_bind_template_callback(wk, on_choose_clicked);
  gtk_widget_class_bind_template_callback(wk, on_show_toggled);
  gtk_widget_class_bind_template_callback(wk, on_task_changed);
}

static void lmwb_edges_view_init(LmwbEdgesView *v) {
  gtk_widget_init_template(GTK_WIDGET(v));
  v->selected_edge = -1;
  gtk_adjustment_set_value(v->sparsity_adj, DEFAULT_SPARSITY);
  gtk_adjustment_set_value(v->steps_adj, DEFAULT_STEPS);
  gtk_adjustment_set_value(v->lr_adj, DEFAULT_LR);
  gtk_adjustment_set_value(v->batch_adj, DEFAULT_BATCH);
  gtk_adjustment_set_value(v->examples_adj, DEFAULT_EXAMPLES);
  g_signal_connect(v->canvas, "edge-clicked", G_CALLBACK(on_edge_clicked), v);
  gtk_widget_set_sensitive(GTK_WIDGET(v->file_entry), FALSE);
  reset_plots(v, DEFAULT_STEPS);
  show_circuit(v);
}
