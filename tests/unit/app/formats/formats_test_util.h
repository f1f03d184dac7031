/* Shared helpers for the format tests: temp folders, raw files, error assertions. */
#pragma once
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

#include "app/core/errors.h"
#include "app/core/inputs.h"

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

/* u64 length + header + data buffer, as a safetensors file image. */
static inline GByteArray *tu_safetensors_image(const char *header, const void *buf, size_t buflen) {
  GByteArray *a = g_byte_array_new();
  guint64 n = strlen(header);
  guint8 len[8];
  for (int i = 0; i < 8; i++) len[i] = (guint8)(n >> (8 * i));
  g_byte_array_append(a, len, 8);
  g_byte_array_append(a, (const guint8 *)header, (guint)n);
  if (buflen) g_byte_array_append(a, buf, (guint)buflen);
  return a;
}

/* The input guard stays on for the rest of a process, so a test that needs it runs in a
 * subprocess: in the parent this runs the test there, asserts it passed and returns FALSE; in
 * the subprocess it turns the guard on and returns TRUE. */
static inline gboolean tu_guarded_subprocess(void) {
  if (!g_test_subprocess()) {
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_passed();
    return FALSE;
  }
  lmwb_input_guard_enable();
  return TRUE;
}
