/* The workbench window: header bar with the view switcher, an error banner, the prompt, one page
 * per view of the registry (lmwb-views.h) and a status bar with the running job's progress and
 * Cancel. Holds the one shared copy of the model and the analysis of the prompt, and hands both to
 * every view (lmwb-view.h); hosts every job of itself and its views (lmwb-job.h). Every command
 * is a GAction (win.*, and each view's under its id, e.g. neurons.clamp), so the menu, the
 * keyboard, the test script and D-Bus all drive the same code. */
#pragma once
#include <gtk/gtk.h>

#define LMWB_TYPE_WINDOW (lmwb_window_get_type())
G_DECLARE_FINAL_TYPE(LmwbWindow, lmwb_window, LMWB, WINDOW, GtkApplicationWindow)

LmwbWindow *lmwb_window_new(GtkApplication *app);
/* Load a model folder on a worker thread; on failure the banner shows the loader's message and
 * the current model stays. */
void lmwb_window_open_model(LmwbWindow *w, const char *dir);
void lmwb_window_show_error(LmwbWindow *w, const char *message);
/* Text lines describing what the window shows (for the script log and tests). g_free. */
char *lmwb_window_describe(LmwbWindow *w);
/* Rebuild the Open Recent submenu from the recent list. */
void lmwb_window_refresh_recent(LmwbWindow *w);

/* Ready: no job runs, no view has work queued (LmwbView busy), no page transition or banner
 * animation runs, and every plot on the screen has drawn its current data. The signal "ready"
 * (no arguments) is emitted after each painted frame in which the window is ready: what the
 * screen shows then is complete. To wait for it, connect and queue a draw of the window. */
gboolean lmwb_window_is_ready(LmwbWindow *w);
/* Why the window is not ready, in words (g_free), or NULL when it is. */
char *lmwb_window_not_ready(LmwbWindow *w);
