/* Tokenizer tests: committed fixtures (expected ids from make_fixtures.py), GPT-2's real files against
 * the original OpenAI encoder.py algorithm (gpt2_reference.py), the hand-written regex splitters
 * against Python's `regex` module, and malformed input. */
#include "app/core/errors.h"
#include "app/formats/tokenizer.h"
#include "app/formats/tokenizer_internal.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <string.h>

static const char *const diverse_texts[] = {
    "Hello world",
    "I'm sure they'll say we've done what's right, isn't it? You'd think so; I'D SAY IT'S FINE.",
    "Numbers: 1, 22, 333, 4444, 55555, 3.14159, 1e-10, 0x1F, 2024-01-01 12:30:45",
    "Whitespace   runs    and\ttabs\t\tand\nnewlines\n\n\nand trailing   ",
    "   leading spaces",
    "\r\nWindows\r\nlines\r\n\r\n",
    "Accents: café, naïve, résumé, Ångström, Øresund, Straße, İstanbul, ſtraight 'ſ",
    "CJK: 日本語のテキスト、中文文本，한국어 텍스트。",
    "Emoji: 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ ✨",
    "Combining: e\u0301 a\u0308 n\u0303 \u0301\u0301x",
    "RTL: עברית שלום, العربية مرحبا بالعالم",
    "Symbols: $100 €50 ¥30 £20 © ® ™ § ¶ † ‡ • … ‰ ′ ″ ‹ › « » ← → ↑ ↓",
    "Math: ∀x∈ℝ, x²≥0; ∑ᵢ aᵢ = ∫f(x)dx; ½ ¼ ¾ Ⅻ ①②",
    "Code: def f(x):\n    return x**2  # square\n\tif (a && b || !c) { y[i] += 1; }",
    "URLs: https://example.com/path?q=1&r=2#frag mail@example.org",
    "Mixed\u00a0nbsp\u2003em\u3000ideo\u2028line\u2029para\xC2\x85nel end",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'x ''s",
    "a  b   c    d\n e \n\n f\t \tg",
    "!!! ??? ... --- *** ((())) [[]]",
    "",
    " ",
    "\n",
    "x",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX.",
};

static char *fixture_path(const char *rel) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  return g_build_filename(root ? root : ".", "tests", "fixtures", "tokenizers", rel, NULL);
}

static char *shared_path(const char *rel) {
  const char *shared = g_getenv("LMWB_SHARED");
  return shared ? g_build_filename(shared, rel, NULL) : NULL;
}

/* Runs /usr/bin/python3 with args; returns stdout or NULL (exit status in *status). */
static char *run_python(const char *const *args, int *status) {
  GPtrArray *argv = g_ptr_array_new();
  g_ptr_array_add(argv, "/usr/bin/python3");
  for (int i = 0; args[i]; i++) g_ptr_array_add(argv, (gpointer)args[i]);
  g_ptr_array_add(argv, NULL);
  char *out = NULL;
  int wait = 0;
  GError *err = NULL;
  gboolean ok = g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, &out, NULL,
                             &wait, &err);
  g_ptr_array_free(argv, TRUE);
  if (!ok) {
    g_clear_error(&err);
    *status = -1;
    return NULL;
  }
  *status = WIFEXITED(wait) ? WEXITSTATUS(wait) : -1;
  if (*status != 0) {
    g_free(out);
    return NULL;
  }
  return out;
}

static char *write_texts_json(GPtrArray *texts) {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_array(b);
  for (guint i = 0; i < texts->len; i++) json_builder_add_string_value(b, texts->pdata[i]);
  json_builder_end_array(b);
  JsonGenerator *g = json_generator_new();
  JsonNode *root = json_builder_get_root(b);
  json_generator_set_root(g, root);
  char *path = NULL;
  int fd = g_file_open_tmp("lmwb-tok-XXXXXX.json", &path, NULL);
  g_assert_cmpint(fd, >=, 0);
  close(fd);
  g_assert_true(json_generator_to_file(g, path, NULL));
  json_node_unref(root);
  g_object_unref(g);
  g_object_unref(b);
  return path;
}

static GPtrArray *text_set(gboolean with_brown) {
  GPtrArray *texts = g_ptr_array_new_with_free_func(g_free);
  for (gsize i = 0; i < G_N_ELEMENTS(diverse_texts); i++) g_ptr_array_add(texts, g_strdup(diverse_texts[i]));
  if (with_brown) {
    char *brown = shared_path("data/brown/brown.txt");
    char *data = NULL;
    if (brown && g_file_get_contents(brown, &data, NULL, NULL)) {
      /* Every 7th line of the first ~14000, in chunks of 3 lines so newlines are inside texts. */
      char **lines = g_strsplit(data, "\n", 14001);
      for (int i = 0; lines[i] && lines[i + 1] && lines[i + 2] && i < 14000; i += 21)
        g_ptr_array_add(texts, g_strjoin("\n", lines[i], lines[i + 1], lines[i + 2], NULL));
      g_strfreev(lines);
      g_free(data);
    }
    g_free(brown);
  }
  return texts;
}

/* ---------------------------------------------------------------- fixtures */

static LmwbTokenizer *load_fixture(const char *name) {
  char *dir = fixture_path(name);
  GError *err = NULL;
  LmwbTokenizer *t = lmwb_tokenizer_load_dir(dir, &err);
  g_assert_no_error(err);
  g_assert_nonnull(t);
  g_free(dir);
  return t;
}

static void test_fixture_cases(void) {
  char *path = fixture_path("cases.json");
  JsonParser *p = json_parser_new();
  GError *err = NULL;
  g_assert_true(json_parser_load_from_file(p, path, &err));
  JsonArray *cases = json_node_get_array(json_parser_get_root(p));
  g_assert_cmpuint(json_array_get_length(cases), >=, 20);
  for (guint i = 0; i < json_array_get_length(cases); i++) {
    JsonObject *c = json_array_get_object_element(cases, i);
    const char *fx = json_object_get_string_member(c, "fixture");
    const char *text = json_object_get_string_member(c, "text");
    gboolean sp = json_object_get_boolean_member(c, "add_special");
    JsonArray *want = json_object_get_array_member(c, "ids");
    LmwbTokenizer *t = load_fixture(fx);
    size_t n = 0;
    int32_t *ids = lmwb_tokenizer_encode(t, text, strlen(text), sp, &n, &err);
    g_assert_no_error(err);
    GString *got = g_string_new(NULL), *exp = g_string_new(NULL);
    for (size_t k = 0; k < n; k++) g_string_append_printf(got, "%d ", ids[k]);
    for (guint k = 0; k < json_array_get_length(want); k++)
      g_string_append_printf(exp, "%d ", (int)json_array_get_int_element(want, k));
    if (strcmp(got->str, exp->str) != 0) g_test_message("%s: %s", fx, text);
    g_assert_cmpstr(got->str, ==, exp->str);
    char *dec = lmwb_tokenizer_decode(t, ids, n, FALSE, NULL);
    g_assert_cmpstr(dec, ==, json_object_get_string_member(c, "decoded"));
    g_free(dec);
    g_string_free(got, TRUE);
    g_string_free(exp, TRUE);
    g_free(ids);
    lmwb_tokenizer_free(t);
  }
  g_object_unref(p);
  g_free(path);
}

static void test_fixture_properties(void) {
  GError *err = NULL;
  LmwbTokenizer *g = load_fixture("bytelevel_gpt2");
  g_assert_cmpstr(lmwb_tokenizer_kind(g), ==, "bpe-bytelevel-gpt2");
  int32_t eot = lmwb_tokenizer_token_id(g, "<|endoftext|>");
  g_assert_cmpint(eot, ==, lmwb_tokenizer_vocab_size(g) - 2);
  g_assert_cmpint(lmwb_tokenizer_eos(g), ==, eot);
  g_assert_true(lmwb_tokenizer_is_special(g, eot));
  /* Hand-derived: "Ġdog" comes from merges o+g, d+og, Ġ+dog. */
  int32_t dog = lmwb_tokenizer_token_id(g, "Ġdog");
  g_assert_cmpint(dog, >=, 256);
  size_t n;
  int32_t *ids = lmwb_tokenizer_encode(g, " dog", 4, FALSE, &n, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(n, ==, 1);
  g_assert_cmpint(ids[0], ==, dog);
  g_free(ids);
  char *tt = lmwb_tokenizer_token_text(g, dog);
  g_assert_cmpstr(tt, ==, " dog");
  g_free(tt);
  g_assert_cmpstr(lmwb_tokenizer_token(g, dog), ==, "Ġdog");
  g_assert_null(lmwb_tokenizer_token(g, 100000));
  g_assert_null(lmwb_tokenizer_token(g, -1));
  /* A lone UTF-8 lead byte token shows as \xNN. */
  tt = lmwb_tokenizer_token_text(g, lmwb_tokenizer_token_id(g, "æ")); /* byte 0xE6 */
  g_assert_cmpstr(tt, ==, "\\xE6");
  g_free(tt);
  /* decode is lossy like Rust's from_utf8_lossy: a truncated sequence (E6 97 of 日) is one U+FFFD,
   * a stray continuation byte another; skip_special drops <|endoftext|> from between them. */
  int32_t half[5] = {230, eot, 151, 104, 151};
  char *d = lmwb_tokenizer_decode(g, half, 5, TRUE, NULL);
  g_assert_cmpstr(d, ==, "\xEF\xBF\xBDh\xEF\xBF\xBD");
  g_free(d);
  lmwb_tokenizer_free(g);

  LmwbTokenizer *l = load_fixture("llama3");
  g_assert_cmpstr(lmwb_tokenizer_kind(l), ==, "bpe-bytelevel-llama3");
  g_assert_cmpint(lmwb_tokenizer_bos(l), ==, lmwb_tokenizer_token_id(l, "<|begin_of_text|>"));
  g_assert_cmpint(lmwb_tokenizer_eos(l), ==, lmwb_tokenizer_token_id(l, "<|end_of_text|>"));
  /* ignore_merges: "hello" is a vocabulary entry no merge sequence reaches. */
  ids = lmwb_tokenizer_encode(l, "hello", 5, TRUE, &n, &err);
  g_assert_cmpuint(n, ==, 2);
  g_assert_cmpint(ids[0], ==, lmwb_tokenizer_bos(l));
  g_assert_cmpint(ids[1], ==, lmwb_tokenizer_token_id(l, "hello"));
  g_free(ids);
  lmwb_tokenizer_free(l);

  LmwbTokenizer *s = load_fixture("sentencepiece");
  g_assert_cmpstr(lmwb_tokenizer_kind(s), ==, "bpe-sentencepiece");
  g_assert_cmpint(lmwb_tokenizer_bos(s), ==, 1);
  g_assert_cmpint(lmwb_tokenizer_eos(s), ==, 2);
  tt = lmwb_tokenizer_token_text(s, lmwb_tokenizer_token_id(s, "▁hello"));
  g_assert_cmpstr(tt, ==, " hello");
  g_free(tt);
  tt = lmwb_tokenizer_token_text(s, lmwb_tokenizer_token_id(s, "<0x0A>"));
  g_assert_cmpstr(tt, ==, "\n");
  g_free(tt);
  /* skip_special + Strip: "<s> hello world" -> "hello world" */
  ids = lmwb_tokenizer_encode(s, "hello world", 11, TRUE, &n, &err);
  g_assert_cmpint(ids[0], ==, 1);
  d = lmwb_tokenizer_decode(s, ids, n, TRUE, NULL);
  g_assert_cmpstr(d, ==, "hello world");
  g_free(d);
  g_free(ids);
  /* Byte-fallback bytes that are not valid UTF-8 decode to one U+FFFD each. */
  int32_t bytes[3] = {lmwb_tokenizer_token_id(s, "<0xE6>"), lmwb_tokenizer_token_id(s, "<0x97>"),
                      lmwb_tokenizer_token_id(s, "▁hello")};
  d = lmwb_tokenizer_decode(s, bytes, 3, TRUE, NULL);
  g_assert_cmpstr(d, ==, "\xEF\xBF\xBD\xEF\xBF\xBD hello");
  g_free(d);
  lmwb_tokenizer_free(s);

  LmwbTokenizer *m = load_fixture("metaspace");
  g_assert_cmpstr(lmwb_tokenizer_kind(m), ==, "bpe-sentencepiece");
  lmwb_tokenizer_free(m);
}

/* ---------------------------------------------------------------- GPT-2 real files */

static void test_gpt2_reference(void) {
  char *vocab = shared_path("data/gpt2-tokenizer/vocab.json");
  char *merges = shared_path("data/gpt2-tokenizer/merges.txt");
  if (!vocab || !g_file_test(vocab, G_FILE_TEST_EXISTS) || !g_file_test(merges, G_FILE_TEST_EXISTS)) {
    g_test_skip("GPT-2 tokenizer files not found in $LMWB_SHARED/data/gpt2-tokenizer");
    g_free(vocab);
    g_free(merges);
    return;
  }
  GError *err = NULL;
  LmwbTokenizer *t = lmwb_tokenizer_load_gpt2_pair(vocab, merges, &err);
  g_assert_no_error(err);
  g_assert_cmpstr(lmwb_tokenizer_kind(t), ==, "bpe-bytelevel-legacy-pair");
  g_assert_cmpint(lmwb_tokenizer_vocab_size(t), ==, 50257);
  g_assert_cmpint(lmwb_tokenizer_eos(t), ==, 50256);
  g_assert_cmpint(lmwb_tokenizer_bos(t), ==, 50256);
  g_assert_cmpint(lmwb_tokenizer_token_id(t, "Ġdog"), ==, 3290);
  char *tt = lmwb_tokenizer_token_text(t, 3290);
  g_assert_cmpstr(tt, ==, " dog");
  g_free(tt);
  /* Well-known ids: "Hello world" = 15496 995; <|endoftext|> is kept whole. */
  size_t n;
  int32_t *ids = lmwb_tokenizer_encode(t, "Hello world<|endoftext|>", 24, FALSE, &n, &err);
  g_assert_cmpuint(n, ==, 3);
  g_assert_cmpint(ids[0], ==, 15496);
  g_assert_cmpint(ids[1], ==, 995);
  g_assert_cmpint(ids[2], ==, 50256);
  g_free(ids);

  GPtrArray *texts = text_set(TRUE);
  g_assert_cmpuint(texts->len, >, G_N_ELEMENTS(diverse_texts));
  /* decode(encode(x)) == x for everything, reference or not. */
  for (guint i = 0; i < texts->len; i++) {
    const char *x = texts->pdata[i];
    ids = lmwb_tokenizer_encode(t, x, strlen(x), FALSE, &n, &err);
    g_assert_no_error(err);
    size_t dl;
    char *d = lmwb_tokenizer_decode(t, ids, n, FALSE, &dl);
    g_assert_cmpstr(d, ==, x);
    g_free(d);
    g_free(ids);
  }
  char *tj = write_texts_json(texts);
  char *script = fixture_path("gpt2_reference.py");
  int status;
  const char *args[] = {script, vocab, merges, tj, NULL};
  char *out = run_python(args, &status);
  if (!out) {
    g_test_skip("python3 with the regex module is not available (apt-get install python3-regex)");
  } else {
    JsonParser *p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, out, -1, NULL));
    JsonArray *all = json_node_get_array(json_parser_get_root(p));
    g_assert_cmpuint(json_array_get_length(all), ==, texts->len);
    size_t total = 0;
    for (guint i = 0; i < texts->len; i++) {
      const char *x = texts->pdata[i];
      ids = lmwb_tokenizer_encode(t, x, strlen(x), FALSE, &n, &err);
      JsonArray *want = json_array_get_array_element(all, i);
      if (n != json_array_get_length(want)) g_test_message("text %u: %s", i, x);
      g_assert_cmpuint(n, ==, json_array_get_length(want));
      for (size_t k = 0; k < n; k++) {
        if (ids[k] != (int32_t)json_array_get_int_element(want, (guint)k)) g_test_message("text %u: %s", i, x);
        g_assert_cmpint(ids[k], ==, (int32_t)json_array_get_int_element(want, (guint)k));
      }
      total += n;
      g_free(ids);
    }
    g_test_message("%u texts, %zu tokens identical to the OpenAI reference", texts->len, total);
    g_object_unref(p);
    g_free(out);
  }
  g_unlink(tj);
  g_free(tj);
  g_free(script);
  g_ptr_array_free(texts, TRUE);

  /* Speed: ~1 MB of English. */
  char *brown = shared_path("data/brown/brown.txt");
  char *data = NULL;
  gsize len = 0;
  if (g_file_get_contents(brown, &data, &len, NULL)) {
    gsize mb = MIN(len, (gsize)1 << 20);
    while (mb > 0 && ((unsigned char)data[mb] & 0xC0) == 0x80) mb--;
    gint64 t0 = g_get_monotonic_time();
    ids = lmwb_tokenizer_encode(t, data, mb, FALSE, &n, &err);
    double secs = (g_get_monotonic_time() - t0) / 1e6;
    g_assert_no_error(err);
    g_test_message("encoded %zu bytes into %zu tokens in %.3f s", (size_t)mb, n, secs);
    g_assert_cmpfloat(secs, <, 5.0); /* well under 1 s in a release build; loose for sanitizer builds */
    char *d = lmwb_tokenizer_decode(t, ids, n, FALSE, NULL);
    g_assert_true(strlen(d) == mb && memcmp(d, data, mb) == 0);
    g_free(d);
    g_free(ids);
    g_free(data);
  }
  g_free(brown);
  lmwb_tokenizer_free(t);
  g_free(vocab);
  g_free(merges);
}

/* ---------------------------------------------------------------- splitters vs regex */

typedef struct {
  GString *s;
  const char *text;
} Collect;

static void collect(const char *text, size_t start, size_t end, void *user) {
  Collect *c = user;
  g_string_append_len(c->s, text + start, (gssize)(end - start));
  g_string_append_c(c->s, '\x01');
}

static void test_splitters(void) {
  GPtrArray *texts = text_set(FALSE);
  /* extra corner cases for the Llama-3 pattern */
  const char *extra[] = {"x\n\n \t y", "  \n  ", "a'S b'Ll c'vE 'ſ", "!!\r\n\r\nz", "1234567890 12",
                         "\u0301abc", " \u0301", "\t\tx", "a\u00a0\u00a0b", "x \n"};
  for (gsize i = 0; i < G_N_ELEMENTS(extra); i++) g_ptr_array_add(texts, g_strdup(extra[i]));
  char *tj = write_texts_json(texts);
  char *script = fixture_path("split_reference.py");
  int status;
  const char *args[] = {script, tj, NULL};
  char *out = run_python(args, &status);
  if (!out) {
    g_test_skip("python3 with the regex module is not available (apt-get install python3-regex)");
  } else {
    JsonParser *p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, out, -1, NULL));
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    const char *names[] = {"gpt2", "llama3", "qwen2"};
    LmwbSplitKind kinds[] = {LMWB_SPLIT_GPT2, LMWB_SPLIT_LLAMA3, LMWB_SPLIT_QWEN2};
    for (int k = 0; k < 3; k++) {
      JsonArray *per = json_object_get_array_member(o, names[k]);
      for (guint i = 0; i < texts->len; i++) {
        JsonArray *want = json_array_get_array_element(per, i);
        GString *exp = g_string_new(NULL);
        for (guint j = 0; j < json_array_get_length(want); j++) {
          g_string_append(exp, json_array_get_string_element(want, j));
          g_string_append_c(exp, '\x01');
        }
        Collect c = {g_string_new(NULL), texts->pdata[i]};
        lmwb_tok_split(kinds[k], texts->pdata[i], strlen(texts->pdata[i]), collect, &c);
        if (strcmp(c.s->str, exp->str) != 0) g_test_message("%s split differs on: %s", names[k], (char *)texts->pdata[i]);
        g_assert_cmpstr(c.s->str, ==, exp->str);
        g_string_free(c.s, TRUE);
        g_string_free(exp, TRUE);
      }
    }
    g_object_unref(p);
    g_free(out);
  }
  g_unlink(tj);
  g_free(tj);
  g_free(script);
  g_ptr_array_free(texts, TRUE);
}

/* ---------------------------------------------------------------- bad input */

static void expect_load_error(const char *json, const char *needle) {
  GError *err = NULL;
  LmwbTokenizer *t = lmwb_tokenizer_load_json_data(json, strlen(json), &err);
  g_assert_null(t);
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  if (!strstr(err->message, needle)) g_test_message("message: %s", err->message);
  g_assert_nonnull(strstr(err->message, needle));
  g_error_free(err);
}

/* Text with no token in the vocabulary (no unk token, no byte fallback: HF drops it) encodes to an
 * empty array, which is not an error: NULL is only returned with an error set. */
static void test_no_tokens(void) {
  const char *json = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"1\": 0, \"2\": 1}, \"merges\": []}}";
  GError *err = NULL;
  LmwbTokenizer *t = lmwb_tokenizer_load_json_data(json, strlen(json), &err);
  g_assert_no_error(err);
  size_t n = 99;
  int32_t *ids = lmwb_tokenizer_encode(t, "abc", 3, TRUE, &n, &err);
  g_assert_no_error(err);
  g_assert_nonnull(ids);
  g_assert_cmpuint(n, ==, 0);
  g_free(ids);
  ids = lmwb_tokenizer_encode(t, "", 0, TRUE, &n, &err);
  g_assert_no_error(err);
  g_assert_nonnull(ids);
  g_assert_cmpuint(n, ==, 0);
  g_free(ids);
  ids = lmwb_tokenizer_encode(t, "a2b1", 4, TRUE, &n, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(n, ==, 2);
  g_assert_cmpint(ids[0], ==, 1);
  g_assert_cmpint(ids[1], ==, 0);
  g_free(ids);
  lmwb_tokenizer_free(t);
}

static void test_bad_input(void) {
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0", "not valid JSON");
  expect_load_error("[1, 2]", "not a JSON object");
  expect_load_error("{}", "'model'");
  expect_load_error("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", "model.type");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": [\"a\"]}}", "model.vocab");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"0\"}}}", "model.vocab.a");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1.5}}}", "model.vocab.a");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}}}", "out of range");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 99999999999}}}", "out of range");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}}}", "duplicate id");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a c\"]}}",
                    "model.merges[0]");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [[\"a\", \"b\"]]}}",
                    "'ab' is not in the vocabulary");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a\"]}}", "exactly one space");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\"]]}}", "model.merges[0]");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": {}}}", "model.merges");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"unk_token\": \"<unk>\"}}",
                    "model.unk_token");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"dropout\": 0.1}}", "model.dropout");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"pre_tokenizer\": {\"type\": \"Whitespace\"}}",
                    "pre_tokenizer.type");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"pre_tokenizer\": {\"type\": \"Sequence\", "
                    "\"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\d+\"}}]}}",
                    "pre_tokenizer.pretokenizers[0].pattern");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"normalizer\": {\"type\": \"BertNormalizer\"}}",
                    "normalizer.type");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"decoder\": {\"type\": \"WordPiece\"}}",
                    "decoder.type");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"post_processor\": {\"type\": \"Nope\"}}",
                    "post_processor.type");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"added_tokens\": [{\"id\": \"x\", \"content\": \"a\"}]}",
                    "added_tokens[0].id");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"added_tokens\": [{\"id\": 1}]}",
                    "added_tokens[0].content");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"post_processor\": {\"type\": "
                    "\"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\"}}, {\"Sequence\": "
                    "{\"id\": \"A\"}}], \"special_tokens\": {}}}",
                    "special_tokens");

  /* Named file in the message. */
  GError *err = NULL;
  g_assert_null(lmwb_tokenizer_load_json("/nonexistent/tokenizer.json", &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_assert_nonnull(strstr(err->message, "/nonexistent/tokenizer.json"));
  g_clear_error(&err);
  g_assert_null(lmwb_tokenizer_load_dir("/nonexistent", &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);

  /* Invalid UTF-8 text. */
  LmwbTokenizer *t = load_fixture("bytelevel_gpt2");
  size_t n = 99;
  const char bad[] = "ok \xC3\x28 no";
  g_assert_null(lmwb_tokenizer_encode(t, bad, sizeof bad - 1, FALSE, &n, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_assert_nonnull(strstr(err->message, "UTF-8"));
  g_assert_cmpuint(n, ==, 0);
  g_clear_error(&err);
  const char surrogate[] = "\xED\xA0\x80";
  g_assert_null(lmwb_tokenizer_encode(t, surrogate, 3, FALSE, &n, &err));
  g_clear_error(&err);
  /* Embedded NUL is valid text and round-trips. */
  const char nul[] = "a\0b";
  int32_t *ids = lmwb_tokenizer_encode(t, nul, 3, FALSE, &n, &err);
  g_assert_no_error(err);
  size_t dl;
  char *d = lmwb_tokenizer_decode(t, ids, n, FALSE, &dl);
  g_assert_cmpuint(dl, ==, 3);
  g_assert_true(memcmp(d, nul, 3) == 0);
  g_free(d);
  g_free(ids);
  /* Out-of-range ids are skipped by decode, not trusted. */
  int32_t wild[3] = {-5, 104, 1 << 30};
  d = lmwb_tokenizer_decode(t, wild, 3, FALSE, NULL);
  g_assert_cmpstr(d, ==, "h");
  g_free(d);
  lmwb_tokenizer_free(t);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/tokenizer/fixtures/cases", test_fixture_cases);
  g_test_add_func("/tokenizer/fixtures/properties", test_fixture_properties);
  g_test_add_func("/tokenizer/gpt2/reference", test_gpt2_reference);
  g_test_add_func("/tokenizer/splitters", test_splitters);
  g_test_add_func("/tokenizer/bad-input", test_bad_input);
  g_test_add_func("/tokenizer/no-tokens", test_no_tokens);
  return g_test_run();
}
