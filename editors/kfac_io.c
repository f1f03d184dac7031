/* K-FAC factor folders: factors.safetensors + factors.json, with every check on load (kfac.h). */
#include "editors/kfac.h"
#include "app/core/atomic_file.h"
#include "app/core/errors.h"
#include "app/engine/linalg.h"
#include "app/formats/json_input.h"
#include "app/formats/json_text.h"
#include "app/formats/safetensors.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define META_MAX_BYTES (1u << 20)

static float *to_float(const double *x, size_t n) {
  float *f = g_new(float, n);
  for (size_t i = 0; i < n; i++) f[i] = (float)x[i];
  return f;
}

JsonNode *lmwb_kfac_factors_json(const LmwbKfacFactors *f) {
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "format");
  json_builder_add_string_value(b, "lmwb-kfac");
  json_builder_set_member_name(b, "model");
  json_builder_add_string_value(b, f->model ? f->model : "");
  json_builder_set_member_name(b, "fingerprint");
  json_builder_add_string_value(b, f->fingerprint);
  const char *ik[] = {"tokens", "positions", "windows", "context", "seed"};
  gint64 iv[] = {f->tokens, f->positions, f->windows, f->context, (gint64)f->seed};
  for (int i = 0; i < 5; i++) {
    json_builder_set_member_name(b, ik[i]);
    json_builder_add_int_value(b, iv[i]);
  }
  json_builder_set_member_name(b, "labels");
  json_builder_add_string_value(b, lmwb_kfac_labels_name(f->labels));
  json_builder_set_member_name(b, "factors");
  json_builder_begin_array(b);
  for (int i = 0; i < f->n; i++) {
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "layer");
    json_builder_add_int_value(b, f->f[i].layer);
    json_builder_set_member_name(b, "matrix");
    json_builder_add_string_value(b, lmwb_kfac_matrix_name(f->f[i].matrix));
    json_builder_set_member_name(b, "in");
    json_builder_add_int_value(b, f->f[i].d_in);
    json_builder_set_member_name(b, "out");
    json_builder_add_int_value(b, f->f[i].d_out);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  if (f->n_parts) {
    json_builder_set_member_name(b, "parts");
    json_builder_begin_array(b);
    for (int i = 0; i < f->n_parts; i++) {
      const LmwbKfacPart *p = &f->parts[i];
      json_builder_begin_object(b);
      json_builder_set_member_name(b, "source");
      json_builder_add_string_value(b, p->source);
      const char *pk[] = {"tokens", "positions", "windows", "seed"};
      gint64 pv[] = {p->tokens, p->positions, p->windows, (gint64)p->seed};
      for (int k = 0; k < 4; k++) {
        json_builder_set_member_name(b, pk[k]);
        json_builder_add_int_value(b, pv[k]);
      }
      json_builder_set_member_name(b, "weight");
      json_builder_add_double_value(b, p->weight);
      json_builder_end_object(b);
    }
    json_builder_end_array(b);
  }
  json_builder_end_object(b);
  return json_builder_get_root(b);
}

gboolean lmwb_kfac_save(const LmwbKfacFactors *f, const char *dir, GError **error) {
  if (g_mkdir_with_parents(dir, 0755) != 0) {
    lmwb_input_error(error, "%s: cannot create the folder", dir);
    return FALSE;
  }
  LmwbSafetensorsWriter *w = lmwb_safetensors_writer_new();
  GPtrArray *keep = g_ptr_array_new_with_free_func(g_free);
  for (int i = 0; i < f->n; i++) {
    const LmwbKfacFactor *x = &f->f[i];
    for (int k = 0; k < 2; k++) {
      int d = k ? x->d_out : x->d_in;
      float *data = to_float(k ? x->G : x->A, (size_t)d * d);
      char *nm = g_strdup_printf("blocks.%d.mlp.%s.%s", x->layer, lmwb_kfac_matrix_name(x->matrix), k ? "G" : "A");
      g_ptr_array_add(keep, data);
      g_ptr_array_add(keep, nm);
      int64_t shape[2] = {d, d};
      lmwb_safetensors_writer_add_f32(w, nm, LMWB_DTYPE_F32, shape, 2, data);
    }
  }
  lmwb_safetensors_writer_set_metadata(w, "format", "lmwb-kfac");
  g_autofree char *st_path = g_build_filename(dir, LMWB_KFAC_FACTORS_FILE, NULL);
  gboolean ok = lmwb_safetensors_writer_save(w, st_path, error);
  lmwb_safetensors_writer_free(w);
  g_ptr_array_free(keep, TRUE);
  if (!ok) return FALSE;

  g_autoptr(JsonNode) root = lmwb_kfac_factors_json(f);
  size_t len = 0;
  g_autofree char *text = lmwb_json_generate(root, TRUE, &len);
  g_autofree char *meta = g_build_filename(dir, LMWB_KFAC_META_FILE, NULL);
  return lmwb_file_write_atomic(meta, text, len, error);
}

/* "blocks.{L}.mlp.{up|gate|down}.{A|G}" */
static gboolean parse_name(const char *nm, int *layer, LmwbKfacMatrix *m, int *isG) {
  char mat[8], which;
  int L, used = 0;
  if (sscanf(nm, "blocks.%d.mlp.%7[a-z].%c%n", &L, mat, &which, &used) != 3 || nm[used] || L < 0) return FALSE;
  if (which != 'A' && which != 'G') return FALSE;
  for (int k = 0; k < LMWB_KFAC_N_MATRICES; k++)
    if (!strcmp(mat, lmwb_kfac_matrix_name((LmwbKfacMatrix)k))) {
      *layer = L;
      *m = (LmwbKfacMatrix)k;
      *isG = which == 'G';
      return TRUE;
    }
  return FALSE;
}

/* factors.json's list of matrices and their sizes, which the tensors must match one for one. */
typedef struct {
  int layer, matrix, d_in, d_out;
} Listed;

static gboolean read_list(JsonObject *o, const char *path, GArray *list, GError **error) {
  JsonNode *n = json_object_get_member(o, "factors");
  if (!n || !JSON_NODE_HOLDS_ARRAY(n)) {
    lmwb_input_error(error, "%s: \"factors\" is missing or not an array", path);
    return FALSE;
  }
  JsonArray *a = json_node_get_array(n);
  for (guint i = 0; i < json_array_get_length(a); i++) {
    JsonNode *e = json_array_get_element(a, i);
    JsonObject *x = JSON_NODE_HOLDS_OBJECT(e) ? json_node_get_object(e) : NULL;
    const char *ik[] = {"layer", "in", "out"};
    gint64 v[3];
    for (int k = 0; k < 3; k++) {
      JsonNode *m = x ? json_object_get_member(x, ik[k]) : NULL;
      if (!m || !JSON_NODE_HOLDS_VALUE(m) || json_node_get_value_type(m) != G_TYPE_INT64 ||
          json_node_get_int(m) < 0 || json_node_get_int(m) > G_MAXINT) {
        lmwb_input_error(error, "%s: factors[%u].%s is missing or not a non-negative integer", path, i, ik[k]);
        return FALSE;
      }
      v[k] = json_node_get_int(m);
    }
    JsonNode *mn = json_object_get_member(x, "matrix");
    const char *ms = mn && JSON_NODE_HOLDS_VALUE(mn) && json_node_get_value_type(mn) == G_TYPE_STRING
                         ? json_node_get_string(mn) : "";
    unsigned mask = 0;
    if (!lmwb_kfac_matrices_parse(ms, &mask, NULL) || (mask & (mask - 1))) {
      lmwb_input_error(error, "%s: factors[%u].matrix \"%s\" is not up, gate or down", path, i, ms);
      return FALSE;
    }
    Listed l = {(int)v[0], __builtin_ctz(mask), (int)v[1], (int)v[2]};
    g_array_append_val(list, l);
  }
  return TRUE;
}

static gboolean read_meta(LmwbKfacFactors *f, const char *path, GArray *list, GError **error) {
  JsonNode *root = lmwb_json_load_file(path, META_MAX_BYTES, error);
  if (!root) return FALSE;
  gboolean ok = FALSE;
  JsonObject *o = JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  if (!o) {
    lmwb_input_error(error, "%s: not a JSON object", path);
    goto out;
  }
  const char *sk[] = {"model", "fingerprint", "labels"};
  for (int i = 0; i < 3; i++) {
    JsonNode *n = json_object_get_member(o, sk[i]);
    if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) {
      lmwb_input_error(error, "%s: \"%s\" is missing or not a string", path, sk[i]);
      goto out;
    }
  }
  const char *ik[] = {"tokens", "positions", "windows", "context", "seed"};
  gint64 iv[5];
  for (int i = 0; i < 5; i++) {
    JsonNode *n = json_object_get_member(o, ik[i]);
    if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64 || json_node_get_int(n) < 0) {
      lmwb_input_error(error, "%s: \"%s\" is missing or not a non-negative integer", path, ik[i]);
      goto out;
    }
    iv[i] = json_node_get_int(n);
  }
  f->tokens = iv[0], f->positions = iv[1], f->windows = iv[2], f->context = (int)MIN(iv[3], G_MAXINT);
  f->seed = (guint64)iv[4];
  f->model = g_strdup(json_object_get_string_member(o, "model"));
  g_strlcpy(f->fingerprint, json_object_get_string_member(o, "fingerprint"), sizeof f->fingerprint);
  const char *labels = json_object_get_string_member(o, "labels");
  if (strcmp(labels, "sample") && strcmp(labels, "data")) {
    lmwb_input_error(error, "%s: \"labels\" is \"%s\", not sample or data", path, labels);
    goto out;
  }
  f->labels = !strcmp(labels, "data") ? LMWB_KFAC_LABELS_DATA : LMWB_KFAC_LABELS_SAMPLE;
  ok = read_list(o, path, list, error);
out:
  json_node_unref(root);
  return ok;
}

static int cmp_factor(const void *a, const void *b) {
  const LmwbKfacFactor *x = a, *y = b;
  return x->layer != y->layer ? x->layer - y->layer : (int)x->matrix - (int)y->matrix;
}

/* One tensor into a double matrix, checked square, finite and symmetric. */
static double *read_tensor(const LmwbTensorView *v, const char *path, int *d, GError **error) {
  if (v->ndim != 2 || v->shape[0] != v->shape[1] || v->shape[0] < 1 || v->shape[0] > 65536) {
    lmwb_input_error(error, "%s: tensor %s must be a square matrix [n, n]", path, v->name);
    return NULL;
  }
  int n = (int)v->shape[0];
  size_t nn = (size_t)n * n;
  g_autofree float *f32 = g_try_new(float, nn);
  if (!f32) {
    lmwb_input_error(error, "%s: tensor %s: out of memory", path, v->name);
    return NULL;
  }
  if (!lmwb_tensor_to_f32(v, f32, error)) return NULL;
  double *x = g_new(double, nn);
  for (size_t i = 0; i < nn; i++) x[i] = f32[i];
  g_autofree char *what = g_strdup_printf("%s: tensor %s", path, v->name);
  if (!lmwb_linalg_sym_check(n, x, what, error)) {
    g_free(x);
    return NULL;
  }
  *d = n;
  return x;
}

/* The factors against a model: layers, matrices, shapes, fingerprint. */
static gboolean check_model(const LmwbKfacFactors *f, const LmwbModel *model, const char *dir, GError **error) {
  for (int i = 0; i < f->n; i++) {
    const LmwbKfacFactor *x = &f->f[i];
    LmwbKfacInfo info;
    g_autofree char *nm = g_strdup_printf("blocks.%d.mlp.%s", x->layer, lmwb_kfac_matrix_name(x->matrix));
    if (!lmwb_kfac_info(&model->cfg, x->layer, x->matrix, &info, error)) {
      g_prefix_error(error, "%s: tensor %s.A/.G: ", dir, nm);
      return FALSE;
    }
    if (x->d_in != info.d_in || x->d_out != info.d_out) {
      lmwb_input_error(error, "%s: tensors %s.A [%d, %d] and %s.G [%d, %d] do not fit the model's %s (expected "
                              "A [%d, %d], G [%d, %d])", dir, nm, x->d_in, x->d_in, nm, x->d_out, x->d_out,
                       info.param, info.d_in, info.d_in, info.d_out, info.d_out);
      return FALSE;
    }
  }
  char fp[65];
  if (!lmwb_kfac_fingerprint(model, fp, error)) return FALSE;
  if (strcmp(fp, f->fingerprint)) {
    lmwb_input_error(error, "%s: the factors were collected on another model (%s; fingerprint %.12s…, this model's "
                            "%.12s…): collect them on this one", dir, f->model, f->fingerprint, fp);
    return FALSE;
  }
  return TRUE;
}

LmwbKfacFactors *lmwb_kfac_load(const char *dir, const LmwbModel *model, GError **error) {
  if (!g_file_test(dir, G_FILE_TEST_IS_DIR)) {
    lmwb_input_error(error, "%s: no such factor folder", dir);
    return NULL;
  }
  g_autofree char *meta = g_build_filename(dir, LMWB_KFAC_META_FILE, NULL);
  g_autofree char *path = g_build_filename(dir, LMWB_KFAC_FACTORS_FILE, NULL);
  LmwbKfacFactors *f = g_new0(LmwbKfacFactors, 1);
  LmwbSafetensors *st = NULL;
  g_autoptr(GArray) list = g_array_new(FALSE, FALSE, sizeof(Listed));
  if (!read_meta(f, meta, list, error)) goto fail;
  if (!(st = lmwb_safetensors_open(path, error))) goto fail;
  size_t nt = lmwb_safetensors_count(st);
  f->f = g_new0(LmwbKfacFactor, nt + 1);
  for (size_t i = 0; i < nt; i++) {
    const LmwbTensorView *v = lmwb_safetensors_at(st, i);
    int layer, isG, d = 0;
    LmwbKfacMatrix m;
    if (!parse_name(v->name, &layer, &m, &isG)) {
      lmwb_input_error(error, "%s: tensor %s is not named blocks.L.mlp.{up|gate|down}.{A|G}", path, v->name);
      goto fail;
    }
    LmwbKfacFactor *x = (LmwbKfacFactor *)lmwb_kfac_factors_find(f, layer, m);
    if (!x) {
      x = &f->f[f->n++];
      x->layer = layer;
      x->matrix = m;
    }
    double *data = read_tensor(v, path, &d, error);
    if (!data) goto fail;
    if (isG) x->G = data, x->d_out = d;
    else x->A = data, x->d_in = d;
  }
  for (int i = 0; i < f->n; i++)
    if (!f->f[i].A || !f->f[i].G) {
      lmwb_input_error(error, "%s: tensor blocks.%d.mlp.%s.%s is missing (each matrix needs A and G)", path,
                       f->f[i].layer, lmwb_kfac_matrix_name(f->f[i].matrix), f->f[i].A ? "G" : "A");
      goto fail;
    }
  if (!f->n) {
    lmwb_input_error(error, "%s: holds no factors", path);
    goto fail;
  }
  for (int i = 0; i < f->n; i++) {
    const LmwbKfacFactor *x = &f->f[i];
    gboolean listed = FALSE;
    for (guint k = 0; k < list->len; k++) {
      Listed *l = &g_array_index(list, Listed, k);
      listed |= l->layer == x->layer && l->matrix == (int)x->matrix && l->d_in == x->d_in && l->d_out == x->d_out;
    }
    if (!listed || list->len != (guint)f->n) {
      lmwb_input_error(error, "%s: tensors blocks.%d.mlp.%s.A [%d, %d] / .G [%d, %d] do not match the matrices "
                              "factors.json lists", path, x->layer, lmwb_kfac_matrix_name(x->matrix), x->d_in, x->d_in,
                       x->d_out, x->d_out);
      goto fail;
    }
  }
  qsort(f->f, (size_t)f->n, sizeof *f->f, cmp_factor);
  if (model && !check_model(f, model, dir, error)) goto fail;
  lmwb_safetensors_close(st);
  return f;
fail:
  if (st) lmwb_safetensors_close(st);
  lmwb_kfac_factors_free(f);
  return NULL;
}
