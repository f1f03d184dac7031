/* AdamW (Loshchilov & Hutter) over a flat parameter buffer, with global-norm gradient clipping
 * and the warm-up + cosine learning-rate schedule. Decay is applied to matrices only (the
 * caller passes a mask: 1 where weight decay applies). */
#pragma once
#include <glib.h>
#include <stddef.h>
#include <stdint.h>

typedef struct LmwbAdamW {
  size_t n;
  float *m, *v;      /* first and second moments */
  uint8_t *decay;    /* 1: apply weight decay */
  int64_t step;      /* updates done */
  float beta1, beta2, eps, weight_decay;
} LmwbAdamW;

LmwbAdamW *lmwb_adamw_new(size_t n, float beta1, float beta2, float eps, float weight_decay, const uint8_t *decay_mask);
void lmwb_adamw_free(LmwbAdamW *o);
/* One update with learning rate lr. */
void lmwb_adamw_step(LmwbAdamW *o, float *params, const float *grads, float lr);
/* Scales grads so their global L2 norm is at most max_norm (no-op if <= 0); returns the norm before. */
double lmwb_clip_grad_norm(float *grads, size_t n, double max_norm);
/* Linear warm-up to peak over `warmup` steps, then cosine decay to min_lr at `total`. */
double lmwb_lr_schedule(int64_t step, int64_t warmup, int64_t total, double peak, double min_lr);
