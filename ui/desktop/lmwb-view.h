/* A workbench view: one page of the window (Model, Logit lens, Neurons, …). The window knows its
 * views only through this interface and the registry (lmwb-views.h): from them it builds the
 * stack pages, the view switcher, the Views menu, Alt+1…Alt+N (registry order), the keyboard
 * shortcuts window, and it forwards to every view the loaded model, the prompt's analysis, plot
 * export and the script's `dump`.
 *
 * A view is a widget (usually with a .ui template) that implements LmwbView and fills in:
 *   info           what it is: id, title, icon, its actions and their shortcuts (static data);
 *   set_model      a model was loaded: forget what came from the previous one; take a reference
 *                  (lmwb_model_ref) to keep it. set_analysis(NULL) follows at once;
 *   set_analysis   the prompt's run finished (NULL: cleared, as by a new model);
 *   current_plot   the plot Export (Ctrl+E) saves while the view is shown, or NULL;
 *   describe       state lines for the script's `dump` (tests read them);
 *   busy           optional: TRUE while work is queued that no job shows yet (a debounce
 *                  timer); call lmwb_view_busy_changed when that changes.
 * Its actions run with the view as user_data and are inserted in the window under the view's id:
 * "neurons" with an action "clamp" is `neurons.clamp` for buttons in its .ui, the keyboard and
 * the test script alike. Long work goes through jobs (lmwb-job.h): lmwb_job_start(job,
 * GTK_WIDGET(view)) runs it under the window, with the status bar, progress, Cancel and the
 * window's ready signal covering it. */
#pragma once
#include "ui/desktop/lmwb-analysis.h"
#include "ui/desktop/lmwb-plot-view.h"

/* A keyboard shortcut, with the line the shortcuts window (Ctrl+?) shows for it. */
typedef struct {
  const char *action; /* detailed action name: "neurons.find" */
  const char *accel;  /* "<Control>f" */
  const char *title;  /* "Search neurons by token" */
} LmwbShortcut;

typedef struct {
  const char *id;        /* stack page name, win.view target and action prefix: "neurons" */
  const char *title;     /* switcher, menu and shortcuts window: "Neurons" */
  const char *icon_name; /* beside the title in the switcher: "system-search-symbolic" */
  const GActionEntry *actions;
  gsize n_actions;
  const LmwbShortcut *shortcuts; /* of its own actions (Alt+N is the window's) */
  gsize n_shortcuts;
} LmwbViewInfo;

#define LMWB_TYPE_VIEW (lmwb_view_get_type())
G_DECLARE_INTERFACE(LmwbView, lmwb_view, LMWB, VIEW, GtkWidget)

struct _LmwbViewInterface {
  GTypeInterface parent;
  const LmwbViewInfo *info;
  void (*set_model)(LmwbView *self, LmwbModel *model);
  void (*set_analysis)(LmwbView *self, LmwbAnalysis *analysis);
  LmwbPlotView *(*current_plot)(LmwbView *self);
  char *(*describe)(LmwbView *self);
  gboolean (*busy)(LmwbView *self);
};

/* For the window. */
const LmwbViewInfo *lmwb_view_get_info(LmwbView *v);
void lmwb_view_set_model(LmwbView *v, LmwbModel *model);
void lmwb_view_set_analysis(LmwbView *v, LmwbAnalysis *analysis);
LmwbPlotView *lmwb_view_current_plot(LmwbView *v);
char *lmwb_view_describe(LmwbView *v);
gboolean lmwb_view_busy(LmwbView *v);

/* For views. */
void lmwb_view_busy_changed(LmwbView *v); /* emits "busy-changed" */
void lmwb_view_present(LmwbView *v);      /* show this view's page (win.view) */
void lmwb_view_show_error(LmwbView *v, const char *message); /* the window's banner */
/* The banner for a job's error; a cancelled job shows nothing. */
void lmwb_view_show_job_error(LmwbView *v, const GError *error);

/* The platform's file chooser, modal over owner's window. When the user accepts, fn(owner, path)
 * (lmwb_ask_path) or the entry gets the path (lmwb_ask_path_into); owner stays alive until then.
 * suggest names the file of a SAVE dialog (may be NULL). */
typedef void (*LmwbPathFunc)(gpointer owner, const char *path);
void lmwb_ask_path(GtkWidget *owner, const char *title, GtkFileChooserAction action, const char *accept,
                   const char *suggest, LmwbPathFunc fn);
void lmwb_ask_path_into(GtkWidget *owner, GtkEntry *entry, const char *title, GtkFileChooserAction action,
                        const char *accept);
