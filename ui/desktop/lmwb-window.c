#include "ui/desktop/lmwb-window.h"
#include "app/core/errors.h"
#include "ui/desktop/lmwb-job.h"
#include "ui/desktop/lmwb-recent.h"
#include "ui/desktop/lmwb-view.h"
#include "ui/desktop/lmwb-views.h"

#define DEFAULT_PROMPT "The little dog ran to the park and the cat"

struct _LmwbWindow {
  GtkApplicationWindow parent;
  GtkInfoBar *banner;
  GtkLabel *banner_label, *status_label;
  GtkEntry *prompt_entry;
  GtkBox *switcher;
  GtkStack *stack;
  GtkProgressBar *progress;
  GtkWidget *cancel_button;
  GMenu *recent_menu, *views_menu;

  GPtrArray *views;    /* LmwbView*, registry order */
  LmwbModel *model;
  LmwbAnalysis *analysis;
  GPtrArray *jobs;     /* LmwbJob* running under the window, newest last */
  LmwbJob *prompt_job; /* the run of the prompt, until its done */
  char *banner_text;
  gboolean banner_from_prompt; /* the banner is about the last prompt run: a good run hides it */
  GdkFrameClock *clock;
  gulong after_paint_id;
};

static void job_host_init(LmwbJobHostInterface *iface);

G_DEFINE_FINAL_TYPE_WITH_CODE(LmwbWindow, lmwb_window, GTK_TYPE_APPLICATION_WINDOW,
                              G_IMPLEMENT_INTERFACE(LMWB_TYPE_JOB_HOST, job_host_init))

enum { SIGNAL_READY, N_SIGNALS };
static guint signals[N_SIGNALS];

#define VIEW(w, i) LMWB_VIEW(g_ptr_array_index((w)->views, (i)))

void lmwb_window_show_error(LmwbWindow *w, const char *message) {
  g_free(w->banner_text);
  w->banner_text = g_strdup(message);
  w->banner_from_prompt = FALSE;
  gtk_label_set_text(w->banner_label, message);
  gtk_info_bar_set_revealed(w->banner, TRUE);
}

static void hide_banner(LmwbWindow *w) {
  gtk_info_bar_set_revealed(w->banner, FALSE);
  g_clear_pointer(&w->banner_text, g_free);
}

static void on_banner_response(GtkInfoBar *bar, int response, gpointer user) { hide_banner(user); }

/* ---- ready ------------------------------------------------------------------------------------ */

/* Something that decides readiness changed: make sure a frame comes, so that a waiting script
 * hears "ready" after it. */
static void recheck_ready(LmwbWindow *w) {
  if (g_signal_has_handler_pending(w, signals[SIGNAL_READY], 0, TRUE)) gtk_widget_queue_draw(GTK_WIDGET(w));
}

/* What on the screen is still moving or not drawn: a page crossfading, a banner sliding, a plot
 * that has not drawn its data. NULL: nothing. */
static const char *screen_unsettled(GtkWidget *wd) {
  if (!gtk_widget_get_mapped(wd)) return NULL;
  if (GTK_IS_STACK(wd) && gtk_stack_get_transition_running(GTK_STACK(wd))) return "a page transition is running";
  if (GTK_IS_REVEALER(wd) && gtk_revealer_get_child_revealed(GTK_REVEALER(wd)) != gtk_revealer_get_reveal_child(GTK_REVEALER(wd)))
    return "a panel is sliding in or out";
  if (LMWB_IS_PLOT_VIEW(wd) && !lmwb_plot_view_is_drawn(LMWB_PLOT_VIEW(wd))) return "a plot has not drawn its data yet";
  for (GtkWidget *c = gtk_widget_get_first_child(wd); c; c = gtk_widget_get_next_sibling(c)) {
    const char *r = screen_unsettled(c);
    if (r) return r;
  }
  return NULL;
}

char *lmwb_window_not_ready(LmwbWindow *w) {
  if (!gtk_widget_get_mapped(GTK_WIDGET(w))) return g_strdup("the window is not shown");
  if (w->jobs->len) {
    LmwbJob *job = g_ptr_array_index(w->jobs, w->jobs->len - 1);
    return g_strdup_printf("%u job(s) running, the newest “%s”", w->jobs->len, lmwb_job_title(job));
  }
  for (guint i = 0; i < w->views->len; i++)
    if (lmwb_view_busy(VIEW(w, i)))
      return g_strdup_printf("the %s view has work queued", lmwb_view_get_info(VIEW(w, i))->id);
  const char *r = screen_unsettled(GTK_WIDGET(w));
  return r ? g_strdup(r) : NULL;
}

gboolean lmwb_window_is_ready(LmwbWindow *w) {
  char *reason = lmwb_window_not_ready(w);
  g_free(reason);
  return reason == NULL;
}

static void on_after_paint(GdkFrameClock *clock, gpointer user) {
  LmwbWindow *w = user;
  if (g_signal_has_handler_pending(w, signals[SIGNAL_READY], 0, TRUE) && lmwb_window_is_ready(w))
    g_signal_emit(w, signals[SIGNAL_READY], 0);
}

static void on_view_busy_changed(LmwbView *v, gpointer user) { recheck_ready(user); }
static void on_transition_changed(GObject *stack, GParamSpec *ps, gpointer user) { recheck_ready(user); }

/* ---- jobs: the window is their host ----------------------------------------------------------- */

static void update_status(LmwbWindow *w) {
  if (!w->progress) return; /* disposed: a late job finished */
  gboolean busy = w->jobs->len > 0;
  gtk_widget_set_visible(GTK_WIDGET(w->progress), busy);
  gtk_widget_set_visible(w->cancel_button, busy);
  if (!busy) {
    LmwbModel *m = w->model;
    g_autofree char *s = m ? g_strdup_printf("Ready · %s", m->dir ? m->dir : "model") : g_strdup("No model loaded");
    gtk_label_set_text(w->status_label, s);
    return;
  }
  LmwbJob *job = g_ptr_array_index(w->jobs, w->jobs->len - 1);
  gtk_label_set_text(w->status_label, lmwb_job_title(job));
}

static void host_started(LmwbJobHost *host, LmwbJob *job) {
  LmwbWindow *w = LMWB_WINDOW(host);
  g_ptr_array_add(w->jobs, lmwb_job_ref(job));
  if (w->progress) {
    gtk_progress_bar_set_fraction(w->progress, 0);
    gtk_progress_bar_set_text(w->progress, lmwb_job_title(job));
  }
  update_status(w);
}

static void host_progress(LmwbJobHost *host, LmwbJob *job, double fraction, const char *stage) {
  LmwbWindow *w = LMWB_WINDOW(host);
  if (!w->progress || w->jobs->len == 0 || g_ptr_array_index(w->jobs, w->jobs->len - 1) != job) return;
  gtk_progress_bar_set_fraction(w->progress, CLAMP(fraction, 0.0, 1.0));
  if (stage) gtk_progress_bar_set_text(w->progress, stage);
}

static void host_finished(LmwbJobHost *host, LmwbJob *job) {
  LmwbWindow *w = LMWB_WINDOW(host);
  g_ptr_array_remove(w->jobs, job);
  update_status(w);
  recheck_ready(w);
}

static void job_host_init(LmwbJobHostInterface *iface) {
  iface->started = host_started;
  iface->progress = host_progress;
  iface->finished = host_finished;
}

/* ---- the prompt: analysed by the window, shown by every view ---------------------------------- */

static void analysis_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbWindow *w = LMWB_WINDOW(owner);
  if (w->prompt_job == job) w->prompt_job = NULL;
  if (error) {
    if (!lmwb_job_cancelled(error)) {
      lmwb_window_show_error(w, error->message);
      w->banner_from_prompt = TRUE;
    }
    return;
  }
  LmwbAnalysis *a = result;
  if (a->truncated) {
    g_autofree char *msg = g_strdup_printf("The prompt was cut to its first %d tokens.", a->n);
    lmwb_window_show_error(w, msg);
    w->banner_from_prompt = TRUE;
  } else if (w->banner_from_prompt) {
    hide_banner(w);
  }
  g_clear_pointer(&w->analysis, lmwb_analysis_unref);
  w->analysis = lmwb_analysis_ref(a);
  for (guint i = 0; i < w->views->len; i++) lmwb_view_set_analysis(VIEW(w, i), a);
}

static void run_analysis(LmwbWindow *w) {
  if (!w->model) {
    lmwb_window_show_error(w, "No model is loaded: open a model folder first (Ctrl+O).");
    return;
  }
  lmwb_job_cancel(w->prompt_job);
  const char *prompt = gtk_editable_get_text(GTK_EDITABLE(w->prompt_entry));
  LmwbJob *job = lmwb_job_new("Running the prompt", lmwb_analysis_run, lmwb_analysis_input_new(w->model, prompt),
                              lmwb_analysis_input_free);
  lmwb_job_on_done(job, analysis_done, lmwb_analysis_unref);
  w->prompt_job = lmwb_job_start(job, GTK_WIDGET(w));
}

/* ---- loading a model -------------------------------------------------------------------------- */

static gpointer load_run(gpointer data, LmwbReporter *rep, GError **error) {
  const char *dir = data;
  lmwb_report_progress(rep, 0.1, "reading weights");
  LmwbModel *m = lmwb_model_load(dir, error);
  if (m && !m->tokenizer) {
    lmwb_input_error(error, "%s: no tokenizer (tokenizer.json or vocab.json + merges.txt): the workbench needs one", dir);
    g_clear_pointer(&m, lmwb_model_unref);
  }
  return m;
}

static void set_title_for_model(LmwbWindow *w) {
  LmwbModel *m = w->model;
  if (!m) {
    gtk_window_set_title(GTK_WINDOW(w), "LM Workbench");
    return;
  }
  g_autofree char *base = m->dir ? g_path_get_basename(m->dir) : g_strdup("model");
  g_autofree char *t = g_strdup_printf("%s (%s, %d layers) — LM Workbench", base, m->cfg.model_type, m->cfg.n_layer);
  gtk_window_set_title(GTK_WINDOW(w), t);
}

static void load_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbWindow *w = LMWB_WINDOW(owner);
  const char *dir = data;
  if (error) {
    if (lmwb_job_cancelled(error)) return;
    g_autofree char *msg = g_strdup_printf("Could not open %s: %s%s", dir, error->message,
                                           w->model ? " — the previous model stays loaded." : "");
    lmwb_window_show_error(w, msg);
    return;
  }
  hide_banner(w);
  g_clear_pointer(&w->model, lmwb_model_unref);
  w->model = lmwb_model_ref(result);
  g_clear_pointer(&w->analysis, lmwb_analysis_unref);
  for (guint i = 0; i < w->views->len; i++) {
    lmwb_view_set_model(VIEW(w, i), w->model);
    lmwb_view_set_analysis(VIEW(w, i), NULL);
  }
  set_title_for_model(w);
  GError *err = NULL;
  if (w->model->dir && !lmwb_recent_add(w->model->dir, &err)) {
    g_warning("recent models: %s", err->message);
    g_error_free(err);
  }
  lmwb_window_refresh_recent(w);
  run_analysis(w);
}

void lmwb_window_open_model(LmwbWindow *w, const char *dir) {
  LmwbJob *job = lmwb_job_new("Loading the model", load_run, g_strdup(dir), g_free);
  lmwb_job_on_done(job, load_done, (GDestroyNotify)lmwb_model_unref);
  lmwb_job_start(job, GTK_WIDGET(w));
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

static LmwbPlotView *current_plot(LmwbWindow *w) {
  GtkWidget *page = gtk_stack_get_visible_child(w->stack);
  LmwbPlotView *plot = page ? lmwb_view_current_plot(LMWB_VIEW(page)) : NULL;
  if (!plot) lmwb_window_show_error(w, "This view has no plot to export.");
  return plot;
}

static void act_export_plot(GSimpleAction *a, GVariant *p, gpointer user) {
  LmwbPlotView *plot = current_plot(user);
  if (plot) lmwb_plot_view_export_dialog(plot);
}

static void act_export_plot_to(GSimpleAction *a, GVariant *p, gpointer user) {
  LmwbPlotView *plot = current_plot(user);
  GError *err = NULL;
  if (plot && !lmwb_plot_view_export(plot, g_variant_get_string(p, NULL), &err)) {
    lmwb_window_show_error(user, err->message);
    g_error_free(err);
  }
}

static const GActionEntry win_actions[] = {
  {"open", act_open}, {"open-model", act_open_model, "s"}, {"run", act_run}, {"cancel", act_cancel},
  {"set-prompt", act_set_prompt, "s"}, {"show-error", act_show_error, "s"}, {"export-plot", act_export_plot},
  {"export-plot-to", act_export_plot_to, "s"},
};

/* ---- keyboard shortcuts and their help -------------------------------------------------------- */

static const LmwbShortcut prompt_shortcuts[] = {
  {"win.open", "<Control>o", "Open a model folder"},
  {"win.run", "<Control>Return", "Run the prompt"},
  {"win.cancel", "Escape", "Cancel running jobs"},
  {"win.export-plot", "<Control>e", "Export the current plot"},
};

static const LmwbShortcut general_shortcuts[] = {
  {"app.dark", "<Control><Shift>d", "Dark theme"},
  {"win.show-help-overlay", "<Control>question", "Keyboard shortcuts"},
  {"app.quit", "<Control>q", "Quit"},
};

/* Alt+1 … Alt+9 show the views in registry order. */
static char *view_accel(guint i) { return i < 9 ? g_strdup_printf("<Alt>%u", i + 1) : NULL; }

static void help_group(GString *x, const char *title, const LmwbShortcut *keys, gsize n) {
  if (!n) return;
  g_autofree char *head = g_markup_printf_escaped(
      "<child><object class='GtkShortcutsGroup'><property name='title'>%s</property>", title);
  g_string_append(x, head);
  for (gsize i = 0; i < n; i++) {
    if (!keys[i].accel) continue;
    g_autofree char *item = g_markup_printf_escaped(
        "<child><object class='GtkShortcutsShortcut'><property name='title'>%s</property>"
        "<property name='accelerator'>%s</property></object></child>", keys[i].title, keys[i].accel);
    g_string_append(x, item);
  }
  g_string_append(x, "</object></child>");
}

static void set_accels(GtkApplication *app, const LmwbShortcut *keys, gsize n) {
  for (gsize i = 0; i < n; i++) {
    const char *accels[] = {keys[i].accel, NULL};
    if (keys[i].accel) gtk_application_set_accels_for_action(app, keys[i].action, accels);
  }
}

/* The shortcuts window (Ctrl+?): the window's own shortcuts, one line per view, then each view's
 * own actions. With app, also set the accelerators themselves from the same lists. */
static void install_shortcuts(LmwbWindow *w, GtkApplication *app) {
  guint n = w->views->len;
  LmwbShortcut *switch_keys = g_new0(LmwbShortcut, n);
  for (guint i = 0; i < n; i++) {
    const LmwbViewInfo *info = lmwb_view_get_info(VIEW(w, i));
    switch_keys[i] = (LmwbShortcut){g_strdup_printf("win.view::%s", info->id), view_accel(i), info->title};
  }
  GString *x = g_string_new("<interface><object class='GtkShortcutsWindow' id='help_overlay'>"
                            "<property name='modal'>1</property><child><object class='GtkShortcutsSection'>"
                            "<property name='section-name'>shortcuts</property>");
  help_group(x, "Model and prompt", prompt_shortcuts, G_N_ELEMENTS(prompt_shortcuts));
  help_group(x, "Views", switch_keys, n);
  for (guint i = 0; i < n; i++) {
    const LmwbViewInfo *info = lmwb_view_get_info(VIEW(w, i));
    help_group(x, info->title, info->shortcuts, info->n_shortcuts);
    if (app) set_accels(app, info->shortcuts, info->n_shortcuts);
  }
  help_group(x, "General", general_shortcuts, G_N_ELEMENTS(general_shortcuts));
  g_string_append(x, "</object></child></object></interface>");
  if (app) {
    set_accels(app, prompt_shortcuts, G_N_ELEMENTS(prompt_shortcuts));
    set_accels(app, switch_keys, n);
    set_accels(app, general_shortcuts, G_N_ELEMENTS(general_shortcuts));
  }
  GtkBuilder *b = gtk_builder_new_from_string(x->str, (gssize)x->len);
  gtk_application_window_set_help_overlay(GTK_APPLICATION_WINDOW(w),
                                          GTK_SHORTCUTS_WINDOW(gtk_builder_get_object(b, "help_overlay")));
  g_object_unref(b);
  g_string_free(x, TRUE);
  for (guint i = 0; i < n; i++) g_free((char *)switch_keys[i].action), g_free((char *)switch_keys[i].accel);
  g_free(switch_keys);
}

/* ---- the views, from the registry ------------------------------------------------------------- */

/* One switcher button (icon and title), one Views menu entry and one stack page per view. */
static void add_view(LmwbWindow *w, LmwbView *view, guint index) {
  const LmwbViewInfo *info = lmwb_view_get_info(view);
  g_ptr_array_add(w->views, g_object_ref(view));
  gtk_stack_add_titled(w->stack, GTK_WIDGET(view), info->id, info->title);

  GtkWidget *button = gtk_toggle_button_new();
  GtkWidget *box = gtk_box_new(GTK_ORIENTATION_HORIZONTAL, 6);
  gtk_box_append(GTK_BOX(box), gtk_image_new_from_icon_name(info->icon_name));
  gtk_box_append(GTK_BOX(box), gtk_label_new(info->title));
  gtk_widget_set_halign(box, GTK_ALIGN_CENTER);
  gtk_button_set_child(GTK_BUTTON(button), box);
  gtk_actionable_set_action_name(GTK_ACTIONABLE(button), "win.view");
  gtk_actionable_set_action_target(GTK_ACTIONABLE(button), "s", info->id);
  g_autofree char *accel = view_accel(index);
  g_autofree char *key = accel ? g_strdup_printf(" (Alt+%u)", index + 1) : g_strdup("");
  g_autofree char *tip = g_strdup_printf("%s%s", info->title, key);
  gtk_widget_set_tooltip_text(button, tip);
  gtk_box_append(w->switcher, button);

  GMenuItem *item = g_menu_item_new(info->title, NULL);
  g_menu_item_set_action_and_target_value(item, "win.view", g_variant_new_string(info->id));
  g_menu_append_item(w->views_menu, item);
  g_object_unref(item);

  if (info->n_actions) {
    GSimpleActionGroup *group = g_simple_action_group_new();
    g_action_map_add_action_entries(G_ACTION_MAP(group), info->actions, (int)info->n_actions, view);
    gtk_widget_insert_action_group(GTK_WIDGET(w), info->id, G_ACTION_GROUP(group));
    g_object_unref(group);
  }
  g_signal_connect_object(view, "busy-changed", G_CALLBACK(on_view_busy_changed), w, 0);
}

static void add_views(LmwbWindow *w) {
  for (guint i = 0; i < lmwb_views_count(); i++) {
    GtkWidget *view = g_object_new(lmwb_views_type(i), NULL);
    add_view(w, LMWB_VIEW(view), i);
  }
  const char *first = w->views->len ? lmwb_view_get_info(VIEW(w, 0))->id : "";
  GSimpleAction *a = g_simple_action_new_stateful("view", G_VARIANT_TYPE_STRING, g_variant_new_string(first));
  g_signal_connect(a, "activate", G_CALLBACK(act_view), w);
  g_action_map_add_action(G_ACTION_MAP(w), G_ACTION(a));
  g_object_unref(a);
}

/* ---- object ----------------------------------------------------------------------------------- */

static void on_prompt_activate(GtkEntry *e, gpointer user) { run_analysis(user); }

static void realize(GtkWidget *wd) {
  GTK_WIDGET_CLASS(lmwb_window_parent_class)->realize(wd);
  LmwbWindow *w = LMWB_WINDOW(wd);
  w->clock = g_object_ref(gtk_widget_get_frame_clock(wd));
  w->after_paint_id = g_signal_connect(w->clock, "after-paint", G_CALLBACK(on_after_paint), w);
}

static void unrealize(GtkWidget *wd) {
  LmwbWindow *w = LMWB_WINDOW(wd);
  if (w->clock) g_clear_signal_handler(&w->after_paint_id, w->clock);
  g_clear_object(&w->clock);
  GTK_WIDGET_CLASS(lmwb_window_parent_class)->unrealize(wd);
}

static void dispose(GObject *o) {
  LmwbWindow *w = LMWB_WINDOW(o);
  if (w->jobs)
    for (guint i = 0; i < w->jobs->len; i++) lmwb_job_cancel(g_ptr_array_index(w->jobs, i));
  if (w->views) g_ptr_array_set_size(w->views, 0);
  g_clear_pointer(&w->analysis, lmwb_analysis_unref);
  g_clear_pointer(&w->model, lmwb_model_unref);
  g_clear_pointer(&w->banner_text, g_free);
  gtk_widget_dispose_template(GTK_WIDGET(o), LMWB_TYPE_WINDOW);
  G_OBJECT_CLASS(lmwb_window_parent_class)->dispose(o);
}

static void finalize(GObject *o) {
  LmwbWindow *w = LMWB_WINDOW(o);
  g_clear_pointer(&w->jobs, g_ptr_array_unref);
  g_clear_pointer(&w->views, g_ptr_array_unref);
  G_OBJECT_CLASS(lmwb_window_parent_class)->finalize(o);
}

static void lmwb_window_class_init(LmwbWindowClass *k) {
  G_OBJECT_CLASS(k)->dispose = dispose;
  G_OBJECT_CLASS(k)->finalize = finalize;
  GtkWidgetClass *wk = GTK_WIDGET_CLASS(k);
  wk->realize = realize;
  wk->unrealize = unrealize;
  /* Emitted after a frame is painted while the window is ready (lmwb_window_is_ready). */
  signals[SIGNAL_READY] = g_signal_new("ready", G_TYPE_FROM_CLASS(k), G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                       G_TYPE_NONE, 0);
  gtk_widget_class_set_template_from_resource(wk, "/org/lmwb/Workbench/lmwb-window.ui");
#define BIND(x) gtk_widget_class_bind_template_child(wk, LmwbWindow, x)
  BIND(banner), BIND(banner_label), BIND(status_label), BIND(prompt_entry), BIND(switcher), BIND(stack);
  BIND(progress), BIND(cancel_button), BIND(recent_menu), BIND(views_menu);
#undef BIND
}

static void lmwb_window_init(LmwbWindow *w) {
  gtk_widget_init_template(GTK_WIDGET(w));
  w->jobs = g_ptr_array_new_with_free_func((GDestroyNotify)lmwb_job_unref);
  w->views = g_ptr_array_new_with_free_func(g_object_unref);
  g_action_map_add_action_entries(G_ACTION_MAP(w), win_actions, G_N_ELEMENTS(win_actions), w);
  add_views(w);
  gtk_editable_set_text(GTK_EDITABLE(w->prompt_entry), DEFAULT_PROMPT);
  g_signal_connect(w->prompt_entry, "activate", G_CALLBACK(on_prompt_activate), w);
  g_signal_connect(w->banner, "response", G_CALLBACK(on_banner_response), w);
  g_signal_connect(w->stack, "notify::visible-child-name", G_CALLBACK(on_stack_changed), w);
  g_signal_connect(w->stack, "notify::transition-running", G_CALLBACK(on_transition_changed), w);
  update_status(w);
}

LmwbWindow *lmwb_window_new(GtkApplication *app) {
  LmwbWindow *w = g_object_new(LMWB_TYPE_WINDOW, "application", app, NULL);
  install_shortcuts(w, app);
  return w;
}

char *lmwb_window_describe(LmwbWindow *w) {
  GString *s = g_string_new(NULL);
  LmwbModel *m = w->model;
  g_string_append_printf(s, "title=%s\n", gtk_window_get_title(GTK_WINDOW(w)));
  g_string_append_printf(s, "model=%s\n", m && m->dir ? m->dir : "");
  g_string_append_printf(s, "view=%s\n", gtk_stack_get_visible_child_name(w->stack));
  /* Each view with the keys that show it, as the application has them. */
  GtkApplication *app = gtk_window_get_application(GTK_WINDOW(w));
  g_string_append(s, "views=");
  for (guint i = 0; i < w->views->len; i++) {
    const char *id = lmwb_view_get_info(VIEW(w, i))->id;
    g_autofree char *action = g_strdup_printf("win.view::%s", id);
    g_auto(GStrv) accels = app ? gtk_application_get_accels_for_action(app, action) : NULL;
    g_string_append_printf(s, "%s%s:%s", i ? " " : "", id, accels && accels[0] ? accels[0] : "-");
  }
  g_string_append_printf(s, "\njobs=%u\n", w->jobs->len);
  g_autofree char *banner = g_strescape(w->banner_text ? w->banner_text : "", NULL);
  g_string_append_printf(s, "banner=%s\n", banner);
  for (guint i = 0; i < w->views->len; i++) {
    g_autofree char *d = lmwb_view_describe(VIEW(w, i));
    g_string_append(s, d);
  }
  return g_string_free(s, FALSE);
}
