/* Training codebooks on a frozen model: windows, the straight-through step with sparse Adam,
 * initialisation (scaled normal or k-means), dead codes, checkpoints, evaluation.
 * Contract: codebook_train.h. */
#include "analysis/codebook_train.h"
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/engine/optim.h"
#include "app/formats/safetensors.h"
#include "app/train/trainer.h"
#include <math.h>
#include <string.h>

#define EVAL_BATCH 8

/* ---- random numbers (splitmix64: a state that checkpoints as one integer) ----------------------- */

static guint64 rnd_next(guint64 *s) {
  guint64 z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static double rnd_unit(guint64 *s) { return (rnd_next(s) >> 11) * (1.0 / 9007199254740992.0); }

static double rnd_normal(guint64 *s) {
  double u = rnd_unit(s), v = rnd_unit(s);
  return sqrt(-2.0 * log(u + 1e-300)) * cos(2 * G_PI * v);
}

/* ---- windows ------------------------------------------------------------------------------------ */

/* starts NULL: anywhere in the stream; else one of starts[0..n_starts). */
static void draw_windows(const int32_t *ids, size_t n_ids, int B, int T, guint64 *rng, int32_t *out,
                         const size_t *starts, size_t n_starts) {
  size_t span = n_ids - (size_t)T + 1;
  for (int b = 0; b < B; b++) {
    size_t at = starts ? starts[rnd_next(rng) % n_starts] : (size_t)(rnd_next(rng) % span);
    memcpy(out + (size_t)b * T, ids + at, sizeof(int32_t) * T);
  }
}

/* ---- evaluation --------------------------------------------------------------------------------- */

static gboolean evaluate_at(LmwbModel *m, const LmwbCodebooks *cb, const int32_t *ids, size_t n_ids, int context,
                            int windows, const size_t *starts, size_t n_starts, LmwbCodebookEval *ev,
                            double *active_fraction, GError **error) {
  memset(ev, 0, sizeof *ev);
  if (windows < 1 || n_ids < (size_t)context || context < 2) {
    lmwb_input_error(error, "evaluation: %zu tokens are too few for windows of %d", n_ids, context);
    return FALSE;
  }
  LmwbRunner *r = lmwb_runner_new(m);
  LmwbCodebookRun *run = cb ? lmwb_codebooks_attach(r, (LmwbCodebooks *)cb, error) : NULL;
  gboolean ok = !cb || run;
  if (run) lmwb_codebook_run_set_training(run, true, 0.f); /* counts the chosen codes and the error */
  if (run) lmwb_codebook_run_zero_grads(run);
  int V = m->cfg.vocab_size;
  double loss = 0, correct = 0, n = 0;
  g_autofree int32_t *batch = g_new(int32_t, (size_t)EVAL_BATCH * context);
  g_autofree float *tl = g_new(float, (size_t)EVAL_BATCH * context);
  for (int w0 = 0; ok && w0 < windows; w0 += EVAL_BATCH) {
    int B = MIN(EVAL_BATCH, windows - w0);
    for (int b = 0; b < B; b++) {
      size_t at = starts ? starts[(size_t)((double)(w0 + b) * n_starts / windows)]
                  : windows == 1 ? 0 : (size_t)((double)(w0 + b) * (n_ids - context) / (windows - 1));
      memcpy(batch + (size_t)b * context, ids + at, sizeof(int32_t) * context);
    }
    ok = lmwb_runner_forward(r, batch, B, context, NULL, error);
    if (!ok) break;
    lmwb_runner_token_losses(r, NULL, tl);
    const float *lg = lmwb_runner_logits(r, NULL);
    for (int b = 0; b < B; b++)
      for (int t = 0; t + 1 < context; t++) {
        size_t i = (size_t)b * context + t;
        const float *row = lg + i * V;
        int best = 0;
        for (int v = 1; v < V; v++)
          if (row[v] > row[best]) best = v;
        loss += tl[i];
        correct += best == batch[i + 1];
        n++;
      }
  }
  if (ok) {
    ev->loss = loss / n;
    ev->accuracy = correct / n;
    if (run) {
      int64_t fw = 0;
      double mse = lmwb_codebook_run_mse(run, &fw);
      ev->mse = fw ? mse / fw : 0;
      int64_t used = 0, all = 0;
      for (int i = 0; i < cb->n; i++) {
        const int64_t *u = lmwb_codebook_run_used(run, i);
        size_t nc = (size_t)cb->books[i].groups * cb->num_codes;
        for (size_t j = 0; j < nc; j++) used += u[j] > 0;
        all += (int64_t)nc;
      }
      if (active_fraction) *active_fraction = (double)used / all;
    }
  }
  lmwb_codebooks_detach(r, run);
  lmwb_runner_free(r);
  return ok;
}

gboolean lmwb_codebook_evaluate(LmwbModel *m, const LmwbCodebooks *cb, const int32_t *ids, size_t n_ids, int context,
                                int windows, LmwbCodebookEval *ev, double *active_fraction, GError **error) {
  return evaluate_at(m, cb, ids, n_ids, context, windows, NULL, 0, ev, active_fraction, error);
}

void lmwb_codebook_train_result_clear(LmwbCodebookTrainResult *r) {
  lmwb_codebooks_free(r->cb);
  if (r->model) lmwb_model_unref(r->model);
  memset(r, 0, sizeof *r);
}

/* ---- the trainer's state ------------------------------------------------------------------------ */

typedef struct {
  LmwbModel *m;
  const LmwbCodebookTrainOptions *o;
  LmwbCodebooks *cb;
  LmwbRunner *r;
  LmwbCodebookRun *run;
  float **adam_m, **adam_v; /* per book [groups, C, width] */
  float **since;            /* per book [groups * C]: choices since the last dead-code replacement */
  int64_t step, adam_t;
  guint64 rng;
  int B, T;
  double lr, lambda, b1, b2, eps;
  LmwbModel *fm;            /* finetune: the model being trained (m's copy) */
  size_t *starts, n_starts; /* eos_windows: where windows may start */
  LmwbAdamW *model_adam;
} Trainer;

static size_t book_floats(const LmwbCodebooks *cb, int i) {
  return (size_t)cb->books[i].groups * cb->num_codes * cb->books[i].width;
}

static void trainer_free(Trainer *t) {
  for (int i = 0; t->cb && i < t->cb->n; i++) {
    g_free(t->adam_m[i]);
    g_free(t->adam_v[i]);
    g_free(t->since[i]);
  }
  g_free(t->adam_m);
  g_free(t->adam_v);
  g_free(t->since);
  lmwb_codebooks_detach(t->r, t->run);
  lmwb_runner_free(t->r);
  if (t->model_adam) lmwb_adamw_free(t->model_adam);
}

/* codes ~ N(0, s²), s the RMS per dimension of each group's inputs on one batch. */
static void init_normal(Trainer *t, const int32_t *ids, size_t n_ids, GError **error, gboolean *ok) {
  LmwbCodebooks *cb = t->cb;
  g_autofree int32_t *win = g_new(int32_t, (size_t)t->B * t->T);
  draw_windows(ids, n_ids, t->B, t->T, &t->rng, win, t->starts, t->n_starts);
  lmwb_codebook_run_set_inputs(t->run, true, true);
  *ok = lmwb_runner_forward(t->r, win, t->B, t->T, NULL, error);
  for (int i = 0; *ok && i < cb->n; i++) {
    LmwbCodebook *b = &cb->books[i];
    int rows;
    const float *x = lmwb_codebook_run_inputs(t->run, i, &rows);
    for (int g = 0; g < b->groups; g++) {
      double ss = 0;
      for (int rr = 0; rr < rows; rr++)
        for (int d = 0; d < b->width; d++) {
          double v = x[((size_t)rr * b->groups + g) * b->width + d];
          ss += v * v;
        }
      double s = sqrt(ss / ((double)rows * b->width));
      if (!(s > 0)) s = 1;
      float *c = b->codes + (size_t)g * cb->num_codes * b->width;
      for (size_t j = 0; j < (size_t)cb->num_codes * b->width; j++) c[j] = (float)(s * rnd_normal(&t->rng));
    }
  }
  lmwb_codebook_run_set_inputs(t->run, false, false);
}

/* Spherical k-means under the codebook's score on the plain model's inputs. */
static void init_kmeans(Trainer *t, const int32_t *ids, size_t n_ids, GError **error, gboolean *ok) {
  LmwbCodebooks *cb = t->cb;
  const LmwbCodebookTrainOptions *o = t->o;
  int nb = o->kmeans_batches > 0 ? o->kmeans_batches : 4, iters = o->kmeans_iters > 0 ? o->kmeans_iters : 10;
  int per = t->B * t->T, N = nb * per, C = cb->num_codes;
  g_autofree int32_t *win = g_new(int32_t, (size_t)per);
  float **X = g_new0(float *, cb->n);
  for (int i = 0; i < cb->n; i++) X[i] = g_new(float, (size_t)N * cb->books[i].groups * cb->books[i].width);
  lmwb_codebook_run_set_inputs(t->run, true, true);
  for (int bt = 0; *ok && bt < nb; bt++) {
    draw_windows(ids, n_ids, t->B, t->T, &t->rng, win, t->starts, t->n_starts);
    *ok = lmwb_runner_forward(t->r, win, t->B, t->T, NULL, error);
    for (int i = 0; *ok && i < cb->n; i++) {
      int rows;
      const float *x = lmwb_codebook_run_inputs(t->run, i, &rows);
      size_t rf = (size_t)cb->books[i].groups * cb->books[i].width;
      memcpy(X[i] + (size_t)bt * per * rf, x, sizeof(float) * per * rf);
    }
  }
  lmwb_codebook_run_set_inputs(t->run, false, false);
  for (int i = 0; *ok && i < cb->n; i++) {
    LmwbCodebook *b = &cb->books[i];
    int W = b->width, G = b->groups;
    g_autofree float *chat = g_new(float, (size_t)C * W);
    g_autofree float *scratch = g_new(float, lmwb_codebook_scratch_floats(N, W, C));
    g_autofree int32_t *assign = g_new(int32_t, N);
    g_autofree double *sum = g_new(double, (size_t)C * W);
    g_autofree int *cnt = g_new(int, C);
    for (int g = 0; g < G; g++) {
      float *c = b->codes + (size_t)g * C * W;
      const float *x = X[i] + (size_t)g * W;
      size_t ldx = (size_t)G * W;
      for (int j = 0; j < C; j++) memcpy(c + (size_t)j * W, x + (rnd_next(&t->rng) % N) * ldx, sizeof(float) * W);
      for (int it = 0; it < iters; it++) {
        for (int j = 0; j < C; j++) {
          double s = 0;
          for (int d = 0; d < W; d++) s += (double)c[(size_t)j * W + d] * c[(size_t)j * W + d];
          float inv = s > 0 ? (float)(1 / sqrt(s)) : 0.f;
          for (int d = 0; d < W; d++) chat[(size_t)j * W + d] = c[(size_t)j * W + d] * inv;
        }
        lmwb_codebook_select(chat, C, W, 1, x, (int)ldx, N, assign, scratch);
        memset(sum, 0, sizeof(double) * C * W);
        memset(cnt, 0, sizeof(int) * C);
        for (int rr = 0; rr < N; rr++) {
          cnt[assign[rr]]++;
          for (int d = 0; d < W; d++) sum[(size_t)assign[rr] * W + d] += x[rr * ldx + d];
        }
        for (int j = 0; j < C; j++) {
          if (cnt[j]) {
            for (int d = 0; d < W; d++) c[(size_t)j * W + d] = (float)(sum[(size_t)j * W + d] / cnt[j]);
          } else { /* an empty cluster restarts at a random row */
            memcpy(c + (size_t)j * W, x + (rnd_next(&t->rng) % N) * ldx, sizeof(float) * W);
          }
        }
      }
    }
  }
  for (int i = 0; i < cb->n; i++) g_free(X[i]);
  g_free(X);
}

/* Codes nobody chose since the last replacement become an input row of this batch plus noise. */
static int64_t replace_dead(Trainer *t) {
  LmwbCodebooks *cb = t->cb;
  double rho = t->o->dead_noise > 0 ? t->o->dead_noise : LMWB_CB_DEFAULT_DEAD_NOISE;
  int64_t n = 0;
  for (int i = 0; i < cb->n; i++) {
    LmwbCodebook *b = &cb->books[i];
    int rows, W = b->width, C = cb->num_codes;
    const float *x = lmwb_codebook_run_inputs(t->run, i, &rows);
    if (!rows) continue;
    for (int g = 0; g < b->groups; g++)
      for (int j = 0; j < C; j++) {
        size_t cj = (size_t)g * C + j;
        if (t->since[i][cj] > 0) continue;
        const float *src = x + ((size_t)(rnd_next(&t->rng) % rows) * b->groups + g) * W;
        double nrm = 0;
        for (int d = 0; d < W; d++) nrm += (double)src[d] * src[d];
        double sd = rho * sqrt(nrm / W); /* noise of norm about rho * ‖x‖ */
        float *c = b->codes + cj * W;
        for (int d = 0; d < W; d++) c[d] = (float)(src[d] + sd * rnd_normal(&t->rng));
        memset(t->adam_m[i] + cj * W, 0, sizeof(float) * W);
        memset(t->adam_v[i] + cj * W, 0, sizeof(float) * W);
        n++;
      }
    memset(t->since[i], 0, sizeof(float) * (size_t)b->groups * C);
  }
  return n;
}

/* One step: forward with the codebooks, the LM loss backward to the lowest codebook, Adam on the
 * chosen codes. */
static gboolean step(Trainer *t, const int32_t *ids, size_t n_ids, int32_t *win, double *lm, double *mse,
                     int64_t *dead_replaced, GError **error) {
  LmwbCodebooks *cb = t->cb;
  draw_windows(ids, n_ids, t->B, t->T, &t->rng, win, t->starts, t->n_starts);
  lmwb_codebook_run_zero_grads(t->run);
  bool dead_now = t->o->dead_every > 0 && (t->step + 1) % t->o->dead_every == 0;
  lmwb_codebook_run_set_inputs(t->run, dead_now, false);
  int low = cb->books[0].layer;
  for (int i = 1; i < cb->n; i++) low = MIN(low, cb->books[i].layer);
  LmwbLoss loss = {.kind = LMWB_LOSS_NEXT_TOKEN};
  LmwbBackwardOptions bo = {.stop_layer = t->fm ? 0 : low, .param_grads = t->fm != NULL};
  if (!lmwb_runner_forward(t->r, win, t->B, t->T, NULL, error) ||
      !lmwb_runner_backward(t->r, &loss, 1, &bo, lm, error))
    return FALSE;
  if (t->fm) {
    float *pg = lmwb_runner_param_grads(t->r);
    lmwb_clip_grad_norm(pg, t->fm->n_params, 1.0);
    lmwb_adamw_step(t->model_adam, t->fm->params, pg, (float)(t->o->model_lr > 0 ? t->o->model_lr : t->lr));
    lmwb_model_weights_changed(t->fm);
  }
  int64_t fw = 0;
  *mse = lmwb_codebook_run_mse(t->run, &fw);
  t->adam_t++;
  double bc1 = 1 - pow(t->b1, (double)t->adam_t), bc2 = 1 - pow(t->b2, (double)t->adam_t);
  float a = (float)(t->lr / bc1);
  for (int i = 0; i < cb->n; i++) {
    LmwbCodebook *b = &cb->books[i];
    const int64_t *used = lmwb_codebook_run_used(t->run, i);
    float *g = lmwb_codebook_run_grads(t->run, i);
    int W = b->width;
    size_t rows = (size_t)b->groups * cb->num_codes;
    for (size_t j = 0; j < rows; j++) {
      if (!used[j]) continue;
      t->since[i][j] += (float)used[j];
      float *p = b->codes + j * W, *mm = t->adam_m[i] + j * W, *vv = t->adam_v[i] + j * W;
      const float *gj = g + j * W;
      for (int d = 0; d < W; d++) {
        mm[d] = (float)(t->b1 * mm[d] + (1 - t->b1) * gj[d]);
        vv[d] = (float)(t->b2 * vv[d] + (1 - t->b2) * gj[d] * gj[d]);
        p[d] -= a * mm[d] / ((float)sqrt(vv[d] / bc2) + (float)t->eps);
      }
    }
  }
  if (dead_now) *dead_replaced += replace_dead(t);
  lmwb_codebook_run_changed(t->run);
  t->step++;
  return TRUE;
}

/* ---- checkpoints -------------------------------------------------------------------------------- */

static char *sites_string(const LmwbCodebooks *cb) {
  GString *s = g_string_new(NULL);
  for (int i = 0; i < cb->n; i++)
    g_string_append_printf(s, "%s%d:%s", i ? "," : "", cb->books[i].layer, lmwb_codebook_site_name(cb->books[i].site));
  return g_string_free(s, FALSE);
}

static gboolean save_checkpoint(Trainer *t, GError **error) {
  const char *dir = t->o->checkpoint_dir;
  if (!dir || t->fm) return TRUE;
  if (g_mkdir_with_parents(dir, 0755) != 0) {
    lmwb_input_error(error, "cannot create the checkpoint folder %s", dir);
    return FALSE;
  }
  LmwbCodebooks *cb = t->cb;
  LmwbSafetensorsWriter *w = lmwb_safetensors_writer_new();
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  for (int i = 0; i < cb->n; i++) {
    int64_t n[1] = {(int64_t)book_floats(cb, i)}, u[1] = {(int64_t)cb->books[i].groups * cb->num_codes};
    const char *what[4] = {"codes", "adam_m", "adam_v", "since"};
    const float *data[4] = {cb->books[i].codes, t->adam_m[i], t->adam_v[i], t->since[i]};
    for (int k = 0; k < 4; k++) {
      char *nm = g_strdup_printf("%s.%d", what[k], i);
      g_ptr_array_add(names, nm);
      lmwb_safetensors_writer_add_f32(w, nm, LMWB_DTYPE_F32, k == 3 ? u : n, 1, data[k]);
    }
  }
  g_autofree char *st = g_strdup_printf("%" G_GINT64_FORMAT, t->step);
  g_autofree char *at = g_strdup_printf("%" G_GINT64_FORMAT, t->adam_t);
  g_autofree char *rg = g_strdup_printf("%" G_GUINT64_FORMAT, t->rng);
  g_autofree char *sites = sites_string(cb);
  g_autofree char *kc = g_strdup_printf("%d/%d", cb->k, cb->num_codes);
  lmwb_safetensors_writer_set_metadata(w, "step", st);
  lmwb_safetensors_writer_set_metadata(w, "adam_t", at);
  lmwb_safetensors_writer_set_metadata(w, "rng", rg);
  lmwb_safetensors_writer_set_metadata(w, "sites", sites);
  lmwb_safetensors_writer_set_metadata(w, "k/num_codes", kc);
  g_autofree char *path = g_build_filename(dir, "state.safetensors", NULL);
  gboolean ok = lmwb_safetensors_writer_save(w, path, error);
  lmwb_safetensors_writer_free(w);
  g_ptr_array_free(names, TRUE);
  return ok;
}

static gboolean meta_u64(const LmwbSafetensors *st, const char *key, guint64 *out) {
  const char *v = lmwb_safetensors_metadata(st, key);
  char *end = NULL;
  if (!v || !*v) return FALSE;
  *out = g_ascii_strtoull(v, &end, 10);
  return *end == 0;
}

static gboolean load_checkpoint(Trainer *t, GError **error) {
  g_autofree char *path = g_build_filename(t->o->checkpoint_dir, "state.safetensors", NULL);
  LmwbSafetensors *st = lmwb_safetensors_open(path, error);
  if (!st) return FALSE;
  lmwb_input_guard_forget(path); /* read only to be replaced by the next checkpoint */
  LmwbCodebooks *cb = t->cb;
  g_autofree char *sites = sites_string(cb);
  g_autofree char *kc = g_strdup_printf("%d/%d", cb->k, cb->num_codes);
  const char *s = lmwb_safetensors_metadata(st, "sites"), *k = lmwb_safetensors_metadata(st, "k/num_codes");
  guint64 step = 0, adam_t = 0, rng = 0;
  gboolean ok = TRUE;
  if (!s || strcmp(s, sites) || !k || strcmp(k, kc) || !meta_u64(st, "step", &step) || !meta_u64(st, "adam_t", &adam_t) ||
      !meta_u64(st, "rng", &rng) || step > G_MAXINT64) {
    lmwb_input_error(error, "%s: the checkpoint is of another run (sites %s, k/num_codes %s; this run: %s, %s)", path,
                     s ? s : "?", k ? k : "?", sites, kc);
    ok = FALSE;
  }
  for (int i = 0; ok && i < cb->n; i++) {
    const char *what[4] = {"codes", "adam_m", "adam_v", "since"};
    float *data[4] = {cb->books[i].codes, t->adam_m[i], t->adam_v[i], t->since[i]};
    for (int kk = 0; ok && kk < 4; kk++) {
      g_autofree char *nm = g_strdup_printf("%s.%d", what[kk], i);
      const LmwbTensorView *v = lmwb_safetensors_find(st, nm);
      int64_t want = kk == 3 ? (int64_t)cb->books[i].groups * cb->num_codes : (int64_t)book_floats(cb, i);
      if (!v || v->ndim != 1 || v->shape[0] != want) {
        lmwb_input_error(error, "%s: tensor \"%s\" is missing or not of %" G_GINT64_FORMAT " values", path, nm, want);
        ok = FALSE;
      } else {
        ok = lmwb_tensor_to_f32(v, data[kk], error);
      }
    }
  }
  if (ok) {
    t->step = (int64_t)step;
    t->adam_t = (int64_t)adam_t;
    t->rng = rng;
  }
  lmwb_safetensors_close(st);
  return ok && lmwb_codebooks_check(cb, &t->m->cfg, path, error);
}

/* ---- the run ------------------------------------------------------------------------------------ */

static gboolean check_options(const LmwbModel *m, size_t n_ids, const LmwbCodebookTrainOptions *o, int T,
                              GError **error) {
  if (o->steps < 1) {
    lmwb_input_error(error, "steps %" G_GINT64_FORMAT " must be at least 1", o->steps);
    return FALSE;
  }
  if (o->batch < 0 || o->context < 0 || o->eval_windows > 100000 || o->kmeans_batches < 0 || o->kmeans_iters < 0 ||
      o->dead_every < 0 || o->checkpoint_every < 0) {
    lmwb_input_error(error, "batch, context, kmeans batches and iterations, dead-every and checkpoint-every must not be "
                     "negative");
    return FALSE;
  }
  if (T < 2 || T > m->cfg.n_ctx) {
    lmwb_input_error(error, "context %d is not in 2..%d", T, m->cfg.n_ctx);
    return FALSE;
  }
  if (n_ids < (size_t)T) {
    lmwb_input_error(error, "the text has %zu tokens, fewer than one window of %d", n_ids, T);
    return FALSE;
  }
  if (!(o->lr >= 0) || !isfinite(o->lr) || !isfinite(o->lambda) || !(o->dead_noise >= 0)) {
    lmwb_input_error(error, "lr and dead-noise must be finite and not negative, lambda finite");
    return FALSE;
  }
  if (o->finetune && (o->resume || o->max_steps_this_run > 0)) {
    lmwb_input_error(error, "a run that fine-tunes the model cannot be stopped and resumed");
    return FALSE;
  }
  if (!(o->model_lr >= 0) || !isfinite(o->model_lr)) {
    lmwb_input_error(error, "the model's learning rate must be finite and not negative");
    return FALSE;
  }
  if ((o->resume || o->max_steps_this_run > 0) && !o->checkpoint_dir) {
    lmwb_input_error(error, "resume and a stop after some steps need a checkpoint folder");
    return FALSE;
  }
  return TRUE;
}

gboolean lmwb_codebook_train(LmwbModel *m, const int32_t *ids, size_t n_ids, const LmwbCodebooks *init,
                             const LmwbCodebookTrainOptions *o, LmwbReporter *rep, LmwbCodebookTrainResult *res,
                             GError **error) {
  memset(res, 0, sizeof *res);
  gint64 t0 = g_get_monotonic_time();
  Trainer t = {.m = m, .o = o, .rng = o->seed ^ 0x5EEDC0DEB00Cull};
  t.B = o->batch > 0 ? o->batch : 8;
  t.T = o->context > 0 ? o->context : MIN(64, m->cfg.n_ctx);
  if (!check_options(m, n_ids, o, t.T, error)) return FALSE;
  if (o->eos_windows) {
    if (m->cfg.eos_id < 0) {
      lmwb_input_error(error, "eos windows: the model has no end-of-text token");
      return FALSE;
    }
    if (!(t.starts = lmwb_eos_window_starts(ids, n_ids, m->cfg.eos_id, (size_t)t.T, &t.n_starts))) {
      lmwb_input_error(error, "eos windows: the text holds no end-of-text token with a whole window of %d after it", t.T);
      return FALSE;
    }
  }
  t.lr = o->lr > 0 ? o->lr : LMWB_CB_DEFAULT_LR;
  t.lambda = o->lambda > 0 ? o->lambda : o->lambda < 0 ? 0 : LMWB_CB_DEFAULT_LAMBDA;
  t.b1 = o->beta1 > 0 ? o->beta1 : 0.9;
  t.b2 = o->beta2 > 0 ? o->beta2 : 0.999;
  t.eps = o->eps > 0 ? o->eps : 1e-8;
  if (init) {
    if (!lmwb_codebooks_check(init, &m->cfg, "the initial codebooks", error)) return FALSE;
    LmwbCodebookSiteSpec *sp = g_new(LmwbCodebookSiteSpec, init->n);
    for (int i = 0; i < init->n; i++) sp[i] = (LmwbCodebookSiteSpec){init->books[i].layer, init->books[i].site};
    t.cb = lmwb_codebooks_new(&m->cfg, init->k, init->num_codes, sp, init->n, error);
    g_free(sp);
    for (int i = 0; t.cb && i < init->n; i++) memcpy(t.cb->books[i].codes, init->books[i].codes, sizeof(float) * book_floats(init, i));
  } else {
    t.cb = lmwb_codebooks_new(&m->cfg, o->k, o->num_codes, o->sites, o->n_sites, error);
  }
  if (!t.cb) return FALSE;
  LmwbCodebooks *cb = t.cb;
  int eval_w = o->eval_windows == 0 ? 16 : o->eval_windows;
  if (o->finetune) {
    if (!(t.fm = lmwb_model_materialize(m, error))) {
      lmwb_codebooks_free(t.cb);
      return FALSE;
    }
    t.model_adam = lmwb_adamw_new(t.fm->n_params, (float)t.b1, (float)t.b2, (float)t.eps, 0.f, NULL);
  }
  t.r = lmwb_runner_new(t.fm ? t.fm : m);
  t.run = lmwb_codebooks_attach(t.r, cb, error);
  gboolean ok = t.run != NULL;
  t.adam_m = g_new0(float *, cb->n);
  t.adam_v = g_new0(float *, cb->n);
  t.since = g_new0(float *, cb->n);
  for (int i = 0; i < cb->n; i++) {
    t.adam_m[i] = g_new0(float, book_floats(cb, i));
    t.adam_v[i] = g_new0(float, book_floats(cb, i));
    t.since[i] = g_new0(float, (size_t)cb->books[i].groups * cb->num_codes);
  }
  if (ok && o->resume) ok = load_checkpoint(&t, error);
  else if (ok && !init) (o->kmeans ? init_kmeans : init_normal)(&t, ids, n_ids, error, &ok);
  lmwb_codebook_run_changed(t.run);
  if (ok && eval_w > 0) {
    lmwb_report_progress(rep, 0, "evaluating before");
    ok = evaluate_at(m, NULL, ids, n_ids, t.T, eval_w, t.starts, t.n_starts, &res->plain, NULL, error) &&
         evaluate_at(m, cb, ids, n_ids, t.T, eval_w, t.starts, t.n_starts, &res->before, NULL, error);
  }
  if (ok) lmwb_codebook_run_set_training(t.run, true, (float)t.lambda);
  g_autofree int32_t *win = g_new(int32_t, (size_t)t.B * t.T);
  int64_t ckpt_every = o->checkpoint_every > 0 ? o->checkpoint_every : 200, this_run = 0;
  gboolean stopped = FALSE;
  while (ok && t.step < o->steps) {
    if (lmwb_reporter_cancelled(rep, error)) {
      GError *e2 = NULL;
      if (!save_checkpoint(&t, &e2)) g_clear_error(&e2);
      ok = FALSE;
      break;
    }
    double lm = 0, mse = 0;
    if (!(ok = step(&t, ids, n_ids, win, &lm, &mse, &res->dead_replaced, error))) break;
    this_run++;
    lmwb_report_metric(rep, "lm_loss", (double)t.step, lm);
    lmwb_report_metric(rep, "mse", (double)t.step, mse);
    lmwb_report_metric(rep, "loss", (double)t.step, lm + t.lambda * mse);
    lmwb_report_progress(rep, (double)t.step / o->steps, "training codebooks");
    if (t.step % ckpt_every == 0 && t.step < o->steps && !(ok = save_checkpoint(&t, error))) break;
    if (o->max_steps_this_run > 0 && this_run >= o->max_steps_this_run && t.step < o->steps) {
      ok = save_checkpoint(&t, error);
      stopped = TRUE;
      break;
    }
  }
  res->steps = t.step;
  if (ok && !stopped && eval_w > 0) {
    lmwb_report_progress(rep, 1, "evaluating after");
    ok = evaluate_at(t.fm ? t.fm : m, cb, ids, n_ids, t.T, eval_w, t.starts, t.n_starts, &res->after,
                     &res->active_fraction, error);
  }
  trainer_free(&t);
  g_free(t.starts);
  if (ok) res->model = t.fm;
  else if (t.fm) lmwb_model_unref(t.fm);
  res->seconds = (g_get_monotonic_time() - t0) / 1e6;
  if (!ok) {
    lmwb_codebooks_free(cb);
    return FALSE;
  }
  res->cb = cb;
  return TRUE;
}
