/* Hostile JSON and configs: the nesting and number pre-check every JSON loader runs before
 * json-glib (app/formats/json_input.h), duplicated keys, and config.json sizes whose products
 * would overflow int. Every case is an input error, never a crash (the ASan+UBSan build runs
 * this too). */
#include <glib.h>
#include <string.h>

#include "app/core/errors.h"
#include "app/formats/config.h"
#include "app/formats/json_input.h"
#include "app/formats/safetensors.h"
#include "app/formats/tokenizer.h"
#include "formats_test_util.h"

/* n times `open`, then `mid`, then n times `close`. */
static char *nest(const char *open, int n, const char *mid, const char *close) {
  GString *s = g_string_new(NULL);
  for (int i = 0; i < n; i++) g_string_append(s, open);
  g_string_append(s, mid);
  for (int i = 0; i < n; i++) g_string_append(s, close);
  return g_string_free(s, FALSE);
}

static void expect_refused(const char *doc, const char *frag) {
  GError *err = NULL;
  g_assert_false(lmwb_json_check(doc, strlen(doc), "doc.json", &err));
  tu_assert_input_error(err, "doc.json", frag);
  g_clear_error(&err);
  g_assert_null(lmwb_json_parse(doc, strlen(doc), "doc.json", &err));
  tu_assert_input_error(err, "doc.json", frag);
  g_clear_error(&err);
}

static void expect_ok(const char *doc) {
  GError *err = NULL;
  JsonNode *n = lmwb_json_parse(doc, strlen(doc), "doc.json", &err);
  g_assert_no_error(err);
  g_assert_nonnull(n);
  json_node_unref(n);
}

static void test_depth(void) {
  char *ok = nest("[", LMWB_JSON_MAX_DEPTH, "", "]");
  expect_ok(ok);
  char *over = nest("[", LMWB_JSON_MAX_DEPTH + 1, "", "]");
  expect_refused(over, "nested deeper");
  /* The inputs that crashed json-glib: 100,000 levels, open or closed, arrays or objects. */
  char *deep = nest("[", 100000, "", "");
  expect_refused(deep, "nested deeper");
  char *closed = nest("[", 100000, "", "]");
  expect_refused(closed, "nested deeper");
  char *deep_obj = nest("{\"a\":", 100000, "1", "}");
  expect_refused(deep_obj, "line 1, column 1281"); /* the 257th '{' */
  /* Brackets inside strings do not nest. */
  char *brackets = nest("[{", 1000, "", "");
  char *in_string = g_strconcat("{\"k\":\"", brackets, "\\\"\"}", NULL);
  expect_ok(in_string);
  g_free(ok); g_free(over); g_free(deep); g_free(closed); g_free(deep_obj); g_free(brackets); g_free(in_string);
}

static void test_numbers(void) {
  expect_ok("[9223372036854775807, -9223372036854775808, 0, -0, 1.5e300, 1e-400, 000000000000000000000000007]");
  expect_refused("[9223372036854775808]", "64 bits");
  expect_refused("[-9223372036854775809]", "64 bits");
  expect_refused("{\"shape\": [123456789012345678901234567890]}", "64 bits"); /* json-glib makes it -1 */
  expect_refused("[1e400]", "too large");
  expect_refused("[-1.7e309]", "too large");
}

static void test_syntax(void) {
  expect_ok("{\"a\": true, \"b\": false, \"c\": null, \"d\": \"\\u00e9\\\"\"}");
  expect_refused("[NaN]", "unexpected");
  expect_refused("[nan]", "unexpected word");
  expect_refused("[Infinity]", "unexpected");
  expect_refused("[1] // comment", "unexpected");
  expect_refused("[0x10]", "unexpected word");
  expect_refused("]", "closing bracket");
  expect_refused("[\"open", "not closed");
  expect_refused("", "empty");
  expect_refused("[\"\xff\"]", "UTF-8");
  expect_refused("[1,\n 2,\n\"\0\"]", "line 3"); /* strlen stops at the NUL: an unclosed string */
  GError *err = NULL;
  g_assert_false(lmwb_json_check("[\"a\0b\"]", 7, "nul.json", &err));
  tu_assert_input_error(err, "nul.json", "NUL");
  g_clear_error(&err);
}

static void test_duplicate_keys(void) {
  const char *doc = "{\"a\": 1, \"b\": {\"a\": 2, \"a\": 3}, \"x\": \"a\"}";
  g_assert_null(lmwb_json_duplicate_top_key(doc, strlen(doc)));
  doc = "{\"w\": {\"k\": 1}, \"v\": [\"w\"], \"w\": 2}";
  char *d = lmwb_json_duplicate_top_key(doc, strlen(doc));
  g_assert_cmpstr(d, ==, "w");
  g_free(d);
  doc = "{\"caf\\u00e9\": 1, \"caf\xc3\xa9\": 2}"; /* the same key, escaped once */
  d = lmwb_json_duplicate_top_key(doc, strlen(doc));
  g_assert_cmpstr(d, ==, "caf\xc3\xa9");
  g_free(d);
  doc = "[\"a\", \"a\"]";
  g_assert_null(lmwb_json_duplicate_top_key(doc, strlen(doc)));
}

/* A safetensors header with a tensor listed twice, or a 30-digit dimension. */
static GByteArray *st_image(const char *header) {
  static const guint8 zeros[16];
  return tu_safetensors_image(header, zeros, sizeof zeros);
}

static void test_safetensors_header(void) {
  struct { const char *header, *frag; } cases[] = {
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", "'w' is listed twice"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[123456789012345678901234567890],\"data_offsets\":[0,16]}}", "64 bits"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,123456789012345678901234567890]}}", "64 bits"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    GByteArray *img = st_image(cases[i].header);
    GError *err = NULL;
    g_assert_null(lmwb_safetensors_open_memory(img->data, img->len, "x.safetensors", &err));
    tu_assert_input_error(err, "x.safetensors", cases[i].frag);
    g_assert_null(strstr(err->message, "negative"));
    g_clear_error(&err);
    g_byte_array_free(img, TRUE);
  }
  char *deep = nest("[", 100000, "", "");
  GByteArray *img = st_image(deep);
  GError *err = NULL;
  g_assert_null(lmwb_safetensors_open_memory(img->data, img->len, "deep.safetensors", &err));
  tu_assert_input_error(err, "deep.safetensors", "nested deeper");
  g_clear_error(&err);
  g_byte_array_free(img, TRUE);
  g_assert_null(lmwb_tokenizer_load_json_data(deep, strlen(deep), &err));
  tu_assert_input_error(err, "nested deeper");
  g_clear_error(&err);
  g_free(deep);
}

/* Sizes whose products overflow int (n_embd * 4, n_head * head_dim) or whose floats do not fit. */
static void test_config_sizes(void) {
  const char *gpt2 = "{\"model_type\":\"gpt2\",\"n_layer\":2,\"n_head\":4,\"vocab_size\":320,\"n_embd\":%s%s}";
  const char *llama = "{\"model_type\":\"llama\",\"num_hidden_layers\":2,\"hidden_size\":64,\"intermediate_size\":128,"
                      "\"vocab_size\":320,\"num_attention_heads\":%s,\"head_dim\":%s}";
  struct { const char *fmt, *a, *b, *frag; } cases[] = {
    {gpt2, "2147483647", "", "out of range"},                      /* 4 * n_embd for n_inner */
    {gpt2, "1073741824", "", "out of range"},
    {gpt2, "64", ",\"n_inner\":2147483647", "MLP size"},
    {gpt2, "64", ",\"layer_norm_epsilon\":1e300", "layer_norm_epsilon"}, /* beyond a float */
    {gpt2, "123456789012345678901234567890", "", "64 bits"},
    {llama, "256", "1048576", "heads of size"},                   /* n_head * head_dim > int */
    {llama, "4194304", "1048576", "out of range"},
    {llama, "2147483647", "2147483647", "out of range"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    char *doc = g_strdup_printf(cases[i].fmt, cases[i].a, cases[i].b);
    LmwbConfig cfg;
    GError *err = NULL;
    g_assert_false(lmwb_config_load_data(doc, strlen(doc), "c/config.json", &cfg, &err));
    tu_assert_input_error(err, "c/config.json", cases[i].frag);
    g_clear_error(&err);
    g_free(doc);
  }
}

/* No false alarms: every JSON file among the fixtures passes the pre-check. */
static void check_tree(const char *dir, int *n) {
  GDir *d = g_dir_open(dir, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name(d))) {
    char *p = g_build_filename(dir, name, NULL);
    if (g_file_test(p, G_FILE_TEST_IS_DIR)) {
      check_tree(p, n);
    } else if (g_str_has_suffix(name, ".json")) {
      char *text = NULL;
      gsize len = 0;
      g_assert_true(g_file_get_contents(p, &text, &len, NULL));
      GError *err = NULL;
      if (!lmwb_json_check(text, len, p, &err)) g_error("%s", err->message);
      (*n)++;
      g_free(text);
    }
    g_free(p);
  }
  if (d) g_dir_close(d);
}

static void test_real_files_pass(void) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  if (!root) {
    g_test_skip("LMWB_SOURCE_ROOT not set");
    return;
  }
  int n = 0;
  char *fix = g_build_filename(root, "tests", "fixtures", NULL);
  char *builtin = g_build_filename(root, "data", "models", NULL);
  check_tree(fix, &n);
  check_tree(builtin, &n);
  g_assert_cmpint(n, >, 10);
  g_free(fix);
  g_free(builtin);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/hostile/json-depth", test_depth);
  g_test_add_func("/hostile/json-numbers", test_numbers);
  g_test_add_func("/hostile/json-syntax", test_syntax);
  g_test_add_func("/hostile/json-duplicate-keys", test_duplicate_keys);
  g_test_add_func("/hostile/safetensors-header", test_safetensors_header);
  g_test_add_func("/hostile/config-sizes", test_config_sizes);
  g_test_add_func("/hostile/real-files-pass", test_real_files_pass);
  return g_test_run();
}
