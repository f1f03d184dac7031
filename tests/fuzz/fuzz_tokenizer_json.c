/* libFuzzer target: any byte string as tokenizer.json text; a loaded tokenizer must also encode
 * and decode a fixed text without crashing. */
#include <glib.h>
#include <stdint.h>
#include <string.h>

#include "app/formats/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *copy = g_malloc(size ? size : 1);
  if (size) memcpy(copy, data, size);
  GError *err = NULL;
  LmwbTokenizer *t = lmwb_tokenizer_load_json_data(copy, size, &err);
  if (t) {
    static const char text[] = "Hello world, it's 2024!\n  héllo <|endoftext|> 日本";
    size_t n = 0;
    int32_t *ids = lmwb_tokenizer_encode(t, text, sizeof text - 1, TRUE, &n, &err);
    if (ids) {
      size_t len = 0;
      char *s = lmwb_tokenizer_decode(t, ids, n, FALSE, &len);
      g_free(s);
      g_free(ids);
    } else {
      g_clear_error(&err);
    }
    lmwb_tokenizer_free(t);
  } else {
    if (!err) __builtin_trap();
    g_error_free(err);
  }
  g_free(copy);
  return 0;
}
