/* Circuits view: the attribution graph of a prompt through a set of transcoders (circuits/
 * attribution.h), drawn from its Graphviz layout (LmwbGraphCanvas). Pick the set (default: the
 * model's transcoders/ folder), type a prompt, Trace: the attribution runs as a job; the node and
 * edge thresholds re-prune it live (only pruning, graph and layout run again, on a worker, after the
 * spin buttons rest). Clicking a feature shows its decoded output tokens and its top-activating
 * contexts on the text file (default: the Brown corpus, else the built-in model's sample text);
 * pinned nodes stay in the graph through re-pruning; Export writes graph JSON, DOT, SVG or PNG. The
 * Train tab trains a transcoder for one layer as a job with live loss / FVU and L0 plots.
 * The jobs themselves are lmwb-circuits-jobs.c; no method runs here.
 * Actions (circuits.*): set-transcoders DIR, set-prompt TEXT, trace, node-threshold X,
 * edge-threshold X, select NODE_ID, click 'X,Y' (canvas pixels), pin NODE_ID, pin-selected, set-text FILE, export PATH (format by
 * extension), export-dialog FORMAT, set-train 'layer=L features=N k=K tokens=N out=DIR', train, fit,
 * draw-edges N, choose-set, choose-text, choose-out. */
#include "ui/desktop/lmwb-view.h"
#include "app/core/errors.h"
#include "ui/desktop/lmwb-circuits-jobs.h"
#include "ui/desktop/lmwb-graph-canvas.h"
#include "ui/desktop/lmwb-job.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define REPRUNE_DEBOUNCE_MS 250
#define DUMP_NODES 400 /* node lines in `dump` */
#define DRAW_EDGES 300 /* the strongest edges drawn (exports have them all): Graphviz spreads a row's nodes
                          apart to route thousands of edges, and the lines then hide each other */

#define LMWB_TYPE_CIRCUITS_VIEW (lmwb_circuits_view_get_type())
G_DECLARE_FINAL_TYPE(LmwbCircuitsView, lmwb_circuits_view, LMWB, CIRCUITS_VIEW, GtkBox)

struct _LmwbCircuitsView {
  GtkBox parent;
  GtkEntry *set_entry, *prompt_entry, *text_entry, *out_entry;
  GtkAdjustment *node_adj, *edge_adj, *layer_adj, *features_adj, *k_adj, *tokens_adj;
  GtkLabel *summary_label, *node_title, *node_info, *tokens_heading, *tokens_label, *contexts_heading;
  GtkLabel *contexts_status, *train_status;
  GtkListBox *contexts_list;
  GtkButton *pin_button;
  GtkStack *side_stack;
  LmwbGraphCanvas *canvas;
  LmwbPlotView *loss_plot, *l0_plot;

  LmwbModel *model;
  char *synced_prompt;      /* the window's prompt last copied into prompt_entry */
  CircuitsSet *set;         /* the loaded set (its dir may differ from the entry's) */
  CircuitsTrace *trace;     /* the last traced prompt */
  CircuitsGraph *graph;     /* its pruned graph, drawn */
  GArray *pins;             /* LmwbAttributionPin */
  gboolean has_selected;
  LmwbAttributionPin selected;
  guint serial;             /* bumped by a new model or a new trace: stale results are dropped */
  guint feature_serial;     /* bumped by every selection */
  guint debounce_id;        /* a re-prune waits for the thresholds to rest */
  LmwbJob *trace_job, *prune_job, *feature_job, *train_job;
  gboolean prune_pending;
  LmwbFeatureContexts *contexts; /* of the selected feature (for dump) */
  char *tokens_text;
  int train_points;
  char *exported;
  int draw_edges;
};

static void view_iface_init(LmwbViewInterface *iface);

G_DEFINE_FINAL_TYPE_WITH_CODE(LmwbCircuitsView, lmwb_circuits_view, GTK_TYPE_BOX,
                              G_IMPLEMENT_INTERFACE(LMWB_TYPE_VIEW, view_iface_init))

static const char *entry_text(GtkEntry *e) { return gtk_editable_get_text(GTK_EDITABLE(e)); }
static void set_entry_text(GtkEntry *e, const char *t) { gtk_editable_set_text(GTK_EDITABLE(e), t ? t : ""); }

static LmwbAttributionPin pin_of(const LmwbGraphNode *n) {
  return (LmwbAttributionPin){.kind = n->kind, .layer = n->layer, .pos = n->pos, .index = n->index};
}

static gboolean same_node(const LmwbAttributionPin *p, const LmwbGraphNode *n) {
  return p->kind == n->kind && p->layer == n->layer && p->pos == n->pos &&
         (p->kind == LMWB_GRAPH_ERROR || p->index == n->index);
}

/* The current graph's node with this identity, or -1. */
static int graph_node(LmwbCircuitsView *v, const LmwbAttributionPin *p) {
  if (!v->graph) return -1;
  for (int i = 0; i < v->graph->graph->n_nodes; i++)
    if (same_node(p, &v->graph->graph->nodes[i])) return i;
  return -1;
}

static int find_pin(LmwbCircuitsView *v, const LmwbAttributionPin *p) {
  for (guint k = 0; k < v->pins->len; k++) {
    LmwbAttributionPin *q = &g_array_index(v->pins, LmwbAttributionPin, k);
    if (q->kind == p->kind && q->layer == p->layer && q->pos == p->pos &&
        (q->kind == LMWB_GRAPH_ERROR || q->index == p->index))
      return (int)k;
  }
  return -1;
}

static void start(LmwbCircuitsView *v, LmwbJob **slot, const char *title, LmwbJobFunc fn, gpointer in,
                  GDestroyNotify in_free, LmwbJobDone done, GDestroyNotify out_free, LmwbJobMetric metric) {
  LmwbJob *job = lmwb_job_new(title, fn, in, in_free);
  lmwb_job_on_done(job, done, out_free);
  if (metric) lmwb_job_on_metric(job, metric);
  *slot = lmwb_job_start(job, GTK_WIDGET(v));
}

/* ---- the graph on the screen --------------------------------------------------------------- */

static void update_summary(LmwbCircuitsView *v) {
  if (!v->graph) {
    gtk_label_set_text(v->summary_label, v->trace ? "" : "No graph yet: choose a transcoder set, type a prompt, Trace.");
    return;
  }
  const LmwbGraph *g = v->graph->graph;
  int features = 0, pinned = 0;
  for (int i = 0; i < g->n_nodes; i++) features += g->nodes[i].kind == LMWB_GRAPH_FEATURE, pinned += g->nodes[i].pinned;
  const LmwbAttribution *a = v->trace->attribution;
  GString *s = g_string_new(NULL);
  g_string_append_printf(s, "%d nodes (%d of %d active features), %d edges · replacement %.2f · completeness %.2f",
                         g->n_nodes, features, a->n_features, g->n_edges, v->graph->replacement, v->graph->completeness);
  if (pinned) g_string_append_printf(s, " · %d pinned", pinned);
  int drawn = 0;
  for (int k = 0; k < v->graph->layout->n_edges; k++) drawn += v->graph->layout->edges[k].edge >= 0;
  if (drawn < g->n_edges) g_string_append_printf(s, " · the %d strongest edges drawn", drawn);
  gtk_label_set_text(v->summary_label, s->str);
  g_string_free(s, TRUE);
}

static void clear_contexts(LmwbCircuitsView *v) {
  GtkWidget *c;
  while ((c = gtk_widget_get_first_child(GTK_WIDGET(v->contexts_list)))) gtk_list_box_remove(v->contexts_list, c);
  g_clear_pointer(&v->contexts, lmwb_feature_contexts_free);
  g_clear_pointer(&v->tokens_text, g_free);
}

static void show_feature_parts(LmwbCircuitsView *v, gboolean on) {
  gtk_widget_set_visible(GTK_WIDGET(v->tokens_heading), on);
  gtk_widget_set_visible(GTK_WIDGET(v->tokens_label), on);
  gtk_widget_set_visible(GTK_WIDGET(v->contexts_heading), on);
  gtk_widget_set_visible(GTK_WIDGET(v->contexts_status), on);
  gtk_widget_set_visible(GTK_WIDGET(v->contexts_list), on);
}

static void update_pin_button(LmwbCircuitsView *v) {
  gtk_widget_set_sensitive(GTK_WIDGET(v->pin_button), v->has_selected);
  gtk_button_set_label(v->pin_button, v->has_selected && find_pin(v, &v->selected) >= 0 ? "Unpin" : "Pin");
}

/* The node panel for the selected node (features: their contexts come from a job). */
static void show_node(LmwbCircuitsView *v) {
  int i = v->has_selected ? graph_node(v, &v->selected) : -1;
  lmwb_graph_canvas_set_selected(v->canvas, i);
  update_pin_button(v);
  if (i < 0) {
    gtk_label_set_text(v->node_title, "No node selected");
    gtk_label_set_text(v->node_info, "Click a node of the graph. Features show what they write (their decoded output "
                                     "tokens) and the text where they fire most.");
    show_feature_parts(v, FALSE);
    return;
  }
  const LmwbGraph *g = v->graph->graph;
  const LmwbGraphNode *n = &g->nodes[i];
  g_autofree char *tok = n->pos >= 0 && n->pos < g->n_prompt ? lmwb_token_display(g->prompt_tokens[n->pos]) : g_strdup("");
  g_autofree char *title = NULL;
  GString *info = g_string_new(NULL);
  switch (n->kind) {
    case LMWB_GRAPH_FEATURE:
      title = g_strdup_printf("Feature %" G_GINT64_FORMAT " of layer %d, at position %d (“%s”)", n->index, n->layer, n->pos, tok);
      break;
    case LMWB_GRAPH_ERROR:
      title = g_strdup_printf("Layer %d's error at position %d (“%s”)", n->layer, n->pos, tok);
      g_string_append(info, "What the transcoder misses of the MLP's output there (mlp_out − reconstruction), "
                            "held as a constant input.\n");
      break;
    case LMWB_GRAPH_TOKEN:
      title = g_strdup_printf("Embedding of “%s” at position %d", tok, n->pos);
      break;
    case LMWB_GRAPH_LOGIT: title = g_strdup_printf("Logit: %s", n->label); break;
    default: title = lmwb_graph_node_caption(g, i);
  }
  g_autofree char *id = lmwb_graph_node_id(g, i);
  g_string_append_printf(info, "id %s", id);
  if (n->has_activation) g_string_append_printf(info, " · activation %.4g", n->activation);
  if (n->has_influence) g_string_append_printf(info, " · influence %.3f", n->influence);
  if (n->kind == LMWB_GRAPH_LOGIT) g_string_append_printf(info, " · p = %.3f", n->token_prob);
  int in_e = 0, out_e = 0;
  for (int e = 0; e < g->n_edges; e++) in_e += g->edges[e].target == i, out_e += g->edges[e].source == i;
  g_string_append_printf(info, "\n%d edges in, %d out (in this graph)", in_e, out_e);
  gtk_label_set_text(v->node_title, title);
  gtk_label_set_text(v->node_info, info->str);
  g_string_free(info, TRUE);
  show_feature_parts(v, n->kind == LMWB_GRAPH_FEATURE);
}

/* Shows a new graph (owned by the view from now on). */
static void set_graph(LmwbCircuitsView *v, CircuitsGraph *g, gboolean keep_view) {
  lmwb_graph_canvas_set_graph(v->canvas, NULL, NULL, TRUE);
  circuits_graph_free(v->graph);
  v->graph = g;
  if (g) lmwb_graph_canvas_set_graph(v->canvas, g->graph, g->layout, keep_view);
  update_summary(v);
  show_node(v);
}

/* ---- tracing and re-pruning ---------------------------------------------------------------- */

static CircuitsGraphIn *graph_in(LmwbCircuitsView *v) {
  CircuitsGraphIn *in = g_new0(CircuitsGraphIn, 1);
  in->model = lmwb_model_ref(v->model);
  in->set = circuits_set_ref(v->set);
  in->set_dir = g_strdup(entry_text(v->set_entry));
  in->prompt = g_strdup(entry_text(v->prompt_entry));
  in->node_threshold = gtk_adjustment_get_value(v->node_adj);
  in->edge_threshold = gtk_adjustment_get_value(v->edge_adj);
  in->n_pins = (int)v->pins->len;
  in->pins = in->n_pins ? g_memdup2(v->pins->data, sizeof(LmwbAttributionPin) * v->pins->len) : NULL;
  in->trace = circuits_trace_ref(v->trace);
  in->draw_edges = v->draw_edges;
  return in;
}

static void trace_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbCircuitsView *v = LMWB_CIRCUITS_VIEW(owner);
  CircuitsGraphIn *in = data;
  if (v->trace_job == job) v->trace_job = NULL;
  if (in->model != v->model) return;
  if (error) {
    if (!lmwb_job_cancelled(error)) lmwb_graph_canvas_set_message(v->canvas, error->message);
    lmwb_view_show_job_error(LMWB_VIEW(v), error);
    return;
  }
  CircuitsTraceOut *o = result;
  v->serial++;
  if (v->set != o->trace->set) {
    circuits_set_unref(v->set);
    v->set = circuits_set_ref(o->trace->set);
  }
  circuits_trace_unref(v->trace);
  v->trace = circuits_trace_ref(o->trace);
  v->has_selected = FALSE;
  clear_contexts(v);
  set_graph(v, g_steal_pointer(&o->graph), FALSE);
}

static void trace(LmwbCircuitsView *v) {
  if (!v->model) {
    lmwb_view_show_error(LMWB_VIEW(v), "Circuits: no model is loaded");
    return;
  }
  lmwb_job_cancel(v->trace_job);
  lmwb_graph_canvas_set_message(v->canvas, "Tracing…");
  CircuitsGraphIn *in = graph_in(v);
  g_clear_pointer(&in->trace, circuits_trace_unref);
  start(v, &v->trace_job, "Tracing the attribution graph", circuits_run_trace, in, circuits_graph_in_free, trace_done,
        circuits_trace_out_free, NULL);
}

static void reprune(LmwbCircuitsView *v);

static void prune_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbCircuitsView *v = LMWB_CIRCUITS_VIEW(owner);
  CircuitsGraphIn *in = data;
  if (v->prune_job == job) v->prune_job = NULL;
  if (in->trace == v->trace) {
    if (error) lmwb_view_show_job_error(LMWB_VIEW(v), error);
    else set_graph(v, g_steal_pointer(&((CircuitsTraceOut *)result)->graph), TRUE);
  }
  if (v->prune_pending) {
    v->prune_pending = FALSE;
    reprune(v);
  }
}

static void reprune(LmwbCircuitsView *v) {
  if (!v->trace) return;
  if (v->prune_job) {
    v->prune_pending = TRUE; /* again with the newest thresholds when this one ends */
    return;
  }
  start(v, &v->prune_job, "Pruning the graph", circuits_run_reprune, graph_in(v), circuits_graph_in_free, prune_done,
        circuits_trace_out_free, NULL);
}

static gboolean debounce_fire(gpointer user) {
  LmwbCircuitsView *v = user;
  v->debounce_id = 0;
  reprune(v);
  lmwb_view_busy_changed(LMWB_VIEW(v));
  return G_SOURCE_REMOVE;
}

static void on_threshold_changed(GtkAdjustment *adj, gpointer user) {
  LmwbCircuitsView *v = user;
  if (!v->trace) return;
  if (v->debounce_id) g_source_remove(v->debounce_id);
  v->debounce_id = g_timeout_add(REPRUNE_DEBOUNCE_MS, debounce_fire, v);
  lmwb_view_busy_changed(LMWB_VIEW(v));
}

/* ---- a feature's panel ----------------------------------------------------------------------- */

/* One context as markup: each token's background by its activation relative to the peak. */
static char *context_markup(const LmwbFeatureContext *c) {
  GString *s = g_string_new(NULL);
  for (int t = 0; t < c->n; t++) {
    double rel = c->max_act > 0 ? CLAMP(c->acts[t] / c->max_act, 0, 1) : 0;
    g_autofree char *d = lmwb_token_display(c->texts[t]);
    g_autofree char *e = g_markup_escape_text(d, -1);
    if (rel > 0.02) {
      /* orange at the peak fading to white */
      int r = 255, gr = (int)(255 - rel * (255 - 140)), b = (int)(255 - rel * 255);
      g_string_append_printf(s, "<span background='#%02x%02x%02x' foreground='#1a1a1a'%s>%s</span>", r, gr, b,
                             t == c->peak ? " weight='bold'" : "", e);
    } else {
      g_string_append(s, e);
    }
  }
  return g_string_free(s, FALSE);
}

static void feature_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbCircuitsView *v = LMWB_CIRCUITS_VIEW(owner);
  if (v->feature_job == job) v->feature_job = NULL;
  if (lmwb_job_cancelled(error)) return;
  CircuitsFeatureIn *in = data;
  if (!v->has_selected || v->selected.kind != LMWB_GRAPH_FEATURE || v->selected.layer != in->layer ||
      v->selected.index != in->feature)
    return;
  if (error) {
    gtk_label_set_text(v->contexts_status, error->message);
    lmwb_view_show_job_error(LMWB_VIEW(v), error);
    return;
  }
  CircuitsFeatureOut *o = result;
  clear_contexts(v);
  GString *toks = g_string_new(NULL);
  for (int i = 0; i < o->n_tokens; i++) {
    g_autofree char *d = lmwb_token_display(o->token_texts[i]);
    g_string_append_printf(toks, "%s%+7.3f  %s", i ? "\n" : "", o->token_logits[i], d);
  }
  v->tokens_text = g_string_free(toks, FALSE);
  gtk_label_set_text(v->tokens_label, v->tokens_text);
  v->contexts = g_steal_pointer(&o->contexts);
  g_autofree char *base = g_path_get_basename(in->text_path);
  g_autofree char *status = g_strdup_printf("%d windows where it fires most, in the first %" G_GINT64_FORMAT
                                            " tokens of %s (active on %.1f%% of them)",
                                            v->contexts->n, v->contexts->tokens, base,
                                            100.0 * v->contexts->active / MAX(v->contexts->tokens, 1));
  gtk_label_set_text(v->contexts_status, status);
  for (int i = 0; i < v->contexts->n; i++) {
    const LmwbFeatureContext *c = &v->contexts->contexts[i];
    GtkWidget *box = gtk_box_new(GTK_ORIENTATION_VERTICAL, 2);
    gtk_widget_set_margin_start(box, 6), gtk_widget_set_margin_end(box, 6);
    gtk_widget_set_margin_top(box, 3), gtk_widget_set_margin_bottom(box, 3);
    g_autofree char *head = g_strdup_printf("%.3g at token %" G_GINT64_FORMAT, c->max_act, c->position);
    GtkWidget *hl = gtk_label_new(head);
    gtk_label_set_xalign(GTK_LABEL(hl), 0);
    gtk_widget_add_css_class(hl, "dim-label");
    gtk_widget_add_css_class(hl, "caption");
    g_autofree char *markup = context_markup(c);
    GtkWidget *tl = gtk_label_new(NULL);
    gtk_label_set_markup(GTK_LABEL(tl), markup);
    gtk_label_set_xalign(GTK_LABEL(tl), 0);
    gtk_label_set_wrap(GTK_LABEL(tl), TRUE);
    gtk_label_set_wrap_mode(GTK_LABEL(tl), PANGO_WRAP_WORD_CHAR);
    gtk_box_append(GTK_BOX(box), hl);
    gtk_box_append(GTK_BOX(box), tl);
    gtk_list_box_append(v->contexts_list, box);
  }
}

static void load_feature(LmwbCircuitsView *v) {
  lmwb_job_cancel(v->feature_job);
  clear_contexts(v);
  gtk_label_set_text(v->tokens_label, "…");
  const char *text = entry_text(v->text_entry);
  g_autofree char *base = *text ? g_path_get_basename(text) : g_strdup("(no text file)");
  g_autofree char *status = g_strdup_printf("Reading %s…", base);
  gtk_label_set_text(v->contexts_status, status);
  CircuitsFeatureIn *in = g_new0(CircuitsFeatureIn, 1);
  in->model = lmwb_model_ref(v->trace->model);
  in->set = circuits_set_ref(v->trace->set);
  in->layer = v->selected.layer;
  in->feature = (int)v->selected.index;
  in->text_path = g_strdup(text);
  start(v, &v->feature_job, "Finding the feature's top contexts", circuits_run_feature, in, circuits_feature_in_free,
        feature_done, circuits_feature_out_free, NULL);
}

static void select_node(LmwbCircuitsView *v, int i) {
  if (!v->graph || i < 0 || i >= v->graph->graph->n_nodes) {
    v->has_selected = FALSE;
    lmwb_job_cancel(v->feature_job);
    clear_contexts(v);
    show_node(v);
    return;
  }
  LmwbAttributionPin p = pin_of(&v->graph->graph->nodes[i]);
  gboolean same = v->has_selected && !memcmp(&p, &v->selected, sizeof p);
  v->has_selected = TRUE;
  v->selected = p;
  gtk_stack_set_visible_child_name(v->side_stack, "node");
  show_node(v);
  if (p.kind == LMWB_GRAPH_FEATURE && (!same || !v->contexts)) load_feature(v);
}

static void on_node_clicked(LmwbGraphCanvas *c, int node, gpointer user) { select_node(user, node); }

static void toggle_pin(LmwbCircuitsView *v, const LmwbAttributionPin *p) {
  int k = find_pin(v, p);
  if (k >= 0) g_array_remove_index(v->pins, (guint)k);
  else g_array_append_val(v->pins, *p);
  /* the flag on the screen now; the pin keeps the node through the next pruning */
  int i = graph_node(v, p);
  if (i >= 0) v->graph->graph->nodes[i].pinned = k < 0;
  gtk_widget_queue_draw(GTK_WIDGET(v->canvas));
  update_summary(v);
  update_pin_button(v);
}

/* ---- training ---------------------------------------------------------------------------------- */

static void reset_train_plots(LmwbCircuitsView *v) {
  LmwbPlot *lp = lmwb_plot_new(LMWB_PLOT_LINE, "Training: loss and FVU", "step", NULL);
  lmwb_plot_add_series(lp, "loss");
  lmwb_plot_add_series(lp, "fvu");
  lmwb_plot_set_log_y(lp, TRUE);
  lmwb_plot_view_set_plot(v->loss_plot, lp);
  LmwbPlot *zp = lmwb_plot_new(LMWB_PLOT_LINE, "Training: L0 (active features per token)", "step", "L0");
  lmwb_plot_add_series(zp, "l0");
  lmwb_plot_view_set_plot(v->l0_plot, zp);
  v->train_points = 0;
}

static void train_point(GtkWidget *owner, const char *series, double x, double y, gpointer data) {
  LmwbCircuitsView *v = LMWB_CIRCUITS_VIEW(owner);
  if (!strcmp(series, "loss")) lmwb_plot_append(lmwb_plot_view_get_plot(v->loss_plot), 0, x, y), v->train_points++;
  else if (!strcmp(series, "fvu")) lmwb_plot_append(lmwb_plot_view_get_plot(v->loss_plot), 1, x, y);
  else if (!strcmp(series, "l0")) lmwb_plot_append(lmwb_plot_view_get_plot(v->l0_plot), 0, x, y);
}

static void train_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbCircuitsView *v = LMWB_CIRCUITS_VIEW(owner);
  if (v->train_job == job) v->train_job = NULL;
  if (error) {
    gtk_label_set_text(v->train_status, lmwb_job_cancelled(error) ? "Training cancelled: nothing was saved." : error->message);
    lmwb_view_show_job_error(LMWB_VIEW(v), error);
    return;
  }
  CircuitsTrainOut *o = result;
  g_autofree char *s = g_strdup_printf("Saved to %s: FVU %.3f, L0 %.1f, %.1f%% dead, %" G_GINT64_FORMAT " steps in %.0f s "
                                       "(%.0f tokens/s)",
                                       o->saved_to, o->result.fvu, o->result.l0, 100 * o->result.dead_fraction,
                                       o->result.steps, o->result.seconds, o->result.tokens_per_s);
  gtk_label_set_text(v->train_status, s);
}

static void train(LmwbCircuitsView *v) {
  if (!v->model) return;
  if (v->train_job) {
    lmwb_view_show_error(LMWB_VIEW(v), "Circuits: a transcoder is already training (Cancel stops it)");
    return;
  }
  CircuitsTrainIn *in = g_new0(CircuitsTrainIn, 1);
  in->model = lmwb_model_ref(v->model);
  in->layer = (int)gtk_adjustment_get_value(v->layer_adj);
  lmwb_tc_train_options_init(&in->options, in->layer);
  in->options.d_sae = (int)gtk_adjustment_get_value(v->features_adj);
  in->options.k = (int)gtk_adjustment_get_value(v->k_adj);
  in->options.act = in->options.k > 0 ? LMWB_TC_TOPK : LMWB_TC_RELU;
  if (in->options.act == LMWB_TC_RELU) in->options.sparsity = 1e-3; /* a mild L1 (model units: see transcoder_train.h) */
  in->options.tokens = (int64_t)gtk_adjustment_get_value(v->tokens_adj);
  /* batches no larger than a tenth of the run, so that a short run still takes steps */
  in->options.batch = (int)MIN((int64_t)LMWB_TC_DEFAULT_BATCH, MAX(in->options.tokens / 10, 64));
  in->text_path = g_strdup(entry_text(v->text_entry));
  in->out_dir = g_strdup(entry_text(v->out_entry));
  reset_train_plots(v);
  gtk_label_set_text(v->train_status, "Training…");
  gtk_stack_set_visible_child_name(v->side_stack, "train");
  start(v, &v->train_job, "Training a transcoder", circuits_run_train, in, circuits_train_in_free, train_done,
        circuits_train_out_free, train_point);
}

/* key=value words: layer, features, k, tokens, out */
static void set_train(LmwbCircuitsView *v, const char *spec) {
  g_auto(GStrv) words = g_strsplit(spec, " ", -1);
  for (char **w = words; *w; w++) {
    char *eq = strchr(*w, '=');
    if (!eq) continue;
    *eq = 0;
    const char *val = eq + 1;
    if (!strcmp(*w, "layer")) gtk_adjustment_set_value(v->layer_adj, atof(val));
    else if (!strcmp(*w, "features")) gtk_adjustment_set_value(v->features_adj, atof(val));
    else if (!strcmp(*w, "k")) gtk_adjustment_set_value(v->k_adj, atof(val));
    else if (!strcmp(*w, "tokens")) gtk_adjustment_set_value(v->tokens_adj, atof(val));
    else if (!strcmp(*w, "out")) set_entry_text(v->out_entry, val);
    else {
      g_autofree char *msg = g_strdup_printf("circuits.set-train: unknown setting “%s” (layer, features, k, tokens, out)", *w);
      lmwb_view_show_error(LMWB_VIEW(v), msg);
    }
  }
}

/* ---- export ------------------------------------------------------------------------------------ */

static void export_to(LmwbCircuitsView *v, const char *path) {
  if (!v->graph) {
    lmwb_view_show_error(LMWB_VIEW(v), "Circuits: there is no graph to export yet: Trace a prompt first");
    return;
  }
  const LmwbGraph *g = v->graph->graph;
  GError *err = NULL;
  gboolean ok;
  if (g_str_has_suffix(path, ".json")) ok = lmwb_graph_write_json(g, path, &err);
  else if (g_str_has_suffix(path, ".dot")) ok = lmwb_graph_write_dot(g, NULL, path, &err);
  else if (g_str_has_suffix(path, ".svg")) ok = lmwb_graph_write_image(g, NULL, LMWB_GRAPH_SVG, path, &err);
  else if (g_str_has_suffix(path, ".png")) ok = lmwb_graph_write_image(g, NULL, LMWB_GRAPH_PNG, path, &err);
  else {
    ok = FALSE;
    lmwb_input_error(&err, "%s: export as .json, .dot, .svg or .png", path);
  }
  if (!ok) {
    g_autofree char *msg = g_strdup_printf("Export: %s", err->message);
    lmwb_view_show_error(LMWB_VIEW(v), msg);
    g_error_free(err);
    return;
  }
  g_free(v->exported);
  v->exported = g_strdup(path);
}

/* ---- file dialogs ------------------------------------------------------------------------------ */

/* A path for fn(v, path) from the file chooser. */
typedef void (*PathFunc)(LmwbCircuitsView *v, const char *path);
static void ask_path(LmwbCircuitsView *v, const char *title, GtkFileChooserAction action, const char *accept,
                     const char *suggest, PathFunc fn) {
  lmwb_ask_path(GTK_WIDGET(v), title, action, accept, suggest, (LmwbPathFunc)fn);
}

static void set_set_dir(LmwbCircuitsView *v, const char *path) { set_entry_text(v->set_entry, path); }
static void set_text_path(LmwbCircuitsView *v, const char *path) { set_entry_text(v->text_entry, path); }
static void set_out_dir(LmwbCircuitsView *v, const char *path) { set_entry_text(v->out_entry, path); }

/* ---- actions (circuits.*) ---------------------------------------------------------------------- */

static int node_by_id(LmwbCircuitsView *v, const char *id) {
  int i = v->graph ? lmwb_graph_find(v->graph->graph, id) : -1;
  if (i < 0) {
    g_autofree char *msg = g_strdup_printf("Circuits: the graph has no node “%s”", id);
    lmwb_view_show_error(LMWB_VIEW(v), msg);
  }
  return i;
}

#define V(u) LMWB_CIRCUITS_VIEW(u)
static void act_set_transcoders(GSimpleAction *a, GVariant *p, gpointer u) { set_set_dir(V(u), g_variant_get_string(p, NULL)); }
static void act_set_prompt(GSimpleAction *a, GVariant *p, gpointer u) { set_entry_text(V(u)->prompt_entry, g_variant_get_string(p, NULL)); }
static void act_set_text(GSimpleAction *a, GVariant *p, gpointer u) { set_text_path(V(u), g_variant_get_string(p, NULL)); }
static void act_trace(GSimpleAction *a, GVariant *p, gpointer u) {
  lmwb_view_present(u);
  trace(V(u));
}
static void act_node_threshold(GSimpleAction *a, GVariant *p, gpointer u) { gtk_adjustment_set_value(V(u)->node_adj, g_variant_get_double(p)); }
static void act_edge_threshold(GSimpleAction *a, GVariant *p, gpointer u) { gtk_adjustment_set_value(V(u)->edge_adj, g_variant_get_double(p)); }
static void act_select(GSimpleAction *a, GVariant *p, gpointer u) {
  int i = node_by_id(V(u), g_variant_get_string(p, NULL));
  if (i >= 0) select_node(V(u), i);
}
/* A click at canvas point "x,y", as the mouse gives it (tests reach nodes by their dumped points). */
static void act_click(GSimpleAction *a, GVariant *p, gpointer u) {
  double x, y;
  if (sscanf(g_variant_get_string(p, NULL), "%lf,%lf", &x, &y) != 2) {
    lmwb_view_show_error(u, "circuits.click expects X,Y (canvas pixels)");
    return;
  }
  select_node(V(u), lmwb_graph_canvas_node_at(V(u)->canvas, x, y));
}
static void act_pin(GSimpleAction *a, GVariant *p, gpointer u) {
  int i = node_by_id(V(u), g_variant_get_string(p, NULL));
  if (i < 0) return;
  LmwbAttributionPin pin = pin_of(&V(u)->graph->graph->nodes[i]);
  toggle_pin(V(u), &pin);
}
static void act_pin_selected(GSimpleAction *a, GVariant *p, gpointer u) {
  if (V(u)->has_selected) toggle_pin(V(u), &V(u)->selected);
}
static void act_export(GSimpleAction *a, GVariant *p, gpointer u) { export_to(V(u), g_variant_get_string(p, NULL)); }
static void act_export_dialog(GSimpleAction *a, GVariant *p, gpointer u) {
  if (!V(u)->graph) {
    lmwb_view_show_error(u, "Circuits: there is no graph to export yet: Trace a prompt first");
    return;
  }
  g_autofree char *name = g_strdup_printf("circuit.%s", g_variant_get_string(p, NULL));
  ask_path(V(u), "Export the circuit graph", GTK_FILE_CHOOSER_ACTION_SAVE, "_Save", name, export_to);
}
static void act_set_train(GSimpleAction *a, GVariant *p, gpointer u) { set_train(V(u), g_variant_get_string(p, NULL)); }
static void act_train(GSimpleAction *a, GVariant *p, gpointer u) { train(V(u)); }
static void act_fit(GSimpleAction *a, GVariant *p, gpointer u) { lmwb_graph_canvas_fit(V(u)->canvas); }
static void act_draw_edges(GSimpleAction *a, GVariant *p, gpointer u) {
  V(u)->draw_edges = MAX(0, g_variant_get_int32(p));
  reprune(V(u));
}
static void act_choose_set(GSimpleAction *a, GVariant *p, gpointer u) {
  ask_path(V(u), "Choose a transcoder set folder", GTK_FILE_CHOOSER_ACTION_SELECT_FOLDER, "_Choose", NULL, set_set_dir);
}
static void act_choose_text(GSimpleAction *a, GVariant *p, gpointer u) {
  ask_path(V(u), "Choose a text file", GTK_FILE_CHOOSER_ACTION_OPEN, "_Choose", NULL, set_text_path);
}
static void act_choose_out(GSimpleAction *a, GVariant *p, gpointer u) {
  ask_path(V(u), "Choose where to save trained transcoders", GTK_FILE_CHOOSER_ACTION_SELECT_FOLDER, "_Choose", NULL,
           set_out_dir);
}
#undef V

static const GActionEntry actions[] = {
  {"set-transcoders", act_set_transcoders, "s"}, {"set-prompt", act_set_prompt, "s"}, {"set-text", act_set_text, "s"},
  {"trace", act_trace}, {"node-threshold", act_node_threshold, "d"}, {"edge-threshold", act_edge_threshold, "d"},
  {"select", act_select, "s"}, {"click", act_click, "s"}, {"pin", act_pin, "s"}, {"pin-selected", act_pin_selected}, {"export", act_export, "s"},
  {"export-dialog", act_export_dialog, "s"}, {"set-train", act_set_train, "s"}, {"train", act_train},
  {"fit", act_fit}, {"draw-edges", act_draw_edges, "i"}, {"choose-set", act_choose_set}, {"choose-text", act_choose_text}, {"choose-out", act_choose_out},
};

static const LmwbShortcut shortcuts[] = {
  {"circuits.trace", "<Control>t", "Trace the prompt's attribution graph"},
  {"circuits.pin-selected", "<Control>p", "Pin or unpin the selected node"},
};

/* ---- LmwbView ---------------------------------------------------------------------------------- */

static void forget_graph(LmwbCircuitsView *v) {
  v->serial++;
  lmwb_job_cancel(v->trace_job);
  lmwb_job_cancel(v->prune_job);
  lmwb_job_cancel(v->feature_job);
  v->prune_pending = FALSE;
  v->has_selected = FALSE;
  clear_contexts(v);
  set_graph(v, NULL, FALSE);
  g_clear_pointer(&v->trace, circuits_trace_unref);
  g_clear_pointer(&v->set, circuits_set_unref);
  g_array_set_size(v->pins, 0);
}

static void set_model(LmwbView *view, LmwbModel *m) {
  LmwbCircuitsView *v = LMWB_CIRCUITS_VIEW(view);
  forget_graph(v);
  if (m) lmwb_model_ref(m);
  g_clear_pointer(&v->model, lmwb_model_unref);
  v->model = m;
  g_autofree char *dir = circuits_default_set_dir(m);
  set_entry_text(v->set_entry, dir);
  if (m) {
    gtk_adjustment_set_upper(v->layer_adj, m->cfg.n_layer - 1);
    gtk_adjustment_set_value(v->features_adj, LMWB_TC_DEFAULT_EXPANSION * m->cfg.d_model);
    g_autofree char *base = m->dir ? g_path_get_basename(m->dir) : g_strdup("model");
    g_autofree char *out = g_build_filename(g_get_user_data_dir(), "lmwb", "transcoders", base, NULL);
    set_entry_text(v->out_entry, out);
  }
  lmwb_graph_canvas_set_message(v->canvas, dir ? "Trace the prompt (Ctrl+T) to see which transcoder features carry the "
                                                 "model's next token."
                                               : "This model has no transcoders/ folder: choose a transcoder set, or "
                                                 "train one in the Train tab.");
  update_summary(v);
}

static void set_analysis(LmwbView *view, LmwbAnalysis *a) {
  LmwbCircuitsView *v = LMWB_CIRCUITS_VIEW(view);
  if (!a) return;
  /* the window's prompt, unless one was typed here since */
  const char *cur = entry_text(v->prompt_entry);
  if (!*cur || !g_strcmp0(cur, v->synced_prompt)) set_entry_text(v->prompt_entry, a->prompt);
  g_free(v->synced_prompt);
  v->synced_prompt = g_strdup(a->prompt);
}

static LmwbPlotView *current_plot(LmwbView *view) { return LMWB_CIRCUITS_VIEW(view)->loss_plot; }

static gboolean busy(LmwbView *view) { return LMWB_CIRCUITS_VIEW(view)->debounce_id != 0; }

static char *describe(LmwbView *view) {
  LmwbCircuitsView *v = LMWB_CIRCUITS_VIEW(view);
  GString *s = g_string_new(NULL);
  g_autofree char *sd = g_strescape(entry_text(v->set_entry), NULL);
  g_autofree char *pr = g_strescape(entry_text(v->prompt_entry), NULL);
  g_autofree char *tx = g_strescape(entry_text(v->text_entry), NULL);
  g_string_append_printf(s, "circuits set=%s loaded=%d\ncircuits prompt=%s\ncircuits text=%s\n", sd, v->set != NULL, pr, tx);
  g_string_append_printf(s, "circuits thresholds node=%g edge=%g\n", gtk_adjustment_get_value(v->node_adj),
                         gtk_adjustment_get_value(v->edge_adj));
  if (v->graph) {
    const LmwbGraph *g = v->graph->graph;
    int features = 0, pinned = 0;
    for (int i = 0; i < g->n_nodes; i++) features += g->nodes[i].kind == LMWB_GRAPH_FEATURE, pinned += g->nodes[i].pinned;
    g_string_append_printf(s, "circuits graph nodes=%d edges=%d features=%d active=%d pinned=%d replacement=%.4f "
                              "completeness=%.4f layout=%.0fx%.0f\n",
                           g->n_nodes, g->n_edges, features, v->trace->attribution->n_features, pinned,
                           v->graph->replacement, v->graph->completeness, v->graph->layout->width,
                           v->graph->layout->height);
    for (int i = 0; i < g->n_nodes && i < DUMP_NODES; i++) {
      g_autofree char *id = lmwb_graph_node_id(g, i);
      g_autofree char *text = lmwb_graph_canvas_node_text(g, i);
      g_autofree char *et = g_strescape(text, NULL);
      double x = 0, y = 0;
      lmwb_graph_canvas_node_point(v->canvas, i, &x, &y);
      g_string_append_printf(s, "circuits node %s %s pinned=%d at=%.0f,%.0f text=%s\n", id,
                             lmwb_graph_kind_name(g->nodes[i].kind), g->nodes[i].pinned, x, y, et);
    }
  } else {
    g_string_append(s, "circuits graph none\n");
  }
  int sel = v->has_selected ? graph_node(v, &v->selected) : -1;
  g_autofree char *sid = sel >= 0 ? lmwb_graph_node_id(v->graph->graph, sel) : g_strdup("");
  g_string_append_printf(s, "circuits selected=%s\n", sid);
  if (v->tokens_text) {
    g_autofree char *t = g_strescape(v->tokens_text, NULL);
    g_string_append_printf(s, "circuits tokens=%s\n", t);
  }
  if (v->contexts) {
    g_string_append_printf(s, "circuits contexts=%d tokens_read=%" G_GINT64_FORMAT "\n", v->contexts->n, v->contexts->tokens);
    for (int i = 0; i < v->contexts->n; i++) {
      const LmwbFeatureContext *c = &v->contexts->contexts[i];
      g_autofree char *joined = g_strjoinv("", c->texts);
      g_autofree char *e = g_strescape(joined, NULL);
      g_string_append_printf(s, "circuits context %d act=%.4f position=%" G_GINT64_FORMAT " text=%s\n", i, c->max_act,
                             c->position, e);
    }
  }
  g_string_append_printf(s, "circuits train_points=%d\n", v->train_points);
  g_autofree char *ts = g_strescape(gtk_label_get_text(v->train_status), NULL);
  g_string_append_printf(s, "circuits train_status=%s\n", ts);
  g_string_append_printf(s, "circuits exported=%s\n", v->exported ? v->exported : "");
  return g_string_free(s, FALSE);
}

static void view_iface_init(LmwbViewInterface *iface) {
  static const LmwbViewInfo info = {.id = "circuits", .title = "Circuits", .icon_name = "network-workgroup-symbolic",
                                    .actions = actions, .n_actions = G_N_ELEMENTS(actions),
                                    .shortcuts = shortcuts, .n_shortcuts = G_N_ELEMENTS(shortcuts)};
  iface->info = &info;
  iface->set_model = set_model;
  iface->set_analysis = set_analysis;
  iface->current_plot = current_plot;
  iface->describe = describe;
  iface->busy = busy;
}

/* ---- object ------------------------------------------------------------------------------------ */

static void on_prompt_activate(GtkEntry *e, gpointer user) { trace(user); }

static void dispose(GObject *o) {
  LmwbCircuitsView *v = LMWB_CIRCUITS_VIEW(o);
  if (v->debounce_id) g_source_remove(v->debounce_id);
  v->debounce_id = 0;
  lmwb_job_cancel(v->trace_job);
  lmwb_job_cancel(v->prune_job);
  lmwb_job_cancel(v->feature_job);
  lmwb_job_cancel(v->train_job);
  v->trace_job = v->prune_job = v->feature_job = v->train_job = NULL;
  if (v->canvas) lmwb_graph_canvas_set_graph(v->canvas, NULL, NULL, TRUE);
  g_clear_pointer(&v->graph, circuits_graph_free);
  g_clear_pointer(&v->trace, circuits_trace_unref);
  g_clear_pointer(&v->set, circuits_set_unref);
  g_clear_pointer(&v->model, lmwb_model_unref);
  g_clear_pointer(&v->contexts, lmwb_feature_contexts_free);
  g_clear_pointer(&v->tokens_text, g_free);
  g_clear_pointer(&v->synced_prompt, g_free);
  g_clear_pointer(&v->exported, g_free);
  g_clear_pointer(&v->pins, g_array_unref);
  gtk_widget_dispose_template(GTK_WIDGET(o), LMWB_TYPE_CIRCUITS_VIEW);
  G_OBJECT_CLASS(lmwb_circuits_view_parent_class)->dispose(o);
}

static void lmwb_circuits_view_class_init(LmwbCircuitsViewClass *k) {
  G_OBJECT_CLASS(k)->dispose = dispose;
  g_type_ensure(LMWB_TYPE_PLOT_VIEW);
  g_type_ensure(LMWB_TYPE_GRAPH_CANVAS);
  GtkWidgetClass *wk = GTK_WIDGET_CLASS(k);
  gtk_widget_class_set_template_from_resource(wk, "/org/lmwb/Workbench/lmwb-circuits-view.ui");
#define BIND(x) gtk_widget_class_bind_template_child(wk, LmwbCircuitsView, x)
  BIND(set_entry), BIND(prompt_entry), BIND(text_entry), BIND(out_entry), BIND(node_adj), BIND(edge_adj);
  BIND(layer_adj), BIND(features_adj), BIND(k_adj), BIND(tokens_adj), BIND(summary_label), BIND(node_title);
  BIND(node_info), BIND(tokens_heading), BIND(tokens_label), BIND(contexts_heading), BIND(contexts_status);
  BIND(train_status), BIND(contexts_list), BIND(pin_button), BIND(side_stack), BIND(canvas), BIND(loss_plot);
  BIND(l0_plot);
#undef BIND
}

static void lmwb_circuits_view_init(LmwbCircuitsView *v) {
  gtk_widget_init_template(GTK_WIDGET(v));
  v->pins = g_array_new(FALSE, FALSE, sizeof(LmwbAttributionPin));
  v->draw_edges = DRAW_EDGES;
  g_autofree char *text = circuits_default_text();
  set_entry_text(v->text_entry, text);
  g_signal_connect(v->node_adj, "value-changed", G_CALLBACK(on_threshold_changed), v);
  g_signal_connect(v->edge_adj, "value-changed", G_CALLBACK(on_threshold_changed), v);
  g_signal_connect(v->canvas, "node-clicked", G_CALLBACK(on_node_clicked), v);
  g_signal_connect(v->prompt_entry, "activate", G_CALLBACK(on_prompt_activate), v);
  reset_train_plots(v);
  update_summary(v);
}
