/* libFuzzer target: any byte string as a .npy file image. */
#include <glib.h>
#include <stdint.h>
#include <string.h>

#include "app/formats/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *copy = g_malloc(size ? size : 1);
  if (size) memcpy(copy, data, size);
  int64_t shape[LMWB_NPY_MAX_DIMS];
  int ndim = -1;
  GError *err = NULL;
  float *v = lmwb_npy_parse_f32(copy, size, "fuzz.npy", shape, &ndim, &err);
  if (v) {
    if (ndim < 0 || ndim > LMWB_NPY_MAX_DIMS) __builtin_trap();
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    volatile float sink = 0;
    for (int64_t i = 0; i < n; i++) sink += v[i]; /* every element must be readable */
    (void)sink;
    g_free(v);
  } else {
    if (!err) __builtin_trap();
    g_error_free(err);
  }
  g_free(copy);
  return 0;
}
