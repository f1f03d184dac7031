/* libFuzzer target: any byte string as config.json. A refusal must say why; an accepted config
 * must pass validation again and give a layout size without overflow (UBSan checks the
 * arithmetic), and its config.json text must load again. */
#include <glib.h>
#include <stdint.h>
#include <string.h>

#include "app/engine/model.h"
#include "app/formats/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *copy = g_malloc(size ? size : 1); /* exactly `size` bytes, so ASan sees overreads */
  if (size) memcpy(copy, data, size);
  LmwbConfig cfg;
  GError *err = NULL;
  if (lmwb_config_load_data(copy, size, "fuzz/config.json", &cfg, &err)) {
    if (!lmwb_config_validate(&cfg, NULL)) __builtin_trap();
    volatile size_t n = lmwb_model_layout_size(&cfg);
    (void)n;
    char *text = lmwb_config_to_json(&cfg, NULL);
    LmwbConfig again;
    if (!lmwb_config_load_data(text, strlen(text), "fuzz/round-trip", &again, &err)) g_clear_error(&err);
    g_free(text);
  } else {
    if (!err || !err->message[0]) __builtin_trap(); /* a refusal must say why */
    g_error_free(err);
  }
  g_free(copy);
  return 0;
}
