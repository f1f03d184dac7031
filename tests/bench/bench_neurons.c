/* Benchmark: decode both vectors (in and out) of every neuron of a GPT-2-small-shaped random model
 * (12 layers x 3072 neurons, d_model 768, vocab 50257; weights made in memory, no file) with
 * lmwb_neurons_decode (blocked SGEMM + streaming top-10 + log-sum-exp), against the bare SGEMM of
 * the same shapes: 2 x 12 x [3072 x 768] . [768 x 50257] into a full output. Prints both times and
 * their ratio (goal <= 1.3). Usage: bench_neurons [LAYERS (default 12)] [BLOCK (default auto)] */
#include "analysis/neurons.h"
#include "app/core/errors.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  int n_layers = argc > 1 ? atoi(argv[1]) : 12;
  int block = argc > 2 ? atoi(argv[2]) : 0;
  if (n_layers < 1 || n_layers > 12 || block < 0) {
    fprintf(stderr, "usage: bench_neurons [LAYERS 1..12] [BLOCK]\n");
    return 2;
  }
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_autofree char *path = g_build_filename(root ? root : ".", "tests", "fixtures", "models", "gpt2", "config.json", NULL);
  LmwbConfig cfg;
  GError *err = NULL;
  if (!lmwb_config_load(path, &cfg, &err)) {
    fprintf(stderr, "%s\n", err->message);
    return 1;
  }
  cfg.n_layer = 12;
  cfg.d_model = 768;
  cfg.n_head = cfg.n_kv_head = 12;
  cfg.head_dim = 64;
  cfg.d_ff = 3072;
  cfg.vocab_size = 50257;
  cfg.n_ctx = 1024;
  LmwbModel *m = lmwb_model_new_random(&cfg, 1, &err);
  if (!m) {
    fprintf(stderr, "%s\n", err->message);
    return 1;
  }
  int d = cfg.d_model, F = cfg.d_ff, V = cfg.vocab_size;
  int *layers = g_new(int, n_layers);
  for (int i = 0; i < n_layers; i++) layers[i] = i;

  /* Bare SGEMM: the same products, full [3072, 50257] output per layer and vector. */
  float *C = g_malloc((size_t)F * V * sizeof(float));
  m->be->sgemm(false, true, 256, V, d, 1.0f, m->w.layers[0].w_up, d, m->w.head, d, 0.0f, C, V); /* warm-up */
  gint64 t0 = g_get_monotonic_time();
  for (int L = 0; L < n_layers; L++) {
    m->be->sgemm(false, true, F, V, d, 1.0f, m->w.layers[L].w_up, d, m->w.head, d, 0.0f, C, V);
    /* out vectors are w_down's columns: [d, F]^T . head^T */
    m->be->sgemm(true, true, F, V, d, 1.0f, m->w.layers[L].w_down, F, m->w.head, d, 0.0f, C, V);
  }
  double t_gemm = (g_get_monotonic_time() - t0) / 1e6;
  g_free(C);

  LmwbNeuronDecodeOptions o;
  lmwb_neuron_decode_options_init(&o);
  o.layers = layers;
  o.n_layers = n_layers;
  o.block = block;
  t0 = g_get_monotonic_time();
  for (int w = 0; w < 2; w++) {
    o.which = w ? LMWB_NEURON_OUT : LMWB_NEURON_IN;
    LmwbNeuronDecode *dec = lmwb_neurons_decode(m, &o, NULL, &err);
    if (!dec) {
      fprintf(stderr, "%s\n", err->message);
      return 1;
    }
    lmwb_neuron_decode_free(dec);
  }
  double t_dec = (g_get_monotonic_time() - t0) / 1e6;
  double flops = 2.0 * 2 * n_layers * (double)F * d * V;
  printf("neurons decode benchmark: %d layers x %d neurons x {in,out}, d_model %d, vocab %d, block %d, top-10\n", n_layers,
         F, d, V, lmwb_neurons_block_size(m, block));
  printf("  bare SGEMM      %8.2f s  (%6.1f GFLOP/s)\n", t_gemm, flops / t_gemm / 1e9);
  printf("  neurons decode  %8.2f s  (%6.1f GFLOP/s)\n", t_dec, flops / t_dec / 1e9);
  printf("  ratio decode / SGEMM = %.3f (goal <= 1.3)\n", t_dec / t_gemm);
  g_free(layers);
  lmwb_model_unref(m);
  return 0;
}
