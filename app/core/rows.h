/* Row math every method shares: the softmax, log-softmax and the top-k of a row of logits. */
#pragma once
#include <stdint.h>

/* Softmax of one row (probs may be logits: in place), with the max subtracted and the sum in
 * double precision. */
void lmwb_softmax_row(float *probs, const float *logits, int V);
/* Log-softmax of one row (out may be logits), the log-sum-exp in double precision. */
void lmwb_log_softmax_row(float *out, const float *logits, int V);

/* The k largest values of a row (1 <= k <= V) into ids/vals, best first, ties to the lower id;
 * returns the row's maximum. A min-heap of the k best so far: O(V) for small k. */
float lmwb_top_k(const float *x, int V, int k, int32_t *ids, float *vals);
