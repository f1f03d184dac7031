/* libFuzzer target: any byte string as a safetensors file image. The parser must either refuse
 * it with an error or return views that stay inside the image; converting every float view then
 * touches every byte it claims (ASan catches anything outside). */
#include <glib.h>
#include <stdint.h>
#include <string.h>

#include "app/formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* A private copy of exactly `size` bytes so ASan sees reads past the end. */
  uint8_t *copy = g_malloc(size ? size : 1);
  if (size) memcpy(copy, data, size);
  GError *err = NULL;
  LmwbSafetensors *st = lmwb_safetensors_open_memory(copy, size, "fuzz.safetensors", &err);
  if (!st) {
    if (!err || err->message[0] == 0) __builtin_trap(); /* a refusal must say why */
    g_error_free(err);
    g_free(copy);
    return 0;
  }
  size_t n = lmwb_safetensors_count(st);
  for (size_t i = 0; i < n; i++) {
    const LmwbTensorView *t = lmwb_safetensors_at(st, i);
    if (lmwb_safetensors_find(st, t->name) == NULL) __builtin_trap();
    const uint8_t *p = t->data;
    if (p < copy || p + t->nbytes > copy + size) __builtin_trap();
    int64_t numel = lmwb_tensor_numel(t);
    if ((uint64_t)numel * lmwb_dtype_size(t->dtype) != t->nbytes) __builtin_trap();
    if (numel <= (1 << 20)) {
      float *dst = g_new(float, numel ? numel : 1);
      if (lmwb_tensor_to_f32(t, dst, &err) == FALSE) g_clear_error(&err);
      g_free(dst);
    }
  }
  const char **keys = lmwb_safetensors_metadata_keys(st);
  for (const char **k = keys; *k; k++)
    if (!lmwb_safetensors_metadata(st, *k)) __builtin_trap();
  g_free(keys);
  lmwb_safetensors_close(st);
  g_free(copy);
  return 0;
}
