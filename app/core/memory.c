#include "app/core/memory.h"
#include "app/core/errors.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t parse_size(const char *s) {
  char *end = NULL;
  double v = g_ascii_strtod(s, &end);
  if (end == s || v < 0) return 0;
  switch (end ? *end : 0) {
    case 'k': case 'K': v *= 1024.0; break;
    case 'm': case 'M': v *= 1024.0 * 1024.0; break;
    case 'g': case 'G': v *= 1024.0 * 1024.0 * 1024.0; break;
    default: break;
  }
  return (uint64_t)v;
}

uint64_t lmwb_memory_available(void) {
  const char *env = g_getenv("LMWB_MEMORY_LIMIT");
  if (env && *env) return parse_size(env);
  FILE *f = fopen("/proc/meminfo", "r");
  if (f) {
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f)) {
      if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    }
    fclose(f);
    if (kb) return (uint64_t)kb * 1024u;
  }
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) return (uint64_t)pages * (uint64_t)page;
  return UINT64_MAX;
}

gboolean lmwb_memory_check(uint64_t bytes, const char *what, GError **error) {
  uint64_t avail = lmwb_memory_available();
  if (bytes > avail) {
    lmwb_input_error(error, "%s needs %.2f GiB of memory but only %.2f GiB is available; "
                     "refusing before allocating", what, bytes / 1073741824.0, avail / 1073741824.0);
    return FALSE;
  }
  return TRUE;
}

gboolean lmwb_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
  if (a != 0 && b > UINT64_MAX / a) return FALSE;
  *out = a * b;
  return TRUE;
}
