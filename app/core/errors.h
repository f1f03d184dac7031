/* Errors every module reports through GError, and the exit statuses the front ends map them to.
 * LMWB_ERROR_INPUT: the user gave something wrong (bad file, bad argument, too big) -> exit 2.
 * LMWB_ERROR_FAILED: our own failure or the system's -> exit 1.
 * LMWB_ERROR_CANCELLED: the job's reporter asked to stop. */
#pragma once
#include <glib.h>

#define LMWB_ERROR (lmwb_error_quark())
GQuark lmwb_error_quark(void);

typedef enum {
  LMWB_ERROR_INPUT = 1,
  LMWB_ERROR_FAILED = 2,
  LMWB_ERROR_CANCELLED = 3,
} LmwbErrorCode;

/* Shorthand for the common case: a bad-input error with a printf message. */
#define lmwb_input_error(err, ...) g_set_error((err), LMWB_ERROR, LMWB_ERROR_INPUT, __VA_ARGS__)

/* Exit status for an error: 2 for input errors, 1 otherwise. */
int lmwb_error_exit_status(const GError *err);
