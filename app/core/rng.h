/* The one small random generator everything seeded uses (splitmix64, Steele et al. 2014): the
 * same stream on every machine, so seeds reproduce weights, samples and corpora exactly. */
#pragma once
#include <glib.h>

static inline guint64 lmwb_splitmix64(guint64 *state) {
  guint64 z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Uniform double in (0, 1). */
static inline double lmwb_rng_uniform(guint64 *state) {
  return ((lmwb_splitmix64(state) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
