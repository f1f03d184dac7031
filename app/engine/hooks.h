/* Hook sites (TransformerLens names) and the hooks that read or edit activations there.
 *
 * A site's activation is a [B, T, R] block of rows (R floats per token position), except
 * attn.hook_pattern which is [B, Hq, T, Tk] (rows are query positions, R = Tk key positions).
 * Per-head sites ([B, T, H, hd]) are rows of R = H*hd floats: index h*hd + i.
 * A hook selects positions (absolute token positions; all when NULL) and indices within the row
 * (all when NULL) and sets, adds or scales them, or calls a function on the whole block (a
 * transcoder or a codebook splices in this way). Hooks act in the order they were added. */
#pragma once
#include "app/formats/config.h"
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum {
  LMWB_SITE_EMBED, LMWB_SITE_POS_EMBED, LMWB_SITE_RESID_PRE, LMWB_SITE_LN1, LMWB_SITE_Q,
  LMWB_SITE_K, LMWB_SITE_V, LMWB_SITE_ROT_Q, LMWB_SITE_ROT_K, LMWB_SITE_PATTERN, LMWB_SITE_Z,
  LMWB_SITE_ATTN_OUT, LMWB_SITE_RESID_MID, LMWB_SITE_LN2, LMWB_SITE_MLP_PRE,
  LMWB_SITE_MLP_PRE_LINEAR, LMWB_SITE_MLP_POST, LMWB_SITE_MLP_OUT, LMWB_SITE_RESID_POST,
  LMWB_SITE_LN_FINAL, LMWB_SITE_N_KINDS
} LmwbSiteKind;

typedef struct LmwbSite {
  LmwbSiteKind kind;
  int layer; /* -1 for model-level sites (embed, pos_embed, ln_final) */
} LmwbSite;

/* Parse "blocks.3.mlp.hook_post" etc., checking the layer and that the site exists for this
 * architecture (no hook_pos_embed without learned positions, no hook_resid_mid with a parallel
 * residual, no rot_q without rotary, no hook_pre_linear without a gated MLP). */
gboolean lmwb_site_parse(const LmwbConfig *cfg, const char *name, LmwbSite *out, GError **error);
/* The canonical name (g_free). */
char *lmwb_site_name(LmwbSite s);
/* Floats per row at a site (R above) for a run with Tk keys. */
int lmwb_site_row_size(const LmwbConfig *cfg, LmwbSiteKind kind, int Tk);
/* Every site name of a model, for --help and listings (NULL-terminated, g_strfreev). */
char **lmwb_site_list(const LmwbConfig *cfg);

typedef enum { LMWB_HOOK_SET, LMWB_HOOK_ADD, LMWB_HOOK_SCALE, LMWB_HOOK_CALL } LmwbHookOp;

typedef struct LmwbHookCtx {
  LmwbSite site;
  int B, T, past;   /* block shape: positions past .. past+T-1 */
  int rows_per_seq; /* T, or Hq*T for the pattern */
  int R;            /* floats per row */
  const int *lens;  /* valid length of each sequence (NULL: all T) */
} LmwbHookCtx;

typedef void (*LmwbHookFn)(float *act, const LmwbHookCtx *ctx, void *user);

typedef struct LmwbHook {
  LmwbSite site;
  LmwbHookOp op;
  const int *positions; int n_positions; /* NULL: every position */
  const int *indices; int n_indices;     /* NULL: the whole row */
  float value;                           /* SET/ADD/SCALE by a scalar, or ... */
  const float *values;                   /* ... one value per index (n_indices), or per row float */
  LmwbHookFn fn;                         /* CALL: forward, in place on the block */
  LmwbHookFn bwd_fn;                     /* CALL: backward, in place on the block's gradient */
  void *user;
} LmwbHook;

/* Parse a neuron clamp "L:N=VALUE[@P1,P2,...]" into a SET hook at blocks.L.mlp.hook_post
 * (or hook_pre when at_pre). positions/indices point into `storage` (3 + n ints). */
typedef struct LmwbClampSpec {
  int layer, neuron;
  float value;
  int *positions; int n_positions; /* NULL: all */
} LmwbClampSpec;
gboolean lmwb_clamp_parse(const LmwbConfig *cfg, const char *text, LmwbClampSpec *out, GError **error);
void lmwb_clamp_spec_clear(LmwbClampSpec *c);
