/* Byte-level BPE tokenizer training (`lmwb-batch train-tokenizer`).
 * Corpus text is split with the GPT-2 pre-tokenizer (the same matcher the encoder uses) and mapped
 * to the 256 byte symbols; merges are chosen by pair frequency over the word-frequency table
 * (ties: the pair with the smaller (left id, right id)), with incremental pair-count updates.
 * Vocabulary: special tokens first (ids 0..n-1), then the 256 bytes in byte order, then merges.
 * Writes DIR/tokenizer.json atomically: a complete HF file (BPE model with ["a","b"] merges,
 * ByteLevel pre-tokenizer/decoder, special added tokens) that lmwb_tokenizer_load_dir loads and
 * that round-trips any UTF-8 text. Same input and options -> byte-identical file.
 * Errors (LMWB_ERROR_INPUT, before anything is written): no corpus, a missing/empty/non-UTF-8 corpus
 * file, vocab_size < 256 + specials, bad special tokens, or a vocab_size the corpus cannot reach
 * (it runs out of pairs with frequency >= min_frequency). Cancellable through the reporter. */
#pragma once
#include <glib.h>

#include "app/jobs/reporter.h"

typedef struct {
  int vocab_size;
  int min_frequency;            /* a pair must occur at least this often to be merged; <= 1 means any */
  const char **special_tokens;  /* NULL -> the default {"<|endoftext|>"} */
  int n_special;
  gboolean split_digits;        /* never merge ASCII digits: every digit stays its own token */
} LmwbBpeTrainOptions;

#define LMWB_BPE_DEFAULT_SPECIAL "<|endoftext|>"

gboolean lmwb_bpe_train(const char *const *corpus_files, int n_files, const LmwbBpeTrainOptions *opt,
                        const char *out_dir, LmwbReporter *reporter, GError **error);
