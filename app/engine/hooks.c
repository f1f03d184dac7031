#include "app/engine/hooks.h"
#include "app/core/errors.h"
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Suffix after "blocks.L." for per-layer sites, or the full name for model-level ones. */
static const char *const site_names[LMWB_SITE_N_KINDS] = {
  [LMWB_SITE_EMBED] = "hook_embed",
  [LMWB_SITE_POS_EMBED] = "hook_pos_embed",
  [LMWB_SITE_RESID_PRE] = "hook_resid_pre",
  [LMWB_SITE_LN1] = "ln1.hook_normalized",
  [LMWB_SITE_Q] = "attn.hook_q",
  [LMWB_SITE_K] = "attn.hook_k",
  [LMWB_SITE_V] = "attn.hook_v",
  [LMWB_SITE_ROT_Q] = "attn.hook_rot_q",
  [LMWB_SITE_ROT_K] = "attn.hook_rot_k",
  [LMWB_SITE_PATTERN] = "attn.hook_pattern",
  [LMWB_SITE_Z] = "attn.hook_z",
  [LMWB_SITE_ATTN_OUT] = "hook_attn_out",
  [LMWB_SITE_RESID_MID] = "hook_resid_mid",
  [LMWB_SITE_LN2] = "ln2.hook_normalized",
  [LMWB_SITE_MLP_PRE] = "mlp.hook_pre",
  [LMWB_SITE_MLP_PRE_LINEAR] = "mlp.hook_pre_linear",
  [LMWB_SITE_MLP_POST] = "mlp.hook_post",
  [LMWB_SITE_MLP_OUT] = "hook_mlp_out",
  [LMWB_SITE_RESID_POST] = "hook_resid_post",
  [LMWB_SITE_LN_FINAL] = "ln_final.hook_normalized",
};

static gboolean model_level(LmwbSiteKind k) {
  return k == LMWB_SITE_EMBED || k == LMWB_SITE_POS_EMBED || k == LMWB_SITE_LN_FINAL;
}

static gboolean site_exists(const LmwbConfig *c, LmwbSiteKind k) {
  switch (k) {
    case LMWB_SITE_POS_EMBED: return c->learned_pos;
    case LMWB_SITE_ROT_Q: case LMWB_SITE_ROT_K: return !c->learned_pos;
    case LMWB_SITE_RESID_MID: return !c->parallel_residual;
    case LMWB_SITE_MLP_PRE_LINEAR: return c->gated_mlp;
    default: return TRUE;
  }
}

char *lmwb_site_name(LmwbSite s) {
  if (model_level(s.kind)) return g_strdup(site_names[s.kind]);
  return g_strdup_printf("blocks.%d.%s", s.layer, site_names[s.kind]);
}

gboolean lmwb_site_parse(const LmwbConfig *c, const char *name, LmwbSite *out, GError **error) {
  for (int k = 0; k < LMWB_SITE_N_KINDS; k++) {
    if (model_level(k) && !strcmp(name, site_names[k])) {
      if (!site_exists(c, k)) break;
      *out = (LmwbSite){k, -1};
      return TRUE;
    }
  }
  if (g_str_has_prefix(name, "blocks.")) {
    char *end = NULL;
    long L = strtol(name + 7, &end, 10);
    if (end != name + 7 && *end == '.') {
      if (L < 0 || L >= c->n_layer) {
        lmwb_input_error(error, "hook \"%s\": layer %ld is out of range (the model has layers 0..%d)", name, L, c->n_layer - 1);
        return FALSE;
      }
      for (int k = 0; k < LMWB_SITE_N_KINDS; k++) {
        if (!model_level(k) && !strcmp(end + 1, site_names[k]) && site_exists(c, k)) {
          *out = (LmwbSite){k, (int)L};
          return TRUE;
        }
      }
    }
  }
  lmwb_input_error(error, "unknown hook name \"%s\" for this %s model (e.g. hook_embed, blocks.0.hook_resid_pre, "
                   "blocks.0.attn.hook_pattern, blocks.0.mlp.hook_post, ln_final.hook_normalized; "
                   "`lmwb-batch info --model DIR --hooks` lists them all)", name, c->model_type);
  return FALSE;
}

int lmwb_site_row_size(const LmwbConfig *c, LmwbSiteKind k, int Tk) {
  switch (k) {
    case LMWB_SITE_Q: case LMWB_SITE_ROT_Q: case LMWB_SITE_Z: return c->n_head * c->head_dim;
    case LMWB_SITE_K: case LMWB_SITE_ROT_K: case LMWB_SITE_V: return c->n_kv_head * c->head_dim;
    case LMWB_SITE_PATTERN: return Tk;
    case LMWB_SITE_MLP_PRE: case LMWB_SITE_MLP_PRE_LINEAR: case LMWB_SITE_MLP_POST: return c->d_ff;
    default: return c->d_model;
  }
}

char **lmwb_site_list(const LmwbConfig *c) {
  GPtrArray *a = g_ptr_array_new();
  for (int k = 0; k < LMWB_SITE_N_KINDS; k++)
    if (model_level(k) && k != LMWB_SITE_LN_FINAL && site_exists(c, k)) g_ptr_array_add(a, lmwb_site_name((LmwbSite){k, -1}));
  for (int L = 0; L < c->n_layer; L++)
    for (int k = 0; k < LMWB_SITE_N_KINDS; k++)
      if (!model_level(k) && site_exists(c, k)) g_ptr_array_add(a, lmwb_site_name((LmwbSite){k, L}));
  g_ptr_array_add(a, lmwb_site_name((LmwbSite){LMWB_SITE_LN_FINAL, -1}));
  g_ptr_array_add(a, NULL);
  return (char **)g_ptr_array_free(a, FALSE);
}

static gboolean parse_int(const char *s, long lo, long hi, long *out) {
  char *end = NULL;
  if (!s || !*s) return FALSE;
  long v = strtol(s, &end, 10);
  if (*end || v < lo || v > hi) return FALSE;
  *out = v;
  return TRUE;
}

void lmwb_clamp_spec_clear(LmwbClampSpec *c) {
  g_free(c->positions);
  memset(c, 0, sizeof *c);
}

gboolean lmwb_clamp_parse(const LmwbConfig *cfg, const char *text, LmwbClampSpec *out, GError **error) {
  memset(out, 0, sizeof *out);
  const char *colon = strchr(text, ':'), *eq = strchr(text, '=');
  if (!colon || !eq || eq < colon) {
    lmwb_input_error(error, "--clamp \"%s\": expected LAYER:NEURON=VALUE[@POSITIONS], e.g. 3:1021=8 or 3:1021=8@4,5", text);
    return FALSE;
  }
  g_autofree char *ls = g_strndup(text, colon - text);
  g_autofree char *ns = g_strndup(colon + 1, eq - colon - 1);
  const char *at = strchr(eq, '@');
  g_autofree char *vs = at ? g_strndup(eq + 1, at - eq - 1) : g_strdup(eq + 1);
  long L, N;
  if (!parse_int(ls, 0, cfg->n_layer - 1, &L)) {
    lmwb_input_error(error, "--clamp \"%s\": layer \"%s\" is not in 0..%d", text, ls, cfg->n_layer - 1);
    return FALSE;
  }
  if (!parse_int(ns, 0, cfg->d_ff - 1, &N)) {
    lmwb_input_error(error, "--clamp \"%s\": neuron \"%s\" is not in 0..%d", text, ns, cfg->d_ff - 1);
    return FALSE;
  }
  char *end = NULL;
  double v = g_ascii_strtod(vs, &end);
  if (!*vs || *end || !(fabs(v) <= FLT_MAX)) { /* a float holds the value */
    lmwb_input_error(error, "--clamp \"%s\": value \"%s\" is not a finite float", text, vs);
    return FALSE;
  }
  out->layer = (int)L;
  out->neuron = (int)N;
  out->value = (float)v;
  if (at) {
    g_auto(GStrv) parts = g_strsplit(at + 1, ",", -1);
    int n = g_strv_length(parts);
    if (n == 0) {
      lmwb_input_error(error, "--clamp \"%s\": no positions after @", text);
      return FALSE;
    }
    out->positions = g_new(int, n);
    for (int i = 0; i < n; i++) {
      long p;
      if (!parse_int(g_strstrip(parts[i]), 0, cfg->n_ctx - 1, &p)) {
        lmwb_input_error(error, "--clamp \"%s\": position \"%s\" is not in 0..%d", text, parts[i], cfg->n_ctx - 1);
        lmwb_clamp_spec_clear(out);
        return FALSE;
      }
      out->positions[i] = (int)p;
    }
    out->n_positions = n;
  }
  return TRUE;
}
