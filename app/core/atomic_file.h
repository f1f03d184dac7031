/* Atomic file saving: readers of `path` see either the old file or the complete new one.
 * How: write a temp file in the same directory (".<name>.tmp-XXXXXX", created with O_EXCL and
 * mode 0666 & ~umask), fsync it, rename it over `path`, fsync the directory. On any error the
 * temp file is removed and `path` is left untouched. A symlink at `path` is replaced, not
 * followed. Errors: LMWB_ERROR_INPUT when the path itself is unusable (missing or unwritable
 * directory, permission, read-only file system, a directory at `path`), LMWB_ERROR_FAILED for
 * system failures (disk full, I/O error). Messages name the path. */
#pragma once
#include <glib.h>
#include <stddef.h>

gboolean lmwb_file_write_atomic(const char *path, const void *data, size_t len, GError **error);

/* Streaming variant for writers that produce data piece by piece. */
typedef struct LmwbAtomicFile LmwbAtomicFile;

LmwbAtomicFile *lmwb_atomic_file_begin(const char *path, GError **error);
/* Appends len bytes. After a failed write the file is poisoned: commit refuses; call abort. */
gboolean lmwb_atomic_file_write(LmwbAtomicFile *f, const void *data, size_t len, GError **error);
/* Publishes the file. Always frees `f`, whether it succeeds or not. */
gboolean lmwb_atomic_file_commit(LmwbAtomicFile *f, GError **error);
/* Drops the temp file and frees `f`; `path` is untouched. NULL is accepted. */
void lmwb_atomic_file_abort(LmwbAtomicFile *f);
/* The final path (for messages). */
const char *lmwb_atomic_file_path(const LmwbAtomicFile *f);
