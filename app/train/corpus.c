/* Training corpus: Brown split + world mixing + writing (see corpus.h). */
#include "app/train/corpus.h"
#include "app/core/atomic_file.h"
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/train/world.h"
#include <errno.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>

/* Separate PRNG stream for the mixing, so the world's own streams stay untouched. */
#define CORPUS_MIX_TAG 0x6D6978ull /* "mix" */
#define WORLD_DOC_MIN_LINES 8
#define WORLD_DOC_MAX_LINES 16

guint lmwb_brown_valid_every(double valid_fraction) {
  if (!(valid_fraction > 0.0) || valid_fraction > 0.5) return 0;
  return (guint)floor(1.0 / valid_fraction + 0.5);
}

gboolean lmwb_brown_is_valid(guint index, guint n_samples, guint every) {
  if (every < 2 || index >= n_samples) return FALSE;
  if (n_samples <= every / 2) return index == n_samples - 1;
  return index % every == every / 2;
}

GPtrArray *lmwb_brown_read_samples(const char *path, GError **error) {
  if (!path || !*path) {
    lmwb_input_error(error, "Brown corpus: no file given");
    return NULL;
  }
  size_t len = 0;
  char *text = lmwb_file_read(path, LMWB_BROWN_MAX_BYTES, LMWB_READ_REGULAR, &len, error);
  if (!text) {
    g_prefix_error(error, "Brown corpus file: ");
    return NULL;
  }
  const char *bad = NULL;
  if (!g_utf8_validate(text, (gssize)len, &bad)) {
    lmwb_input_error(error, "Brown corpus file '%s': not valid UTF-8 (byte offset %" G_GSIZE_FORMAT
                     ")", path, (gsize)(bad - text));
    g_free(text);
    return NULL;
  }
  GPtrArray *samples = g_ptr_array_new_with_free_func(g_free);
  GString *cur = g_string_new(NULL);
  const char *p = text, *end = text + len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *le = nl ? nl : end;
    const char *te = le;
    while (te > p && g_ascii_isspace(te[-1])) te--; /* also drops '\r' */
    if (te == p) {
      /* Blank line: ends the current sample (several blank lines count as one). */
      if (cur->len) {
        g_ptr_array_add(samples, g_strndup(cur->str, cur->len));
        g_string_truncate(cur, 0);
      }
    } else {
      if (cur->len) g_string_append_c(cur, '\n');
      g_string_append_len(cur, p, te - p);
    }
    p = nl ? nl + 1 : end;
  }
  if (cur->len) g_ptr_array_add(samples, g_strndup(cur->str, cur->len));
  g_string_free(cur, TRUE);
  g_free(text);
  if (samples->len < 2) {
    lmwb_input_error(error, "Brown corpus file '%s': found %u sample(s); need at least 2 "
                     "(samples are separated by blank lines)", path, samples->len);
    g_ptr_array_unref(samples);
    return NULL;
  }
  return samples;
}

/* Lower-case alphabetic words of all samples -> count, for the world's name rejection. */
static GHashTable *count_words(GPtrArray *samples) {
  GHashTable *t = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  for (guint i = 0; i < samples->len; i++) {
    const char *s = g_ptr_array_index(samples, i);
    const char *p = s;
    while (*p) {
      while (*p && !g_ascii_isalpha(*p)) p++;
      const char *b = p;
      while (g_ascii_isalpha(*p)) p++;
      if (p > b) {
        char *w = g_ascii_strdown(b, p - b);
        gpointer old = g_hash_table_lookup(t, w);
        g_hash_table_replace(t, w, GUINT_TO_POINTER(GPOINTER_TO_UINT(old) + 1));
      }
    }
  }
  return t;
}

static gboolean write_file(const char *dir, const char *name, const char *data, gsize len,
                           GError **error) {
  char *path = g_build_filename(dir, name, NULL);
  gboolean ok = lmwb_file_write_atomic(path, data, len, error);
  g_free(path);
  return ok;
}

/* One line each, in an order drawn from `rng`. */
static GString *shuffled_lines(LmwbWorldRng *rng, GPtrArray *lines) {
  gpointer *order = g_new(gpointer, lines->len ? lines->len : 1);
  memcpy(order, lines->pdata, lines->len * sizeof(gpointer));
  lmwb_world_rng_shuffle(rng, order, lines->len);
  GString *out = g_string_new(NULL);
  for (guint i = 0; i < lines->len; i++) {
    g_string_append(out, order[i]);
    g_string_append_c(out, '\n');
  }
  g_free(order);
  return out;
}

gboolean lmwb_make_corpus(const LmwbCorpusOptions *opt, LmwbReporter *reporter, GError **error) {
  if (!opt || !opt->out_dir || !*opt->out_dir) {
    lmwb_input_error(error, "make-corpus: no output folder given");
    return FALSE;
  }
  double frac = opt->valid_fraction == 0.0 ? LMWB_CORPUS_DEFAULT_VALID_FRACTION : opt->valid_fraction;
  guint every = lmwb_brown_valid_every(frac);
  if (every < 2) {
    lmwb_input_error(error, "make-corpus: validation fraction must be in (0, 0.5], got %g",
                     opt->valid_fraction);
    return FALSE;
  }
  if (opt->world_repeats < 0 || opt->world_repeats > LMWB_WORLD_MAX_REPEATS) {
    lmwb_input_error(error, "make-corpus: world repeats must be between 1 and %d, got %d",
                     LMWB_WORLD_MAX_REPEATS, opt->world_repeats);
    return FALSE;
  }
  lmwb_report_progress(reporter, 0.0, "reading Brown");
  GPtrArray *samples = lmwb_brown_read_samples(opt->brown_path, error);
  if (!samples) return FALSE;
  if (g_mkdir_with_parents(opt->out_dir, 0777) != 0) {
    lmwb_input_error(error, "make-corpus: cannot create output folder '%s': %s", opt->out_dir,
                     g_strerror(errno));
    g_ptr_array_unref(samples);
    return FALSE;
  }

  gboolean ok = FALSE;
  LmwbWorld *world = NULL;
  GHashTable *words = NULL;
  GPtrArray *docs = g_ptr_array_new_with_free_func(g_free);
  GString *train = NULL, *warmup = NULL, *ioi = NULL, *facts = NULL, *valid = g_string_new(NULL);
  GString *brown_train = g_string_new(NULL);
  JsonArray *valid_idx = json_array_new();
  guint64 brown_train_bytes = 0;

  if (lmwb_reporter_cancelled(reporter, error)) goto out;
  lmwb_report_progress(reporter, 0.1, "generating world");
  words = count_words(samples);
  world = lmwb_world_generate(opt->seed, opt->world_repeats, words, error);
  if (!world) goto out;
  if (lmwb_reporter_cancelled(reporter, error)) goto out;

  /* Brown: held-out samples whole; training samples cut into chunks. */
  lmwb_report_progress(reporter, 0.4, "splitting Brown");
  for (guint i = 0; i < samples->len; i++) {
    const char *s = g_ptr_array_index(samples, i);
    if (lmwb_brown_is_valid(i, samples->len, every)) {
      if (valid->len) g_string_append(valid, "\n\n");
      g_string_append(valid, s);
      json_array_add_int_element(valid_idx, i);
      continue;
    }
    const char *p = s;
    while (*p) {
      const char *q = p;
      for (int l = 0; l < LMWB_BROWN_CHUNK_LINES && *q; l++) {
        const char *nl = strchr(q, '\n');
        q = nl ? nl + 1 : q + strlen(q);
      }
      size_t n = (size_t)(q - p);
      if (n && p[n - 1] == '\n') n--;
      g_ptr_array_add(docs, g_strndup(p, n));
      brown_train_bytes += n + 1;
      if (brown_train->len) g_string_append(brown_train, "\n\n");
      g_string_append_len(brown_train, p, (gssize)n);
      p = q;
    }
  }
  if (valid->len) g_string_append_c(valid, '\n');
  if (brown_train->len) g_string_append_c(brown_train, '\n');

  /* World: shuffle sentences, group them into paragraphs. */
  LmwbWorldRng rng;
  lmwb_world_rng_init(&rng, opt->seed ^ (CORPUS_MIX_TAG * 0xA24BAED4963EE407ull));
  GPtrArray *lines = lmwb_world_train_lines(world);
  gpointer *order = g_new(gpointer, lines->len ? lines->len : 1);
  memcpy(order, lines->pdata, lines->len * sizeof(gpointer));
  lmwb_world_rng_shuffle(&rng, order, lines->len);
  for (guint i = 0; i < lines->len;) {
    guint n = WORLD_DOC_MIN_LINES +
              (guint)lmwb_world_rng_below(&rng, WORLD_DOC_MAX_LINES - WORLD_DOC_MIN_LINES + 1);
    GString *d = g_string_new(NULL);
    for (guint k = 0; k < n && i < lines->len; k++, i++) {
      if (k) g_string_append_c(d, '\n');
      g_string_append(d, order[i]);
    }
    g_ptr_array_add(docs, g_string_free(d, FALSE));
  }
  g_free(order);
  if (lmwb_reporter_cancelled(reporter, error)) goto out;

  lmwb_report_progress(reporter, 0.6, "mixing");
  lmwb_world_rng_shuffle(&rng, docs->pdata, docs->len);
  guint64 total = brown_train_bytes + lmwb_world_train_bytes(world) + 8;
  train = g_string_sized_new((gsize)total);
  for (guint i = 0; i < docs->len; i++) {
    if (i) g_string_append(train, "\n\n");
    g_string_append(train, g_ptr_array_index(docs, i));
  }
  g_string_append_c(train, '\n');

  /* The curriculum's first stages, shuffled after the mixing above so that train.txt does not
   * depend on them. */
  warmup = shuffled_lines(&rng, lmwb_world_warmup_lines(world));
  ioi = shuffled_lines(&rng, lmwb_world_ioi_lines(world));
  /* Parts of train.txt on their own, for methods that read what the model should keep. */
  facts = shuffled_lines(&rng, lmwb_world_fact_lines(world));

  lmwb_report_progress(reporter, 0.75, "writing");
  if (!write_file(opt->out_dir, LMWB_CORPUS_TRAIN_FILE, train->str, train->len, error)) goto out;
  if (!write_file(opt->out_dir, LMWB_CORPUS_VALID_FILE, valid->str, valid->len, error)) goto out;
  if (!write_file(opt->out_dir, LMWB_CORPUS_WARMUP_FILE, warmup->str, warmup->len, error)) goto out;
  if (!write_file(opt->out_dir, LMWB_CORPUS_IOI_FILE, ioi->str, ioi->len, error)) goto out;
  if (!write_file(opt->out_dir, LMWB_CORPUS_FACTS_FILE, facts->str, facts->len, error)) goto out;
  if (!write_file(opt->out_dir, LMWB_CORPUS_BROWN_TRAIN_FILE, brown_train->str, brown_train->len, error)) goto out;

  {
    JsonObject *m = lmwb_world_manifest(world);
    JsonObject *c = json_object_new();
    char *base = g_path_get_basename(opt->brown_path);
    json_object_set_string_member(c, "brown_file", base);
    g_free(base);
    /* Checksum of the samples as read, so the manifest says which Brown it was built from. */
    GChecksum *ck = g_checksum_new(G_CHECKSUM_SHA256);
    for (guint i = 0; i < samples->len; i++) {
      const char *s = g_ptr_array_index(samples, i);
      g_checksum_update(ck, (const guchar *)s, strlen(s) + 1);
    }
    json_object_set_string_member(c, "brown_samples_sha256", g_checksum_get_string(ck));
    g_checksum_free(ck);
    json_object_set_int_member(c, "brown_samples", samples->len);
    json_object_set_int_member(c, "valid_every", every);
    json_object_set_int_member(c, "valid_offset", every / 2);
    json_object_set_array_member(c, "valid_samples", valid_idx);
    valid_idx = NULL;
    json_object_set_string_member(c, "train_file", LMWB_CORPUS_TRAIN_FILE);
    json_object_set_string_member(c, "valid_file", LMWB_CORPUS_VALID_FILE);
    json_object_set_string_member(c, "warmup_file", LMWB_CORPUS_WARMUP_FILE);
    json_object_set_int_member(c, "warmup_bytes", (gint64)warmup->len);
    json_object_set_string_member(c, "ioi_file", LMWB_CORPUS_IOI_FILE);
    json_object_set_int_member(c, "ioi_bytes", (gint64)ioi->len);
    json_object_set_string_member(c, "facts_file", LMWB_CORPUS_FACTS_FILE);
    json_object_set_int_member(c, "facts_bytes", (gint64)facts->len);
    json_object_set_string_member(c, "brown_train_file", LMWB_CORPUS_BROWN_TRAIN_FILE);
    json_object_set_string_member(c, "document_separator", "empty line");
    json_object_set_int_member(c, "brown_chunk_lines", LMWB_BROWN_CHUNK_LINES);
    json_object_set_int_member(c, "documents", docs->len);
    json_object_set_int_member(c, "train_bytes", (gint64)train->len);
    json_object_set_int_member(c, "valid_bytes", (gint64)valid->len);
    json_object_set_int_member(c, "brown_train_bytes", (gint64)brown_train_bytes);
    json_object_set_int_member(c, "world_train_bytes", (gint64)lmwb_world_train_bytes(world));
    /* Integer per-mille: no float formatting differences between machines. */
    json_object_set_int_member(c, "world_permille_of_train_bytes",
                               (gint64)(lmwb_world_train_bytes(world) * 1000 / MAX(train->len, 1)));
    json_object_set_object_member(m, "corpus", c);

    JsonNode *root = json_node_new(JSON_NODE_OBJECT);
    json_node_set_object(root, m);
    JsonGenerator *gen = json_generator_new();
    json_generator_set_pretty(gen, TRUE);
    json_generator_set_indent(gen, 1);
    json_generator_set_root(gen, root);
    gsize jlen = 0;
    char *json = json_generator_to_data(gen, &jlen);
    g_object_unref(gen);
    json_node_unref(root);
    GString *js = g_string_new_len(json, (gssize)jlen);
    g_free(json);
    g_string_append_c(js, '\n');
    gboolean wrote = write_file(opt->out_dir, LMWB_CORPUS_MANIFEST_FILE, js->str, js->len, error);
    g_string_free(js, TRUE);
    if (!wrote) goto out;
    lmwb_report_log(reporter, "corpus: %u documents, train %" G_GSIZE_FORMAT " bytes (world %"
                    G_GUINT64_FORMAT "), valid %" G_GSIZE_FORMAT " bytes", docs->len, train->len,
                    lmwb_world_train_bytes(world), valid->len);
  }
  lmwb_report_progress(reporter, 1.0, "done");
  ok = TRUE;
out:
  if (valid_idx) json_array_unref(valid_idx);
  if (train) g_string_free(train, TRUE);
  if (warmup) g_string_free(warmup, TRUE);
  if (ioi) g_string_free(ioi, TRUE);
  if (facts) g_string_free(facts, TRUE);
  g_string_free(brown_train, TRUE);
  g_string_free(valid, TRUE);
  g_ptr_array_unref(docs);
  if (words) g_hash_table_unref(words);
  lmwb_world_free(world);
  g_ptr_array_unref(samples);
  return ok;
}

char *lmwb_corpus_brown_path(const char *builtin_model_dir) {
  const char *shared = g_getenv("LMWB_SHARED");
  if (shared && *shared) return g_build_filename(shared, "data", "brown", "brown.txt", NULL);
  return g_build_filename(builtin_model_dir, "..", "..", "..", "..", "shared", "data", "brown", "brown.txt", NULL);
}
