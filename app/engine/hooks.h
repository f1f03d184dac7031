/* Hooks: what a run does at a site (sites.h) besides computing it.
 *
 * A hook selects rows and indices of the site's [B, rows, R] block and
 *   SET      sets them to a value (value, or values[i] per index),
 *   ADD      adds a value,
 *   SCALE    multiplies by a value,
 *   PATCH    moves them towards a caller's source block: x <- x + alpha * (source - x)
 *            (alpha 1 copies: interchange ablation; 0 < alpha < 1 interpolates, as EAP-IG does),
 *   CALL     calls fn on the whole block (a transcoder or a codebook splices in this way),
 *   OBSERVE  calls fn on the whole block and promises not to change it (statistics, caching).
 * Selection: rows of token positions in `positions` (absolute, so a KV-cached run counts from the
 * cache's start; NULL: every position) and, per sequence, where mask[b * T + t] is non-zero (NULL:
 * every row); indices within the row (NULL: all of it). For attn.hook_pattern the rows are
 * (head, query) pairs and the selection applies to the query position.
 *
 * In a backward the same hooks act on the gradient in reverse order, as the chain rule asks:
 * SET zeroes the selected gradient, ADD leaves it, SCALE multiplies it, PATCH multiplies it by
 * (1 - alpha), CALL calls bwd_fn (NULL: the gradient passes unchanged), OBSERVE calls bwd_fn.
 *
 * Ownership: positions and indices are copied when the hook is added; values, mask and source are
 * borrowed and must stay valid while the hook is installed. mask and source are for runs of
 * run_B sequences of run_T positions (checked at every run); source is [run_B, rows, R]. */
#pragma once
#include "app/engine/sites.h"

typedef enum {
  LMWB_HOOK_SET, LMWB_HOOK_ADD, LMWB_HOOK_SCALE, LMWB_HOOK_PATCH, LMWB_HOOK_CALL, LMWB_HOOK_OBSERVE
} LmwbHookOp;

/* What a hook function is told about the block it is given. */
typedef struct LmwbHookCtx {
  LmwbSite site;        /* kind and layer */
  int B, T, past;       /* block of B sequences at positions past .. past+T-1 */
  int rows_per_seq;     /* T, or Hq*T for the pattern */
  int R;                /* floats per row */
  const int *lens;      /* valid length of each sequence (NULL: all T) */
  const int32_t *ids;   /* [B, T] token ids of the run */
  bool backward;        /* the block holds gradients */
} LmwbHookCtx;

typedef void (*LmwbHookFn)(float *block, const LmwbHookCtx *ctx, void *user);

typedef struct LmwbHook {
  LmwbSite site;
  LmwbHookOp op;
  const int *positions; int n_positions; /* NULL: every position */
  const uint8_t *mask;                   /* [run_B, run_T], NULL: every row */
  const int *indices; int n_indices;     /* NULL: the whole row */
  float value;                           /* SET/ADD/SCALE by a scalar, or ... */
  const float *values;                   /* ... one value per index (or per row float) */
  const float *source; float alpha;      /* PATCH */
  int run_B, run_T;                      /* the run shape mask and source are for */
  LmwbHookFn fn;                         /* CALL / OBSERVE: forward */
  LmwbHookFn bwd_fn;                     /* CALL / OBSERVE: backward */
  void *user;
} LmwbHook;

/* The hooks of a runner, in the order they were added. */
typedef struct LmwbHookList LmwbHookList;

LmwbHookList *lmwb_hook_list_new(void);
void lmwb_hook_list_free(LmwbHookList *l);
/* Validates the hook against the model (site exists, indices within the row, positions >= 0,
 * what the op needs is given) and returns its id (> 0), or 0 with an input error. */
int lmwb_hook_list_add(LmwbHookList *l, const LmwbConfig *cfg, const LmwbHook *h, GError **error);
/* FALSE when no hook has this id. */
gboolean lmwb_hook_list_remove(LmwbHookList *l, int id);
void lmwb_hook_list_clear(LmwbHookList *l);
int lmwb_hook_list_count(const LmwbHookList *l);
/* The LmwbRunSites the hooks' sites need. */
unsigned lmwb_hook_list_run_sites(const LmwbHookList *l);
/* Checks the borrowed arrays' run shape against a run of B x T (input error naming the hook). */
gboolean lmwb_hook_list_check_run(const LmwbHookList *l, const LmwbConfig *cfg, int B, int T, GError **error);
/* Whether any hook acts at s; whether all of them only observe. */
bool lmwb_hook_list_at(const LmwbHookList *l, LmwbSite s, bool *observe_only);
/* Apply every hook at ctx->site to the block, forward or (ctx->backward) in reverse. */
void lmwb_hook_list_apply(const LmwbHookList *l, float *block, const LmwbHookCtx *ctx);
