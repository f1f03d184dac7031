/* Inside the runner: its state and the helpers its parts share. runner.c holds the state, buffers
 * and readers; runner_forward.c the forward body; runner_backward.c the backward body;
 * runner_loss.c the losses. Every buffer below is backend memory (device pointers) unless its
 * comment says host. */
#pragma once
#include "app/engine/runner.h"

typedef struct {
  float *p;
  size_t cap; /* in 4-byte elements (floats, or int32 where the comment says so) */
} Buf;

/* One norm's saved statistics (mean unused by RMSNorm). */
typedef struct {
  Buf mean, rstd;
} NormStats;

/* Per layer (and one more entry, index n_layer, for the model-level sites). */
typedef struct {
  Buf site[LMWB_SITE_N_KINDS]; /* the sites' blocks (RESID_PRE only in layer 0: see site_buf) */
  NormStats ln1[3];            /* ln1; with split q/k/v inputs one per q, k, v (rows N * heads) */
  Buf ln1_split[3];            /* split q/k/v inputs: the per-head normalised inputs [N, heads, C] */
  NormStats ln2;               /* ln2; the model-level entry: the final norm */
} LayerBufs;

enum { QKV_Q, QKV_K, QKV_V };

struct LmwbRunner {
  LmwbModel *m;
  const LmwbConfig *c;
  const LmwbBackend *be;
  const LmwbOps *o;
  const LmwbWeights *w; /* the weights on be, fetched at every forward */
  LmwbHookList *hooks;
  /* the last forward */
  int B, T, past, Tk;
  unsigned run_sites;   /* LmwbRunSites of the last forward */
  bool last_only, cached, have_forward;
  int *lens;            /* host [B], NULL: all T */
  int32_t *ids;         /* host [B, T] */
  Buf ids_d, pos_ids_d, lens_d; /* int32 */
  LayerBufs *A;         /* activations, n_layer + 1 entries */
  Buf logits, last_rows, rows_scratch;
  Buf lr_scratch;       /* x V of low-rank changes: [N, max rank] */
  Buf *kc, *vc;         /* KV cache (rotated keys, values): [B, cache_cap_T, kd] per layer */
  int cache_len, cache_B, cache_cap_T;
  /* gradients */
  LayerBufs *G;         /* n_layer + 1 entries; only site[] and ln1_split[] are used */
  Buf dlogits, qr_grad, kr_grad; /* qr/kr: pattern backward scratch with rotary */
  Buf loss_targets, loss_scale, loss_rows, loss_ref, loss_dl; /* loss scratch (targets int32) */
  Buf seed_scratch;
  Buf pgrad;            /* flat parameter gradients */
  LmwbWeights gw;       /* views into pgrad */
  bool have_grads;      /* site gradients belong to the last forward */
  bool grad_valid;      /* site gradients hold a complete backward of a B x T run */
  int grad_low_layer;   /* lowest layer the last backward went through (0: down to the embeddings) */
  LayerBufs *acc;       /* accumulated site gradients (accumulate_grads), n_layer + 1 entries */
  bool acc_active;
  int acc_B, acc_T;
  /* host copies handed to readers and hooks (host memory) */
  GHashTable *stage;    /* key -> float*, freed at every forward and backward */
  float *hook_stage;
  size_t hook_stage_n;
  float *pgrad_host;
};

/* Backend memory: grows b to n elements (contents not kept). FALSE when the backend is out. */
gboolean rn_ensure(LmwbRunner *r, Buf *b, size_t n);
void rn_buf_free(LmwbRunner *r, Buf *b);
void rn_zero(LmwbRunner *r, Buf *b, size_t n);
void rn_copy(LmwbRunner *r, float *dst, const float *src, size_t n);

/* The block of a site in this run (activations, gradients or accumulated gradients); NULL when
 * the run does not compute it. RESID_PRE of layer L > 0 is RESID_POST of layer L - 1. */
float *rn_site(LmwbRunner *r, LayerBufs *set, LmwbSite s);
size_t rn_site_numel(const LmwbRunner *r, LmwbSiteKind k);
/* Hooks at a site, forward (backward FALSE) or on its gradient; on a device backend through a
 * host copy. */
void rn_hooks(LmwbRunner *r, LmwbSite s, float *block, bool backward);
bool rn_has(const LmwbRunner *r, LmwbSiteKind k);

/* Norms of the model's kind; the final norm is the same with the lnf weights. */
void rn_norm_fwd(const LmwbBackend *be, const LmwbConfig *c, float *out, NormStats *st, const float *x,
                 const float *w, const float *b, int n);
void rn_norm_bwd(LmwbRunner *r, float *dx, float *dw, float *db, const float *dout, const float *x, const float *w,
                 NormStats *st, int n, bool freeze);

/* Linear layers with the model's low-rank changes: y[N,out] = x W^T + b + sum (x V) U^T. */
void rn_linear_fwd(LmwbRunner *r, float *y, const float *x, const float *W, const LmwbLowRank *lr, const float *b,
                   int N, int in, int out);
void rn_linear_bwd(LmwbRunner *r, float *dx, float *dW, float *db, const float *dy, const float *x, const float *W,
                   const LmwbLowRank *lr, int N, int in, int out);
/* The same with dx overwritten instead of added to (its first writer: no zeroing needed). */
void rn_linear_bwd_fresh(LmwbRunner *r, float *dx, float *dW, float *db, const float *dy, const float *x,
                         const float *W, const LmwbLowRank *lr, int N, int in, int out);
/* One head's slice of a linear, on strided rows: y[N,out] (row stride ldy) = x[N,in] (ldx) W^T with
 * W [out,in] (ldw), plus the low-rank changes whose U rows start at u_row and V rows at v_row.
 * Backward: dx += dy W + (dy U) V^T, dW += dy^T x (NULL: skipped). */
void rn_head_linear_fwd(LmwbRunner *r, float *y, int ldy, const float *x, int ldx, const float *W, int ldw,
                        const LmwbLowRank *lr, int u_row, int v_row, int N, int in, int out);
void rn_head_linear_bwd(LmwbRunner *r, float *dx, int ldx, float *dW, const float *dy, int ldy, const float *x,
                        const float *W, int ldw, const LmwbLowRank *lr, int u_row, int v_row, int N, int in, int out);

/* Forward and backward bodies. */
void rn_forward_body(LmwbRunner *r);
/* Backward from the gradient already in G(LN_FINAL) (top = n_layer) or from seeds only. */
gboolean rn_backward_body(LmwbRunner *r, const LmwbGradSeed *seeds, int n_seeds, int top,
                          const LmwbBackwardOptions *opt, GError **error);
/* dL/dlogits of the loss terms into r->dlogits; the weighted sum into *value. */
gboolean rn_loss_backward(LmwbRunner *r, const LmwbLoss *terms, int n_terms, double *value, GError **error);
/* Next-token targets on the host: explicit, or the input shifted by one within each length. */
int32_t *rn_make_targets(const LmwbRunner *r, const int32_t *explicit_targets);
