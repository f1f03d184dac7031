/* Attribution graphs: nodes of the local replacement model and the direct effects between them,
 * computed with injected gradients in batches. Contract: attribution.h. */
#include "circuits/attribution.h"
#include "app/core/errors.h"
#include "app/core/memory.h"
#include "app/core/rows.h"
#include <cblas.h>
#include <math.h>
#include <string.h>

/* What the forward pass on the prompt gives: per layer the MLP input and output, the features
 * and the error vectors; the embeddings; the logits of the last position. */
typedef struct {
  LmwbModel *m;
  const LmwbTranscoderSet *set;
  int nl, T, C;
  float *resid0;      /* [T, C] token nodes' outputs */
  float **err;        /* [nl][T, C] error nodes' outputs */
  int F;              /* active features */
  int *f_layer, *f_pos, *f_index;
  float *f_act, *f_pre;
  int n_logits;
  int32_t *l_tok;
  float *l_prob, *l_value, *l_vec; /* l_vec [n_logits, C] demeaned unembedding rows */
} Prompt;

static void prompt_clear(Prompt *p) {
  g_free(p->resid0);
  for (int L = 0; p->err && L < p->nl; L++) g_free(p->err[L]);
  g_free(p->err);
  g_free(p->f_layer), g_free(p->f_pos), g_free(p->f_index), g_free(p->f_act), g_free(p->f_pre);
  g_free(p->l_tok), g_free(p->l_prob), g_free(p->l_value), g_free(p->l_vec);
}

static gboolean read_prompt(Prompt *p, LmwbRunner *r, const int32_t *ids, const LmwbAttributionOptions *o,
                            GError **error) {
  LmwbModel *m = p->m;
  const LmwbConfig *c = &m->cfg;
  int T = p->T, C = p->C, V = c->vocab_size;
  if (!lmwb_runner_forward(r, ids, 1, T, NULL, error)) return FALSE;
  int64_t shape[4];
  p->resid0 = g_memdup2(lmwb_runner_activation(r, (LmwbSite){LMWB_SITE_RESID_PRE, 0}, shape, NULL, error),
                        sizeof(float) * T * C);
  gboolean zero_first = c->bos_id >= 0 && ids[0] == c->bos_id; /* the BOS position carries no features */
  GArray *fl = g_array_new(FALSE, FALSE, sizeof(int)), *fp = g_array_new(FALSE, FALSE, sizeof(int)),
         *fi = g_array_new(FALSE, FALSE, sizeof(int)), *fa = g_array_new(FALSE, FALSE, sizeof(float)),
         *fr = g_array_new(FALSE, FALSE, sizeof(float));
  p->err = g_new0(float *, p->nl);
  for (int L = 0; L < p->nl; L++) {
    const LmwbTranscoder *tc = p->set->layers[L];
    const float *x = lmwb_runner_activation(r, tc->in, shape, NULL, error);
    const float *out = lmwb_runner_activation(r, tc->out, shape, NULL, error);
    g_autofree float *pre = g_new(float, (size_t)T * tc->d_sae), *f = g_new(float, (size_t)T * tc->d_sae);
    lmwb_transcoder_encode(tc, x, T, pre, f);
    if (zero_first) memset(f, 0, sizeof(float) * tc->d_sae);
    for (int t = 0; t < T; t++)
      for (int j = 0; j < tc->d_sae; j++) {
        float a = f[(size_t)t * tc->d_sae + j];
        if (a == 0.f) continue;
        g_array_append_val(fl, L), g_array_append_val(fp, t), g_array_append_val(fi, j);
        g_array_append_val(fa, a);
        g_array_append_val(fr, pre[(size_t)t * tc->d_sae + j]);
      }
    /* the error node: what the transcoder (with the BOS position's features off) leaves out */
    p->err[L] = g_new(float, (size_t)T * C);
    lmwb_transcoder_decode(tc, f, x, T, p->err[L]);
    for (size_t i = 0; i < (size_t)T * C; i++) p->err[L][i] = out[i] - p->err[L][i];
  }
  p->F = (int)fl->len;
  p->f_layer = (int *)g_array_free(fl, FALSE), p->f_pos = (int *)g_array_free(fp, FALSE);
  p->f_index = (int *)g_array_free(fi, FALSE), p->f_act = (float *)g_array_free(fa, FALSE);
  p->f_pre = (float *)g_array_free(fr, FALSE);
  /* logit targets: the most probable tokens until their mass reaches logit_mass */
  const float *lg = lmwb_runner_logits(r, NULL) + (size_t)(T - 1) * V;
  int kmax = MIN(o->max_logits > 0 ? o->max_logits : LMWB_ATTRIBUTION_MAX_LOGITS, V);
  double mass = o->logit_mass > 0 ? o->logit_mass : LMWB_ATTRIBUTION_LOGIT_MASS;
  g_autofree float *prob = g_new(float, V), *top = g_new(float, kmax);
  g_autofree int32_t *ids_top = g_new(int32_t, kmax);
  lmwb_softmax_row(prob, lg, V);
  lmwb_top_k(prob, V, kmax, ids_top, top);
  double cum = 0, mean_logit = 0;
  int n = 0;
  while (n < kmax && cum < mass) cum += top[n++];
  for (int v = 0; v < V; v++) mean_logit += lg[v] / V;
  p->n_logits = n;
  p->l_tok = g_memdup2(ids_top, sizeof(int32_t) * n);
  p->l_prob = g_memdup2(top, sizeof(float) * n);
  p->l_value = g_new(float, n);
  p->l_vec = g_new(float, (size_t)n * C);
  g_autofree double *mean_row = g_new0(double, C);
  for (int v = 0; v < V; v++)
    for (int i = 0; i < C; i++) mean_row[i] += m->w.head[(size_t)v * C + i];
  for (int k = 0; k < n; k++) {
    p->l_value[k] = (float)(lg[p->l_tok[k]] - mean_logit);
    for (int i = 0; i < C; i++) p->l_vec[(size_t)k * C + i] = (float)(m->w.head[(size_t)p->l_tok[k] * C + i] - mean_row[i] / V);
  }
  return TRUE;
}

/* ---- rows ---------------------------------------------------------------------------------------- */

/* Columns of a computed row: every active feature, then errors (layer-major), then tokens. */
static int n_columns(const Prompt *p) { return p->F + (p->nl + 1) * p->T; }

/* Rows for a batch of targets: target k is a logit (k < 0: logit -k-1) or an active feature. */
static gboolean compute_rows(const Prompt *p, LmwbRunner *r, const int32_t *ids, const int *targets, int nb,
                             float *rows, GError **error) {
  int T = p->T, C = p->C, nl = p->nl, ncol = n_columns(p);
  g_autofree int32_t *batch_ids = g_new(int32_t, (size_t)nb * T);
  for (int b = 0; b < nb; b++) memcpy(batch_ids + (size_t)b * T, ids, sizeof(int32_t) * T);
  LmwbForwardOptions fo = {.last_logits_only = true};
  if (!lmwb_runner_forward(r, batch_ids, nb, T, &fo, error)) return FALSE;
  /* one injected block per site in use: ln2 of each layer, ln_final */
  float **blocks = g_new0(float *, nl + 1);
  for (int b = 0; b < nb; b++) {
    int k = targets[b];
    int site = k < 0 ? nl : p->f_layer[k], pos = k < 0 ? T - 1 : p->f_pos[k];
    if (!blocks[site]) blocks[site] = g_new0(float, (size_t)nb * T * C);
    float *dst = blocks[site] + ((size_t)b * T + pos) * C;
    if (k < 0) {
      memcpy(dst, p->l_vec + (size_t)(-k - 1) * C, sizeof(float) * C);
    } else {
      const LmwbTranscoder *tc = p->set->layers[p->f_layer[k]];
      for (int i = 0; i < C; i++) dst[i] = tc->W_enc[(size_t)i * tc->d_sae + p->f_index[k]];
    }
  }
  LmwbGradSeed seeds[nl + 1];
  int ns = 0;
  for (int s = 0; s <= nl; s++)
    if (blocks[s])
      seeds[ns++] = (LmwbGradSeed){s == nl ? (LmwbSite){LMWB_SITE_LN_FINAL, -1} : p->set->layers[s]->in, blocks[s]};
  LmwbBackwardOptions bo = {.freeze = LMWB_FREEZE_PATTERN | LMWB_FREEZE_NORM | LMWB_FREEZE_MLP_OUT};
  gboolean ok = lmwb_runner_backward_from(r, seeds, ns, &bo, error);
  for (int s = 0; s <= nl; s++) g_free(blocks[s]);
  g_free(blocks);
  if (!ok) return FALSE;
  int64_t shape[4];
  const float *g0 = lmwb_runner_grad(r, (LmwbSite){LMWB_SITE_RESID_PRE, 0}, shape, NULL, error);
  const float **gl = g_new(const float *, nl);
  for (int L = 0; L < nl && g0; L++) gl[L] = lmwb_runner_grad(r, p->set->layers[L]->out, shape, NULL, error);
  for (int b = 0; ok && b < nb; b++) {
    float *row = rows + (size_t)b * ncol;
#pragma omp parallel for schedule(static)
    for (int s = 0; s < p->F; s++) {
      const LmwbTranscoder *tc = p->set->layers[p->f_layer[s]];
      const float *d = gl[p->f_layer[s]] + ((size_t)b * T + p->f_pos[s]) * C;
      row[s] = p->f_act[s] * cblas_sdot(C, tc->W_dec + (size_t)p->f_index[s] * tc->d_out, 1, d, 1);
    }
    for (int L = 0; L < nl; L++)
      for (int t = 0; t < T; t++)
        row[p->F + L * T + t] = cblas_sdot(C, p->err[L] + (size_t)t * C, 1, gl[L] + ((size_t)b * T + t) * C, 1);
    for (int t = 0; t < T; t++)
      row[p->F + nl * T + t] = cblas_sdot(C, p->resid0 + (size_t)t * C, 1, g0 + ((size_t)b * T + t) * C, 1);
  }
  g_free(gl);
  return ok;
}

/* ---- influence ------------------------------------------------------------------------------------- */

/* Row-normalised |x| (rows summing to 1; an all-zero row stays zero). */
static void normalise_abs(float *dst, const float *src, size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; r++) {
    double s = 0;
    for (size_t c = 0; c < cols; c++) s += fabsf(src[r * cols + c]);
    float inv = s > 1e-10 ? (float)(1.0 / s) : 0.f;
    for (size_t c = 0; c < cols; c++) dst[r * cols + c] = fabsf(src[r * cols + c]) * inv;
  }
}

/* Influence on the logits of every column through the computed rows, over paths of every length:
 * start from the logit rows' probabilities, push back through the normalised rows; a row passes on
 * what its target node received. row_node[r]: the column of row r's target (-1 for logits). */
static void partial_influence(const float *rows, const int *row_node, const float *row_weight, int n_rows, int ncol,
                              double *influence) {
  g_autofree float *norm = g_new(float, (size_t)n_rows * ncol);
  normalise_abs(norm, rows, n_rows, ncol);
  g_autofree double *w = g_new(double, n_rows), *push = g_new(double, ncol);
  for (int r = 0; r < n_rows; r++) w[r] = row_weight[r];
  memset(influence, 0, sizeof(double) * ncol);
  for (int it = 0; it < 1024; it++) {
    memset(push, 0, sizeof(double) * ncol);
    gboolean any = FALSE;
    for (int r = 0; r < n_rows; r++)
      if (w[r] != 0)
        for (int c = 0; c < ncol; c++) push[c] += w[r] * norm[(size_t)r * ncol + c];
    for (int c = 0; c < ncol; c++) {
      influence[c] += push[c];
      any = any || push[c] > 0;
    }
    if (!any) break;
    for (int r = 0; r < n_rows; r++) w[r] = row_node[r] >= 0 ? push[row_node[r]] : 0;
  }
}

/* ---- the graph ----------------------------------------------------------------------------------- */

/* The graph: the visited features (in node order), errors, tokens, logits; rows placed by target. */
static LmwbAttribution *build_graph(const Prompt *p, const int32_t *ids, const float *rows, const int *row_target,
                                    int n_rows, const guint8 *visited, GError **error) {
  int n = p->T, ncol = n_columns(p);
  LmwbAttribution *a = g_new0(LmwbAttribution, 1);
  a->n_layers = p->nl, a->n_pos = n, a->n_active = p->F, a->n_logits = p->n_logits;
  a->tokens = g_memdup2(ids, sizeof(int32_t) * n);
  g_autofree int *col_of = g_new(int, MAX(p->F, 1));
  int S = 0;
  for (int s = 0; s < p->F; s++) col_of[s] = visited[s] ? S++ : -1;
  a->n_features = S;
  a->feat_layer = g_new(int, MAX(S, 1)), a->feat_pos = g_new(int, MAX(S, 1)), a->feat_index = g_new(int, MAX(S, 1));
  a->feat_act = g_new(float, MAX(S, 1)), a->feat_pre = g_new(float, MAX(S, 1));
  for (int s = 0; s < p->F; s++) {
    int k = col_of[s];
    if (k < 0) continue;
    a->feat_layer[k] = p->f_layer[s], a->feat_pos[k] = p->f_pos[s], a->feat_index[k] = p->f_index[s];
    a->feat_act[k] = p->f_act[s], a->feat_pre[k] = p->f_pre[s];
  }
  a->logit_token = g_memdup2(p->l_tok, sizeof(int32_t) * p->n_logits);
  a->logit_prob = g_memdup2(p->l_prob, sizeof(float) * p->n_logits);
  a->logit_value = g_memdup2(p->l_value, sizeof(float) * p->n_logits);
  a->n_nodes = S + (p->nl + 1) * n + p->n_logits;
  a->adj = g_try_new0(float, (size_t)a->n_nodes * a->n_nodes);
  if (!a->adj) {
    lmwb_input_error(error, "attribution: out of memory for %d x %d edges", a->n_nodes, a->n_nodes);
    lmwb_attribution_free(a);
    return NULL;
  }
  for (int k = 0; k < n_rows; k++) {
    int t = row_target[k];
    int node = t < 0 ? lmwb_attr_logit_node(a, -t - 1) : col_of[t];
    float *dst = a->adj + (size_t)node * a->n_nodes;
    const float *src = rows + (size_t)k * ncol;
    for (int s = 0; s < p->F; s++)
      if (col_of[s] >= 0) dst[col_of[s]] = src[s];
    memcpy(dst + S, src + p->F, sizeof(float) * (size_t)(p->nl + 1) * n);
  }
  return a;
}

LmwbAttribution *lmwb_attribute(LmwbModel *m, const LmwbTranscoderSet *set, const int32_t *ids, int n,
                                const LmwbAttributionOptions *opt, LmwbReporter *rep, GError **error) {
  static const LmwbAttributionOptions defaults = {0};
  if (!opt) opt = &defaults;
  const LmwbConfig *c = &m->cfg;
  if (n < 1 || n > c->n_ctx) {
    lmwb_input_error(error, "attribution: the prompt has %d tokens (1..%d)", n, c->n_ctx);
    return NULL;
  }
  if (!set || set->n_layers != c->n_layer) {
    lmwb_input_error(error, "attribution: the transcoder set must cover the model's %d layers", c->n_layer);
    return NULL;
  }
  for (int L = 0; L < c->n_layer; L++) {
    const LmwbTranscoder *tc = set->layers[L];
    if (!tc || !lmwb_transcoder_check(tc, c, "attribution", error)) return NULL;
    if (tc->in.kind != LMWB_SITE_LN2 || tc->in.layer != L || tc->out.kind != LMWB_SITE_MLP_OUT || tc->out.layer != L) {
      lmwb_input_error(error, "attribution: layer %d's transcoder must read ln2.hook_normalized and write hook_mlp_out "
                       "of that layer", L);
      return NULL;
    }
  }
  if (opt->batch < 0 || opt->max_feature_nodes < 0 || opt->max_logits < 0 || !(opt->logit_mass >= 0 && opt->logit_mass <= 1)) {
    lmwb_input_error(error, "attribution: batch, max_feature_nodes and max_logits must not be negative, logit_mass in [0, 1]");
    return NULL;
  }
  Prompt p = {.m = m, .set = set, .nl = c->n_layer, .T = n, .C = c->d_model};
  LmwbRunner *r = lmwb_runner_new(m);
  LmwbAttribution *a = NULL;
  float *rows = NULL;
  int *row_target = NULL;
  guint8 *visited = NULL;
  if (!read_prompt(&p, r, ids, opt, error)) goto out;
  int ncol = n_columns(&p), batch = opt->batch > 0 ? opt->batch : 32;
  int max_f = opt->max_feature_nodes > 0 ? MIN(opt->max_feature_nodes, p.F) : p.F;
  int n_rows = p.n_logits + max_f;
  uint64_t bytes = (uint64_t)n_rows * ncol * sizeof(float) * 3 + (uint64_t)batch * n * c->d_model * sizeof(float) * 64;
  if (!lmwb_memory_check(bytes, "the attribution graph", error)) goto out;
  rows = g_try_new0(float, (size_t)n_rows * ncol);
  if (!rows) {
    lmwb_input_error(error, "attribution: out of memory for %d x %d edges", n_rows, ncol);
    goto out;
  }
  row_target = g_new(int, n_rows);
  visited = g_new0(guint8, MAX(p.F, 1));
  /* logits first, then features: all of them, or the most influential so far, a queue at a time */
  int done_rows = 0;
  int *tg = g_new(int, batch);
  gboolean ok = TRUE;
  while (ok && done_rows < n_rows) {
    int queue = 0;
    int *pending = NULL;
    if (done_rows < p.n_logits) {
      queue = p.n_logits;
      pending = g_new(int, queue);
      for (int k = 0; k < queue; k++) pending[k] = -k - 1;
    } else if (max_f == p.F) {
      queue = p.F;
      pending = g_new(int, queue);
      for (int k = 0; k < queue; k++) pending[k] = k;
    } else {
      g_autofree double *infl = g_new(double, ncol);
      g_autofree int *row_node = g_new(int, done_rows);
      g_autofree float *row_w = g_new0(float, done_rows);
      for (int k = 0; k < done_rows; k++) {
        row_node[k] = row_target[k] < 0 ? -1 : row_target[k];
        if (row_target[k] < 0) row_w[k] = p.l_prob[-row_target[k] - 1];
      }
      partial_influence(rows, row_node, row_w, done_rows, ncol, infl);
      queue = MIN(4 * batch, max_f - (done_rows - p.n_logits));
      pending = g_new(int, queue);
      for (int q = 0; q < queue; q++) { /* the most influential unvisited features */
        int best = -1;
        for (int s = 0; s < p.F; s++)
          if (!visited[s] && (best < 0 || infl[s] > infl[best])) best = s;
        pending[q] = best;
        visited[best] = 1;
      }
    }
    for (int q0 = 0; ok && q0 < queue; q0 += batch) {
      int nb = MIN(batch, queue - q0);
      for (int b = 0; b < nb; b++) {
        tg[b] = pending[q0 + b];
        row_target[done_rows + b] = tg[b];
        if (tg[b] >= 0) visited[tg[b]] = 1;
      }
      ok = compute_rows(&p, r, ids, tg, nb, rows + (size_t)done_rows * ncol, error);
      done_rows += nb;
      lmwb_report_progress(rep, (double)done_rows / n_rows, "attributing");
      if (ok && lmwb_reporter_cancelled(rep, error)) ok = FALSE;
    }
    g_free(pending);
  }
  g_free(tg);
  if (!ok) goto out;
  a = build_graph(&p, ids, rows, row_target, n_rows, visited, error);
out:
  g_free(rows);
  g_free(row_target);
  g_free(visited);
  prompt_clear(&p);
  lmwb_runner_free(r);
  return a;
}

void lmwb_attribution_free(LmwbAttribution *a) {
  if (!a) return;
  g_free(a->tokens);
  g_free(a->feat_layer), g_free(a->feat_pos), g_free(a->feat_index), g_free(a->feat_act), g_free(a->feat_pre);
  g_free(a->logit_token), g_free(a->logit_prob), g_free(a->logit_value);
  g_free(a->adj);
  g_free(a);
}
