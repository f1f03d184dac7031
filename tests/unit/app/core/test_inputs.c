/* app/core/inputs.h: reading with a size limit checked before reading (regular files; pipes only
 * when asked; never devices or folders), and the guard that keeps outputs off inputs. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "tests/unit/app/formats/formats_test_util.h"

static void test_read_regular(void) {
  char *dir = tu_tmpdir();
  char *p = g_build_filename(dir, "a.txt", NULL);
  tu_write(p, "hello\0world", 11);
  GError *err = NULL;
  size_t len = 0;
  char *s = lmwb_file_read(p, 11, LMWB_READ_REGULAR, &len, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(len, ==, 11);
  g_assert_cmpmem(s, 11, "hello\0world", 11);
  g_assert_cmpint(s[11], ==, 0); /* NUL-terminated */
  g_free(s);
  /* One byte over the limit: refused, naming the file and the limit. */
  g_assert_null(lmwb_file_read(p, 10, LMWB_READ_REGULAR, &len, &err));
  tu_assert_input_error(err, p, "limit");
  g_clear_error(&err);
  /* Empty file. */
  tu_write(p, "", 0);
  s = lmwb_file_read(p, 10, LMWB_READ_REGULAR, &len, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(len, ==, 0);
  g_assert_cmpstr(s, ==, "");
  g_free(s);
  tu_rmdir(dir);
  g_free(p);
  g_free(dir);
}

/* A 4 GiB sparse file with a 1 MiB limit: refused from fstat, nothing read. */
static void test_read_huge_sparse(void) {
  char *dir = tu_tmpdir();
  char *p = g_build_filename(dir, "big.json", NULL);
  int fd = open(p, O_CREAT | O_WRONLY, 0644);
  g_assert_cmpint(fd, >=, 0);
  g_assert_cmpint(ftruncate(fd, (off_t)4 << 30), ==, 0);
  close(fd);
  GError *err = NULL;
  gint64 t0 = g_get_monotonic_time();
  g_assert_null(lmwb_file_read(p, 1 << 20, LMWB_READ_REGULAR, NULL, &err));
  g_assert_cmpint(g_get_monotonic_time() - t0, <, 1000000);
  tu_assert_input_error(err, p, "4.0", "GiB", "1.0", "MiB");
  g_clear_error(&err);
  g_assert_null(lmwb_file_map(p, 1 << 20, &err));
  tu_assert_input_error(err, p, "limit");
  g_clear_error(&err);
  tu_rmdir(dir);
  g_free(p);
  g_free(dir);
}

static void test_read_not_regular(void) {
  GError *err = NULL;
  g_assert_null(lmwb_file_read("/dev/zero", 1 << 20, LMWB_READ_STREAM, NULL, &err));
  tu_assert_input_error(err, "/dev/zero", "character device");
  g_clear_error(&err);
  g_assert_null(lmwb_file_map("/dev/zero", G_MAXUINT64, &err));
  tu_assert_input_error(err, "/dev/zero", "character device");
  g_clear_error(&err);
  char *dir = tu_tmpdir();
  g_assert_null(lmwb_file_read(dir, 1 << 20, LMWB_READ_STREAM, NULL, &err));
  tu_assert_input_error(err, dir, "a folder");
  g_clear_error(&err);
  char *missing = g_build_filename(dir, "missing", NULL);
  g_assert_null(lmwb_file_read(missing, 1 << 20, LMWB_READ_REGULAR, NULL, &err));
  tu_assert_input_error(err, missing, "No such file");
  g_clear_error(&err);
  /* A fifo with no writer: refused at once (it would block a blocking open forever). */
  char *fifo = g_build_filename(dir, "fifo", NULL);
  g_assert_cmpint(mkfifo(fifo, 0644), ==, 0);
  g_assert_null(lmwb_file_read(fifo, 1 << 20, LMWB_READ_REGULAR, NULL, &err));
  tu_assert_input_error(err, fifo, "a fifo");
  g_clear_error(&err);
  g_assert_null(lmwb_file_map(fifo, 1 << 20, &err));
  tu_assert_input_error(err, fifo, "a fifo");
  g_clear_error(&err);
  tu_rmdir(dir);
  g_free(fifo);
  g_free(missing);
  g_free(dir);
}

typedef struct {
  char *path;
  size_t bytes; /* 0: write until the reader goes away */
} Writer;

static gpointer fifo_writer(gpointer data) {
  Writer *w = data;
  int fd = open(w->path, O_WRONLY);
  g_assert_cmpint(fd, >=, 0);
  char buf[4096];
  memset(buf, 'a', sizeof buf);
  size_t done = 0;
  while (w->bytes == 0 || done < w->bytes) {
    size_t n = w->bytes ? MIN(sizeof buf, w->bytes - done) : sizeof buf;
    ssize_t k = write(fd, buf, n);
    if (k <= 0) break;
    done += (size_t)k;
  }
  close(fd);
  return NULL;
}

/* With LMWB_READ_STREAM a fifo is read to its end, but never beyond the limit. */
static void test_read_stream(void) {
  signal(SIGPIPE, SIG_IGN);
  char *dir = tu_tmpdir();
  char *fifo = g_build_filename(dir, "fifo", NULL);
  g_assert_cmpint(mkfifo(fifo, 0644), ==, 0);
  Writer w = {fifo, 100000};
  GThread *t = g_thread_new("writer", fifo_writer, &w);
  GError *err = NULL;
  size_t len = 0;
  char *s = lmwb_file_read(fifo, 1 << 20, LMWB_READ_STREAM, &len, &err);
  g_thread_join(t);
  g_assert_no_error(err);
  g_assert_cmpuint(len, ==, 100000);
  g_assert_cmpint(s[0], ==, 'a');
  g_free(s);
  Writer endless = {fifo, 0};
  t = g_thread_new("writer", fifo_writer, &endless);
  g_assert_null(lmwb_file_read(fifo, 1 << 20, LMWB_READ_STREAM, &len, &err));
  tu_assert_input_error(err, fifo, "more than", "MiB");
  g_clear_error(&err);
  g_thread_join(t);
  tu_rmdir(dir);
  g_free(fifo);
  g_free(dir);
}

static void test_map(void) {
  char *dir = tu_tmpdir();
  char *p = g_build_filename(dir, "m.bin", NULL);
  tu_write(p, "abc", 3);
  GError *err = NULL;
  GMappedFile *m = lmwb_file_map(p, 3, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(g_mapped_file_get_length(m), ==, 3);
  g_assert_cmpmem(g_mapped_file_get_contents(m), 3, "abc", 3);
  g_mapped_file_unref(m);
  tu_write(p, "", 0);
  m = lmwb_file_map(p, 3, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(g_mapped_file_get_length(m), ==, 0);
  g_mapped_file_unref(m);
  tu_rmdir(dir);
  g_free(p);
  g_free(dir);
}

/* Off (a library's default): nothing is refused. */
static void test_guard_off(void) {
  char *dir = tu_tmpdir();
  char *p = g_build_filename(dir, "in.txt", NULL);
  tu_write(p, "x", 1);
  char *s = lmwb_file_read(p, 10, LMWB_READ_REGULAR, NULL, NULL);
  g_free(s);
  g_assert_false(lmwb_input_guard_enabled());
  g_assert_true(lmwb_input_guard_check_output(p, NULL));
  tu_rmdir(dir);
  g_free(p);
  g_free(dir);
}

/* On: every name of a file read, and every path inside a folder read, is refused. Runs in a
 * subprocess: the guard stays on for the rest of a process. */
static void test_guard_on(void) {
  if (!tu_guarded_subprocess()) return;
  char *dir = tu_tmpdir();
  char *in = g_build_filename(dir, "in.txt", NULL);
  char *slink = g_build_filename(dir, "link.txt", NULL);
  char *hard = g_build_filename(dir, "hard.txt", NULL);
  char *other = g_build_filename(dir, "other.txt", NULL);
  char *model = g_build_filename(dir, "model", NULL);
  char *model_file = g_build_filename(model, "config.json", NULL);
  char *model_new = g_build_filename(model, "new.npy", NULL);
  char *model_sub = g_build_filename(model, "sub", NULL);
  char *model_sub_new = g_build_filename(model_sub, "x.npy", NULL);
  char *outside = g_build_filename(dir, "far.txt", NULL);
  tu_write(in, "x", 1);
  tu_write(outside, "far", 3);
  g_assert_cmpint(symlink(in, slink), ==, 0);
  g_assert_cmpint(link(in, hard), ==, 0);
  g_assert_cmpint(g_mkdir(model, 0755), ==, 0);
  g_assert_cmpint(g_mkdir(model_sub, 0755), ==, 0);
  tu_write(model_file, "{}", 2);
  char *model_link = g_build_filename(model, "to-far", NULL);
  g_assert_cmpint(symlink(outside, model_link), ==, 0);

  GError *err = NULL;
  g_free(lmwb_file_read(in, 10, LMWB_READ_REGULAR, NULL, &err));
  g_assert_no_error(err);
  lmwb_input_guard_add_folder(model);
  g_assert_true(lmwb_input_guard_check_output(other, &err));
  g_assert_true(lmwb_input_guard_check_output(model_sub_new, &err));
  const char *refused[] = {in, slink, hard, model_file, model_new, outside};
  for (size_t i = 0; i < G_N_ELEMENTS(refused); i++) {
    g_assert_false(lmwb_input_guard_check_output(refused[i], &err));
    tu_assert_input_error(err, refused[i], "reads");
    g_clear_error(&err);
  }
  g_assert_false(lmwb_input_guard_check_output(hard, &err));
  tu_assert_input_error(err, hard, in); /* names both */
  g_clear_error(&err);
  lmwb_input_guard_forget(slink);
  g_assert_true(lmwb_input_guard_check_output(in, &err));
  g_assert_no_error(err);
  tu_rmdir(dir);
  char *paths[] = {in, slink, hard, other, model, model_file, model_new, model_sub, model_sub_new, outside, model_link, dir};
  for (size_t i = 0; i < G_N_ELEMENTS(paths); i++) g_free(paths[i]);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/inputs/read-regular", test_read_regular);
  g_test_add_func("/inputs/read-huge-sparse", test_read_huge_sparse);
  g_test_add_func("/inputs/read-not-regular", test_read_not_regular);
  g_test_add_func("/inputs/read-stream", test_read_stream);
  g_test_add_func("/inputs/map", test_map);
  g_test_add_func("/inputs/guard-off", test_guard_off);
  g_test_add_func("/inputs/guard-on", test_guard_on);
  return g_test_run();
}
