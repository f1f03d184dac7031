/* BPE trainer tests: train on a small committed corpus, load the result, round-trip, check that the
 * most frequent pair is the first merge, determinism, and the input errors. */
#include "app/core/errors.h"
#include "app/formats/tokenizer.h"
#include "app/train/bpe_trainer.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <string.h>

static char *corpus_path(void) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  return g_build_filename(root ? root : ".", "tests", "fixtures", "tokenizers", "train_corpus.txt", NULL);
}

static char *train(const char *corpus, int vocab, GError **error) {
  char *dir = g_dir_make_tmp("lmwb-bpe-XXXXXX", NULL);
  g_assert_nonnull(dir);
  const char *files[] = {corpus};
  LmwbBpeTrainOptions opt = {.vocab_size = vocab};
  if (!lmwb_bpe_train(files, 1, &opt, dir, NULL, error)) {
    g_rmdir(dir);
    g_free(dir);
    return NULL;
  }
  return dir;
}

static void remove_dir(char *dir) {
  char *f = g_build_filename(dir, "tokenizer.json", NULL);
  g_unlink(f);
  g_free(f);
  g_rmdir(dir);
  g_free(dir);
}

typedef struct {
  GHashTable *pairs; /* "x\1y" -> count */
  const char *text;
} PairCtx;

/* Counts adjacent byte pairs inside each pre-token, like the trainer's first round. */
static void count_pairs(const char *text, size_t start, size_t end, void *user) {
  PairCtx *c = user;
  for (size_t i = start; i + 1 < end; i++) {
    char key[3] = {text[i], text[i + 1], 0};
    if (!key[0] || !key[1]) continue;
    gpointer v = g_hash_table_lookup(c->pairs, key);
    g_hash_table_insert(c->pairs, g_strdup(key), GINT_TO_POINTER(GPOINTER_TO_INT(v) + 1));
  }
}

static void test_train_roundtrip(void) {
  char *corpus = corpus_path();
  GError *err = NULL;
  char *dir = train(corpus, 400, &err);
  g_assert_no_error(err);
  LmwbTokenizer *t = lmwb_tokenizer_load_dir(dir, &err);
  g_assert_no_error(err);
  g_assert_cmpstr(lmwb_tokenizer_kind(t), ==, "bpe-bytelevel-gpt2");
  g_assert_cmpint(lmwb_tokenizer_vocab_size(t), ==, 400);
  g_assert_cmpint(lmwb_tokenizer_token_id(t, "<|endoftext|>"), ==, 0);
  g_assert_true(lmwb_tokenizer_is_special(t, 0));
  g_assert_cmpint(lmwb_tokenizer_eos(t), ==, 0);
  /* " the" is frequent enough in the corpus to be learnt. */
  g_assert_cmpint(lmwb_tokenizer_token_id(t, "Ġthe"), >=, 257);

  const char *texts[] = {"The model reads the numbers.", "Unseen: Ωμέγα ∑ 🚀 \x01 \t\n\r\n  end  ",
                         "<|endoftext|>after the end", "", "mixed\u00a0spaces\u3000here", "zzzz qqqq xxxx"};
  for (gsize i = 0; i < G_N_ELEMENTS(texts); i++) {
    size_t n;
    int32_t *ids = lmwb_tokenizer_encode(t, texts[i], strlen(texts[i]), TRUE, &n, &err);
    g_assert_no_error(err);
    char *d = lmwb_tokenizer_decode(t, ids, n, FALSE, NULL);
    g_assert_cmpstr(d, ==, texts[i]);
    g_free(d);
    g_free(ids);
  }
  /* Merges compress: the corpus needs far fewer tokens than bytes. */
  char *data;
  gsize len;
  g_assert_true(g_file_get_contents(corpus, &data, &len, NULL));
  size_t n;
  int32_t *ids = lmwb_tokenizer_encode(t, data, len, FALSE, &n, &err);
  g_assert_cmpuint(n, <, len / 2);
  g_free(ids);

  /* First merge = the most frequent byte pair within pre-tokens (ties: smallest ids). */
  PairCtx c = {g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL), data};
  lmwb_tokenizer_split_gpt2(data, len, count_pairs, &c);
  int best = 0;
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, c.pairs);
  while (g_hash_table_iter_next(&it, &k, &v)) best = MAX(best, GPOINTER_TO_INT(v));
  char *path = g_build_filename(dir, "tokenizer.json", NULL);
  JsonParser *p = json_parser_new();
  g_assert_true(json_parser_load_from_file(p, path, NULL));
  JsonObject *model = json_object_get_object_member(json_node_get_object(json_parser_get_root(p)), "model");
  JsonArray *merges = json_object_get_array_member(model, "merges");
  g_assert_cmpuint(json_array_get_length(merges), ==, 400 - 257);
  JsonArray *first = json_array_get_array_element(merges, 0);
  /* map the byte-level symbols back to bytes */
  char key[3] = {0};
  for (int s = 0; s < 2; s++) {
    const char *sym = json_array_get_string_element(first, s);
    for (int b = 0; b < 256; b++)
      if (g_utf8_get_char(sym) == lmwb_tokenizer_byte_to_unichar((uint8_t)b)) key[s] = (char)b;
  }
  g_test_message("first merge '%s' occurs %d times; max pair count %d", key,
                 GPOINTER_TO_INT(g_hash_table_lookup(c.pairs, key)), best);
  g_assert_cmpint(GPOINTER_TO_INT(g_hash_table_lookup(c.pairs, key)), ==, best);
  g_object_unref(p);
  g_hash_table_destroy(c.pairs);
  g_free(path);
  g_free(data);
  lmwb_tokenizer_free(t);
  remove_dir(dir);
  g_free(corpus);
}

static void test_train_deterministic(void) {
  char *corpus = corpus_path();
  GError *err = NULL;
  char *d1 = train(corpus, 350, &err);
  g_assert_no_error(err);
  char *d2 = train(corpus, 350, &err);
  g_assert_no_error(err);
  char *p1 = g_build_filename(d1, "tokenizer.json", NULL), *p2 = g_build_filename(d2, "tokenizer.json", NULL);
  char *a, *b;
  gsize la, lb;
  g_assert_true(g_file_get_contents(p1, &a, &la, NULL));
  g_assert_true(g_file_get_contents(p2, &b, &lb, NULL));
  g_assert_cmpuint(la, ==, lb);
  g_assert_true(memcmp(a, b, la) == 0);
  g_free(a);
  g_free(b);
  g_free(p1);
  g_free(p2);
  remove_dir(d1);
  remove_dir(d2);
  g_free(corpus);
}

static void test_train_errors(void) {
  char *corpus = corpus_path();
  GError *err = NULL;
  char *dir = g_dir_make_tmp("lmwb-bpe-XXXXXX", NULL);
  LmwbBpeTrainOptions opt = {.vocab_size = 300};
  const char *missing[] = {"/nonexistent/corpus.txt"};
  g_assert_false(lmwb_bpe_train(missing, 1, &opt, dir, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_assert_nonnull(strstr(err->message, "/nonexistent/corpus.txt"));
  g_clear_error(&err);

  char *empty = g_build_filename(dir, "empty.txt", NULL);
  g_assert_true(g_file_set_contents(empty, "", 0, NULL));
  const char *ef[] = {empty};
  g_assert_false(lmwb_bpe_train(ef, 1, &opt, dir, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_assert_nonnull(strstr(err->message, "empty"));
  g_clear_error(&err);

  char *binary = g_build_filename(dir, "bin.txt", NULL);
  g_assert_true(g_file_set_contents(binary, "ok\xff\xfe", 4, NULL));
  const char *bf[] = {binary};
  g_assert_false(lmwb_bpe_train(bf, 1, &opt, dir, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);

  const char *cf[] = {corpus};
  opt.vocab_size = 256; /* + 1 special does not fit */
  g_assert_false(lmwb_bpe_train(cf, 1, &opt, dir, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_assert_nonnull(strstr(err->message, "vocab-size"));
  g_clear_error(&err);

  opt.vocab_size = 100000; /* far more than this corpus can merge */
  g_assert_false(lmwb_bpe_train(cf, 1, &opt, dir, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_assert_nonnull(strstr(err->message, "more than the corpus supports"));
  g_clear_error(&err);
  char *out = g_build_filename(dir, "tokenizer.json", NULL);
  g_assert_false(g_file_test(out, G_FILE_TEST_EXISTS)); /* nothing written on failure */

  const char *dup[] = {"<a>", "<a>"};
  LmwbBpeTrainOptions o2 = {.vocab_size = 300, .special_tokens = dup, .n_special = 2};
  g_assert_false(lmwb_bpe_train(cf, 1, &o2, dir, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);

  g_unlink(empty);
  g_unlink(binary);
  g_rmdir(dir);
  g_free(out);
  g_free(empty);
  g_free(binary);
  g_free(dir);
  g_free(corpus);
}

/* Training speed on the Brown corpus (~6 MB): slow suite only. */
static void test_train_brown(void) {
  const char *shared = g_getenv("LMWB_SHARED");
  char *brown = shared ? g_build_filename(shared, "data", "brown", "brown.txt", NULL) : NULL;
  if (!brown || !g_file_test(brown, G_FILE_TEST_EXISTS)) {
    g_test_skip("Brown corpus not found in $LMWB_SHARED/data/brown");
    g_free(brown);
    return;
  }
  GError *err = NULL;
  gint64 t0 = g_get_monotonic_time();
  char *dir = train(brown, 8192, &err);
  g_assert_no_error(err);
  double secs = (g_get_monotonic_time() - t0) / 1e6;
  g_test_message("trained 8192 tokens on Brown in %.2f s", secs);
  g_assert_cmpfloat(secs, <, 60.0);
  LmwbTokenizer *t = lmwb_tokenizer_load_dir(dir, &err);
  g_assert_no_error(err);
  const char *x = "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election.";
  size_t n;
  int32_t *ids = lmwb_tokenizer_encode(t, x, strlen(x), FALSE, &n, &err);
  g_assert_cmpuint(n, <, 25);
  char *d = lmwb_tokenizer_decode(t, ids, n, FALSE, NULL);
  g_assert_cmpstr(d, ==, x);
  g_free(d);
  g_free(ids);
  lmwb_tokenizer_free(t);
  remove_dir(dir);
  g_free(brown);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/bpe-trainer/roundtrip", test_train_roundtrip);
  g_test_add_func("/bpe-trainer/deterministic", test_train_deterministic);
  g_test_add_func("/bpe-trainer/errors", test_train_errors);
  if (g_getenv("LMWB_SLOW_TESTS") || g_test_slow()) g_test_add_func("/bpe-trainer/brown-8k", test_train_brown);
  return g_test_run();
}
