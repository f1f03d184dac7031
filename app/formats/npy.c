#include "app/formats/npy.h"

#include <string.h>

#include "app/core/atomic_file.h"
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/core/memory.h"
#include "app/formats/half.h"

/* ---- writing --------------------------------------------------------------------------- */

static gboolean npy_write(const char *path, const char *descr, size_t itemsize, const void *data,
                          const int64_t *shape, int ndim, GError **error) {
  if (ndim < 0 || ndim > LMWB_NPY_MAX_DIMS || (ndim > 0 && !shape)) {
    lmwb_input_error(error, "%s: cannot write .npy with %d dimensions (0..%d)", path, ndim,
                     LMWB_NPY_MAX_DIMS);
    return FALSE;
  }
  uint64_t numel = 1, nbytes;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0 || !lmwb_mul_u64(numel, (uint64_t)shape[i], &numel)) {
      lmwb_input_error(error, "%s: cannot write .npy: dimension %d is negative or overflows", path,
                       i);
      return FALSE;
    }
  }
  if (!lmwb_mul_u64(numel, itemsize, &nbytes) || nbytes > SIZE_MAX) {
    lmwb_input_error(error, "%s: cannot write .npy: size overflows", path);
    return FALSE;
  }
  if (nbytes > 0 && !data) {
    lmwb_input_error(error, "%s: cannot write .npy: no data", path);
    return FALSE;
  }
  GString *h = g_string_new(NULL);
  g_string_append_printf(h, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
  for (int i = 0; i < ndim; i++) g_string_append_printf(h, "%s%" G_GINT64_FORMAT, i ? ", " : "", shape[i]);
  g_string_append(h, ndim == 1 ? ",), }" : "), }");
  /* Like numpy: room for the first dimension to grow to 21 digits (so the header can be
   * rewritten in place when appending), then spaces and '\n' up to a 64-byte boundary. */
  if (ndim > 0) {
    char digits[32];
    int nd = g_snprintf(digits, sizeof digits, "%" G_GINT64_FORMAT, shape[0]);
    for (int i = nd; i < 21; i++) g_string_append_c(h, ' ');
  }
  gboolean v2 = FALSE;
  size_t prefix = 10;
  if ((h->len + 1 + 63) / 64 * 64 > 65535) {
    v2 = TRUE;
    prefix = 12;
  }
  while ((prefix + h->len + 1) % 64) g_string_append_c(h, ' ');
  g_string_append_c(h, '\n');

  guint8 pre[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', v2 ? 2 : 1, 0};
  uint32_t hl = (uint32_t)h->len;
  for (size_t i = 0; i < prefix - 8; i++) pre[8 + i] = (guint8)(hl >> (8 * i));

  gboolean ok = FALSE;
  LmwbAtomicFile *f = lmwb_atomic_file_begin(path, error);
  if (!f) goto out;
  if (!lmwb_atomic_file_write(f, pre, prefix, error) ||
      !lmwb_atomic_file_write(f, h->str, h->len, error))
    goto out;
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
  if (!lmwb_atomic_file_write(f, data, (size_t)nbytes, error)) goto out;
#else
  {
    const guint8 *src = data;
    guint8 buf[8];
    for (uint64_t i = 0; i < numel; i++) {
      for (size_t b = 0; b < itemsize; b++) buf[b] = src[i * itemsize + itemsize - 1 - b];
      if (!lmwb_atomic_file_write(f, buf, itemsize, error)) goto out;
    }
  }
#endif
  ok = lmwb_atomic_file_commit(f, error);
  f = NULL;
out:
  lmwb_atomic_file_abort(f);
  g_string_free(h, TRUE);
  return ok;
}

gboolean lmwb_npy_write_f32(const char *path, const float *data, const int64_t *shape, int ndim,
                            GError **error) {
  return npy_write(path, "<f4", 4, data, shape, ndim, error);
}

gboolean lmwb_npy_write_f64(const char *path, const double *data, const int64_t *shape, int ndim,
                            GError **error) {
  return npy_write(path, "<f8", 8, data, shape, ndim, error);
}

gboolean lmwb_npy_write_i32(const char *path, const int32_t *data, const int64_t *shape, int ndim,
                            GError **error) {
  return npy_write(path, "<i4", 4, data, shape, ndim, error);
}

gboolean lmwb_npy_write_i64(const char *path, const int64_t *data, const int64_t *shape, int ndim,
                            GError **error) {
  return npy_write(path, "<i8", 8, data, shape, ndim, error);
}

/* ---- reading --------------------------------------------------------------------------- */

typedef struct {
  char kind;        /* 'f', 'i', 'u' */
  size_t itemsize;
  gboolean big;     /* big-endian data */
  int ndim;
  int64_t shape[LMWB_NPY_MAX_DIMS];
  uint64_t numel;
  const guint8 *data;
} NpyInfo;

typedef struct {
  const char *p, *end;
} Lex;

static void skip_ws(Lex *l) {
  while (l->p < l->end && (*l->p == ' ' || *l->p == '\t' || *l->p == '\n' || *l->p == '\r')) l->p++;
}

static gboolean eat(Lex *l, char c) {
  skip_ws(l);
  if (l->p < l->end && *l->p == c) {
    l->p++;
    return TRUE;
  }
  return FALSE;
}

/* A quoted Python string without escapes, copied into buf (bounded). */
static gboolean py_string(Lex *l, char *buf, size_t cap) {
  skip_ws(l);
  if (l->p >= l->end || (*l->p != '\'' && *l->p != '"')) return FALSE;
  char q = *l->p++;
  size_t n = 0;
  while (l->p < l->end && *l->p != q) {
    if (*l->p == '\\' || n + 1 >= cap) return FALSE;
    buf[n++] = *l->p++;
  }
  if (l->p >= l->end) return FALSE;
  l->p++;
  buf[n] = 0;
  return TRUE;
}

static gboolean py_word(Lex *l, const char *w) {
  skip_ws(l);
  size_t n = strlen(w);
  if ((size_t)(l->end - l->p) >= n && memcmp(l->p, w, n) == 0) {
    l->p += n;
    return TRUE;
  }
  return FALSE;
}

/* Header dict: {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } in any key order. */
static gboolean parse_header(const char *name, const char *text, size_t len, NpyInfo *info,
                             char *descr, size_t descr_cap, GError **error) {
  Lex l = {text, text + len};
  gboolean have_descr = FALSE, have_order = FALSE, have_shape = FALSE, fortran = FALSE;
  if (!eat(&l, '{')) goto bad;
  for (;;) {
    if (eat(&l, '}')) break;
    char key[32];
    if (!py_string(&l, key, sizeof key) || !eat(&l, ':')) goto bad;
    if (strcmp(key, "descr") == 0) {
      if (!py_string(&l, descr, descr_cap)) {
        lmwb_input_error(error, "%s: .npy header field 'descr' is not a simple dtype string "
                         "(structured arrays are not supported)", name);
        return FALSE;
      }
      have_descr = TRUE;
    } else if (strcmp(key, "fortran_order") == 0) {
      if (py_word(&l, "True")) fortran = TRUE;
      else if (py_word(&l, "False")) fortran = FALSE;
      else goto bad;
      have_order = TRUE;
    } else if (strcmp(key, "shape") == 0) {
      char close;
      if (eat(&l, '(')) close = ')';
      else if (eat(&l, '[')) close = ']';
      else goto bad;
      info->ndim = 0;
      for (;;) {
        if (eat(&l, close)) break;
        skip_ws(&l);
        int64_t v = 0;
        int digits = 0;
        while (l.p < l.end && *l.p >= '0' && *l.p <= '9') {
          if (v > (INT64_MAX - 9) / 10) {
            lmwb_input_error(error, "%s: .npy header field 'shape' has a dimension that "
                             "overflows 64 bits", name);
            return FALSE;
          }
          v = v * 10 + (*l.p++ - '0');
          digits++;
        }
        if (!digits) goto bad;
        if (l.p < l.end && *l.p == 'L') l.p++; /* Python 2 long suffix */
        if (info->ndim >= LMWB_NPY_MAX_DIMS) {
          lmwb_input_error(error, "%s: .npy header field 'shape' has more than %d dimensions",
                           name, LMWB_NPY_MAX_DIMS);
          return FALSE;
        }
        info->shape[info->ndim++] = v;
        if (eat(&l, ',')) continue;
        if (eat(&l, close)) break;
        goto bad;
      }
      have_shape = TRUE;
    } else {
      lmwb_input_error(error, "%s: .npy header has an unexpected key '%s'", name, key);
      return FALSE;
    }
    if (eat(&l, ',')) continue;
    if (eat(&l, '}')) break;
    goto bad;
  }
  skip_ws(&l);
  if (l.p != l.end) goto bad;
  if (!have_descr || !have_order || !have_shape) {
    lmwb_input_error(error, "%s: .npy header lacks %s", name,
                     !have_descr ? "'descr'" : !have_order ? "'fortran_order'" : "'shape'");
    return FALSE;
  }
  if (fortran) {
    lmwb_input_error(error, "%s: .npy array is in Fortran order; only C order is supported", name);
    return FALSE;
  }
  return TRUE;
bad:
  lmwb_input_error(error, "%s: .npy header is not a valid dict of 'descr', 'fortran_order' and "
                   "'shape' (near byte %zu)", name, (size_t)(l.p - text));
  return FALSE;
}

static gboolean npy_parse(const guint8 *data, size_t len, const char *name, NpyInfo *info,
                          char *descr, size_t descr_cap, GError **error) {
  memset(info, 0, sizeof *info);
  if (len < 10 || memcmp(data, "\x93NUMPY", 6) != 0) {
    lmwb_input_error(error, "%s: not a .npy file (missing \\x93NUMPY magic)", name);
    return FALSE;
  }
  unsigned major = data[6];
  size_t prefix, hlen;
  if (major == 1) {
    prefix = 10;
    hlen = (size_t)data[8] | ((size_t)data[9] << 8);
  } else if (major == 2 || major == 3) {
    if (len < 12) {
      lmwb_input_error(error, "%s: .npy file truncated in its header", name);
      return FALSE;
    }
    prefix = 12;
    hlen = (size_t)data[8] | ((size_t)data[9] << 8) | ((size_t)data[10] << 16) |
           ((size_t)data[11] << 24);
  } else {
    lmwb_input_error(error, "%s: unsupported .npy format version %u.%u", name, major, data[7]);
    return FALSE;
  }
  if (hlen > len - prefix) {
    lmwb_input_error(error, "%s: .npy header length %zu runs past the end of the file (%zu bytes)",
                     name, hlen, len);
    return FALSE;
  }
  if (!parse_header(name, (const char *)data + prefix, hlen, info, descr, descr_cap, error))
    return FALSE;
  /* descr: byte order ('<', '>', '|', '='), kind, item size. */
  size_t dl = strlen(descr);
  gboolean ok = dl == 3 && strchr("<>|=", descr[0]) && strchr("fiu", descr[1]) &&
                strchr("1248", descr[2]);
  if (ok) {
    info->kind = descr[1];
    info->itemsize = (size_t)(descr[2] - '0');
    info->big = descr[0] == '>' || (descr[0] == '=' && G_BYTE_ORDER == G_BIG_ENDIAN);
    if (info->kind == 'f' && info->itemsize == 1) ok = FALSE;
  }
  if (!ok) {
    lmwb_input_error(error, "%s: .npy dtype '%s' is not supported", name, descr);
    return FALSE;
  }
  uint64_t numel = 1, nbytes;
  for (int i = 0; i < info->ndim; i++) {
    if (!lmwb_mul_u64(numel, (uint64_t)info->shape[i], &numel) || numel > (uint64_t)INT64_MAX) {
      lmwb_input_error(error, "%s: .npy shape overflows 64 bits", name);
      return FALSE;
    }
  }
  size_t avail = len - prefix - hlen;
  if (!lmwb_mul_u64(numel, info->itemsize, &nbytes) || nbytes != avail) {
    lmwb_input_error(error, "%s: .npy data is %zu bytes but shape and dtype '%s' need %"
                     G_GUINT64_FORMAT "%s", name, avail, descr, nbytes,
                     nbytes > avail ? " (file truncated?)" : "");
    return FALSE;
  }
  info->numel = numel;
  info->data = data + prefix + hlen;
  return TRUE;
}

static uint64_t load_uint(const guint8 *p, size_t size, gboolean big) {
  uint64_t v = 0;
  for (size_t i = 0; i < size; i++) v |= (uint64_t)p[big ? size - 1 - i : i] << (8 * i);
  return v;
}

static int64_t sign_extend(uint64_t v, size_t size) {
  if (size == 8) return (int64_t)v;
  uint64_t m = 1ull << (8 * size - 1);
  return (int64_t)((v ^ m) - m);
}

static void copy_shape(const NpyInfo *info, int64_t *shape, int *ndim) {
  if (ndim) *ndim = info->ndim;
  if (shape)
    for (int i = 0; i < info->ndim; i++) shape[i] = info->shape[i];
}

/* Parses a float .npy image into a new array of float (out_size 4) or double (out_size 8). */
static void *parse_float(const void *data, size_t len, const char *name, size_t out_size,
                         int64_t shape[LMWB_NPY_MAX_DIMS], int *ndim, GError **error) {
  NpyInfo info;
  char descr[16];
  if (!name) name = "<memory>";
  if (!data) len = 0;
  if (!npy_parse(data ? data : (const void *)"", len, name, &info, descr, sizeof descr, error))
    return NULL;
  if (info.kind != 'f') {
    lmwb_input_error(error, "%s: .npy dtype '%s' is not a float type", name, descr);
    return NULL;
  }
  uint64_t bytes = info.numel * out_size;
  if (!lmwb_memory_check(bytes, name, error)) return NULL;
  guint8 *out = g_try_malloc(bytes ? (size_t)bytes : 1);
  if (!out) {
    lmwb_input_error(error, "%s: out of memory for %" G_GUINT64_FORMAT " bytes", name, bytes);
    return NULL;
  }
  const guint8 *p = info.data;
  for (uint64_t i = 0; i < info.numel; i++) {
    uint64_t v = load_uint(p + i * info.itemsize, info.itemsize, info.big);
    double d; /* every f2 and f4 value is exact in double */
    if (info.itemsize == 4) {
      uint32_t b = (uint32_t)v;
      float f;
      memcpy(&f, &b, 4);
      if (out_size == 4) { /* bit for bit, NaN payloads included */
        memcpy(out + i * 4, &f, 4);
        continue;
      }
      d = f;
    } else if (info.itemsize == 8) {
      memcpy(&d, &v, 8);
    } else {
      d = lmwb_f16_to_f32((uint16_t)v);
    }
    if (out_size == 4) {
      float f = (float)d;
      memcpy(out + i * 4, &f, 4);
    } else {
      memcpy(out + i * 8, &d, 8);
    }
  }
  copy_shape(&info, shape, ndim);
  return out;
}

float *lmwb_npy_parse_f32(const void *data, size_t len, const char *name,
                          int64_t shape[LMWB_NPY_MAX_DIMS], int *ndim, GError **error) {
  return parse_float(data, len, name, sizeof(float), shape, ndim, error);
}

double *lmwb_npy_parse_f64(const void *data, size_t len, const char *name,
                           int64_t shape[LMWB_NPY_MAX_DIMS], int *ndim, GError **error) {
  return parse_float(data, len, name, sizeof(double), shape, ndim, error);
}

static GMappedFile *map_file(const char *path, GError **error) {
  if (!path) {
    lmwb_input_error(error, "no .npy file given");
    return NULL;
  }
  return lmwb_file_map(path, UINT64_MAX, error);
}

static void *read_float(const char *path, size_t out_size, int64_t shape[LMWB_NPY_MAX_DIMS],
                        int *ndim, GError **error) {
  GMappedFile *map = map_file(path, error);
  if (!map) return NULL;
  void *out = parse_float(g_mapped_file_get_contents(map), g_mapped_file_get_length(map), path,
                          out_size, shape, ndim, error);
  g_mapped_file_unref(map);
  return out;
}

float *lmwb_npy_read_f32(const char *path, int64_t shape[LMWB_NPY_MAX_DIMS], int *ndim,
                         GError **error) {
  return read_float(path, sizeof(float), shape, ndim, error);
}

double *lmwb_npy_read_f64(const char *path, int64_t shape[LMWB_NPY_MAX_DIMS], int *ndim,
                          GError **error) {
  return read_float(path, sizeof(double), shape, ndim, error);
}

int32_t *lmwb_npy_read_i32(const char *path, int64_t shape[LMWB_NPY_MAX_DIMS], int *ndim,
                           GError **error) {
  GMappedFile *map = map_file(path, error);
  if (!map) return NULL;
  NpyInfo info;
  char descr[16];
  int32_t *out = NULL;
  const guint8 *data = (const guint8 *)g_mapped_file_get_contents(map);
  if (!npy_parse(data ? data : (const guint8 *)"", g_mapped_file_get_length(map), path, &info,
                 descr, sizeof descr, error))
    goto out;
  if (info.kind == 'f' || (info.kind == 'u' && info.itemsize > 2)) {
    lmwb_input_error(error, "%s: .npy dtype '%s' is not an integer type that fits int32", path,
                     descr);
    goto out;
  }
  uint64_t bytes = info.numel * sizeof(int32_t);
  if (!lmwb_memory_check(bytes, path, error)) goto out;
  out = g_try_malloc(bytes ? (size_t)bytes : 1);
  if (!out) {
    lmwb_input_error(error, "%s: out of memory for %" G_GUINT64_FORMAT " bytes", path, bytes);
    goto out;
  }
  for (uint64_t i = 0; i < info.numel; i++) {
    uint64_t v = load_uint(info.data + i * info.itemsize, info.itemsize, info.big);
    int64_t s = info.kind == 'u' ? (int64_t)v : sign_extend(v, info.itemsize);
    if (s < INT32_MIN || s > INT32_MAX) {
      lmwb_input_error(error, "%s: .npy element %" G_GUINT64_FORMAT " (%" G_GINT64_FORMAT
                       ") does not fit in int32", path, i, s);
      g_free(out);
      out = NULL;
      goto out;
    }
    out[i] = (int32_t)s;
  }
  copy_shape(&info, shape, ndim);
out:
  g_mapped_file_unref(map);
  return out;
}
