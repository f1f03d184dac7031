/* The transformer body. Forward keeps every activation (they are the hook sites and what
 * backward needs); backward walks the same blocks in reverse with the op table's backward pairs.
 * Residual stream: res[0] = embeddings, res[L+1] = resid_post of layer L = resid_pre of L+1. */
#include "app/engine/runner.h"
#include "app/core/errors.h"
#include "app/core/memory.h"
#include <math.h>
#include <string.h>

typedef struct {
  float *p;
  size_t cap; /* floats */
} Buf;

typedef struct {
  Buf ln1, ln1_mean, ln1_rstd, q, k, v, qr, kr, pattern, z, attn_out, resid_mid;
  Buf ln2, ln2_mean, ln2_rstd, pre, pre_lin, post, mlp_out;
} LayerBufs;

typedef struct {
  LmwbHook h; /* a copy that owns its position/index/value arrays */
} HookEntry;

struct LmwbRunner {
  LmwbModel *m;
  const LmwbBackend *be;
  const LmwbOps *o;
  GArray *hooks; /* HookEntry */
  /* shape of the last forward */
  int B, T, past, Tk;
  gboolean last_only, cached, have_forward;
  int *lens;
  int32_t *ids;
  Buf ids_buf, lens_buf, pos_ids;
  /* activations */
  Buf embed, pos, lnf, lnf_mean, lnf_rstd, logits, last_rows;
  Buf *res;
  LayerBufs *L;
  /* KV cache (rotated keys, values): [B, cap_T, kd] per layer */
  Buf *kc, *vc;
  int cache_len, cache_B, cache_cap_T;
  /* gradients */
  Buf dembed, dpos, dlnf, dlogits, dscratch;
  Buf *dres;
  LayerBufs *dL;
  float *pgrad;
  LmwbWeights gw;
  gboolean have_grads;
};

static gboolean ensure(Buf *b, size_t n) {
  if (n <= b->cap) return TRUE;
  free(b->p);
  b->p = NULL;
  b->cap = 0;
  size_t bytes = ((n * sizeof(float)) + 63) & ~(size_t)63;
  if (posix_memalign((void **)&b->p, 64, bytes) != 0) {
    b->p = NULL;
    return FALSE;
  }
  b->cap = n;
  return TRUE;
}

static void buf_free(Buf *b) {
  free(b->p);
  b->p = NULL;
  b->cap = 0;
}

#define LAYER_BUF_COUNT (sizeof(LayerBufs) / sizeof(Buf))

static void layer_bufs_free(LayerBufs *l) {
  Buf *b = (Buf *)l;
  for (size_t i = 0; i < LAYER_BUF_COUNT; i++) buf_free(&b[i]);
}

LmwbRunner *lmwb_runner_new(LmwbModel *m) {
  LmwbRunner *r = g_new0(LmwbRunner, 1);
  r->m = m;
  r->be = m->be ? m->be : lmwb_backend_cpu();
  r->o = r->be->ops;
  r->hooks = g_array_new(FALSE, TRUE, sizeof(HookEntry));
  int nl = m->cfg.n_layer;
  r->res = g_new0(Buf, nl + 1);
  r->dres = g_new0(Buf, nl + 1);
  r->L = g_new0(LayerBufs, nl);
  r->dL = g_new0(LayerBufs, nl);
  r->kc = g_new0(Buf, nl);
  r->vc = g_new0(Buf, nl);
  return r;
}

LmwbModel *lmwb_runner_model(LmwbRunner *r) { return r->m; }

void lmwb_runner_clear_hooks(LmwbRunner *r) {
  for (guint i = 0; i < r->hooks->len; i++) {
    HookEntry *e = &g_array_index(r->hooks, HookEntry, i);
    g_free((void *)e->h.positions);
    g_free((void *)e->h.indices);
    g_free((void *)e->h.values);
  }
  g_array_set_size(r->hooks, 0);
}

void lmwb_runner_free(LmwbRunner *r) {
  if (!r) return;
  lmwb_runner_clear_hooks(r);
  g_array_free(r->hooks, TRUE);
  int nl = r->m->cfg.n_layer;
  for (int i = 0; i <= nl; i++) {
    buf_free(&r->res[i]);
    buf_free(&r->dres[i]);
  }
  for (int i = 0; i < nl; i++) {
    layer_bufs_free(&r->L[i]);
    layer_bufs_free(&r->dL[i]);
    buf_free(&r->kc[i]);
    buf_free(&r->vc[i]);
  }
  Buf *singles[] = {&r->ids_buf, &r->lens_buf, &r->pos_ids, &r->embed, &r->pos, &r->lnf, &r->lnf_mean,
                    &r->lnf_rstd, &r->logits, &r->last_rows, &r->dembed, &r->dpos, &r->dlnf,
                    &r->dlogits, &r->dscratch};
  for (size_t i = 0; i < G_N_ELEMENTS(singles); i++) buf_free(singles[i]);
  g_free(r->res);
  g_free(r->dres);
  g_free(r->L);
  g_free(r->dL);
  g_free(r->kc);
  g_free(r->vc);
  free(r->pgrad);
  lmwb_weights_free_views(&r->gw);
  g_free(r);
}

void lmwb_runner_add_hook(LmwbRunner *r, const LmwbHook *h) {
  HookEntry e = {*h};
  e.h.positions = h->positions ? g_memdup2(h->positions, sizeof(int) * h->n_positions) : NULL;
  e.h.indices = h->indices ? g_memdup2(h->indices, sizeof(int) * h->n_indices) : NULL;
  e.h.values = NULL;
  if (h->values) {
    int n = h->indices ? h->n_indices : lmwb_site_row_size(&r->m->cfg, h->site.kind, 0);
    e.h.values = g_memdup2(h->values, sizeof(float) * (size_t)n);
  }
  g_array_append_val(r->hooks, e);
}

/* ---- hooks at a site ---------------------------------------------------------------------- */

static gboolean site_eq(LmwbSite a, LmwbSite b) { return a.kind == b.kind && a.layer == b.layer; }

static void hook_ctx(const LmwbRunner *r, LmwbSite s, LmwbHookCtx *ctx) {
  const LmwbConfig *c = &r->m->cfg;
  ctx->site = s;
  ctx->B = r->B;
  ctx->T = r->T;
  ctx->past = r->past;
  ctx->lens = r->lens;
  ctx->rows_per_seq = s.kind == LMWB_SITE_PATTERN ? c->n_head * r->T : r->T;
  ctx->R = lmwb_site_row_size(c, s.kind, r->Tk);
}

static gboolean position_selected(const LmwbHook *h, int pos) {
  if (!h->positions) return TRUE;
  for (int i = 0; i < h->n_positions; i++)
    if (h->positions[i] == pos) return TRUE;
  return FALSE;
}

/* Forward (grad=FALSE) or backward (grad=TRUE: act is the gradient) of every hook at a site. */
static void run_hooks(LmwbRunner *r, LmwbSite s, float *act, gboolean grad) {
  guint n = r->hooks->len;
  if (n == 0) return;
  LmwbHookCtx ctx;
  hook_ctx(r, s, &ctx);
  for (guint k = 0; k < n; k++) {
    /* backward visits hooks in reverse order */
    HookEntry *e = &g_array_index(r->hooks, HookEntry, grad ? n - 1 - k : k);
    const LmwbHook *h = &e->h;
    if (!site_eq(h->site, s)) continue;
    if (h->op == LMWB_HOOK_CALL) {
      LmwbHookFn fn = grad ? h->bwd_fn : h->fn;
      if (fn) fn(act, &ctx, h->user);
      continue;
    }
    if (grad && h->op == LMWB_HOOK_ADD) continue; /* identity for the gradient */
    for (int b = 0; b < ctx.B; b++) {
      for (int rr = 0; rr < ctx.rows_per_seq; rr++) {
        int t = rr % ctx.T;
        if (!position_selected(h, ctx.past + t)) continue;
        float *row = act + ((size_t)b * ctx.rows_per_seq + rr) * (size_t)ctx.R;
        int cnt = h->indices ? h->n_indices : ctx.R;
        for (int i = 0; i < cnt; i++) {
          int j = h->indices ? h->indices[i] : i;
          if (j < 0 || j >= ctx.R) continue;
          float v = h->values ? h->values[i] : h->value;
          switch (h->op) {
            case LMWB_HOOK_SET: row[j] = grad ? 0.0f : v; break;
            case LMWB_HOOK_ADD: row[j] += v; break;
            case LMWB_HOOK_SCALE: row[j] *= v; break;
            default: break;
          }
        }
      }
    }
  }
}

/* ---- site -> buffer ------------------------------------------------------------------------ */

static float *site_ptr(LmwbRunner *r, LmwbSite s, gboolean grad) {
  const LmwbConfig *c = &r->m->cfg;
  Buf *res = grad ? r->dres : r->res;
  if (s.kind == LMWB_SITE_EMBED) return (grad ? &r->dembed : &r->embed)->p;
  if (s.kind == LMWB_SITE_POS_EMBED) return (grad ? &r->dpos : &r->pos)->p;
  if (s.kind == LMWB_SITE_LN_FINAL) return (grad ? &r->dlnf : &r->lnf)->p;
  if (s.kind == LMWB_SITE_RESID_PRE) return res[s.layer].p;
  if (s.kind == LMWB_SITE_RESID_POST) return res[s.layer + 1].p;
  LayerBufs *l = grad ? &r->dL[s.layer] : &r->L[s.layer];
  gboolean rope = !c->learned_pos;
  switch (s.kind) {
    case LMWB_SITE_LN1: return l->ln1.p;
    case LMWB_SITE_Q: return l->q.p;
    case LMWB_SITE_K: return l->k.p;
    case LMWB_SITE_V: return l->v.p;
    case LMWB_SITE_ROT_Q: return rope ? l->qr.p : NULL;
    case LMWB_SITE_ROT_K: return rope ? l->kr.p : NULL;
    case LMWB_SITE_PATTERN: return l->pattern.p;
    case LMWB_SITE_Z: return l->z.p;
    case LMWB_SITE_ATTN_OUT: return l->attn_out.p;
    case LMWB_SITE_RESID_MID: return l->resid_mid.p;
    case LMWB_SITE_LN2: return l->ln2.p;
    case LMWB_SITE_MLP_PRE: return l->pre.p;
    case LMWB_SITE_MLP_PRE_LINEAR: return l->pre_lin.p;
    case LMWB_SITE_MLP_POST: return l->post.p;
    case LMWB_SITE_MLP_OUT: return l->mlp_out.p;
    default: return NULL;
  }
}

static int site_shape(const LmwbRunner *r, LmwbSite s, int64_t shape[4]) {
  const LmwbConfig *c = &r->m->cfg;
  int B = r->B, T = r->T;
  switch (s.kind) {
    case LMWB_SITE_Q: case LMWB_SITE_ROT_Q: case LMWB_SITE_Z:
      shape[0] = B; shape[1] = T; shape[2] = c->n_head; shape[3] = c->head_dim; return 4;
    case LMWB_SITE_K: case LMWB_SITE_ROT_K: case LMWB_SITE_V:
      shape[0] = B; shape[1] = T; shape[2] = c->n_kv_head; shape[3] = c->head_dim; return 4;
    case LMWB_SITE_PATTERN:
      shape[0] = B; shape[1] = c->n_head; shape[2] = T; shape[3] = r->Tk; return 4;
    default:
      shape[0] = B; shape[1] = T; shape[2] = lmwb_site_row_size(c, s.kind, r->Tk); return 3;
  }
}

const float *lmwb_runner_activation(const LmwbRunner *r, LmwbSite s, int64_t shape[4], int *ndim, GError **error) {
  if (!r->have_forward) {
    lmwb_input_error(error, "no forward pass has been run");
    return NULL;
  }
  if (r->last_only && s.kind == LMWB_SITE_LN_FINAL) {
    lmwb_input_error(error, "ln_final.hook_normalized is only kept when all logits are computed");
    return NULL;
  }
  const float *p = site_ptr((LmwbRunner *)r, s, FALSE);
  if (!p) {
    g_autofree char *nm = lmwb_site_name(s);
    lmwb_input_error(error, "hook %s has no activation for this model", nm);
    return NULL;
  }
  int nd = site_shape(r, s, shape);
  if (ndim) *ndim = nd;
  return p;
}

const float *lmwb_runner_grad(const LmwbRunner *r, LmwbSite s, int64_t shape[4], int *ndim, GError **error) {
  if (!r->have_grads) {
    lmwb_input_error(error, "no backward pass has been run");
    return NULL;
  }
  const float *p = site_ptr((LmwbRunner *)r, s, TRUE);
  if (!p) {
    g_autofree char *nm = lmwb_site_name(s);
    lmwb_input_error(error, "hook %s has no gradient for this model", nm);
    return NULL;
  }
  int nd = site_shape(r, s, shape);
  if (ndim) *ndim = nd;
  return p;
}

const float *lmwb_runner_logits(const LmwbRunner *r, int *rows) {
  if (rows) *rows = r->last_only ? r->B : r->B * r->T;
  return r->last_only ? r->last_rows.p : r->logits.p;
}

float *lmwb_runner_param_grads(LmwbRunner *r) { return r->pgrad; }
int lmwb_runner_cache_length(const LmwbRunner *r) { return r->cache_len; }
void lmwb_runner_reset_cache(LmwbRunner *r) { r->cache_len = 0; }

/* ---- allocation ----------------------------------------------------------------------------- */

static gboolean alloc_forward(LmwbRunner *r, int B, int T, int Tk, GError **error) {
  const LmwbConfig *c = &r->m->cfg;
  size_t N = (size_t)B * T, C = c->d_model, F = c->d_ff, qd = (size_t)c->n_head * c->head_dim,
         kd = (size_t)c->n_kv_head * c->head_dim, V = c->vocab_size;
  size_t pat = (size_t)B * c->n_head * T * Tk;
  size_t per_layer = N * (7 * C + 2 * qd + 3 * kd + 3 * F + 4) + pat;
  size_t logits = r->last_only ? (size_t)B * V : N * V;
  uint64_t total = ((uint64_t)per_layer * c->n_layer + N * (4 * C) + logits) * sizeof(float);
  if (!lmwb_memory_check(total, "the activations of this batch", error)) return FALSE;
  gboolean ok = ensure(&r->embed, N * C) && ensure(&r->pos, N * C) && ensure(&r->lnf, N * C) &&
                ensure(&r->lnf_mean, N) && ensure(&r->lnf_rstd, N) && ensure(&r->pos_ids, N) &&
                ensure(&r->ids_buf, N) && ensure(&r->lens_buf, B);
  ok = ok && (r->last_only ? ensure(&r->last_rows, (size_t)B * V) && ensure(&r->dscratch, (size_t)B * C)
                           : ensure(&r->logits, N * V));
  for (int i = 0; ok && i <= c->n_layer; i++) ok = ensure(&r->res[i], N * C);
  gboolean rope = !c->learned_pos;
  for (int i = 0; ok && i < c->n_layer; i++) {
    LayerBufs *l = &r->L[i];
    ok = ensure(&l->ln1, N * C) && ensure(&l->ln1_mean, N) && ensure(&l->ln1_rstd, N) &&
         ensure(&l->q, N * qd) && ensure(&l->k, N * kd) && ensure(&l->v, N * kd) &&
         (!rope || (ensure(&l->qr, N * qd) && ensure(&l->kr, N * kd))) && ensure(&l->pattern, pat) &&
         ensure(&l->z, N * qd) && ensure(&l->attn_out, N * C) &&
         (c->parallel_residual || ensure(&l->resid_mid, N * C)) && ensure(&l->ln2, N * C) &&
         ensure(&l->ln2_mean, N) && ensure(&l->ln2_rstd, N) && ensure(&l->pre, N * F) &&
         (!c->gated_mlp || ensure(&l->pre_lin, N * F)) && ensure(&l->post, N * F) &&
         ensure(&l->mlp_out, N * C);
  }
  if (!ok) lmwb_input_error(error, "out of memory for the activations of a %d x %d batch", B, T);
  return ok;
}

/* Make room in the KV cache for `need` positions per sequence, keeping what is there. */
static gboolean grow_cache(LmwbRunner *r, int B, int need, GError **error) {
  const LmwbConfig *c = &r->m->cfg;
  if (need <= r->cache_cap_T && B == r->cache_B) return TRUE;
  int cap = MAX(need, MIN(c->n_ctx, MAX(64, r->cache_cap_T * 2)));
  size_t kd = (size_t)c->n_kv_head * c->head_dim;
  for (int l = 0; l < c->n_layer; l++) {
    for (int which = 0; which < 2; which++) {
      Buf *old = which ? &r->vc[l] : &r->kc[l];
      Buf nb = {0};
      if (!ensure(&nb, (size_t)B * cap * kd)) {
        lmwb_input_error(error, "out of memory for the KV cache");
        return FALSE;
      }
      if (old->p && B == r->cache_B)
        for (int b = 0; b < B; b++)
          memcpy(nb.p + (size_t)b * cap * kd, old->p + (size_t)b * r->cache_cap_T * kd,
                 (size_t)r->cache_len * kd * sizeof(float));
      buf_free(old);
      *old = nb;
    }
  }
  r->cache_cap_T = cap;
  r->cache_B = B;
  return TRUE;
}

/* ---- forward -------------------------------------------------------------------------------- */

static void add3(float *y, const float *a, const float *b, size_t n) {
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

static void norm_fwd(LmwbRunner *r, float *out, float *mean, float *rstd, const float *x, const float *w,
                     const float *b, int N) {
  const LmwbConfig *c = &r->m->cfg;
  if (c->norm == LMWB_NORM_LAYER) r->o->layernorm_fwd(out, mean, rstd, x, w, b, N, c->d_model, c->norm_eps);
  else r->o->rmsnorm_fwd(out, rstd, x, w, N, c->d_model, c->norm_eps);
}

static void norm_bwd(LmwbRunner *r, float *dx, float *dw, float *db, const float *dout, const float *x,
                     const float *w, const float *mean, const float *rstd, int N, gboolean freeze) {
  const LmwbConfig *c = &r->m->cfg;
  if (c->norm == LMWB_NORM_LAYER) r->o->layernorm_bwd(dx, dw, db, dout, x, w, mean, rstd, N, c->d_model, freeze);
  else r->o->rmsnorm_bwd(dx, dw, dout, x, w, rstd, N, c->d_model, freeze);
}

static LmwbSite S(LmwbSiteKind k, int l) { return (LmwbSite){k, l}; }

static void layer_forward(LmwbRunner *r, int l) {
  const LmwbConfig *c = &r->m->cfg;
  const LmwbOps *o = r->o;
  const LmwbLayerWeights *w = &r->m->w.layers[l];
  LayerBufs *a = &r->L[l];
  int B = r->B, T = r->T, N = B * T, C = c->d_model, F = c->d_ff, H = c->n_head, Hk = c->n_kv_head,
      hd = c->head_dim, qd = H * hd, kd = Hk * hd;
  const float *x = r->res[l].p;
  gboolean rope = !c->learned_pos;

  norm_fwd(r, a->ln1.p, a->ln1_mean.p, a->ln1_rstd.p, x, w->ln1_w, w->ln1_b, N);
  run_hooks(r, S(LMWB_SITE_LN1, l), a->ln1.p, FALSE);
  o->linear_fwd(a->q.p, a->ln1.p, w->wq, w->bq, N, C, qd);
  o->linear_fwd(a->k.p, a->ln1.p, w->wk, w->bk, N, C, kd);
  o->linear_fwd(a->v.p, a->ln1.p, w->wv, w->bv, N, C, kd);
  run_hooks(r, S(LMWB_SITE_Q, l), a->q.p, FALSE);
  run_hooks(r, S(LMWB_SITE_K, l), a->k.p, FALSE);
  run_hooks(r, S(LMWB_SITE_V, l), a->v.p, FALSE);
  float *qr = a->q.p, *kr = a->k.p;
  if (rope) {
    memcpy(a->qr.p, a->q.p, (size_t)N * qd * sizeof(float));
    memcpy(a->kr.p, a->k.p, (size_t)N * kd * sizeof(float));
    o->rope(a->qr.p, B, T, qd, H, hd, c->rotary_dim, r->past, c->rope_theta, false);
    o->rope(a->kr.p, B, T, kd, Hk, hd, c->rotary_dim, r->past, c->rope_theta, false);
    run_hooks(r, S(LMWB_SITE_ROT_Q, l), a->qr.p, FALSE);
    run_hooks(r, S(LMWB_SITE_ROT_K, l), a->kr.p, FALSE);
    qr = a->qr.p;
    kr = a->kr.p;
  }
  const float *kc = kr, *vc = a->v.p;
  int Tcap = T;
  if (r->cached) {
    Tcap = r->cache_cap_T;
    for (int b = 0; b < B; b++) {
      memcpy(r->kc[l].p + ((size_t)b * Tcap + r->past) * kd, kr + (size_t)b * T * kd, (size_t)T * kd * sizeof(float));
      memcpy(r->vc[l].p + ((size_t)b * Tcap + r->past) * kd, a->v.p + (size_t)b * T * kd, (size_t)T * kd * sizeof(float));
    }
    kc = r->kc[l].p;
    vc = r->vc[l].p;
  }
  o->attn_pattern_fwd(a->pattern.p, qr, kc, B, T, r->past, Tcap, H, Hk, hd, r->lens);
  run_hooks(r, S(LMWB_SITE_PATTERN, l), a->pattern.p, FALSE);
  o->attn_mix_fwd(a->z.p, a->pattern.p, vc, B, T, r->past, Tcap, H, Hk, hd);
  run_hooks(r, S(LMWB_SITE_Z, l), a->z.p, FALSE);
  o->linear_fwd(a->attn_out.p, a->z.p, w->wo, w->bo, N, qd, C);
  run_hooks(r, S(LMWB_SITE_ATTN_OUT, l), a->attn_out.p, FALSE);

  const float *mlp_in;
  if (c->parallel_residual) {
    mlp_in = x;
  } else {
    add3(a->resid_mid.p, x, a->attn_out.p, (size_t)N * C);
    run_hooks(r, S(LMWB_SITE_RESID_MID, l), a->resid_mid.p, FALSE);
    mlp_in = a->resid_mid.p;
  }
  norm_fwd(r, a->ln2.p, a->ln2_mean.p, a->ln2_rstd.p, mlp_in, w->ln2_w, w->ln2_b, N);
  run_hooks(r, S(LMWB_SITE_LN2, l), a->ln2.p, FALSE);
  if (c->gated_mlp) {
    o->linear_fwd(a->pre.p, a->ln2.p, w->w_gate, NULL, N, C, F);
    o->linear_fwd(a->pre_lin.p, a->ln2.p, w->w_up, w->b_up, N, C, F);
    run_hooks(r, S(LMWB_SITE_MLP_PRE, l), a->pre.p, FALSE);
    run_hooks(r, S(LMWB_SITE_MLP_PRE_LINEAR, l), a->pre_lin.p, FALSE);
    o->swiglu_fwd(a->post.p, a->pre.p, a->pre_lin.p, (size_t)N * F);
  } else {
    o->linear_fwd(a->pre.p, a->ln2.p, w->w_up, w->b_up, N, C, F);
    run_hooks(r, S(LMWB_SITE_MLP_PRE, l), a->pre.p, FALSE);
    o->gelu_fwd(a->post.p, a->pre.p, (size_t)N * F, c->act == LMWB_ACT_GELU_TANH);
  }
  run_hooks(r, S(LMWB_SITE_MLP_POST, l), a->post.p, FALSE);
  o->linear_fwd(a->mlp_out.p, a->post.p, w->w_down, w->b_down, N, F, C);
  run_hooks(r, S(LMWB_SITE_MLP_OUT, l), a->mlp_out.p, FALSE);

  float *y = r->res[l + 1].p;
  if (c->parallel_residual) {
    add3(y, x, a->attn_out.p, (size_t)N * C);
    add3(y, y, a->mlp_out.p, (size_t)N * C);
  } else {
    add3(y, a->resid_mid.p, a->mlp_out.p, (size_t)N * C);
  }
  run_hooks(r, S(LMWB_SITE_RESID_POST, l), y, FALSE);
  if (l + 1 < c->n_layer) run_hooks(r, S(LMWB_SITE_RESID_PRE, l + 1), y, FALSE);
}

gboolean lmwb_runner_forward(LmwbRunner *r, const int32_t *ids, int B, int T, const LmwbForwardOptions *opt,
                             GError **error) {
  static const LmwbForwardOptions defaults = {0};
  if (!opt) opt = &defaults;
  const LmwbConfig *c = &r->m->cfg;
  const LmwbModel *m = r->m;
  r->have_forward = FALSE;
  r->have_grads = FALSE;
  if (B < 1 || T < 1) {
    lmwb_input_error(error, "empty batch (%d sequences of %d tokens)", B, T);
    return FALSE;
  }
  /* Token counts are indexed in int, and the attention pattern (B x heads x T x T) must not
   * overflow the size arithmetic of the memory check. */
  if ((int64_t)B * T > G_MAXINT32 / 4 || (double)B * c->n_head * T * ((double)T + (opt->use_cache ? r->cache_len : 0)) > 1e17) {
    lmwb_input_error(error, "a batch of %d sequences of %d tokens is too large", B, T);
    return FALSE;
  }
  int past = opt->use_cache ? r->cache_len : 0;
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
  r->B = B;
  r->T = T;
  r->past = past;
  r->Tk = past + T;
  r->cached = opt->use_cache;
  r->last_only = opt->last_logits_only;
  if (!alloc_forward(r, B, T, past + T, error)) return FALSE;
  if (opt->use_cache && !grow_cache(r, B, past + T, error)) return FALSE;
  size_t N = (size_t)B * T, C = c->d_model;
  r->ids = (int32_t *)r->ids_buf.p;
  memcpy(r->ids, ids, N * sizeof(int32_t));
  r->lens = NULL;
  if (opt->lens) {
    r->lens = (int *)r->lens_buf.p;
    memcpy(r->lens, opt->lens, (size_t)B * sizeof(int));
  }

  r->o->embed_fwd(r->embed.p, r->ids, m->w.wte, (int)N, (int)C);
  run_hooks(r, S(LMWB_SITE_EMBED, -1), r->embed.p, FALSE);
  if (c->learned_pos) {
    int32_t *pid = (int32_t *)r->pos_ids.p;
    for (size_t i = 0; i < N; i++) pid[i] = past + (int32_t)(i % T);
    r->o->embed_fwd(r->pos.p, pid, m->w.wpe, (int)N, (int)C);
    run_hooks(r, S(LMWB_SITE_POS_EMBED, -1), r->pos.p, FALSE);
    add3(r->res[0].p, r->embed.p, r->pos.p, N * C);
  } else {
    memcpy(r->res[0].p, r->embed.p, N * C * sizeof(float));
  }
  run_hooks(r, S(LMWB_SITE_RESID_PRE, 0), r->res[0].p, FALSE);
  for (int l = 0; l < c->n_layer; l++) layer_forward(r, l);

  const float *xf = r->res[c->n_layer].p;
  if (opt->last_logits_only) {
    /* Only each sequence's last valid row goes through the final norm and the head. */
    float *rows = r->dscratch.p;
    for (int b = 0; b < B; b++) {
      int t = (r->lens ? r->lens[b] : T) - 1;
      memcpy(rows + (size_t)b * C, xf + ((size_t)b * T + t) * C, C * sizeof(float));
    }
    norm_fwd(r, rows, r->lnf_mean.p, r->lnf_rstd.p, rows, m->w.lnf_w, m->w.lnf_b, B);
    r->o->linear_fwd(r->last_rows.p, rows, m->w.head, NULL, B, (int)C, c->vocab_size);
  } else {
    norm_fwd(r, r->lnf.p, r->lnf_mean.p, r->lnf_rstd.p, xf, m->w.lnf_w, m->w.lnf_b, (int)N);
    run_hooks(r, S(LMWB_SITE_LN_FINAL, -1), r->lnf.p, FALSE);
    r->o->linear_fwd(r->logits.p, r->lnf.p, m->w.head, NULL, (int)N, (int)C, c->vocab_size);
  }
  if (opt->use_cache) r->cache_len = past + T;
  r->have_forward = TRUE;
  return TRUE;
}

/* ---- losses --------------------------------------------------------------------------------- */

/* Next-token targets: explicit, or the input shifted by one within each sequence's length. */
static int32_t *make_targets(LmwbRunner *r, const int32_t *explicit_targets) {
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
  g_autofree int32_t *tg = make_targets(r, targets);
  r->o->xent_fwd(out, r->logits.p, tg, (int)N, r->m->cfg.vocab_size);
  size_t n = 0;
  for (size_t i = 0; i < N; i++) {
    if (tg[i] < 0) out[i] = NAN;
    else n++;
  }
  return n;
}

/* dL/dlogits into r->dlogits; returns the loss. */
static gboolean loss_backward(LmwbRunner *r, const LmwbLoss *loss, double *value, GError **error) {
  const LmwbConfig *c = &r->m->cfg;
  size_t N = (size_t)r->B * r->T, V = c->vocab_size;
  float *dl = r->dlogits.p;
  memset(dl, 0, N * V * sizeof(float));
  switch (loss->kind) {
    case LMWB_LOSS_NEXT_TOKEN: {
      g_autofree int32_t *tg = make_targets(r, loss->targets);
      g_autofree float *losses = g_new(float, N);
      g_autofree float *scale = g_new(float, N);
      size_t cnt = 0;
      for (size_t i = 0; i < N; i++) {
        if (tg[i] >= (int32_t)V) {
          lmwb_input_error(error, "target id %d is out of range", tg[i]);
          return FALSE;
        }
        cnt += tg[i] >= 0;
      }
      if (cnt == 0) {
        lmwb_input_error(error, "no next-token predictions to score (sequences need at least 2 tokens)");
        return FALSE;
      }
      r->o->xent_fwd(losses, r->logits.p, tg, (int)N, (int)V);
      double sum = 0;
      for (size_t i = 0; i < N; i++) {
        scale[i] = 1.0f / (float)cnt;
        if (tg[i] >= 0) sum += losses[i];
      }
      *value = sum / (double)cnt;
      r->o->xent_bwd(dl, r->logits.p, tg, scale, (int)N, (int)V);
      return TRUE;
    }
    case LMWB_LOSS_KL: {
      g_autofree uint8_t *mask = g_new0(uint8_t, N);
      g_autofree float *losses = g_new0(float, N);
      g_autofree float *scale = g_new0(float, N);
      size_t cnt = 0;
      for (int b = 0; b < r->B; b++)
        for (int t = 0; t < (r->lens ? r->lens[b] : r->T); t++) {
          mask[(size_t)b * r->T + t] = 1;
          cnt++;
        }
      r->o->kl_fwd(losses, r->logits.p, loss->ref_logprobs, mask, (int)N, (int)V);
      double sum = 0;
      for (size_t i = 0; i < N; i++) {
        if (mask[i]) {
          sum += losses[i];
          scale[i] = 1.0f / (float)cnt;
        }
      }
      *value = sum / (double)cnt;
      r->o->kl_bwd(dl, r->logits.p, loss->ref_logprobs, scale, (int)N, (int)V);
      return TRUE;
    }
    case LMWB_LOSS_LOGIT_DIFF: {
      double sum = 0;
      for (int b = 0; b < r->B; b++) {
        int p = loss->positions[b];
        int32_t a = loss->tok_a[b], bb = loss->tok_b[b];
        if (p < 0 || p >= r->T || a < 0 || a >= (int32_t)V || bb < 0 || bb >= (int32_t)V) {
          lmwb_input_error(error, "logit difference: position %d or tokens %d/%d out of range", p, a, bb);
          return FALSE;
        }
        const float *row = r->logits.p + ((size_t)b * r->T + p) * V;
        sum += (double)row[a] - row[bb];
        dl[((size_t)b * r->T + p) * V + a] += 1.0f / r->B;
        dl[((size_t)b * r->T + p) * V + bb] -= 1.0f / r->B;
      }
      *value = sum / r->B;
      return TRUE;
    }
    case LMWB_LOSS_DLOGITS:
      memcpy(dl, loss->dlogits, N * V * sizeof(float));
      *value = NAN;
      return TRUE;
  }
  return FALSE;
}

/* ---- backward ------------------------------------------------------------------------------- */

static gboolean alloc_backward(LmwbRunner *r, gboolean params, GError **error) {
  const LmwbConfig *c = &r->m->cfg;
  size_t N = (size_t)r->B * r->T, C = c->d_model, F = c->d_ff, qd = (size_t)c->n_head * c->head_dim,
         kd = (size_t)c->n_kv_head * c->head_dim, V = c->vocab_size;
  size_t pat = (size_t)r->B * c->n_head * r->T * r->Tk;
  uint64_t total = ((uint64_t)(N * (7 * C + 2 * qd + 3 * kd + 3 * F) + pat) * c->n_layer + N * V + 4 * N * C) * 4;
  if (params && !r->pgrad) total += r->m->n_params * 4;
  if (!lmwb_memory_check(total, "the gradients of this batch", error)) return FALSE;
  gboolean ok = ensure(&r->dembed, N * C) && ensure(&r->dpos, N * C) && ensure(&r->dlnf, N * C) &&
                ensure(&r->dlogits, N * V);
  for (int i = 0; ok && i <= c->n_layer; i++) ok = ensure(&r->dres[i], N * C);
  for (int i = 0; ok && i < c->n_layer; i++) {
    LayerBufs *l = &r->dL[i];
    ok = ensure(&l->ln1, N * C) && ensure(&l->q, N * qd) && ensure(&l->k, N * kd) && ensure(&l->v, N * kd) &&
         ensure(&l->qr, N * qd) && ensure(&l->kr, N * kd) && ensure(&l->pattern, pat) &&
         ensure(&l->z, N * qd) && ensure(&l->attn_out, N * C) && ensure(&l->resid_mid, N * C) &&
         ensure(&l->ln2, N * C) && ensure(&l->pre, N * F) && ensure(&l->pre_lin, N * F) &&
         ensure(&l->post, N * F) && ensure(&l->mlp_out, N * C);
  }
  if (ok && params && !r->pgrad) {
    r->pgrad = calloc(r->m->n_params, sizeof(float));
    ok = r->pgrad != NULL;
    if (ok) lmwb_model_layout_views(r->m, r->pgrad, &r->gw);
  }
  if (!ok) lmwb_input_error(error, "out of memory for gradients");
  return ok;
}

static void zero(Buf *b, size_t n) { memset(b->p, 0, n * sizeof(float)); }

static void layer_backward(LmwbRunner *r, int l, const LmwbBackwardOptions *opt) {
  const LmwbConfig *c = &r->m->cfg;
  const LmwbOps *o = r->o;
  const LmwbLayerWeights *w = &r->m->w.layers[l];
  LmwbLayerWeights *g = opt->param_grads ? &r->gw.layers[l] : NULL;
#define PG(f) (g ? g->f : NULL)
  LayerBufs *a = &r->L[l], *d = &r->dL[l];
  int B = r->B, T = r->T, N = B * T, C = c->d_model, F = c->d_ff, H = c->n_head, Hk = c->n_kv_head,
      hd = c->head_dim, qd = H * hd, kd = Hk * hd;
  size_t NC = (size_t)N * C;
  gboolean rope = !c->learned_pos, fz = opt->freeze_norm;
  const float *x = r->res[l].p;
  float *dy = r->dres[l + 1].p, *dx = r->dres[l].p;
  /* dres[l+1] is complete here: apply the hooks of both names of that stream position. */
  if (l + 1 < c->n_layer) run_hooks(r, S(LMWB_SITE_RESID_PRE, l + 1), dy, TRUE);
  run_hooks(r, S(LMWB_SITE_RESID_POST, l), dy, TRUE);

  memcpy(d->mlp_out.p, dy, NC * sizeof(float));
  run_hooks(r, S(LMWB_SITE_MLP_OUT, l), d->mlp_out.p, TRUE);
  zero(&d->post, (size_t)N * F);
  o->linear_bwd(d->post.p, PG(w_down), PG(b_down), d->mlp_out.p, a->post.p, w->w_down, N, F, C);
  run_hooks(r, S(LMWB_SITE_MLP_POST, l), d->post.p, TRUE);
  zero(&d->pre, (size_t)N * F);
  zero(&d->ln2, NC);
  if (c->gated_mlp) {
    zero(&d->pre_lin, (size_t)N * F);
    o->swiglu_bwd(d->pre.p, d->pre_lin.p, d->post.p, a->pre.p, a->pre_lin.p, (size_t)N * F);
    run_hooks(r, S(LMWB_SITE_MLP_PRE, l), d->pre.p, TRUE);
    run_hooks(r, S(LMWB_SITE_MLP_PRE_LINEAR, l), d->pre_lin.p, TRUE);
    o->linear_bwd(d->ln2.p, PG(w_gate), NULL, d->pre.p, a->ln2.p, w->w_gate, N, C, F);
    o->linear_bwd(d->ln2.p, PG(w_up), PG(b_up), d->pre_lin.p, a->ln2.p, w->w_up, N, C, F);
  } else {
    o->gelu_bwd(d->pre.p, d->post.p, a->pre.p, (size_t)N * F, c->act == LMWB_ACT_GELU_TANH);
    run_hooks(r, S(LMWB_SITE_MLP_PRE, l), d->pre.p, TRUE);
    o->linear_bwd(d->ln2.p, PG(w_up), PG(b_up), d->pre.p, a->ln2.p, w->w_up, N, C, F);
  }
  run_hooks(r, S(LMWB_SITE_LN2, l), d->ln2.p, TRUE);

  if (c->parallel_residual) {
    memcpy(dx, dy, NC * sizeof(float)); /* residual path */
    norm_bwd(r, dx, PG(ln2_w), PG(ln2_b), d->ln2.p, x, w->ln2_w, a->ln2_mean.p, a->ln2_rstd.p, N, fz);
    memcpy(d->attn_out.p, dy, NC * sizeof(float));
  } else {
    memcpy(d->resid_mid.p, dy, NC * sizeof(float));
    norm_bwd(r, d->resid_mid.p, PG(ln2_w), PG(ln2_b), d->ln2.p, a->resid_mid.p, w->ln2_w, a->ln2_mean.p,
             a->ln2_rstd.p, N, fz);
    run_hooks(r, S(LMWB_SITE_RESID_MID, l), d->resid_mid.p, TRUE);
    memcpy(d->attn_out.p, d->resid_mid.p, NC * sizeof(float));
    memcpy(dx, d->resid_mid.p, NC * sizeof(float));
  }
  run_hooks(r, S(LMWB_SITE_ATTN_OUT, l), d->attn_out.p, TRUE);
  zero(&d->z, (size_t)N * qd);
  o->linear_bwd(d->z.p, PG(wo), PG(bo), d->attn_out.p, a->z.p, w->wo, N, qd, C);
  run_hooks(r, S(LMWB_SITE_Z, l), d->z.p, TRUE);

  size_t pat = (size_t)B * H * T * r->Tk;
  zero(&d->pattern, pat);
  zero(&d->v, (size_t)N * kd);
  zero(&d->qr, (size_t)N * qd);
  zero(&d->kr, (size_t)N * kd);
  const float *qr = rope ? a->qr.p : a->q.p, *kr = rope ? a->kr.p : a->k.p;
  o->attn_mix_bwd(d->pattern.p, d->v.p, d->z.p, a->pattern.p, a->v.p, B, T, 0, T, H, Hk, hd);
  run_hooks(r, S(LMWB_SITE_PATTERN, l), d->pattern.p, TRUE);
  if (!opt->freeze_pattern)
    o->attn_pattern_bwd(d->qr.p, d->kr.p, d->pattern.p, a->pattern.p, qr, kr, B, T, 0, T, H, Hk, hd);
  if (rope) {
    run_hooks(r, S(LMWB_SITE_ROT_Q, l), d->qr.p, TRUE);
    run_hooks(r, S(LMWB_SITE_ROT_K, l), d->kr.p, TRUE);
    memcpy(d->q.p, d->qr.p, (size_t)N * qd * sizeof(float));
    memcpy(d->k.p, d->kr.p, (size_t)N * kd * sizeof(float));
    o->rope(d->q.p, B, T, qd, H, hd, c->rotary_dim, 0, c->rope_theta, true);
    o->rope(d->k.p, B, T, kd, Hk, hd, c->rotary_dim, 0, c->rope_theta, true);
  } else {
    memcpy(d->q.p, d->qr.p, (size_t)N * qd * sizeof(float));
    memcpy(d->k.p, d->kr.p, (size_t)N * kd * sizeof(float));
  }
  run_hooks(r, S(LMWB_SITE_Q, l), d->q.p, TRUE);
  run_hooks(r, S(LMWB_SITE_K, l), d->k.p, TRUE);
  run_hooks(r, S(LMWB_SITE_V, l), d->v.p, TRUE);
  zero(&d->ln1, NC);
  o->linear_bwd(d->ln1.p, PG(wq), PG(bq), d->q.p, a->ln1.p, w->wq, N, C, qd);
  o->linear_bwd(d->ln1.p, PG(wk), PG(bk), d->k.p, a->ln1.p, w->wk, N, C, kd);
  o->linear_bwd(d->ln1.p, PG(wv), PG(bv), d->v.p, a->ln1.p, w->wv, N, C, kd);
  run_hooks(r, S(LMWB_SITE_LN1, l), d->ln1.p, TRUE);
  norm_bwd(r, dx, PG(ln1_w), PG(ln1_b), d->ln1.p, x, w->ln1_w, a->ln1_mean.p, a->ln1_rstd.p, N, fz);
#undef PG
}

gboolean lmwb_runner_backward(LmwbRunner *r, const LmwbLoss *loss, const LmwbBackwardOptions *opt,
                              double *loss_value, GError **error) {
  static const LmwbBackwardOptions defaults = {0};
  if (!opt) opt = &defaults;
  if (!r->have_forward || r->cached || r->last_only || r->past != 0) {
    lmwb_input_error(error, "backward needs a forward pass without the KV cache and with all logits");
    return FALSE;
  }
  const LmwbConfig *c = &r->m->cfg;
  const LmwbModel *m = r->m;
  if (!alloc_backward(r, opt->param_grads, error)) return FALSE;
  if (opt->param_grads && !opt->accumulate) memset(r->pgrad, 0, m->n_params * sizeof(float));
  double lv = 0;
  if (!loss_backward(r, loss, &lv, error)) return FALSE;
  if (loss_value) *loss_value = lv;
  int N = r->B * r->T, C = c->d_model;
  size_t NC = (size_t)N * C;
  zero(&r->dlnf, NC);
  r->o->linear_bwd(r->dlnf.p, opt->param_grads ? r->gw.head : NULL, NULL, r->dlogits.p, r->lnf.p, m->w.head, N, C,
                   c->vocab_size);
  run_hooks(r, S(LMWB_SITE_LN_FINAL, -1), r->dlnf.p, TRUE);
  float *dlast = r->dres[c->n_layer].p;
  zero(&r->dres[c->n_layer], NC);
  norm_bwd(r, dlast, opt->param_grads ? r->gw.lnf_w : NULL, opt->param_grads ? r->gw.lnf_b : NULL, r->dlnf.p,
           r->res[c->n_layer].p, m->w.lnf_w, r->lnf_mean.p, r->lnf_rstd.p, N, opt->freeze_norm);
  for (int l = c->n_layer - 1; l >= 0; l--) layer_backward(r, l, opt);
  run_hooks(r, S(LMWB_SITE_RESID_PRE, 0), r->dres[0].p, TRUE);
  memcpy(r->dembed.p, r->dres[0].p, NC * sizeof(float));
  run_hooks(r, S(LMWB_SITE_EMBED, -1), r->dembed.p, TRUE);
  if (opt->param_grads) r->o->embed_bwd(r->gw.wte, r->dembed.p, r->ids, N, C);
  if (c->learned_pos) {
    memcpy(r->dpos.p, r->dres[0].p, NC * sizeof(float));
    run_hooks(r, S(LMWB_SITE_POS_EMBED, -1), r->dpos.p, TRUE);
    if (opt->param_grads) r->o->embed_bwd(r->gw.wpe, r->dpos.p, (const int32_t *)r->pos_ids.p, N, C);
  }
  r->have_grads = TRUE;
  return TRUE;
}
