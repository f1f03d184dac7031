/* Second moments streamed from a run: E[x xᵀ] of the activations (or, in a backward, of the
 * gradients) at a site, over the rows a run selects, accumulated in double precision without
 * keeping any per-token data. K-FAC's factors A = E[a aᵀ] and G = E[g gᵀ] and ROME's key
 * covariance C are such moments.
 *
 * A collector is an OBSERVE hook (hooks.h): install it on a runner, run forwards (and backwards,
 * for gradients), then read the mean. Rows: every valid position of each sequence (t < its
 * length), or all but each sequence's last valid position (skip_last: K-FAC leaves out the
 * position that has no next token). Each block's product is a float32 SYRK over at most
 * LMWB_MOMENTS_BLOCK rows, added into the double sums, so the error does not grow with the
 * number of tokens. */
#pragma once
#include "app/engine/runner.h"

#define LMWB_MOMENTS_BLOCK 1024

typedef struct LmwbMoments LmwbMoments;

/* dim x dim moments (memory checked before allocating). */
LmwbMoments *lmwb_moments_new(int dim, GError **error);
void lmwb_moments_free(LmwbMoments *m);
int lmwb_moments_dim(const LmwbMoments *m);
/* Add n rows of dim floats (row stride `stride` floats). */
void lmwb_moments_add(LmwbMoments *m, const float *rows, int n, int stride);
/* Add another collector's sums (the same dim). */
void lmwb_moments_merge(LmwbMoments *m, const LmwbMoments *other);
/* Rows added so far. */
uint64_t lmwb_moments_count(const LmwbMoments *m);
/* The sums Σ x xᵀ, or the mean (sums / count), as a full symmetric [dim, dim] matrix. */
void lmwb_moments_sum(const LmwbMoments *m, double *out);
void lmwb_moments_mean(const LmwbMoments *m, double *out);

/* Collect at a site of a runner: activations (gradients = false) in every forward, or gradients in
 * every backward. The site's rows must have dim floats (not the pattern). Returns the hook id, or
 * 0 with an input error; the collector must outlive the hook. */
int lmwb_moments_collect(LmwbMoments *m, LmwbRunner *r, LmwbSite site, bool gradients, bool skip_last,
                         GError **error);
