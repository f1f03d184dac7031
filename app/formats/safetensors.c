#include "app/formats/safetensors.h"
#include "app/formats/json_text.h"

#include <json-glib/json-glib.h>
#include <string.h>

#include "app/core/atomic_file.h"
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/core/memory.h"
#include "app/formats/half.h"
#include "app/formats/json_input.h"

/* ---- dtypes ---------------------------------------------------------------------------- */

static const struct {
  const char *name;
  size_t size;
} dtype_info[LMWB_DTYPE_COUNT] = {
    [LMWB_DTYPE_BOOL] = {"BOOL", 1},       [LMWB_DTYPE_U8] = {"U8", 1},
    [LMWB_DTYPE_I8] = {"I8", 1},           [LMWB_DTYPE_F8_E4M3] = {"F8_E4M3", 1},
    [LMWB_DTYPE_F8_E5M2] = {"F8_E5M2", 1}, [LMWB_DTYPE_I16] = {"I16", 2},
    [LMWB_DTYPE_U16] = {"U16", 2},         [LMWB_DTYPE_F16] = {"F16", 2},
    [LMWB_DTYPE_BF16] = {"BF16", 2},       [LMWB_DTYPE_I32] = {"I32", 4},
    [LMWB_DTYPE_U32] = {"U32", 4},         [LMWB_DTYPE_F32] = {"F32", 4},
    [LMWB_DTYPE_F64] = {"F64", 8},         [LMWB_DTYPE_I64] = {"I64", 8},
    [LMWB_DTYPE_U64] = {"U64", 8},
};

const char *lmwb_dtype_name(LmwbDtype dtype) {
  return ((unsigned)dtype < LMWB_DTYPE_COUNT) ? dtype_info[dtype].name : "?";
}

size_t lmwb_dtype_size(LmwbDtype dtype) {
  return ((unsigned)dtype < LMWB_DTYPE_COUNT) ? dtype_info[dtype].size : 0;
}

gboolean lmwb_dtype_from_name(const char *name, LmwbDtype *out) {
  if (!name) return FALSE;
  for (int i = 0; i < LMWB_DTYPE_COUNT; i++) {
    if (strcmp(name, dtype_info[i].name) == 0) {
      if (out) *out = (LmwbDtype)i;
      return TRUE;
    }
  }
  return FALSE;
}

int64_t lmwb_tensor_numel(const LmwbTensorView *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

/* numel of a shape, refusing anything past INT64_MAX. */
static gboolean shape_numel(const int64_t *shape, int ndim, uint64_t *out) {
  uint64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return FALSE;
    if (!lmwb_mul_u64(n, (uint64_t)shape[i], &n) || n > (uint64_t)INT64_MAX) return FALSE;
  }
  *out = n;
  return TRUE;
}

static char *format_shape(const int64_t *shape, int ndim) {
  GString *s = g_string_new("[");
  for (int i = 0; i < ndim; i++)
    g_string_append_printf(s, "%s%" G_GINT64_FORMAT, i ? ", " : "", shape[i]);
  g_string_append_c(s, ']');
  return g_string_free(s, FALSE);
}

static int cmp_str_ptr(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ---- reader ---------------------------------------------------------------------------- */

struct LmwbSafetensors {
  GArray *views;          /* LmwbTensorView, file order */
  GHashTable *by_name;    /* name -> index + 1 */
  GHashTable *metadata;   /* owned key -> owned value */
  GStringChunk *strings;  /* names and file paths the views point to */
  GMappedFile *map;       /* the mapping, for a single opened file */
  GPtrArray *children;    /* shards of a sharded set (LmwbSafetensors*) */
};

static LmwbSafetensors *st_new(void) {
  LmwbSafetensors *st = g_new0(LmwbSafetensors, 1);
  st->views = g_array_new(FALSE, TRUE, sizeof(LmwbTensorView));
  st->by_name = g_hash_table_new(g_str_hash, g_str_equal);
  st->metadata = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  st->strings = g_string_chunk_new(1024);
  st->children = g_ptr_array_new_with_free_func((GDestroyNotify)lmwb_safetensors_close);
  return st;
}

void lmwb_safetensors_close(LmwbSafetensors *st) {
  if (!st) return;
  g_array_free(st->views, TRUE);
  g_hash_table_destroy(st->by_name);
  g_hash_table_destroy(st->metadata);
  g_string_chunk_free(st->strings);
  g_ptr_array_free(st->children, TRUE);
  if (st->map) g_mapped_file_unref(st->map);
  g_free(st);
}

static uint64_t load_le64(const guint8 *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* A JSON integer, or FALSE (floats, strings, bools, null are not integers). */
static gboolean node_int(JsonNode *n, int64_t *out) {
  if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64) return FALSE;
  *out = json_node_get_int(n);
  return TRUE;
}

static const char *node_string(JsonNode *n) {
  if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) return NULL;
  return json_node_get_string(n);
}

typedef struct {
  LmwbTensorView view;
  uint64_t begin;
} Parsed;

static gboolean parse_entry(const char *file, const char *name, JsonNode *node, uint64_t buflen,
                            const guint8 *buffer, Parsed *out, GError **error) {
  memset(out, 0, sizeof *out);
  if (!JSON_NODE_HOLDS_OBJECT(node)) {
    lmwb_input_error(error, "%s: tensor '%s': header entry is not a JSON object", file, name);
    return FALSE;
  }
  JsonObject *o = json_node_get_object(node);

  const char *dtype_s = node_string(json_object_get_member(o, "dtype"));
  if (!dtype_s) {
    lmwb_input_error(error, "%s: tensor '%s': \"dtype\" is missing or not a string", file, name);
    return FALSE;
  }
  LmwbDtype dtype;
  if (!lmwb_dtype_from_name(dtype_s, &dtype)) {
    lmwb_input_error(error, "%s: tensor '%s': unknown dtype '%s'", file, name, dtype_s);
    return FALSE;
  }

  JsonNode *shape_n = json_object_get_member(o, "shape");
  if (!shape_n || !JSON_NODE_HOLDS_ARRAY(shape_n)) {
    lmwb_input_error(error, "%s: tensor '%s': \"shape\" is missing or not an array", file, name);
    return FALSE;
  }
  JsonArray *shape_a = json_node_get_array(shape_n);
  guint ndim = json_array_get_length(shape_a);
  if (ndim > LMWB_TENSOR_MAX_DIMS) {
    lmwb_input_error(error, "%s: tensor '%s': \"shape\" has %u dimensions, at most %d supported",
                     file, name, ndim, LMWB_TENSOR_MAX_DIMS);
    return FALSE;
  }
  for (guint i = 0; i < ndim; i++) {
    int64_t d;
    if (!node_int(json_array_get_element(shape_a, i), &d)) {
      lmwb_input_error(error, "%s: tensor '%s': \"shape\" element %u is not an integer", file,
                       name, i);
      return FALSE;
    }
    if (d < 0) {
      lmwb_input_error(error, "%s: tensor '%s': \"shape\" has a negative dimension (%" G_GINT64_FORMAT
                       ") at index %u", file, name, d, i);
      return FALSE;
    }
    out->view.shape[i] = d;
  }
  out->view.ndim = (int)ndim;

  uint64_t numel, nbytes;
  if (!shape_numel(out->view.shape, out->view.ndim, &numel) ||
      !lmwb_mul_u64(numel, lmwb_dtype_size(dtype), &nbytes)) {
    char *s = format_shape(out->view.shape, out->view.ndim);
    lmwb_input_error(error, "%s: tensor '%s': \"shape\" %s x %s overflows a 64-bit size", file,
                     name, s, dtype_s);
    g_free(s);
    return FALSE;
  }

  JsonNode *off_n = json_object_get_member(o, "data_offsets");
  int64_t begin, end;
  if (!off_n || !JSON_NODE_HOLDS_ARRAY(off_n) ||
      json_array_get_length(json_node_get_array(off_n)) != 2 ||
      !node_int(json_array_get_element(json_node_get_array(off_n), 0), &begin) ||
      !node_int(json_array_get_element(json_node_get_array(off_n), 1), &end)) {
    lmwb_input_error(error, "%s: tensor '%s': \"data_offsets\" is missing or not two integers",
                     file, name);
    return FALSE;
  }
  if (begin < 0 || end < 0) {
    lmwb_input_error(error, "%s: tensor '%s': \"data_offsets\" [%" G_GINT64_FORMAT ", %"
                     G_GINT64_FORMAT "] has a negative offset", file, name, begin, end);
    return FALSE;
  }
  if (begin > end) {
    lmwb_input_error(error, "%s: tensor '%s': \"data_offsets\" begin %" G_GINT64_FORMAT
                     " is after end %" G_GINT64_FORMAT, file, name, begin, end);
    return FALSE;
  }
  if ((uint64_t)end > buflen) {
    lmwb_input_error(error, "%s: tensor '%s': \"data_offsets\" end %" G_GINT64_FORMAT
                     " is beyond the data buffer (%" G_GUINT64_FORMAT " bytes; file truncated?)",
                     file, name, end, buflen);
    return FALSE;
  }
  if ((uint64_t)(end - begin) != nbytes) {
    char *s = format_shape(out->view.shape, out->view.ndim);
    lmwb_input_error(error, "%s: tensor '%s': \"data_offsets\" span %" G_GINT64_FORMAT
                     " bytes but shape %s x %s needs %" G_GUINT64_FORMAT " bytes", file, name,
                     end - begin, s, dtype_s, nbytes);
    g_free(s);
    return FALSE;
  }
  out->view.dtype = dtype;
  out->view.nbytes = nbytes;
  out->view.data = buffer + begin;
  out->begin = (uint64_t)begin;
  return TRUE;
}

static gint cmp_parsed(gconstpointer a, gconstpointer b) {
  const Parsed *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->view.nbytes != y->view.nbytes) return x->view.nbytes < y->view.nbytes ? -1 : 1;
  return 0;
}

static gboolean parse_image(LmwbSafetensors *st, const guint8 *data, size_t len, const char *file,
                            GError **error) {
  if (len < 8) {
    lmwb_input_error(error, "%s: file is %zu bytes, too short for a safetensors header length "
                     "(8 bytes)", file, len);
    return FALSE;
  }
  uint64_t hlen = load_le64(data);
  if (hlen > LMWB_SAFETENSORS_MAX_HEADER) {
    lmwb_input_error(error, "%s: header length %" G_GUINT64_FORMAT " is over the 100 MB limit "
                     "(not a safetensors file?)", file, hlen);
    return FALSE;
  }
  if (hlen > len - 8) {
    lmwb_input_error(error, "%s: header length %" G_GUINT64_FORMAT " runs past the end of the "
                     "file (%zu bytes)", file, hlen, len);
    return FALSE;
  }
  const char *hdr = (const char *)data + 8;
  if (!g_utf8_validate_len(hdr, (gsize)hlen, NULL)) {
    lmwb_input_error(error, "%s: header is not valid UTF-8 text (or contains NUL bytes)", file);
    return FALSE;
  }
  char *origin = g_strdup_printf("%s: header", file);
  JsonNode *root = lmwb_json_parse(hdr, (size_t)hlen, origin, error);
  g_free(origin);
  if (!root) return FALSE;
  gboolean ok = FALSE;
  GArray *parsed = g_array_new(FALSE, TRUE, sizeof(Parsed));
  if (!JSON_NODE_HOLDS_OBJECT(root)) {
    lmwb_input_error(error, "%s: header is not a JSON object", file);
    goto out;
  }
  /* json-glib keeps only the last of two equal keys: a tensor listed twice would go unseen. */
  char *dup = lmwb_json_duplicate_top_key(hdr, (size_t)hlen);
  if (dup) {
    lmwb_input_error(error, "%s: tensor '%s' is listed twice in the header", file, dup);
    g_free(dup);
    goto out;
  }
  const guint8 *buffer = data + 8 + hlen;
  uint64_t buflen = len - 8 - hlen;
  JsonObject *obj = json_node_get_object(root);
  JsonObjectIter it;
  const char *name;
  JsonNode *node;
  json_object_iter_init(&it, obj);
  while (json_object_iter_next(&it, &name, &node)) {
    if (strcmp(name, "__metadata__") == 0) {
      if (!JSON_NODE_HOLDS_OBJECT(node)) {
        lmwb_input_error(error, "%s: \"__metadata__\" is not a JSON object", file);
        goto out;
      }
      JsonObjectIter mit;
      const char *key;
      JsonNode *val;
      json_object_iter_init(&mit, json_node_get_object(node));
      while (json_object_iter_next(&mit, &key, &val)) {
        const char *s = node_string(val);
        if (!s) {
          lmwb_input_error(error, "%s: \"__metadata__\" value for '%s' is not a string", file, key);
          goto out;
        }
        if (!g_hash_table_contains(st->metadata, key))
          g_hash_table_insert(st->metadata, g_strdup(key), g_strdup(s));
      }
      continue;
    }
    Parsed p;
    if (!parse_entry(file, name, node, buflen, buffer, &p, error)) goto out;
    p.view.name = g_string_chunk_insert_const(st->strings, name);
    p.view.file = g_string_chunk_insert_const(st->strings, file);
    g_array_append_val(parsed, p);
  }
  g_array_sort(parsed, cmp_parsed);
  /* Tensors may not share bytes (an edit of one would silently change the other). Empty tensors
   * own no bytes and may sit anywhere. */
  const Parsed *prev = NULL;
  for (guint i = 0; i < parsed->len; i++) {
    const Parsed *p = &g_array_index(parsed, Parsed, i);
    if (p->view.nbytes == 0) continue;
    if (prev && p->begin < prev->begin + prev->view.nbytes) {
      lmwb_input_error(error, "%s: tensors '%s' and '%s' overlap in the data buffer", file,
                       prev->view.name, p->view.name);
      goto out;
    }
    prev = p;
  }
  for (guint i = 0; i < parsed->len; i++) {
    const Parsed *p = &g_array_index(parsed, Parsed, i);
    g_array_append_val(st->views, p->view);
    g_hash_table_insert(st->by_name, (gpointer)p->view.name, GUINT_TO_POINTER(st->views->len));
  }
  ok = TRUE;
out:
  g_array_free(parsed, TRUE);
  json_node_unref(root);
  return ok;
}

LmwbSafetensors *lmwb_safetensors_open_memory(const void *data, size_t len, const char *file,
                                              GError **error) {
  if (!file) file = "<memory>";
  if (!data && len > 0) {
    lmwb_input_error(error, "%s: no data", file);
    return NULL;
  }
  static const guint8 empty[1];
  LmwbSafetensors *st = st_new();
  if (!parse_image(st, data ? data : empty, len, file, error)) {
    lmwb_safetensors_close(st);
    return NULL;
  }
  return st;
}

LmwbSafetensors *lmwb_safetensors_open(const char *path, GError **error) {
  if (!path) {
    lmwb_input_error(error, "no safetensors file given");
    return NULL;
  }
  if (g_file_test(path, G_FILE_TEST_IS_DIR)) {
    lmwb_input_error(error, "%s: is a folder, not a .safetensors file", path);
    return NULL;
  }
  GMappedFile *map = lmwb_file_map(path, UINT64_MAX, error);
  if (!map) return NULL;
  LmwbSafetensors *st = lmwb_safetensors_open_memory(g_mapped_file_get_contents(map),
                                                     g_mapped_file_get_length(map), path, error);
  if (!st) {
    g_mapped_file_unref(map);
    return NULL;
  }
  st->map = map;
  return st;
}

/* A shard name from an index must name a file inside the model folder. */
static gboolean shard_name_ok(const char *s) {
  return *s && !strchr(s, '/') && !strchr(s, '\\') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static char *metadata_scalar(JsonNode *n) {
  if (!n || !JSON_NODE_HOLDS_VALUE(n)) return NULL;
  GType t = json_node_get_value_type(n);
  if (t == G_TYPE_STRING) return g_strdup(json_node_get_string(n));
  if (t == G_TYPE_INT64) return g_strdup_printf("%" G_GINT64_FORMAT, json_node_get_int(n));
  if (t == G_TYPE_DOUBLE) {
    char buf[G_ASCII_DTOSTR_BUF_SIZE];
    return g_strdup(g_ascii_dtostr(buf, sizeof buf, json_node_get_double(n)));
  }
  if (t == G_TYPE_BOOLEAN) return g_strdup(json_node_get_boolean(n) ? "true" : "false");
  return NULL;
}

static LmwbSafetensors *open_index(const char *index_path, const char *dir, GError **error) {
  GMappedFile *map = lmwb_file_map(index_path, LMWB_SAFETENSORS_MAX_HEADER, error);
  if (!map) return NULL;
  LmwbSafetensors *st = NULL;
  GHashTable *shard_of = g_hash_table_new(g_str_hash, g_str_equal); /* tensor -> shard name */
  GPtrArray *shards = g_ptr_array_new();                            /* distinct shard names */
  JsonNode *root = lmwb_json_parse(g_mapped_file_get_contents(map), g_mapped_file_get_length(map),
                                   index_path, error);
  if (!root) goto fail;
  if (!JSON_NODE_HOLDS_OBJECT(root)) {
    lmwb_input_error(error, "%s: index is not a JSON object", index_path);
    goto fail;
  }
  JsonObject *robj = json_node_get_object(root);
  JsonNode *wm = json_object_get_member(robj, "weight_map");
  if (!wm || !JSON_NODE_HOLDS_OBJECT(wm)) {
    lmwb_input_error(error, "%s: \"weight_map\" is missing or not an object", index_path);
    goto fail;
  }
  JsonObjectIter it;
  const char *tname;
  JsonNode *node;
  json_object_iter_init(&it, json_node_get_object(wm));
  while (json_object_iter_next(&it, &tname, &node)) {
    const char *shard = node_string(node);
    if (!shard) {
      lmwb_input_error(error, "%s: weight_map entry for '%s' is not a file name string",
                       index_path, tname);
      goto fail;
    }
    if (!shard_name_ok(shard)) {
      lmwb_input_error(error, "%s: weight_map entry for '%s' names '%s', which is not a file in "
                       "the model folder", index_path, tname, shard);
      goto fail;
    }
    g_hash_table_insert(shard_of, (gpointer)tname, (gpointer)shard);
    gboolean seen = FALSE;
    for (guint i = 0; i < shards->len && !seen; i++) seen = strcmp(shards->pdata[i], shard) == 0;
    if (!seen) g_ptr_array_add(shards, (gpointer)shard);
  }
  if (shards->len == 0) {
    lmwb_input_error(error, "%s: \"weight_map\" is empty", index_path);
    goto fail;
  }
  g_ptr_array_sort(shards, cmp_str_ptr);

  st = st_new();
  for (guint s = 0; s < shards->len; s++) {
    const char *shard = shards->pdata[s];
    char *path = g_build_filename(dir, shard, NULL);
    if (!g_file_test(path, G_FILE_TEST_EXISTS)) {
      lmwb_input_error(error, "%s: shard '%s' listed in \"weight_map\" is missing (%s)",
                       index_path, shard, path);
      g_free(path);
      goto fail;
    }
    LmwbSafetensors *child = lmwb_safetensors_open(path, error);
    g_free(path);
    if (!child) goto fail;
    g_ptr_array_add(st->children, child);
    for (guint i = 0; i < child->views->len; i++) {
      const LmwbTensorView *v = &g_array_index(child->views, LmwbTensorView, i);
      const char *want = g_hash_table_lookup(shard_of, v->name);
      if (!want || strcmp(want, shard) != 0) continue; /* the index decides where a tensor lives */
      g_array_append_val(st->views, *v);
      g_hash_table_insert(st->by_name, (gpointer)v->name, GUINT_TO_POINTER(st->views->len));
    }
    GHashTableIter mit;
    gpointer k, val;
    g_hash_table_iter_init(&mit, child->metadata);
    while (g_hash_table_iter_next(&mit, &k, &val))
      if (!g_hash_table_contains(st->metadata, k))
        g_hash_table_insert(st->metadata, g_strdup(k), g_strdup(val));
  }
  GHashTableIter sit;
  gpointer k, val;
  g_hash_table_iter_init(&sit, shard_of);
  while (g_hash_table_iter_next(&sit, &k, &val)) {
    if (!g_hash_table_contains(st->by_name, k)) {
      lmwb_input_error(error, "%s: tensor '%s' is listed for shard '%s' but that shard has no "
                       "such tensor", index_path, (const char *)k, (const char *)val);
      goto fail;
    }
  }
  JsonNode *meta = json_object_get_member(robj, "metadata");
  if (meta && JSON_NODE_HOLDS_OBJECT(meta)) {
    JsonObjectIter mit;
    const char *key;
    JsonNode *mv;
    json_object_iter_init(&mit, json_node_get_object(meta));
    while (json_object_iter_next(&mit, &key, &mv)) {
      char *s = metadata_scalar(mv);
      if (s && !g_hash_table_contains(st->metadata, key))
        g_hash_table_insert(st->metadata, g_strdup(key), s);
      else
        g_free(s);
    }
  }
  g_hash_table_destroy(shard_of);
  g_ptr_array_free(shards, TRUE);
  json_node_unref(root);
  g_mapped_file_unref(map);
  return st;
fail:
  lmwb_safetensors_close(st);
  g_hash_table_destroy(shard_of);
  g_ptr_array_free(shards, TRUE);
  if (root) json_node_unref(root);
  g_mapped_file_unref(map);
  return NULL;
}

LmwbSafetensors *lmwb_safetensors_open_dir(const char *dir, GError **error) {
  if (!dir) {
    lmwb_input_error(error, "no model folder given");
    return NULL;
  }
  if (g_file_test(dir, G_FILE_TEST_IS_REGULAR)) {
    if (g_str_has_suffix(dir, ".index.json")) {
      char *parent = g_path_get_dirname(dir);
      LmwbSafetensors *st = open_index(dir, parent, error);
      g_free(parent);
      return st;
    }
    return lmwb_safetensors_open(dir, error);
  }
  if (!g_file_test(dir, G_FILE_TEST_IS_DIR)) {
    lmwb_input_error(error, "%s: no such model folder", dir);
    return NULL;
  }
  char *path = g_build_filename(dir, "model.safetensors.index.json", NULL);
  if (g_file_test(path, G_FILE_TEST_IS_REGULAR)) {
    LmwbSafetensors *st = open_index(path, dir, error);
    g_free(path);
    return st;
  }
  g_free(path);

  GError *derr = NULL;
  GDir *d = g_dir_open(dir, 0, &derr);
  if (!d) {
    lmwb_input_error(error, "%s: cannot read model folder: %s", dir, derr->message);
    g_error_free(derr);
    return NULL;
  }
  GPtrArray *indexes = g_ptr_array_new_with_free_func(g_free);
  GPtrArray *files = g_ptr_array_new_with_free_func(g_free);
  const char *entry;
  while ((entry = g_dir_read_name(d))) {
    if (g_str_has_suffix(entry, ".safetensors.index.json")) g_ptr_array_add(indexes, g_strdup(entry));
    else if (g_str_has_suffix(entry, ".safetensors")) g_ptr_array_add(files, g_strdup(entry));
  }
  g_dir_close(d);
  g_ptr_array_sort(indexes, cmp_str_ptr);
  g_ptr_array_sort(files, cmp_str_ptr);

  LmwbSafetensors *st = NULL;
  char *single = g_build_filename(dir, "model.safetensors", NULL);
  if (indexes->len == 1) {
    path = g_build_filename(dir, indexes->pdata[0], NULL);
    st = open_index(path, dir, error);
    g_free(path);
  } else if (indexes->len > 1) {
    lmwb_input_error(error, "%s: several *.safetensors.index.json files (%s, %s, ...); open one "
                     "of them directly", dir, (char *)indexes->pdata[0], (char *)indexes->pdata[1]);
  } else if (g_file_test(single, G_FILE_TEST_IS_REGULAR)) {
    st = lmwb_safetensors_open(single, error);
  } else if (files->len == 1) {
    path = g_build_filename(dir, files->pdata[0], NULL);
    st = lmwb_safetensors_open(path, error);
    g_free(path);
  } else if (files->len == 0) {
    lmwb_input_error(error, "%s: no .safetensors file in the model folder", dir);
  } else {
    lmwb_input_error(error, "%s: several .safetensors files (%s, %s, ...) and no index; open one "
                     "of them directly", dir, (char *)files->pdata[0], (char *)files->pdata[1]);
  }
  g_free(single);
  g_ptr_array_free(indexes, TRUE);
  g_ptr_array_free(files, TRUE);
  return st;
}

size_t lmwb_safetensors_count(const LmwbSafetensors *st) { return st ? st->views->len : 0; }

const LmwbTensorView *lmwb_safetensors_at(const LmwbSafetensors *st, size_t i) {
  if (!st || i >= st->views->len) return NULL;
  return &g_array_index(st->views, LmwbTensorView, i);
}

const LmwbTensorView *lmwb_safetensors_find(const LmwbSafetensors *st, const char *name) {
  if (!st || !name) return NULL;
  guint idx = GPOINTER_TO_UINT(g_hash_table_lookup(st->by_name, name));
  return idx ? &g_array_index(st->views, LmwbTensorView, idx - 1) : NULL;
}

const char *lmwb_safetensors_metadata(const LmwbSafetensors *st, const char *key) {
  if (!st || !key) return NULL;
  return g_hash_table_lookup(st->metadata, key);
}

const char **lmwb_safetensors_metadata_keys(const LmwbSafetensors *st) {
  if (!st) return g_new0(const char *, 1);
  guint n = 0;
  const char **keys = (const char **)g_hash_table_get_keys_as_array(st->metadata, &n);
  qsort(keys, n, sizeof *keys, cmp_str_ptr);
  return keys;
}

gboolean lmwb_tensor_to_f32(const LmwbTensorView *t, float *dst, GError **error) {
  uint64_t numel, nbytes;
  size_t es = lmwb_dtype_size(t->dtype);
  if (t->ndim < 0 || t->ndim > LMWB_TENSOR_MAX_DIMS || !shape_numel(t->shape, t->ndim, &numel) ||
      !lmwb_mul_u64(numel, es, &nbytes) || nbytes != t->nbytes || (numel > 0 && !t->data)) {
    lmwb_input_error(error, "%s: tensor '%s': shape and byte size disagree", t->file ? t->file : "?",
                     t->name ? t->name : "?");
    return FALSE;
  }
  const guint8 *p = t->data;
  switch (t->dtype) {
    case LMWB_DTYPE_F32:
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
      if (numel) memcpy(dst, p, (size_t)nbytes);
#else
      for (uint64_t i = 0; i < numel; i++) {
        guint32 b;
        memcpy(&b, p + 4 * i, 4);
        b = GUINT32_FROM_LE(b);
        memcpy(dst + i, &b, 4);
      }
#endif
      return TRUE;
    case LMWB_DTYPE_F16:
      lmwb_f16_to_f32_n(p, dst, (size_t)numel);
      return TRUE;
    case LMWB_DTYPE_BF16:
      lmwb_bf16_to_f32_n(p, dst, (size_t)numel);
      return TRUE;
    case LMWB_DTYPE_F64:
      for (uint64_t i = 0; i < numel; i++) {
        guint64 b;
        double d;
        memcpy(&b, p + 8 * i, 8);
        b = GUINT64_FROM_LE(b);
        memcpy(&d, &b, 8);
        dst[i] = (float)d;
      }
      return TRUE;
    case LMWB_DTYPE_F8_E4M3:
      for (uint64_t i = 0; i < numel; i++) dst[i] = lmwb_f8e4m3_to_f32(p[i]);
      return TRUE;
    case LMWB_DTYPE_F8_E5M2:
      for (uint64_t i = 0; i < numel; i++) dst[i] = lmwb_f8e5m2_to_f32(p[i]);
      return TRUE;
    default:
      lmwb_input_error(error, "%s: tensor '%s' has dtype %s, which is not a float type",
                       t->file ? t->file : "?", t->name ? t->name : "?", lmwb_dtype_name(t->dtype));
      return FALSE;
  }
}

/* ---- writer ---------------------------------------------------------------------------- */

typedef struct {
  char *name;
  LmwbDtype dtype;
  int ndim;
  int64_t shape[LMWB_TENSOR_MAX_DIMS];
  const float *f32;  /* converted at save time, or */
  const void *raw;   /* written as is */
  uint64_t nbytes;
  guint order;
} WriterEntry;

struct LmwbSafetensorsWriter {
  GArray *entries;       /* WriterEntry */
  GHashTable *names;     /* set of entry names */
  GHashTable *metadata;  /* owned key -> owned value */
  GError *sticky;        /* first mistake in an add call */
};

LmwbSafetensorsWriter *lmwb_safetensors_writer_new(void) {
  LmwbSafetensorsWriter *w = g_new0(LmwbSafetensorsWriter, 1);
  w->entries = g_array_new(FALSE, TRUE, sizeof(WriterEntry));
  w->names = g_hash_table_new(g_str_hash, g_str_equal);
  w->metadata = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  return w;
}

void lmwb_safetensors_writer_free(LmwbSafetensorsWriter *w) {
  if (!w) return;
  for (guint i = 0; i < w->entries->len; i++) g_free(g_array_index(w->entries, WriterEntry, i).name);
  g_array_free(w->entries, TRUE);
  g_hash_table_destroy(w->names);
  g_hash_table_destroy(w->metadata);
  g_clear_error(&w->sticky);
  g_free(w);
}

static void writer_fail(LmwbSafetensorsWriter *w, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void writer_fail(LmwbSafetensorsWriter *w, const char *fmt, ...) {
  if (w->sticky) return;
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  w->sticky = g_error_new_literal(LMWB_ERROR, LMWB_ERROR_INPUT, msg);
  g_free(msg);
}

/* Checks common to both add functions; fills e except the data pointers. */
static gboolean writer_entry(LmwbSafetensorsWriter *w, const char *name, LmwbDtype dtype,
                             const int64_t *shape, int ndim, WriterEntry *e) {
  if (!name || !g_utf8_validate(name, -1, NULL) || strcmp(name, "__metadata__") == 0) {
    writer_fail(w, "safetensors writer: invalid tensor name '%s'", name ? name : "(null)");
    return FALSE;
  }
  if (g_hash_table_contains(w->names, name)) {
    writer_fail(w, "safetensors writer: tensor '%s' added twice", name);
    return FALSE;
  }
  if ((unsigned)dtype >= LMWB_DTYPE_COUNT) {
    writer_fail(w, "safetensors writer: tensor '%s': invalid dtype %d", name, (int)dtype);
    return FALSE;
  }
  if (ndim < 0 || ndim > LMWB_TENSOR_MAX_DIMS || (ndim > 0 && !shape)) {
    writer_fail(w, "safetensors writer: tensor '%s': %d dimensions (0..%d supported)", name, ndim,
                LMWB_TENSOR_MAX_DIMS);
    return FALSE;
  }
  memset(e, 0, sizeof *e);
  uint64_t numel;
  if (!shape_numel(shape, ndim, &numel) ||
      !lmwb_mul_u64(numel, lmwb_dtype_size(dtype), &e->nbytes)) {
    writer_fail(w, "safetensors writer: tensor '%s': negative or overflowing shape", name);
    return FALSE;
  }
  e->dtype = dtype;
  e->ndim = ndim;
  for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
  return TRUE;
}

static void writer_push(LmwbSafetensorsWriter *w, const char *name, WriterEntry *e) {
  e->name = g_strdup(name);
  e->order = w->entries->len;
  g_array_append_val(w->entries, *e);
  g_hash_table_add(w->names, g_array_index(w->entries, WriterEntry, w->entries->len - 1).name);
}

void lmwb_safetensors_writer_add_f32(LmwbSafetensorsWriter *w, const char *name, LmwbDtype store_as,
                                     const int64_t *shape, int ndim, const float *data) {
  g_return_if_fail(w != NULL);
  WriterEntry e;
  if (!writer_entry(w, name, store_as, shape, ndim, &e)) return;
  if (store_as != LMWB_DTYPE_F32 && store_as != LMWB_DTYPE_F16 && store_as != LMWB_DTYPE_BF16) {
    writer_fail(w, "safetensors writer: tensor '%s': cannot store floats as %s", name,
                lmwb_dtype_name(store_as));
    return;
  }
  if (e.nbytes > 0 && !data) {
    writer_fail(w, "safetensors writer: tensor '%s': no data", name);
    return;
  }
  e.f32 = data;
  writer_push(w, name, &e);
}

void lmwb_safetensors_writer_add_raw(LmwbSafetensorsWriter *w, const char *name, LmwbDtype dtype,
                                     const int64_t *shape, int ndim, const void *data,
                                     uint64_t nbytes) {
  g_return_if_fail(w != NULL);
  WriterEntry e;
  if (!writer_entry(w, name, dtype, shape, ndim, &e)) return;
  if (nbytes != e.nbytes || (nbytes > 0 && !data)) {
    writer_fail(w, "safetensors writer: tensor '%s': %" G_GUINT64_FORMAT " bytes given, shape x %s "
                "needs %" G_GUINT64_FORMAT, name, nbytes, lmwb_dtype_name(dtype), e.nbytes);
    return;
  }
  e.raw = data;
  writer_push(w, name, &e);
}

void lmwb_safetensors_writer_set_metadata(LmwbSafetensorsWriter *w, const char *key,
                                          const char *value) {
  g_return_if_fail(w != NULL);
  if (!key || !value || !g_utf8_validate(key, -1, NULL) || !g_utf8_validate(value, -1, NULL)) {
    writer_fail(w, "safetensors writer: metadata key/value missing or not UTF-8");
    return;
  }
  g_hash_table_insert(w->metadata, g_strdup(key), g_strdup(value));
}


static gint cmp_entry_ptr(gconstpointer a, gconstpointer b) {
  const WriterEntry *x = *(WriterEntry *const *)a, *y = *(WriterEntry *const *)b;
  size_t sx = lmwb_dtype_size(x->dtype), sy = lmwb_dtype_size(y->dtype);
  if (sx != sy) return sx > sy ? -1 : 1;
  return x->order < y->order ? -1 : (x->order > y->order ? 1 : 0);
}

/* Writes one float tensor converted to its stored dtype, a block at a time. */
static gboolean write_f32_entry(LmwbAtomicFile *f, const WriterEntry *e, GError **error) {
  size_t es = lmwb_dtype_size(e->dtype);
  uint64_t numel = e->nbytes / es;
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
  if (e->dtype == LMWB_DTYPE_F32) return lmwb_atomic_file_write(f, e->f32, (size_t)e->nbytes, error);
#endif
  enum { BLOCK = 16384 };
  guint8 buf[BLOCK * 4];
  for (uint64_t i = 0; i < numel; i += BLOCK) {
    size_t n = (size_t)MIN((uint64_t)BLOCK, numel - i);
    if (e->dtype == LMWB_DTYPE_F16) {
      lmwb_f32_to_f16_n(e->f32 + i, buf, n);
    } else if (e->dtype == LMWB_DTYPE_BF16) {
      lmwb_f32_to_bf16_n(e->f32 + i, buf, n);
    } else {
      for (size_t j = 0; j < n; j++) {
        guint32 b;
        memcpy(&b, e->f32 + i + j, 4);
        b = GUINT32_TO_LE(b);
        memcpy(buf + 4 * j, &b, 4);
      }
    }
    if (!lmwb_atomic_file_write(f, buf, n * es, error)) return FALSE;
  }
  return TRUE;
}

gboolean lmwb_safetensors_writer_save(LmwbSafetensorsWriter *w, const char *path, GError **error) {
  g_return_val_if_fail(w != NULL, FALSE);
  if (!path || !*path) {
    lmwb_input_error(error, "safetensors writer: no file name to save to");
    return FALSE;
  }
  if (w->sticky) {
    g_propagate_error(error, g_error_copy(w->sticky));
    g_prefix_error(error, "%s: not saved: ", path);
    return FALSE;
  }
  GPtrArray *order = g_ptr_array_sized_new(w->entries->len);
  for (guint i = 0; i < w->entries->len; i++)
    g_ptr_array_add(order, &g_array_index(w->entries, WriterEntry, i));
  g_ptr_array_sort(order, cmp_entry_ptr);

  GString *h = g_string_new("{");
  gboolean first = TRUE;
  if (g_hash_table_size(w->metadata) > 0) {
    guint n = 0;
    const char **keys = (const char **)g_hash_table_get_keys_as_array(w->metadata, &n);
    qsort(keys, n, sizeof *keys, cmp_str_ptr);
    g_string_append(h, "\"__metadata__\":{");
    for (guint i = 0; i < n; i++) {
      if (i) g_string_append_c(h, ',');
      lmwb_json_append_string(h, keys[i]);
      g_string_append_c(h, ':');
      lmwb_json_append_string(h, g_hash_table_lookup(w->metadata, keys[i]));
    }
    g_string_append_c(h, '}');
    g_free(keys);
    first = FALSE;
  }
  uint64_t offset = 0;
  for (guint i = 0; i < order->len; i++) {
    const WriterEntry *e = order->pdata[i];
    if (!first) g_string_append_c(h, ',');
    first = FALSE;
    lmwb_json_append_string(h, e->name);
    g_string_append_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", lmwb_dtype_name(e->dtype));
    for (int d = 0; d < e->ndim; d++)
      g_string_append_printf(h, "%s%" G_GINT64_FORMAT, d ? "," : "", e->shape[d]);
    g_string_append_printf(h, "],\"data_offsets\":[%" G_GUINT64_FORMAT ",%" G_GUINT64_FORMAT "]}",
                           offset, offset + e->nbytes);
    offset += e->nbytes;
  }
  g_string_append_c(h, '}');
  while (h->len % 8) g_string_append_c(h, ' '); /* keeps the buffer 8-byte aligned */

  gboolean ok = FALSE;
  LmwbAtomicFile *f = NULL;
  if (h->len > LMWB_SAFETENSORS_MAX_HEADER) {
    lmwb_input_error(error, "%s: not saved: header would be %zu bytes, over the 100 MB limit", path,
                     h->len);
    goto out;
  }
  f = lmwb_atomic_file_begin(path, error);
  if (!f) goto out;
  guint8 lenbuf[8];
  uint64_t hl = h->len;
  for (int i = 0; i < 8; i++) lenbuf[i] = (guint8)(hl >> (8 * i));
  if (!lmwb_atomic_file_write(f, lenbuf, 8, error) ||
      !lmwb_atomic_file_write(f, h->str, h->len, error))
    goto out;
  for (guint i = 0; i < order->len; i++) {
    const WriterEntry *e = order->pdata[i];
    gboolean wrote = e->raw ? lmwb_atomic_file_write(f, e->raw, (size_t)e->nbytes, error)
                            : write_f32_entry(f, e, error);
    if (!wrote) goto out;
  }
  ok = lmwb_atomic_file_commit(f, error);
  f = NULL;
out:
  lmwb_atomic_file_abort(f);
  g_string_free(h, TRUE);
  g_ptr_array_free(order, TRUE);
  return ok;
}
