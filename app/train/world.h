/* The generated "world": a fictional, seed-deterministic text world that the built-in model is
 * trained on, together with a JSON manifest of every item and its held-out evaluation sets.
 *
 * Contract: lmwb_world_generate(seed, repeats, brown_words) always yields the same training lines
 * and the same manifest for the same arguments, on every machine (own PRNG, integer arithmetic
 * only, no hash-table iteration order). `brown_words` (lower-case word -> count, may be NULL) lets
 * the generator reject invented names that are real words of the corpus it is mixed with and
 * pick "concept nouns" that the corpus really uses. Entities, templates and evaluation items
 * depend on the seed only (and on brown_words for name rejection), never on `repeats`, which
 * only scales how often training sentences are repeated. brown_words maps a lower-case word to
 * GUINT_TO_POINTER(its count).
 *
 * What the world holds and why: see the comment at the top of world.c. */
#pragma once
#include <glib.h>
#include <json-glib/json-glib.h>

/* xoshiro256** seeded through splitmix64: tiny, fast, and bit-identical everywhere. */
typedef struct {
  guint64 s[4];
} LmwbWorldRng;

void lmwb_world_rng_init(LmwbWorldRng *rng, guint64 seed);
guint64 lmwb_world_rng_next(LmwbWorldRng *rng);
/* Uniform integer in [0, n) without modulo bias; n == 0 returns 0. */
guint64 lmwb_world_rng_below(LmwbWorldRng *rng, guint64 n);
/* Fisher-Yates shuffle of an array of pointers. */
void lmwb_world_rng_shuffle(LmwbWorldRng *rng, gpointer *items, guint n);

typedef struct LmwbWorld LmwbWorld;

/* Default scale: ~3.5 MB of world text (see world.c for the per-part counts). */
#define LMWB_WORLD_DEFAULT_REPEATS 1
/* Repeats above this would make train.txt far larger than the ~12 MB training budget. */
#define LMWB_WORLD_MAX_REPEATS 8

/* repeats in [1, LMWB_WORLD_MAX_REPEATS] (0 means the default); anything else is an input error. */
LmwbWorld *lmwb_world_generate(guint64 seed, int repeats, GHashTable *brown_words, GError **error);
void lmwb_world_free(LmwbWorld *w);

/* The training sentences, one per element (no newline), in generation order; the corpus mixer
 * shuffles them. Owned by the world. */
GPtrArray *lmwb_world_train_lines(LmwbWorld *w);
/* The fact mentions among the training lines (every relation, every phrasing and frame), in
 * generation order; owned by the world. What a memorisation edit should keep of the world. */
GPtrArray *lmwb_world_fact_lines(LmwbWorld *w);
/* The copy stories (one name, any of the IOI names, held-out ones included, repeated in four
 * sentences on one line), owned by the world, in generation order. A short first training stage
 * on these alone forms the copy circuit ("attend to the name, copy it") in a few hundred steps;
 * trained on the full mix alone, small models sit on a loss plateau for thousands of steps and
 * answer IOI with a fixed favourite name. Some of them are also training lines. */
GPtrArray *lmwb_world_warmup_lines(LmwbWorld *w);
/* The second stage: every IOI training sentence and every copy story, owned by the world. On
 * these the IOI circuit (prefer the name that is not repeated) forms in ~1,000 steps; in the full
 * mix, where IOI is a third of the text, it was still half-formed after 6,000. */
GPtrArray *lmwb_world_ioi_lines(LmwbWorld *w);
/* Total bytes of the training lines including one '\n' each. */
guint64 lmwb_world_train_bytes(const LmwbWorld *w);
/* The manifest object (owned by the world; callers may add members before writing it). */
JsonObject *lmwb_world_manifest(LmwbWorld *w);
