/* The workbench window: header bar with the view switcher, an error banner, the prompt, the
 * Model / Logit Lens / Neurons views and a status bar with the running job's progress and Cancel.
 * Holds the one shared copy of the model; every command is a GAction (win.*), so the menu, the
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
