/* The reporter's parts (app/jobs/reporter.h): a part's progress lands in its slice of the
 * parent's, its metrics and logs reach the parent, and cancelling the parent cancels the part. */
#include "app/core/errors.h"
#include "app/jobs/reporter.h"
#include <string.h>

typedef struct {
  LmwbReporter r;
  double last;
  int metrics, logs;
  char stage[32];
} Rec;

static void on_progress(LmwbReporter *r, double f, const char *stage) {
  Rec *x = (Rec *)r;
  x->last = f;
  g_strlcpy(x->stage, stage ? stage : "", sizeof x->stage);
}
static void on_metric(LmwbReporter *r, const char *s, double a, double b) { ((Rec *)r)->metrics++; }
static void on_log(LmwbReporter *r, const char *m) { ((Rec *)r)->logs++; }

static void test_part(void) {
  Rec whole = {.r = {.progress = on_progress, .metric = on_metric, .log = on_log}};
  LmwbReporterPart part;
  LmwbReporter *p = lmwb_reporter_part_init(&part, &whole.r, 0.25, 0.75);
  lmwb_report_progress(p, 0.0, "a");
  g_assert_cmpfloat_with_epsilon(whole.last, 0.25, 1e-12);
  lmwb_report_progress(p, 0.5, "b");
  g_assert_cmpfloat_with_epsilon(whole.last, 0.5, 1e-12);
  g_assert_cmpstr(whole.stage, ==, "b");
  lmwb_report_progress(p, 2.0, "c"); /* clamped to the part's end */
  g_assert_cmpfloat_with_epsilon(whole.last, 0.75, 1e-12);
  lmwb_report_metric(p, "loss", 1, 2);
  lmwb_report_log(p, "line %d", 1);
  g_assert_cmpint(whole.metrics, ==, 1);
  g_assert_cmpint(whole.logs, ==, 1);
  /* a part of a part */
  LmwbReporterPart inner;
  LmwbReporter *q = lmwb_reporter_part_init(&inner, p, 0.5, 1.0);
  lmwb_report_progress(q, 0.0, "d");
  g_assert_cmpfloat_with_epsilon(whole.last, 0.5, 1e-12);
  GError *err = NULL;
  g_assert_false(lmwb_reporter_cancelled(q, &err));
  g_assert_no_error(err);
  lmwb_reporter_cancel(&whole.r);
  g_assert_true(lmwb_reporter_cancelled(q, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_CANCELLED);
  g_clear_error(&err);
  /* without a parent a part is silent and never cancelled from outside */
  LmwbReporter *lone = lmwb_reporter_part_init(&part, NULL, 0, 1);
  lmwb_report_progress(lone, 0.5, "e");
  g_assert_false(lmwb_reporter_cancelled(lone, NULL));
  lmwb_reporter_cancel(lone);
  g_assert_true(lmwb_reporter_cancelled(lone, NULL));
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/reporter/part", test_part);
  return g_test_run();
}
