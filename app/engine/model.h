/* The model: an architecture-neutral description (LmwbConfig), its weights in one flat float32
 * buffer with a named layout, and its tokenizer. GPT-2, the Llama family (Llama, Mistral, Qwen2)
 * and GPT-NeoX (Pythia) differ only in how weights are named and laid out on disk and in a few
 * switches here; one transformer body (runner.h) serves all of them.
 *
 * Canonical in-memory layout (whatever the file layout was): every linear weight is [out, in]
 * (y = x W^T + b); q/k/v are separate; GPT-2's Conv1D [in, out] and NeoX's per-head interleaved QKV
 * are converted at load. Compute is float32; F16/BF16 files are widened at load. */
#pragma once
#include "app/engine/backend.h"
#include "app/formats/config.h"
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct LmwbTokenizer LmwbTokenizer;

/* Pointers to every weight inside one flat buffer laid out for a config. The same structure
 * indexes parameters, their gradients and optimiser moments. Absent tensors are NULL. */
typedef struct LmwbLayerWeights {
  float *ln1_w, *ln1_b, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo;
  float *ln2_w, *ln2_b, *w_up, *b_up, *w_gate, *w_down, *b_down;
} LmwbLayerWeights;

typedef struct LmwbWeights {
  float *wte, *wpe, *lnf_w, *lnf_b, *head; /* head == wte when tied */
  LmwbLayerWeights *layers;                 /* n_layer entries */
} LmwbWeights;

/* One named tensor of the canonical layout. */
typedef struct LmwbParamInfo {
  char name[80];     /* canonical name, e.g. "blocks.3.attn.W_Q", "unembed.W_U" */
  size_t offset;     /* in floats, into the flat buffer */
  int ndim;
  int64_t shape[2];
} LmwbParamInfo;

typedef struct LmwbModel {
  LmwbConfig cfg;
  char *dir;                 /* folder it was loaded from, or NULL */
  char source_dtype[8];      /* F32 / F16 / BF16 as found on disk */
  LmwbTokenizer *tokenizer;  /* NULL when the folder has none */
  float *params;             /* flat float32 buffer, n_params floats */
  size_t n_params;
  LmwbParamInfo *info;
  int n_info;
  LmwbWeights w;             /* views into params */
  const LmwbBackend *be;
  gint refcount;             /* lmwb_model_ref / lmwb_model_unref; a new model holds one */
} LmwbModel;

/* Load a Hugging Face folder: config.json, *.safetensors (single or sharded), tokenizer
 * (tokenizer.json or vocab.json + merges.txt; optional). Refuses models that do not fit memory. */
LmwbModel *lmwb_model_load(const char *dir, GError **error);
/* A model with freshly initialised weights (GPT-2-style init: N(0, 0.02), residual projections
 * scaled by 1/sqrt(2 n_layer), norms 1, biases 0) from a validated config. */
LmwbModel *lmwb_model_new_random(const LmwbConfig *cfg, guint64 seed, GError **error);
/* Models are shared between views, runners and worker threads: each holder takes a reference.
 * The last unref frees the model. */
LmwbModel *lmwb_model_ref(LmwbModel *m);
void lmwb_model_unref(LmwbModel *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(LmwbModel, lmwb_model_unref)

/* Number of floats of the flat layout, and the views into a buffer with that layout. */
size_t lmwb_model_layout_size(const LmwbConfig *cfg);
void lmwb_model_layout_views(const LmwbModel *m, float *base, LmwbWeights *out);
void lmwb_weights_free_views(LmwbWeights *w);

/* Number of parameters a user would count (tied head counted once). */
uint64_t lmwb_model_param_count(const LmwbModel *m);

/* Save as a Hugging Face folder (config.json + model.safetensors in dtype "F32"/"F16"/"BF16"),
 * written atomically, in the naming of the model's own architecture. The tokenizer is copied
 * from the source folder when there is one (tokenizer_src may override). */
gboolean lmwb_model_save(const LmwbModel *m, const char *dir, const char *dtype,
                         const char *tokenizer_src_dir, GError **error);
