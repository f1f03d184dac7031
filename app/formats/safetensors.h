/* safetensors reading (mmap'd, validated) and writing (atomic).
 * Format: u64 little-endian header length N, N bytes of UTF-8 JSON, then the byte buffer; each
 * entry {"dtype", "shape", "data_offsets": [begin, end)} is relative to the buffer start;
 * optional "__metadata__" string map. Sharded models add model.safetensors.index.json with a
 * "weight_map" {tensor: shard file}.
 * Reader contract: every entry is checked before anything is exposed (header size <= 100 MB and
 * inside the file, JSON types, known dtype, dims >= 0 and <= LMWB_TENSOR_MAX_DIMS, no 64-bit
 * overflow of element or byte counts, offsets inside the buffer, byte count == numel x dtype
 * size, non-empty tensors do not overlap). Any violation is an LMWB_ERROR_INPUT naming the file
 * and the tensor/field. Views point into the read-only mapping: `data` may be unaligned, and is
 * valid until lmwb_safetensors_close(). (If another process truncates a mapped file the OS may
 * still kill us with SIGBUS; nothing a reader can check.) */
#pragma once
#include <glib.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
  LMWB_DTYPE_BOOL,
  LMWB_DTYPE_U8,
  LMWB_DTYPE_I8,
  LMWB_DTYPE_F8_E4M3,
  LMWB_DTYPE_F8_E5M2,
  LMWB_DTYPE_I16,
  LMWB_DTYPE_U16,
  LMWB_DTYPE_F16,
  LMWB_DTYPE_BF16,
  LMWB_DTYPE_I32,
  LMWB_DTYPE_U32,
  LMWB_DTYPE_F32,
  LMWB_DTYPE_F64,
  LMWB_DTYPE_I64,
  LMWB_DTYPE_U64,
  LMWB_DTYPE_COUNT
} LmwbDtype;

#define LMWB_TENSOR_MAX_DIMS 8
/* Header size limit of the safetensors spec. */
#define LMWB_SAFETENSORS_MAX_HEADER (100u * 1000u * 1000u)

/* Spec name ("F32", "BF16", ...) of a dtype; "?" for an invalid value. */
const char *lmwb_dtype_name(LmwbDtype dtype);
/* Bytes per element; 0 for an invalid value. */
size_t lmwb_dtype_size(LmwbDtype dtype);
/* Parses a spec name; FALSE if unknown. */
gboolean lmwb_dtype_from_name(const char *name, LmwbDtype *out);

typedef struct {
  const char *name;
  LmwbDtype dtype;
  int ndim;
  int64_t shape[LMWB_TENSOR_MAX_DIMS];
  const void *data;  /* little-endian, row-major, possibly unaligned */
  uint64_t nbytes;
  const char *file;  /* the file holding it (for messages) */
} LmwbTensorView;

/* Product of the shape (1 for a scalar). Fits in int64: the reader checked. */
int64_t lmwb_tensor_numel(const LmwbTensorView *t);

typedef struct LmwbSafetensors LmwbSafetensors;

/* One .safetensors file, mapped read-only. */
LmwbSafetensors *lmwb_safetensors_open(const char *path, GError **error);
/* A model folder: model.safetensors.index.json (sharded), else the single *.safetensors.index.json,
 * else model.safetensors, else the single *.safetensors. The tensors are exactly those of the
 * index's weight_map (each must exist in its shard); shard names may not leave the folder. */
LmwbSafetensors *lmwb_safetensors_open_dir(const char *dir, GError **error);
/* Parses a whole file image held in memory. `data` is borrowed and must outlive the result;
 * `file` names it in messages. This is the parser every other opener uses (and the fuzz entry). */
LmwbSafetensors *lmwb_safetensors_open_memory(const void *data, size_t len, const char *file,
                                              GError **error);
void lmwb_safetensors_close(LmwbSafetensors *st);

/* Tensors in file order (by shard, then by offset). */
size_t lmwb_safetensors_count(const LmwbSafetensors *st);
const LmwbTensorView *lmwb_safetensors_at(const LmwbSafetensors *st, size_t i);
const LmwbTensorView *lmwb_safetensors_find(const LmwbSafetensors *st, const char *name);
/* A "__metadata__" value (for a sharded set: the shards' maps, then the index's "metadata"
 * scalars); NULL when absent. */
const char *lmwb_safetensors_metadata(const LmwbSafetensors *st, const char *key);
/* All metadata keys (NULL-terminated, free the array with g_free, not the strings). */
const char **lmwb_safetensors_metadata_keys(const LmwbSafetensors *st);

/* Converts a float tensor (F32, F16, BF16, F64, F8_E4M3, F8_E5M2) to F32 into dst, which holds
 * lmwb_tensor_numel(t) floats. Other dtypes: input error naming the tensor and its dtype. */
gboolean lmwb_tensor_to_f32(const LmwbTensorView *t, float *dst, GError **error);

/* Writer. Tensors are written in order of decreasing element size, then insertion order, so
 * every tensor is aligned to its element size in the file (the header is padded to 8 bytes).
 * The add functions REFERENCE the caller's data: it must stay valid and unchanged until save
 * returns (models are large; a copy would double memory). Mistakes in an add call (duplicate
 * or invalid name, bad dtype, ndim > 8, negative dims, size mismatch) are remembered and
 * reported by save, which then writes nothing. */
typedef struct LmwbSafetensorsWriter LmwbSafetensorsWriter;

LmwbSafetensorsWriter *lmwb_safetensors_writer_new(void);
/* store_as: F32, F16 or BF16 (rounded to nearest even). */
void lmwb_safetensors_writer_add_f32(LmwbSafetensorsWriter *w, const char *name, LmwbDtype store_as,
                                     const int64_t *shape, int ndim, const float *data);
/* Raw bytes already in `dtype` (little-endian), e.g. copied unchanged from a view. */
void lmwb_safetensors_writer_add_raw(LmwbSafetensorsWriter *w, const char *name, LmwbDtype dtype,
                                     const int64_t *shape, int ndim, const void *data,
                                     uint64_t nbytes);
void lmwb_safetensors_writer_set_metadata(LmwbSafetensorsWriter *w, const char *key,
                                          const char *value);
/* Writes atomically (see app/core/atomic_file.h). */
gboolean lmwb_safetensors_writer_save(LmwbSafetensorsWriter *w, const char *path, GError **error);
void lmwb_safetensors_writer_free(LmwbSafetensorsWriter *w);
