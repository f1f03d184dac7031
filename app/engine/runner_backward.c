/* The backward body: the blocks in reverse with the op table's backward pairs. At every site the
 * gradient, once complete, gets the caller's injected gradient for that site (if any) and then the
 * site's hooks, as the chain rule asks; then it flows on. */
#include "app/engine/runner_internal.h"
#include "app/core/errors.h"
#include <string.h>

#define A(kind, l) rn_site(r, r->A, (LmwbSite){(kind), (l)})
#define G(kind, l) rn_site(r, r->G, (LmwbSite){(kind), (l)})

typedef struct {
  LmwbRunner *r;
  const LmwbGradSeed *seeds;
  int n_seeds;
  const LmwbBackwardOptions *opt;
  bool pg; /* parameter gradients */
} Bwd;

/* The gradient at a site is complete: add the seeds given for it, then run its hooks. */
static void done(Bwd *b, LmwbSiteKind kind, int l) {
  LmwbRunner *r = b->r;
  LmwbSite s = {kind, l};
  float *g = rn_site(r, r->G, s);
  for (int i = 0; i < b->n_seeds; i++) {
    if (b->seeds[i].site.kind != kind || b->seeds[i].site.layer != l) continue;
    size_t n = rn_site_numel(r, kind);
    const float *src = b->seeds[i].grad;
    if (!r->be->host_visible) {
      r->be->to_device(r->seed_scratch.p, src, n * sizeof(float));
      src = r->seed_scratch.p;
    }
    r->o->add(g, g, src, n);
  }
  rn_hooks(r, s, g, true);
}

#define PG(f) (b->pg ? r->gw.layers[l].f : NULL)

static const LmwbLayerLowRank no_lowrank;

static void zero_site(LmwbRunner *r, LmwbSiteKind kind, int l) {
  float *g = G(kind, l);
  if (g) r->be->zero(g, rn_site_numel(r, kind) * sizeof(float));
}

/* Inside the MLP: from the complete gradient at its output to the gradient at ln2's output. */
static void mlp_inside_bwd(Bwd *b, int l) {
  LmwbRunner *r = b->r;
  const LmwbConfig *c = r->c;
  const LmwbOps *o = r->o;
  const LmwbLayerWeights *w = &r->w->layers[l];
  const LmwbLayerLowRank *lr = r->w->lowrank ? &r->w->lowrank[l] : &no_lowrank;
  int N = r->B * r->T, C = c->d_model, F = c->d_ff;
  bool frozen = b->opt->freeze & LMWB_FREEZE_MLP;
  float *dln2 = G(LMWB_SITE_LN2, l), *ln2 = A(LMWB_SITE_LN2, l);
  rn_linear_bwd_fresh(r, G(LMWB_SITE_MLP_POST, l), PG(w_down), PG(b_down), G(LMWB_SITE_MLP_OUT, l),
                      A(LMWB_SITE_MLP_POST, l), w->w_down, lr->w_down, N, F, C);
  done(b, LMWB_SITE_MLP_POST, l);
  zero_site(r, LMWB_SITE_MLP_PRE, l);
  if (c->gated_mlp) {
    zero_site(r, LMWB_SITE_MLP_PRE_LINEAR, l);
    o->swiglu_bwd(G(LMWB_SITE_MLP_PRE, l), G(LMWB_SITE_MLP_PRE_LINEAR, l), G(LMWB_SITE_MLP_POST, l),
                  A(LMWB_SITE_MLP_PRE, l), A(LMWB_SITE_MLP_PRE_LINEAR, l), (size_t)N * F, frozen);
    done(b, LMWB_SITE_MLP_PRE, l);
    done(b, LMWB_SITE_MLP_PRE_LINEAR, l);
    rn_linear_bwd_fresh(r, dln2, PG(w_gate), NULL, G(LMWB_SITE_MLP_PRE, l), ln2, w->w_gate, lr->w_gate, N, C, F);
    rn_linear_bwd(r, dln2, PG(w_up), PG(b_up), G(LMWB_SITE_MLP_PRE_LINEAR, l), ln2, w->w_up, lr->w_up, N, C, F);
  } else {
    o->gelu_bwd(G(LMWB_SITE_MLP_PRE, l), G(LMWB_SITE_MLP_POST, l), A(LMWB_SITE_MLP_PRE, l), (size_t)N * F,
                c->act == LMWB_ACT_GELU_TANH, frozen);
    done(b, LMWB_SITE_MLP_PRE, l);
    rn_linear_bwd_fresh(r, dln2, PG(w_up), PG(b_up), G(LMWB_SITE_MLP_PRE, l), ln2, w->w_up, lr->w_up, N, C, F);
  }
  done(b, LMWB_SITE_LN2, l);
}

/* With the MLP's output held fixed nothing flows into it: its sites keep only what was injected. */
static void mlp_inside_frozen(Bwd *b, int l) {
  static const LmwbSiteKind inside[] = {LMWB_SITE_MLP_POST, LMWB_SITE_MLP_PRE, LMWB_SITE_MLP_PRE_LINEAR, LMWB_SITE_LN2};
  for (size_t i = 0; i < G_N_ELEMENTS(inside); i++)
    if (rn_has(b->r, inside[i])) {
      zero_site(b->r, inside[i], l);
      done(b, inside[i], l);
    }
}

static void mlp_bwd(Bwd *b, int l, float *dx_target, const float *x_in) {
  LmwbRunner *r = b->r;
  const LmwbConfig *c = r->c;
  const LmwbLayerWeights *w = &r->w->layers[l];
  int N = r->B * r->T, C = c->d_model;
  done(b, LMWB_SITE_MLP_OUT, l);
  if (b->opt->freeze & LMWB_FREEZE_MLP_OUT) mlp_inside_frozen(b, l);
  else mlp_inside_bwd(b, l);
  float *dln2 = G(LMWB_SITE_LN2, l);
  bool fz = b->opt->freeze & LMWB_FREEZE_NORM;
  if (r->run_sites & LMWB_RUN_MLP_IN) {
    float *din = G(LMWB_SITE_MLP_IN, l);
    zero_site(r, LMWB_SITE_MLP_IN, l);
    rn_norm_bwd(r, din, PG(ln2_w), PG(ln2_b), dln2, A(LMWB_SITE_MLP_IN, l), w->ln2_w, &r->A[l].ln2, N, fz);
    done(b, LMWB_SITE_MLP_IN, l);
    r->o->add(dx_target, dx_target, din, (size_t)N * C);
  } else {
    rn_norm_bwd(r, dx_target, PG(ln2_w), PG(ln2_b), dln2, x_in, w->ln2_w, &r->A[l].ln2, N, fz);
  }
}

/* Split q/k/v inputs: back through each head's projection and its own norm, summed into dx. */
static void split_bwd(Bwd *b, int l, int which, float *dx) {
  LmwbRunner *r = b->r;
  const LmwbConfig *c = r->c;
  const LmwbLayerWeights *w = &r->w->layers[l];
  const LmwbLayerLowRank *lr = r->w->lowrank ? &r->w->lowrank[l] : &no_lowrank;
  static const LmwbSiteKind input[3] = {LMWB_SITE_Q_INPUT, LMWB_SITE_K_INPUT, LMWB_SITE_V_INPUT};
  static const LmwbSiteKind output[3] = {LMWB_SITE_Q, LMWB_SITE_K, LMWB_SITE_V};
  const float *W[3] = {w->wq, w->wk, w->wv};
  float *dW[3] = {PG(wq), PG(wk), PG(wv)}, *db[3] = {PG(bq), PG(bk), PG(bv)};
  const LmwbLowRank *lrs[3] = {lr->wq, lr->wk, lr->wv};
  int N = r->B * r->T, C = c->d_model, hd = c->head_dim;
  int H = which == QKV_Q ? c->n_head : c->n_kv_head, od = H * hd;
  float *dnormed = r->G[l].ln1_split[which].p, *normed = r->A[l].ln1_split[which].p;
  const float *dout = G(output[which], l);
  r->be->zero(dnormed, (size_t)N * H * C * sizeof(float));
  for (int h = 0; h < H; h++)
    rn_head_linear_bwd(r, dnormed + (size_t)h * C, H * C, dW[which] ? dW[which] + (size_t)h * hd * C : NULL,
                       dout + (size_t)h * hd, od, normed + (size_t)h * C, W[which] + (size_t)h * hd * C, C, lrs[which],
                       h * hd, 0, N, C, hd);
  if (db[which]) r->o->bias_bwd(db[which], dout, N, od);
  zero_site(r, input[which], l);
  float *din = G(input[which], l);
  rn_norm_bwd(r, din, PG(ln1_w), PG(ln1_b), dnormed, A(input[which], l), w->ln1_w, &r->A[l].ln1[which], N * H,
              b->opt->freeze & LMWB_FREEZE_NORM);
  done(b, input[which], l);
  r->o->heads_sum(dx, din, N, H, C);
}

static void attention_bwd(Bwd *b, int l, float *dx, const float *x) {
  LmwbRunner *r = b->r;
  const LmwbConfig *c = r->c;
  const LmwbOps *o = r->o;
  const LmwbLayerWeights *w = &r->w->layers[l];
  const LmwbLayerLowRank *lr = r->w->lowrank ? &r->w->lowrank[l] : &no_lowrank;
  int B = r->B, T = r->T, N = B * T, C = c->d_model, H = c->n_head, Hk = c->n_kv_head, hd = c->head_dim,
      qd = H * hd, kd = Hk * hd;
  gboolean rope = !c->learned_pos;
  done(b, LMWB_SITE_ATTN_OUT, l);
  float *dout = G(LMWB_SITE_ATTN_OUT, l), *dz = G(LMWB_SITE_Z, l), *z = A(LMWB_SITE_Z, l);
  if (r->run_sites & LMWB_RUN_ATTN_RESULT) {
    zero_site(r, LMWB_SITE_Z, l);
    float *dres = G(LMWB_SITE_RESULT, l);
    o->heads_spread(dres, dout, N, H, C);
    if (PG(bo)) o->bias_bwd(PG(bo), dout, N, C);
    done(b, LMWB_SITE_RESULT, l);
    for (int h = 0; h < H; h++)
      rn_head_linear_bwd(r, dz + (size_t)h * hd, qd, PG(wo) ? PG(wo) + (size_t)h * hd : NULL, dres + (size_t)h * C,
                         H * C, z + (size_t)h * hd, w->wo + (size_t)h * hd, qd, lr->wo, 0, h * hd, N, hd, C);
  } else {
    rn_linear_bwd_fresh(r, dz, PG(wo), PG(bo), dout, z, w->wo, lr->wo, N, qd, C);
  }
  done(b, LMWB_SITE_Z, l);
  zero_site(r, LMWB_SITE_PATTERN, l);
  zero_site(r, LMWB_SITE_V, l);
  /* Pattern backward into the rotated q/k gradients (with rotary) or straight into q/k. */
  float *dqr = rope ? G(LMWB_SITE_ROT_Q, l) : G(LMWB_SITE_Q, l), *dkr = rope ? G(LMWB_SITE_ROT_K, l) : G(LMWB_SITE_K, l);
  r->be->zero(dqr, (size_t)N * qd * sizeof(float));
  r->be->zero(dkr, (size_t)N * kd * sizeof(float));
  const float *qr = rope ? A(LMWB_SITE_ROT_Q, l) : A(LMWB_SITE_Q, l), *kr = rope ? A(LMWB_SITE_ROT_K, l) : A(LMWB_SITE_K, l);
  const float *pattern = A(LMWB_SITE_PATTERN, l);
  o->attn_mix_bwd(G(LMWB_SITE_PATTERN, l), G(LMWB_SITE_V, l), dz, pattern, A(LMWB_SITE_V, l), B, T, 0, T, H, Hk, hd);
  done(b, LMWB_SITE_PATTERN, l);
  if (!(b->opt->freeze & LMWB_FREEZE_PATTERN))
    o->attn_pattern_bwd(dqr, dkr, G(LMWB_SITE_PATTERN, l), pattern, qr, kr, B, T, 0, T, H, Hk, hd);
  if (rope) {
    done(b, LMWB_SITE_ROT_Q, l);
    done(b, LMWB_SITE_ROT_K, l);
    rn_copy(r, G(LMWB_SITE_Q, l), dqr, (size_t)N * qd);
    rn_copy(r, G(LMWB_SITE_K, l), dkr, (size_t)N * kd);
    o->rope(G(LMWB_SITE_Q, l), B, T, qd, H, hd, c->rotary_dim, 0, c->rope_theta, true);
    o->rope(G(LMWB_SITE_K, l), B, T, kd, Hk, hd, c->rotary_dim, 0, c->rope_theta, true);
  }
  done(b, LMWB_SITE_Q, l);
  done(b, LMWB_SITE_K, l);
  done(b, LMWB_SITE_V, l);
  if (r->run_sites & LMWB_RUN_SPLIT_QKV) {
    for (int which = 0; which < 3; which++) split_bwd(b, l, which, dx);
    return;
  }
  float *dln1 = G(LMWB_SITE_LN1, l), *ln1 = A(LMWB_SITE_LN1, l);
  rn_linear_bwd_fresh(r, dln1, PG(wq), PG(bq), G(LMWB_SITE_Q, l), ln1, w->wq, lr->wq, N, C, qd);
  rn_linear_bwd(r, dln1, PG(wk), PG(bk), G(LMWB_SITE_K, l), ln1, w->wk, lr->wk, N, C, kd);
  rn_linear_bwd(r, dln1, PG(wv), PG(bv), G(LMWB_SITE_V, l), ln1, w->wv, lr->wv, N, C, kd);
  done(b, LMWB_SITE_LN1, l);
  rn_norm_bwd(r, dx, PG(ln1_w), PG(ln1_b), dln1, x, w->ln1_w, &r->A[l].ln1[0], N, b->opt->freeze & LMWB_FREEZE_NORM);
}

/* Layer l, from the complete gradient at its resid_post to the gradient at its resid_pre. */
static void layer_bwd(Bwd *b, int l) {
  LmwbRunner *r = b->r;
  const LmwbConfig *c = r->c;
  size_t NC = (size_t)r->B * r->T * c->d_model;
  if (l + 1 < c->n_layer) done(b, LMWB_SITE_RESID_PRE, l + 1);
  done(b, LMWB_SITE_RESID_POST, l);
  const float *dy = G(LMWB_SITE_RESID_POST, l), *x = A(LMWB_SITE_RESID_PRE, l);
  float *dx = G(LMWB_SITE_RESID_PRE, l);
  rn_copy(r, G(LMWB_SITE_MLP_OUT, l), dy, NC);
  if (c->parallel_residual) {
    rn_copy(r, dx, dy, NC); /* the residual path */
    mlp_bwd(b, l, dx, x);
    rn_copy(r, G(LMWB_SITE_ATTN_OUT, l), dy, NC);
  } else {
    float *dmid = G(LMWB_SITE_RESID_MID, l);
    rn_copy(r, dmid, dy, NC);
    mlp_bwd(b, l, dmid, A(LMWB_SITE_RESID_MID, l));
    done(b, LMWB_SITE_RESID_MID, l);
    rn_copy(r, G(LMWB_SITE_ATTN_OUT, l), dmid, NC);
    rn_copy(r, dx, dmid, NC);
  }
  attention_bwd(b, l, dx, x);
}

gboolean rn_backward_body(LmwbRunner *r, const LmwbGradSeed *seeds, int n_seeds, int top,
                          const LmwbBackwardOptions *opt, GError **error) {
  const LmwbConfig *c = r->c;
  const LmwbWeights *w = r->w;
  int nl = c->n_layer, N = r->B * r->T, C = c->d_model, ml = -1;
  Bwd bw = {r, seeds, n_seeds, opt, opt->param_grads};
  Bwd *b = &bw;
  if (opt->param_grads && !opt->accumulate_params) rn_zero(r, &r->pgrad, r->m->n_params);
  for (int i = 0; i < n_seeds; i++)
    if (!rn_ensure(r, &r->seed_scratch, rn_site_numel(r, seeds[i].site.kind))) {
      lmwb_input_error(error, "out of %s memory for an injected gradient", r->be->name);
      return FALSE;
    }
  /* Sites above the start have no gradient: zero them so that readers see exact zeros. */
  for (int l = MAX(top + 1, 0); l < nl; l++)
    for (int k = 0; k < LMWB_SITE_N_KINDS; k++)
      if (!lmwb_site_info(k)->model_level && !(k == LMWB_SITE_RESID_PRE && l > 0)) zero_site(r, k, l);
  float *dlast = G(LMWB_SITE_RESID_POST, nl - 1);
  if (top == nl) {
    float *dlnf = G(LMWB_SITE_LN_FINAL, ml);
    zero_site(r, LMWB_SITE_LN_FINAL, ml);
    if (!seeds) /* from the loss: the head's backward */
      r->o->linear_bwd(dlnf, b->pg ? r->gw.head : NULL, NULL, r->dlogits.p, A(LMWB_SITE_LN_FINAL, ml), w->head, N, C,
                       c->vocab_size);
    done(b, LMWB_SITE_LN_FINAL, ml);
    zero_site(r, LMWB_SITE_RESID_POST, nl - 1);
    rn_norm_bwd(r, dlast, b->pg ? r->gw.lnf_w : NULL, b->pg ? r->gw.lnf_b : NULL, dlnf, A(LMWB_SITE_RESID_POST, nl - 1),
                w->lnf_w, &r->A[nl].ln2, N, opt->freeze & LMWB_FREEZE_NORM);
  } else {
    zero_site(r, LMWB_SITE_LN_FINAL, ml);
    if (top >= 0) zero_site(r, LMWB_SITE_RESID_POST, top);
    else zero_site(r, LMWB_SITE_RESID_PRE, 0);
  }
  int low = opt->stop_layer;
  for (int l = MIN(top, nl - 1); l >= low; l--) layer_bwd(b, l);
  r->grad_low_layer = low;
  if (low > 0) return TRUE;
  done(b, LMWB_SITE_RESID_PRE, 0);
  const float *d0 = G(LMWB_SITE_RESID_PRE, 0);
  rn_copy(r, G(LMWB_SITE_EMBED, ml), d0, (size_t)N * C);
  done(b, LMWB_SITE_EMBED, ml);
  if (b->pg) r->o->embed_bwd(r->gw.wte, G(LMWB_SITE_EMBED, ml), (const int32_t *)r->ids_d.p, N, C);
  if (c->learned_pos) {
    rn_copy(r, G(LMWB_SITE_POS_EMBED, ml), d0, (size_t)N * C);
    done(b, LMWB_SITE_POS_EMBED, ml);
    if (b->pg) r->o->embed_bwd(r->gw.wpe, G(LMWB_SITE_POS_EMBED, ml), (const int32_t *)r->pos_ids_d.p, N, C);
  }
  return TRUE;
}
