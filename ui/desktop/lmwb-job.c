#include "ui/desktop/lmwb-job.h"
#include "app/core/errors.h"

G_DEFINE_INTERFACE(LmwbJobHost, lmwb_job_host, GTK_TYPE_WIDGET)

static void lmwb_job_host_default_init(LmwbJobHostInterface *iface) {}

typedef struct {
  char *series;
  double x, y;
} MetricPoint;

struct LmwbJob {
  LmwbReporter rep; /* first: the reporter callbacks find the job from it */
  gint refs;
  char *title;
  LmwbJobFunc run;
  gpointer data;
  GDestroyNotify data_free;
  LmwbJobDone done;
  GDestroyNotify result_free;
  LmwbJobMetric metric;
  GtkWidget *owner;   /* referenced from start until done has run */
  LmwbJobHost *host;  /* likewise; NULL: unhosted */
  GMutex lock;
  /* Pending updates for the main loop, guarded by lock. */
  double fraction;
  char *stage;
  GArray *points; /* MetricPoint */
  gboolean flush_pending;
  gboolean finished;  /* main loop: done has run */
  gpointer result;
  GError *error;
};

/* Jobs whose worker is still running, for lmwb_job_shutdown. */
static GMutex live_lock;
static GCond live_cond;
static GPtrArray *live_jobs;

static void worker_ended(LmwbJob *job) {
  g_mutex_lock(&live_lock);
  g_ptr_array_remove_fast(live_jobs, job);
  g_cond_broadcast(&live_cond);
  g_mutex_unlock(&live_lock);
}

static gboolean cancel_requested(LmwbJob *job) { return lmwb_reporter_cancelled(&job->rep, NULL); }

LmwbJob *lmwb_job_ref(LmwbJob *job) {
  g_atomic_int_inc(&job->refs);
  return job;
}

void lmwb_job_unref(LmwbJob *job) {
  if (!job || !g_atomic_int_dec_and_test(&job->refs)) return;
  for (guint i = 0; i < job->points->len; i++) g_free(g_array_index(job->points, MetricPoint, i).series);
  g_array_unref(job->points);
  if (job->data_free && job->data) job->data_free(job->data); /* a job that never ran */
  g_free(job->stage);
  g_free(job->title);
  g_mutex_clear(&job->lock);
  g_free(job);
}

LmwbJob *lmwb_job_new(const char *title, LmwbJobFunc run, gpointer data, GDestroyNotify data_free) {
  LmwbJob *job = g_new0(LmwbJob, 1);
  job->refs = 1;
  job->title = g_strdup(title ? title : "job");
  job->run = run;
  job->data = data;
  job->data_free = data_free;
  job->points = g_array_new(FALSE, FALSE, sizeof(MetricPoint));
  g_mutex_init(&job->lock);
  return job;
}

void lmwb_job_on_done(LmwbJob *job, LmwbJobDone done, GDestroyNotify result_free) {
  job->done = done;
  job->result_free = result_free;
}

void lmwb_job_on_metric(LmwbJob *job, LmwbJobMetric metric) { job->metric = metric; }

/* Main loop: deliver what the worker queued since the last flush. */
static gboolean flush_updates(gpointer p) {
  LmwbJob *job = p;
  g_mutex_lock(&job->lock);
  job->flush_pending = FALSE;
  GArray *pts = job->points;
  job->points = g_array_new(FALSE, FALSE, sizeof(MetricPoint));
  double frac = job->fraction;
  char *stage = g_strdup(job->stage);
  g_mutex_unlock(&job->lock);
  gboolean live = !job->finished && !cancel_requested(job);
  for (guint i = 0; i < pts->len; i++) {
    MetricPoint *mp = &g_array_index(pts, MetricPoint, i);
    if (job->metric && live) job->metric(job->owner, mp->series, mp->x, mp->y, job->data);
    g_free(mp->series);
  }
  g_array_unref(pts);
  if (job->host && live) LMWB_JOB_HOST_GET_IFACE(job->host)->progress(job->host, job, frac, stage);
  g_free(stage);
  return G_SOURCE_REMOVE;
}

static void schedule_flush_locked(LmwbJob *job) {
  if (job->flush_pending) return;
  job->flush_pending = TRUE;
  /* At most ~30 deliveries a second: the worker never floods the main loop. */
  g_timeout_add_full(G_PRIORITY_DEFAULT, 33, flush_updates, lmwb_job_ref(job), (GDestroyNotify)lmwb_job_unref);
}

static void on_progress(LmwbReporter *r, double fraction, const char *stage) {
  LmwbJob *job = (LmwbJob *)r;
  g_mutex_lock(&job->lock);
  job->fraction = fraction;
  if (stage && g_strcmp0(stage, job->stage)) {
    g_free(job->stage);
    job->stage = g_strdup(stage);
  }
  schedule_flush_locked(job);
  g_mutex_unlock(&job->lock);
}

static void on_metric(LmwbReporter *r, const char *series, double x, double y) {
  LmwbJob *job = (LmwbJob *)r;
  MetricPoint mp = {g_strdup(series ? series : ""), x, y};
  g_mutex_lock(&job->lock);
  g_array_append_val(job->points, mp);
  schedule_flush_locked(job);
  g_mutex_unlock(&job->lock);
}

static void on_log(LmwbReporter *r, const char *message) { g_debug("job: %s", message); }

static gboolean job_done(gpointer p) {
  LmwbJob *job = p;
  flush_updates(job); /* the last points arrive before done */
  job->finished = TRUE;
  if (cancel_requested(job) && !g_error_matches(job->error, LMWB_ERROR, LMWB_ERROR_CANCELLED)) {
    if (job->result_free && job->result) job->result_free(job->result);
    job->result = NULL;
    g_clear_error(&job->error);
    lmwb_reporter_cancelled(&job->rep, &job->error);
  }
  if (job->done) job->done(job, job->owner, job->result, job->error, job->data);
  if (job->result_free && job->result) job->result_free(job->result);
  job->result = NULL;
  g_clear_error(&job->error);
  if (job->data_free && job->data) job->data_free(job->data);
  job->data = NULL;
  if (job->host) LMWB_JOB_HOST_GET_IFACE(job->host)->finished(job->host, job);
  g_clear_object(&job->host);
  g_clear_object(&job->owner);
  lmwb_job_unref(job);
  return G_SOURCE_REMOVE;
}

static gpointer worker(gpointer p) {
  LmwbJob *job = p;
  GError *err = NULL;
  job->result = job->run(job->data, &job->rep, &err);
  if (!job->result && !err && !lmwb_reporter_cancelled(&job->rep, &err))
    g_set_error(&err, LMWB_ERROR, LMWB_ERROR_FAILED, "%s failed", job->title);
  job->error = err;
  worker_ended(job);
  g_idle_add(job_done, job); /* takes the worker's reference */
  return NULL;
}

LmwbJob *lmwb_job_start(LmwbJob *job, GtkWidget *owner) {
  /* The caller's reference becomes the worker's, released after done. */
  job->owner = owner ? g_object_ref(owner) : NULL;
  GtkWidget *host = owner ? gtk_widget_get_ancestor(owner, LMWB_TYPE_JOB_HOST) : NULL;
  job->host = host ? g_object_ref(LMWB_JOB_HOST(host)) : NULL;
  job->rep.progress = on_progress;
  job->rep.metric = on_metric;
  job->rep.log = on_log;
  if (job->host) LMWB_JOB_HOST_GET_IFACE(job->host)->started(job->host, job);
  g_mutex_lock(&live_lock);
  if (!live_jobs) live_jobs = g_ptr_array_new();
  g_ptr_array_add(live_jobs, job);
  g_mutex_unlock(&live_lock);
  GError *err = NULL;
  GThread *t = g_thread_try_new("lmwb-job", worker, job, &err);
  if (!t) {
    job->error = err;
    worker_ended(job);
    g_idle_add(job_done, job);
  } else {
    g_thread_unref(t);
  }
  return job;
}

void lmwb_job_cancel(LmwbJob *job) {
  if (job) lmwb_reporter_cancel(&job->rep);
}

const char *lmwb_job_title(LmwbJob *job) { return job->title; }

gboolean lmwb_job_cancelled(const GError *error) { return g_error_matches(error, LMWB_ERROR, LMWB_ERROR_CANCELLED); }

void lmwb_job_shutdown(void) {
  gint64 until = g_get_monotonic_time() + LMWB_JOB_SHUTDOWN_WAIT_S * G_TIME_SPAN_SECOND;
  g_mutex_lock(&live_lock);
  for (guint i = 0; live_jobs && i < live_jobs->len; i++) lmwb_job_cancel(g_ptr_array_index(live_jobs, i));
  while (live_jobs && live_jobs->len > 0)
    if (!g_cond_wait_until(&live_cond, &live_lock, until)) {
      g_warning("%u job(s) did not stop within %d s of the quit", live_jobs->len, LMWB_JOB_SHUTDOWN_WAIT_S);
      break;
    }
  g_mutex_unlock(&live_lock);
}
