/* The site table: one entry per hook site (sites.h). */
#include "app/engine/sites.h"
#include "app/core/errors.h"
#include <stdlib.h>
#include <string.h>

#define M true  /* model-level */
#define PL false /* per layer */

static const LmwbSiteInfo table[LMWB_SITE_N_KINDS] = {
  [LMWB_SITE_EMBED] = {"hook_embed", M, LMWB_SHAPE_MODEL, 0},
  [LMWB_SITE_POS_EMBED] = {"hook_pos_embed", M, LMWB_SHAPE_MODEL, 0},
  [LMWB_SITE_RESID_PRE] = {"hook_resid_pre", PL, LMWB_SHAPE_MODEL, 0},
  [LMWB_SITE_Q_INPUT] = {"hook_q_input", PL, LMWB_SHAPE_Q_MODEL, LMWB_RUN_SPLIT_QKV},
  [LMWB_SITE_K_INPUT] = {"hook_k_input", PL, LMWB_SHAPE_KV_MODEL, LMWB_RUN_SPLIT_QKV},
  [LMWB_SITE_V_INPUT] = {"hook_v_input", PL, LMWB_SHAPE_KV_MODEL, LMWB_RUN_SPLIT_QKV},
  [LMWB_SITE_LN1] = {"ln1.hook_normalized", PL, LMWB_SHAPE_MODEL, 0},
  [LMWB_SITE_Q] = {"attn.hook_q", PL, LMWB_SHAPE_Q, 0},
  [LMWB_SITE_K] = {"attn.hook_k", PL, LMWB_SHAPE_KV, 0},
  [LMWB_SITE_V] = {"attn.hook_v", PL, LMWB_SHAPE_KV, 0},
  [LMWB_SITE_ROT_Q] = {"attn.hook_rot_q", PL, LMWB_SHAPE_Q, 0},
  [LMWB_SITE_ROT_K] = {"attn.hook_rot_k", PL, LMWB_SHAPE_KV, 0},
  [LMWB_SITE_PATTERN] = {"attn.hook_pattern", PL, LMWB_SHAPE_PATTERN, 0},
  [LMWB_SITE_Z] = {"attn.hook_z", PL, LMWB_SHAPE_Q, 0},
  [LMWB_SITE_RESULT] = {"attn.hook_result", PL, LMWB_SHAPE_Q_MODEL, LMWB_RUN_ATTN_RESULT},
  [LMWB_SITE_ATTN_OUT] = {"hook_attn_out", PL, LMWB_SHAPE_MODEL, 0},
  [LMWB_SITE_RESID_MID] = {"hook_resid_mid", PL, LMWB_SHAPE_MODEL, 0},
  [LMWB_SITE_MLP_IN] = {"hook_mlp_in", PL, LMWB_SHAPE_MODEL, LMWB_RUN_MLP_IN},
  [LMWB_SITE_LN2] = {"ln2.hook_normalized", PL, LMWB_SHAPE_MODEL, 0},
  [LMWB_SITE_MLP_PRE] = {"mlp.hook_pre", PL, LMWB_SHAPE_FF, 0},
  [LMWB_SITE_MLP_PRE_LINEAR] = {"mlp.hook_pre_linear", PL, LMWB_SHAPE_FF, 0},
  [LMWB_SITE_MLP_POST] = {"mlp.hook_post", PL, LMWB_SHAPE_FF, 0},
  [LMWB_SITE_MLP_OUT] = {"hook_mlp_out", PL, LMWB_SHAPE_MODEL, 0},
  [LMWB_SITE_RESID_POST] = {"hook_resid_post", PL, LMWB_SHAPE_MODEL, 0},
  [LMWB_SITE_LN_FINAL] = {"ln_final.hook_normalized", M, LMWB_SHAPE_MODEL, 0},
};

#undef M
#undef PL

const LmwbSiteInfo *lmwb_site_info(LmwbSiteKind k) {
  return (unsigned)k < LMWB_SITE_N_KINDS ? &table[k] : NULL;
}

bool lmwb_site_exists(const LmwbConfig *c, LmwbSiteKind k) {
  switch (k) {
    case LMWB_SITE_POS_EMBED: return c->learned_pos;
    case LMWB_SITE_ROT_Q: case LMWB_SITE_ROT_K: return !c->learned_pos;
    case LMWB_SITE_RESID_MID: return !c->parallel_residual;
    case LMWB_SITE_MLP_PRE_LINEAR: return c->gated_mlp;
    default: return (unsigned)k < LMWB_SITE_N_KINDS;
  }
}

bool lmwb_site_in_run(const LmwbConfig *c, LmwbSiteKind k, unsigned run_sites) {
  if (!lmwb_site_exists(c, k)) return false;
  if (k == LMWB_SITE_LN1 && (run_sites & LMWB_RUN_SPLIT_QKV)) return false;
  unsigned f = table[k].run_flag;
  return !f || (run_sites & f);
}

char *lmwb_site_name(LmwbSite s) {
  if (table[s.kind].model_level) return g_strdup(table[s.kind].name);
  return g_strdup_printf("blocks.%d.%s", s.layer, table[s.kind].name);
}

gboolean lmwb_site_parse(const LmwbConfig *c, const char *name, LmwbSite *out, GError **error) {
  for (int k = 0; k < LMWB_SITE_N_KINDS; k++) {
    if (table[k].model_level && !strcmp(name, table[k].name) && lmwb_site_exists(c, k)) {
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
        if (!table[k].model_level && !strcmp(end + 1, table[k].name) && lmwb_site_exists(c, k)) {
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
  switch (table[k].shape) {
    case LMWB_SHAPE_Q: return c->n_head * c->head_dim;
    case LMWB_SHAPE_KV: return c->n_kv_head * c->head_dim;
    case LMWB_SHAPE_FF: return c->d_ff;
    case LMWB_SHAPE_PATTERN: return Tk;
    case LMWB_SHAPE_Q_MODEL: return c->n_head * c->d_model;
    case LMWB_SHAPE_KV_MODEL: return c->n_kv_head * c->d_model;
    default: return c->d_model;
  }
}

int lmwb_site_rows_per_seq(const LmwbConfig *c, LmwbSiteKind k, int T) {
  return table[k].shape == LMWB_SHAPE_PATTERN ? c->n_head * T : T;
}

int lmwb_site_shape(const LmwbConfig *c, LmwbSiteKind k, int B, int T, int Tk, int64_t shape[4]) {
  shape[0] = B;
  shape[1] = T;
  switch (table[k].shape) {
    case LMWB_SHAPE_Q: shape[2] = c->n_head; shape[3] = c->head_dim; return 4;
    case LMWB_SHAPE_KV: shape[2] = c->n_kv_head; shape[3] = c->head_dim; return 4;
    case LMWB_SHAPE_Q_MODEL: shape[2] = c->n_head; shape[3] = c->d_model; return 4;
    case LMWB_SHAPE_KV_MODEL: shape[2] = c->n_kv_head; shape[3] = c->d_model; return 4;
    case LMWB_SHAPE_PATTERN: shape[1] = c->n_head; shape[2] = T; shape[3] = Tk; return 4;
    default: shape[2] = lmwb_site_row_size(c, k, Tk); return 3;
  }
}

char **lmwb_site_list(const LmwbConfig *c) {
  GPtrArray *a = g_ptr_array_new();
  for (int k = 0; k < LMWB_SITE_N_KINDS; k++)
    if (table[k].model_level && k != LMWB_SITE_LN_FINAL && lmwb_site_exists(c, k))
      g_ptr_array_add(a, lmwb_site_name((LmwbSite){k, -1}));
  for (int L = 0; L < c->n_layer; L++)
    for (int k = 0; k < LMWB_SITE_N_KINDS; k++)
      if (!table[k].model_level && lmwb_site_exists(c, k)) g_ptr_array_add(a, lmwb_site_name((LmwbSite){k, L}));
  g_ptr_array_add(a, lmwb_site_name((LmwbSite){LMWB_SITE_LN_FINAL, -1}));
  g_ptr_array_add(a, NULL);
  return (char **)g_ptr_array_free(a, FALSE);
}
