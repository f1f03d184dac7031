/* The forward body: embeddings, the blocks (attention with optional per-head inputs and outputs,
 * MLP), the final norm and the unembedding, with the hooks of every site in order.
 * Residual stream: RESID_PRE of layer 0 = embeddings; RESID_POST of layer L = RESID_PRE of L+1. */
#include "app/engine/runner_internal.h"
#include <string.h>

#define A(kind, l) rn_site(r, r->A, (LmwbSite){(kind), (l)})
#define HOOK(kind, l) rn_hooks(r, (LmwbSite){(kind), (l)}, A(kind, l), false)

static const LmwbLayerLowRank no_lowrank;

static const LmwbLayerLowRank *lowrank_of(const LmwbRunner *r, int l) {
  return r->w->lowrank ? &r->w->lowrank[l] : &no_lowrank;
}

/* q, k or v from each head's own normalised copy of the residual (split q/k/v inputs). */
static void split_projection(LmwbRunner *r, int l, int which, const float *x) {
  const LmwbConfig *c = r->c;
  const LmwbLayerWeights *w = &r->w->layers[l];
  const LmwbLayerLowRank *lr = lowrank_of(r, l);
  static const LmwbSiteKind input[3] = {LMWB_SITE_Q_INPUT, LMWB_SITE_K_INPUT, LMWB_SITE_V_INPUT};
  static const LmwbSiteKind output[3] = {LMWB_SITE_Q, LMWB_SITE_K, LMWB_SITE_V};
  const float *W[3] = {w->wq, w->wk, w->wv}, *bias[3] = {w->bq, w->bk, w->bv};
  const LmwbLowRank *lrs[3] = {lr->wq, lr->wk, lr->wv};
  int N = r->B * r->T, C = c->d_model, hd = c->head_dim;
  int H = which == QKV_Q ? c->n_head : c->n_kv_head, od = H * hd;
  float *in = A(input[which], l), *out = A(output[which], l), *normed = r->A[l].ln1_split[which].p;
  r->o->heads_spread(in, x, N, H, C);
  HOOK(input[which], l);
  rn_norm_fwd(r->be, c, normed, &r->A[l].ln1[which], in, w->ln1_w, w->ln1_b, N * H);
  for (int h = 0; h < H; h++)
    rn_head_linear_fwd(r, out + (size_t)h * hd, od, normed + (size_t)h * C, H * C, W[which] + (size_t)h * hd * C, C,
                       lrs[which], h * hd, 0, N, C, hd);
  if (bias[which]) r->o->bias_fwd(out, bias[which], N, od);
}

static void attention(LmwbRunner *r, int l, const float *x) {
  const LmwbConfig *c = r->c;
  const LmwbOps *o = r->o;
  const LmwbLayerWeights *w = &r->w->layers[l];
  const LmwbLayerLowRank *lr = lowrank_of(r, l);
  int B = r->B, T = r->T, N = B * T, C = c->d_model, H = c->n_head, Hk = c->n_kv_head, hd = c->head_dim,
      qd = H * hd, kd = Hk * hd;
  gboolean rope = !c->learned_pos;
  float *q = A(LMWB_SITE_Q, l), *k = A(LMWB_SITE_K, l), *v = A(LMWB_SITE_V, l);
  if (r->run_sites & LMWB_RUN_SPLIT_QKV) {
    for (int which = 0; which < 3; which++) split_projection(r, l, which, x);
  } else {
    float *ln1 = A(LMWB_SITE_LN1, l);
    rn_norm_fwd(r->be, c, ln1, &r->A[l].ln1[0], x, w->ln1_w, w->ln1_b, N);
    HOOK(LMWB_SITE_LN1, l);
    rn_linear_fwd(r, q, ln1, w->wq, lr->wq, w->bq, N, C, qd);
    rn_linear_fwd(r, k, ln1, w->wk, lr->wk, w->bk, N, C, kd);
    rn_linear_fwd(r, v, ln1, w->wv, lr->wv, w->bv, N, C, kd);
  }
  HOOK(LMWB_SITE_Q, l);
  HOOK(LMWB_SITE_K, l);
  HOOK(LMWB_SITE_V, l);
  float *qr = q, *kr = k;
  if (rope) {
    qr = A(LMWB_SITE_ROT_Q, l);
    kr = A(LMWB_SITE_ROT_K, l);
    rn_copy(r, qr, q, (size_t)N * qd);
    rn_copy(r, kr, k, (size_t)N * kd);
    o->rope(qr, B, T, qd, H, hd, c->rotary_dim, r->past, c->rope_theta, false);
    o->rope(kr, B, T, kd, Hk, hd, c->rotary_dim, r->past, c->rope_theta, false);
    HOOK(LMWB_SITE_ROT_Q, l);
    HOOK(LMWB_SITE_ROT_K, l);
  }
  const float *kc = kr, *vc = v;
  int Tcap = T;
  if (r->cached) {
    Tcap = r->cache_cap_T;
    /* Each sequence's new rows go after its cached ones. */
    r->be->copy2d(r->kc[l].p + (size_t)r->past * kd, Tcap * kd, kr, T * kd, B, T * kd);
    r->be->copy2d(r->vc[l].p + (size_t)r->past * kd, Tcap * kd, v, T * kd, B, T * kd);
    kc = r->kc[l].p;
    vc = r->vc[l].p;
  }
  float *pattern = A(LMWB_SITE_PATTERN, l), *z = A(LMWB_SITE_Z, l), *out = A(LMWB_SITE_ATTN_OUT, l);
  o->attn_pattern_fwd(pattern, qr, kc, B, T, r->past, Tcap, H, Hk, hd, r->lens ? (const int *)r->lens_d.p : NULL);
  HOOK(LMWB_SITE_PATTERN, l);
  o->attn_mix_fwd(z, pattern, vc, B, T, r->past, Tcap, H, Hk, hd);
  HOOK(LMWB_SITE_Z, l);
  if (r->run_sites & LMWB_RUN_ATTN_RESULT) {
    /* Each head's z through its slice of W_O (columns h*hd..), then the sum plus b_O. */
    float *res = A(LMWB_SITE_RESULT, l);
    for (int h = 0; h < H; h++)
      rn_head_linear_fwd(r, res + (size_t)h * C, H * C, z + (size_t)h * hd, qd, w->wo + (size_t)h * hd, qd, lr->wo, 0,
                         h * hd, N, hd, C);
    HOOK(LMWB_SITE_RESULT, l);
    r->be->zero(out, (size_t)N * C * sizeof(float));
    o->heads_sum(out, res, N, H, C);
    if (w->bo) o->bias_fwd(out, w->bo, N, C);
  } else {
    rn_linear_fwd(r, out, z, w->wo, lr->wo, w->bo, N, qd, C);
  }
  HOOK(LMWB_SITE_ATTN_OUT, l);
}

static void mlp(LmwbRunner *r, int l, const float *x) {
  const LmwbConfig *c = r->c;
  const LmwbOps *o = r->o;
  const LmwbLayerWeights *w = &r->w->layers[l];
  const LmwbLayerLowRank *lr = lowrank_of(r, l);
  int N = r->B * r->T, C = c->d_model, F = c->d_ff;
  if (r->run_sites & LMWB_RUN_MLP_IN) {
    float *in = A(LMWB_SITE_MLP_IN, l);
    rn_copy(r, in, x, (size_t)N * C);
    HOOK(LMWB_SITE_MLP_IN, l);
    x = in;
  }
  float *ln2 = A(LMWB_SITE_LN2, l), *pre = A(LMWB_SITE_MLP_PRE, l), *post = A(LMWB_SITE_MLP_POST, l);
  rn_norm_fwd(r->be, c, ln2, &r->A[l].ln2, x, w->ln2_w, w->ln2_b, N);
  HOOK(LMWB_SITE_LN2, l);
  if (c->gated_mlp) {
    float *lin = A(LMWB_SITE_MLP_PRE_LINEAR, l);
    rn_linear_fwd(r, pre, ln2, w->w_gate, lr->w_gate, NULL, N, C, F);
    rn_linear_fwd(r, lin, ln2, w->w_up, lr->w_up, w->b_up, N, C, F);
    HOOK(LMWB_SITE_MLP_PRE, l);
    HOOK(LMWB_SITE_MLP_PRE_LINEAR, l);
    o->swiglu_fwd(post, pre, lin, (size_t)N * F);
  } else {
    rn_linear_fwd(r, pre, ln2, w->w_up, lr->w_up, w->b_up, N, C, F);
    HOOK(LMWB_SITE_MLP_PRE, l);
    o->gelu_fwd(post, pre, (size_t)N * F, c->act == LMWB_ACT_GELU_TANH);
  }
  HOOK(LMWB_SITE_MLP_POST, l);
  rn_linear_fwd(r, A(LMWB_SITE_MLP_OUT, l), post, w->w_down, lr->w_down, w->b_down, N, F, C);
  HOOK(LMWB_SITE_MLP_OUT, l);
}

static void layer(LmwbRunner *r, int l) {
  const LmwbConfig *c = r->c;
  size_t NC = (size_t)r->B * r->T * c->d_model;
  const float *x = A(LMWB_SITE_RESID_PRE, l);
  float *y = A(LMWB_SITE_RESID_POST, l), *attn_out = A(LMWB_SITE_ATTN_OUT, l);
  attention(r, l, x);
  if (c->parallel_residual) {
    mlp(r, l, x);
    r->o->add(y, x, attn_out, NC);
  } else {
    float *mid = A(LMWB_SITE_RESID_MID, l);
    r->o->add(mid, x, attn_out, NC);
    HOOK(LMWB_SITE_RESID_MID, l);
    mlp(r, l, mid);
    r->o->add(y, mid, A(LMWB_SITE_MLP_OUT, l), NC);
    HOOK(LMWB_SITE_RESID_POST, l);
    if (l + 1 < c->n_layer) HOOK(LMWB_SITE_RESID_PRE, l + 1);
    return;
  }
  r->o->add(y, y, A(LMWB_SITE_MLP_OUT, l), NC);
  HOOK(LMWB_SITE_RESID_POST, l);
  if (l + 1 < c->n_layer) HOOK(LMWB_SITE_RESID_PRE, l + 1);
}

void rn_forward_body(LmwbRunner *r) {
  const LmwbConfig *c = r->c;
  const LmwbWeights *w = r->w;
  const int N = r->B * r->T, C = c->d_model, V = c->vocab_size;
  const int ml = -1;
  float *embed = A(LMWB_SITE_EMBED, ml), *res0 = A(LMWB_SITE_RESID_PRE, 0);
  r->o->embed_fwd(embed, (const int32_t *)r->ids_d.p, w->wte, N, C);
  HOOK(LMWB_SITE_EMBED, ml);
  if (c->learned_pos) {
    float *pos = A(LMWB_SITE_POS_EMBED, ml);
    r->o->embed_fwd(pos, (const int32_t *)r->pos_ids_d.p, w->wpe, N, C);
    HOOK(LMWB_SITE_POS_EMBED, ml);
    r->o->add(res0, embed, pos, (size_t)N * C);
  } else {
    rn_copy(r, res0, embed, (size_t)N * C);
  }
  HOOK(LMWB_SITE_RESID_PRE, 0);
  for (int l = 0; l < c->n_layer; l++) layer(r, l);

  /* The final norm runs on every row (cheap, and its hooks see the whole block); the head, the
   * costly part, only on the rows asked for. */
  float *lnf = A(LMWB_SITE_LN_FINAL, ml);
  rn_norm_fwd(r->be, c, lnf, &r->A[c->n_layer].ln2, A(LMWB_SITE_RESID_POST, c->n_layer - 1), w->lnf_w, w->lnf_b, N);
  HOOK(LMWB_SITE_LN_FINAL, ml);
  if (!r->last_only) {
    r->o->linear_fwd(r->logits.p, lnf, w->head, NULL, N, C, V);
    return;
  }
  for (int b = 0; b < r->B; b++) {
    int t = (r->lens ? r->lens[b] : r->T) - 1;
    rn_copy(r, r->rows_scratch.p + (size_t)b * C, lnf + ((size_t)b * r->T + t) * C, C);
  }
  r->o->linear_fwd(r->last_rows.p, r->rows_scratch.p, w->head, NULL, r->B, C, V);
}
