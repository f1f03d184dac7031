/* The reporter a long job talks to: progress (fraction + stage), metric points for live plots,
 * log lines, and a cancel flag the job checks often (at least every ~100 ms of work).
 * Front ends supply the callbacks: the batch front end draws a progress bar and writes CSV;
 * the GUI forwards to the main loop. Every callback may be NULL; a NULL reporter is allowed
 * everywhere and means "no one is listening". Callbacks may run on a worker thread. */
#pragma once
#include <glib.h>
#include <stdbool.h>

typedef struct LmwbReporter LmwbReporter;
struct LmwbReporter {
  void (*progress)(LmwbReporter *r, double fraction, const char *stage);
  void (*metric)(LmwbReporter *r, const char *series, double x, double y);
  void (*log)(LmwbReporter *r, const char *message);
  gint cancel_requested; /* set with lmwb_reporter_cancel from any thread */
  void *user;
  LmwbReporter *parent; /* a part's whole (lmwb_reporter_part_init): its cancel counts too */
};

void lmwb_report_progress(LmwbReporter *r, double fraction, const char *stage);
void lmwb_report_metric(LmwbReporter *r, const char *series, double x, double y);
void lmwb_report_log(LmwbReporter *r, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
void lmwb_reporter_cancel(LmwbReporter *r);
/* TRUE when cancel was requested; sets a LMWB_ERROR_CANCELLED error when error is non-NULL. */
gboolean lmwb_reporter_cancelled(LmwbReporter *r, GError **error);

/* A reporter for one part of a job: the part's progress 0..1 is shown as lo..hi of the parent's,
 * metrics and logs go to the parent, and cancelling the parent cancels the part. The part lives
 * as long as the caller keeps it (usually on the stack around one call). */
typedef struct LmwbReporterPart {
  LmwbReporter r;
  double lo, hi;
} LmwbReporterPart;
LmwbReporter *lmwb_reporter_part_init(LmwbReporterPart *part, LmwbReporter *parent, double lo, double hi);
