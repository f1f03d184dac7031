/* Code search (Tamkin, Taufeeque & Goodman 2023, section 4; their code_search_utils.py): which codes
 * of a codebook set stand for what a regex matches in a text.
 *
 * The text is tokenised with the model's tokenizer and cut into consecutive windows of `context`
 * tokens; one forward per batch of windows with the set spliced in records every code id at every
 * site and position (the cache). A window's "token text" is the concatenation of its tokens' texts
 * (lmwb_tokenizer_token_text); the regex runs over each window's token text, and a match (of group
 * 1 when the pattern has a group, else of the whole pattern; empty matches ignored) marks the token
 * holding its first byte. Over the marked tokens M, for code c of one codebook (one head):
 *   recall(c)    = |{t in M : c active at t}| / |M|
 *   precision(c) = |{t in M : c active at t}| / |{t : c active at t}|
 * (active: among the k chosen ids). Per codebook the codes with recall > min_recall are sorted by
 * precision and the first `top` with precision > min_precision kept (the paper: 0.01, 5, 0.5);
 * the hits of all codebooks are then sorted by precision. A topic code is active on more than half
 * of one window's tokens. */
#pragma once
#include "analysis/codebooks.h"

typedef struct LmwbCodeCache {
  const LmwbCodebooks *cb; /* borrowed */
  LmwbModel *model;        /* a reference */
  int context, n_windows;
  int64_t n_tokens;        /* n_windows * context */
  int32_t *tokens;         /* [n_tokens] */
  int32_t **ids;           /* per codebook [n_tokens, groups, k] */
  int64_t **active;        /* per codebook [groups * C]: tokens where the code is active */
} LmwbCodeCache;

/* The codes of the set on the windows of ids (n_ids tokens; the tail shorter than a window is
 * dropped; max_tokens > 0 stops earlier). Progress and cancel through the reporter. */
LmwbCodeCache *lmwb_code_cache_build(LmwbModel *m, LmwbCodebooks *cb, const int32_t *ids, size_t n_ids, int context,
                                     int64_t max_tokens, LmwbReporter *rep, GError **error);
void lmwb_code_cache_free(LmwbCodeCache *c);

/* Token indices of the cache marked by the regex (sorted, unique; g_free). Input error naming the
 * pattern when it does not compile. */
int64_t *lmwb_code_cache_match(const LmwbCodeCache *c, const char *regex, int64_t *n, GError **error);

typedef struct LmwbCodeHit {
  int book, layer, head;   /* head -1 for mlp */
  LmwbCodebookSite site;
  int code;
  double precision, recall;
  int64_t matched;         /* marked tokens where the code is active */
  int64_t activations;     /* all tokens where it is active */
} LmwbCodeHit;

typedef struct LmwbCodeSearchOptions {
  int top;              /* per codebook; 0: 5 */
  double min_precision; /* 0: 0.5; < 0: none */
  double min_recall;    /* 0: 0.01; < 0: none */
} LmwbCodeSearchOptions;

/* Hits for the marked tokens (as above; g_free). */
LmwbCodeHit *lmwb_code_search(const LmwbCodeCache *c, const int64_t *marked, int64_t n_marked,
                              const LmwbCodeSearchOptions *o, int *n_hits);
/* Token indices where code `code` of codebook `book`, head `head` (0 for mlp) is active, the first
 * `max` of them by slot (the best-scoring first) then position (g_free). */
int64_t *lmwb_code_cache_occurrences(const LmwbCodeCache *c, int book, int head, int code, int max, int *n);
/* The text around token t of the cache: up to `before` tokens before and `after` after it, within
 * its window, the token itself marked «…» (token texts as lmwb_tokenizer_token_text; g_free). */
char *lmwb_code_cache_context(const LmwbCodeCache *c, int64_t t, int before, int after);
/* Topic codes: (book, head, code) active on more than half of a window's tokens; windows[i] counts
 * the windows where hit i is one (hits' precision/recall unused). g_free both. */
LmwbCodeHit *lmwb_code_cache_topics(const LmwbCodeCache *c, int **windows, int *n);
