#include "ui/desktop/lmwb-window.h"
#include "app/core/errors.h"
#include "ui/desktop/lmwb-job.h"
#include "ui/desktop/lmwb-lens-view.h"
#include "ui/desktop/lmwb-model-view.h"
#include "ui/desktop/lmwb-neuron-view.h"
#include "ui/desktop/lmwb-recent.h"

#define DEFAULT_PROMPT "The little dog ran to the park and the cat"

struct _LmwbWindow {
  GtkApplicationWindow parent;
  GtkInfoBar *banner;
  GtkLabel *banner_label, *status_label;
  GtkEntry *prompt_entry;
  GtkStack *stack;
  LmwbModelView *model_view;
  LmwbLensView *lens_view;
  LmwbNeuronView *neuron_view;
  GtkProgressBar *progress;
  GtkWidget *cancel_button;
  GMenu *recent_menu;

  LmwbSharedModel *model;
  LmwbAnalysis *analysis;
  GPtrArray *jobs;     /* running LmwbJob*, newest last */
  LmwbJob *analysis_job;
  char *banner_text;
};

G_DEFINE_FINAL_TYPE(LmwbWindow, lmwb_window, GTK_TYPE_APPLICATION_WINDOW)

void lmwb_window_show_error(LmwbWindow *w, const char *message) {
  g_free(w->banner_text);
  w->banner_text = g_strdup(message);
  gtk_label_set_text(w->banner_label, message);
  gtk_info_bar_set_revealed(w->banner, TRUE);
}

static void hide_banner(LmwbWindow *w) {
  gtk_info_bar_set_revealed(w->banner, FALSE);
  g_clear_pointer(&w->banner_text, g_free);
}

static void on_banner_response(GtkInfoBar *bar, int response, gpointer user) { hide_banner(user); }

/* ---- jobs and the status bar ---------------------------------------------------------------- */

static void update_status(LmwbWindow *w) {
  if (!w->progress) return; /* disposed: a late job finished */
  gboolean busy = w->jobs->len > 0;
  gtk_widget_set_visible(GTK_WIDGET(w->progress), busy);
  gtk_widget_set_visible(w->cancel_button, busy);
  if (!busy) {
    LmwbModel *m = lmwb_shared_model_get(w->model);
    g_autofree char *s = m ? g_strdup_printf("Ready · %s", m->dir ? m->dir : "model") : g_strdup("No model loaded");
    gtk_label_set_text(w->status_label, s);
    return;
  }
  LmwbJob *job = g_ptr_array_index(w->jobs, w->jobs->len - 1);
  gtk_label_set_text(w->status_label, lmwb_job_title(job));
}

static void job_progress(gpointer host, LmwbJob *job, double fraction, const char *stage) {
  LmwbWindow *w = host;
  if (w->jobs->len == 0 || g_ptr_array_index(w->jobs, w->jobs->len - 1) != job) return;
  gtk_progress_bar_set_fraction(w->progress, CLAMP(fraction, 0.0, 1.0));
  if (stage) gtk_progress_bar_set_text(w->progress, stage);
}

static void job_finished(gpointer host, LmwbJob *job) {
  LmwbWindow *w = host;
  if (g_ptr_array_remove(w->jobs, job)) lmwb_job_unref(job);
  if (w->jobs) update_status(w);
  g_object_unref(w); /* taken in start_job_for: the window outlives its jobs */
}

/* Every job of the window and its views goes through here: the status bar shows the newest one,
 * Cancel stops them all. */
static LmwbJob *start_job_for(LmwbWindow *w, GObject *owner, const LmwbJobSpec *spec) {
  LmwbJobSpec s = *spec;
  s.progress = job_progress;
  s.finished = job_finished;
  s.host = g_object_ref(w);
  LmwbJob *job = lmwb_job_start(owner, &s);
  g_ptr_array_add(w->jobs, job); /* the caller's reference, dropped in job_finished */
  gtk_progress_bar_set_fraction(w->progress, 0);
  gtk_progress_bar_set_text(w->progress, spec->title);
  update_status(w);
  return job;
}

static LmwbJob *neuron_view_starter(gpointer host, const LmwbJobSpec *spec) {
  LmwbWindow *w = host;
  return start_job_for(w, G_OBJECT(w->neuron_view), spec);
}

/* ---- analysis of the prompt ------------------------------------------------------------------ */

static void analysis_done(GObject *owner, gpointer result, const GError *error, gpointer data) {
  LmwbWindow *w = LMWB_WINDOW(owner);
  w->analysis_job = NULL;
  if (error) {
    if (!g_error_matches(error, LMWB_ERROR, LMWB_ERROR_CANCELLED)) lmwb_window_show_error(w, error->message);
    return;
  }
  LmwbAnalysis *a = result;
  if (a->truncated) {
    g_autofree char *msg = g_strdup_printf("The prompt was cut to its first %d tokens.", a->n);
    lmwb_window_show_error(w, msg);
  }
  g_clear_pointer(&w->analysis, lmwb_analysis_unref);
  w->analysis = lmwb_analysis_ref(a);
  lmwb_model_view_set_analysis(w->model_view, a);
  lmwb_lens_view_set_analysis(w->lens_view, a);
  lmwb_neuron_view_set_analysis(w->neuron_view, a);
}

static void run_analysis(LmwbWindow *w) {
  if (!w->model) {
    lmwb_window_show_error(w, "No model is loaded: open a model folder first (Ctrl+O).");
    return;
  }
  if (w->analysis_job) lmwb_job_cancel(w->analysis_job);
  const char *prompt = gtk_editable_get_text(GTK_EDITABLE(w->prompt_entry));
  LmwbJobSpec spec = {.title = "Running the prompt", .run = lmwb_analysis_run,
                      .data = lmwb_analysis_input_new(w->model, prompt), .data_free = lmwb_analysis_input_free,
                      .result_free = lmwb_analysis_unref, .done = analysis_done};
  w->analysis_job = start_job_for(w, G_OBJECT(w), &spec);
}

/* ---- loading a model -------------------------------------------------------------------------- */

typedef struct {
  char *dir;
} LoadIn;

static void load_in_free(gpointer p) {
  LoadIn *in = p;
  g_free(in->dir);
  g_free(in);
}

static gpointer load_run(gpointer data, LmwbReporter *rep, GError **error) {
  LoadIn *in = data;
  lmwb_report_progress(rep, 0.1, "reading weights");
  LmwbModel *m = lmwb_model_load(in->dir, error);
  if (!m) return NULL;
  if (!m->tokenizer) {
    lmwb_input_error(error, "%s: no tokenizer (tokenizer.json or vocab.json + merges.txt): the workbench needs one",
                     in->dir);
    lmwb_model_unref(m);
    return NULL;
  }
  return lmwb_shared_model_new(m);
}

static void set_title_for_model(LmwbWindow *w) {
  LmwbModel *m = lmwb_shared_model_get(w->model);
  if (!m) {
    gtk_window_set_title(GTK_WINDOW(w), "LM Workbench");
    return;
  }
  g_autofree char *base = m->dir ? g_path_get_basename(m->dir) : g_strdup("model");
  g_autofree char *t = g_strdup_printf("%s (%s, %d layers) — LM Workbench", base, m->cfg.model_type, m->cfg.n_layer);
  gtk_window_set_title(GTK_WINDOW(w), t);
}

static void load_done(GObject *owner, gpointer result, const GError *error, gpointer data) {
  LmwbWindow *w = LMWB_WINDOW(owner);
  LoadIn *in = data;
  if (error) {
    if (g_error_matches(error, LMWB_ERROR, LMWB_ERROR_CANCELLED)) return;
    g_autofree char *msg = g_strdup_printf("Could not open %s: %s%s", in->dir, error->message,
                                           w->model ? " — the previous model stays loaded." : "");
    lmwb_window_show_error(w, msg);
    return;
  }
  hide_banner(w);
  g_clear_pointer(&w->model, lmwb_shared_model_unref);
  w->model = lmwb_shared_model_ref(result);
  g_clear_pointer(&w->analysis, lmwb_analysis_unref);
  LmwbModel *m = lmwb_shared_model_get(w->model);
  lmwb_model_view_set_model(w->model_view, m);
  lmwb_model_view_set_analysis(w->model_view, NULL);
  lmwb_lens_view_set_analysis(w->lens_view, NULL);
  lmwb_neuron_view_set_analysis(w->neuron_view, NULL);
  lmwb_neuron_view_set_model(w->neuron_view, w->model);
  set_title_for_model(w);
  GError *err = NULL;
  if (m->dir && !lmwb_recent_add(m->dir, &err)) {
    g_warning("recent models: %s", err->message);
    g_error_free(err);
  }
  lmwb_window_refresh_recent(w);
  run_analysis(w);
}

void lmwb_window_open_model(LmwbWindow *w, const char *dir) {
  LoadIn *in = g_new0(LoadIn, 1);
  in->dir = g_strdup(dir);
  LmwbJobSpec spec = {.title = "Loading the model", .run = load_run, .data = in, .data_free = load_in_free,
                      .result_free = (GDestroyNotify)lmwb_shared_model_unref, .done = load_done};
  start_job_for(w, G_OBJECT(w), &spec);
}

void lmwb_window_refresh_recent(LmwbWindow *w) {
  g_menu_remove_all(w->recent_menu);
  g_auto(GStrv) list = lmwb_recent_list();
  for (char **p = list; *p; p++) {
    g_autofree char *base = g_path_get_basename(*p);
    g_autofree char *label = g_strdup_printf("%s — %s", base, *p);
    GMenuItem *it = g_menu_item_new(label, NULL);
    g_menu_item_set_action_and_target_value(it, "win.open-model", g_variant_new_string(*p));
    g_menu_append_item(w->recent_menu, it);
    g_object_unref(it);
  }
  if (!list[0]) {
    GMenuItem *it = g_menu_item_new("No recent models", "win.none");
    g_menu_append_item(w->recent_menu, it);
    g_object_unref(it);
  }
}

/* ---- actions ---------------------------------------------------------------------------------- */

static void open_response(GtkNativeDialog *dlg, int response, gpointer user) {
  LmwbWindow *w = user;
  if (response == GTK_RESPONSE_ACCEPT) {
    g_autoptr(GFile) f = gtk_file_chooser_get_file(GTK_FILE_CHOOSER(dlg));
    g_autofree char *path = f ? g_file_get_path(f) : NULL;
    if (path) lmwb_window_open_model(w, path);
  }
  g_object_unref(dlg);
}

static void act_open(GSimpleAction *a, GVariant *p, gpointer user) {
  LmwbWindow *w = user;
  GtkFileChooserNative *dlg = gtk_file_chooser_native_new("Open a Hugging Face model folder", GTK_WINDOW(w),
                                                          GTK_FILE_CHOOSER_ACTION_SELECT_FOLDER, "_Open", "_Cancel");
  gtk_native_dialog_set_modal(GTK_NATIVE_DIALOG(dlg), TRUE);
  g_signal_connect(dlg, "response", G_CALLBACK(open_response), w);
  gtk_native_dialog_show(GTK_NATIVE_DIALOG(dlg));
}

static void act_open_model(GSimpleAction *a, GVariant *p, gpointer user) {
  lmwb_window_open_model(user, g_variant_get_string(p, NULL));
}

static void act_run(GSimpleAction *a, GVariant *p, gpointer user) { run_analysis(user); }

static void act_cancel(GSimpleAction *a, GVariant *p, gpointer user) {
  LmwbWindow *w = user;
  for (guint i = 0; i < w->jobs->len; i++) lmwb_job_cancel(g_ptr_array_index(w->jobs, i));
  if (w->jobs->len) gtk_label_set_text(w->status_label, "Cancelling…");
}

static void act_view(GSimpleAction *a, GVariant *p, gpointer user) {
  LmwbWindow *w = user;
  const char *name = g_variant_get_string(p, NULL);
  if (gtk_stack_get_child_by_name(w->stack, name)) gtk_stack_set_visible_child_name(w->stack, name);
}

static void on_stack_changed(GObject *o, GParamSpec *ps, gpointer user) {
  LmwbWindow *w = user;
  GAction *a = g_action_map_lookup_action(G_ACTION_MAP(w), "view");
  const char *name = gtk_stack_get_visible_child_name(w->stack);
  if (a && name) g_simple_action_set_state(G_SIMPLE_ACTION(a), g_variant_new_string(name));
}

static void act_set_prompt(GSimpleAction *a, GVariant *p, gpointer user) {
  LmwbWindow *w = user;
  gtk_editable_set_text(GTK_EDITABLE(w->prompt_entry), g_variant_get_string(p, NULL));
  run_analysis(w);
}

static void act_show_error(GSimpleAction *a, GVariant *p, gpointer user) {
  lmwb_window_show_error(user, g_variant_get_string(p, NULL));
}

static void act_neuron_search(GSimpleAction *a, GVariant *p, gpointer user) {
  LmwbWindow *w = user;
  gtk_stack_set_visible_child_name(w->stack, "neurons");
  lmwb_neuron_view_search(w->neuron_view, g_variant_get_string(p, NULL));
}

static void act_select_neuron(GSimpleAction *a, GVariant *p, gpointer user) {
  LmwbWindow *w = user;
  int layer, neuron;
  if (sscanf(g_variant_get_string(p, NULL), "%d:%d", &layer, &neuron) != 2) {
    lmwb_window_show_error(w, "select-neuron expects LAYER:NEURON, e.g. 3:127");
    return;
  }
  gtk_stack_set_visible_child_name(w->stack, "neurons");
  lmwb_neuron_view_select(w->neuron_view, layer, neuron);
}

static void act_clamp(GSimpleAction *a, GVariant *p, gpointer user) {
  lmwb_neuron_view_set_clamp(LMWB_WINDOW(user)->neuron_view, g_variant_get_double(p));
}
static void act_unclamp(GSimpleAction *a, GVariant *p, gpointer user) {
  lmwb_neuron_view_clear_clamp(LMWB_WINDOW(user)->neuron_view);
}
static void act_sweep(GSimpleAction *a, GVariant *p, gpointer user) {
  lmwb_neuron_view_sweep(LMWB_WINDOW(user)->neuron_view);
}
static void act_sweep_steps(GSimpleAction *a, GVariant *p, gpointer user) {
  lmwb_neuron_view_set_sweep_steps(LMWB_WINDOW(user)->neuron_view, g_variant_get_int32(p));
  g_simple_action_set_state(a, p);
}
static void act_find(GSimpleAction *a, GVariant *p, gpointer user) {
  LmwbWindow *w = user;
  gtk_stack_set_visible_child_name(w->stack, "neurons");
  lmwb_neuron_view_focus_search(w->neuron_view);
}

static LmwbPlotView *current_plot(LmwbWindow *w) {
  const char *name = gtk_stack_get_visible_child_name(w->stack);
  if (!g_strcmp0(name, "lens")) return lmwb_lens_view_plot(w->lens_view);
  if (!g_strcmp0(name, "neurons")) return lmwb_neuron_view_plot(w->neuron_view, 2);
  return lmwb_model_view_plot(w->model_view);
}

static void act_export_plot(GSimpleAction *a, GVariant *p, gpointer user) {
  lmwb_plot_view_export_dialog(current_plot(user));
}

static void act_export_plot_to(GSimpleAction *a, GVariant *p, gpointer user) {
  GError *err = NULL;
  if (!lmwb_plot_view_export(current_plot(user), g_variant_get_string(p, NULL), &err)) {
    lmwb_window_show_error(user, err->message);
    g_error_free(err);
  }
}

static const GActionEntry win_actions[] = {
  {"open", act_open}, {"open-model", act_open_model, "s"}, {"run", act_run}, {"cancel", act_cancel},
  {"view", act_view, "s", "'model'"}, {"set-prompt", act_set_prompt, "s"}, {"show-error", act_show_error, "s"},
  {"neuron-search", act_neuron_search, "s"}, {"select-neuron", act_select_neuron, "s"}, {"clamp", act_clamp, "d"},
  {"unclamp", act_unclamp}, {"sweep", act_sweep}, {"sweep-steps", NULL, "i", "41", act_sweep_steps}, {"find", act_find}, {"export-plot", act_export_plot},
  {"export-plot-to", act_export_plot_to, "s"},
};

/* ---- object ----------------------------------------------------------------------------------- */

static void on_prompt_activate(GtkEntry *e, gpointer user) { run_analysis(user); }

static void dispose(GObject *o) {
  LmwbWindow *w = LMWB_WINDOW(o);
  if (w->jobs)
    for (guint i = 0; i < w->jobs->len; i++) lmwb_job_cancel(g_ptr_array_index(w->jobs, i));
  g_clear_pointer(&w->analysis, lmwb_analysis_unref);
  g_clear_pointer(&w->model, lmwb_shared_model_unref);
  g_clear_pointer(&w->banner_text, g_free);
  gtk_widget_dispose_template(GTK_WIDGET(o), LMWB_TYPE_WINDOW);
  G_OBJECT_CLASS(lmwb_window_parent_class)->dispose(o);
}

static void finalize(GObject *o) {
  LmwbWindow *w = LMWB_WINDOW(o);
  g_clear_pointer(&w->jobs, g_ptr_array_unref);
  G_OBJECT_CLASS(lmwb_window_parent_class)->finalize(o);
}

static void lmwb_window_class_init(LmwbWindowClass *k) {
  G_OBJECT_CLASS(k)->dispose = dispose;
  G_OBJECT_CLASS(k)->finalize = finalize;
  g_type_ensure(LMWB_TYPE_MODEL_VIEW);
  g_type_ensure(LMWB_TYPE_LENS_VIEW);
  g_type_ensure(LMWB_TYPE_NEURON_VIEW);
  GtkWidgetClass *wk = GTK_WIDGET_CLASS(k);
  gtk_widget_class_set_template_from_resource(wk, "/org/lmwb/Workbench/lmwb-window.ui");
#define BIND(x) gtk_widget_class_bind_template_child(wk, LmwbWindow, x)
  BIND(banner), BIND(banner_label), BIND(status_label), BIND(prompt_entry), BIND(stack), BIND(model_view);
  BIND(lens_view), BIND(neuron_view), BIND(progress), BIND(cancel_button), BIND(recent_menu);
#undef BIND
}

static void lmwb_window_init(LmwbWindow *w) {
  gtk_widget_init_template(GTK_WIDGET(w));
  w->jobs = g_ptr_array_new();
  g_action_map_add_action_entries(G_ACTION_MAP(w), win_actions, G_N_ELEMENTS(win_actions), w);
  gtk_editable_set_text(GTK_EDITABLE(w->prompt_entry), DEFAULT_PROMPT);
  g_signal_connect(w->prompt_entry, "activate", G_CALLBACK(on_prompt_activate), w);
  g_signal_connect(w->banner, "response", G_CALLBACK(on_banner_response), w);
  g_signal_connect(w->stack, "notify::visible-child-name", G_CALLBACK(on_stack_changed), w);
  lmwb_neuron_view_set_job_starter(w->neuron_view, neuron_view_starter, w);
  update_status(w);
}

LmwbWindow *lmwb_window_new(GtkApplication *app) {
  LmwbWindow *w = g_object_new(LMWB_TYPE_WINDOW, "application", app, NULL);
  return w;
}

char *lmwb_window_describe(LmwbWindow *w) {
  GString *s = g_string_new(NULL);
  LmwbModel *m = lmwb_shared_model_get(w->model);
  g_string_append_printf(s, "title=%s\n", gtk_window_get_title(GTK_WINDOW(w)));
  g_string_append_printf(s, "model=%s\n", m && m->dir ? m->dir : "");
  g_string_append_printf(s, "view=%s\n", gtk_stack_get_visible_child_name(w->stack));
  g_string_append_printf(s, "jobs=%u\n", w->jobs->len);
  g_autofree char *banner = g_strescape(w->banner_text ? w->banner_text : "", NULL);
  g_string_append_printf(s, "banner=%s\n", banner);
  g_autofree char *mv = lmwb_model_view_describe(w->model_view);
  g_autofree char *lv = lmwb_lens_view_describe(w->lens_view);
  g_autofree char *nv = lmwb_neuron_view_describe(w->neuron_view);
  g_string_append(s, mv);
  g_string_append(s, lv);
  g_string_append(s, nv);
  return g_string_free(s, FALSE);
}
