#include "app/core/inputs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/core/errors.h"
#include "app/core/memory.h"

/* ---- the guard -------------------------------------------------------------------------- */

typedef struct {
  dev_t dev;
  ino_t ino;
  char *path;
  gboolean folder;
} Input;

static GMutex guard_lock;
static GArray *guard_inputs; /* Input; NULL while the guard is off */

void lmwb_input_guard_enable(void) {
  g_mutex_lock(&guard_lock);
  if (!guard_inputs) guard_inputs = g_array_new(FALSE, TRUE, sizeof(Input));
  g_mutex_unlock(&guard_lock);
}

gboolean lmwb_input_guard_enabled(void) {
  g_mutex_lock(&guard_lock);
  gboolean on = guard_inputs != NULL;
  g_mutex_unlock(&guard_lock);
  return on;
}

/* Caller holds guard_lock. */
static const Input *guard_find(dev_t dev, ino_t ino, gboolean folders_only) {
  for (guint i = 0; guard_inputs && i < guard_inputs->len; i++) {
    const Input *in = &g_array_index(guard_inputs, Input, i);
    if (in->dev == dev && in->ino == ino && (in->folder || !folders_only)) return in;
  }
  return NULL;
}

static void guard_add(const struct stat *st, const char *path, gboolean folder) {
  g_mutex_lock(&guard_lock);
  const Input *old = guard_inputs ? guard_find(st->st_dev, st->st_ino, FALSE) : NULL;
  if (guard_inputs && !old) {
    Input in = {st->st_dev, st->st_ino, g_strdup(path), folder};
    g_array_append_val(guard_inputs, in);
  } else if (old && folder && !old->folder) {
    ((Input *)old)->folder = TRUE;
  }
  g_mutex_unlock(&guard_lock);
}

void lmwb_input_guard_add_folder(const char *dir) {
  struct stat st;
  if (!lmwb_input_guard_enabled() || !dir || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return;
  guard_add(&st, dir, TRUE);
  /* Every file of the folder, so that a hard link or symlink to one elsewhere is caught too. */
  GDir *d = g_dir_open(dir, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name(d))) {
    char *p = g_build_filename(dir, name, NULL);
    struct stat fs;
    if (stat(p, &fs) == 0 && !S_ISDIR(fs.st_mode)) guard_add(&fs, p, FALSE);
    g_free(p);
  }
  if (d) g_dir_close(d);
}

void lmwb_input_guard_forget(const char *path) {
  struct stat st;
  if (!path || stat(path, &st) != 0) return;
  g_mutex_lock(&guard_lock);
  for (guint i = 0; guard_inputs && i < guard_inputs->len;) {
    Input *in = &g_array_index(guard_inputs, Input, i);
    if (in->dev == st.st_dev && in->ino == st.st_ino && !in->folder) {
      g_free(in->path);
      g_array_remove_index(guard_inputs, i);
    } else {
      i++;
    }
  }
  g_mutex_unlock(&guard_lock);
}

char *lmwb_path_follow_links(const char *path) {
  char *cur = g_strdup(path);
  for (int hop = 0; hop < 40; hop++) {
    struct stat st;
    if (lstat(cur, &st) != 0 || !S_ISLNK(st.st_mode)) return cur;
    char buf[PATH_MAX];
    ssize_t n = readlink(cur, buf, sizeof buf - 1);
    if (n < 0) return cur;
    buf[n] = 0;
    char *next;
    if (g_path_is_absolute(buf)) {
      next = g_strdup(buf);
    } else {
      char *d = g_path_get_dirname(cur);
      next = g_build_filename(d, buf, NULL);
      g_free(d);
    }
    g_free(cur);
    cur = next;
  }
  g_free(cur);
  errno = ELOOP;
  return NULL;
}

gboolean lmwb_input_guard_check_output(const char *path, GError **error) {
  if (!lmwb_input_guard_enabled() || !path) return TRUE;
  char *target = lmwb_path_follow_links(path);
  if (!target) return TRUE; /* a symlink loop: the writer reports it */
  char *dir = g_path_get_dirname(target);
  struct stat st, dst;
  gboolean have_file = stat(target, &st) == 0, have_dir = stat(dir, &dst) == 0;
  char *input = NULL;
  gboolean in_folder = FALSE;
  g_mutex_lock(&guard_lock);
  const Input *hit = have_file ? guard_find(st.st_dev, st.st_ino, FALSE) : NULL;
  if (!hit && have_dir) {
    hit = guard_find(dst.st_dev, dst.st_ino, TRUE);
    in_folder = hit != NULL;
  }
  if (hit) input = g_strdup(hit->path);
  g_mutex_unlock(&guard_lock);
  gboolean ok = input == NULL;
  if (in_folder)
    lmwb_input_error(error, "%s: refusing to write into %s, a folder this command reads (its files "
                     "would change); choose an output outside it", path, input);
  else if (!ok)
    lmwb_input_error(error, "%s: refusing to write over %s, which this command reads (the same "
                     "file); choose another output", path, input);
  g_free(input);
  g_free(dir);
  g_free(target);
  return ok;
}

/* ---- reading ---------------------------------------------------------------------------- */

static const char *kind_name(mode_t m) {
  if (S_ISDIR(m)) return "a folder";
  if (S_ISFIFO(m)) return "a fifo";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "a special file";
}

static void errno_error(GError **error, const char *path, const char *what, int err) {
  lmwb_input_error(error, "%s: cannot %s: %s", path, what, g_strerror(err));
}

/* Opens `path` for reading after checking what it is; the guard remembers it. -1 on error. */
static int open_checked(const char *path, LmwbReadFlags flags, struct stat *st, GError **error) {
  if (!path || !*path) {
    lmwb_input_error(error, "no file name given");
    return -1;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0 || fstat(fd, st) != 0) {
    errno_error(error, path, "open", errno);
    if (fd >= 0) close(fd);
    return -1;
  }
  if (S_ISFIFO(st->st_mode) && (flags & LMWB_READ_STREAM)) {
    /* Opened again, blocking: a fifo's reader waits for its writer. */
    close(fd);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 || fstat(fd, st) != 0) {
      errno_error(error, path, "open", errno);
      if (fd >= 0) close(fd);
      return -1;
    }
  } else {
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  }
  if (!S_ISREG(st->st_mode) && !(S_ISFIFO(st->st_mode) && (flags & LMWB_READ_STREAM))) {
    lmwb_input_error(error, "%s: is %s, not a regular file", path, kind_name(st->st_mode));
    close(fd);
    return -1;
  }
  guard_add(st, path, FALSE);
  return fd;
}

static void too_large(GError **error, const char *path, uint64_t size, uint64_t max) {
  char *m = g_format_size_full(max, G_FORMAT_SIZE_IEC_UNITS);
  if (size) {
    char *s = g_format_size_full(size, G_FORMAT_SIZE_IEC_UNITS);
    lmwb_input_error(error, "%s: is %s, over the %s limit for this file", path, s, m);
    g_free(s);
  } else {
    lmwb_input_error(error, "%s: holds more than the %s limit for this file", path, m);
  }
  g_free(m);
}

char *lmwb_file_read(const char *path, uint64_t max_bytes, LmwbReadFlags flags, size_t *len,
                     GError **error) {
  struct stat st;
  int fd = open_checked(path, flags, &st, error);
  if (fd < 0) return NULL;
  uint64_t max = MIN(max_bytes, (uint64_t)G_MAXSIZE / 2);
  if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max) {
    too_large(error, path, (uint64_t)st.st_size, max);
    close(fd);
    return NULL;
  }
  /* One byte more than the size so that growth (or the end of a stream) is seen. */
  size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : (size_t)MIN(max + 1, 65536u);
  char *buf = lmwb_memory_check(cap, path, error) ? g_try_malloc(cap) : NULL;
  size_t n = 0;
  while (buf) {
    if (n == cap) {
      if (n > max) {
        too_large(error, path, 0, max);
        g_clear_pointer(&buf, g_free);
        break;
      }
      size_t next = (size_t)MIN((uint64_t)cap * 2, max + 1);
      char *grown = lmwb_memory_check(next, path, error) ? g_try_realloc(buf, next) : NULL;
      if (!grown) {
        g_clear_pointer(&buf, g_free);
        break;
      }
      buf = grown;
      cap = next;
    }
    ssize_t r = read(fd, buf + n, cap - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      errno_error(error, path, "read", errno);
      g_clear_pointer(&buf, g_free);
      break;
    }
    if (r == 0) break;
    n += (size_t)r;
    if (n > max) {
      too_large(error, path, 0, max);
      g_clear_pointer(&buf, g_free);
    }
  }
  close(fd);
  if (!buf) {
    if (error && !*error) lmwb_input_error(error, "%s: out of memory reading it", path);
    return NULL;
  }
  if (n == cap) {
    char *grown = g_try_realloc(buf, cap + 1);
    if (!grown) {
      g_free(buf);
      lmwb_input_error(error, "%s: out of memory reading it", path);
      return NULL;
    }
    buf = grown;
  }
  buf[n] = 0;
  if (len) *len = n;
  return buf;
}

GMappedFile *lmwb_file_map(const char *path, uint64_t max_bytes, GError **error) {
  struct stat st;
  int fd = open_checked(path, LMWB_READ_REGULAR, &st, error);
  if (fd < 0) return NULL;
  if ((uint64_t)st.st_size > max_bytes) {
    too_large(error, path, (uint64_t)st.st_size, max_bytes);
    close(fd);
    return NULL;
  }
  GError *merr = NULL;
  GMappedFile *map = g_mapped_file_new_from_fd(fd, FALSE, &merr);
  close(fd);
  if (!map) {
    lmwb_input_error(error, "%s: cannot map: %s", path, merr->message);
    g_error_free(merr);
  }
  return map;
}
