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
