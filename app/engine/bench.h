/* Throughput measurements shared by `lmwb-batch bench` and the benchmark suite. */
#pragma once
#include "app/engine/model.h"

typedef struct LmwbBenchResult {
  double tokens_per_s; /* B*T / best time */
  double seconds;      /* best time of one run */
  double gflops;       /* model FLOPs of one run / best time */
} LmwbBenchResult;

/* Forward with full logits (or forward + backward of the mean LM loss with all parameter
 * gradients) on seeded random ids; one warm-up, then the best of `runs`. */
gboolean lmwb_bench_model(LmwbModel *m, int B, int T, gboolean backward, int runs, LmwbBenchResult *res,
                          GError **error);
/* FLOPs of one forward pass (matrix products and attention). */
double lmwb_bench_forward_flops(const LmwbConfig *c, int B, int T);
/* Best GFLOP/s of a 2048^3 SGEMM on this backend (the machine's practical peak). */
double lmwb_bench_sgemm_peak(const LmwbBackend *be);
