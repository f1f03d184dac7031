#include "ui/desktop/lmwb-view.h"
#include "ui/desktop/lmwb-job.h"

G_DEFINE_INTERFACE(LmwbView, lmwb_view, GTK_TYPE_WIDGET)

static void lmwb_view_default_init(LmwbViewInterface *iface) {
  /* The view's busy() answer changed: the window re-checks whether it is ready. */
  g_signal_new("busy-changed", G_TYPE_FROM_INTERFACE(iface), G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL, G_TYPE_NONE, 0);
}

const LmwbViewInfo *lmwb_view_get_info(LmwbView *v) { return LMWB_VIEW_GET_IFACE(v)->info; }

void lmwb_view_set_model(LmwbView *v, LmwbModel *model) {
  LmwbViewInterface *i = LMWB_VIEW_GET_IFACE(v);
  if (i->set_model) i->set_model(v, model);
}

void lmwb_view_set_analysis(LmwbView *v, LmwbAnalysis *analysis) {
  LmwbViewInterface *i = LMWB_VIEW_GET_IFACE(v);
  if (i->set_analysis) i->set_analysis(v, analysis);
}

LmwbPlotView *lmwb_view_current_plot(LmwbView *v) {
  LmwbViewInterface *i = LMWB_VIEW_GET_IFACE(v);
  return i->current_plot ? i->current_plot(v) : NULL;
}

char *lmwb_view_describe(LmwbView *v) {
  LmwbViewInterface *i = LMWB_VIEW_GET_IFACE(v);
  return i->describe ? i->describe(v) : g_strdup("");
}

gboolean lmwb_view_busy(LmwbView *v) {
  LmwbViewInterface *i = LMWB_VIEW_GET_IFACE(v);
  return i->busy ? i->busy(v) : FALSE;
}

void lmwb_view_busy_changed(LmwbView *v) { g_signal_emit_by_name(v, "busy-changed"); }

void lmwb_view_present(LmwbView *v) {
  gtk_widget_activate_action(GTK_WIDGET(v), "win.view", "s", lmwb_view_get_info(v)->id);
}

void lmwb_view_show_error(LmwbView *v, const char *message) {
  gtk_widget_activate_action(GTK_WIDGET(v), "win.show-error", "s", message);
}

void lmwb_view_show_job_error(LmwbView *v, const GError *error) {
  if (error && !lmwb_job_cancelled(error)) lmwb_view_show_error(v, error->message);
}

/* ---- file choosers ------------------------------------------------------------------------------ */

typedef struct {
  GtkWidget *owner;
  GtkEntry *entry; /* the path goes here, or to fn */
  LmwbPathFunc fn;
} PathAsk;

static void path_response(GtkNativeDialog *dlg, int response, gpointer data) {
  PathAsk *a = data;
  if (response == GTK_RESPONSE_ACCEPT) {
    g_autoptr(GFile) f = gtk_file_chooser_get_file(GTK_FILE_CHOOSER(dlg));
    g_autofree char *path = f ? g_file_get_path(f) : NULL;
    if (path && a->entry) gtk_editable_set_text(GTK_EDITABLE(a->entry), path);
    else if (path) a->fn(a->owner, path);
  }
  g_object_unref(a->owner);
  if (a->entry) g_object_unref(a->entry);
  g_free(a);
  g_object_unref(dlg);
}

static void ask(PathAsk *a, const char *title, GtkFileChooserAction action, const char *accept, const char *suggest) {
  GtkRoot *root = gtk_widget_get_root(a->owner);
  GtkFileChooserNative *dlg =
    gtk_file_chooser_native_new(title, GTK_IS_WINDOW(root) ? GTK_WINDOW(root) : NULL, action, accept, "_Cancel");
  gtk_native_dialog_set_modal(GTK_NATIVE_DIALOG(dlg), TRUE);
  if (suggest) gtk_file_chooser_set_current_name(GTK_FILE_CHOOSER(dlg), suggest);
  g_object_ref(a->owner);
  if (a->entry) g_object_ref(a->entry);
  g_signal_connect(dlg, "response", G_CALLBACK(path_response), a);
  gtk_native_dialog_show(GTK_NATIVE_DIALOG(dlg));
}

void lmwb_ask_path(GtkWidget *owner, const char *title, GtkFileChooserAction action, const char *accept,
                   const char *suggest, LmwbPathFunc fn) {
  PathAsk *a = g_new0(PathAsk, 1);
  *a = (PathAsk){owner, NULL, fn};
  ask(a, title, action, accept, suggest);
}

void lmwb_ask_path_into(GtkWidget *owner, GtkEntry *entry, const char *title, GtkFileChooserAction action,
                        const char *accept) {
  PathAsk *a = g_new0(PathAsk, 1);
  *a = (PathAsk){owner, entry, NULL};
  ask(a, title, action, accept, NULL);
}
