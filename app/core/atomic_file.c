#include "app/core/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/core/errors.h"

struct LmwbAtomicFile {
  char *path;
  char *tmp_path;
  char *dir;
  int fd;
  gboolean failed;
};

/* Errors a user can fix by choosing another path are input errors (exit 2); the rest are ours. */
static void set_errno_error(GError **error, int err, const char *what, const char *path) {
  int code = LMWB_ERROR_FAILED;
  switch (err) {
    case EACCES: case EPERM: case ENOENT: case ENOTDIR: case EROFS: case EISDIR:
    case ENAMETOOLONG: case ELOOP: case EEXIST:
      code = LMWB_ERROR_INPUT;
      break;
    default:
      break;
  }
  g_set_error(error, LMWB_ERROR, code, "%s: cannot %s: %s", path, what, g_strerror(err));
}

LmwbAtomicFile *lmwb_atomic_file_begin(const char *path, GError **error) {
  if (!path || !*path) {
    lmwb_input_error(error, "cannot save: empty file name");
    return NULL;
  }
  char *base = g_path_get_basename(path);
  if (strcmp(base, "/") == 0 || strcmp(base, ".") == 0 || strcmp(base, "..") == 0 ||
      g_str_has_suffix(path, "/")) {
    lmwb_input_error(error, "%s: cannot save: not a file name", path);
    g_free(base);
    return NULL;
  }
  char *dir = g_path_get_dirname(path);
  int fd = -1;
  char *tmp = NULL;
  int last_errno = 0;
  /* O_EXCL with random names instead of mkstemp so the file gets the usual 0666 & ~umask. */
  for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
    g_free(tmp);
    tmp = g_strdup_printf("%s/.%s.tmp-%08x", dir, base, g_random_int());
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
      last_errno = errno;
      if (last_errno != EEXIST) break;
    }
  }
  g_free(base);
  if (fd < 0) {
    set_errno_error(error, last_errno, "create a temporary file beside it", path);
    g_free(tmp);
    g_free(dir);
    return NULL;
  }
  LmwbAtomicFile *f = g_new0(LmwbAtomicFile, 1);
  f->path = g_strdup(path);
  f->tmp_path = tmp;
  f->dir = dir;
  f->fd = fd;
  return f;
}

gboolean lmwb_atomic_file_write(LmwbAtomicFile *f, const void *data, size_t len, GError **error) {
  g_return_val_if_fail(f != NULL, FALSE);
  if (f->failed) {
    g_set_error(error, LMWB_ERROR, LMWB_ERROR_FAILED, "%s: an earlier write failed", f->path);
    return FALSE;
  }
  const char *p = data;
  while (len > 0) {
    size_t chunk = len > (1u << 30) ? (1u << 30) : len;
    ssize_t n = write(f->fd, p, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      f->failed = TRUE;
      set_errno_error(error, errno, "write", f->path);
      return FALSE;
    }
    if (n == 0) {
      f->failed = TRUE;
      set_errno_error(error, ENOSPC, "write", f->path);
      return FALSE;
    }
    p += n;
    len -= (size_t)n;
  }
  return TRUE;
}

static void free_file(LmwbAtomicFile *f) {
  g_free(f->path);
  g_free(f->tmp_path);
  g_free(f->dir);
  g_free(f);
}

void lmwb_atomic_file_abort(LmwbAtomicFile *f) {
  if (!f) return;
  if (f->fd >= 0) close(f->fd);
  unlink(f->tmp_path);
  free_file(f);
}

gboolean lmwb_atomic_file_commit(LmwbAtomicFile *f, GError **error) {
  g_return_val_if_fail(f != NULL, FALSE);
  if (f->failed) {
    g_set_error(error, LMWB_ERROR, LMWB_ERROR_FAILED, "%s: not saved, an earlier write failed",
                f->path);
    lmwb_atomic_file_abort(f);
    return FALSE;
  }
  /* Data must be on disk before the rename makes it visible, or a crash could leave an empty
   * file under the final name. */
  if (fsync(f->fd) != 0) {
    set_errno_error(error, errno, "flush to disk", f->path);
    lmwb_atomic_file_abort(f);
    return FALSE;
  }
  int fd = f->fd;
  f->fd = -1;
  if (close(fd) != 0) {
    set_errno_error(error, errno, "close", f->path);
    lmwb_atomic_file_abort(f);
    return FALSE;
  }
  if (rename(f->tmp_path, f->path) != 0) {
    set_errno_error(error, errno, "replace", f->path);
    lmwb_atomic_file_abort(f);
    return FALSE;
  }
  /* Make the rename itself durable. The file is already in place, so a failure here is not
   * reported as a failed save (some file systems refuse fsync on directories). */
  int dfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
  free_file(f);
  return TRUE;
}

const char *lmwb_atomic_file_path(const LmwbAtomicFile *f) { return f ? f->path : NULL; }

gboolean lmwb_file_write_atomic(const char *path, const void *data, size_t len, GError **error) {
  LmwbAtomicFile *f = lmwb_atomic_file_begin(path, error);
  if (!f) return FALSE;
  if (!lmwb_atomic_file_write(f, data, len, error)) {
    lmwb_atomic_file_abort(f);
    return FALSE;
  }
  return lmwb_atomic_file_commit(f, error);
}
