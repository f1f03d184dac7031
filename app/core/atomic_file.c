#include "app/core/atomic_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/core/errors.h"
#include "app/core/inputs.h"

struct LmwbAtomicFile {
  char *path;       /* as given, for messages */
  char *target;     /* `path` with symlinks followed */
  char *dir, *base; /* of target */
  char *tmp_path;   /* the named temporary, once there is one */
  int fd;
  int slot;         /* in temps[], -1 when untracked */
  gboolean through; /* a device, fifo or inherited descriptor: written straight */
  gboolean replace; /* a regular file is there: keep its mode, owner and links */
  struct stat old;
  gboolean failed;
};

/* Named temporaries of saves in progress, for lmwb_atomic_file_remove_temps in a signal handler:
 * fixed storage, claimed and released with atomic operations only. state: 0 free, 1 being
 * filled, 2 holds a path. */
enum { TEMP_SLOTS = 32 };
static struct {
  gint state;
  char path[PATH_MAX];
} temps[TEMP_SLOTS];

static int temp_track(const char *p) {
  if (strlen(p) >= PATH_MAX) return -1;
  for (int i = 0; i < TEMP_SLOTS; i++) {
    if (g_atomic_int_compare_and_exchange(&temps[i].state, 0, 1)) {
      strcpy(temps[i].path, p);
      g_atomic_int_set(&temps[i].state, 2);
      return i;
    }
  }
  return -1;
}

static void temp_untrack(int slot) {
  if (slot >= 0) g_atomic_int_set(&temps[slot].state, 0);
}

void lmwb_atomic_file_remove_temps(void) {
  for (int i = 0; i < TEMP_SLOTS; i++)
    if (g_atomic_int_get(&temps[i].state) == 2) unlink(temps[i].path);
}

/* Errors a user can fix by choosing another path are input errors (exit 2); the rest are ours. */
static void set_errno_error(GError **error, int err, const char *what, const char *path) {
  int code = LMWB_ERROR_FAILED;
  switch (err) {
    case EACCES: case EPERM: case ENOENT: case ENOTDIR: case EROFS: case EISDIR:
    case ENAMETOOLONG: case ELOOP: case EEXIST: case ENXIO: case EBADF:
      code = LMWB_ERROR_INPUT;
      break;
    default:
      break;
  }
  g_set_error(error, LMWB_ERROR, code, "%s: cannot %s: %s", path, what, g_strerror(err));
}

static void free_file(LmwbAtomicFile *f) {
  g_free(f->path);
  g_free(f->target);
  g_free(f->dir);
  g_free(f->base);
  g_free(f->tmp_path);
  g_free(f);
}

static char *temp_name(const LmwbAtomicFile *f) {
  return g_strdup_printf("%s/.%s.tmp-%08x", f->dir, f->base, g_random_int());
}

/* /dev/stdout, /dev/stderr, /dev/fd/N, /proc/self/fd/N: the descriptor, else -1. */
static int inherited_fd(const char *path) {
  if (!strcmp(path, "/dev/stdout")) return 1;
  if (!strcmp(path, "/dev/stderr")) return 2;
  const char *num = g_str_has_prefix(path, "/dev/fd/")         ? path + 8
                    : g_str_has_prefix(path, "/proc/self/fd/") ? path + 14 : NULL;
  guint64 v;
  if (!num || !g_ascii_string_to_unsigned(num, 10, 0, INT_MAX, &v, NULL)) return -1;
  return (int)v;
}

/* Removes ".<base>.tmp-XXXXXXXX" files beside the target that no live writer holds: a writer
 * keeps an exclusive lock on its named temporary until it is renamed or removed. */
static void remove_stale(const LmwbAtomicFile *f) {
  DIR *d = opendir(f->dir);
  if (!d) return;
  char *prefix = g_strdup_printf(".%s.tmp-", f->base);
  size_t pl = strlen(prefix);
  struct dirent *e;
  while ((e = readdir(d))) {
    const char *n = e->d_name;
    if (strncmp(n, prefix, pl) != 0 || strlen(n + pl) != 8 || strspn(n + pl, "0123456789abcdef") != 8)
      continue;
    int fd = openat(dirfd(d), n, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) continue;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0)
      (void)unlinkat(dirfd(d), n, 0);
    close(fd);
  }
  closedir(d);
  g_free(prefix);
}

/* An unnamed file in the target's folder, or where the file system has none, a named one. */
static gboolean create_temp(LmwbAtomicFile *f, GError **error) {
#ifdef O_TMPFILE
  f->fd = open(f->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0666);
  if (f->fd >= 0) return TRUE;
#endif
  int last_errno = 0;
  /* O_EXCL with random names instead of mkstemp so the file gets the usual 0666 & ~umask. */
  for (int attempt = 0; attempt < 100 && f->fd < 0; attempt++) {
    char *tmp = temp_name(f);
    f->fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (f->fd >= 0) {
      (void)flock(f->fd, LOCK_EX);
      f->slot = temp_track(tmp);
      f->tmp_path = tmp;
      return TRUE;
    }
    last_errno = errno;
    g_free(tmp);
    if (last_errno != EEXIST) break;
  }
  set_errno_error(error, last_errno, "create a temporary file beside it", f->path);
  return FALSE;
}

/* Gives an unnamed temporary a (locked, tracked) name so that it can be renamed. */
static gboolean link_temp(LmwbAtomicFile *f, GError **error) {
  (void)flock(f->fd, LOCK_EX);
  char proc[64];
  g_snprintf(proc, sizeof proc, "/proc/self/fd/%d", f->fd);
  int last_errno = 0;
  for (int attempt = 0; attempt < 100; attempt++) {
    char *tmp = temp_name(f);
    int slot = temp_track(tmp);
    int rc = linkat(AT_FDCWD, proc, AT_FDCWD, tmp, AT_SYMLINK_FOLLOW);
    if (rc != 0 && errno != EEXIST) rc = linkat(f->fd, "", AT_FDCWD, tmp, AT_EMPTY_PATH);
    if (rc == 0) {
      f->tmp_path = tmp;
      f->slot = slot;
      return TRUE;
    }
    last_errno = errno;
    temp_untrack(slot);
    g_free(tmp);
    if (last_errno != EEXIST) break;
  }
  set_errno_error(error, last_errno, "give the new file a name beside it", f->path);
  return FALSE;
}

static void register_cleanup_at_exit(void) {
  static gsize once = 0;
  if (g_once_init_enter(&once)) {
    atexit(lmwb_atomic_file_remove_temps);
    g_once_init_leave(&once, 1);
  }
}

LmwbAtomicFile *lmwb_atomic_file_begin(const char *path, GError **error) {
  if (!path || !*path) {
    lmwb_input_error(error, "cannot save: empty file name");
    return NULL;
  }
  char *base = g_path_get_basename(path);
  gboolean bad_name = strcmp(base, "/") == 0 || strcmp(base, ".") == 0 || strcmp(base, "..") == 0 ||
                      g_str_has_suffix(path, "/");
  g_free(base);
  if (bad_name) {
    lmwb_input_error(error, "%s: cannot save: not a file name", path);
    return NULL;
  }
  if (!lmwb_input_guard_check_output(path, error)) return NULL;
  register_cleanup_at_exit();
  LmwbAtomicFile *f = g_new0(LmwbAtomicFile, 1);
  f->path = g_strdup(path);
  f->fd = -1;
  f->slot = -1;
  int inherited = inherited_fd(path);
  if (inherited >= 0) {
    f->through = TRUE;
    f->fd = fcntl(inherited, F_DUPFD_CLOEXEC, 3);
    if (f->fd < 0) goto fail_errno;
    return f;
  }
  f->target = lmwb_path_follow_links(path);
  if (!f->target) goto fail_errno;
  struct stat st;
  if (stat(f->target, &st) == 0) {
    if (S_ISDIR(st.st_mode) || S_ISBLK(st.st_mode)) {
      lmwb_input_error(error, "%s: is a %s, not a file to save to", path, S_ISDIR(st.st_mode) ? "folder" : "block device");
      free_file(f);
      return NULL;
    }
    if (!S_ISREG(st.st_mode)) { /* character device, fifo, socket */
      f->through = TRUE;
      f->fd = open(f->target, O_WRONLY | O_NOCTTY | O_CLOEXEC);
      if (f->fd < 0) goto fail_errno;
      return f;
    }
    f->replace = TRUE;
    f->old = st;
  }
  f->dir = g_path_get_dirname(f->target);
  f->base = g_path_get_basename(f->target);
  remove_stale(f);
  if (!create_temp(f, error)) {
    free_file(f);
    return NULL;
  }
  if (f->replace) { /* keep the owner (where allowed) and the mode of the file being replaced */
    if (f->old.st_uid != geteuid() || f->old.st_gid != getegid()) (void)!fchown(f->fd, f->old.st_uid, f->old.st_gid);
    (void)fchmod(f->fd, f->old.st_mode & 07777);
  }
  return f;
fail_errno:
  set_errno_error(error, errno, "open it for writing", path);
  free_file(f);
  return NULL;
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

void lmwb_atomic_file_abort(LmwbAtomicFile *f) {
  if (!f) return;
  if (f->fd >= 0) close(f->fd);
  if (f->tmp_path) unlink(f->tmp_path);
  temp_untrack(f->slot);
  free_file(f);
}

static gboolean fail_commit(LmwbAtomicFile *f, GError **error, int err, const char *what) {
  set_errno_error(error, err, what, f->path);
  lmwb_atomic_file_abort(f);
  return FALSE;
}

/* A file with several hard links: copy the finished, synced temporary into it, so that every
 * link sees the new content. Only this copy is not atomic. */
static gboolean commit_in_place(LmwbAtomicFile *f, GError **error) {
  int out = open(f->target, O_WRONLY | O_NOCTTY | O_CLOEXEC);
  if (out < 0) return fail_commit(f, error, errno, "open it for writing");
  struct stat st;
  if (fstat(out, &st) != 0 || st.st_dev != f->old.st_dev || st.st_ino != f->old.st_ino) {
    close(out);
    return fail_commit(f, error, EAGAIN, "replace it (it changed while saving)");
  }
  enum { BUF = 1 << 20 };
  char *buf = g_malloc(BUF);
  int err = 0;
  if (lseek(f->fd, 0, SEEK_SET) != 0 || ftruncate(out, 0) != 0) err = errno;
  while (!err) {
    ssize_t n = read(f->fd, buf, BUF);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n < 0) err = errno;
      break;
    }
    for (ssize_t done = 0; !err && done < n;) {
      ssize_t w = write(out, buf + done, (size_t)(n - done));
      if (w < 0 && errno != EINTR) err = errno;
      if (w > 0) done += w;
    }
  }
  g_free(buf);
  if (!err && fsync(out) != 0) err = errno;
  if (close(out) != 0 && !err) err = errno;
  if (err) return fail_commit(f, error, err, "write");
  lmwb_atomic_file_abort(f); /* drops the temporary */
  return TRUE;
}

gboolean lmwb_atomic_file_commit(LmwbAtomicFile *f, GError **error) {
  g_return_val_if_fail(f != NULL, FALSE);
  if (f->failed) {
    g_set_error(error, LMWB_ERROR, LMWB_ERROR_FAILED, "%s: not saved, an earlier write failed",
                f->path);
    lmwb_atomic_file_abort(f);
    return FALSE;
  }
  if (f->through) {
    int fd = f->fd;
    f->fd = -1;
    if (close(fd) != 0 && errno != EINTR) return fail_commit(f, error, errno, "close");
    free_file(f);
    return TRUE;
  }
  /* Data must be on disk before the rename makes it visible, or a crash could leave an empty
   * file under the final name. */
  if (fsync(f->fd) != 0) return fail_commit(f, error, errno, "flush to disk");
  if (f->replace && f->old.st_nlink > 1) return commit_in_place(f, error);
  if (!f->tmp_path && !link_temp(f, error)) {
    lmwb_atomic_file_abort(f);
    return FALSE;
  }
  int fd = f->fd;
  f->fd = -1;
  if (close(fd) != 0) return fail_commit(f, error, errno, "close");
  if (rename(f->tmp_path, f->target) != 0) return fail_commit(f, error, errno, "replace");
  temp_untrack(f->slot);
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
