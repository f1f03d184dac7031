/* The GtkApplication: app-level actions (quit, about, dark theme), keyboard shortcuts, the style
 * sheet, and the first window, which opens the model given on the command line or the built-in
 * one. With a script (test mode) it runs the script against that window. */
#pragma once
#include <gtk/gtk.h>

#define LMWB_TYPE_APP (lmwb_app_get_type())
G_DECLARE_FINAL_TYPE(LmwbApp, lmwb_app, LMWB, APP, GtkApplication)

/* model_dir NULL: the built-in model (or $LMWB_DEFAULT_MODEL). script NULL: interactive. */
LmwbApp *lmwb_app_new(const char *model_dir, const char *script);
/* The built-in model's folder: $LMWB_DEFAULT_MODEL, data/models/tiny-world in the source tree,
 * else the installed copy (same rule as lmwb-batch). */
const char *lmwb_app_default_model_dir(void);
/* The monitor sentences of the collapse alarm, data/monitor/brown-50.txt of the source tree
 * (found beside the built-in model); g_free it. */
char *lmwb_app_default_monitor(void);
int lmwb_app_script_status(LmwbApp *app);
