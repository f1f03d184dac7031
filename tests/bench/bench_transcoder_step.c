/* The lmwb side of tests/bench/bench_transcoder.py: one transcoder training step (encode, loss,
 * backward, decoder projection, Adam, renormalisation) timed on a batch of stored activations.
 *
 * bench_transcoder_step MODEL_DIR TEXT LAYER D_SAE BATCH STEPS OUT_DIR relu|topk:K [INIT_SAELENS_DIR]
 * Reads BATCH tokens of TEXT (windows of 128) through the model, keeps blocks.LAYER.ln2 and
 * blocks.LAYER.hook_mlp_out, initialises a transcoder with that activation (ReLU with an L1
 * penalty, or TopK), or continues the one in INIT_SAELENS_DIR (its activation), and writes into
 * OUT_DIR what PyTorch needs to run the same step from the same state: x.npy, y.npy (the batch,
 * model units), params.npy (the flat parameters, normalised units, the layout of
 * lmwb_tc_trainer_params) and norm.json (rho_x, rho_y, l1, k, lr). Then runs
 * STEPS steps three ways from that state: the automatic path (sparse when few features are
 * active), the dense GEMMs only, and the sparse entries only, and prints one JSON line with each
 * step's seconds. */
#include "circuits/transcoder_train.h"
#include "app/formats/npy.h"
#include "app/formats/tokenizer.h"
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define L1 0.004
#define LR 4e-4

static void die(GError *err) {
  fprintf(stderr, "bench_transcoder_step: %s\n", err ? err->message : "failed");
  exit(1);
}

static void keep(float *block, const LmwbHookCtx *c, void *user) {
  float **dst = user;
  memcpy(*dst, block, sizeof(float) * (size_t)c->B * c->T * c->R);
  *dst += (size_t)c->B * c->T * c->R;
}

int main(int argc, char **argv) {
  if (argc < 9) {
    fprintf(stderr, "usage: bench_transcoder_step MODEL TEXT LAYER D_SAE BATCH STEPS OUT_DIR relu|topk:K [INIT_DIR]\n");
    return 2;
  }
  GError *err = NULL;
  LmwbModel *m = lmwb_model_load(argv[1], &err);
  if (!m) die(err);
  int L = atoi(argv[3]), ds = atoi(argv[4]), n = atoi(argv[5]), steps = atoi(argv[6]);
  const char *out = argv[7], *init = argc > 9 ? argv[9] : NULL;
  int k = g_str_has_prefix(argv[8], "topk:") ? atoi(argv[8] + 5) : 0;
  int C = m->cfg.d_model, T = MIN(128, m->cfg.n_ctx), W = (n + T - 1) / T;
  n = W * T;
  gchar *text = NULL;
  gsize len = 0;
  if (!g_file_get_contents(argv[2], &text, &len, NULL)) die(NULL);
  size_t n_ids = 0;
  int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, text, len, FALSE, &n_ids, &err);
  if (!ids || n_ids < (size_t)n) die(err);
  float *x = g_new(float, (size_t)n * C), *y = g_new(float, (size_t)n * C), *xp = x, *yp = y;
  LmwbRunner *r = lmwb_runner_new(m);
  LmwbHook hx = {.site = {LMWB_SITE_LN2, L}, .op = LMWB_HOOK_OBSERVE, .fn = keep, .user = &xp};
  LmwbHook hy = {.site = {LMWB_SITE_MLP_OUT, L}, .op = LMWB_HOOK_OBSERVE, .fn = keep, .user = &yp};
  if (!lmwb_runner_add_hook(r, &hx, &err) || !lmwb_runner_add_hook(r, &hy, &err)) die(err);
  LmwbForwardOptions fo = {.last_logits_only = true};
  for (int w0 = 0; w0 < W; w0 += 16)
    if (!lmwb_runner_forward(r, ids + (size_t)w0 * T, MIN(16, W - w0), T, &fo, &err)) die(err);
  lmwb_runner_free(r);
  LmwbTranscoder *start = init ? lmwb_transcoder_load_saelens(init, &err) : NULL;
  if (init && !start) die(err);
  if (start) k = start->act == LMWB_TC_TOPK ? start->k : 0;
  g_mkdir_with_parents(out, 0755);
  const char *names[3] = {"auto", "dense", "sparse"};
  const double below[3] = {0, -1, 1};
  GString *json = g_string_new("{");
  for (int v = 0; v < 3; v++) {
    LmwbTcTrainOptions o;
    lmwb_tc_train_options_init(&o, L);
    o.sparse_below = below[v];
    if (k) o.act = LMWB_TC_TOPK, o.k = k;
    else o.sparsity = L1;
    LmwbTcTrainer *t = lmwb_tc_trainer_new(C, start ? start->d_sae : ds, C, FALSE, &o, &err);
    if (!t || !lmwb_tc_trainer_reserve(t, n, &err)) die(err);
    if (start ? !lmwb_tc_trainer_init_from(t, start, x, y, n, &err) : !lmwb_tc_trainer_init(t, x, y, n, 1, &err)) die(err);
    if (v == 0) {
      size_t np = 0;
      float *p = lmwb_tc_trainer_params(t, &np);
      int64_t sx[2] = {n, C}, sp[1] = {(int64_t)np};
      g_autofree char *fx = g_build_filename(out, "x.npy", NULL), *fy = g_build_filename(out, "y.npy", NULL),
                      *fp = g_build_filename(out, "params.npy", NULL), *fn = g_build_filename(out, "norm.json", NULL);
      if (!lmwb_npy_write_f32(fx, x, sx, 2, &err) || !lmwb_npy_write_f32(fy, y, sx, 2, &err) ||
          !lmwb_npy_write_f32(fp, p, sp, 1, &err))
        die(err);
      /* the normalisers, as the trainer computed them (transcoder_train.h) */
      double mx = 0, vy = 0;
      g_autofree double *my = g_new0(double, C);
      for (size_t i = 0; i < (size_t)n * C; i++) mx += (double)x[i] * x[i] / n, my[i % C] += y[i] / n;
      for (size_t i = 0; i < (size_t)n * C; i++) vy += (y[i] - my[i % C]) * (y[i] - my[i % C]) / n;
      g_autofree char *nj = g_strdup_printf("{\"rho_x\": %.17g, \"rho_y\": %.17g, \"l1\": %g, \"k\": %d, \"lr\": %g, "
                                            "\"d_sae\": %d}\n", sqrt(mx), sqrt(vy), k ? 0 : L1, k, LR,
                                            start ? start->d_sae : ds);
      g_file_set_contents(fn, nj, -1, NULL);
    }
    g_string_append_printf(json, "%s\"%s\": {\"seconds\": [", v ? ", " : "", names[v]);
    double l0 = 0;
    int sparse = 0;
    for (int s = 0; s < steps; s++) {
      LmwbTcStepStats st;
      gint64 t0 = g_get_monotonic_time();
      lmwb_tc_trainer_step(t, x, y, n, LR, 1.0, &st);
      g_string_append_printf(json, "%s%.6f", s ? ", " : "", (g_get_monotonic_time() - t0) / 1e6);
      l0 = st.l0, sparse += st.sparse;
    }
    g_string_append_printf(json, "], \"l0\": %.2f, \"sparse_steps\": %d}", l0, sparse);
    lmwb_tc_trainer_free(t);
  }
  g_string_append_printf(json, ", \"tokens\": %d, \"d_in\": %d}", n, C);
  puts(json->str);
  g_string_free(json, TRUE);
  lmwb_transcoder_free(start);
  g_free(x), g_free(y), g_free(ids), g_free(text);
  lmwb_model_unref(m);
  return 0;
}
