/* What the edit front ends (lmwb-batch edit, the desktop's Editing view) share before an edit:
 * method defaults, layer ranges and the monitor set. Contract: edit_sequence.h. */
#include "editors/edit_sequence.h"
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include <stdlib.h>

void lmwb_edit_method_options_init(LmwbRomeOptions *o, LmwbEditMethod method) {
  lmwb_rome_options_init(o);
  if (method == LMWB_EDIT_MEMIT) o->clamp = 0.75;
}

gboolean lmwb_edit_layers_parse(const LmwbModel *m, const char *text, int **layers, int *n, GError **error) {
  g_auto(GStrv) parts = g_strsplit(text ? text : "", "-", 2);
  const char *first = parts[0] ? parts[0] : "";
  char *e1 = NULL, *e2 = NULL;
  long a = strtol(first, &e1, 10), b = parts[0] && parts[1] ? strtol(parts[1], &e2, 10) : a;
  if (!*first || *e1 || (parts[0] && parts[1] && (!*parts[1] || *e2)) || a < 0 || b < a || b >= m->cfg.n_layer) {
    lmwb_input_error(error, "layers \"%s\" is not L or A-B within 0..%d", text ? text : "", m->cfg.n_layer - 1);
    return FALSE;
  }
  *n = (int)(b - a + 1);
  *layers = g_new(int, *n);
  for (int i = 0; i < *n; i++) (*layers)[i] = (int)a + i;
  return TRUE;
}

LmwbEditStats *lmwb_edit_stats_load_for(const char *path, const LmwbModel *m, int layer, GError **error) {
  g_autofree char *name = g_strdup_printf("C%d.safetensors", layer);
  gboolean folder = g_file_test(path, G_FILE_TEST_IS_DIR);
  g_autofree char *file = folder ? g_build_filename(path, name, NULL) : g_strdup(path);
  return lmwb_edit_stats_load(file, m, layer, error);
}

char **lmwb_edit_monitor_read(const char *path, GError **error) {
  size_t len = 0;
  g_autofree char *text = lmwb_file_read(path, LMWB_TEXT_MAX_BYTES, LMWB_READ_STREAM, &len, error);
  if (!text) return NULL;
  if (!g_utf8_validate(text, (gssize)len, NULL)) {
    lmwb_input_error(error, "%s is not valid UTF-8 text", path);
    return NULL;
  }
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  GPtrArray *out = g_ptr_array_new();
  for (int i = 0; lines[i]; i++)
    if (*g_strstrip(lines[i])) g_ptr_array_add(out, g_strdup(lines[i]));
  if (out->len == 0) {
    g_ptr_array_free(out, TRUE);
    lmwb_input_error(error, "%s: the monitor set has no sentences", path);
    return NULL;
  }
  g_ptr_array_add(out, NULL);
  return (char **)g_ptr_array_free(out, FALSE);
}
