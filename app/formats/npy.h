/* NumPy .npy arrays (format versions 1.0, 2.0 and 3.0), for exporting results and reading
 * arrays users bring.
 * Writers: little-endian, C order, version 1.0 header padded with spaces so the data starts at
 * a multiple of 64 bytes (2.0 if the header needs more than 65535 bytes); saved atomically.
 * Readers: C order only; the whole file is checked (magic, header dict, dtype, shape, exact
 * data length) before anything is allocated, and the allocation is checked against the memory
 * budget. Errors are LMWB_ERROR_INPUT naming the file and the field. `shape` receives up to
 * LMWB_NPY_MAX_DIMS dims; a 0-d array has ndim 0 and one element. Returned arrays are freed
 * with g_free (never NULL on success, even for zero elements). */
#pragma once
#include <glib.h>
#include <stddef.h>
#include <stdint.h>

#define LMWB_NPY_MAX_DIMS 8

gboolean lmwb_npy_write_f32(const char *path, const float *data, const int64_t *shape, int ndim,
                            GError **error);
gboolean lmwb_npy_write_f64(const char *path, const double *data, const int64_t *shape, int ndim,
                            GError **error);
gboolean lmwb_npy_write_i32(const char *path, const int32_t *data, const int64_t *shape, int ndim,
                            GError **error);
gboolean lmwb_npy_write_i64(const char *path, const int64_t *data, const int64_t *shape, int ndim,
                            GError **error);

/* Accepts '<f4', '<f8' and '<f2' (converted to float). */
float *lmwb_npy_read_f32(const char *path, int64_t shape[LMWB_NPY_MAX_DIMS], int *ndim,
                         GError **error);
/* Accepts '<f8' (exact), '<f4' and '<f2' (widened exactly to double). */
double *lmwb_npy_read_f64(const char *path, int64_t shape[LMWB_NPY_MAX_DIMS], int *ndim,
                          GError **error);
/* Accepts '<i4', '<i8' (values must fit int32), '<i2', '|i1', '|u1', '<u2'. */
int32_t *lmwb_npy_read_i32(const char *path, int64_t shape[LMWB_NPY_MAX_DIMS], int *ndim,
                           GError **error);
/* Same as lmwb_npy_read_f32 / _f64 from a file image in memory; `name` is used in messages. */
float *lmwb_npy_parse_f32(const void *data, size_t len, const char *name,
                          int64_t shape[LMWB_NPY_MAX_DIMS], int *ndim, GError **error);
double *lmwb_npy_parse_f64(const void *data, size_t len, const char *name,
                           int64_t shape[LMWB_NPY_MAX_DIMS], int *ndim, GError **error);
