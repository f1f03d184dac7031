/* Background jobs for the desktop: a function of (data, reporter) runs on a worker thread; its
 * progress, metric points and log lines are forwarded to the main loop (coalesced, so a chatty
 * job cannot flood it) and `done` runs on the main loop with the result or the error.
 * Cancel sets the reporter's cancel flag; the job function checks it. `owner` (a GObject) is kept
 * alive until `done` has run. Also: the shared, refcounted model every view and job reads. */
#pragma once
#include "app/engine/model.h"
#include "app/jobs/reporter.h"
#include <gtk/gtk.h>

/* One copy of the weights serves every view and thread (read-only once loaded). */
typedef struct LmwbSharedModel LmwbSharedModel;
LmwbSharedModel *lmwb_shared_model_new(LmwbModel *model); /* takes ownership */
LmwbSharedModel *lmwb_shared_model_ref(LmwbSharedModel *s);
void lmwb_shared_model_unref(LmwbSharedModel *s);
LmwbModel *lmwb_shared_model_get(LmwbSharedModel *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(LmwbSharedModel, lmwb_shared_model_unref)

typedef struct LmwbJob LmwbJob;
/* Runs on the worker. Returns the result (NULL with *error set on failure). */
typedef gpointer (*LmwbJobFunc)(gpointer data, LmwbReporter *rep, GError **error);
/* Main loop. Owns neither: result is freed with result_free after done returns. */
typedef void (*LmwbJobDone)(GObject *owner, gpointer result, const GError *error, gpointer data);
typedef void (*LmwbJobProgress)(gpointer host, LmwbJob *job, double fraction, const char *stage);
typedef void (*LmwbJobFinished)(gpointer host, LmwbJob *job);
typedef void (*LmwbJobMetric)(GObject *owner, const char *series, double x, double y, gpointer data);

typedef struct LmwbJobSpec {
  const char *title;
  LmwbJobFunc run;
  gpointer data;
  GDestroyNotify data_free;   /* after done */
  GDestroyNotify result_free;
  LmwbJobDone done;
  LmwbJobMetric metric;       /* optional: streamed points, in order */
  /* Optional, for whoever shows the job (the window's status bar): progress as it moves and a
   * notice after done has run. host is not referenced: it must outlive the job or cancel it. */
  LmwbJobProgress progress;
  LmwbJobFinished finished;
  gpointer host;
} LmwbJobSpec;

LmwbJob *lmwb_job_start(GObject *owner, const LmwbJobSpec *spec);
LmwbJob *lmwb_job_ref(LmwbJob *job);
void lmwb_job_unref(LmwbJob *job);
void lmwb_job_cancel(LmwbJob *job);
gboolean lmwb_job_finished(LmwbJob *job);
const char *lmwb_job_title(LmwbJob *job);
/* Jobs started and not yet done, over the whole process (for the script's `idle`). */
int lmwb_job_running_count(void);
