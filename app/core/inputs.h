/* Input files a user hands us, which may be hostile: read with a size limit checked before
 * reading, and remembered so that no output of this process is written over them.
 *
 * Reading: the file is opened non-blocking (a fifo named config.json cannot hang the loader),
 * fstat'ed, and refused unless it is a regular file no larger than `max_bytes`. With
 * LMWB_READ_STREAM a fifo or pipe (e.g. /dev/stdin) is also read, up to `max_bytes`; devices
 * (/dev/zero) and folders never are. Errors are LMWB_ERROR_INPUT naming the path.
 *
 * Guard: once a front end enables it, every file read or mapped through these functions and every
 * folder given to lmwb_input_guard_add_folder (a model folder) is remembered (device and inode);
 * lmwb_input_guard_check_output then refuses an output that is one of those files, under any
 * name (a symlink or hard link included), or that lies directly inside one of those folders. The
 * atomic writer (atomic_file.h) asks it before writing any file. Without lmwb_input_guard_enable
 * (libraries, unit tests) nothing is remembered or refused. */
#pragma once
#include <glib.h>
#include <stddef.h>
#include <stdint.h>

/* Text a command encodes or scores (--file), and a Brown or training corpus file. */
#define LMWB_TEXT_MAX_BYTES ((uint64_t)256 << 20)
#define LMWB_CORPUS_MAX_BYTES ((uint64_t)1 << 30)

typedef enum {
  LMWB_READ_REGULAR = 0,
  LMWB_READ_STREAM = 1 << 0, /* also a fifo or pipe, read until end of file */
} LmwbReadFlags;

/* The whole file, NUL-terminated (the NUL is not counted in *len; len may be NULL). g_free it. */
char *lmwb_file_read(const char *path, uint64_t max_bytes, LmwbReadFlags flags, size_t *len,
                     GError **error);
/* A read-only mapping of a regular file of at most max_bytes (empty files map to length 0). */
GMappedFile *lmwb_file_map(const char *path, uint64_t max_bytes, GError **error);

/* Turns the guard on for the rest of the process (lmwb-batch does, first thing). */
void lmwb_input_guard_enable(void);
gboolean lmwb_input_guard_enabled(void);
/* Remember a folder that is read as a whole (a model folder): no output may be placed in it. */
void lmwb_input_guard_add_folder(const char *dir);
/* Forget a file that is read only to be replaced by this process (a training checkpoint). */
void lmwb_input_guard_forget(const char *path);
/* FALSE (input error naming the output and the input) when writing `path` would write over a
 * file this process reads or into a folder it reads. Symlinks at `path` are followed. */
gboolean lmwb_input_guard_check_output(const char *path, GError **error);

/* `path` with symlinks in its last component followed (relative targets resolved against the
 * link's folder), up to 40 links; a missing final target is fine. NULL with errno ELOOP when
 * there are more. g_free it. */
char *lmwb_path_follow_links(const char *path);
