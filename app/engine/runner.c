/* The runner's state: buffers on the backend, the shape of the last run, hooks, readers, and the
 * shared pieces (norms, linears with low-rank changes) that the forward and backward bodies use.
 * Contract: runner.h. */
#include "app/engine/runner_internal.h"
#include "app/core/errors.h"
#include "app/core/memory.h"
#include <math.h>
#include <string.h>

#define NL(r) ((r)->c->n_layer)

gboolean rn_ensure(LmwbRunner *r, Buf *b, size_t n) {
  if (n <= b->cap && b->p) return TRUE;
  rn_buf_free(r, b);
  b->p = r->be->alloc(MAX(n, 1) * sizeof(float));
  if (!b->p) return FALSE;
  b->cap = MAX(n, 1);
  return TRUE;
}

void rn_buf_free(LmwbRunner *r, Buf *b) {
  if (b->p) r->be->free(b->p);
  b->p = NULL;
  b->cap = 0;
}

void rn_zero(LmwbRunner *r, Buf *b, size_t n) { r->be->zero(b->p, n * sizeof(float)); }
void rn_copy(LmwbRunner *r, float *dst, const float *src, size_t n) { r->be->copy(dst, src, n * sizeof(float)); }

static void layer_bufs_free(LmwbRunner *r, LayerBufs *l) {
  for (int k = 0; k < LMWB_SITE_N_KINDS; k++) rn_buf_free(r, &l->site[k]);
  for (int i = 0; i < 3; i++) {
    rn_buf_free(r, &l->ln1[i].mean);
    rn_buf_free(r, &l->ln1[i].rstd);
    rn_buf_free(r, &l->ln1_split[i]);
  }
  rn_buf_free(r, &l->ln2.mean);
  rn_buf_free(r, &l->ln2.rstd);
}

static void clear_stage(LmwbRunner *r) { g_hash_table_remove_all(r->stage); }

LmwbRunner *lmwb_runner_new(LmwbModel *m) {
  LmwbRunner *r = g_new0(LmwbRunner, 1);
  r->m = lmwb_model_ref(m);
  lmwb_model_seal(m);
  r->c = &m->cfg;
  r->be = m->be ? m->be : lmwb_backend_cpu();
  r->o = r->be->ops;
  r->hooks = lmwb_hook_list_new();
  int nl = m->cfg.n_layer;
  r->A = g_new0(LayerBufs, nl + 1);
  r->G = g_new0(LayerBufs, nl + 1);
  r->kc = g_new0(Buf, nl);
  r->vc = g_new0(Buf, nl);
  r->stage = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
  return r;
}

LmwbModel *lmwb_runner_model(LmwbRunner *r) { return r->m; }

void lmwb_runner_free(LmwbRunner *r) {
  if (!r) return;
  lmwb_hook_list_free(r->hooks);
  int nl = NL(r);
  for (int i = 0; i <= nl; i++) {
    layer_bufs_free(r, &r->A[i]);
    layer_bufs_free(r, &r->G[i]);
    if (r->acc) layer_bufs_free(r, &r->acc[i]);
  }
  for (int i = 0; i < nl; i++) {
    rn_buf_free(r, &r->kc[i]);
    rn_buf_free(r, &r->vc[i]);
  }
  Buf *singles[] = {&r->ids_d, &r->pos_ids_d, &r->lens_d, &r->logits, &r->last_rows, &r->rows_scratch,
                    &r->lr_scratch, &r->dlogits, &r->qr_grad, &r->kr_grad, &r->loss_targets, &r->loss_scale,
                    &r->loss_rows, &r->loss_ref, &r->loss_dl, &r->seed_scratch, &r->pgrad};
  for (size_t i = 0; i < G_N_ELEMENTS(singles); i++) rn_buf_free(r, singles[i]);
  g_free(r->A);
  g_free(r->G);
  g_free(r->acc);
  g_free(r->kc);
  g_free(r->vc);
  g_free(r->lens);
  g_free(r->ids);
  g_free(r->hook_stage);
  g_free(r->pgrad_host);
  g_hash_table_destroy(r->stage);
  lmwb_weights_free_views(&r->gw);
  lmwb_model_unref(r->m);
  g_free(r);
}

/* ---- hooks ------------------------------------------------------------------------------------- */

int lmwb_runner_add_hook(LmwbRunner *r, const LmwbHook *h, GError **error) {
  return lmwb_hook_list_add(r->hooks, r->c, h, error);
}

gboolean lmwb_runner_remove_hook(LmwbRunner *r, int id) { return lmwb_hook_list_remove(r->hooks, id); }
void lmwb_runner_clear_hooks(LmwbRunner *r) { lmwb_hook_list_clear(r->hooks); }

void rn_hooks(LmwbRunner *r, LmwbSite s, float *block, bool backward) {
  bool observe_only = false;
  if (lmwb_hook_list_count(r->hooks) == 0 || !lmwb_hook_list_at(r->hooks, s, &observe_only)) return;
  const LmwbConfig *c = r->c;
  LmwbHookCtx ctx = {.site = s, .B = r->B, .T = r->T, .past = r->past,
                     .rows_per_seq = lmwb_site_rows_per_seq(c, s.kind, r->T),
                     .R = lmwb_site_row_size(c, s.kind, r->Tk), .lens = r->lens, .ids = r->ids, .backward = backward};
  if (r->be->host_visible) {
    lmwb_hook_list_apply(r->hooks, block, &ctx);
    return;
  }
  size_t n = rn_site_numel(r, s.kind);
  if (n > r->hook_stage_n) {
    g_free(r->hook_stage);
    r->hook_stage = g_new(float, n);
    r->hook_stage_n = n;
  }
  r->be->to_host(r->hook_stage, block, n * sizeof(float));
  lmwb_hook_list_apply(r->hooks, r->hook_stage, &ctx);
  if (!observe_only) r->be->to_device(block, r->hook_stage, n * sizeof(float));
}

/* ---- sites ------------------------------------------------------------------------------------- */

bool rn_has(const LmwbRunner *r, LmwbSiteKind k) { return lmwb_site_in_run(r->c, k, r->run_sites); }

size_t rn_site_numel(const LmwbRunner *r, LmwbSiteKind k) {
  return (size_t)r->B * lmwb_site_rows_per_seq(r->c, k, r->T) * (size_t)lmwb_site_row_size(r->c, k, r->Tk);
}

float *rn_site(LmwbRunner *r, LayerBufs *set, LmwbSite s) {
  if (!rn_has(r, s.kind)) return NULL;
  if (s.kind == LMWB_SITE_RESID_PRE && s.layer > 0) s = (LmwbSite){LMWB_SITE_RESID_POST, s.layer - 1};
  int idx = lmwb_site_info(s.kind)->model_level ? NL(r) : s.layer;
  if (idx < 0 || idx > NL(r)) return NULL;
  return set[idx].site[s.kind].p;
}

/* ---- allocation -------------------------------------------------------------------------------- */

static size_t site_alloc_numel(const LmwbRunner *r, LmwbSiteKind k, int layer) {
  if (!rn_has(r, k)) return 0;
  if (k == LMWB_SITE_RESID_PRE && layer > 0) return 0; /* the previous layer's resid_post */
  return rn_site_numel(r, k);
}

/* Floats of the activations (grads: the gradient buffers) of a run of the current shape. */
static uint64_t run_floats(const LmwbRunner *r, gboolean grads) {
  const LmwbConfig *c = r->c;
  uint64_t N = (uint64_t)r->B * r->T, total = 0;
  for (int l = 0; l <= NL(r); l++)
    for (int k = 0; k < LMWB_SITE_N_KINDS; k++) {
      gboolean model_level = lmwb_site_info(k)->model_level;
      if (model_level == (l == NL(r))) total += site_alloc_numel(r, k, l);
    }
  uint64_t split = (r->run_sites & LMWB_RUN_SPLIT_QKV) ? N * (uint64_t)c->d_model * (c->n_head + 2 * c->n_kv_head) : 0;
  uint64_t V = c->vocab_size;
  if (grads) return total + split * NL(r) + N * V + 2 * N * (uint64_t)c->n_head * c->head_dim;
  return total + split * NL(r) + (r->last_only ? (uint64_t)r->B * V : N * V) + N * 8 * NL(r);
}

static gboolean alloc_sites(LmwbRunner *r, LayerBufs *set, gboolean with_norm_stats) {
  const LmwbConfig *c = r->c;
  size_t N = (size_t)r->B * r->T, C = c->d_model;
  gboolean split = (r->run_sites & LMWB_RUN_SPLIT_QKV) != 0;
  int heads[3] = {c->n_head, c->n_kv_head, c->n_kv_head};
  gboolean ok = TRUE;
  for (int l = 0; ok && l <= NL(r); l++) {
    LayerBufs *b = &set[l];
    for (int k = 0; ok && k < LMWB_SITE_N_KINDS; k++) {
      if (lmwb_site_info(k)->model_level != (l == NL(r))) continue;
      size_t n = site_alloc_numel(r, k, l);
      if (n) ok = rn_ensure(r, &b->site[k], n);
    }
    if (l == NL(r)) {
      if (with_norm_stats) ok = ok && rn_ensure(r, &b->ln2.mean, N) && rn_ensure(r, &b->ln2.rstd, N);
      continue;
    }
    for (int i = 0; ok && i < (split ? 3 : 0); i++) ok = rn_ensure(r, &b->ln1_split[i], N * heads[i] * C);
    if (with_norm_stats) {
      for (int i = 0; ok && i < (split ? 3 : 1); i++)
        ok = rn_ensure(r, &b->ln1[i].mean, N * (split ? heads[i] : 1)) && rn_ensure(r, &b->ln1[i].rstd, N * (split ? heads[i] : 1));
      ok = ok && rn_ensure(r, &b->ln2.mean, N) && rn_ensure(r, &b->ln2.rstd, N);
    }
  }
  return ok;
}

static int max_lowrank(const LmwbRunner *r) {
  int mx = 0;
  if (!r->w->lowrank) return 0;
  for (int l = 0; l < NL(r); l++) {
    const LmwbLayerLowRank *lr = &r->w->lowrank[l];
    const LmwbLowRank *all[] = {lr->wq, lr->wk, lr->wv, lr->wo, lr->w_up, lr->w_gate, lr->w_down};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
      for (const LmwbLowRank *x = all[i]; x; x = x->next) mx = MAX(mx, x->rank);
  }
  return mx;
}

static gboolean alloc_forward(LmwbRunner *r, GError **error) {
  const LmwbConfig *c = r->c;
  size_t N = (size_t)r->B * r->T, C = c->d_model, V = c->vocab_size;
  uint64_t total = run_floats(r, FALSE) * sizeof(float);
  if (!lmwb_memory_check(total, "the activations of this batch", error)) return FALSE;
  gboolean ok = alloc_sites(r, r->A, TRUE) && rn_ensure(r, &r->ids_d, N) && rn_ensure(r, &r->pos_ids_d, N) &&
                rn_ensure(r, &r->lens_d, r->B) && rn_ensure(r, &r->lr_scratch, N * (size_t)MAX(1, max_lowrank(r)));
  ok = ok && (r->last_only ? rn_ensure(r, &r->last_rows, (size_t)r->B * V) && rn_ensure(r, &r->rows_scratch, (size_t)r->B * C)
                           : rn_ensure(r, &r->logits, N * V));
  if (!ok) lmwb_input_error(error, "out of %s memory for the activations of a %d x %d batch", r->be->name, r->B, r->T);
  return ok;
}

/* Make room in the KV cache for `need` positions per sequence, keeping what is there. */
static gboolean grow_cache(LmwbRunner *r, int B, int need, GError **error) {
  const LmwbConfig *c = r->c;
  if (need <= r->cache_cap_T && B == r->cache_B) return TRUE;
  int cap = MAX(need, MIN(c->n_ctx, MAX(64, r->cache_cap_T * 2)));
  int kd = c->n_kv_head * c->head_dim;
  for (int l = 0; l < NL(r); l++) {
    for (int which = 0; which < 2; which++) {
      Buf *old = which ? &r->vc[l] : &r->kc[l];
      Buf nb = {0};
      if (!rn_ensure(r, &nb, (size_t)B * cap * kd)) {
        lmwb_input_error(error, "out of %s memory for the KV cache", r->be->name);
        return FALSE;
      }
      if (old->p && B == r->cache_B && r->cache_len > 0)
        r->be->copy2d(nb.p, cap * kd, old->p, r->cache_cap_T * kd, B, r->cache_len * kd);
      rn_buf_free(r, old);
      *old = nb;
    }
  }
  r->cache_cap_T = cap;
  r->cache_B = B;
  return TRUE;
}

/* ---- norms and linears ------------------------------------------------------------------------- */

void rn_norm_fwd(const LmwbBackend *be, const LmwbConfig *c, float *out, NormStats *st, const float *x,
                 const float *w, const float *b, int n) {
  if (c->norm == LMWB_NORM_LAYER) be->ops->layernorm_fwd(out, st->mean.p, st->rstd.p, x, w, b, n, c->d_model, c->norm_eps);
  else be->ops->rmsnorm_fwd(out, st->rstd.p, x, w, n, c->d_model, c->norm_eps);
}

void rn_norm_bwd(LmwbRunner *r, float *dx, float *dw, float *db, const float *dout, const float *x, const float *w,
                 NormStats *st, int n, bool freeze) {
  const LmwbConfig *c = r->c;
  if (c->norm == LMWB_NORM_LAYER) r->o->layernorm_bwd(dx, dw, db, dout, x, w, st->mean.p, st->rstd.p, n, c->d_model, freeze);
  else r->o->rmsnorm_bwd(dx, dw, dout, x, w, st->rstd.p, n, c->d_model, freeze);
}

void rn_head_linear_fwd(LmwbRunner *r, float *y, int ldy, const float *x, int ldx, const float *W, int ldw,
                        const LmwbLowRank *lr, int u_row, int v_row, int N, int in, int out) {
  const LmwbBackend *be = r->be;
  be->sgemm(false, true, N, out, in, 1.f, x, ldx, W, ldw, 0.f, y, ldy);
  for (; lr; lr = lr->next) {
    float *t = r->lr_scratch.p; /* [N, rank] */
    be->sgemm(false, false, N, lr->rank, in, 1.f, x, ldx, lr->V + (size_t)v_row * lr->rank, lr->rank, 0.f, t, lr->rank);
    be->sgemm(false, true, N, out, lr->rank, 1.f, t, lr->rank, lr->U + (size_t)u_row * lr->rank, lr->rank, 1.f, y, ldy);
  }
}

void rn_head_linear_bwd(LmwbRunner *r, float *dx, int ldx, float *dW, const float *dy, int ldy, const float *x,
                        const float *W, int ldw, const LmwbLowRank *lr, int u_row, int v_row, int N, int in, int out) {
  const LmwbBackend *be = r->be;
  if (dx) {
    be->sgemm(false, false, N, in, out, 1.f, dy, ldy, W, ldw, 1.f, dx, ldx);
    for (; lr; lr = lr->next) {
      float *t = r->lr_scratch.p;
      be->sgemm(false, false, N, lr->rank, out, 1.f, dy, ldy, lr->U + (size_t)u_row * lr->rank, lr->rank, 0.f, t, lr->rank);
      be->sgemm(false, true, N, in, lr->rank, 1.f, t, lr->rank, lr->V + (size_t)v_row * lr->rank, lr->rank, 1.f, dx, ldx);
    }
  }
  if (dW) be->sgemm(true, false, out, in, N, 1.f, dy, ldy, x, ldx, 1.f, dW, ldw);
}

void rn_linear_fwd(LmwbRunner *r, float *y, const float *x, const float *W, const LmwbLowRank *lr, const float *b,
                   int N, int in, int out) {
  r->o->linear_fwd(y, x, W, b, N, in, out);
  for (; lr; lr = lr->next) {
    float *t = r->lr_scratch.p;
    r->be->sgemm(false, false, N, lr->rank, in, 1.f, x, in, lr->V, lr->rank, 0.f, t, lr->rank);
    r->be->sgemm(false, true, N, out, lr->rank, 1.f, t, lr->rank, lr->U, lr->rank, 1.f, y, out);
  }
}

static void lowrank_bwd(LmwbRunner *r, float *dx, const float *dy, const LmwbLowRank *lr, int N, int in, int out) {
  for (; lr; lr = lr->next) {
    float *t = r->lr_scratch.p;
    r->be->sgemm(false, false, N, lr->rank, out, 1.f, dy, out, lr->U, lr->rank, 0.f, t, lr->rank);
    r->be->sgemm(false, true, N, in, lr->rank, 1.f, t, lr->rank, lr->V, lr->rank, 1.f, dx, in);
  }
}

void rn_linear_bwd_fresh(LmwbRunner *r, float *dx, float *dW, float *db, const float *dy, const float *x,
                         const float *W, const LmwbLowRank *lr, int N, int in, int out) {
  r->be->sgemm(false, false, N, in, out, 1.f, dy, out, W, in, 0.f, dx, in); /* dx = dy W */
  r->o->linear_bwd(NULL, dW, db, dy, x, W, N, in, out);
  lowrank_bwd(r, dx, dy, lr, N, in, out);
}

void rn_linear_bwd(LmwbRunner *r, float *dx, float *dW, float *db, const float *dy, const float *x, const float *W,
                   const LmwbLowRank *lr, int N, int in, int out) {
  r->o->linear_bwd(dx, dW, db, dy, x, W, N, in, out);
  if (dx) lowrank_bwd(r, dx, dy, lr, N, in, out);
}


/* ---- forward ----------------------------------------------------------------------------------- */

static gboolean check_forward(LmwbRunner *r, const int32_t *ids, int B, int T, const LmwbForwardOptions *opt,
                              int past, GError **error) {
  const LmwbConfig *c = r->c;
  if (B < 1 || T < 1) {
    lmwb_input_error(error, "empty batch (%d sequences of %d tokens)", B, T);
    return FALSE;
  }
  /* Token counts are indexed in int, and the attention pattern (B x heads x T x Tk) must not
   * overflow the size arithmetic of the memory check. */
  if ((int64_t)B * T > G_MAXINT32 / 4 || (double)B * c->n_head * T * ((double)T + past) > 1e17) {
    lmwb_input_error(error, "a batch of %d sequences of %d tokens is too large", B, T);
    return FALSE;
  }
  if (opt->use_cache && past > 0 && B != r->cache_B) {
    lmwb_input_error(error, "the KV cache holds %d sequences, not %d", r->cache_B, B);
    return FALSE;
  }
  if ((int64_t)past + T > c->n_ctx) {
    lmwb_input_error(error, "sequence of %d tokens exceeds the model's context of %d", past + T, c->n_ctx);
    return FALSE;
  }
  for (int64_t i = 0; i < (int64_t)B * T; i++) {
    if (ids[i] < 0 || ids[i] >= c->vocab_size) {
      lmwb_input_error(error, "token id %d (sequence %d, position %d) is out of range: the vocabulary has ids 0..%d",
                       ids[i], (int)(i / T), (int)(i % T), c->vocab_size - 1);
      return FALSE;
    }
  }
  if (opt->lens) {
    if (opt->use_cache) {
      lmwb_input_error(error, "per-sequence lengths cannot be combined with the KV cache");
      return FALSE;
    }
    for (int b = 0; b < B; b++)
      if (opt->lens[b] < 1 || opt->lens[b] > T) {
        lmwb_input_error(error, "length %d of sequence %d is not in 1..%d", opt->lens[b], b, T);
        return FALSE;
      }
  }
  if (opt->sites & ~(unsigned)(LMWB_RUN_ATTN_RESULT | LMWB_RUN_SPLIT_QKV | LMWB_RUN_MLP_IN)) {
    lmwb_input_error(error, "unknown optional sites %#x", opt->sites);
    return FALSE;
  }
  return lmwb_hook_list_check_run(r->hooks, c, B, T, error);
}

gboolean lmwb_runner_forward(LmwbRunner *r, const int32_t *ids, int B, int T, const LmwbForwardOptions *opt,
                             GError **error) {
  static const LmwbForwardOptions defaults = {0};
  if (!opt) opt = &defaults;
  r->have_forward = FALSE;
  r->have_grads = FALSE;
  clear_stage(r);
  int past = opt->use_cache ? r->cache_len : 0;
  if (!check_forward(r, ids, B, T, opt, past, error)) return FALSE;
  r->w = lmwb_model_weights_on(r->m, r->be, error);
  if (!r->w) return FALSE;
  if (r->B != B || r->T != T) r->grad_valid = FALSE;
  if (r->acc_active && (r->acc_B != B || r->acc_T != T)) r->acc_active = FALSE;
  r->B = B;
  r->T = T;
  r->past = past;
  r->Tk = past + T;
  r->cached = opt->use_cache;
  r->last_only = opt->last_logits_only;
  r->run_sites = opt->sites | lmwb_hook_list_run_sites(r->hooks);
  if (!alloc_forward(r, error)) return FALSE;
  if (opt->use_cache && !grow_cache(r, B, past + T, error)) return FALSE;
  size_t N = (size_t)B * T;
  g_free(r->ids);
  r->ids = g_memdup2(ids, N * sizeof(int32_t));
  g_clear_pointer(&r->lens, g_free);
  if (opt->lens) r->lens = g_memdup2(opt->lens, (size_t)B * sizeof(int));
  r->be->to_device(r->ids_d.p, ids, N * sizeof(int32_t));
  if (r->lens) r->be->to_device(r->lens_d.p, r->lens, (size_t)B * sizeof(int));
  if (r->c->learned_pos) {
    g_autofree int32_t *pid = g_new(int32_t, N);
    for (size_t i = 0; i < N; i++) pid[i] = past + (int32_t)(i % T);
    r->be->to_device(r->pos_ids_d.p, pid, N * sizeof(int32_t));
  }
  rn_forward_body(r);
  if (opt->use_cache) r->cache_len = past + T;
  r->have_forward = TRUE;
  return TRUE;
}

int lmwb_runner_cache_length(const LmwbRunner *r) { return r->cache_len; }
void lmwb_runner_reset_cache(LmwbRunner *r) { r->cache_len = 0; }

/* ---- readers ----------------------------------------------------------------------------------- */

/* Host memory for a device block: the block itself on a host-visible backend, else a copy kept
 * until the next forward or backward. */
static const float *host_view(LmwbRunner *r, gconstpointer key, const float *dev, size_t n) {
  if (r->be->host_visible) return dev;
  float *h = g_hash_table_lookup(r->stage, key);
  if (!h) {
    h = g_new(float, MAX(n, 1));
    g_hash_table_insert(r->stage, (gpointer)key, h);
  }
  r->be->to_host(h, dev, n * sizeof(float));
  return h;
}

static gconstpointer stage_key(int what, LmwbSite s) {
  return GSIZE_TO_POINTER(((gsize)what << 24) | ((gsize)(s.layer + 1) << 8) | (gsize)s.kind);
}

const float *lmwb_runner_logits(LmwbRunner *r, int *rows) {
  int n = r->last_only ? r->B : r->B * r->T;
  if (rows) *rows = n;
  const float *p = r->last_only ? r->last_rows.p : r->logits.p;
  return host_view(r, stage_key(3, (LmwbSite){0, -1}), p, (size_t)n * r->c->vocab_size);
}

static const float *site_reader(LmwbRunner *r, LmwbSite s, gboolean grad, int64_t shape[4], int *ndim,
                                GError **error) {
  g_autofree char *nm = lmwb_site_name(s);
  const LmwbSiteInfo *si = lmwb_site_info(s.kind);
  if (!si || (si->model_level ? s.layer != -1 : (s.layer < 0 || s.layer >= NL(r)))) {
    lmwb_input_error(error, "no such site (kind %d, layer %d)", (int)s.kind, s.layer);
    return NULL;
  }
  if (!rn_has(r, s.kind)) {
    if (!lmwb_site_exists(r->c, s.kind))
      lmwb_input_error(error, "hook %s does not exist in this %s model", nm, r->c->model_type);
    else if (s.kind == LMWB_SITE_LN1)
      lmwb_input_error(error, "%s: with split q/k/v inputs the norm runs per head (read hook_q_input and the others)", nm);
    else
      lmwb_input_error(error, "%s was not computed: ask the run for it (LmwbForwardOptions.sites, --sites)", nm);
    return NULL;
  }
  LayerBufs *set = r->A;
  if (grad) {
    if (!r->have_grads && !r->acc_active) {
      lmwb_input_error(error, "no backward pass has been run since the last forward");
      return NULL;
    }
    if (!si->model_level ? s.layer < r->grad_low_layer : (s.kind != LMWB_SITE_LN_FINAL && r->grad_low_layer > 0)) {
      lmwb_input_error(error, "%s has no gradient: the last backward stopped at layer %d", nm, r->grad_low_layer);
      return NULL;
    }
    set = r->acc_active ? r->acc : r->G;
  }
  const float *p = rn_site(r, set, s);
  int nd = lmwb_site_shape(r->c, s.kind, r->B, r->T, r->Tk, shape);
  if (ndim) *ndim = nd;
  return host_view(r, stage_key(grad ? 2 : 1, s), p, rn_site_numel(r, s.kind));
}

const float *lmwb_runner_activation(LmwbRunner *r, LmwbSite s, int64_t shape[4], int *ndim, GError **error) {
  if (!r->have_forward) {
    lmwb_input_error(error, "no forward pass has been run");
    return NULL;
  }
  return site_reader(r, s, FALSE, shape, ndim, error);
}

const float *lmwb_runner_grad(LmwbRunner *r, LmwbSite s, int64_t shape[4], int *ndim, GError **error) {
  return site_reader(r, s, TRUE, shape, ndim, error);
}

float *lmwb_runner_param_grads(LmwbRunner *r) {
  if (!r->pgrad.p) return NULL;
  if (r->be->host_visible) return r->pgrad.p;
  if (!r->pgrad_host) r->pgrad_host = g_new(float, r->m->n_params);
  r->be->to_host(r->pgrad_host, r->pgrad.p, r->m->n_params * sizeof(float));
  return r->pgrad_host;
}

/* ---- backward entry points --------------------------------------------------------------------- */

static gboolean alloc_backward(LmwbRunner *r, const LmwbBackwardOptions *opt, GError **error) {
  const LmwbConfig *c = r->c;
  size_t N = (size_t)r->B * r->T, V = c->vocab_size, qd = (size_t)c->n_head * c->head_dim,
         kd = (size_t)c->n_kv_head * c->head_dim;
  uint64_t total = run_floats(r, TRUE) * sizeof(float);
  if (opt->param_grads && !r->pgrad.p) total += r->m->n_params * sizeof(float);
  if (opt->accumulate_grads && !r->acc) total += run_floats(r, TRUE) * sizeof(float);
  if (!lmwb_memory_check(total, "the gradients of this batch", error)) return FALSE;
  gboolean ok = alloc_sites(r, r->G, FALSE) && rn_ensure(r, &r->qr_grad, N * qd) && rn_ensure(r, &r->kr_grad, N * kd);
  if (ok && !r->last_only) ok = rn_ensure(r, &r->dlogits, N * V);
  if (ok && opt->accumulate_grads) {
    if (!r->acc) r->acc = g_new0(LayerBufs, NL(r) + 1);
    ok = alloc_sites(r, r->acc, FALSE);
  }
  if (ok && opt->param_grads && !r->pgrad.p) {
    ok = rn_ensure(r, &r->pgrad, r->m->n_params);
    if (ok) {
      rn_zero(r, &r->pgrad, r->m->n_params);
      lmwb_model_layout_views(r->m, r->pgrad.p, &r->gw);
    }
  }
  if (!ok) lmwb_input_error(error, "out of %s memory for gradients", r->be->name);
  return ok;
}

static gboolean check_backward(LmwbRunner *r, gboolean from_logits, GError **error) {
  if (!r->have_forward || r->cached || r->past != 0 || (from_logits && r->last_only)) {
    lmwb_input_error(error, "backward needs a forward pass without the KV cache%s",
                     from_logits ? " and with all logits" : "");
    return FALSE;
  }
  return TRUE;
}

/* Accumulated gradients: before a backward with accumulate_grads, the sum so far is in r->acc
 * (or becomes the last backward's gradients); after it, this backward's are added. */
static void acc_begin(LmwbRunner *r, const LmwbBackwardOptions *opt) {
  if (!opt->accumulate_grads) {
    r->acc_active = FALSE;
    return;
  }
  if (r->acc_active) return;
  for (int l = 0; l <= NL(r); l++)
    for (int k = 0; k < LMWB_SITE_N_KINDS; k++) {
      Buf *a = &r->acc[l].site[k], *g = &r->G[l].site[k];
      if (!a->p) continue;
      size_t n = (lmwb_site_info(k)->model_level == (l == NL(r))) ? site_alloc_numel(r, k, l) : 0;
      if (!n) continue;
      if (r->grad_valid) rn_copy(r, a->p, g->p, n);
      else rn_zero(r, a, n);
    }
}

static void acc_end(LmwbRunner *r, const LmwbBackwardOptions *opt) {
  if (!opt->accumulate_grads) return;
  for (int l = 0; l <= NL(r); l++)
    for (int k = 0; k < LMWB_SITE_N_KINDS; k++) {
      size_t n = (lmwb_site_info(k)->model_level == (l == NL(r))) ? site_alloc_numel(r, k, l) : 0;
      if (n) r->o->add(r->acc[l].site[k].p, r->acc[l].site[k].p, r->G[l].site[k].p, n);
    }
  r->acc_active = TRUE;
  r->acc_B = r->B;
  r->acc_T = r->T;
}

static gboolean backward_common(LmwbRunner *r, const LmwbGradSeed *seeds, int n_seeds, int top,
                                const LmwbBackwardOptions *opt, GError **error) {
  acc_begin(r, opt);
  if (!rn_backward_body(r, seeds, n_seeds, top, opt, error)) return FALSE;
  acc_end(r, opt);
  r->have_grads = TRUE;
  r->grad_valid = TRUE;
  return TRUE;
}

static gboolean check_options(LmwbRunner *r, const LmwbBackwardOptions *opt, GError **error) {
  if (opt->stop_layer < 0 || opt->stop_layer >= NL(r)) {
    lmwb_input_error(error, "backward: stop_layer %d is not in 0..%d", opt->stop_layer, NL(r) - 1);
    return FALSE;
  }
  if (opt->freeze & ~(unsigned)(LMWB_FREEZE_PATTERN | LMWB_FREEZE_NORM | LMWB_FREEZE_MLP | LMWB_FREEZE_MLP_OUT)) {
    lmwb_input_error(error, "backward: unknown freeze flags %#x", opt->freeze);
    return FALSE;
  }
  return TRUE;
}

gboolean lmwb_runner_backward(LmwbRunner *r, const LmwbLoss *terms, int n_terms, const LmwbBackwardOptions *opt,
                              double *loss_value, GError **error) {
  static const LmwbBackwardOptions defaults = {0};
  if (!opt) opt = &defaults;
  if (!check_backward(r, TRUE, error) || !check_options(r, opt, error)) return FALSE;
  if (n_terms < 1 || !terms) {
    lmwb_input_error(error, "backward: no loss terms");
    return FALSE;
  }
  clear_stage(r);
  if (!alloc_backward(r, opt, error)) return FALSE;
  double lv = 0;
  if (!rn_loss_backward(r, terms, n_terms, &lv, error)) return FALSE;
  if (loss_value) *loss_value = lv;
  return backward_common(r, NULL, 0, NL(r), opt, error);
}

gboolean lmwb_runner_backward_from(LmwbRunner *r, const LmwbGradSeed *seeds, int n_seeds,
                                   const LmwbBackwardOptions *opt, GError **error) {
  static const LmwbBackwardOptions defaults = {0};
  if (!opt) opt = &defaults;
  if (!check_backward(r, FALSE, error) || !check_options(r, opt, error)) return FALSE;
  if (n_seeds < 1 || !seeds) {
    lmwb_input_error(error, "backward: no gradients to start from");
    return FALSE;
  }
  int top = -1;
  for (int i = 0; i < n_seeds; i++) {
    LmwbSite s = seeds[i].site;
    const LmwbSiteInfo *si = lmwb_site_info(s.kind);
    if (!si || !seeds[i].grad || (si->model_level ? s.layer != -1 : (s.layer < 0 || s.layer >= NL(r))) ||
        !rn_has(r, s.kind)) {
      g_autofree char *nm = si ? lmwb_site_name(s) : g_strdup("(unknown)");
      lmwb_input_error(error, "backward: gradient %d is at %s, which the last forward did not compute", i, nm);
      return FALSE;
    }
    if (s.layer < opt->stop_layer && !(si->model_level && s.kind == LMWB_SITE_LN_FINAL)) {
      g_autofree char *nm = lmwb_site_name(s);
      lmwb_input_error(error, "backward: gradient %d is at %s, below stop_layer %d", i, nm, opt->stop_layer);
      return FALSE;
    }
    int l = s.kind == LMWB_SITE_LN_FINAL ? NL(r) : s.layer;
    top = MAX(top, l);
  }
  clear_stage(r);
  if (!alloc_backward(r, opt, error)) return FALSE;
  return backward_common(r, seeds, n_seeds, top, opt, error);
}

/* ---- token losses and the unembedding ------------------------------------------------------------ */

int32_t *rn_make_targets(const LmwbRunner *r, const int32_t *explicit_targets) {
  size_t N = (size_t)r->B * r->T;
  int32_t *tg = g_new(int32_t, N);
  for (int b = 0; b < r->B; b++) {
    int len = r->lens ? r->lens[b] : r->T;
    for (int t = 0; t < r->T; t++) {
      size_t i = (size_t)b * r->T + t;
      if (explicit_targets) tg[i] = t < len ? explicit_targets[i] : -1;
      else tg[i] = t + 1 < len ? r->ids[i + 1] : -1;
    }
  }
  return tg;
}

size_t lmwb_runner_token_losses(LmwbRunner *r, const int32_t *targets, float *out) {
  size_t N = (size_t)r->B * r->T;
  g_autofree int32_t *tg = rn_make_targets(r, targets);
  if (!rn_ensure(r, &r->loss_targets, N) || !rn_ensure(r, &r->loss_scale, N)) {
    for (size_t i = 0; i < N; i++) out[i] = NAN;
    return 0;
  }
  r->be->to_device(r->loss_targets.p, tg, N * sizeof(int32_t));
  r->o->xent_fwd(r->loss_scale.p, r->logits.p, (const int32_t *)r->loss_targets.p, (int)N, r->c->vocab_size);
  r->be->to_host(out, r->loss_scale.p, N * sizeof(float));
  size_t n = 0;
  for (size_t i = 0; i < N; i++) {
    if (tg[i] < 0 || tg[i] >= r->c->vocab_size) out[i] = NAN;
    else n++;
  }
  return n;
}

gboolean lmwb_model_unembed(const LmwbModel *m, const float *x, int n, float *logits, GError **error) {
  const LmwbConfig *c = &m->cfg;
  const LmwbBackend *cpu = lmwb_backend_cpu();
  float *normed = g_try_new(float, (size_t)n * c->d_model);
  NormStats st = {{g_try_new(float, MAX(n, 1)), (size_t)n}, {g_try_new(float, MAX(n, 1)), (size_t)n}};
  gboolean ok = normed && st.mean.p && st.rstd.p;
  if (ok) {
    rn_norm_fwd(cpu, c, normed, &st, x, m->w.lnf_w, m->w.lnf_b, n);
    cpu->ops->linear_fwd(logits, normed, m->w.head, NULL, n, c->d_model, c->vocab_size);
  } else {
    lmwb_input_error(error, "out of memory for the unembedding of %d rows", n);
  }
  g_free(normed);
  g_free(st.mean.p);
  g_free(st.rstd.p);
  return ok;
}
