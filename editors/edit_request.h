/* Knowledge-edit requests: "rewrite what the model says about a subject", as ROME and MEMIT take
 * them (Meng et al. 2022, 2023; CounterFact). See /work/shared/methods/editing-collapse.md.
 *
 * Read from JSON text: one object, an array of objects, or JSON Lines (one object a line), each
 * either in CounterFact form
 *   {"requested_rewrite": {"prompt": "{} lives in", "subject": "Mary", "target_new": {"str": "Paris"},
 *    "target_true": {"str": "Rome"}}, "paraphrase_prompts": [...], "neighborhood_prompts": [...]}
 * or flat {"prompt", "subject", "target_new", "target_true", "paraphrase_prompts"?,
 * "neighborhood_prompts"?} (targets as strings or {"str": ...}). A target without a leading space
 * gets one, as ROME does. The prompt holds "{}" exactly once, where the subject goes; target_true
 * may be absent (efficacy then compares with nothing and counts p(new) > 0.5). Errors are input
 * errors naming the origin, the line (or item) and the field. */
#pragma once
#include "app/engine/model.h"
#include <glib.h>

typedef struct LmwbEditRequest {
  char *prompt;        /* "{} lives in" */
  char *subject;       /* "Mary" */
  char *target_new;    /* " Paris" */
  char *target_true;   /* " Rome", or NULL */
  char **paraphrases;  /* NULL-terminated full prompts (subject written in) */
  char **neighbours;   /* NULL-terminated prompts about other subjects, whose answers must not move */
} LmwbEditRequest;

typedef struct LmwbEditRequests {
  LmwbEditRequest *items;
  int n;
} LmwbEditRequests;

/* Parses requests; origin names the text in errors. An empty text is an input error. */
LmwbEditRequests *lmwb_edit_requests_parse(const char *text, size_t len, const char *origin, GError **error);
/* Reads a file of at most LMWB_EDIT_REQUESTS_MAX_BYTES. */
#define LMWB_EDIT_REQUESTS_MAX_BYTES ((uint64_t)64 << 20)
LmwbEditRequests *lmwb_edit_requests_read(const char *path, GError **error);
void lmwb_edit_requests_free(LmwbEditRequests *r);

/* Requests from the built-in world's facts (world.json of data/models/tiny-world): n facts chosen
 * with the seed, each rewritten to another object of the same relation. The prompt is a training
 * template cut before the object ("{} lives in"); paraphrases are the fact's held-out prompts;
 * neighbours the same template with up to n_neighbours other subjects of the relation. */
LmwbEditRequests *lmwb_edit_requests_from_world(const char *world_json, int n, int n_neighbours, guint64 seed,
                                                GError **error);

/* The prompt with the subject written in ("Mary lives in"); g_free it. */
char *lmwb_edit_request_text(const LmwbEditRequest *r);
/* Checks a request against a model's tokenizer: the subject is a whole run of tokens of the
 * prompt (its last token is where ROME reads the key), each target is at least one token. */
gboolean lmwb_edit_request_check(const LmwbModel *m, const LmwbEditRequest *r, int index, GError **error);
