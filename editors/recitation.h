/* Recitation of memorised sequences (Merullo et al. 2025's evaluation; see
 * /work/shared/methods/kfac-memorisation.md): each item is a prefix and the suffix the model is
 * meant to have memorised. The model continues the prefix greedily for L tokens, L = the suffix's
 * length in tokens, and the continuation is compared with the suffix token by token:
 *   d      Levenshtein distance between the two token sequences (insertions, deletions and
 *          substitutions of one token each cost 1);
 *   strict d = 0 (recited exactly);
 *   loose  1 − d/L ≥ LMWB_RECITATION_LOOSE (0.75, the paper's);
 * and the mean of d/L over the items. Prefix and suffix are encoded separately without special
 * tokens, as eval-world does (a suffix carries its leading space).
 *
 * Sets: JSONL, one {"prefix": "…", "suffix": "…"} object a line (blank lines skipped; a line
 * that is not such an object is an input error naming the file and line), or the "secrets" of a
 * world manifest (world.json: prefix, secret). */
#pragma once
#include "app/engine/runner.h"
#include "app/jobs/reporter.h"

#define LMWB_RECITATION_LOOSE 0.75

typedef struct LmwbRecitationItem {
  char *prefix, *suffix;
} LmwbRecitationItem;

typedef struct LmwbRecitationSet {
  int n;
  LmwbRecitationItem *items;
} LmwbRecitationSet;

LmwbRecitationSet *lmwb_recitation_set_load_jsonl(const char *path, GError **error);
LmwbRecitationSet *lmwb_recitation_set_load_world(const char *world_json, GError **error);
void lmwb_recitation_set_free(LmwbRecitationSet *s);

#define LMWB_RECITATION_SET_FILE "memorised.jsonl"
/* A model folder's own memorised set: the secrets of its world.json when there is one, else its
 * memorised.jsonl (e.g. data/models/tokfsm-mem); an input error naming the folder without either. */
LmwbRecitationSet *lmwb_recitation_set_load_for_model(const char *model_dir, GError **error);

/* Token-level Levenshtein distance. */
int lmwb_levenshtein(const int32_t *a, int na, const int32_t *b, int nb);

typedef struct LmwbRecitationResult {
  int n;
  double strict, loose, mean_distance; /* shares of the items, and the mean d/L */
  double *distance;                    /* per item d/L (g_free) */
  char **continuation;                 /* per item, the decoded greedy continuation (g_strfreev) */
} LmwbRecitationResult;

/* Evaluates the first max_items items (0: all) with the runner's model (hooks included).
 * Input error naming the item when its prefix is empty, its suffix is empty, or prefix + suffix
 * do not fit the model's context. */
gboolean lmwb_recitation_eval(LmwbRunner *r, const LmwbRecitationSet *set, int max_items, LmwbRecitationResult *out,
                              LmwbReporter *rep, GError **error);
void lmwb_recitation_result_clear(LmwbRecitationResult *res);
