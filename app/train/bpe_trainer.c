/* Byte-level BPE trainer: word-frequency table, pair counts with incremental updates, a lazy
 * max-heap of (count, pair) and per-pair lists of the words that contain it. */
#include "app/train/bpe_trainer.h"
#include "app/core/atomic_file.h"
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/formats/tokenizer.h"
#include "app/formats/tokenizer_internal.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <string.h>

typedef struct {
  int32_t *sym;
  int32_t len;
  int64_t freq;
} Word;

typedef struct {
  int64_t count;
  int32_t a, b;
} HeapItem;

typedef struct {
  /* pairs: (a, b) -> index, via the tokenizer's merge map (rank field = pair index) */
  LmwbMergeMap index;
  GArray *count;  /* int64 per pair */
  GPtrArray *where; /* GArray<int32 word index> per pair, may hold duplicates */
  GArray *pa, *pb; /* int32 per pair */
  HeapItem *heap;
  size_t heap_n, heap_cap;
  GArray *touched; /* pair indices incremented during the current merge */
} Pairs;

static gboolean heap_better(const HeapItem *x, const HeapItem *y) {
  if (x->count != y->count) return x->count > y->count;
  if (x->a != y->a) return x->a < y->a;
  return x->b < y->b;
}

static void heap_push(Pairs *p, HeapItem it) {
  if (p->heap_n == p->heap_cap) {
    p->heap_cap = p->heap_cap ? p->heap_cap * 2 : 1024;
    p->heap = g_renew(HeapItem, p->heap, p->heap_cap);
  }
  size_t i = p->heap_n++;
  while (i > 0) {
    size_t up = (i - 1) / 2;
    if (!heap_better(&it, &p->heap[up])) break;
    p->heap[i] = p->heap[up];
    i = up;
  }
  p->heap[i] = it;
}

static HeapItem heap_pop(Pairs *p) {
  HeapItem top = p->heap[0], last = p->heap[--p->heap_n];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    const HeapItem *best = &last;
    if (l < p->heap_n && heap_better(&p->heap[l], best)) { m = l; best = &p->heap[l]; }
    if (r < p->heap_n && heap_better(&p->heap[r], best)) m = r;
    if (m == i) break;
    p->heap[i] = p->heap[m];
    i = m;
  }
  if (p->heap_n > 0) p->heap[i] = last;
  return top;
}

static int32_t pair_get(Pairs *p, int32_t a, int32_t b, gboolean create) {
  uint32_t idx;
  int32_t unused;
  if (lmwb_merge_map_get(&p->index, a, b, &idx, &unused)) return (int32_t)idx;
  if (!create) return -1;
  idx = p->count->len;
  lmwb_merge_map_put(&p->index, a, b, idx, 0);
  int64_t zero = 0;
  g_array_append_val(p->count, zero);
  g_ptr_array_add(p->where, g_array_new(FALSE, FALSE, sizeof(int32_t)));
  g_array_append_val(p->pa, a);
  g_array_append_val(p->pb, b);
  return (int32_t)idx;
}

static void pair_add(Pairs *p, int32_t a, int32_t b, int64_t delta, int32_t word) {
  int32_t k = pair_get(p, a, b, delta > 0);
  if (k < 0) return;
  g_array_index(p->count, int64_t, k) += delta;
  if (delta > 0) {
    g_array_append_val(g_ptr_array_index(p->where, k), word);
    g_array_append_val(p->touched, k);
  }
}

/* ---- corpus ---- */

typedef struct {
  GHashTable *freq; /* raw word bytes -> count (int64 stored in a pointer-sized slot) */
  gboolean split_digits;
} CountCtx;

static void count_word(CountCtx *c, const char *text, size_t start, size_t end);

/* With split_digits, ASCII digits never take part in a merge: the piece is cut around them, and a
 * lone digit (a one-symbol word) contributes no pair. */
static void count_piece(const char *text, size_t start, size_t end, void *user) {
  CountCtx *c = user;
  if (!c->split_digits) {
    count_word(c, text, start, end);
    return;
  }
  size_t s = start;
  for (size_t i = start; i < end; i++) {
    if (text[i] >= '0' && text[i] <= '9') {
      if (i > s) count_word(c, text, s, i);
      s = i + 1;
    }
  }
  if (end > s) count_word(c, text, s, end);
}

static void count_word(CountCtx *c, const char *text, size_t start, size_t end) {
  char *w = g_strndup(text + start, end - start);
  gpointer old = NULL;
  if (g_hash_table_lookup_extended(c->freq, w, NULL, &old)) {
    g_hash_table_insert(c->freq, w, GSIZE_TO_POINTER(GPOINTER_TO_SIZE(old) + 1));
  } else {
    g_hash_table_insert(c->freq, w, GSIZE_TO_POINTER(1));
  }
}

static gboolean check_inputs(const char *const *files, int n_files, const LmwbBpeTrainOptions *opt,
                             const char **specials, int n_special, const char *out_dir, GError **error) {
  if (!opt) {
    lmwb_input_error(error, "train-tokenizer: no options given");
    return FALSE;
  }
  if (!files || n_files <= 0) {
    lmwb_input_error(error, "train-tokenizer: no corpus file given (--corpus)");
    return FALSE;
  }
  if (!out_dir || !*out_dir) {
    lmwb_input_error(error, "train-tokenizer: no output folder given (--out)");
    return FALSE;
  }
  for (int i = 0; i < n_files; i++) {
    GStatBuf st;
    if (!files[i] || g_stat(files[i], &st) != 0 || !S_ISREG(st.st_mode)) {
      lmwb_input_error(error, "corpus file %s: not found or not a regular file", files[i] ? files[i] : "(null)");
      return FALSE;
    }
    if (st.st_size == 0) {
      lmwb_input_error(error, "corpus file %s: is empty", files[i]);
      return FALSE;
    }
  }
  if (n_special < 0) {
    lmwb_input_error(error, "train-tokenizer: negative number of special tokens");
    return FALSE;
  }
  for (int i = 0; i < n_special; i++) {
    if (!specials[i] || !*specials[i] || !g_utf8_validate(specials[i], -1, NULL)) {
      lmwb_input_error(error, "train-tokenizer: special token %d is empty or not valid UTF-8", i);
      return FALSE;
    }
    for (int b = 0; b < 256; b++)
      if (strcmp(specials[i], lmwb_tok_byte_utf8((uint8_t)b)) == 0) {
        lmwb_input_error(error, "train-tokenizer: special token '%s' is one of the 256 byte symbols", specials[i]);
        return FALSE;
      }
    for (int j = 0; j < i; j++)
      if (strcmp(specials[i], specials[j]) == 0) {
        lmwb_input_error(error, "train-tokenizer: special token '%s' given twice", specials[i]);
        return FALSE;
      }
  }
  if (opt->vocab_size < 256 + n_special) {
    lmwb_input_error(error, "train-tokenizer: --vocab-size %d is smaller than 256 bytes + %d special tokens",
                     opt->vocab_size, n_special);
    return FALSE;
  }
  if (opt->vocab_size > (1 << 24)) {
    lmwb_input_error(error, "train-tokenizer: --vocab-size %d is too large (max %d)", opt->vocab_size, 1 << 24);
    return FALSE;
  }
  return TRUE;
}

static int cmp_str(gconstpointer a, gconstpointer b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *build_json(GPtrArray *tokens, int n_special, GArray *merges_a, GArray *merges_b) {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "version");
  json_builder_add_string_value(b, "1.0");
  json_builder_set_member_name(b, "truncation");
  json_builder_add_null_value(b);
  json_builder_set_member_name(b, "padding");
  json_builder_add_null_value(b);
  json_builder_set_member_name(b, "added_tokens");
  json_builder_begin_array(b);
  for (int i = 0; i < n_special; i++) {
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "id");
    json_builder_add_int_value(b, i);
    json_builder_set_member_name(b, "content");
    json_builder_add_string_value(b, tokens->pdata[i]);
    const char *flags[] = {"single_word", "lstrip", "rstrip", "normalized"};
    for (int f = 0; f < 4; f++) {
      json_builder_set_member_name(b, flags[f]);
      json_builder_add_boolean_value(b, FALSE);
    }
    json_builder_set_member_name(b, "special");
    json_builder_add_boolean_value(b, TRUE);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_set_member_name(b, "normalizer");
  json_builder_add_null_value(b);
  const char *parts[] = {"pre_tokenizer", "post_processor", "decoder"};
  for (int k = 0; k < 3; k++) {
    json_builder_set_member_name(b, parts[k]);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "type");
    json_builder_add_string_value(b, "ByteLevel");
    json_builder_set_member_name(b, "add_prefix_space");
    json_builder_add_boolean_value(b, k != 0);
    json_builder_set_member_name(b, "trim_offsets");
    json_builder_add_boolean_value(b, k != 1);
    json_builder_set_member_name(b, "use_regex");
    json_builder_add_boolean_value(b, TRUE);
    json_builder_end_object(b);
  }
  json_builder_set_member_name(b, "model");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "type");
  json_builder_add_string_value(b, "BPE");
  const char *nulls[] = {"dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix"};
  for (int k = 0; k < 4; k++) {
    json_builder_set_member_name(b, nulls[k]);
    json_builder_add_null_value(b);
  }
  const char *falses[] = {"fuse_unk", "byte_fallback", "ignore_merges"};
  for (int k = 0; k < 3; k++) {
    json_builder_set_member_name(b, falses[k]);
    json_builder_add_boolean_value(b, FALSE);
  }
  json_builder_set_member_name(b, "vocab");
  json_builder_begin_object(b);
  for (guint i = 0; i < tokens->len; i++) {
    json_builder_set_member_name(b, tokens->pdata[i]);
    json_builder_add_int_value(b, (gint64)i);
  }
  json_builder_end_object(b);
  json_builder_set_member_name(b, "merges");
  json_builder_begin_array(b);
  for (guint i = 0; i < merges_a->len; i++) {
    json_builder_begin_array(b);
    json_builder_add_string_value(b, tokens->pdata[g_array_index(merges_a, int32_t, i)]);
    json_builder_add_string_value(b, tokens->pdata[g_array_index(merges_b, int32_t, i)]);
    json_builder_end_array(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  json_builder_end_object(b);
  JsonNode *root = json_builder_get_root(b);
  JsonGenerator *g = json_generator_new();
  json_generator_set_root(g, root);
  json_generator_set_pretty(g, TRUE);
  json_generator_set_indent(g, 1);
  char *s = json_generator_to_data(g, NULL);
  json_node_unref(root);
  g_object_unref(g);
  g_object_unref(b);
  return s;
}

gboolean lmwb_bpe_train(const char *const *corpus_files, int n_files, const LmwbBpeTrainOptions *opt,
                        const char *out_dir, LmwbReporter *reporter, GError **error) {
  static const char *default_special[] = {LMWB_BPE_DEFAULT_SPECIAL};
  const char **specials = opt && opt->special_tokens ? opt->special_tokens : default_special;
  int n_special = opt && opt->special_tokens ? opt->n_special : 1;
  if (!check_inputs(corpus_files, n_files, opt, specials, n_special, out_dir, error)) return FALSE;
  int64_t min_freq = opt->min_frequency > 1 ? opt->min_frequency : 1;

  /* 1. word frequencies */
  CountCtx cc = {g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL), opt->split_digits};
  for (int f = 0; f < n_files; f++) {
    size_t len = 0;
    char *data = lmwb_file_read(corpus_files[f], LMWB_CORPUS_MAX_BYTES, LMWB_READ_REGULAR, &len, error);
    if (!data) {
      g_prefix_error(error, "corpus file ");
      g_hash_table_destroy(cc.freq);
      return FALSE;
    }
    size_t bad = 0;
    if (!lmwb_tok_utf8_valid(data, len, &bad) || memchr(data, 0, len)) {
      if (memchr(data, 0, len) && lmwb_tok_utf8_valid(data, len, NULL))
        bad = (size_t)((const char *)memchr(data, 0, len) - data);
      lmwb_input_error(error, "corpus file %s: not UTF-8 text (bad byte at offset %zu)", corpus_files[f], bad);
      g_free(data);
      g_hash_table_destroy(cc.freq);
      return FALSE;
    }
    lmwb_tokenizer_split_gpt2(data, len, count_piece, &cc);
    g_free(data);
    lmwb_report_progress(reporter, 0.1 * (f + 1) / n_files, "counting words");
    if (lmwb_reporter_cancelled(reporter, error)) {
      g_hash_table_destroy(cc.freq);
      return FALSE;
    }
  }

  /* 2. words as byte-symbol sequences, in sorted order so the run is reproducible anywhere */
  GPtrArray *keys = g_ptr_array_new();
  GHashTableIter hit;
  gpointer hk;
  g_hash_table_iter_init(&hit, cc.freq);
  while (g_hash_table_iter_next(&hit, &hk, NULL)) g_ptr_array_add(keys, hk);
  g_ptr_array_sort(keys, cmp_str);
  guint n_words = keys->len;
  Word *words = g_new0(Word, n_words);
  for (guint i = 0; i < n_words; i++) {
    const char *w = keys->pdata[i];
    size_t l = strlen(w);
    words[i].len = (int32_t)l;
    words[i].sym = g_new(int32_t, l);
    for (size_t k = 0; k < l; k++) words[i].sym[k] = n_special + (uint8_t)w[k];
    words[i].freq = (int64_t)GPOINTER_TO_SIZE(g_hash_table_lookup(cc.freq, w));
  }
  g_ptr_array_free(keys, TRUE);
  g_hash_table_destroy(cc.freq);

  GPtrArray *tokens = g_ptr_array_new_with_free_func(g_free);
  GHashTable *tok_ids = g_hash_table_new(g_str_hash, g_str_equal);
  for (int i = 0; i < n_special; i++) g_ptr_array_add(tokens, g_strdup(specials[i]));
  for (int b = 0; b < 256; b++) g_ptr_array_add(tokens, g_strdup(lmwb_tok_byte_utf8((uint8_t)b)));
  for (guint i = 0; i < tokens->len; i++)
    if (!g_hash_table_contains(tok_ids, tokens->pdata[i]))
      g_hash_table_insert(tok_ids, tokens->pdata[i], GINT_TO_POINTER(i + 1));

  /* 3. initial pair counts */
  Pairs P = {0};
  lmwb_merge_map_init(&P.index, 1 << 16);
  P.count = g_array_new(FALSE, FALSE, sizeof(int64_t));
  P.where = g_ptr_array_new_with_free_func((GDestroyNotify)g_array_unref);
  P.pa = g_array_new(FALSE, FALSE, sizeof(int32_t));
  P.pb = g_array_new(FALSE, FALSE, sizeof(int32_t));
  P.touched = g_array_new(FALSE, FALSE, sizeof(int32_t));
  for (guint i = 0; i < n_words; i++)
    for (int32_t k = 0; k + 1 < words[i].len; k++) pair_add(&P, words[i].sym[k], words[i].sym[k + 1], words[i].freq, (int32_t)i);
  for (guint k = 0; k < P.count->len; k++)
    heap_push(&P, (HeapItem){g_array_index(P.count, int64_t, k), g_array_index(P.pa, int32_t, k), g_array_index(P.pb, int32_t, k)});
  g_array_set_size(P.touched, 0);

  /* 4. merges */
  GArray *ma = g_array_new(FALSE, FALSE, sizeof(int32_t)), *mb = g_array_new(FALSE, FALSE, sizeof(int32_t));
  int32_t *stamp = g_new0(int32_t, n_words ? n_words : 1);
  int target = opt->vocab_size;
  gboolean ok = TRUE;
  gint64 last_report = 0;
  while ((int)tokens->len < target) {
    if (P.heap_n == 0) break;
    HeapItem top = heap_pop(&P);
    int32_t k = pair_get(&P, top.a, top.b, FALSE);
    int64_t cur = g_array_index(P.count, int64_t, k);
    if (cur != top.count) {
      if (cur > 0) heap_push(&P, (HeapItem){cur, top.a, top.b});
      continue;
    }
    if (cur < min_freq) break;
    char *joined = g_strconcat(tokens->pdata[top.a], tokens->pdata[top.b], NULL);
    gpointer have = g_hash_table_lookup(tok_ids, joined);
    int32_t nid;
    if (have) {
      nid = GPOINTER_TO_INT(have) - 1;
      g_free(joined);
    } else {
      nid = (int32_t)tokens->len;
      g_ptr_array_add(tokens, joined);
      g_hash_table_insert(tok_ids, joined, GINT_TO_POINTER(nid + 1));
    }
    g_array_append_val(ma, top.a);
    g_array_append_val(mb, top.b);
    int32_t merge_no = (int32_t)ma->len;
    /* copy: the list may grow while we update (new pairs of this same word) */
    GArray *wl = g_ptr_array_index(P.where, k);
    guint n_wl = wl->len;
    int32_t *wcopy = g_memdup2(wl->data, n_wl * sizeof(int32_t));
    g_array_set_size(wl, 0);
    for (guint j = 0; j < n_wl; j++) {
      int32_t wi = wcopy[j];
      if (stamp[wi] == merge_no) continue;
      stamp[wi] = merge_no;
      Word *w = &words[wi];
      for (int32_t i = 0; i + 1 < w->len; i++) {
        if (w->sym[i] != top.a || w->sym[i + 1] != top.b) continue;
        if (i > 0) pair_add(&P, w->sym[i - 1], top.a, -w->freq, wi);
        if (i + 2 < w->len) pair_add(&P, top.b, w->sym[i + 2], -w->freq, wi);
        pair_add(&P, top.a, top.b, -w->freq, wi);
        w->sym[i] = nid;
        memmove(w->sym + i + 1, w->sym + i + 2, (size_t)(w->len - i - 2) * sizeof(int32_t));
        w->len--;
        if (i > 0) pair_add(&P, w->sym[i - 1], nid, w->freq, wi);
        if (i + 1 < w->len) pair_add(&P, nid, w->sym[i + 1], w->freq, wi);
      }
    }
    g_free(wcopy);
    for (guint j = 0; j < P.touched->len; j++) {
      int32_t t = g_array_index(P.touched, int32_t, j);
      int64_t c = g_array_index(P.count, int64_t, t);
      if (c > 0) heap_push(&P, (HeapItem){c, g_array_index(P.pa, int32_t, t), g_array_index(P.pb, int32_t, t)});
    }
    g_array_set_size(P.touched, 0);
    gint64 now = g_get_monotonic_time();
    if (now - last_report > 100000) {
      last_report = now;
      lmwb_report_progress(reporter, 0.1 + 0.85 * (double)(tokens->len - 256 - n_special) / (target - 256 - n_special + 1),
                           "merging pairs");
      lmwb_report_metric(reporter, "merge_count", (double)ma->len, (double)top.count);
      if (lmwb_reporter_cancelled(reporter, error)) {
        ok = FALSE;
        break;
      }
    }
  }
  if (ok && (int)tokens->len < target) {
    lmwb_input_error(error,
                     "train-tokenizer: --vocab-size %d is more than the corpus supports: it has no more pairs "
                     "occurring at least %" G_GINT64_FORMAT " times after %d tokens",
                     target, min_freq, (int)tokens->len);
    ok = FALSE;
  }
  if (ok) {
    lmwb_report_progress(reporter, 0.97, "writing tokenizer.json");
    char *json = build_json(tokens, n_special, ma, mb);
    if (g_mkdir_with_parents(out_dir, 0777) != 0) {
      lmwb_input_error(error, "%s: cannot create the output folder", out_dir);
      ok = FALSE;
    } else {
      char *path = g_build_filename(out_dir, "tokenizer.json", NULL);
      ok = lmwb_file_write_atomic(path, json, strlen(json), error);
      g_free(path);
    }
    g_free(json);
    if (ok) lmwb_report_progress(reporter, 1.0, "done");
  }

  for (guint i = 0; i < n_words; i++) g_free(words[i].sym);
  g_free(words);
  g_free(stamp);
  g_array_free(ma, TRUE);
  g_array_free(mb, TRUE);
  g_hash_table_destroy(tok_ids);
  g_ptr_array_free(tokens, TRUE);
  lmwb_merge_map_clear(&P.index);
  g_array_free(P.count, TRUE);
  g_ptr_array_free(P.where, TRUE);
  g_array_free(P.pa, TRUE);
  g_array_free(P.pb, TRUE);
  g_array_free(P.touched, TRUE);
  g_free(P.heap);
  return ok;
}
