/* libFuzzer target: the whole model-folder loader (lmwb_model_load: config.json, safetensors,
 * tokenizer.json, and the checks between them). The input is split at MODEL_DIR_SEPARATOR into
 * config.json, model.safetensors and tokenizer.json (missing parts: no such file), written to a
 * private folder (in /dev/shm when there is one) and loaded. A loaded model runs a forward pass
 * of two tokens and its tokenizer encodes a text; a refusal must say why. */
#include <glib.h>
#include <glib/gstdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "app/engine/model.h"
#include "app/engine/runner.h"
#include "app/formats/tokenizer.h"

#define MODEL_DIR_SEPARATOR "\n--lmwb-fuzz-file--\n"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *dir;
static const char *const names[3] = {"config.json", "model.safetensors", "tokenizer.json"};

static void remove_dir(void) {
  for (int i = 0; i < 3; i++) {
    char *path = g_build_filename(dir, names[i], NULL);
    g_unlink(path);
    g_free(path);
  }
  g_rmdir(dir);
}

static void put(int i, const uint8_t *p, size_t n, gboolean present) {
  char *path = g_build_filename(dir, names[i], NULL);
  if (present) {
    if (!g_file_set_contents(path, (const char *)p, (gssize)n, NULL)) __builtin_trap();
  } else {
    g_unlink(path);
  }
  g_free(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!dir) {
    /* Allocations of a loaded model stay small; a config may still ask for more. */
    if (!g_getenv("LMWB_MEMORY_LIMIT")) g_setenv("LMWB_MEMORY_LIMIT", "512M", TRUE);
    const char *base = g_file_test("/dev/shm", G_FILE_TEST_IS_DIR) ? "/dev/shm" : g_get_tmp_dir();
    char *tmpl = g_build_filename(base, "lmwb-fuzz-model-XXXXXX", NULL);
    dir = g_mkdtemp(tmpl);
    if (!dir) __builtin_trap();
    atexit(remove_dir);
  }
  const size_t sl = strlen(MODEL_DIR_SEPARATOR);
  const uint8_t *p = data, *end = data + size;
  for (int i = 0; i < 3; i++) {
    if (!p) {
      put(i, NULL, 0, FALSE);
      continue;
    }
    const uint8_t *sep = (size_t)(end - p) >= sl ? memmem(p, (size_t)(end - p), MODEL_DIR_SEPARATOR, sl) : NULL;
    put(i, p, sep ? (size_t)(sep - p) : (size_t)(end - p), TRUE);
    p = sep ? sep + sl : NULL;
  }
  GError *err = NULL;
  LmwbModel *m = lmwb_model_load(dir, &err);
  if (!m) {
    if (!err || !err->message[0]) __builtin_trap();
    g_error_free(err);
    return 0;
  }
  LmwbRunner *r = lmwb_runner_new(m);
  int32_t ids[2] = {0, m->cfg.vocab_size - 1};
  if (!lmwb_runner_forward(r, ids, 1, MIN(2, m->cfg.n_ctx), NULL, &err)) g_clear_error(&err);
  lmwb_runner_free(r);
  if (m->tokenizer) {
    static const char text[] = "Hello world, it's 2024! héllo";
    size_t n = 0;
    int32_t *enc = lmwb_tokenizer_encode(m->tokenizer, text, sizeof text - 1, TRUE, &n, &err);
    if (!enc) g_clear_error(&err);
    g_free(enc);
  }
  lmwb_model_unref(m);
  return 0;
}
