/* Atomic saving: complete replacement on success; on failure no file, no temp, target intact. */
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <glib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/core/atomic_file.h"
#include "app/core/inputs.h"
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
  /* Until commit, readers still see the old file (the new one is unnamed, or a hidden temp). */
  s = read_all(path);
  g_assert_cmpstr(s, ==, "first");
  g_free(s);
  g_assert_cmpint(tu_count_entries(dir), <=, 2);
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

/* A symlink at the target is followed: the link stays, its target is saved; a dangling link's
 * target is created. */
static void test_symlink_followed(void) {
  char *dir = tu_tmpdir();
  char *real = g_build_filename(dir, "real.txt", NULL);
  char *link = g_build_filename(dir, "link.txt", NULL);
  char *dangling = g_build_filename(dir, "dangling.txt", NULL);
  char *created = g_build_filename(dir, "created.txt", NULL);
  tu_write(real, "old", 3);
  g_assert_cmpint(symlink("real.txt", link), ==, 0);
  g_assert_cmpint(symlink("created.txt", dangling), ==, 0);
  GError *err = NULL;
  g_assert_true(lmwb_file_write_atomic(link, "new", 3, &err));
  g_assert_no_error(err);
  g_assert_true(g_file_test(link, G_FILE_TEST_IS_SYMLINK));
  char *s = read_all(real);
  g_assert_cmpstr(s, ==, "new");
  g_free(s);
  g_assert_true(lmwb_file_write_atomic(dangling, "made", 4, &err));
  g_assert_true(g_file_test(dangling, G_FILE_TEST_IS_SYMLINK));
  s = read_all(created);
  g_assert_cmpstr(s, ==, "made");
  g_free(s);
  g_assert_cmpint(tu_count_entries(dir), ==, 4);
  tu_rmdir(dir);
  g_free(real); g_free(link); g_free(dangling); g_free(created); g_free(dir);
}

/* An existing file keeps its mode; one with two hard links keeps them (both see the content). */
static void test_mode_and_links_kept(void) {
  char *dir = tu_tmpdir();
  char *a = g_build_filename(dir, "a.txt", NULL);
  char *b = g_build_filename(dir, "b.txt", NULL);
  const guint modes[] = {0600, 0640, 0444, 0755};
  for (size_t i = 0; i < G_N_ELEMENTS(modes); i++) {
    tu_write(a, "old", 3);
    g_assert_cmpint(chmod(a, modes[i]), ==, 0);
    GError *err = NULL;
    g_assert_true(lmwb_file_write_atomic(a, "new", 3, &err));
    g_assert_no_error(err);
    struct stat st;
    g_assert_cmpint(stat(a, &st), ==, 0);
    g_assert_cmpuint(st.st_mode & 07777, ==, modes[i]);
    g_unlink(a);
  }
  tu_write(a, "old", 3);
  g_assert_cmpint(link(a, b), ==, 0);
  GError *err = NULL;
  g_assert_true(lmwb_file_write_atomic(a, "brand new", 9, &err));
  g_assert_no_error(err);
  struct stat sa, sb;
  g_assert_cmpint(stat(a, &sa), ==, 0);
  g_assert_cmpint(stat(b, &sb), ==, 0);
  g_assert_cmpuint(sa.st_ino, ==, sb.st_ino);
  g_assert_cmpuint(sa.st_nlink, ==, 2);
  char *s = read_all(b);
  g_assert_cmpstr(s, ==, "brand new");
  g_free(s);
  g_assert_cmpint(tu_count_entries(dir), ==, 2);
  tu_rmdir(dir);
  g_free(a); g_free(b); g_free(dir);
}

static gpointer read_fifo(gpointer path) {
  char *s = NULL;
  g_assert_true(g_file_get_contents(path, &s, NULL, NULL));
  return s;
}

/* Character devices, fifos and inherited descriptors are written straight through: they stay
 * what they are. */
static void test_special_targets(void) {
  struct stat before, after;
  g_assert_cmpint(stat("/dev/null", &before), ==, 0);
  GError *err = NULL;
  g_assert_true(lmwb_file_write_atomic("/dev/null", "gone", 4, &err));
  g_assert_no_error(err);
  g_assert_cmpint(stat("/dev/null", &after), ==, 0);
  g_assert_true(S_ISCHR(after.st_mode));
  g_assert_cmpuint(after.st_rdev, ==, before.st_rdev);
  char *dir = tu_tmpdir();
  char *fifo = g_build_filename(dir, "fifo", NULL);
  g_assert_cmpint(mkfifo(fifo, 0644), ==, 0);
  GThread *t = g_thread_new("reader", read_fifo, fifo);
  g_assert_true(lmwb_file_write_atomic(fifo, "through the pipe", 16, &err));
  g_assert_no_error(err);
  char *got = g_thread_join(t);
  g_assert_cmpstr(got, ==, "through the pipe");
  g_free(got);
  struct stat st;
  g_assert_cmpint(lstat(fifo, &st), ==, 0);
  g_assert_true(S_ISFIFO(st.st_mode));
  /* /dev/fd/N: the descriptor itself, at its offset. */
  char *file = g_build_filename(dir, "fd.txt", NULL);
  int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  g_assert_cmpint(write(fd, "head:", 5), ==, 5);
  char *fdpath = g_strdup_printf("/dev/fd/%d", fd);
  g_assert_true(lmwb_file_write_atomic(fdpath, "tail", 4, &err));
  g_assert_no_error(err);
  close(fd);
  char *s = read_all(file);
  g_assert_cmpstr(s, ==, "head:tail");
  g_free(s);
  g_assert_cmpint(tu_count_entries(dir), ==, 2);
  tu_rmdir(dir);
  g_free(fdpath); g_free(file); g_free(fifo); g_free(dir);
}

/* Temporaries of the target left by a dead writer go; a live writer's (locked) and other
 * targets' stay. */
static void test_stale_temps(void) {
  char *dir = tu_tmpdir();
  char *path = g_build_filename(dir, "out.bin", NULL);
  char *stale = g_build_filename(dir, ".out.bin.tmp-0badcafe", NULL);
  char *live = g_build_filename(dir, ".out.bin.tmp-0000cafe", NULL);
  char *other = g_build_filename(dir, ".other.bin.tmp-0badcafe", NULL);
  char *odd = g_build_filename(dir, ".out.bin.tmp-notahex", NULL);
  tu_write(stale, "s", 1);
  tu_write(live, "l", 1);
  tu_write(other, "o", 1);
  tu_write(odd, "x", 1);
  int fd = open(live, O_RDONLY);
  g_assert_cmpint(flock(fd, LOCK_EX), ==, 0);
  GError *err = NULL;
  g_assert_true(lmwb_file_write_atomic(path, "data", 4, &err));
  g_assert_no_error(err);
  g_assert_false(g_file_test(stale, G_FILE_TEST_EXISTS));
  g_assert_true(g_file_test(live, G_FILE_TEST_EXISTS));
  g_assert_true(g_file_test(other, G_FILE_TEST_EXISTS));
  g_assert_true(g_file_test(odd, G_FILE_TEST_EXISTS));
  close(fd);
  tu_rmdir(dir);
  g_free(path); g_free(stale); g_free(live); g_free(other); g_free(odd); g_free(dir);
}

/* A writer killed in the middle of a save (SIGKILL: no handler runs) leaves nothing behind. */
static void test_killed_midway(void) {
  char *dir = tu_tmpdir();
  char *path = g_build_filename(dir, "out.bin", NULL);
  pid_t pid = fork();
  g_assert_cmpint(pid, >=, 0);
  if (pid == 0) {
    LmwbAtomicFile *f = lmwb_atomic_file_begin(path, NULL);
    char buf[65536] = {0};
    for (int i = 0; f && i < 64; i++) lmwb_atomic_file_write(f, buf, sizeof buf, NULL);
    raise(SIGKILL);
    _exit(1);
  }
  int status = 0;
  g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
  g_assert_true(WIFSIGNALED(status));
  g_assert_cmpint(tu_count_entries(dir), ==, 0);
  tu_rmdir(dir);
  g_free(path);
  g_free(dir);
}

/* lmwb_atomic_file_remove_temps (what the signal handlers call) removes the named temporary of
 * a save in progress; the save then fails cleanly. */
static void test_remove_temps(void) {
  char *dir = tu_tmpdir();
  char *path = g_build_filename(dir, "out.bin", NULL);
  LmwbAtomicFile *f = lmwb_atomic_file_begin(path, NULL);
  g_assert_nonnull(f);
  g_assert_true(lmwb_atomic_file_write(f, "x", 1, NULL));
  lmwb_atomic_file_remove_temps();
  g_assert_cmpint(tu_count_entries(dir), ==, 0);
  lmwb_atomic_file_abort(f);
  g_assert_cmpint(tu_count_entries(dir), ==, 0);
  tu_rmdir(dir);
  g_free(path);
  g_free(dir);
}

/* With the input guard on, a file this process read is never a save target. */
static void test_guard_refuses_inputs(void) {
  if (!tu_guarded_subprocess()) return;
  char *dir = tu_tmpdir();
  char *in = g_build_filename(dir, "in.json", NULL);
  tu_write(in, "{}", 2);
  g_free(lmwb_file_read(in, 100, LMWB_READ_REGULAR, NULL, NULL));
  GError *err = NULL;
  g_assert_false(lmwb_file_write_atomic(in, "oops", 4, &err));
  tu_assert_input_error(err, in, "reads");
  g_clear_error(&err);
  char *s = read_all(in);
  g_assert_cmpstr(s, ==, "{}");
  g_free(s);
  g_assert_cmpint(tu_count_entries(dir), ==, 1);
  tu_rmdir(dir);
  g_free(in);
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
  g_test_add_func("/atomic_file/symlink_followed", test_symlink_followed);
  g_test_add_func("/atomic_file/mode_and_links_kept", test_mode_and_links_kept);
  g_test_add_func("/atomic_file/special_targets", test_special_targets);
  g_test_add_func("/atomic_file/stale_temps", test_stale_temps);
  g_test_add_func("/atomic_file/killed_midway", test_killed_midway);
  g_test_add_func("/atomic_file/remove_temps", test_remove_temps);
  g_test_add_func("/atomic_file/guard_refuses_inputs", test_guard_refuses_inputs);
  return g_test_run();
}
