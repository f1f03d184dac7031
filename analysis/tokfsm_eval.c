/* The TokFSM measurements: LM and state accuracy, codes vs neurons, code patching (tokfsm_eval.h). */
#include "analysis/tokfsm_eval.h"
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/core/rng.h"
#include "app/core/rows.h"
#include "app/formats/tokenizer.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int32_t *lmwb_tokfsm_read_sequences(const LmwbTokfsm *f, const char *path, int *n, GError **error) {
  size_t len = 0;
  g_autofree char *text = lmwb_file_read(path, LMWB_CORPUS_MAX_BYTES, LMWB_READ_REGULAR, &len, error);
  if (!text) return NULL;
  const char *eot = "<|endoftext|>";
  size_t el = strlen(eot), T = 1 + 2 * (size_t)f->length;
  GArray *out = g_array_new(FALSE, FALSE, sizeof(int32_t));
  size_t i = 0;
  int seq = 0;
  while (i < len) {
    if (len - i < el || memcmp(text + i, eot, el) != 0) {
      lmwb_input_error(error, "%s: byte %zu: expected <|endoftext|> before sequence %d", path, i, seq);
      goto fail;
    }
    i += el;
    size_t j = i;
    while (j < len && text[j] >= '0' && text[j] <= '9') j++;
    if (j == i && j == len) break; /* the closing <|endoftext|> */
    if (j - i != T - 1) {
      lmwb_input_error(error, "%s: sequence %d has %zu digits, not 2 x length = %zu (fsm.json)", path, seq, j - i, T - 1);
      goto fail;
    }
    int32_t v = LMWB_TOKFSM_EOT;
    g_array_append_val(out, v);
    int prev = -1;
    for (size_t t = 0; t < T - 1; t++) {
      v = text[i + t] - '0';
      g_array_append_val(out, v);
      if (t % 2 == 1) {
        int s = 10 * (text[i + t - 1] - '0') + v;
        if (s >= f->states || (prev >= 0 && !lmwb_tokfsm_is_edge(f, prev, s))) {
          lmwb_input_error(error, "%s: sequence %d, state %zu (\"%02d\") is not %s of the machine in fsm.json", path, seq,
                           t / 2, s, s >= f->states ? "a state" : "an edge");
          goto fail;
        }
        prev = s;
      }
    }
    i = j;
    seq++;
  }
  if (seq == 0) {
    lmwb_input_error(error, "%s holds no sequence", path);
    goto fail;
  }
  *n = seq;
  return (int32_t *)g_array_free(out, FALSE);
fail:
  g_array_free(out, TRUE);
  return NULL;
}

static int argmax(const float *x, int n) {
  int b = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[b]) b = i;
  return b;
}

/* Per-book cached code ids [n_seqs, T, k] and neurons [n_layer][n_seqs * T, d_ff] of the codebook run. */
typedef struct {
  int n_books, *book_layer, k;
  int32_t **ids;
  float **neurons;
} Cache;

typedef struct {
  LmwbRunner *r;
  LmwbCodebookRun *run; /* NULL: plain */
  const LmwbTokfsm *f;
  const int32_t *seqs;
  int n, T, V, batch;
  LmwbReporter *rep;
  double p0, p1;
} Pass;

/* (a) over every sequence; with a cache, also fills it. */
static gboolean lm_pass(Pass *p, LmwbTokfsmLm *lm, Cache *cache, GError **error) {
  int T = p->T, V = p->V, L = p->f->length;
  double loss = 0;
  int64_t tokens = 0, correct = 0, trans = 0, valid = 0;
  g_autofree int32_t *ex_ids = g_new(int32_t, (size_t)p->batch * T);
  g_autofree float *losses = g_new(float, (size_t)p->batch * T);
  g_autofree int *ex_state = g_new(int, p->batch);
  g_autofree int *ex_d1 = g_new(int, p->batch);
  int n_ex = 0;
  /* Runs the queued continuations (prefix + greedy first digit, all of one length `len`) and scores
   * their second digit. */
#define FLUSH(len)                                                                                                 \
  do {                                                                                                             \
    if (n_ex > 0) {                                                                                                \
      LmwbForwardOptions fo = {.last_logits_only = true};                                                          \
      if (!lmwb_runner_forward(p->r, ex_ids, n_ex, (len), &fo, error)) return FALSE;                               \
      const float *lg = lmwb_runner_logits(p->r, NULL);                                                            \
      for (int e = 0; e < n_ex; e++) {                                                                             \
        int d2 = argmax(lg + (size_t)e * V, V);                                                                    \
        int pred = (ex_d1[e] < 10 && d2 < 10) ? 10 * ex_d1[e] + d2 : -1;                                           \
        valid += pred >= 0 && lmwb_tokfsm_is_edge(p->f, ex_state[e], pred);                                        \
      }                                                                                                            \
      n_ex = 0;                                                                                                    \
    }                                                                                                              \
  } while (0)
  for (int b0 = 0; b0 < p->n; b0 += p->batch) {
    int B = MIN(p->batch, p->n - b0);
    if (lmwb_reporter_cancelled(p->rep, error)) return FALSE;
    lmwb_report_progress(p->rep, p->p0 + (p->p1 - p->p0) * b0 / p->n, p->run ? "with codebooks" : "plain model");
    const int32_t *ids = p->seqs + (size_t)b0 * T;
    if (!lmwb_runner_forward(p->r, ids, B, T, NULL, error)) return FALSE;
    lmwb_runner_token_losses(p->r, NULL, losses); /* [B, T]: the inputs shifted are the targets */
    if (cache) {
      for (int i = 0; i < cache->n_books; i++) {
        int64_t shape[4];
        int nd = 0;
        const int32_t *c = lmwb_codebook_run_codes(p->run, cache->book_layer[i], LMWB_CODEBOOK_MLP, shape, &nd, error);
        if (!c) return FALSE;
        memcpy(cache->ids[i] + (size_t)b0 * T * cache->k, c, sizeof(int32_t) * (size_t)B * T * cache->k);
      }
      const LmwbConfig *cfg = &lmwb_runner_model(p->r)->cfg;
      for (int l = 0; l < cfg->n_layer; l++) {
        int64_t shape[4];
        int nd = 0;
        const float *a = lmwb_runner_activation(p->r, (LmwbSite){LMWB_SITE_MLP_POST, l}, shape, &nd, error);
        if (!a) return FALSE;
        memcpy(cache->neurons[l] + (size_t)b0 * T * cfg->d_ff, a, sizeof(float) * (size_t)B * T * cfg->d_ff);
      }
    }
    /* copy the logits: the continuations' forwards overwrite the runner's */
    g_autofree float *lg = g_memdup2(lmwb_runner_logits(p->r, NULL), sizeof(float) * (size_t)B * T * V);
    for (int b = 0; b < B; b++) {
      const int32_t *s = ids + (size_t)b * T;
      const float *row = lg + (size_t)b * T * V;
      for (int t = 0; t + 1 < T; t++) {
        loss += losses[(size_t)b * T + t];
        correct += argmax(row + (size_t)t * V, V) == s[t + 1];
        tokens++;
      }
    }
    /* state j of every sequence of the batch: the continuations have one length, pos + 2 */
    for (int j = 0; j + 1 < L; j++) {
      int pos = 2 + 2 * j;
      for (int b = 0; b < B; b++) {
        const int32_t *s = ids + (size_t)b * T;
        const float *row = lg + (size_t)b * T * V;
        int state = 10 * s[pos - 1] + s[pos];
        int d1 = argmax(row + (size_t)pos * V, V);
        trans++;
        if (d1 == s[pos + 1]) {
          int d2 = argmax(row + (size_t)(pos + 1) * V, V);
          int pred = (d1 < 10 && d2 < 10) ? 10 * d1 + d2 : -1;
          valid += pred >= 0 && lmwb_tokfsm_is_edge(p->f, state, pred);
          continue;
        }
        int32_t *e = ex_ids + (size_t)n_ex * (pos + 2);
        memcpy(e, s, sizeof(int32_t) * (pos + 1));
        e[pos + 1] = d1;
        ex_state[n_ex] = state;
        ex_d1[n_ex] = d1;
        n_ex++;
      }
      FLUSH(pos + 2);
    }
  }
#undef FLUSH
  lm->loss = loss / (double)tokens;
  lm->accuracy = (double)correct / (double)tokens;
  lm->state_accuracy = trans ? (double)valid / (double)trans : NAN;
  lm->tokens = tokens;
  lm->transitions = trans;
  return TRUE;
}

/* ---- (b) codes vs neurons ---- */

typedef struct {
  const float *col;
  int64_t i;
} Ranked;

static int cmp_ranked(const void *a, const void *b) {
  const Ranked *x = a, *y = b;
  float u = x->col[x->i], v = y->col[y->i];
  if (u != v) return u > v ? -1 : 1;
  return x->i < y->i ? -1 : x->i > y->i;
}

static void codes_vs_neurons(const LmwbConfig *cfg, const LmwbTokfsm *f, const int32_t *seqs, int n, int T,
                             const Cache *cache, int C, LmwbTokfsmEvalResult *res, LmwbReporter *rep, double p0,
                             double p1) {
  int S = f->states, k = cache->k;
  int64_t P = (int64_t)n * T;
  /* marked[pos] = state whose second digit is at pos, else -1 (EOT and first digits) */
  g_autofree int *marked = g_new(int, P);
  g_autofree int64_t *support = g_new0(int64_t, S);
  for (int64_t q = 0; q < P; q++) {
    int t = (int)(q % T);
    marked[q] = -1;
    if (t >= 2 && t % 2 == 0) {
      marked[q] = 10 * seqs[q - 1] + seqs[q];
      support[marked[q]]++;
    }
  }
  res->n_states = S;
  res->states = g_new0(LmwbTokfsmStateBest, S);
  double best_score[LMWB_TOKFSM_MAX_STATES];
  for (int s = 0; s < S; s++) {
    res->states[s] = (LmwbTokfsmStateBest){.state = s, .support = support[s], .code_layer = -1, .code = -1,
                                           .neuron_layer = -1, .neuron = -1};
    best_score[s] = -1;
  }
  g_autofree int64_t *total = g_new(int64_t, C);
  g_autofree int64_t *hit = g_new(int64_t, (size_t)C * S);
  for (int bk = 0; bk < cache->n_books; bk++) {
    memset(total, 0, sizeof(int64_t) * C);
    memset(hit, 0, sizeof(int64_t) * (size_t)C * S);
    for (int64_t q = 0; q < P; q++) {
      if (q % T == 0) continue; /* digits only */
      for (int j = 0; j < k; j++) {
        int c = cache->ids[bk][q * k + j];
        total[c]++;
        if (marked[q] >= 0) hit[(size_t)c * S + marked[q]]++;
      }
    }
    for (int s = 0; s < S; s++) {
      if (!support[s]) continue;
      for (int c = 0; c < C; c++) {
        int64_t h = hit[(size_t)c * S + s];
        if (!h) continue;
        double f1 = 2.0 * (double)h / (double)(total[c] + support[s]);
        if (f1 > best_score[s]) {
          best_score[s] = f1;
          LmwbTokfsmStateBest *st = &res->states[s];
          st->code_layer = cache->book_layer[bk];
          st->code = c;
          st->code_precision = (double)h / (double)total[c];
          st->code_recall = (double)h / (double)support[s];
        }
      }
    }
  }
  /* neurons at the best code's recall */
  g_autofree int64_t *need = g_new0(int64_t, S);
  for (int s = 0; s < S; s++)
    if (res->states[s].code >= 0) need[s] = MAX(1, (int64_t)ceil(res->states[s].code_recall * (double)support[s] - 1e-9));
  int64_t Pd = P - n; /* digit positions */
  g_autofree float *col = g_new(float, P);
  g_autofree Ranked *rk = g_new(Ranked, Pd);
  g_autofree int64_t *cnt = g_new(int64_t, S);
  for (int l = 0; l < cfg->n_layer; l++) {
    lmwb_report_progress(rep, p0 + (p1 - p0) * l / cfg->n_layer, "codes vs neurons");
    for (int u = 0; u < cfg->d_ff; u++) {
      const float *a = cache->neurons[l];
      int64_t m = 0;
      for (int64_t q = 0; q < P; q++) {
        col[q] = a[q * cfg->d_ff + u];
        if (q % T) rk[m++] = (Ranked){col, q};
      }
      qsort(rk, (size_t)m, sizeof(Ranked), cmp_ranked);
      memset(cnt, 0, sizeof(int64_t) * S);
      for (int64_t i = 0; i < m; i++) {
        int s = marked[rk[i].i];
        if (s < 0 || !need[s] || ++cnt[s] != need[s]) continue;
        double prec = (double)need[s] / (double)(i + 1);
        LmwbTokfsmStateBest *st = &res->states[s];
        if (st->neuron < 0 || prec > st->neuron_precision) {
          st->neuron_layer = l;
          st->neuron = u;
          st->neuron_precision = prec;
          st->neuron_recall = (double)need[s] / (double)support[s];
        }
      }
    }
  }
  int measured = 0;
  for (int s = 0; s < S; s++) {
    LmwbTokfsmStateBest *st = &res->states[s];
    if (!st->support) continue;
    measured++;
    res->code_precision += st->code_precision;
    res->code_recall += st->code_recall;
    res->neuron_precision += st->neuron_precision;
    res->neuron_recall += st->neuron_recall;
  }
  res->states_measured = measured;
  if (measured) {
    res->code_precision /= measured;
    res->code_recall /= measured;
    res->neuron_precision /= measured;
    res->neuron_recall /= measured;
  }
}

/* ---- (c) code patching ---- */

static double jsd(const double *p, const double *q, int n) {
  double d = 0;
  for (int i = 0; i < n; i++) {
    double m = 0.5 * (p[i] + q[i]);
    if (p[i] > 0) d += 0.5 * p[i] * log(p[i] / m);
    if (q[i] > 0) d += 0.5 * q[i] * log(q[i] / m);
  }
  return d;
}

static gboolean last_dist(LmwbRunner *r, const int32_t *ids, int len, int V, double *out, GError **error) {
  LmwbForwardOptions fo = {.last_logits_only = true};
  if (!lmwb_runner_forward(r, ids, 1, len, &fo, error)) return FALSE;
  g_autofree float *pr = g_new(float, V);
  lmwb_softmax_row(pr, lmwb_runner_logits(r, NULL), V);
  for (int i = 0; i < V; i++) out[i] = pr[i];
  return TRUE;
}

/* Clamps the MLP codes at `pos` to those of (seq b, position q): every book (only < 0) or one. */
static gboolean patch(LmwbCodebookRun *run, const Cache *cache, int only, int pos, int64_t src, GError **error) {
  lmwb_codebook_run_clear_clamps(run);
  for (int i = 0; i < cache->n_books; i++) {
    if (only >= 0 && i != only) continue;
    for (int j = 0; j < cache->k; j++) {
      int p = pos;
      LmwbCodeClamp c = {.layer = cache->book_layer[i], .site = LMWB_CODEBOOK_MLP, .head = -1,
                         .code = cache->ids[i][src * cache->k + j], .slot = cache->k == 1 ? -1 : j,
                         .positions = &p, .n_positions = 1};
      if (!lmwb_codebook_run_clamp(run, &c, error)) return FALSE;
    }
  }
  return TRUE;
}

static gboolean patching(Pass *p, const Cache *cache, int transitions, guint64 seed, LmwbTokfsmEvalResult *res,
                         GError **error) {
  const LmwbTokfsm *f = p->f;
  int T = p->T, V = p->V, L = f->length;
  if (L < 2) return TRUE; /* no transition to patch */
  res->n_patches = 1 + cache->n_books;
  res->patches = g_new0(LmwbTokfsmPatch, res->n_patches);
  g_autofree double *sum = g_new0(double, res->n_patches);
  double sum0 = 0;
  guint64 rng = seed * 0x9E3779B97F4A7C15ull + 0x5EEDull;
  double pd[64], q[64];
  g_return_val_if_fail(V <= 64, FALSE);
  int done = 0;
  for (int it = 0; it < transitions; it++) {
    if (lmwb_reporter_cancelled(p->rep, error)) return FALSE;
    if (it % 16 == 0) lmwb_report_progress(p->rep, p->p0 + (p->p1 - p->p0) * it / transitions, "code patching");
    int a = (int)(lmwb_splitmix64(&rng) % (guint64)p->n), ja = (int)(lmwb_splitmix64(&rng) % (guint64)(L - 1));
    const int32_t *sa = p->seqs + (size_t)a * T;
    int pos = 2 + 2 * ja, s_a = 10 * sa[pos - 1] + sa[pos];
    int b = 0, jb = 0, s_b = s_a;
    for (int tries = 0; tries < 1000 && s_b == s_a; tries++) {
      b = (int)(lmwb_splitmix64(&rng) % (guint64)p->n);
      jb = (int)(lmwb_splitmix64(&rng) % (guint64)(L - 1));
      const int32_t *sb = p->seqs + (size_t)b * T;
      s_b = 10 * sb[2 + 2 * jb - 1] + sb[2 + 2 * jb];
    }
    if (s_b == s_a) continue; /* every sampled state the same: nothing to patch to */
    for (int i = 0; i < V; i++) q[i] = 0;
    for (int e = 0; e < f->edges; e++) q[f->next[(size_t)s_b * f->edges + e] / 10] += 1.0 / f->edges;
    int64_t src = (int64_t)b * T + 2 + 2 * jb;
    lmwb_codebook_run_clear_clamps(p->run);
    if (!last_dist(p->r, sa, pos + 1, V, pd, error)) return FALSE;
    sum0 += jsd(pd, q, V);
    for (int k = 0; k < res->n_patches; k++) {
      if (!patch(p->run, cache, k - 1, pos, src, error) || !last_dist(p->r, sa, pos + 1, V, pd, error)) return FALSE;
      sum[k] += jsd(pd, q, V);
    }
    done++;
  }
  lmwb_codebook_run_clear_clamps(p->run);
  res->transitions = done;
  res->jsd_unpatched = done ? sum0 / done : NAN;
  for (int k = 0; k < res->n_patches; k++) {
    res->patches[k].layer = k == 0 ? -1 : cache->book_layer[k - 1];
    res->patches[k].jsd = done ? sum[k] / done : NAN;
    res->patches[k].normalised = sum0 > 0 ? sum[k] / sum0 : NAN;
  }
  return TRUE;
}

/* ---- the whole ---- */

static gboolean check_model(const LmwbModel *m, const LmwbTokfsm *f, GError **error) {
  if (m->cfg.vocab_size < LMWB_TOKFSM_VOCAB) {
    lmwb_input_error(error, "the model's vocabulary (%d tokens) is smaller than the TokFSM vocabulary (%d)", m->cfg.vocab_size,
                     LMWB_TOKFSM_VOCAB);
    return FALSE;
  }
  if (m->cfg.n_ctx < 1 + 2 * f->length) {
    lmwb_input_error(error, "the model's context (%d) is shorter than a TokFSM sequence (%d tokens: length %d in fsm.json)",
                     m->cfg.n_ctx, 1 + 2 * f->length, f->length);
    return FALSE;
  }
  if (m->tokenizer) {
    char d[2] = {0, 0};
    for (int i = 0; i < 10; i++) {
      d[0] = (char)('0' + i);
      if (lmwb_tokenizer_token_id(m->tokenizer, d) != i) {
        lmwb_input_error(error, "the model's tokenizer is not the TokFSM vocabulary (\"%s\" is not id %d; see tokfsm make)", d, i);
        return FALSE;
      }
    }
    if (lmwb_tokenizer_token_id(m->tokenizer, "<|endoftext|>") != LMWB_TOKFSM_EOT) {
      lmwb_input_error(error, "the model's tokenizer is not the TokFSM vocabulary (<|endoftext|> is not id %d)", LMWB_TOKFSM_EOT);
      return FALSE;
    }
  }
  return TRUE;
}

gboolean lmwb_tokfsm_eval(LmwbModel *m, LmwbCodebooks *cb, const LmwbTokfsm *f, const int32_t *seqs, int n_seqs,
                          const LmwbTokfsmEvalOptions *o, LmwbReporter *rep, LmwbTokfsmEvalResult *res,
                          GError **error) {
  memset(res, 0, sizeof *res);
  if (!check_model(m, f, error)) return FALSE;
  if (cb && !lmwb_codebooks_check(cb, &m->cfg, "--codebooks", error)) return FALSE;
  gint64 t0 = g_get_monotonic_time();
  int n = o->sequences > 0 ? MIN(o->sequences, n_seqs) : MIN(LMWB_TOKFSM_EVAL_SEQUENCES, n_seqs);
  int transitions = o->transitions == 0 ? LMWB_TOKFSM_EVAL_TRANSITIONS : o->transitions;
  res->sequences = n;
  Pass p = {.f = f, .seqs = seqs, .n = n, .T = 1 + 2 * f->length, .V = m->cfg.vocab_size,
            .batch = o->batch > 0 ? o->batch : 16, .rep = rep, .p0 = 0, .p1 = cb ? 0.2 : 1};
  gboolean ok = FALSE;
  Cache cache = {0};
  p.r = lmwb_runner_new(m);
  if (!lm_pass(&p, &res->plain, NULL, error)) goto done;
  if (cb) {
    res->has_codebooks = TRUE;
    if (!(p.run = lmwb_codebooks_attach(p.r, cb, error))) goto done;
    cache.k = cb->k;
    cache.book_layer = g_new(int, cb->n);
    cache.ids = g_new0(int32_t *, cb->n);
    for (int i = 0; i < cb->n; i++)
      if (cb->books[i].site == LMWB_CODEBOOK_MLP) {
        cache.book_layer[cache.n_books] = cb->books[i].layer;
        cache.ids[cache.n_books++] = g_new(int32_t, (size_t)n * p.T * cb->k);
      }
    res->has_codes = cache.n_books > 0;
    if (res->has_codes) {
      cache.neurons = g_new0(float *, m->cfg.n_layer);
      for (int l = 0; l < m->cfg.n_layer; l++) cache.neurons[l] = g_try_new(float, (size_t)n * p.T * m->cfg.d_ff);
      for (int l = 0; l < m->cfg.n_layer; l++)
        if (!cache.neurons[l]) {
          lmwb_input_error(error, "out of memory for the neuron activations of %d sequences (use fewer)", n);
          goto done;
        }
    }
    p.p0 = 0.2;
    p.p1 = 0.45;
    if (!lm_pass(&p, &res->codebooks, res->has_codes ? &cache : NULL, error)) goto done;
    if (res->has_codes) {
      codes_vs_neurons(&m->cfg, f, seqs, n, p.T, &cache, cb->num_codes, res, rep, 0.45, 0.7);
      if (lmwb_reporter_cancelled(rep, error)) goto done;
      p.p0 = 0.7;
      p.p1 = 1;
      if (transitions > 0 && !patching(&p, &cache, transitions, o->seed, res, error)) goto done;
    }
  }
  ok = TRUE;
done:
  if (p.run) lmwb_codebooks_detach(p.r, p.run);
  lmwb_runner_free(p.r);
  for (int i = 0; i < cache.n_books; i++) g_free(cache.ids[i]);
  if (cache.neurons)
    for (int l = 0; l < m->cfg.n_layer; l++) g_free(cache.neurons[l]);
  g_free(cache.neurons);
  g_free(cache.ids);
  g_free(cache.book_layer);
  res->seconds = (g_get_monotonic_time() - t0) / 1e6;
  if (!ok) lmwb_tokfsm_eval_result_clear(res);
  return ok;
}

void lmwb_tokfsm_eval_result_clear(LmwbTokfsmEvalResult *r) {
  g_free(r->states);
  g_free(r->patches);
  r->states = NULL;
  r->patches = NULL;
  r->n_states = r->n_patches = 0;
}
