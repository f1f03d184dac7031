/* Codebook speed: forward passes (full logits) of a model with codebooks at every site (every
 * head's hook_z and every hook_mlp_out; random codes) against the same model without them.
 * Usage: bench_codebooks [MODEL_DIR] [--codes C[,C...]] [--k K] [--batch B] [--seq T] [--runs N]
 * Default: the built-in model, C = 1024 and 10000, k 8, 8 x 128 tokens, best of 5. Prints a line per
 * C and the same as JSON; exits 1 when the first C runs below LMWB_CB_MIN_SPEED of the plain model
 * (issue 17: at least 0.5x). The scoring costs 4·d_model·C FLOPs per token and layer (one GEMM per
 * head and one for the MLP) against about 24·d_model² for the layer itself, so the ratio falls
 * with C / d_model: large sets on small models cost more than the model. */
#include "analysis/codebooks.h"
#include "app/core/errors.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LMWB_CB_MIN_SPEED 0.5

static double best_forward(LmwbRunner *r, const int32_t *ids, int B, int T, int runs) {
  GError *err = NULL;
  double best = INFINITY;
  for (int i = 0; i <= runs; i++) { /* the first is a warm-up */
    gint64 t0 = g_get_monotonic_time();
    if (!lmwb_runner_forward(r, ids, B, T, NULL, &err)) {
      fprintf(stderr, "bench_codebooks: %s\n", err->message);
      exit(2);
    }
    double s = (g_get_monotonic_time() - t0) / 1e6;
    if (i > 0 && s < best) best = s;
  }
  return best;
}

int main(int argc, char **argv) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_autofree char *dflt = g_build_filename(root ? root : ".", "data", "models", "tiny-world", NULL);
  const char *dir = dflt, *codes_arg = "1024,10000";
  int k = 8, B = 8, T = 128, runs = 5;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--codes") && i + 1 < argc) codes_arg = argv[++i];
    else if (!strcmp(argv[i], "--k") && i + 1 < argc) k = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--batch") && i + 1 < argc) B = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--seq") && i + 1 < argc) T = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
    else dir = argv[i];
  }
  GError *err = NULL;
  LmwbModel *m = lmwb_model_load(dir, &err);
  if (!m) {
    fprintf(stderr, "bench_codebooks: %s\n", err->message);
    return 2;
  }
  T = MIN(T, m->cfg.n_ctx);
  int32_t *ids = g_new(int32_t, (size_t)B * T);
  for (int i = 0; i < B * T; i++) ids[i] = (int32_t)((i * 7919u + 13) % (unsigned)m->cfg.vocab_size);
  LmwbRunner *r = lmwb_runner_new(m);
  double plain = best_forward(r, ids, B, T, runs);
  int n = 2 * m->cfg.n_layer;
  LmwbCodebookSiteSpec *sp = g_new(LmwbCodebookSiteSpec, n);
  for (int l = 0; l < m->cfg.n_layer; l++) {
    sp[2 * l] = (LmwbCodebookSiteSpec){l, LMWB_CODEBOOK_ATTN};
    sp[2 * l + 1] = (LmwbCodebookSiteSpec){l, LMWB_CODEBOOK_MLP};
  }
  g_auto(GStrv) cs = g_strsplit(codes_arg, ",", -1);
  GString *json = g_string_new(NULL);
  g_string_append_printf(json, "{\"model\": \"%s\", \"batch\": %d, \"seq\": %d, \"k\": %d, \"plain_tokens_per_s\": %.1f, \"runs\": [",
                         dir, B, T, k, B * T / plain);
  printf("plain model: %.1f tokens/s (%.4f s per %d x %d forward)\n", B * T / plain, plain, B, T);
  double first_ratio = NAN;
  for (int c = 0; cs[c]; c++) {
    int C = atoi(cs[c]);
    LmwbCodebooks *cb = lmwb_codebooks_new(&m->cfg, k, C, sp, n, &err);
    if (!cb) {
      fprintf(stderr, "bench_codebooks: %s\n", err->message);
      return 2;
    }
    GRand *g = g_rand_new_with_seed(1);
    for (int i = 0; i < cb->n; i++)
      for (size_t j = 0; j < (size_t)cb->books[i].groups * C * cb->books[i].width; j++)
        cb->books[i].codes[j] = (float)g_rand_double_range(g, -1, 1);
    g_rand_free(g);
    LmwbCodebookRun *run = lmwb_codebooks_attach(r, cb, &err);
    double with = best_forward(r, ids, B, T, runs);
    lmwb_codebooks_detach(r, run);
    lmwb_codebooks_free(cb);
    double ratio = plain / with;
    if (c == 0) first_ratio = ratio;
    printf("codebooks at all %d sites, C = %d, k = %d: %.1f tokens/s, %.2fx the plain model\n", n, C, k, B * T / with,
           ratio);
    g_string_append_printf(json, "%s{\"codes\": %d, \"tokens_per_s\": %.1f, \"speed_vs_plain\": %.3f}", c ? ", " : "", C,
                           B * T / with, ratio);
  }
  g_string_append(json, "]}");
  printf("%s\n", json->str);
  g_string_free(json, TRUE);
  g_free(sp);
  g_free(ids);
  lmwb_runner_free(r);
  lmwb_model_unref(m);
  return first_ratio >= LMWB_CB_MIN_SPEED ? 0 : 1;
}
