/* Memory budget: refuse work that would not fit before allocating it. */
#pragma once
#include <glib.h>
#include <stdint.h>

/* Bytes of memory this process may reasonably use: MemAvailable from /proc/meminfo (or physical
 * memory), overridable with LMWB_MEMORY_LIMIT (bytes, suffixes K/M/G accepted) for tests. */
uint64_t lmwb_memory_available(void);

/* TRUE when `bytes` fits the budget; else sets an input error naming `what` and the sizes. */
gboolean lmwb_memory_check(uint64_t bytes, const char *what, GError **error);

/* a*b (and a*b*c) with overflow detection: FALSE on overflow. */
gboolean lmwb_mul_u64(uint64_t a, uint64_t b, uint64_t *out);
