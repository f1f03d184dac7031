/* The training corpus of the built-in model: the Brown corpus (minus a fixed validation split)
 * mixed with the generated world (world.h), deterministic from a seed.
 *
 * lmwb_make_corpus writes these files into out_dir, each atomically:
 *   train.txt        documents separated by exactly one empty line ("\n\n"); no document
 *                    contains an empty line; one sentence per line; UTF-8; ends with "\n".
 *                    Documents are Brown training samples cut into pieces of at most
 *                    LMWB_BROWN_CHUNK_LINES lines, and world paragraphs of 8-16 shuffled world
 *                    sentences; all documents are shuffled together by the seed. A trainer that
 *                    wants document boundaries maps each empty line to its end-of-text token.
 *   valid_brown.txt  the held-out Brown samples, whole and in corpus order, separated by an
 *                    empty line. Sample i (0-based, samples are separated by blank lines in the
 *                    Brown file) is held out when i % every == every / 2, every = round(1 /
 *                    valid_fraction) (20 for the default 5%). The split does not depend on the
 *                    seed, so every model trained on any seed is measured on the same text.
 *   warmup.txt, ioi.txt  the curriculum's first two stages (one sentence or story per line).
 *   facts.txt        every fact mention of train.txt, one per line, shuffled; and
 *   brown_train.txt  the Brown pieces of train.txt in corpus order, separated by an empty line:
 *                    the parts of train.txt that a memorisation edit should keep, on their own
 *                    (the secrets are in neither).
 *   world.json       the world manifest (world.h) plus a "corpus" object describing the split,
 *                    the files and their sizes.
 * Same options and same Brown file -> byte-identical files on every machine.
 * Errors: missing/unreadable/empty/non-UTF-8 Brown file, bad options, unusable out_dir ->
 * LMWB_ERROR_INPUT naming the file or option; cancellation -> LMWB_ERROR_CANCELLED. */
#pragma once
#include "app/jobs/reporter.h"
#include <glib.h>

#define LMWB_CORPUS_TRAIN_FILE "train.txt"
#define LMWB_CORPUS_VALID_FILE "valid_brown.txt"
#define LMWB_CORPUS_WARMUP_FILE "warmup.txt" /* curriculum stage 1: copy stories */
#define LMWB_CORPUS_IOI_FILE "ioi.txt"       /* stage 2: IOI sentences and copy stories */
#define LMWB_CORPUS_FACTS_FILE "facts.txt"             /* the fact mentions alone */
#define LMWB_CORPUS_BROWN_TRAIN_FILE "brown_train.txt" /* the Brown training pieces alone */
#define LMWB_CORPUS_MANIFEST_FILE "world.json"
#define LMWB_CORPUS_DEFAULT_VALID_FRACTION 0.05
/* Brown samples are ~2000 words; cutting them lets the shuffle interleave Brown and world text. */
#define LMWB_BROWN_CHUNK_LINES 20
/* Refuse absurd inputs before reading them whole (the real Brown file is 6 MB). */
#define LMWB_BROWN_MAX_BYTES (256u * 1024u * 1024u)

typedef struct {
  guint64 seed;
  const char *brown_path;
  const char *out_dir;
  double valid_fraction; /* (0, 0.5]; 0 means LMWB_CORPUS_DEFAULT_VALID_FRACTION */
  int world_repeats;     /* world scale, 1..LMWB_WORLD_MAX_REPEATS; 0 means the default (1) */
} LmwbCorpusOptions;

gboolean lmwb_make_corpus(const LmwbCorpusOptions *opt, LmwbReporter *reporter, GError **error);

/* The Brown file's samples: each element is one sample's lines joined by "\n" (trailing
 * whitespace of every line removed, no trailing newline). Input error when the file is missing,
 * unreadable, larger than LMWB_BROWN_MAX_BYTES, not UTF-8, or has fewer than 2 samples. */
GPtrArray *lmwb_brown_read_samples(const char *path, GError **error);
/* The hold-out period for a validation fraction (see above); fraction must be in (0, 0.5]. */
guint lmwb_brown_valid_every(double valid_fraction);
/* TRUE when sample `index` of `n_samples` belongs to the validation split. With fewer samples
 * than every / 2 + 1 the last sample is held out, so the split is never empty. */
gboolean lmwb_brown_is_valid(guint index, guint n_samples, guint every);

/* Where the shared data's Brown corpus is looked for (not checked): $LMWB_SHARED/data/brown/
 * brown.txt, else the `shared` folder beside the source tree of the built-in model folder given
 * (data/models/tiny-world -> ../shared/data/brown/brown.txt). g_free. */
char *lmwb_corpus_brown_path(const char *builtin_model_dir);
