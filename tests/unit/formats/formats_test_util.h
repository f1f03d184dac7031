/* Shared helpers for the format tests: temp folders, raw files, error assertions. */
#pragma once
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

#include "app/core/errors.h"

static inline char *tu_tmpdir(void) {
  GError *err = NULL;
  char *d = g_dir_make_tmp("lmwb-formats-XXXXXX", &err);
  g_assert_no_error(err);
  return d;
}

static inline void tu_rmdir(const char *dir) {
  GDir *d = g_dir_open(dir, 0, NULL);
  if (d) {
    const char *n;
    while ((n = g_dir_read_name(d))) {
      char *p = g_build_filename(dir, n, NULL);
      if (g_file_test(p, G_FILE_TEST_IS_DIR) && !g_file_test(p, G_FILE_TEST_IS_SYMLINK)) tu_rmdir(p);
      else g_unlink(p);
      g_free(p);
    }
    g_dir_close(d);
  }
  g_rmdir(dir);
}

static inline void tu_write(const char *path, const void *data, size_t len) {
  GError *err = NULL;
  g_file_set_contents(path, data, (gssize)len, &err);
  g_assert_no_error(err);
}

/* Number of entries in a folder (to prove no temp file was left behind). */
static inline int tu_count_entries(const char *dir) {
  GDir *d = g_dir_open(dir, 0, NULL);
  g_assert_nonnull(d);
  int n = 0;
  while (g_dir_read_name(d)) n++;
  g_dir_close(d);
  return n;
}

/* The error is a bad-input error whose message contains every given fragment. */
#define tu_assert_input_error(err, ...)                                              \
  do {                                                                               \
    g_assert_error((err), LMWB_ERROR, LMWB_ERROR_INPUT);                             \
    const char *tu_frags_[] = {__VA_ARGS__, NULL};                                   \
    for (int tu_i_ = 0; tu_frags_[tu_i_]; tu_i_++) {                                 \
      if (!strstr((err)->message, tu_frags_[tu_i_]))                                 \
        g_error("message '%s' lacks '%s'", (err)->message, tu_frags_[tu_i_]);        \
    }                                                                                \
  } while (0)
