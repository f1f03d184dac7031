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

/* A rank-r change of a linear weight W [out, in] that is applied, never materialised:
 * W' = W + U Vᵀ with U [out, r] and V [in, r] (row-major). Changes of one tensor form a list. */
typedef struct LmwbLowRank {
  int rank;
  const float *U, *V;
  const struct LmwbLowRank *next;
} LmwbLowRank;

/* The low-rank changes of each linear weight of a layer (NULL: none). */
typedef struct LmwbLayerLowRank {
  const LmwbLowRank *wq, *wk, *wv, *wo, *w_up, *w_gate, *w_down;
} LmwbLayerLowRank;

typedef struct LmwbWeights {
  float *wte, *wpe, *lnf_w, *lnf_b, *head; /* head == wte when tied */
  LmwbLayerWeights *layers;                 /* n_layer entries */
  LmwbLayerLowRank *lowrank;                /* n_layer entries, or NULL when no tensor has any */
} LmwbWeights;

/* One named tensor of the canonical layout. */
typedef struct LmwbParamInfo {
  char name[80];     /* canonical name, e.g. "blocks.3.attn.W_Q", "unembed.W_U" */
  size_t offset;     /* in floats, into the flat buffer */
  int ndim;
  int64_t shape[2];
} LmwbParamInfo;

typedef struct LmwbWeightStore LmwbWeightStore; /* private to weights.c */

typedef struct LmwbModel {
  LmwbConfig cfg;
  char *dir;                 /* folder it was loaded from, or NULL */
  char source_dtype[8];      /* F32 / F16 / BF16 as found on disk */
  LmwbTokenizer *tokenizer;  /* NULL when the folder has none (a fork shares its root's) */
  float *params;             /* flat float32 buffer, n_params floats; NULL for a fork */
  size_t n_params;           /* floats of the flat layout (also the layout of parameter gradients) */
  LmwbParamInfo *info;       /* a fork shares its root's */
  int n_info;
  LmwbWeights w;             /* views of the weights (host memory) */
  const LmwbBackend *be;     /* what runners of this model compute on */
  gint refcount;             /* lmwb_model_ref / lmwb_model_unref; a new model holds one */
  struct LmwbModel *parent;  /* a fork: the version it was made from (held), else NULL */
  LmwbWeightStore *store;    /* copies, low-rank changes and device copies of this version */
} LmwbModel;

/* Load a Hugging Face folder: config.json, *.safetensors (single or sharded), tokenizer
 * (tokenizer.json or vocab.json + merges.txt; optional). Refuses models that do not fit memory. */
LmwbModel *lmwb_model_load(const char *dir, GError **error);
/* The folder a front end opens when none is given: $LMWB_DEFAULT_MODEL, else the built-in model in
 * the source tree when it is there, else its installed copy (both passed in by the front end). */
const char *lmwb_model_default_dir(const char *source_dir, const char *installed_dir);
/* A model with freshly initialised weights (GPT-2-style init: N(0, 0.02), residual projections
 * scaled by 1/sqrt(2 n_layer), norms 1, biases 0) from a validated config. */
LmwbModel *lmwb_model_new_random(const LmwbConfig *cfg, guint64 seed, GError **error);
/* Models are shared between views, runners and worker threads: each holder takes a reference.
 * The last unref frees the model. */
LmwbModel *lmwb_model_ref(LmwbModel *m);
void lmwb_model_unref(LmwbModel *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(LmwbModel, lmwb_model_unref)

/* ---- versions and edits (weights.c) ----
 * A model can be forked into a new version that shares every tensor with it (nothing is copied).
 * Edits change only the fork: lmwb_model_edit_tensor copies one tensor on its first write
 * (copy-on-write per tensor); lmwb_model_add_lowrank adds W + U Vᵀ to a linear weight, applied
 * by the runner's linear op without materialising W. The version forked from never changes, so
 * undoing an edit is going back to it (lmwb_model_parent), exactly, bit for bit.
 * A version is sealed when a runner first uses it or it is forked: its weights are then read by
 * running jobs or by its forks, and editing it is refused (fork it instead). So a worker thread keeps reading the weights it
 * started with while an editor makes the next version. */
LmwbModel *lmwb_model_fork(LmwbModel *base);
LmwbModel *lmwb_model_parent(const LmwbModel *m);  /* borrowed; NULL for a loaded model */
void lmwb_model_seal(LmwbModel *m);
/* Index into m->info of a canonical tensor name ("blocks.3.mlp.W_out"), or -1. */
int lmwb_model_param_index(const LmwbModel *m, const char *name);
/* A writable copy of one tensor of a fork, in the canonical layout (input error: unknown name,
 * sealed version, not a fork, out of memory). Later calls return the same copy. */
float *lmwb_model_edit_tensor(LmwbModel *m, const char *name, GError **error);
/* Add W + U Vᵀ (U [out, rank], V [in, rank], copied) to a per-layer linear weight of a fork
 * (attn.W_Q/W_K/W_V/W_O, mlp.W_in/W_gate/W_out). Non-finite values are refused. */
gboolean lmwb_model_add_lowrank(LmwbModel *m, const char *name, int rank, const float *U, const float *V,
                                GError **error);
/* Back to the parent's tensor: drops the fork's copy and low-rank changes of it. */
gboolean lmwb_model_revert_tensor(LmwbModel *m, const char *name, GError **error);
/* TRUE when a tensor (or any, with index -1) of this version carries low-rank changes. */
gboolean lmwb_model_has_lowrank(const LmwbModel *m, int index);
/* The effective tensor W + sum of U Vᵀ as a new buffer (g_free). */
float *lmwb_model_effective_tensor(const LmwbModel *m, int index, GError **error);
/* A new loaded-model-like version holding every effective tensor in one flat buffer (for saving,
 * training or comparing). */
LmwbModel *lmwb_model_materialize(const LmwbModel *m, GError **error);

/* The weights as a backend's ops read them: the views above on a host-visible backend, else
 * device copies made on first use (every tensor once per version; a fork's unedited tensors are
 * the root's copies). Thread-safe. Valid while the model lives. */
const LmwbWeights *lmwb_model_weights_on(LmwbModel *m, const LmwbBackend *be, GError **error);
/* After writing m->params in place (training): device copies are made again on next use. */
void lmwb_model_weights_changed(LmwbModel *m);

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
