/* Neuron clamp sweep: the target token's probability as a clamp value moves over a range.
 * Contract: neurons.h. */
#include "analysis/neurons.h"
#include "app/core/errors.h"
#include "app/core/rows.h"
#include "app/engine/generate.h"
#include "app/engine/runner.h"
#include <float.h>
#include <math.h>
#include <string.h>

void lmwb_neuron_sweep_free(LmwbNeuronSweep *s) {
  if (!s) return;
  if (s->generated)
    for (int i = 0; i < s->n; i++) g_free(s->generated[i]);
  g_free(s->generated);
  g_free(s->n_generated);
  g_free(s->values);
  g_free(s->probs);
  g_free(s);
}

/* One measurement with whatever hooks the runner holds. gen_out/n_gen receive the continuation. */
static gboolean measure(LmwbRunner *r, const LmwbNeuronSweepOptions *o, double *p_out, int32_t **gen_out, int *n_gen,
                        GError **error) {
  int V = lmwb_runner_model(r)->cfg.vocab_size;
  if (o->generate <= 0) {
    LmwbForwardOptions fo = {.last_logits_only = true};
    if (!lmwb_runner_forward(r, o->prompt, 1, o->n_prompt, &fo, error)) return FALSE;
    const float *logits = lmwb_runner_logits(r, NULL);
    float *p = g_new(float, V);
    lmwb_softmax_row(p, logits, V);
    *p_out = p[o->target];
    g_free(p);
    return TRUE;
  }
  LmwbGenerateOptions go;
  lmwb_generate_options_init(&go);
  go.max_tokens = o->generate;
  go.temperature = o->temperature;
  go.seed = o->seed;
  go.stop_at_eos = false; /* a fixed number of positions keeps the means comparable */
  int n = 0;
  float *probs = NULL;
  int32_t *ids = lmwb_generate(r, o->prompt, o->n_prompt, &go, &n, &probs, NULL, error);
  if (!ids) return FALSE;
  double s = 0;
  for (int t = 0; t < n; t++) s += probs[(size_t)t * V + o->target];
  *p_out = n ? s / n : 0;
  g_free(probs);
  if (gen_out) {
    *gen_out = ids;
    *n_gen = n;
  } else {
    g_free(ids);
  }
  return TRUE;
}

LmwbNeuronSweep *lmwb_neurons_sweep(LmwbModel *m, const LmwbNeuronSweepOptions *o, LmwbReporter *rep, GError **error) {
  if (!m || !o) {
    lmwb_input_error(error, "sweep: no model or options");
    return NULL;
  }
  const LmwbConfig *c = &m->cfg;
  if (o->layer < 0 || o->layer >= c->n_layer) {
    lmwb_input_error(error, "sweep: layer %d is not in 0..%d", o->layer, c->n_layer - 1);
    return NULL;
  }
  if (o->neuron < 0 || o->neuron >= c->d_ff) {
    lmwb_input_error(error, "sweep: neuron %d is not in 0..%d", o->neuron, c->d_ff - 1);
    return NULL;
  }
  if (o->target < 0 || o->target >= c->vocab_size) {
    lmwb_input_error(error, "sweep: target token id %d is not in 0..%d", o->target, c->vocab_size - 1);
    return NULL;
  }
  if (!o->prompt || o->n_prompt < 1) {
    lmwb_input_error(error, "sweep: the prompt has no tokens");
    return NULL;
  }
  if (o->steps < 1 || o->steps > 10000) {
    lmwb_input_error(error, "sweep: steps %d is not in 1..10000", o->steps);
    return NULL;
  }
  if (!(fabs(o->from) <= FLT_MAX) || !(fabs(o->to) <= FLT_MAX)) { /* clamps are floats */
    lmwb_input_error(error, "sweep: from %g / to %g must be finite floats", o->from, o->to);
    return NULL;
  }
  if (o->generate < 0 || (o->generate > 0 && o->n_prompt + o->generate > c->n_ctx) || o->n_prompt > c->n_ctx) {
    lmwb_input_error(error, "sweep: prompt (%d tokens) + generate %d exceeds the context of %d", o->n_prompt, o->generate,
                     c->n_ctx);
    return NULL;
  }
  if (o->n_positions < 0 || (o->n_positions > 0 && !o->positions)) {
    lmwb_input_error(error, "sweep: %d positions given without a list", o->n_positions);
    return NULL;
  }
  for (int i = 0; i < o->n_positions; i++)
    if (o->positions[i] < 0 || o->positions[i] >= c->n_ctx) {
      lmwb_input_error(error, "sweep: position %d is not in 0..%d", o->positions[i], c->n_ctx - 1);
      return NULL;
    }
  LmwbRunner *r = lmwb_runner_new(m);
  LmwbNeuronSweep *s = g_new0(LmwbNeuronSweep, 1);
  s->n = o->steps;
  s->values = g_new(double, s->n);
  s->probs = g_new(double, s->n);
  if (o->generate > 0) {
    s->generated = g_new0(int32_t *, s->n);
    s->n_generated = g_new0(int, s->n);
  }
  gboolean ok = measure(r, o, &s->baseline, NULL, NULL, error);
  for (int i = 0; i < s->n && ok; i++) {
    if (lmwb_reporter_cancelled(rep, error)) {
      ok = FALSE;
      break;
    }
    double v = s->n == 1 ? o->from : o->from + (o->to - o->from) * i / (s->n - 1);
    s->values[i] = v;
    lmwb_runner_clear_hooks(r);
    LmwbNeuronClamp clamp = {.layer = o->layer, .neuron = o->neuron, .value = (float)v, .at_pre = o->at_pre,
                             .positions = (int *)o->positions, .n_positions = o->n_positions};
    ok = lmwb_neuron_clamp_add(r, &clamp, error) > 0 && measure(r, o, &s->probs[i], s->generated ? &s->generated[i] : NULL, s->n_generated ? &s->n_generated[i] : NULL,
                 error);
    if (ok) {
      lmwb_report_metric(rep, "p(target)", v, s->probs[i]);
      lmwb_report_progress(rep, (double)(i + 1) / s->n, "sweeping clamp values");
    }
  }
  if (!ok) s->n = 0; /* only free what was produced; generated[] entries past i are NULL */
  lmwb_runner_free(r);
  if (!ok) {
    if (s->generated) {
      for (int i = 0; i < o->steps; i++) g_free(s->generated[i]);
      g_free(s->generated);
      s->generated = NULL;
    }
    lmwb_neuron_sweep_free(s);
    return NULL;
  }
  return s;
}
