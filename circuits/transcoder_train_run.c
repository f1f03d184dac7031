/* Transcoder and SAE training on a model's text: windows streamed through the model into a
 * shuffled buffer, the steps, resampling, metrics, checkpoints and exact resume. Contract:
 * transcoder_train.h; the optimisation itself is transcoder_train.c. */
#include "circuits/transcoder_train_internal.h"
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/core/memory.h"
#include "app/core/rng.h"
#include "app/formats/safetensors.h"
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

void lmwb_tc_train_options_init(LmwbTcTrainOptions *o, int layer) {
  memset(o, 0, sizeof *o);
  o->in = (LmwbSite){LMWB_SITE_LN2, layer};
  o->out = (LmwbSite){LMWB_SITE_MLP_OUT, layer};
  o->act = LMWB_TC_RELU;
}

void lmwb_tc_train_result_clear(LmwbTcTrainResult *r) {
  g_clear_pointer(&r->tc, lmwb_transcoder_free);
}

/* ---- the resolved plan ---------------------------------------------------------------------------- */

typedef struct {
  LmwbTcTrainOptions o;   /* with every default filled in */
  int d_in, d_out;
  gboolean sae;
  int fill_windows, per_fill;
  size_t fill_tokens;
  int64_t steps;
  double resample_until_step;
} Plan;

static gboolean site_rows(const LmwbConfig *c, LmwbSite s, const char *what, int *dim, GError **error) {
  const LmwbSiteInfo *si = lmwb_site_info(s.kind);
  g_autofree char *nm = si ? lmwb_site_name(s) : g_strdup("(unknown)");
  if (!si || !lmwb_site_exists(c, s.kind) || (si->model_level ? s.layer != -1 : (s.layer < 0 || s.layer >= c->n_layer))) {
    lmwb_input_error(error, "transcoder training: the %s site %s does not exist in this %d-layer %s model", what, nm,
                     c->n_layer, c->model_type);
    return FALSE;
  }
  if (si->shape == LMWB_SHAPE_PATTERN) {
    lmwb_input_error(error, "transcoder training: the %s site %s holds attention patterns, not activation rows", what, nm);
    return FALSE;
  }
  *dim = lmwb_site_row_size(c, s.kind, 0);
  return TRUE;
}

#define NEED(cond, ...) do { if (!(cond)) { lmwb_input_error(error, "transcoder training: " __VA_ARGS__); return FALSE; } } while (0)

static gboolean make_plan(const LmwbModel *m, size_t n_ids, const LmwbTcTrainOptions *in, Plan *p, GError **error) {
  const LmwbConfig *c = &m->cfg;
  memset(p, 0, sizeof *p);
  p->o = *in;
  LmwbTcTrainOptions *o = &p->o;
  if (!site_rows(c, o->in, "input", &p->d_in, error) || !site_rows(c, o->out, "output", &p->d_out, error)) return FALSE;
  p->sae = o->in.kind == o->out.kind && o->in.layer == o->out.layer;
  if (o->d_sae == 0) o->d_sae = LMWB_TC_DEFAULT_EXPANSION * p->d_in;
  NEED(o->d_sae >= 1 && o->d_sae <= (1 << 24), "the number of features %d must be in 1..%d", o->d_sae, 1 << 24);
  NEED(o->act == LMWB_TC_RELU || o->act == LMWB_TC_TOPK || o->act == LMWB_TC_JUMPRELU, "unknown activation %d", (int)o->act);
  NEED(o->act != LMWB_TC_TOPK || (o->k >= 1 && o->k <= MIN(o->d_sae, LMWB_TC_MAX_K)),
       "k %d must be in 1..%d (the number of features, at most %d)", o->k, MIN(o->d_sae, LMWB_TC_MAX_K), LMWB_TC_MAX_K);
  NEED(o->act == LMWB_TC_TOPK || o->k == 0, "k is for TopK only");
  NEED(isfinite(o->aux_coef) && o->aux_k >= 0, "aux_coef must be a number and aux_k not negative");
  NEED(isfinite(o->sparsity) && o->sparsity >= 0 && (o->act != LMWB_TC_TOPK || o->sparsity == 0),
       "the sparsity coefficient %g must be finite and >= 0, and 0 with TopK (k sets the sparsity)", o->sparsity);
  NEED(o->tokens >= 1, "the number of training tokens must be given (at least 1)");
  if (o->context == 0) o->context = MIN(128, c->n_ctx);
  NEED(o->context >= 2 && o->context <= c->n_ctx, "the context %d must be in 2..%d (the model's context)", o->context, c->n_ctx);
  if (o->batch == 0) o->batch = LMWB_TC_DEFAULT_BATCH;
  NEED(o->batch >= 1 && o->batch <= (1 << 20), "the batch %d must be in 1..%d tokens", o->batch, 1 << 20);
  if (o->buffer == 0) o->buffer = (int)MIN((int64_t)G_MAXINT / 2, 8 * (int64_t)o->batch);
  NEED(o->buffer >= o->batch && o->buffer <= (1 << 28), "the buffer of %d tokens must hold at least one batch (%d) and "
       "at most %d tokens", o->buffer, o->batch, 1 << 28);
  if (o->forward_batch == 0) o->forward_batch = 16;
  NEED(o->forward_batch >= 1 && o->forward_batch <= 4096, "forward_batch %d must be in 1..4096 windows", o->forward_batch);
  p->fill_windows = (o->buffer + o->context - 1) / o->context;
  p->fill_tokens = (size_t)p->fill_windows * o->context;
  p->per_fill = (int)(p->fill_tokens / (size_t)o->batch);
  p->steps = (o->tokens + o->batch - 1) / o->batch;
  NEED(p->steps <= 1000000000, "%" G_GINT64_FORMAT " steps are too many", p->steps);
  if (o->lr == 0) o->lr = LMWB_TC_DEFAULT_LR;
  NEED(isfinite(o->lr) && o->lr > 0 && o->lr <= 1 && isfinite(o->lr_min) && o->lr_min >= 0 && o->lr_min <= o->lr,
       "need 0 < lr <= 1 and 0 <= lr_min <= lr (lr %g, lr_min %g)", o->lr, o->lr_min);
  NEED(o->beta1 >= 0 && o->beta1 < 1 && o->beta2 >= 0 && o->beta2 < 1 && o->eps >= 0 && o->eps < 1,
       "Adam's betas must be in [0, 1) and eps in (0, 1)");
  if (o->warmup == 0) o->warmup = p->steps / 20;
  if (o->warmup < 0) o->warmup = 0;
  if (o->sparsity_warmup == 0) o->sparsity_warmup = p->steps / 20;
  if (o->sparsity_warmup < 0) o->sparsity_warmup = 0;
  if (o->dead_window == 0) o->dead_window = MAX(o->tokens / 10, 4 * (int64_t)o->batch);
  NEED(o->dead_window >= 1, "the dead-feature window must be at least 1 token");
  if (o->resample_every == 0) o->resample_every = o->act == LMWB_TC_TOPK ? -1 : o->dead_window;
  if (o->resample_until == 0) o->resample_until = 0.7;
  NEED(o->resample_until > 0 && o->resample_until <= 1, "resample_until %g must be in (0, 1]", o->resample_until);
  p->resample_until_step = o->resample_until * (double)p->steps;
  if (o->checkpoint_every == 0) o->checkpoint_every = 500;
  NEED(o->checkpoint_every >= 1, "checkpoint_every must be at least 1");
  NEED(o->max_steps_this_run >= 0, "max_steps_this_run must not be negative");
  NEED(!o->resume || o->checkpoint_dir, "resume needs a checkpoint folder");
  NEED(n_ids >= (size_t)o->context, "the text has %zu tokens, fewer than one window of %d", n_ids, o->context);
  uint64_t fill_bytes = (uint64_t)p->fill_tokens * ((uint64_t)(p->sae ? 0 : p->d_in) + p->d_out) * sizeof(float) +
                        (uint64_t)p->fill_tokens * 8;
  return lmwb_memory_check(fill_bytes, "the activation buffer (lower the buffer size)", error);
}
#undef NEED

/* A double as text that reads back exactly, whatever the locale. */
static const char *exact(char buf[G_ASCII_DTOSTR_BUF_SIZE], double v) {
  return g_ascii_formatd(buf, G_ASCII_DTOSTR_BUF_SIZE, "%.17g", v);
}

/* What a checkpoint must agree on to be continued: every setting that changes the weights. */
static char *signature(const Plan *p, const int32_t *ids, size_t n_ids) {
  guint64 h = 0xcbf29ce484222325ull;
  const guint8 *b = (const guint8 *)ids;
  for (size_t i = 0; i < n_ids * sizeof(int32_t); i++) h = (h ^ b[i]) * 0x100000001b3ull;
  const LmwbTcTrainOptions *o = &p->o;
  g_autofree char *in = lmwb_site_name(o->in), *out = lmwb_site_name(o->out);
  char a[9][G_ASCII_DTOSTR_BUF_SIZE];
  return g_strdup_printf("in=%s;out=%s;d_sae=%d;activation=%s;k=%d;sparsity=%s;sparsity_warmup=%" G_GINT64_FORMAT
                         ";tokens=%" G_GINT64_FORMAT ";context=%d;batch=%d;buffer=%d;forward_batch=%d;lr=%s;lr_min=%s;"
                         "warmup=%" G_GINT64_FORMAT ";beta1=%s;beta2=%s;eps=%s;dead_window=%" G_GINT64_FORMAT
                         ";resample_every=%" G_GINT64_FORMAT ";resample_until=%s;sparse_below=%s;aux_coef=%s;aux_k=%d;seed=%" G_GUINT64_FORMAT
                         ";text=%zu tokens, hash %016" G_GINT64_MODIFIER "x",
                         in, out, o->d_sae, lmwb_tc_activation_name(o->act), o->k, exact(a[0], o->sparsity),
                         o->sparsity_warmup, o->tokens, o->context, o->batch, o->buffer, o->forward_batch,
                         exact(a[1], o->lr), exact(a[2], o->lr_min), o->warmup, exact(a[3], o->beta1),
                         exact(a[4], o->beta2), exact(a[5], o->eps), o->dead_window, o->resample_every,
                         exact(a[6], o->resample_until), exact(a[7], o->sparse_below), exact(a[8], o->aux_coef), o->aux_k, o->seed, n_ids, h);
}

/* ---- the activation buffer ------------------------------------------------------------------------- */

typedef struct Fill Fill;
typedef struct {
  Fill *fill;
  float *dst;
  int R;
} Keep;

struct Fill {
  LmwbRunner *r;
  float *X, *Y;      /* [fill_tokens, d]; X is Y for an SAE */
  int32_t *perm;     /* the shuffled order of the rows */
  int32_t *win;      /* [fill_windows, context] ids */
  size_t at;         /* row of the next block */
  Keep keep[2];
  float *xb, *yb;    /* a gathered batch */
};

static void keep_rows(float *block, const LmwbHookCtx *c, void *user) {
  Keep *k = user;
  memcpy(k->dst + k->fill->at * (size_t)k->R, block, sizeof(float) * (size_t)c->B * c->rows_per_seq * k->R);
}

static void fill_free(Fill *f) {
  if (f->r) lmwb_runner_free(f->r);
  if (f->X != f->Y) g_free(f->X);
  g_free(f->Y), g_free(f->perm), g_free(f->win), g_free(f->xb), g_free(f->yb);
}

static gboolean fill_init(Fill *f, LmwbModel *m, const Plan *p, GError **error) {
  memset(f, 0, sizeof *f);
  size_t N = p->fill_tokens;
  f->Y = g_try_new(float, N * p->d_out);
  f->X = p->sae ? f->Y : g_try_new(float, N * p->d_in);
  f->perm = g_try_new(int32_t, N);
  f->win = g_try_new(int32_t, N);
  f->xb = g_try_new(float, (size_t)p->o.batch * p->d_in);
  f->yb = g_try_new(float, (size_t)p->o.batch * p->d_out);
  if (!f->X || !f->Y || !f->perm || !f->win || !f->xb || !f->yb) {
    lmwb_input_error(error, "transcoder training: out of memory for a buffer of %zu tokens", N);
    return FALSE;
  }
  f->r = lmwb_runner_new(m);
  f->keep[0] = (Keep){f, f->Y, p->d_out};
  f->keep[1] = (Keep){f, f->X, p->d_in};
  LmwbHook h = {.site = p->o.out, .op = LMWB_HOOK_OBSERVE, .fn = keep_rows, .user = &f->keep[0]};
  if (!lmwb_runner_add_hook(f->r, &h, error)) return FALSE;
  if (!p->sae) {
    h.site = p->o.in;
    h.user = &f->keep[1];
    if (!lmwb_runner_add_hook(f->r, &h, error)) return FALSE;
  }
  return TRUE;
}

/* Draws the windows of one fill from *rng, runs them through the model and shuffles the rows.
 * FALSE on error or cancel (*rng is then meaningless). */
static gboolean fill_make(Fill *f, const Plan *p, const int32_t *ids, size_t n_ids, guint64 *rng, LmwbReporter *rep,
                          double done, GError **error) {
  const int T = p->o.context, W = p->fill_windows, fb = p->o.forward_batch;
  guint64 span = (guint64)(n_ids - (size_t)T) + 1;
  for (int w = 0; w < W; w++) {
    size_t start = (size_t)(lmwb_splitmix64(rng) % span);
    memcpy(f->win + (size_t)w * T, ids + start, sizeof(int32_t) * T);
  }
  LmwbForwardOptions fo = {.last_logits_only = true};
  for (int w0 = 0; w0 < W; w0 += fb) {
    if (lmwb_reporter_cancelled(rep, error)) return FALSE;
    int B = MIN(fb, W - w0);
    f->at = (size_t)w0 * T;
    if (!lmwb_runner_forward(f->r, f->win + (size_t)w0 * T, B, T, &fo, error)) return FALSE;
    lmwb_report_progress(rep, done, "reading activations");
  }
  size_t N = p->fill_tokens;
  for (size_t i = 0; i < N; i++) f->perm[i] = (int32_t)i;
  for (size_t i = N - 1; i > 0; i--) {
    size_t j = (size_t)(lmwb_splitmix64(rng) % (guint64)(i + 1));
    int32_t tmp = f->perm[i];
    f->perm[i] = f->perm[j], f->perm[j] = tmp;
  }
  return TRUE;
}

static void fill_batch(Fill *f, const Plan *p, int pos) {
  const int B = p->o.batch;
  const int32_t *rows = f->perm + (size_t)pos * B;
  for (int i = 0; i < B; i++) {
    memcpy(f->yb + (size_t)i * p->d_out, f->Y + (size_t)rows[i] * p->d_out, sizeof(float) * p->d_out);
    if (!p->sae) memcpy(f->xb + (size_t)i * p->d_in, f->X + (size_t)rows[i] * p->d_in, sizeof(float) * p->d_in);
  }
}

/* ---- checkpoints --------------------------------------------------------------------------------------- */

typedef struct {
  int64_t step, next_resample;
  guint64 fill_rng;
  int fill_pos;
} Position;

static void meta_u64(LmwbSafetensorsWriter *w, const char *k, guint64 v) {
  char s[32];
  g_snprintf(s, sizeof s, "%" G_GUINT64_FORMAT, v);
  lmwb_safetensors_writer_set_metadata(w, k, s);
}

static void meta_i64(LmwbSafetensorsWriter *w, const char *k, gint64 v) {
  char s[32];
  g_snprintf(s, sizeof s, "%" G_GINT64_FORMAT, v);
  lmwb_safetensors_writer_set_metadata(w, k, s);
}

static void meta_f64(LmwbSafetensorsWriter *w, const char *k, double v) {
  char s[G_ASCII_DTOSTR_BUF_SIZE];
  lmwb_safetensors_writer_set_metadata(w, k, exact(s, v));
}

static gboolean save_checkpoint(const char *dir, const LmwbTcTrainer *t, const Position *pos, const char *sig,
                                GError **error) {
  if (g_mkdir_with_parents(dir, 0755) != 0) {
    lmwb_input_error(error, "cannot create the checkpoint folder %s", dir);
    return FALSE;
  }
  LmwbSafetensorsWriter *w = lmwb_safetensors_writer_new();
  int64_t np[1] = {(int64_t)t->n_params}, di[1] = {t->d_in}, ds[1] = {t->d_sae};
  lmwb_safetensors_writer_add_f32(w, "params", LMWB_DTYPE_F32, np, 1, t->p);
  lmwb_safetensors_writer_add_f32(w, "adam_m", LMWB_DTYPE_F32, np, 1, t->adam->m);
  lmwb_safetensors_writer_add_f32(w, "adam_v", LMWB_DTYPE_F32, np, 1, t->adam->v);
  lmwb_safetensors_writer_add_f32(w, "mu_x", LMWB_DTYPE_F32, di, 1, t->mu_x);
  lmwb_safetensors_writer_add_raw(w, "last_active", LMWB_DTYPE_I64, ds, 1, t->last_active,
                                  (uint64_t)t->d_sae * sizeof(int64_t));
  lmwb_safetensors_writer_set_metadata(w, "signature", sig);
  meta_i64(w, "step", pos->step);
  meta_i64(w, "next_resample", pos->next_resample);
  meta_u64(w, "fill_rng", pos->fill_rng);
  meta_i64(w, "fill_pos", pos->fill_pos);
  meta_i64(w, "seen", t->seen);
  meta_i64(w, "resampled", t->resampled);
  meta_i64(w, "adam_step", t->adam->step);
  meta_u64(w, "trainer_rng", t->rng);
  meta_f64(w, "rho_x", t->rho_x);
  meta_f64(w, "rho_y", t->rho_y);
  g_autofree char *path = g_build_filename(dir, "state.safetensors", NULL);
  gboolean ok = lmwb_safetensors_writer_save(w, path, error);
  lmwb_safetensors_writer_free(w);
  return ok;
}

/* The first setting in which two signatures differ, for the message. */
static char *first_difference(const char *a, const char *b) {
  g_auto(GStrv) pa = g_strsplit(a, ";", -1), pb = g_strsplit(b, ";", -1);
  for (int i = 0; pa[i] && pb[i]; i++)
    if (strcmp(pa[i], pb[i])) return g_strdup_printf("%s here, %s in the checkpoint", pb[i], pa[i]);
  return g_strdup("the settings differ");
}

static gboolean meta_int(const LmwbSafetensors *st, const char *k, gboolean is_unsigned, guint64 *out) {
  const char *s = lmwb_safetensors_metadata(st, k);
  if (!s || !*s) return FALSE;
  char *end = NULL;
  *out = is_unsigned ? g_ascii_strtoull(s, &end, 10) : (guint64)g_ascii_strtoll(s, &end, 10);
  return *end == 0;
}

static gboolean load_checkpoint(const char *dir, LmwbTcTrainer *t, Position *pos, const char *sig, GError **error) {
  g_autofree char *path = g_build_filename(dir, "state.safetensors", NULL);
  LmwbSafetensors *st = lmwb_safetensors_open(path, error);
  if (!st) return FALSE;
  gboolean ok = TRUE;
  const char *have = lmwb_safetensors_metadata(st, "signature");
  if (!have || strcmp(have, sig)) {
    g_autofree char *d = have ? first_difference(have, sig) : g_strdup("it has no signature");
    lmwb_input_error(error, "checkpoint %s was made by a run with other settings (%s): resume with the same "
                     "settings, or remove it", path, d);
    ok = FALSE;
  }
  const char *names[4] = {"params", "adam_m", "adam_v", "mu_x"};
  float *dst[4] = {t->p, t->adam->m, t->adam->v, t->mu_x};
  size_t len[4] = {t->n_params, t->n_params, t->n_params, (size_t)t->d_in};
  for (int i = 0; ok && i < 4; i++) {
    const LmwbTensorView *v = lmwb_safetensors_find(st, names[i]);
    if (!v || v->ndim != 1 || v->shape[0] != (int64_t)len[i] || v->dtype != LMWB_DTYPE_F32 ||
        !lmwb_tensor_to_f32(v, dst[i], NULL)) {
      lmwb_input_error(error, "checkpoint %s: tensor \"%s\" is missing or is not %zu F32 values", path, names[i], len[i]);
      ok = FALSE;
    } else {
      for (size_t j = 0; ok && j < len[i]; j++)
        if (!isfinite(dst[i][j])) {
          lmwb_input_error(error, "checkpoint %s: tensor \"%s\" holds a value that is not finite (element %zu)", path,
                           names[i], j);
          ok = FALSE;
        }
    }
  }
  const LmwbTensorView *la = ok ? lmwb_safetensors_find(st, "last_active") : NULL;
  if (ok && (!la || la->dtype != LMWB_DTYPE_I64 || la->ndim != 1 || la->shape[0] != t->d_sae)) {
    lmwb_input_error(error, "checkpoint %s: tensor \"last_active\" is missing or is not %d I64 values", path, t->d_sae);
    ok = FALSE;
  }
  if (ok) memcpy(t->last_active, la->data, sizeof(int64_t) * (size_t)t->d_sae);
  guint64 v[9];
  const char *keys[9] = {"step", "next_resample", "fill_rng", "fill_pos", "seen", "resampled", "adam_step", "trainer_rng", NULL};
  for (int i = 0; ok && keys[i]; i++)
    if (!meta_int(st, keys[i], !strcmp(keys[i], "fill_rng") || !strcmp(keys[i], "trainer_rng"), &v[i])) {
      lmwb_input_error(error, "checkpoint %s: \"%s\" is missing or not a number", path, keys[i]);
      ok = FALSE;
    }
  const char *rx = ok ? lmwb_safetensors_metadata(st, "rho_x") : NULL, *ry = ok ? lmwb_safetensors_metadata(st, "rho_y") : NULL;
  if (ok) {
    t->rho_x = rx ? g_ascii_strtod(rx, NULL) : NAN;
    t->rho_y = ry ? g_ascii_strtod(ry, NULL) : NAN;
    if (!(t->rho_x > 0) || !(t->rho_y > 0) || !isfinite(t->rho_x) || !isfinite(t->rho_y)) {
      lmwb_input_error(error, "checkpoint %s: the normalisers rho_x, rho_y are missing or not positive", path);
      ok = FALSE;
    }
  }
  if (ok) {
    pos->step = (int64_t)v[0], pos->next_resample = (int64_t)v[1], pos->fill_rng = v[2], pos->fill_pos = (int)v[3];
    t->seen = (int64_t)v[4], t->resampled = (int64_t)v[5], t->adam->step = (int64_t)v[6], t->rng = v[7];
    t->initialised = TRUE;
  }
  lmwb_safetensors_close(st);
  /* read only to be continued and replaced by this run */
  lmwb_input_guard_forget(path);
  return ok;
}

/* Resampling and the final measure read at most this many rows of a fill (its first windows, drawn
 * at random positions): a second or less of work, so that cancel stays prompt. */
#define SAMPLE_MAX 16384
static int sample_rows(const Plan *p) { return (int)MIN(p->fill_tokens, (size_t)SAMPLE_MAX); }

/* ---- the run -------------------------------------------------------------------------------------------- */

gboolean lmwb_tc_train(LmwbModel *m, const int32_t *ids, size_t n_ids, const LmwbTcTrainOptions *opt,
                       LmwbReporter *rep, LmwbTcTrainResult *res, GError **error) {
  memset(res, 0, sizeof *res);
  Plan p;
  if (!make_plan(m, n_ids, opt, &p, error)) return FALSE;
  const LmwbTcTrainOptions *o = &p.o;
  for (size_t i = 0; i < n_ids; i++)
    if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size) {
      lmwb_input_error(error, "transcoder training: token %zu of the text is %d, outside the vocabulary of %d", i, ids[i],
                       m->cfg.vocab_size);
      return FALSE;
    }
  LmwbTcTrainer *t = lmwb_tc_trainer_new(p.d_in, o->d_sae, p.d_out, p.sae, o, error);
  if (!t) return FALSE;
  GError *local = NULL;
  g_autofree char *sig = signature(&p, ids, n_ids);
  g_autofree char *ckpt_file = o->checkpoint_dir ? g_build_filename(o->checkpoint_dir, "state.safetensors", NULL) : NULL;
  Position pos = {.fill_rng = o->seed * 0xD1B54A32D192ED03ull + 0xF111, .next_resample = o->dead_window};
  Fill fill = {0};
  gboolean ok = FALSE;
  FILE *csv = NULL;
  if (!lmwb_tc_trainer_reserve(t, o->batch, &local)) goto done;
  if (ckpt_file && g_file_test(ckpt_file, G_FILE_TEST_EXISTS)) {
    if (!o->resume) {
      lmwb_input_error(&local, "%s already holds a checkpoint: resume it, or choose another output", o->checkpoint_dir);
      goto done;
    }
    if (!load_checkpoint(o->checkpoint_dir, t, &pos, sig, &local)) goto done;
    if (pos.step > p.steps || pos.fill_pos < 0 || pos.fill_pos >= p.per_fill) {
      lmwb_input_error(&local, "checkpoint %s: its position (step %" G_GINT64_FORMAT ") is outside this run", ckpt_file, pos.step);
      goto done;
    }
    lmwb_report_log(rep, "resuming from step %" G_GINT64_FORMAT, pos.step);
  }
  if (!fill_init(&fill, m, &p, &local)) goto done;
  const gboolean fresh = pos.step == 0;
  gint64 t0 = g_get_monotonic_time(), step_us = 0, steps_run = 0;
  gboolean have_fill = FALSE;
  guint64 next_fill_rng = 0;
  ok = TRUE;
  while (ok && pos.step < p.steps) {
    if (lmwb_reporter_cancelled(rep, NULL) || (o->max_steps_this_run > 0 && steps_run >= o->max_steps_this_run)) {
      ok = FALSE;
      break;
    }
    if (!have_fill) {
      guint64 r = pos.fill_rng;
      if (!fill_make(&fill, &p, ids, n_ids, &r, rep, (double)pos.step / p.steps, &local)) {
        ok = FALSE;
        break;
      }
      next_fill_rng = r;
      have_fill = TRUE;
      if (!t->initialised && !lmwb_tc_trainer_init(t, fill.X, fill.Y, (int)p.fill_tokens, o->seed, &local)) {
        ok = FALSE;
        break;
      }
    }
    fill_batch(&fill, &p, pos.fill_pos);
    double lr = lmwb_lr_schedule(pos.step, o->warmup, p.steps, o->lr, o->lr_min);
    double ss = o->sparsity_warmup > 0 ? MIN(1.0, (double)(pos.step + 1) / o->sparsity_warmup) : 1.0;
    LmwbTcStepStats st;
    gint64 ts = g_get_monotonic_time();
    lmwb_tc_trainer_step(t, fill.xb, fill.yb, o->batch, lr, ss, &st);
    gint64 us = g_get_monotonic_time() - ts;
    step_us += us;
    pos.step++, pos.fill_pos++, steps_run++;
    if (!isfinite(st.loss)) {
      g_set_error(&local, LMWB_ERROR, LMWB_ERROR_FAILED, "transcoder training: the loss is not finite at step %" G_GINT64_FORMAT
                  " (learning rate %g too high?)", pos.step, lr);
      ok = FALSE;
      break;
    }
    if (o->resample_every > 0 && t->seen >= pos.next_resample) {
      if ((double)pos.step < p.resample_until_step) {
        int nr = lmwb_tc_trainer_resample(t, o->dead_window, fill.X, fill.Y, sample_rows(&p));
        if (nr) lmwb_report_log(rep, "step %" G_GINT64_FORMAT ": resampled %d dead features", pos.step, nr);
      }
      while (pos.next_resample <= t->seen) pos.next_resample += o->resample_every;
    }
    double dead = (double)lmwb_tc_trainer_dead(t, o->dead_window, NULL) / o->d_sae;
    lmwb_report_metric(rep, "loss", (double)pos.step, st.loss);
    lmwb_report_metric(rep, "mse", (double)pos.step, st.mse);
    lmwb_report_metric(rep, "fvu", (double)pos.step, st.fvu);
    lmwb_report_metric(rep, "l0", (double)pos.step, st.l0);
    lmwb_report_metric(rep, "dead_fraction", (double)pos.step, dead);
    lmwb_report_metric(rep, "lr", (double)pos.step, lr);
    if (o->metrics_csv && !csv) {
      /* opened at the first step, so that a run refused or failing at its start writes nothing */
      g_autofree char *dir = g_path_get_dirname(o->metrics_csv);
      if (g_mkdir_with_parents(dir, 0755) != 0 || !(csv = fopen(o->metrics_csv, fresh ? "w" : "a"))) {
        lmwb_input_error(&local, "cannot write %s", o->metrics_csv);
        ok = FALSE;
        break;
      }
      if (fresh) fputs("step,tokens,lr,loss,mse,sparsity,fvu,l0,dead_fraction,resampled,sparse,step_seconds\n", csv);
    }
    if (csv) {
      fprintf(csv, "%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT ",%.6g,%.6g,%.6g,%.6g,%.6g,%.3f,%.5f,%" G_GINT64_FORMAT ",%d,%.4f\n",
              pos.step, t->seen, lr, st.loss, st.mse, st.sparsity, st.fvu, st.l0, dead, t->resampled, st.sparse ? 1 : 0,
              us / 1e6);
      fflush(csv);
    }
    char stage[96];
    g_snprintf(stage, sizeof stage, "step %" G_GINT64_FORMAT " FVU %.3f L0 %.1f", pos.step, st.fvu, st.l0);
    lmwb_report_progress(rep, (double)pos.step / p.steps, stage);
    if (pos.fill_pos == p.per_fill) {
      pos.fill_rng = next_fill_rng;
      pos.fill_pos = 0;
      have_fill = FALSE;
    }
    if (ckpt_file && pos.step % o->checkpoint_every == 0 && pos.step < p.steps)
      ok = save_checkpoint(o->checkpoint_dir, t, &pos, sig, &local);
  }
  if (!ok) {
    /* interrupted (cancel, max_steps_this_run): the checkpoint keeps every finished step */
    gboolean stopped = !local || g_error_matches(local, LMWB_ERROR, LMWB_ERROR_CANCELLED);
    if (stopped) {
      g_clear_error(&local);
      if (!t->initialised || !ckpt_file)
        g_set_error(&local, LMWB_ERROR, LMWB_ERROR_CANCELLED, "transcoder training stopped at step %" G_GINT64_FORMAT
                    "; nothing was saved", pos.step);
      else if (save_checkpoint(o->checkpoint_dir, t, &pos, sig, &local))
        g_set_error(&local, LMWB_ERROR, LMWB_ERROR_CANCELLED, "transcoder training stopped at step %" G_GINT64_FORMAT
                    "; the checkpoint is saved: resume to continue", pos.step);
    }
    goto done;
  }
  /* the final weights on one buffer fill: the current one, or a new one when it was used up */
  if (!have_fill) {
    guint64 r = pos.fill_rng;
    if (!fill_make(&fill, &p, ids, n_ids, &r, rep, 1.0, &local)) {
      ok = FALSE;
      goto done;
    }
    if (!t->initialised && !lmwb_tc_trainer_init(t, fill.X, fill.Y, (int)p.fill_tokens, o->seed, &local)) {
      ok = FALSE;
      goto done;
    }
  }
  lmwb_tc_trainer_measure(t, fill.X, fill.Y, sample_rows(&p), &res->mse, &res->fvu, &res->l0);
  res->tc = lmwb_tc_trainer_export(t, &local);
  if (!res->tc) {
    ok = FALSE;
    goto done;
  }
  res->tc->in = o->in;
  res->tc->out = o->out;
  res->tc->model_name = m->dir ? g_path_get_basename(m->dir) : g_strdup(m->cfg.model_type);
  res->steps = pos.step;
  res->tokens = t->seen;
  res->dead_fraction = (double)lmwb_tc_trainer_dead(t, o->dead_window, NULL) / o->d_sae;
  res->resampled = t->resampled;
  res->seconds = (g_get_monotonic_time() - t0) / 1e6;
  res->tokens_per_s = steps_run * (double)o->batch / MAX(res->seconds, 1e-9);
  res->step_tokens_per_s = steps_run * (double)o->batch / MAX(step_us / 1e6, 1e-9);
  lmwb_report_progress(rep, 1.0, "done");
done:
  if (csv) fclose(csv);
  fill_free(&fill);
  lmwb_tc_trainer_free(t);
  if (local) g_propagate_error(error, local);
  return ok;
}
