#include "ui/desktop/lmwb-job.h"
#include "app/core/errors.h"

struct LmwbSharedModel {
  LmwbModel *model;
};

static void shared_clear(gpointer p) { lmwb_model_unref(((LmwbSharedModel *)p)->model); }

LmwbSharedModel *lmwb_shared_model_new(LmwbModel *model) {
  LmwbSharedModel *s = g_atomic_rc_box_new0(LmwbSharedModel);
  s->model = model;
  return s;
}
LmwbSharedModel *lmwb_shared_model_ref(LmwbSharedModel *s) { return g_atomic_rc_box_acquire(s); }
void lmwb_shared_model_unref(LmwbSharedModel *s) {
  if (s) g_atomic_rc_box_release_full(s, shared_clear);
}
LmwbModel *lmwb_shared_model_get(LmwbSharedModel *s) { return s ? s->model : NULL; }

typedef struct {
  char *series;
  double x, y;
} MetricPoint;

struct LmwbJob {
  LmwbReporter rep; /* first: the reporter callbacks find the job from it */
  gint refs;
  LmwbJobSpec spec;
  char *title;
  GObject *owner;
  GMutex lock;
  /* Pending updates for the main loop, guarded by lock. */
  double fraction;
  char *stage;
  GArray *points; /* MetricPoint */
  gboolean flush_pending;
  gboolean finished;
  gpointer result;
  GError *error;
};

static gint running_jobs;

int lmwb_job_running_count(void) { return g_atomic_int_get(&running_jobs); }

LmwbJob *lmwb_job_ref(LmwbJob *job) {
  g_atomic_int_inc(&job->refs);
  return job;
}

void lmwb_job_unref(LmwbJob *job) {
  if (!job || !g_atomic_int_dec_and_test(&job->refs)) return;
  for (guint i = 0; i < job->points->len; i++) g_free(g_array_index(job->points, MetricPoint, i).series);
  g_array_unref(job->points);
  g_free(job->stage);
  g_free(job->title);
  g_mutex_clear(&job->lock);
  g_free(job);
}

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
  for (guint i = 0; i < pts->len; i++) {
    MetricPoint *mp = &g_array_index(pts, MetricPoint, i);
    if (job->spec.metric && !job->finished) job->spec.metric(job->owner, mp->series, mp->x, mp->y, job->spec.data);
    g_free(mp->series);
  }
  g_array_unref(pts);
  if (job->spec.progress && !job->finished) job->spec.progress(job->spec.host, job, frac, stage);
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
  if (job->spec.done) job->spec.done(job->owner, job->result, job->error, job->spec.data);
  if (job->spec.finished) job->spec.finished(job->spec.host, job);
  if (job->spec.result_free && job->result) job->spec.result_free(job->result);
  job->result = NULL;
  g_clear_error(&job->error);
  if (job->spec.data_free && job->spec.data) job->spec.data_free(job->spec.data);
  job->spec.data = NULL;
  g_clear_object(&job->owner);
  g_atomic_int_dec_and_test(&running_jobs);
  lmwb_job_unref(job);
  return G_SOURCE_REMOVE;
}

static gpointer worker(gpointer p) {
  LmwbJob *job = p;
  GError *err = NULL;
  job->result = job->spec.run(job->spec.data, &job->rep, &err);
  if (!job->result && !err) {
    if (lmwb_reporter_cancelled(&job->rep, &err)) {
    } else {
      g_set_error(&err, LMWB_ERROR, LMWB_ERROR_FAILED, "%s failed", job->title);
    }
  }
  job->error = err;
  g_idle_add(job_done, job); /* takes the worker's reference */
  return NULL;
}

LmwbJob *lmwb_job_start(GObject *owner, const LmwbJobSpec *spec) {
  LmwbJob *job = g_new0(LmwbJob, 1);
  job->refs = 2; /* the caller's and the worker's */
  job->spec = *spec;
  job->title = g_strdup(spec->title ? spec->title : "job");
  job->spec.title = job->title;
  job->owner = owner ? g_object_ref(owner) : NULL;
  job->rep.progress = on_progress;
  job->rep.metric = on_metric;
  job->rep.log = on_log;
  job->points = g_array_new(FALSE, FALSE, sizeof(MetricPoint));
  g_mutex_init(&job->lock);
  g_atomic_int_inc(&running_jobs);
  GError *err = NULL;
  GThread *t = g_thread_try_new("lmwb-job", worker, job, &err);
  if (!t) {
    job->error = err;
    g_idle_add(job_done, job);
  } else {
    g_thread_unref(t);
  }
  return job;
}

void lmwb_job_cancel(LmwbJob *job) {
  if (job) lmwb_reporter_cancel(&job->rep);
}
gboolean lmwb_job_finished(LmwbJob *job) { return job->finished; }
const char *lmwb_job_title(LmwbJob *job) { return job->title; }
