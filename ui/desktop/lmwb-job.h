/* Jobs: every long piece of work of the desktop (loading a model, running the prompt, a neuron
 * search, a clamped generation, a sweep…). A job runs a function of (data, reporter) on a worker
 * thread; the reporter is the engine's own contract (app/jobs/reporter.h): progress, metric
 * points, log lines and the cancel flag. Progress and points reach the main loop coalesced (a
 * chatty job cannot flood it) and `done` runs on the main loop with the result or the error.
 *
 * A job belongs to an owner widget (kept alive until `done` has run) and runs under the job host
 * above it: the window, which shows the newest job in its status bar with its progress, cancels
 * them all with Cancel (Esc), and is not ready (lmwb_window_is_ready) while any runs. There is
 * one way to start one, for the window and every view alike:
 *
 *   LmwbJob *job = lmwb_job_new("Sweeping the clamp", run_sweep, in, in_free);
 *   lmwb_job_on_done(job, sweep_done, sweep_free);
 *   lmwb_job_on_metric(job, sweep_point);            optional: streamed points, in order
 *   lmwb_job_start(job, GTK_WIDGET(view));
 *
 * Once cancelled, a job's `done` always sees an LMWB_ERROR_CANCELLED error (a result that
 * arrived anyway is freed) and no more metric points are delivered. */
#pragma once
#include "app/jobs/reporter.h"
#include <gtk/gtk.h>

typedef struct LmwbJob LmwbJob;
/* Worker thread. Returns the result (NULL with *error set on failure). */
typedef gpointer (*LmwbJobFunc)(gpointer data, LmwbReporter *rep, GError **error);
/* Main loop. Owns neither result nor data: they are freed after done returns. job is the one
 * lmwb_job_start returned (a caller that kept it can tell a superseded job from the newest). */
typedef void (*LmwbJobDone)(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data);
typedef void (*LmwbJobMetric)(GtkWidget *owner, const char *series, double x, double y, gpointer data);

/* A job to start; data is freed with data_free after done (or with the job, if it never ran). */
LmwbJob *lmwb_job_new(const char *title, LmwbJobFunc run, gpointer data, GDestroyNotify data_free);
void lmwb_job_on_done(LmwbJob *job, LmwbJobDone done, GDestroyNotify result_free);
void lmwb_job_on_metric(LmwbJob *job, LmwbJobMetric metric);
/* Start it on a worker under the host above owner (the window; none: it runs unhosted). Takes
 * the caller's reference and returns the job, valid until its done has returned; take a
 * reference to keep it longer. */
LmwbJob *lmwb_job_start(LmwbJob *job, GtkWidget *owner);
void lmwb_job_cancel(LmwbJob *job);
LmwbJob *lmwb_job_ref(LmwbJob *job);
void lmwb_job_unref(LmwbJob *job);
const char *lmwb_job_title(LmwbJob *job);
/* TRUE when error says the job was cancelled (done callbacks then usually just return). */
gboolean lmwb_job_cancelled(const GError *error);
/* At quit, after the main loop: cancel every job and wait (at most LMWB_JOB_SHUTDOWN_WAIT_S) for
 * their workers to return, so that none runs while the process tears down its libraries. Their
 * done callbacks do not run. */
#define LMWB_JOB_SHUTDOWN_WAIT_S 10
void lmwb_job_shutdown(void);

/* Whoever shows jobs: the window. Told on the main loop when a job under it starts, moves and
 * ends (after its done); holds a reference on the host from start to finish. */
#define LMWB_TYPE_JOB_HOST (lmwb_job_host_get_type())
G_DECLARE_INTERFACE(LmwbJobHost, lmwb_job_host, LMWB, JOB_HOST, GtkWidget)

struct _LmwbJobHostInterface {
  GTypeInterface parent;
  void (*started)(LmwbJobHost *host, LmwbJob *job);
  void (*progress)(LmwbJobHost *host, LmwbJob *job, double fraction, const char *stage);
  void (*finished)(LmwbJobHost *host, LmwbJob *job);
};
