/* K-FAC factor collection over windows of a text, with checkpoints for resume (kfac.h). */
#include "editors/kfac.h"
#include "app/core/errors.h"
#include "app/core/rng.h"
#include "app/engine/moments.h"
#include "app/formats/safetensors.h"
#include <math.h>
#include <string.h>

void lmwb_kfac_collect_options_init(LmwbKfacCollectOptions *o) {
  memset(o, 0, sizeof *o);
  o->matrices = (1u << LMWB_KFAC_UP) | (1u << LMWB_KFAC_DOWN);
  o->labels = LMWB_KFAC_LABELS_SAMPLE;
  o->seed = 1;
}

/* One factor being collected. A gate shares its layer's up A (the same input). */
typedef struct {
  LmwbKfacInfo info;
  LmwbKfacMatrix matrix;
  LmwbMoments *A, *G;
  bool shared_A;
  double *base_A, *base_G; /* sums from a checkpoint (NULL: none) */
} Target;

typedef struct {
  Target *t;
  int n;
  int64_t windows_done;
} Run;

static void run_clear(Run *r) {
  for (int i = 0; i < r->n; i++) {
    if (!r->t[i].shared_A) lmwb_moments_free(r->t[i].A);
    lmwb_moments_free(r->t[i].G);
    g_free(r->t[i].base_A);
    g_free(r->t[i].base_G);
  }
  g_free(r->t);
}

static char *tensor_name(const Target *t, const char *which) {
  return g_strdup_printf("blocks.%d.mlp.%s.%s", t->info.in.layer, lmwb_kfac_matrix_name(t->matrix), which);
}

/* The options a checkpoint must agree with, as one string. */
static char *run_key(const LmwbKfacCollectOptions *o, int context, const char *fingerprint) {
  GString *s = g_string_new(NULL);
  g_string_append_printf(s, "%s;%lld;%d;%s;%llu;%u;", fingerprint, (long long)o->tokens, context,
                         lmwb_kfac_labels_name(o->labels), (unsigned long long)o->seed, o->matrices);
  for (int i = 0; i < o->n_layers; i++) g_string_append_printf(s, "%d,", o->layers[i]);
  return g_string_free(s, FALSE);
}

/* The sums so far (checkpoint base + this run) of a factor. */
static double *sums_of(const LmwbMoments *m, const double *base) {
  int d = lmwb_moments_dim(m);
  double *s = g_new(double, (size_t)d * d);
  lmwb_moments_sum(m, s);
  if (base)
    for (size_t i = 0; i < (size_t)d * d; i++) s[i] += base[i];
  return s;
}

static gboolean write_checkpoint(const Run *r, const char *path, const char *key, GError **error) {
  LmwbSafetensorsWriter *w = lmwb_safetensors_writer_new();
  GPtrArray *keep = g_ptr_array_new_with_free_func(g_free);
  for (int i = 0; i < r->n; i++) {
    const Target *t = &r->t[i];
    for (int k = 0; k < 2; k++) {
      const LmwbMoments *m = k ? t->G : t->A;
      int d = lmwb_moments_dim(m);
      double *s = sums_of(m, k ? t->base_G : t->base_A);
      char *nm = tensor_name(t, k ? "G" : "A");
      g_ptr_array_add(keep, s);
      g_ptr_array_add(keep, nm);
      int64_t shape[2] = {d, d};
      lmwb_safetensors_writer_add_raw(w, nm, LMWB_DTYPE_F64, shape, 2, s, (uint64_t)d * d * sizeof(double));
    }
  }
  g_autofree char *done = g_strdup_printf("%lld", (long long)r->windows_done);
  lmwb_safetensors_writer_set_metadata(w, "windows_done", done);
  lmwb_safetensors_writer_set_metadata(w, "run", key);
  gboolean ok = lmwb_safetensors_writer_save(w, path, error);
  lmwb_safetensors_writer_free(w);
  g_ptr_array_free(keep, TRUE);
  return ok;
}

static gboolean read_checkpoint(Run *r, const char *path, const char *key, int64_t n_windows, GError **error) {
  LmwbSafetensors *st = lmwb_safetensors_open(path, error);
  if (!st) return FALSE;
  gboolean ok = FALSE;
  const char *run = lmwb_safetensors_metadata(st, "run"), *done = lmwb_safetensors_metadata(st, "windows_done");
  gint64 wd = done ? g_ascii_strtoll(done, NULL, 10) : -1;
  if (!run || strcmp(run, key)) {
    lmwb_input_error(error, "%s: the checkpoint is of another run (model, tokens, context, labels, seed, layers "
                            "or matrices differ); remove it or give the same options", path);
    goto out;
  }
  if (wd < 0 || wd > n_windows) {
    lmwb_input_error(error, "%s: windows_done %s is not within 0..%lld", path, done ? done : "(missing)",
                     (long long)n_windows);
    goto out;
  }
  for (int i = 0; i < r->n; i++) {
    Target *t = &r->t[i];
    for (int k = 0; k < 2; k++) {
      g_autofree char *nm = tensor_name(t, k ? "G" : "A");
      int d = k ? t->info.d_out : t->info.d_in;
      const LmwbTensorView *v = lmwb_safetensors_find(st, nm);
      if (!v || v->dtype != LMWB_DTYPE_F64 || v->ndim != 2 || v->shape[0] != d || v->shape[1] != d) {
        lmwb_input_error(error, "%s: tensor %s is missing or not F64 [%d, %d]", path, nm, d, d);
        goto out;
      }
      double *s = g_new(double, (size_t)d * d);
      memcpy(s, v->data, (size_t)d * d * sizeof(double));
      if (k) t->base_G = s;
      else t->base_A = s;
    }
  }
  r->windows_done = wd;
  ok = TRUE;
out:
  lmwb_safetensors_close(st);
  return ok;
}

/* Draws targets [B*T] from the softmax of logits [B*T, V]; the last position of a window: -1. */
static void sample_labels(const float *logits, int B, int T, int V, guint64 seed, int64_t w0, int32_t *targets) {
#pragma omp parallel for schedule(static)
  for (int b = 0; b < B; b++) {
    guint64 st = seed ^ (0xD1B54A32D192ED03ull * (guint64)(w0 + b + 1));
    lmwb_splitmix64(&st);
    for (int t = 0; t < T; t++) {
      if (t == T - 1) {
        targets[b * T + t] = -1;
        continue;
      }
      const float *z = logits + ((size_t)b * T + t) * V;
      float mx = z[0];
      for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
      double sum = 0;
      for (int v = 0; v < V; v++) sum += exp((double)z[v] - mx);
      double u = lmwb_rng_uniform(&st) * sum, c = 0;
      int pick = V - 1;
      for (int v = 0; v < V; v++) {
        c += exp((double)z[v] - mx);
        if (c >= u) {
          pick = v;
          break;
        }
      }
      targets[b * T + t] = pick;
    }
  }
}

static gboolean setup(Run *r, LmwbRunner *runner, const LmwbModel *m, const LmwbKfacCollectOptions *o,
                      GError **error) {
  r->t = g_new0(Target, (size_t)o->n_layers * LMWB_KFAC_N_MATRICES);
  for (int li = 0; li < o->n_layers; li++) {
    Target *up = NULL;
    for (int k = 0; k < LMWB_KFAC_N_MATRICES; k++) {
      if (!(o->matrices & (1u << k))) continue;
      Target *t = &r->t[r->n];
      if (!lmwb_kfac_info(&m->cfg, o->layers[li], (LmwbKfacMatrix)k, &t->info, error)) return FALSE;
      t->matrix = (LmwbKfacMatrix)k;
      r->n++;
      if (k == LMWB_KFAC_GATE && up) {
        t->A = up->A;
        t->shared_A = true;
      } else {
        if (!(t->A = lmwb_moments_new(t->info.d_in, error))) return FALSE;
        if (!lmwb_moments_collect(t->A, runner, t->info.in, false, true, error)) return FALSE;
      }
      if (!(t->G = lmwb_moments_new(t->info.d_out, error))) return FALSE;
      if (!lmwb_moments_collect(t->G, runner, t->info.out, true, true, error)) return FALSE;
      if (k == LMWB_KFAC_UP) up = t;
    }
  }
  return TRUE;
}

static LmwbKfacFactors *finish(const Run *r, const LmwbModel *m, const LmwbKfacCollectOptions *o, int context,
                               int64_t n_windows, const char *fingerprint) {
  LmwbKfacFactors *f = g_new0(LmwbKfacFactors, 1);
  f->n = r->n;
  f->f = g_new0(LmwbKfacFactor, r->n);
  f->windows = n_windows;
  f->context = context;
  f->tokens = n_windows * context;
  f->positions = n_windows * (context - 1);
  f->labels = o->labels;
  f->seed = o->seed;
  f->model = g_strdup(m->dir ? m->dir : "");
  g_strlcpy(f->fingerprint, fingerprint, sizeof f->fingerprint);
  double inv = 1.0 / (double)f->positions;
  for (int i = 0; i < r->n; i++) {
    const Target *t = &r->t[i];
    LmwbKfacFactor *x = &f->f[i];
    x->layer = t->info.in.layer;
    x->matrix = t->matrix;
    x->d_in = t->info.d_in;
    x->d_out = t->info.d_out;
    x->A = sums_of(t->A, t->base_A);
    x->G = sums_of(t->G, t->base_G);
    for (size_t j = 0; j < (size_t)x->d_in * x->d_in; j++) x->A[j] *= inv;
    for (size_t j = 0; j < (size_t)x->d_out * x->d_out; j++) x->G[j] *= inv;
  }
  return f;
}

LmwbKfacFactors *lmwb_kfac_collect(LmwbModel *m, const int32_t *ids, size_t n, const LmwbKfacCollectOptions *o,
                                   LmwbReporter *rep, GError **error) {
  int context = o->context ? o->context : MIN(LMWB_KFAC_DEFAULT_CONTEXT, m->cfg.n_ctx);
  int batch = o->batch ? o->batch : LMWB_KFAC_DEFAULT_BATCH;
  if (context < 2 || context > m->cfg.n_ctx) {
    lmwb_input_error(error, "context %d must be within 2..%d (the model's context)", context, m->cfg.n_ctx);
    return NULL;
  }
  if (o->tokens < 1 || batch < 1 || o->n_layers < 1 || !o->matrices || o->checkpoint_every < 0 || o->stop_after < 0) {
    lmwb_input_error(error, "k-fac: tokens, batch, layers and matrices must be given and positive");
    return NULL;
  }
  int64_t n_windows = MIN((int64_t)(n / (size_t)context), (o->tokens + context - 1) / context);
  if (n_windows < 1) {
    lmwb_input_error(error, "the text has %zu tokens, fewer than one window of %d", n, context);
    return NULL;
  }
  char fingerprint[65];
  if (!lmwb_kfac_fingerprint(m, fingerprint, error)) return NULL;
  g_autofree char *key = run_key(o, context, fingerprint);
  LmwbRunner *runner = lmwb_runner_new(m);
  Run r = {0};
  LmwbKfacFactors *res = NULL;
  int V = m->cfg.vocab_size;
  int32_t *bids = g_new(int32_t, (size_t)batch * context), *targets = g_new(int32_t, (size_t)batch * context);
  int min_layer = o->layers[0];
  for (int i = 1; i < o->n_layers; i++) min_layer = MIN(min_layer, o->layers[i]);
  if (!setup(&r, runner, m, o, error)) goto out;
  if (o->checkpoint && g_file_test(o->checkpoint, G_FILE_TEST_EXISTS) &&
      !read_checkpoint(&r, o->checkpoint, key, n_windows, error))
    goto out;
  int64_t every = o->checkpoint_every ? o->checkpoint_every : 256, last_ckpt = r.windows_done, start = r.windows_done;
  gint64 t0 = g_get_monotonic_time();
  while (r.windows_done < n_windows) {
    if (lmwb_reporter_cancelled(rep, error)) {
      if (o->checkpoint) {
        GError *e2 = NULL;
        if (!write_checkpoint(&r, o->checkpoint, key, &e2)) {
          g_clear_error(error);
          g_propagate_error(error, e2);
        }
      }
      goto out;
    }
    int B = (int)MIN((int64_t)batch, n_windows - r.windows_done);
    memcpy(bids, ids + (size_t)r.windows_done * context, (size_t)B * context * sizeof(int32_t));
    if (!lmwb_runner_forward(runner, bids, B, context, NULL, error)) goto out;
    if (o->labels == LMWB_KFAC_LABELS_SAMPLE) {
      sample_labels(lmwb_runner_logits(runner, NULL), B, context, V, o->seed, r.windows_done, targets);
    } else {
      for (int b = 0; b < B; b++)
        for (int t = 0; t < context; t++)
          targets[b * context + t] = t + 1 < context ? bids[b * context + t + 1] : -1;
    }
    /* NEXT_TOKEN is a mean over the B (T-1) targets: this weight makes it each window's sum */
    LmwbLoss loss = {.kind = LMWB_LOSS_NEXT_TOKEN, .weight = (double)B * (context - 1), .targets = targets};
    LmwbBackwardOptions bo = {.stop_layer = min_layer};
    double value;
    if (!lmwb_runner_backward(runner, &loss, 1, &bo, &value, error)) goto out;
    r.windows_done += B;
    double secs = (g_get_monotonic_time() - t0) / 1e6;
    lmwb_report_progress(rep, (double)r.windows_done / n_windows, "collecting K-FAC factors");
    if (secs > 0) lmwb_report_metric(rep, "tokens_per_s", (double)r.windows_done * context, (r.windows_done - start) * context / secs);
    gboolean stop = o->stop_after && r.windows_done - start >= o->stop_after && r.windows_done < n_windows;
    if (o->checkpoint && (stop || r.windows_done - last_ckpt >= every) && r.windows_done < n_windows) {
      if (!write_checkpoint(&r, o->checkpoint, key, error)) goto out;
      last_ckpt = r.windows_done;
    }
    if (stop) {
      g_set_error(error, LMWB_ERROR, LMWB_ERROR_CANCELLED, "stopped after %lld windows (%lld of %lld done); resume "
                  "to continue", (long long)(r.windows_done - start), (long long)r.windows_done, (long long)n_windows);
      goto out;
    }
  }
  res = finish(&r, m, o, context, n_windows, fingerprint);
out:
  run_clear(&r);
  lmwb_runner_free(runner);
  g_free(bids);
  g_free(targets);
  return res;
}
