#include "app/jobs/reporter.h"
#include "app/core/errors.h"
#include <stdarg.h>

void lmwb_report_progress(LmwbReporter *r, double fraction, const char *stage) {
  if (r && r->progress) r->progress(r, CLAMP(fraction, 0.0, 1.0), stage);
}

void lmwb_report_metric(LmwbReporter *r, const char *series, double x, double y) {
  if (r && r->metric) r->metric(r, series, x, y);
}

void lmwb_report_log(LmwbReporter *r, const char *fmt, ...) {
  if (!r || !r->log) return;
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  r->log(r, msg);
  g_free(msg);
}

void lmwb_reporter_cancel(LmwbReporter *r) {
  if (r) g_atomic_int_set(&r->cancel_requested, 1);
}

gboolean lmwb_reporter_cancelled(LmwbReporter *r, GError **error) {
  for (; r; r = r->parent) {
    if (g_atomic_int_get(&r->cancel_requested)) {
      g_set_error(error, LMWB_ERROR, LMWB_ERROR_CANCELLED, "cancelled");
      return TRUE;
    }
  }
  return FALSE;
}

static void part_progress(LmwbReporter *r, double fraction, const char *stage) {
  LmwbReporterPart *p = (LmwbReporterPart *)r;
  lmwb_report_progress(r->parent, p->lo + (p->hi - p->lo) * fraction, stage);
}

static void part_metric(LmwbReporter *r, const char *series, double x, double y) {
  lmwb_report_metric(r->parent, series, x, y);
}

static void part_log(LmwbReporter *r, const char *message) { lmwb_report_log(r->parent, "%s", message); }

LmwbReporter *lmwb_reporter_part_init(LmwbReporterPart *part, LmwbReporter *parent, double lo, double hi) {
  *part = (LmwbReporterPart){.r = {.progress = part_progress, .metric = part_metric, .log = part_log, .parent = parent},
                             .lo = lo, .hi = hi};
  return &part->r;
}
