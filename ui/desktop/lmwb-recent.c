#include "ui/desktop/lmwb-recent.h"
#include <errno.h>
#include <string.h>

static char *recent_path(void) {
  const char *env = g_getenv("LMWB_CONFIG_DIR");
  if (env && *env) return g_build_filename(env, "recent.ini", NULL);
  return g_build_filename(g_get_user_config_dir(), "lmwb", "recent.ini", NULL);
}

static char **read_raw(void) {
  g_autofree char *path = recent_path();
  g_autoptr(GKeyFile) kf = g_key_file_new();
  if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, NULL)) return g_new0(char *, 1);
  char **v = g_key_file_get_string_list(kf, "recent", "models", NULL, NULL);
  return v ? v : g_new0(char *, 1);
}

char **lmwb_recent_list(void) {
  g_auto(GStrv) raw = read_raw();
  GPtrArray *out = g_ptr_array_new();
  for (char **p = raw; *p && out->len < LMWB_RECENT_MAX; p++)
    if (g_file_test(*p, G_FILE_TEST_IS_DIR)) g_ptr_array_add(out, g_strdup(*p));
  g_ptr_array_add(out, NULL);
  return (char **)g_ptr_array_free(out, FALSE);
}

gboolean lmwb_recent_add(const char *dir, GError **error) {
  g_autofree char *abs = g_canonicalize_filename(dir, NULL);
  g_auto(GStrv) raw = read_raw();
  GPtrArray *list = g_ptr_array_new();
  g_ptr_array_add(list, abs);
  for (char **p = raw; *p && list->len < LMWB_RECENT_MAX; p++)
    if (strcmp(*p, abs)) g_ptr_array_add(list, *p);
  g_autoptr(GKeyFile) kf = g_key_file_new();
  g_key_file_set_string_list(kf, "recent", "models", (const char *const *)list->pdata, list->len);
  g_ptr_array_free(list, TRUE); /* frees only the array: strings are owned by raw and abs */
  g_autofree char *path = recent_path();
  g_autofree char *folder = g_path_get_dirname(path);
  if (g_mkdir_with_parents(folder, 0700) != 0) {
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "cannot create %s", folder);
    return FALSE;
  }
  return g_key_file_save_to_file(kf, path, error);
}
