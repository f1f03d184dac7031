/* One edge-pruning step on the built-in model against a plain forward + backward of the same batch
 * (issue: at most 3x). IOI, batch 32. The pruning step: the corrupted run, the masked run and its
 * backward, the mask update; measured as the difference of two pruning runs of different lengths,
 * so the setup (task, reference log-probabilities) cancels. Prints JSON; exit 1 above 3x. */
#include "circuits/edge_circuit.h"
#include "app/core/errors.h"
#include <stdio.h>

static double now(void) { return g_get_monotonic_time() / 1e6; }

static double prune_seconds(LmwbModel *m, const LmwbEdgeTask *t, int steps) {
  LmwbEdgePruneOptions o = {.target_sparsity = 0.9, .steps = steps, .batch = 32};
  GError *err = NULL;
  double t0 = now();
  LmwbEdgePruneResult *r = lmwb_edge_prune(m, t, &o, NULL, &err);
  g_assert_no_error(err);
  lmwb_edge_prune_result_free(r);
  return now() - t0;
}

int main(int argc, char **argv) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_autofree char *dir = g_build_filename(root ? root : ".", "data/models/tiny-world", NULL);
  GError *err = NULL;
  LmwbModel *m = lmwb_model_load(dir, &err);
  if (!m) {
    fprintf(stderr, "bench_edge_step: %s (skipping)\n", err->message);
    return 77;
  }
  LmwbEdgeTask *t = lmwb_edge_task_open("ioi", m, 32, 1, &err);
  g_assert_no_error(err);
  int T = lmwb_edge_task_max_len(t), B = t->n, reps = argc > 1 ? atoi(argv[1]) : 10;
  int32_t *ids = g_new(int32_t, (size_t)B * T);
  int *lens = g_new(int, B);
  for (int b = 0; b < B; b++) {
    for (int j = 0; j < T; j++) ids[(size_t)b * T + j] = t->ex[b].clean[j < t->ex[b].len ? j : 0];
    lens[b] = t->ex[b].len;
  }
  LmwbRunner *r = lmwb_runner_new(m);
  LmwbForwardOptions fo = {.lens = lens};
  LmwbLoss loss = {.kind = LMWB_LOSS_NEXT_TOKEN};
  double best_plain = 1e9;
  for (int i = 0; i < reps + 1; i++) {
    double t0 = now();
    g_assert_true(lmwb_runner_forward(r, ids, B, T, &fo, &err));
    g_assert_true(lmwb_runner_backward(r, &loss, 1, NULL, NULL, &err));
    if (i) best_plain = MIN(best_plain, now() - t0);
  }
  lmwb_runner_free(r);
  double short_run = prune_seconds(m, t, 2), long_run = prune_seconds(m, t, 2 + reps);
  double step = (long_run - short_run) / reps, ratio = step / best_plain;
  printf("{\"batch\": %d, \"tokens\": %d, \"plain_fwd_bwd_s\": %.4f, \"prune_step_s\": %.4f, \"ratio\": %.2f}\n", B, T,
         best_plain, step, ratio);
  lmwb_edge_task_free(t);
  lmwb_model_unref(m);
  g_free(ids);
  g_free(lens);
  return ratio <= 3.0 ? 0 : 1;
}
