/* Interventions on a run from the command line, shared by logits, activations and grad:
 *   --sites result,qkv,mlp-in      compute the optional per-head sites (a --hook or --patch naming
 *                                  one turns it on by itself)
 *   --patch HOOK=SRC.npy[@ALPHA]   move the activation at HOOK towards SRC (shaped as the site:
 *                                  [B,T,...]); ALPHA 1 (default) copies it (interchange ablation)
 * and, for grad, what the backward starts from and holds fixed:
 *   --loss [W*]SPEC                 next-token (default) | kl:REF.npy | kl-last:REF.npy |
 *                                  logit-diff:A:B[;A:B...] | dlogits:D.npy; repeatable, summed with
 *                                  the weights W (REF holds reference logits [B,T,V], as `logits`
 *                                  writes them; logit-diff and kl-last read each sequence's last
 *                                  position)
 *   --from HOOK=G.npy              inject a gradient at HOOK instead of a loss; repeatable
 *   --freeze pattern,norm,mlp,mlp-out  hold attention patterns / norm scales / the MLP nonlinearity /
 *                                  every MLP's output
 *   --stop-layer L                 go no lower than layer L
 * Every array is checked against the run's shape; errors name the option and the file. */
#pragma once
#include "app/engine/runner.h"
#include <glib.h>

typedef struct LmwbRunOptions {
  char *sites;
  char **patches;
  char **losses;
  char **seeds;
  char *freeze;
  int stop_layer;
  /* what the parsed options hold while the run lives */
  GPtrArray *owned;
} LmwbRunOptions;

extern LmwbRunOptions lmwb_run_options;

/* Option entries: the run's (--sites, --patch) and the backward's (--loss, --from, --freeze,
 * --stop-layer), to add to a command's own. */
extern const GOptionEntry lmwb_run_option_entries[];
extern const GOptionEntry lmwb_backward_option_entries[];

/* A command's own entries followed by the run's (and, with backward, the backward's): g_free. */
GOptionEntry *lmwb_run_options_entries(const GOptionEntry *own, gboolean backward);
/* Install the patches on the runner and fill fo->sites for a run of B x T. */
gboolean lmwb_run_options_apply(LmwbRunner *r, int B, int T, LmwbForwardOptions *fo, GError **error);
/* The backward the options ask for, after a forward of B x T. */
gboolean lmwb_run_options_backward(LmwbRunner *r, int B, int T, GError **error);
void lmwb_run_options_clear(void);
