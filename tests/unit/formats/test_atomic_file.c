/* Atomic saving: complete replacement on success; on failure no file, no temp, target intact. */
#include <errno.h>
#include <glib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/core/atomic_file.h"
#include "formats_test_util.h"

static char *read_all(const char *path) {
  char *s = NULL;
  g_assert_true(g_file_get_contents(path, &s, NULL, NULL));
  return s;
}

static void test_write_and_replace(void) {
  char *dir = tu_tmpdir();
  char *path = g_build_filename(dir, "out.txt", NULL);
  GError *err = NULL;
  g_assert_true(lmwb_file_write_atomic(path, "first", 5, &err));
  g_assert_no_error(err);
  char *s = read_all(path);
  g_assert_cmpstr(s, ==, "first");
  g_free(s);
  /* Usual permissions (0666 & ~umask), not mkstemp's 0600. */
  mode_t um = umask(022);
  umask(um);
  struct stat st;
  g_assert_cmpint(stat(path, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 0777, ==, 0666 & ~um);

  LmwbAtomicFile *f = lmwb_atomic_file_begin(path, &err);
  g_assert_nonnull(f);
  g_assert_true(lmwb_atomic_file_write(f, "sec", 3, &err));
  /* Until commit, readers still see the old file. */
  s = read_all(path);
  g_assert_cmpstr(s, ==, "first");
  g_free(s);
  g_assert_cmpint(tu_count_entries(dir), ==, 2);
  g_assert_true(lmwb_atomic_file_write(f, "ond", 3, &err));
  g_assert_true(lmwb_atomic_file_commit(f, &err));
  s = read_all(path);
  g_assert_cmpstr(s, ==, "second");
  g_free(s);
  g_assert_cmpint(tu_count_entries(dir), ==, 1);
  tu_rmdir(dir);
  g_free(path);
  g_free(dir);
}

static void test_abort_leaves_target(void) {
  char *dir = tu_tmpdir();
  char *path = g_build_filename(dir, "keep.txt", NULL);
  tu_write(path, "original", 8);
  GError *err = NULL;
  LmwbAtomicFile *f = lmwb_atomic_file_begin(path, &err);
  g_assert_true(lmwb_atomic_file_write(f, "partial", 7, &err));
  lmwb_atomic_file_abort(f);
  char *s = read_all(path);
  g_assert_cmpstr(s, ==, "original");
  g_free(s);
  g_assert_cmpint(tu_count_entries(dir), ==, 1);
  tu_rmdir(dir);
  g_free(path);
  g_free(dir);
}

static void test_missing_dir(void) {
  char *dir = tu_tmpdir();
  char *path = g_build_filename(dir, "nodir", "out.bin", NULL);
  GError *err = NULL;
  g_assert_false(lmwb_file_write_atomic(path, "x", 1, &err));
  tu_assert_input_error(err, path, "No such file");
  g_clear_error(&err);
  /* Parent is a regular file. */
  char *file = g_build_filename(dir, "plain", NULL);
  tu_write(file, "p", 1);
  char *under = g_build_filename(file, "out.bin", NULL);
  g_assert_false(lmwb_file_write_atomic(under, "x", 1, &err));
  tu_assert_input_error(err, under);
  g_clear_error(&err);
  g_assert_false(lmwb_file_write_atomic("", "x", 1, &err));
  tu_assert_input_error(err, "empty file name");
  g_clear_error(&err);
  g_assert_cmpint(tu_count_entries(dir), ==, 1);
  tu_rmdir(dir);
  g_free(path);
  g_free(file);
  g_free(under);
  g_free(dir);
}

/* A directory at the target: the rename fails, the directory and its content survive. */
static void test_target_is_directory(void) {
  char *dir = tu_tmpdir();
  char *path = g_build_filename(dir, "sub", NULL);
  g_assert_cmpint(g_mkdir(path, 0755), ==, 0);
  char *inner = g_build_filename(path, "x", NULL);
  tu_write(inner, "x", 1);
  GError *err = NULL;
  g_assert_false(lmwb_file_write_atomic(path, "data", 4, &err));
  g_assert_nonnull(err);
  g_assert_nonnull(strstr(err->message, path));
  g_clear_error(&err);
  g_assert_true(g_file_test(inner, G_FILE_TEST_IS_REGULAR));
  g_assert_cmpint(tu_count_entries(dir), ==, 1);
  tu_rmdir(dir);
  g_free(inner);
  g_free(path);
  g_free(dir);
}

/* Unwritable folder (skipped as root, who may write anywhere). */
static void test_unwritable_dir(void) {
  if (geteuid() == 0) {
    g_test_skip("running as root: permissions are not enforced");
    return;
  }
  char *dir = tu_tmpdir();
  char *path = g_build_filename(dir, "out.bin", NULL);
  g_assert_cmpint(chmod(dir, 0555), ==, 0);
  GError *err = NULL;
  g_assert_false(lmwb_file_write_atomic(path, "x", 1, &err));
  tu_assert_input_error(err, path, "Permission denied");
  g_clear_error(&err);
  chmod(dir, 0755);
  g_assert_cmpint(tu_count_entries(dir), ==, 0);
  tu_rmdir(dir);
  g_free(path);
  g_free(dir);
}

/* A write that fails midway (file size limit, as a full disk would): the old file is intact
 * and no temp file is left. Works as root too. */
static void test_write_failure_midway(void) {
  char *dir = tu_tmpdir();
  char *path = g_build_filename(dir, "big.bin", NULL);
  tu_write(path, "old content", 11);
  struct rlimit old;
  g_assert_cmpint(getrlimit(RLIMIT_FSIZE, &old), ==, 0);
  struct rlimit lim = old;
  lim.rlim_cur = 4096;
  void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
  g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &lim), ==, 0);
  size_t n = 1 << 20;
  char *big = g_malloc0(n);
  GError *err = NULL;
  gboolean ok = lmwb_file_write_atomic(path, big, n, &err);
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, prev);
  g_assert_false(ok);
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_FAILED); /* a system failure, not the user's input */
  g_assert_nonnull(strstr(err->message, path));
  g_clear_error(&err);
  char *s = read_all(path);
  g_assert_cmpstr(s, ==, "old content");
  g_free(s);
  g_assert_cmpint(tu_count_entries(dir), ==, 1);
  g_free(big);
  tu_rmdir(dir);
  g_free(path);
  g_free(dir);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/atomic_file/write_and_replace", test_write_and_replace);
  g_test_add_func("/atomic_file/abort_leaves_target", test_abort_leaves_target);
  g_test_add_func("/atomic_file/missing_dir", test_missing_dir);
  g_test_add_func("/atomic_file/target_is_directory", test_target_is_directory);
  g_test_add_func("/atomic_file/unwritable_dir", test_unwritable_dir);
  g_test_add_func("/atomic_file/write_failure_midway", test_write_failure_midway);
  return g_test_run();
}
