/* Atomic file saving: readers of `path` see either the old file or the complete new one.
 * How: the data goes to an unnamed file in the target's folder (O_TMPFILE; where the file system
 * lacks it, a ".<name>.tmp-XXXXXXXX" file), which is fsynced, linked under a temporary name and
 * renamed over the target; then the folder is fsynced. An interrupted write leaves nothing
 * behind; a named temporary left by a killed process is removed by the next save of the same
 * target (a live writer's is not: it holds a lock on it), and lmwb_atomic_file_remove_temps()
 * removes this process's from a signal handler. On any error `path` is left untouched.
 *
 * What is at `path`:
 * - nothing: a new file with mode 0666 & ~umask;
 * - a regular file: replaced, keeping its mode (and owner, where allowed); one with several hard
 *   links is rewritten in place once the new content is safely on disk, so every link sees it;
 * - a symlink: followed (the link stays, its target is saved);
 * - a character device, fifo, or /dev/stdout, /dev/stderr, /dev/fd/N, /proc/self/fd/N: written
 *   straight through (no temp file, no rename);
 * - a folder or block device: refused.
 * Before anything is written the input guard (inputs.h) is asked, so no file this process reads
 * is written over.
 * Errors: LMWB_ERROR_INPUT when the path itself is unusable (missing or unwritable folder,
 * permission, read-only file system, a folder at `path`, an input of this process),
 * LMWB_ERROR_FAILED for system failures (disk full, I/O error). Messages name the path. */
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

/* Unlinks the named temporary files of saves in progress in this process. Async-signal-safe:
 * for SIGINT/SIGTERM handlers, which then exit. */
void lmwb_atomic_file_remove_temps(void);
