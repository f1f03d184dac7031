/* Choosing a backend: by name, or from LMWB_BACKEND. The CUDA backend exists only in builds made
 * with nvcc (LMWB_HAVE_CUDA) and only when a device answers at run time. */
#include "app/engine/backend.h"

#include <glib.h>
#include <stdlib.h>

#ifdef LMWB_HAVE_CUDA
/* app/engine/cuda/backend_cuda.cu: NULL when no device is usable. */
const LmwbBackend *lmwb_backend_cuda_probe(void);
#endif

const LmwbBackend *lmwb_backend_cuda(void) {
#ifdef LMWB_HAVE_CUDA
  return lmwb_backend_cuda_probe();
#else
  return NULL;
#endif
}

const LmwbBackend *lmwb_backend_get(const char *name) {
  if (!name) {
    name = g_getenv("LMWB_BACKEND");
    if (!name || !*name) name = "cpu";
  }
  if (g_ascii_strcasecmp(name, "cpu") == 0) return lmwb_backend_cpu();
  if (g_ascii_strcasecmp(name, "cuda") == 0) return lmwb_backend_cuda();
  return NULL;
}
