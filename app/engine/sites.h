/* Hook sites: the named places in the transformer body where activations (and, in a backward,
 * their gradients) can be read, cached, edited or replaced. Names follow TransformerLens so that
 * SAELens / circuit-tracer weights and users' habits carry over.
 *
 * Every site is declared once, in the table of sites.c: its name, the shape rule of its block and
 * when it exists. Adding a site is one entry there (plus the line of the runner that computes it).
 *
 * A site's block is [B, rows_per_seq, R] floats: rows are token positions (R floats each), except
 * attn.hook_pattern whose rows are (head, query position) pairs, [B, Hq, T, Tk], R = Tk. Per-head
 * sites are rows of R = heads * width floats: index h * width + i.
 *
 * Some sites exist only when a run asks for them (they cost memory), as TransformerLens's
 * use_attn_result / use_split_qkv_input / use_hook_mlp_in:
 *   blocks.L.attn.hook_result  [B,T,Hq,d_model]  each head's output through its slice of W_O
 *                                                (without b_O; hook_attn_out = their sum + b_O)
 *   blocks.L.hook_q_input      [B,T,Hq,d_model]  each query head's own copy of the residual
 *   blocks.L.hook_k_input/v_   [B,T,Hkv,d_model] each key/value head's own copy of the residual
 *                                                (before ln1; the norm then runs per head)
 *   blocks.L.hook_mlp_in       [B,T,d_model]     the MLP's own copy of its input (before ln2)
 * With the split q/k/v inputs on, ln1 runs once per head and ln1.hook_normalized does not exist. */
#pragma once
#include "app/formats/config.h"
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum {
  LMWB_SITE_EMBED, LMWB_SITE_POS_EMBED, LMWB_SITE_RESID_PRE, LMWB_SITE_Q_INPUT, LMWB_SITE_K_INPUT,
  LMWB_SITE_V_INPUT, LMWB_SITE_LN1, LMWB_SITE_Q, LMWB_SITE_K, LMWB_SITE_V, LMWB_SITE_ROT_Q,
  LMWB_SITE_ROT_K, LMWB_SITE_PATTERN, LMWB_SITE_Z, LMWB_SITE_RESULT, LMWB_SITE_ATTN_OUT,
  LMWB_SITE_RESID_MID, LMWB_SITE_MLP_IN, LMWB_SITE_LN2, LMWB_SITE_MLP_PRE, LMWB_SITE_MLP_PRE_LINEAR,
  LMWB_SITE_MLP_POST, LMWB_SITE_MLP_OUT, LMWB_SITE_RESID_POST, LMWB_SITE_LN_FINAL, LMWB_SITE_N_KINDS
} LmwbSiteKind;

typedef struct LmwbSite {
  LmwbSiteKind kind;
  int layer; /* -1 for model-level sites (embed, pos_embed, ln_final) */
} LmwbSite;

/* Optional sites a run can ask for (LmwbForwardOptions.sites). */
typedef enum {
  LMWB_RUN_ATTN_RESULT = 1 << 0, /* attn.hook_result */
  LMWB_RUN_SPLIT_QKV = 1 << 1,   /* hook_q_input, hook_k_input, hook_v_input */
  LMWB_RUN_MLP_IN = 1 << 2,      /* hook_mlp_in */
} LmwbRunSites;

/* Row width rules. */
typedef enum {
  LMWB_SHAPE_MODEL,     /* d_model */
  LMWB_SHAPE_Q,         /* [Hq, head_dim] */
  LMWB_SHAPE_KV,        /* [Hkv, head_dim] */
  LMWB_SHAPE_FF,        /* d_ff */
  LMWB_SHAPE_PATTERN,   /* rows (Hq, t), Tk keys each */
  LMWB_SHAPE_Q_MODEL,   /* [Hq, d_model] */
  LMWB_SHAPE_KV_MODEL,  /* [Hkv, d_model] */
} LmwbSiteShape;

typedef struct LmwbSiteInfo {
  const char *name;       /* full name for model-level sites, else the suffix after "blocks.L." */
  bool model_level;
  LmwbSiteShape shape;
  unsigned run_flag;      /* the LmwbRunSites flag that enables it; 0: always computed */
} LmwbSiteInfo;

const LmwbSiteInfo *lmwb_site_info(LmwbSiteKind kind);

/* Whether the site exists for this architecture (no hook_pos_embed without learned positions, no
 * hook_resid_mid with a parallel residual, no rot_q without rotary, no hook_pre_linear without a
 * gated MLP), regardless of run flags. */
bool lmwb_site_exists(const LmwbConfig *cfg, LmwbSiteKind kind);
/* Whether a run with these LmwbRunSites flags computes the site (exists, its flag is on, and
 * ln1.hook_normalized is off when the q/k/v inputs are split). */
bool lmwb_site_in_run(const LmwbConfig *cfg, LmwbSiteKind kind, unsigned run_sites);

/* Parse "blocks.3.mlp.hook_post" etc., checking the layer and that the site exists for this
 * architecture. */
gboolean lmwb_site_parse(const LmwbConfig *cfg, const char *name, LmwbSite *out, GError **error);
/* The canonical name (g_free). */
char *lmwb_site_name(LmwbSite s);
/* Floats per row (R above) for a run with Tk keys. */
int lmwb_site_row_size(const LmwbConfig *cfg, LmwbSiteKind kind, int Tk);
/* Rows per sequence for a run of T positions (T, or Hq * T for the pattern). */
int lmwb_site_rows_per_seq(const LmwbConfig *cfg, LmwbSiteKind kind, int T);
/* The block's shape in TransformerLens order ([B,T,R], [B,T,H,d], [B,H,T,Tk]); returns ndim. */
int lmwb_site_shape(const LmwbConfig *cfg, LmwbSiteKind kind, int B, int T, int Tk, int64_t shape[4]);
/* Every site name of a model (optional sites too), in forward order, for --help and listings
 * (NULL-terminated, g_strfreev). */
char **lmwb_site_list(const LmwbConfig *cfg);
