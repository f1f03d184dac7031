/* Edge pruning: hard-concrete masks under a Lagrangian sparsity constraint
 * (circuits/edge_circuit.h; Bhaskar et al. 2024, princeton-nlp/Edge-Pruning). */
#include "app/core/atomic_file.h"
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/core/rng.h"
#include "app/engine/optim.h"
#include "circuits/edge_internal.h"
#include <math.h>
#include <string.h>

#define BETA LMWB_EDGE_HC_BETA
#define HC_L LMWB_EDGE_HC_L
#define HC_R LMWB_EDGE_HC_R

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* P(z > 0) of a hard-concrete mask with this log_alpha (Louizos et al. 2018, eq. 12). */
static double p_open(double la) { return sigmoid(la - BETA * log(-HC_L / HC_R)); }

/* The state a checkpoint keeps. */
typedef struct {
  int64_t E;
  int step;
  float *la;           /* [E] log_alpha */
  LmwbAdamW *opt;      /* masks */
  double lam[2], lm[2], lv[2]; /* lambdas and their Adam moments */
  guint64 rng;
  double target, steps;
} State;

#define CKPT_MAGIC "LMWBEP01"

static gboolean save_state(const State *s, const char *path, GError **error) {
  GString *b = g_string_new(NULL);
  g_string_append_len(b, CKPT_MAGIC, 8);
  int64_t head[3] = {s->E, s->step, s->opt->step};
  double d[8] = {s->lam[0], s->lam[1], s->lm[0], s->lm[1], s->lv[0], s->lv[1], s->target, s->steps};
  g_string_append_len(b, (const char *)head, sizeof head);
  g_string_append_len(b, (const char *)d, sizeof d);
  g_string_append_len(b, (const char *)&s->rng, sizeof s->rng);
  g_string_append_len(b, (const char *)s->la, (gssize)(s->E * sizeof(float)));
  g_string_append_len(b, (const char *)s->opt->m, (gssize)(s->E * sizeof(float)));
  g_string_append_len(b, (const char *)s->opt->v, (gssize)(s->E * sizeof(float)));
  gboolean ok = lmwb_file_write_atomic(path, b->str, b->len, error);
  g_string_free(b, TRUE);
  return ok;
}

/* Resumes from path when the file exists; input error when it belongs to another run. */
static gboolean load_state(State *s, const char *path, GError **error) {
  if (!g_file_test(path, G_FILE_TEST_EXISTS)) return TRUE;
  size_t len = 0, E = (size_t)s->E;
  g_autofree char *data = lmwb_file_read(path, (uint64_t)64 + 32 * E + 64, LMWB_READ_REGULAR, &len, error);
  if (!data) return FALSE;
  size_t need = 8 + 3 * sizeof(int64_t) + 8 * sizeof(double) + sizeof(guint64) + 3 * E * sizeof(float);
  int64_t head[3];
  double d[8];
  if (len != need || memcmp(data, CKPT_MAGIC, 8)) {
    lmwb_input_error(error, "checkpoint %s: not an edge-pruning checkpoint of this model (%zu bytes)", path, len);
    return FALSE;
  }
  const char *p = data + 8;
  memcpy(head, p, sizeof head);
  p += sizeof head;
  memcpy(d, p, sizeof d);
  p += sizeof d;
  if (head[0] != s->E || d[6] != s->target || d[7] != s->steps || head[1] < 0 || head[1] > (int64_t)s->steps) {
    lmwb_input_error(error, "checkpoint %s: written by a run with other options (edges, target sparsity or steps)", path);
    return FALSE;
  }
  s->step = (int)head[1];
  s->opt->step = head[2];
  memcpy(s->lam, d, 2 * sizeof(double));
  memcpy(s->lm, d + 2, 2 * sizeof(double));
  memcpy(s->lv, d + 4, 2 * sizeof(double));
  memcpy(&s->rng, p, sizeof s->rng);
  p += sizeof s->rng;
  memcpy(s->la, p, E * sizeof(float));
  memcpy(s->opt->m, p + E * sizeof(float), E * sizeof(float));
  memcpy(s->opt->v, p + 2 * E * sizeof(float), E * sizeof(float));
  return TRUE;
}

static int by_value(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

void lmwb_edge_binarize(const float *la, int64_t n, uint8_t *keep) {
  /* keep the round(sum P(z > 0)) edges of largest log_alpha: the expected number of open masks */
  double open = 0;
  for (int64_t e = 0; e < n; e++) open += p_open(la[e]);
  int64_t k = (int64_t)llround(open);
  g_autofree float *sorted = g_memdup2(la, (size_t)n * sizeof(float));
  for (int64_t e = 0; e < n; e++) keep[e] = 0;
  if (k <= 0) return;
  qsort(sorted, (size_t)n, sizeof(float), by_value);
  float thr = sorted[n - MIN(k, n)];
  int64_t kept = 0;
  for (int64_t e = 0; e < n && kept < k; e++)
    if (la[e] > thr) keep[e] = 1, kept++;
  for (int64_t e = 0; e < n && kept < k; e++) /* ties at the threshold: lowest index first */
    if (la[e] == thr) keep[e] = 1, kept++;
}

/* Reference log-probabilities of the full model at every example's last token: [n, V]. */
static float *reference_logprobs(LmwbRunner *r, const LmwbEdgeTask *t, int bs, GError **error) {
  int V = lmwb_runner_model(r)->cfg.vocab_size;
  float *ref = g_new(float, (size_t)t->n * V);
  for (int first = 0; first < t->n; first += bs) {
    EdgeBatch b;
    edge_batch_make(t, first, MIN(bs, t->n - first), &b);
    LmwbForwardOptions fo = {.lens = b.lens, .last_logits_only = true};
    gboolean ok = lmwb_runner_forward(r, b.clean, b.B, b.T, &fo, error);
    if (ok) {
      const float *lg = lmwb_runner_logits(r, NULL);
      for (int i = 0; i < b.B; i++) {
        const float *x = lg + (size_t)i * V;
        float *o = ref + (size_t)(first + i) * V;
        double mx = x[0], s = 0;
        for (int j = 1; j < V; j++) mx = fmax(mx, x[j]);
        for (int j = 0; j < V; j++) s += exp(x[j] - mx);
        double lse = mx + log(s);
        for (int j = 0; j < V; j++) o[j] = (float)(x[j] - lse);
      }
    }
    edge_batch_clear(&b);
    if (!ok) {
      g_free(ref);
      return NULL;
    }
  }
  return ref;
}

/* The corrupted runs' writer outputs of every batch, kept when they fit in this much memory:
 * then a step is one masked run and its backward. */
#define CORRUPT_CACHE_BYTES ((uint64_t)1 << 30)

/* Mean over rows of KL(p_ref || softmax(logits)) and its gradient (softmax - p_ref) / B. */
static double kl_grad(const float *logits, const float *ref, int B, int V, float *grad) {
  double kl = 0;
  for (int i = 0; i < B; i++) {
    const float *x = logits + (size_t)i * V, *lr = ref + (size_t)i * V;
    float *g = grad + (size_t)i * V;
    double mx = x[0], s = 0;
    for (int j = 1; j < V; j++) mx = fmax(mx, x[j]);
    for (int j = 0; j < V; j++) s += exp(x[j] - mx);
    double lse = mx + log(s);
    for (int j = 0; j < V; j++) {
      double lp = x[j] - lse, pr = exp(lr[j]);
      kl += pr * (lr[j] - lp);
      g[j] = (float)((exp(lp) - pr) / B);
    }
  }
  return kl / B;
}

/* The examples of step `step`: batches cycle through the task. */
static int step_first(const LmwbEdgeTask *t, int step, int bs) {
  int nb = (t->n + bs - 1) / bs;
  return (step % nb) * bs;
}

LmwbEdgePruneResult *lmwb_edge_prune(LmwbModel *m, const LmwbEdgeTask *t, const LmwbEdgePruneOptions *opt,
                                     LmwbReporter *rep, GError **error) {
  if (!(opt->target_sparsity >= 0 && opt->target_sparsity < 1) || opt->steps < 0 || opt->warmup < 0 ||
      !(opt->lr >= 0 && isfinite(opt->lr)) || opt->checkpoint_every < 0) {
    lmwb_input_error(error, "edge pruning: target sparsity must be in [0, 1), steps, warm-up, lr and checkpoint interval "
                     "not negative");
    return NULL;
  }
  int steps = opt->steps ? opt->steps : 600, warmup = opt->warmup ? opt->warmup : steps * 5 / 6;
  int bs = edge_batch_size(opt->batch), every = opt->checkpoint_every ? opt->checkpoint_every : 50, V = m->cfg.vocab_size;
  double lr = opt->lr > 0 ? opt->lr : 0.1;
  if (warmup > steps) {
    lmwb_input_error(error, "edge pruning: warm-up %d is longer than the %d steps", warmup, steps);
    return NULL;
  }
  LmwbRunner *r = NULL;
  LmwbEdgeStream *s = edge_stream_open(m, &r, error);
  if (!s) return NULL;
  const LmwbEdgeGraph *g = lmwb_edge_stream_graph(s);
  int64_t E = g->n_edges;
  State st = {.E = E, .la = g_new(float, E), .opt = lmwb_adamw_new((size_t)E, 0.9f, 0.999f, 1e-8f, 0.f, NULL),
              .rng = opt->seed * 0x9E3779B97F4A7C15ull + 7, .target = opt->target_sparsity, .steps = steps};
  guint64 init_rng = st.rng ^ 0x5bd1e995u;
  for (int64_t e = 0; e < E; e++) { /* N(10, 0.01): std 0.01 (Edge-Pruning) */
    double u1 = lmwb_rng_uniform(&init_rng), u2 = lmwb_rng_uniform(&init_rng);
    st.la[e] = (float)(LMWB_EDGE_LOG_ALPHA_INIT + 0.01 * sqrt(-2 * log(u1)) * cos(2 * G_PI * u2));
  }
  g_autofree float *ref = NULL, *z = g_new(float, E), *dla = g_new(float, E), *s_of = g_new(float, E);
  g_autofree float *dlast = g_new(float, (size_t)bs * V);
  LmwbEdgePruneResult *res = NULL;
  gboolean ok = (!opt->checkpoint || load_state(&st, opt->checkpoint, error)) &&
                (ref = reference_logprobs(r, t, bs, error)) != NULL;
  double kl = 0, sparsity = 0;
  int nb = (t->n + bs - 1) / bs;
  uint64_t per_batch = (uint64_t)g->n_writers * bs * lmwb_edge_task_max_len(t) * m->cfg.d_model * sizeof(float);
  float **cache = per_batch * nb <= CORRUPT_CACHE_BYTES ? g_new0(float *, nb) : NULL;
  while (ok && st.step < steps) {
    if (lmwb_reporter_cancelled(rep, error)) {
      GError *e2 = NULL;
      if (opt->checkpoint && !save_state(&st, opt->checkpoint, &e2)) {
        g_clear_error(error);
        g_propagate_error(error, e2);
      }
      ok = FALSE;
      break;
    }
    EdgeBatch b;
    int first = step_first(t, st.step, bs);
    edge_batch_make(t, first, MIN(bs, t->n - first), &b);
    /* a sample of every mask */
    for (int64_t e = 0; e < E; e++) {
      double u = 1e-6 + (1 - 2e-6) * lmwb_rng_uniform(&st.rng);
      double sv = sigmoid((log(u) - log1p(-u) + st.la[e]) / BETA), zz = sv * (HC_R - HC_L) + HC_L;
      s_of[e] = (float)sv;
      z[e] = (float)fmin(1.0, fmax(0.0, zz));
    }
    lmwb_edge_stream_set_masks(s, z);
    lmwb_edge_stream_reset_grads(s);
    LmwbForwardOptions fo = {.lens = b.lens, .last_logits_only = true};
    int bi = first / bs, cB = 0, cT = 0;
    if (cache && cache[bi]) {
      lmwb_edge_stream_set_corrupted(s, cache[bi], b.B, b.T);
    } else {
      ok = edge_batch_corrupt(s, &b, error);
      const float *c = ok ? lmwb_edge_stream_corrupted(s, &cB, &cT) : NULL;
      if (c && cache) cache[bi] = g_memdup2(c, (size_t)g->n_writers * b.B * b.T * m->cfg.d_model * sizeof(float));
    }
    ok = ok && lmwb_runner_forward(r, b.clean, b.B, b.T, &fo, error);
    if (ok) {
      kl = kl_grad(lmwb_runner_logits(r, NULL), ref + (size_t)first * V, b.B, V, dlast);
      ok = edge_backward_last(r, &b, dlast, error);
    }
    edge_batch_clear(&b);
    if (!ok) break;
    /* the Lagrangian: expected sparsity and its gradient */
    double open = 0;
    for (int64_t e = 0; e < E; e++) open += p_open(st.la[e]);
    sparsity = 1 - open / E;
    double tgt = opt->target_sparsity * MIN(1.0, (double)(st.step + 1) / MAX(warmup, 1)), gap = sparsity - tgt;
    double coef = st.lam[0] + 2 * st.lam[1] * gap; /* d(l1 gap + l2 gap^2)/d sparsity */
    const float *dz = lmwb_edge_stream_mask_grads(s);
    for (int64_t e = 0; e < E; e++) {
      double zz = s_of[e] * (HC_R - HC_L) + HC_L;
      double dkl = (zz > 0 && zz < 1) ? dz[e] * (HC_R - HC_L) * s_of[e] * (1 - s_of[e]) / BETA : 0;
      double po = p_open(st.la[e]);
      dla[e] = (float)(dkl + coef * (-po * (1 - po) / E));
    }
    lmwb_adamw_step(st.opt, st.la, dla, (float)lr);
    /* the lambdas climb: Adam on -(gap, gap^2) */
    double glam[2] = {-gap, -gap * gap};
    int64_t k = st.opt->step;
    for (int i = 0; i < 2; i++) {
      st.lm[i] = 0.9 * st.lm[i] + 0.1 * glam[i];
      st.lv[i] = 0.999 * st.lv[i] + 0.001 * glam[i] * glam[i];
      double mh = st.lm[i] / (1 - pow(0.9, (double)k)), vh = st.lv[i] / (1 - pow(0.999, (double)k));
      st.lam[i] -= lr * mh / (sqrt(vh) + 1e-8);
    }
    st.step++;
    double total = kl + st.lam[0] * gap + st.lam[1] * gap * gap;
    lmwb_report_metric(rep, "loss", st.step, total);
    lmwb_report_metric(rep, "kl", st.step, kl);
    lmwb_report_metric(rep, "sparsity", st.step, sparsity);
    lmwb_report_metric(rep, "target", st.step, tgt);
    lmwb_report_metric(rep, "lambda1", st.step, st.lam[0]);
    lmwb_report_progress(rep, (double)st.step / steps, "pruning edges");
    if (opt->checkpoint && st.step % every == 0 && st.step < steps) ok = save_state(&st, opt->checkpoint, error);
  }
  if (ok) {
    res = g_new0(LmwbEdgePruneResult, 1);
    res->log_alpha = g_memdup2(st.la, (size_t)E * sizeof(float));
    res->keep = g_new(uint8_t, E);
    lmwb_edge_binarize(st.la, E, res->keep);
    res->edges = lmwb_edge_remove_dangling(g, res->keep);
    res->steps_done = st.step;
    res->final_kl = kl;
    double open = 0;
    for (int64_t e = 0; e < E; e++) open += p_open(st.la[e]);
    res->final_sparsity = 1 - open / E;
  }
  for (int i = 0; cache && i < nb; i++) g_free(cache[i]);
  g_free(cache);
  g_free(st.la);
  lmwb_adamw_free(st.opt);
  edge_stream_close(s, r);
  return res;
}

void lmwb_edge_prune_result_free(LmwbEdgePruneResult *r) {
  if (!r) return;
  g_free(r->log_alpha);
  g_free(r->keep);
  g_free(r);
}
