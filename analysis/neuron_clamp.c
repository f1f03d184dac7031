/* Neuron clamps: parsing "L:N=VALUE[@P,...]" and the clamp hook. Contract: neurons.h. */
#include "analysis/neurons.h"
#include "app/core/errors.h"
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static gboolean parse_int(const char *s, long lo, long hi, long *out) {
  char *end = NULL;
  if (!s || !*s) return FALSE;
  long v = strtol(s, &end, 10);
  if (*end || v < lo || v > hi) return FALSE;
  *out = v;
  return TRUE;
}

void lmwb_neuron_clamp_clear(LmwbNeuronClamp *c) {
  g_free(c->positions);
  memset(c, 0, sizeof *c);
}

gboolean lmwb_neuron_clamp_parse_positions(const LmwbConfig *cfg, const char *text, int **positions, int *n,
                                           GError **error) {
  g_auto(GStrv) parts = g_strsplit(text, ",", -1);
  int k = (int)g_strv_length(parts);
  if (k == 0) {
    lmwb_input_error(error, "positions \"%s\": no positions", text);
    return FALSE;
  }
  int *p = g_new(int, k);
  for (int i = 0; i < k; i++) {
    long v;
    if (!parse_int(g_strstrip(parts[i]), 0, cfg->n_ctx - 1, &v)) {
      lmwb_input_error(error, "position \"%s\" is not in 0..%d", parts[i], cfg->n_ctx - 1);
      g_free(p);
      return FALSE;
    }
    p[i] = (int)v;
  }
  *positions = p;
  *n = k;
  return TRUE;
}

gboolean lmwb_neuron_clamp_parse(const LmwbConfig *cfg, const char *text, LmwbNeuronClamp *out, GError **error) {
  memset(out, 0, sizeof *out);
  const char *colon = strchr(text, ':'), *eq = strchr(text, '=');
  if (!colon || !eq || eq < colon) {
    lmwb_input_error(error, "clamp \"%s\": expected LAYER:NEURON=VALUE[@POSITIONS], e.g. 3:1021=8 or 3:1021=8@4,5", text);
    return FALSE;
  }
  g_autofree char *ls = g_strndup(text, colon - text);
  g_autofree char *ns = g_strndup(colon + 1, eq - colon - 1);
  const char *at = strchr(eq, '@');
  g_autofree char *vs = at ? g_strndup(eq + 1, at - eq - 1) : g_strdup(eq + 1);
  long L, N;
  if (!parse_int(ls, 0, cfg->n_layer - 1, &L)) {
    lmwb_input_error(error, "clamp \"%s\": layer \"%s\" is not in 0..%d", text, ls, cfg->n_layer - 1);
    return FALSE;
  }
  if (!parse_int(ns, 0, cfg->d_ff - 1, &N)) {
    lmwb_input_error(error, "clamp \"%s\": neuron \"%s\" is not in 0..%d", text, ns, cfg->d_ff - 1);
    return FALSE;
  }
  char *end = NULL;
  double v = g_ascii_strtod(vs, &end);
  if (!*vs || *end || !(fabs(v) <= FLT_MAX)) { /* a float holds the value */
    lmwb_input_error(error, "clamp \"%s\": value \"%s\" is not a finite float", text, vs);
    return FALSE;
  }
  out->layer = (int)L;
  out->neuron = (int)N;
  out->value = (float)v;
  if (at && !lmwb_neuron_clamp_parse_positions(cfg, at + 1, &out->positions, &out->n_positions, error)) {
    g_prefix_error(error, "clamp \"%s\": ", text);
    return FALSE;
  }
  return TRUE;
}

int lmwb_neuron_clamp_add(LmwbRunner *r, const LmwbNeuronClamp *c, GError **error) {
  const LmwbConfig *cfg = &lmwb_runner_model(r)->cfg;
  if (c->layer < 0 || c->layer >= cfg->n_layer) {
    lmwb_input_error(error, "clamp: layer %d is not in 0..%d", c->layer, cfg->n_layer - 1);
    return 0;
  }
  if (c->neuron < 0 || c->neuron >= cfg->d_ff) {
    lmwb_input_error(error, "clamp: neuron %d is not in 0..%d", c->neuron, cfg->d_ff - 1);
    return 0;
  }
  LmwbHook h = {.site = {c->at_pre ? LMWB_SITE_MLP_PRE : LMWB_SITE_MLP_POST, c->layer}, .op = LMWB_HOOK_SET,
                .positions = c->positions, .n_positions = c->n_positions, .indices = &c->neuron, .n_indices = 1,
                .value = c->value};
  return lmwb_runner_add_hook(r, &h, error);
}
