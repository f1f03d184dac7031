/* The transcoder trainer's state, shared by the optimisation (transcoder_train.c) and the run with
 * its data stream and checkpoints (transcoder_train_run.c). Not a public header. */
#pragma once
#include "circuits/transcoder_train.h"
#include "app/engine/optim.h"

struct LmwbTcTrainer {
  int d_in, d_sae, d_out;
  LmwbTcActivation act;
  int k;
  gboolean sae;             /* encode x - b_dec */
  double sparsity;          /* lambda */
  float jump_eps;           /* JumpReLU bandwidth (and initial threshold), normalised units */
  double sparse_below;      /* active fraction below which the sparse path runs */
  double aux_coef;          /* TopK's AuxK coefficient (0: off) */
  int aux_k;                /* dead features each token may use in AuxK */
  int64_t dead_window;      /* tokens without activity that make a feature dead (AuxK) */
  /* parameters and their gradient, flat (layout: lmwb_tc_trainer_params) */
  size_t n_params;
  float *p, *g;
  float *W_enc, *b_enc, *W_dec, *b_dec, *log_theta;      /* views into p */
  float *gW_enc, *gb_enc, *gW_dec, *gb_dec, *glog_theta; /* views into g */
  LmwbAdamW *adam;
  /* normalisers, the mean normalised input (resampling), bookkeeping */
  double rho_x, rho_y;
  float *mu_x;              /* [d_in] */
  int64_t *last_active;     /* [d_sae]: tokens seen when the feature was last active */
  int64_t seen, resampled;
  guint64 rng;              /* resampling draws */
  gboolean initialised;
  /* scratch for batches of up to cap rows */
  int cap;
  float *xn, *yn, *pre, *f, *out, *dout;
  double *row_err, *row_s;  /* per row: squared error, sparsity term */
  int *cnt_act, *cnt_near, *cnt_pat, *row_ptr;
  /* per feature */
  float *dnorm, *theta;
  int *fire, *col_ptr;
  double *col_sum;          /* column sums (f or dpre) */
  /* AuxK: per row up to aux_k (feature, activation) pairs among the dead features, their
   * count, the gradient of the auxiliary error per row, and the pairs grouped by feature */
  int32_t *aux_j, *aux_ent;
  float *aux_a, *aux_dr;
  int *aux_cnt, *aux_ptr;
  guint8 *dead;
  /* sparse entries (the sparse path: active features, plus near-threshold ones for JumpReLU;
   * the dense path: near-threshold entries of JumpReLU only) */
  size_t ent_cap;
  int32_t *ent_j, *ent_i, *col_ent;
  float *ent_f, *ent_df, *ent_dpre;
  guint8 *ent_near;
};

/* The squared error of every row of a sample (normalised units), in chunks of the scratch. */
void lmwb_tc_trainer_row_errors(LmwbTcTrainer *t, const float *x, const float *y, int n, double *err);

