/* TokFSM: the finite-state-machine language of the codebook-features paper (Tamkin, Taufeeque &
 * Goodman 2023, section 5; /work/shared/methods/codebooks.md, "TokFSM").
 *
 * The machine: `states` states (at most 100, each written as its 2-digit string "00".."99"), each
 * with `edges` distinct random successors (uniform, self-loops allowed), each taken with
 * probability 1/edges. A sequence is a random walk of `length` states (length - 1 transitions)
 * from a uniform random start, written as 2*length digits after one end-of-text token.
 *
 * Tokens: the 11-token vocabulary of the paper: "0".."9" are ids 0..9 (id = digit), and
 * "<|endoftext|>" is id 10, used as BOS, EOS and padding. lmwb_tokfsm_tokenizer_json writes it as
 * a Hugging Face byte-level BPE tokenizer.json without merges (every digit its own token).
 *
 * Files: fsm.json = {"states": N, "edges": E, "seed": S, "length": L, "next": [[...E ids], ...]}
 * (next[s] the successors of s, in the order drawn). Everything is deterministic from the seed:
 * the machine from one splitmix64 stream, the training and held-out walks from two others. */
#pragma once
#include <glib.h>
#include <stdint.h>

#define LMWB_TOKFSM_MAX_STATES 100 /* 2-digit state strings */
#define LMWB_TOKFSM_EOT 10         /* id of <|endoftext|> */
#define LMWB_TOKFSM_VOCAB 11
#define LMWB_TOKFSM_DEFAULT_STATES 100 /* the paper */
#define LMWB_TOKFSM_DEFAULT_EDGES 10   /* the paper */
#define LMWB_TOKFSM_DEFAULT_LENGTH 64  /* the paper: 128 digit tokens a sequence */
#define LMWB_TOKFSM_MAX_LENGTH 4096

typedef struct LmwbTokfsm {
  int states, edges, length;
  guint64 seed;
  int32_t *next; /* [states, edges] */
} LmwbTokfsm;

/* A new machine (input errors name the field: states 1..100, edges 1..states, length 1..4096). */
LmwbTokfsm *lmwb_tokfsm_new(int states, int edges, int length, guint64 seed, GError **error);
void lmwb_tokfsm_free(LmwbTokfsm *f);
gboolean lmwb_tokfsm_is_edge(const LmwbTokfsm *f, int from, int to);

/* Which stream a walk is drawn from: the training walks or the held-out ones. */
typedef enum { LMWB_TOKFSM_TRAIN = 1, LMWB_TOKFSM_HELDOUT = 2, LMWB_TOKFSM_MEMORISED = 3 } LmwbTokfsmSplit;
/* Sequence i of a split as tokens: EOT then 2*length digits (out holds 1 + 2*length ids). Each
 * sequence has its own stream (seed, split, i), so sequence i is the same whatever the count. */
void lmwb_tokfsm_sequence(const LmwbTokfsm *f, LmwbTokfsmSplit split, int64_t i, int32_t *out);

/* Memorised walks (the TinyMem setup of Sakarvadia et al. 2024, which Merullo et al. 2025 use as
 * their language toy): walks of the MEMORISED split, each repeated `repeats` times among the
 * `n_train` training walks. Fills slot[k] (k < n_memorised * repeats, sorted ascending) with the
 * training index a copy goes before (0..n_train; n_train = after the last) and walk[k] with the
 * memorised walk it copies; deterministic from the seed. */
void lmwb_tokfsm_memorised_schedule(const LmwbTokfsm *f, int64_t n_train, int n_memorised, int repeats, int64_t *slot,
                                    int32_t *walk);

/* fsm.json text (g_free) and its reader (every field checked; errors name the file and field). */
char *lmwb_tokfsm_to_json(const LmwbTokfsm *f, size_t *len);
LmwbTokfsm *lmwb_tokfsm_load(const char *path, GError **error);
/* The 11-token tokenizer.json (g_free). */
char *lmwb_tokfsm_tokenizer_json(size_t *len);
