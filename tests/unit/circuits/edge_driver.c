/* Runs the edge-masked stream (circuits/edge_stream.h) on .npy files, for test_edge_stream.py:
 *   edge_driver MODEL DIR
 * reads DIR/clean.npy and DIR/corrupt.npy (int32 [B, T] token ids), DIR/z.npy (float32 [n_edges]
 * masks) and DIR/w.npy (float32 [B, V]); runs the corrupted batch, then the clean one with the
 * masks, and a backward of J = sum_b w[b] . logits[b, T-1]; writes DIR/logits.npy (float32
 * [B, V], the last position), DIR/dz.npy (float32 [n_edges], dJ/dz) and DIR/sizes.npy (float32
 * [n_writers, n_readers, n_edges]). Errors: "edge_driver: MESSAGE", exit 2 for input errors. */
#include <stdio.h>
#include <string.h>

#include "app/core/errors.h"
#include "app/formats/npy.h"
#include "circuits/edge_stream.h"

static void *load(const char *dir, const char *name, gboolean ints, int64_t *shape, int *nd, GError **error) {
  g_autofree char *path = g_build_filename(dir, name, NULL);
  return ints ? (void *)lmwb_npy_read_i32(path, shape, nd, error) : (void *)lmwb_npy_read_f32(path, shape, nd, error);
}

static gboolean save(const char *dir, const char *name, const float *x, int64_t n0, int64_t n1, GError **error) {
  g_autofree char *path = g_build_filename(dir, name, NULL);
  const int64_t shape[2] = {n0, n1};
  return lmwb_npy_write_f32(path, x, shape, n1 ? 2 : 1, error);
}

static gboolean run(const char *model_dir, const char *dir, GError **error) {
  int64_t sc[LMWB_NPY_MAX_DIMS], sk[LMWB_NPY_MAX_DIMS], sz[LMWB_NPY_MAX_DIMS], sw[LMWB_NPY_MAX_DIMS];
  int nc = 0, nk = 0, nz = 0, nw = 0;
  g_autofree int32_t *clean = load(dir, "clean.npy", TRUE, sc, &nc, error);
  g_autofree int32_t *corrupt = clean ? load(dir, "corrupt.npy", TRUE, sk, &nk, error) : NULL;
  g_autofree float *z = corrupt ? load(dir, "z.npy", FALSE, sz, &nz, error) : NULL;
  g_autofree float *w = z ? load(dir, "w.npy", FALSE, sw, &nw, error) : NULL;
  if (!w) return FALSE;
  int B = (int)sc[0], T = (int)sc[1];
  g_autoptr(LmwbModel) m = lmwb_model_load(model_dir, error);
  if (!m) return FALSE;
  int V = m->cfg.vocab_size;
  LmwbRunner *r = lmwb_runner_new(m);
  LmwbEdgeStream *s = lmwb_edge_stream_new(r, error);
  gboolean ok = s != NULL;
  const LmwbEdgeGraph *g = s ? lmwb_edge_stream_graph(s) : NULL;
  if (ok && (nc != 2 || nk != 2 || sk[0] != B || sk[1] != T || nz != 1 || sz[0] != g->n_edges || nw != 2 ||
             sw[0] != B || sw[1] != V)) {
    lmwb_input_error(error, "the .npy shapes do not fit (%" G_GINT64_FORMAT " edges, vocabulary %d)", g->n_edges, V);
    ok = FALSE;
  }
  ok = ok && lmwb_edge_stream_corrupt(s, corrupt, B, T, NULL, error);
  if (ok) lmwb_edge_stream_set_masks(s, z);
  ok = ok && lmwb_runner_forward(r, clean, B, T, NULL, error);
  g_autofree float *dl = g_new0(float, (size_t)B * T * V), *last = g_new(float, (size_t)B * V);
  if (ok) {
    const float *logits = lmwb_runner_logits(r, NULL);
    for (int b = 0; b < B; b++) {
      memcpy(last + (size_t)b * V, logits + ((size_t)b * T + T - 1) * V, V * sizeof(float));
      memcpy(dl + ((size_t)b * T + T - 1) * V, w + (size_t)b * V, V * sizeof(float));
    }
    LmwbLoss loss = {.kind = LMWB_LOSS_DLOGITS, .dlogits = dl};
    lmwb_edge_stream_reset_grads(s);
    ok = lmwb_runner_backward(r, &loss, 1, NULL, NULL, error);
  }
  if (ok) {
    float sizes[3] = {(float)g->n_writers, (float)g->n_readers, (float)g->n_edges};
    ok = save(dir, "logits.npy", last, B, V, error) && save(dir, "dz.npy", lmwb_edge_stream_mask_grads(s), g->n_edges, 0, error) &&
         save(dir, "sizes.npy", sizes, 3, 0, error);
  }
  lmwb_edge_stream_free(s);
  lmwb_runner_free(r);
  return ok;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: edge_driver MODEL DIR\n");
    return 2;
  }
  GError *err = NULL;
  if (!run(argv[1], argv[2], &err)) {
    fprintf(stderr, "edge_driver: %s\n", err ? err->message : "failed without a message");
    int rc = err ? lmwb_error_exit_status(err) : 1;
    g_clear_error(&err);
    return rc;
  }
  return 0;
}
