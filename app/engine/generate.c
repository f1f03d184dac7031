#include "app/engine/generate.h"
#include "app/core/errors.h"
#include "app/core/memory.h"
#include "app/formats/half.h"
#include "app/core/rng.h"
#include "app/core/rows.h"
#include <math.h>
#include <string.h>

void lmwb_generate_options_init(LmwbGenerateOptions *o) {
  memset(o, 0, sizeof *o);
  o->max_tokens = 32;
  o->top_p = 1.0f;
  o->stop_at_eos = true;
}

typedef struct { float p; int id; } Cand;

static int cmp_cand(const void *a, const void *b) {
  const Cand *x = a, *y = b;
  if (x->p != y->p) return x->p < y->p ? 1 : -1;
  return x->id - y->id;
}

static int32_t pick(const float *logits, int V, const LmwbGenerateOptions *o, guint64 *rng, float *probs) {
  lmwb_softmax_row(probs, logits, V);
  if (o->temperature <= 0) {
    int best = 0;
    for (int i = 1; i < V; i++)
      if (logits[i] > logits[best]) best = i;
    return best;
  }
  g_autofree float *scaled = g_new(float, V);
  for (int i = 0; i < V; i++) scaled[i] = logits[i] / o->temperature;
  g_autofree Cand *c = g_new(Cand, V);
  float mx = -INFINITY;
  for (int i = 0; i < V; i++) mx = fmaxf(mx, scaled[i]);
  for (int i = 0; i < V; i++) c[i] = (Cand){expf(scaled[i] - mx), i};
  qsort(c, V, sizeof(Cand), cmp_cand);
  int n = V;
  if (o->top_k > 0 && o->top_k < n) n = o->top_k;
  double total = 0;
  for (int i = 0; i < n; i++) total += c[i].p;
  if (o->top_p > 0 && o->top_p < 1) {
    double acc = 0;
    for (int i = 0; i < n; i++) {
      acc += c[i].p / total;
      if (acc >= o->top_p) {
        n = i + 1;
        break;
      }
    }
    total = 0;
    for (int i = 0; i < n; i++) total += c[i].p;
  }
  double u = ((lmwb_splitmix64(rng) >> 11) * (1.0 / 9007199254740992.0)) * total;
  for (int i = 0; i < n; i++) {
    u -= c[i].p;
    if (u <= 0) return c[i].id;
  }
  return c[n - 1].id;
}

int32_t *lmwb_generate(LmwbRunner *r, const int32_t *prompt, int n_prompt, const LmwbGenerateOptions *opt,
                       int *n_out, float **probs_out, LmwbReporter *rep, GError **error) {
  const LmwbConfig *c = &lmwb_runner_model(r)->cfg;
  int V = c->vocab_size;
  *n_out = 0;
  if (probs_out) *probs_out = NULL;
  if (n_prompt < 1) {
    lmwb_input_error(error, "the prompt is empty");
    return NULL;
  }
  if (opt->max_tokens < 0 || !(opt->temperature >= 0) || opt->top_k < 0 || !(opt->top_p > 0 && opt->top_p <= 1)) {
    lmwb_input_error(error, "generation options out of range (max tokens >= 0, temperature >= 0, top-k >= 0, 0 < top-p <= 1)");
    return NULL;
  }
  int max_new = MIN(opt->max_tokens, c->n_ctx - n_prompt);
  if (max_new < 0) {
    lmwb_input_error(error, "the prompt (%d tokens) is longer than the model's context (%d)", n_prompt, c->n_ctx);
    return NULL;
  }
  if (probs_out && !lmwb_memory_check((uint64_t)MAX(max_new, 1) * V * sizeof(float), "the probabilities of the generated tokens", error))
    return NULL;
  int32_t *out = g_new(int32_t, MAX(max_new, 1));
  float *probs_all = probs_out ? g_new(float, (size_t)MAX(max_new, 1) * V) : NULL;
  g_autofree float *probs = g_new(float, V);
  guint64 rng = opt->seed ^ 0xA0761D6478BD642Full;
  LmwbForwardOptions fo = {.use_cache = true, .last_logits_only = true};
  lmwb_runner_reset_cache(r);
  gboolean ok = lmwb_runner_forward(r, prompt, 1, n_prompt, &fo, error);
  int n = 0;
  while (ok && n < max_new) {
    if (lmwb_reporter_cancelled(rep, error)) {
      ok = FALSE;
      break;
    }
    const float *logits = lmwb_runner_logits(r, NULL);
    if (lmwb_f32_find_nonfinite(logits, (size_t)V) < (size_t)V) {
      g_set_error(error, LMWB_ERROR, LMWB_ERROR_FAILED, "the model's logits for generated token %d are not finite "
                  "(NaN or infinity): its weights overflow; nothing generated", n + 1);
      ok = FALSE;
      break;
    }
    int32_t t = pick(logits, V, opt, &rng, probs);
    if (probs_all) memcpy(probs_all + (size_t)n * V, probs, (size_t)V * sizeof(float));
    out[n++] = t;
    lmwb_report_progress(rep, (double)n / max_new, "generating");
    if (opt->stop_at_eos && c->eos_id >= 0 && t == c->eos_id) break;
    if (n < max_new) ok = lmwb_runner_forward(r, &t, 1, 1, &fo, error);
  }
  if (!ok) {
    g_free(out);
    g_free(probs_all);
    return NULL;
  }
  *n_out = n;
  if (probs_out) *probs_out = probs_all;
  return out;
}
