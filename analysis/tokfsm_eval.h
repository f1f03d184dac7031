/* The TokFSM measurements of the codebook-features paper (Tamkin, Taufeeque & Goodman 2023,
 * section 5; /work/shared/methods/codebooks.md) on a model trained on the language of tokfsm.h.
 *
 * Data: held-out sequences (EOT then 2*length digits, lmwb_tokfsm_read_sequences), run whole.
 * Token ids are the TokFSM vocabulary's (digit d = id d, EOT = 10); position t = 1 + 2j holds
 * the first digit and t = 2 + 2j the second digit of state j.
 *
 * (a) Language model, without and with the codebook set: the mean next-token cross-entropy and
 *     top-1 accuracy over every digit (targets t = 1..2L); state accuracy: at the second digit of
 *     each state j < L-1, the next state predicted greedily (the argmax token, then the argmax
 *     after it is appended, both over the whole vocabulary) is an FSM edge from state j.
 * (b) Codes against neurons (needs MLP codebooks): over every digit position, a state s "is
 *     present" at the second-digit positions of s (the set M_s). A code (of any MLP codebook) is
 *     active where it is among the k chosen ids; precision = |active ∩ M_s| / |active|, recall =
 *     |active ∩ M_s| / |M_s|. The best code of s has the highest F1 (ties: lower layer, lower id).
 *     A neuron (blocks.L.mlp.hook_post of the same run, every layer) is active where its value is
 *     at or above a threshold; at the best code's recall R (the smallest threshold-count reaching
 *     ceil(R·|M_s|) positions of M_s, positions taken by falling value, ties by position) its
 *     precision is counted the same way; the best neuron of s has the highest such precision
 *     (the paper's "at equal recall"). Averages over the states with M_s non-empty.
 * (c) Code patching (needs MLP codebooks): `transitions` random pairs (sequence a, state j_a;
 *     sequence b, state j_b, a different state s_b), drawn from the seed. Sequence a is run up to
 *     the second digit of j_a (position p) with the codebooks, and again with the MLP code ids at p
 *     replaced by those b's run chose at its second digit of j_b (all MLP codebooks together, then
 *     each layer alone). JSD(model's next-token distribution at p, the FSM's true next-token
 *     distribution of s_b: the first digits of s_b's successors, 1/edges each), natural log;
 *     normalised = mean JSD patched / mean JSD unpatched (no patch = 1, the target reached = 0). */
#pragma once
#include "analysis/codebooks.h"
#include "analysis/tokfsm.h"

#define LMWB_TOKFSM_EVAL_SEQUENCES 100  /* held-out sequences by default */
#define LMWB_TOKFSM_EVAL_TRANSITIONS 500 /* the paper's count of patched transitions */

typedef struct LmwbTokfsmEvalOptions {
  int sequences;   /* evaluated held-out sequences; 0: LMWB_TOKFSM_EVAL_SEQUENCES (all when fewer) */
  int batch;       /* sequences per forward; 0: 16 */
  int transitions; /* (c); 0: LMWB_TOKFSM_EVAL_TRANSITIONS; < 0: none */
  guint64 seed;    /* draws of (c) */
} LmwbTokfsmEvalOptions;

typedef struct LmwbTokfsmLm {
  double loss, accuracy, state_accuracy;
  int64_t tokens, transitions; /* predictions counted */
} LmwbTokfsmLm;

typedef struct LmwbTokfsmStateBest {
  int state;
  int64_t support;                  /* |M_s| */
  int code_layer, code;             /* -1 when no code is ever active on M_s */
  double code_precision, code_recall;
  int neuron_layer, neuron;         /* -1 when not measured */
  double neuron_precision, neuron_recall;
} LmwbTokfsmStateBest;

typedef struct LmwbTokfsmPatch {
  int layer;          /* -1: every MLP codebook */
  double jsd;         /* mean over transitions */
  double normalised;  /* jsd / the unpatched mean */
} LmwbTokfsmPatch;

typedef struct LmwbTokfsmEvalResult {
  int sequences;
  LmwbTokfsmLm plain, codebooks;
  gboolean has_codebooks, has_codes; /* a set was given; it has MLP codebooks ((b) and (c)) */
  LmwbTokfsmStateBest *states;       /* [n_states] */
  int n_states, states_measured;
  double code_precision, code_recall, neuron_precision, neuron_recall; /* means over measured states */
  int transitions;
  double jsd_unpatched;
  LmwbTokfsmPatch *patches; /* [n_patches]: all MLP codebooks, then each alone */
  int n_patches;
  double seconds;
} LmwbTokfsmEvalResult;

/* Held-out sequences of a text written by `tokfsm make` (valid.txt): [n, 1 + 2*length] token ids.
 * Input errors name the file and the sequence when one is not EOT + 2*length digits or holds a
 * transition that is not an edge of f. */
int32_t *lmwb_tokfsm_read_sequences(const LmwbTokfsm *f, const char *path, int *n, GError **error);

/* Everything above (cb may be NULL: (a) without codebooks only). The model must have the TokFSM
 * vocabulary (checked through its tokenizer when it has one) and a context of 1 + 2*length tokens.
 * Progress and cancel through the reporter. */
gboolean lmwb_tokfsm_eval(LmwbModel *m, LmwbCodebooks *cb, const LmwbTokfsm *f, const int32_t *seqs, int n_seqs,
                          const LmwbTokfsmEvalOptions *o, LmwbReporter *rep, LmwbTokfsmEvalResult *res,
                          GError **error);
void lmwb_tokfsm_eval_result_clear(LmwbTokfsmEvalResult *r);
