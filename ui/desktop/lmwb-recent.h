/* Recently opened model folders, most recent first, kept in a small key file
 * (g_get_user_config_dir()/lmwb/recent.ini, or $LMWB_CONFIG_DIR/recent.ini for tests).
 * A missing or unreadable file is an empty list; write failures are reported, never fatal. */
#pragma once
#include <glib.h>

#define LMWB_RECENT_MAX 8

/* NULL-terminated list (g_strfreev); folders that no longer exist are left out. */
char **lmwb_recent_list(void);
/* Move (or insert) dir to the front and save. */
gboolean lmwb_recent_add(const char *dir, GError **error);
