/* Which weights a run reads: versions of a model (forks), copy-on-write tensors, low-rank changes
 * applied without materialising them, and device copies for backends whose memory the host cannot
 * use directly. Contract: model.h. */
#include "app/core/errors.h"
#include "app/core/memory.h"
#include "app/engine/model_internal.h"
#include <cblas.h>
#include <math.h>
#include <string.h>

struct LmwbWeightStore {
  GMutex lock;
  gint sealed;
  int n_info;
  float **own;            /* [n_info] this version's copies (NULL: the parent's tensor) */
  const LmwbLowRank **lr; /* [n_info] the low-rank changes of each tensor (shared lists) */
  GPtrArray *nodes;       /* LmwbLowRank made by this version (with their U, V) */
  LmwbModel *lender;      /* a materialised version: the model whose tokenizer it borrows */
  /* device copies */
  const LmwbBackend *dev_be;
  gboolean dev_valid;
  float *dev_flat;        /* a root's flat buffer on the device */
  LmwbWeights dev;        /* device views */
  GPtrArray *dev_bufs;    /* device buffers this version owns besides dev_flat */
  GPtrArray *dev_nodes;   /* host structs of the device copies of low-rank changes */
};

typedef struct {
  LmwbLowRank node;
  float *U, *V;
} OwnedLowRank;

static void owned_lowrank_free(gpointer p) {
  OwnedLowRank *o = p;
  g_free(o->U);
  g_free(o->V);
  g_free(o);
}

LmwbWeightStore *lmwb_weight_store_new(int n_info) {
  LmwbWeightStore *s = g_new0(LmwbWeightStore, 1);
  g_mutex_init(&s->lock);
  s->n_info = n_info;
  s->own = g_new0(float *, n_info);
  s->lr = g_new0(const LmwbLowRank *, n_info);
  s->nodes = g_ptr_array_new_with_free_func(owned_lowrank_free);
  s->dev_bufs = g_ptr_array_new();
  s->dev_nodes = g_ptr_array_new_with_free_func(g_free);
  return s;
}

static void drop_device(LmwbWeightStore *s) {
  if (s->dev_be) {
    for (guint i = 0; i < s->dev_bufs->len; i++) s->dev_be->free(g_ptr_array_index(s->dev_bufs, i));
    if (s->dev_flat) s->dev_be->free(s->dev_flat);
  }
  g_ptr_array_set_size(s->dev_bufs, 0);
  g_ptr_array_set_size(s->dev_nodes, 0);
  lmwb_weights_free_views(&s->dev);
  s->dev_flat = NULL;
  s->dev_valid = FALSE;
  s->dev_be = NULL;
}

LmwbModel *lmwb_weight_store_release(LmwbModel *m) {
  LmwbWeightStore *s = m->store;
  if (!s) return m->parent;
  drop_device(s);
  for (int i = 0; i < s->n_info; i++) g_free(s->own[i]);
  g_free(s->own);
  g_free(s->lr);
  g_ptr_array_free(s->nodes, TRUE);
  g_ptr_array_free(s->dev_bufs, TRUE);
  g_ptr_array_free(s->dev_nodes, TRUE);
  g_mutex_clear(&s->lock);
  LmwbModel *lender = m->parent ? m->parent : s->lender;
  g_free(s);
  m->store = NULL;
  return lender;
}

/* ---- helpers -------------------------------------------------------------------------------- */

static size_t numel(const LmwbParamInfo *pi) {
  return (size_t)pi->shape[0] * (size_t)(pi->ndim == 2 ? pi->shape[1] : 1);
}

/* For a per-layer linear weight: its layer and the offset of its list in LmwbLayerLowRank;
 * -1 for any other tensor. */
static int lowrank_field(const LmwbParamInfo *pi, int n_layer, int *layer) {
  static const struct { const char *suffix; size_t off; } map[] = {
    {"attn.W_Q", offsetof(LmwbLayerLowRank, wq)}, {"attn.W_K", offsetof(LmwbLayerLowRank, wk)},
    {"attn.W_V", offsetof(LmwbLayerLowRank, wv)}, {"attn.W_O", offsetof(LmwbLayerLowRank, wo)},
    {"mlp.W_in", offsetof(LmwbLayerLowRank, w_up)}, {"mlp.W_gate", offsetof(LmwbLayerLowRank, w_gate)},
    {"mlp.W_out", offsetof(LmwbLayerLowRank, w_down)},
  };
  int L = -1, used = 0;
  if (sscanf(pi->name, "blocks.%d.%n", &L, &used) != 1 || used == 0 || L < 0 || L >= n_layer) return -1;
  for (size_t i = 0; i < G_N_ELEMENTS(map); i++)
    if (!strcmp(pi->name + used, map[i].suffix)) {
      *layer = L;
      return (int)map[i].off;
    }
  return -1;
}

static gboolean any_lowrank(const LmwbWeightStore *s) {
  for (int i = 0; i < s->n_info; i++)
    if (s->lr[i]) return TRUE;
  return FALSE;
}

/* Rebuild the per-layer low-rank views of `w` from per-tensor lists. */
static void set_lowrank_views(const LmwbModel *m, LmwbWeights *w, const LmwbLowRank *const *lists) {
  g_clear_pointer(&w->lowrank, g_free);
  gboolean any = FALSE;
  for (int i = 0; i < m->n_info && !any; i++) any = lists[i] != NULL;
  if (!any) return;
  w->lowrank = g_new0(LmwbLayerLowRank, m->cfg.n_layer);
  for (int i = 0; i < m->n_info; i++) {
    int L, off = lowrank_field(&m->info[i], m->cfg.n_layer, &L);
    if (off >= 0) *(const LmwbLowRank **)((char *)&w->lowrank[L] + off) = lists[i];
  }
}

static void set_view(LmwbModel *m, LmwbWeights *w, int index, float *p) {
  float **slots[m->n_info];
  lmwb_model_weight_slots(&m->cfg, w, slots);
  *slots[index] = p;
  if (m->cfg.tied_head) w->head = w->wte;
}

static float *view_of(LmwbModel *m, LmwbWeights *w, int index) {
  float **slots[m->n_info];
  lmwb_model_weight_slots(&m->cfg, w, slots);
  return *slots[index];
}

/* ---- versions --------------------------------------------------------------------------------- */

LmwbModel *lmwb_model_fork(LmwbModel *base) {
  LmwbModel *f = g_new0(LmwbModel, 1);
  f->refcount = 1;
  f->cfg = base->cfg;
  f->dir = g_strdup(base->dir);
  memcpy(f->source_dtype, base->source_dtype, sizeof f->source_dtype);
  f->tokenizer = base->tokenizer;
  f->n_params = base->n_params;
  f->info = base->info;
  f->n_info = base->n_info;
  f->be = base->be;
  f->parent = lmwb_model_ref(base);
  lmwb_model_seal(base); /* the version forked from never changes: the fork reads its tensors */
  f->w = base->w;
  f->w.layers = g_memdup2(base->w.layers, sizeof(LmwbLayerWeights) * (size_t)base->cfg.n_layer);
  f->w.lowrank = NULL;
  f->store = lmwb_weight_store_new(base->n_info);
  memcpy(f->store->lr, base->store->lr, sizeof(LmwbLowRank *) * (size_t)base->n_info);
  set_lowrank_views(f, &f->w, f->store->lr);
  return f;
}

LmwbModel *lmwb_model_parent(const LmwbModel *m) { return m->parent; }

void lmwb_model_seal(LmwbModel *m) { g_atomic_int_set(&m->store->sealed, 1); }

int lmwb_model_param_index(const LmwbModel *m, const char *name) {
  for (int i = 0; i < m->n_info; i++)
    if (name && !strcmp(m->info[i].name, name)) return i;
  return -1;
}

/* The tensor index of an edit, or -1 with the reason. */
static int editable(LmwbModel *m, const char *name, GError **error) {
  if (!m->parent) {
    lmwb_input_error(error, "edit of %s: this model is not a fork (fork it first; loaded weights are never "
                     "edited in place)", name ? name : "(null)");
    return -1;
  }
  if (g_atomic_int_get(&m->store->sealed)) {
    lmwb_input_error(error, "edit of %s: this version is in use (a runner reads it, or it was forked); fork it and "
                     "edit the fork", name);
    return -1;
  }
  int i = lmwb_model_param_index(m, name);
  if (i < 0) lmwb_input_error(error, "edit: the model has no tensor \"%s\" (names like blocks.0.mlp.W_out)",
                              name ? name : "(null)");
  return i;
}

float *lmwb_model_edit_tensor(LmwbModel *m, const char *name, GError **error) {
  int i = editable(m, name, error);
  if (i < 0) return NULL;
  LmwbWeightStore *s = m->store;
  if (s->own[i]) return s->own[i];
  size_t n = numel(&m->info[i]);
  float *copy = g_try_malloc(n * sizeof(float));
  if (!copy) {
    lmwb_input_error(error, "edit of %s: out of memory for a copy of %zu floats", name, n);
    return NULL;
  }
  memcpy(copy, view_of(m, &m->w, i), n * sizeof(float));
  s->own[i] = copy;
  set_view(m, &m->w, i, copy);
  s->dev_valid = FALSE;
  return copy;
}

gboolean lmwb_model_add_lowrank(LmwbModel *m, const char *name, int rank, const float *U, const float *V,
                                GError **error) {
  int i = editable(m, name, error);
  if (i < 0) return FALSE;
  const LmwbParamInfo *pi = &m->info[i];
  int layer;
  if (pi->ndim != 2 || lowrank_field(pi, m->cfg.n_layer, &layer) < 0) {
    lmwb_input_error(error, "low-rank edit of %s: only a layer's linear weights (attn.W_Q/W_K/W_V/W_O, "
                     "mlp.W_in/W_gate/W_out) take low-rank changes", name);
    return FALSE;
  }
  int64_t out = pi->shape[0], in = pi->shape[1];
  if (rank < 1 || rank > MIN(out, in) || !U || !V) {
    lmwb_input_error(error, "low-rank edit of %s: rank %d is not in 1..%" G_GINT64_FORMAT, name, rank, MIN(out, in));
    return FALSE;
  }
  size_t nu = (size_t)out * rank, nv = (size_t)in * rank;
  for (size_t k = 0; k < nu; k++)
    if (!isfinite(U[k])) {
      lmwb_input_error(error, "low-rank edit of %s: U has a non-finite value at %zu", name, k);
      return FALSE;
    }
  for (size_t k = 0; k < nv; k++)
    if (!isfinite(V[k])) {
      lmwb_input_error(error, "low-rank edit of %s: V has a non-finite value at %zu", name, k);
      return FALSE;
    }
  OwnedLowRank *o = g_new0(OwnedLowRank, 1);
  o->U = g_memdup2(U, nu * sizeof(float));
  o->V = g_memdup2(V, nv * sizeof(float));
  o->node = (LmwbLowRank){rank, o->U, o->V, m->store->lr[i]};
  g_ptr_array_add(m->store->nodes, o);
  m->store->lr[i] = &o->node;
  set_lowrank_views(m, &m->w, m->store->lr);
  m->store->dev_valid = FALSE;
  return TRUE;
}

gboolean lmwb_model_revert_tensor(LmwbModel *m, const char *name, GError **error) {
  int i = editable(m, name, error);
  if (i < 0) return FALSE;
  LmwbWeightStore *s = m->store;
  g_clear_pointer(&s->own[i], g_free);
  set_view(m, &m->w, i, view_of(m->parent, &m->parent->w, i));
  s->lr[i] = m->parent->store->lr[i];
  set_lowrank_views(m, &m->w, s->lr);
  s->dev_valid = FALSE;
  return TRUE;
}

gboolean lmwb_model_has_lowrank(const LmwbModel *m, int index) {
  if (index < 0) return any_lowrank(m->store);
  return index < m->n_info && m->store->lr[index] != NULL;
}

/* dst = the tensor's view plus its low-rank changes. */
static void write_effective(const LmwbModel *m, int i, float *dst) {
  const LmwbParamInfo *pi = &m->info[i];
  memcpy(dst, view_of((LmwbModel *)m, (LmwbWeights *)&m->w, i), numel(pi) * sizeof(float));
  int out = (int)pi->shape[0], in = pi->ndim == 2 ? (int)pi->shape[1] : 1;
  for (const LmwbLowRank *l = m->store->lr[i]; l; l = l->next)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, out, in, l->rank, 1.f, l->U, l->rank, l->V, l->rank, 1.f,
                dst, in);
}

float *lmwb_model_effective_tensor(const LmwbModel *m, int index, GError **error) {
  if (index < 0 || index >= m->n_info) {
    lmwb_input_error(error, "tensor index %d is not in 0..%d", index, m->n_info - 1);
    return NULL;
  }
  float *dst = g_try_malloc(numel(&m->info[index]) * sizeof(float));
  if (!dst) {
    lmwb_input_error(error, "out of memory for a copy of %s", m->info[index].name);
    return NULL;
  }
  write_effective(m, index, dst);
  return dst;
}

LmwbModel *lmwb_model_materialize(const LmwbModel *m, GError **error) {
  LmwbModel *out = lmwb_model_alloc(&m->cfg, error);
  if (!out) return NULL;
  for (int i = 0; i < m->n_info; i++) write_effective(m, i, out->params + out->info[i].offset);
  out->dir = g_strdup(m->dir);
  memcpy(out->source_dtype, m->source_dtype, sizeof out->source_dtype);
  out->be = m->be;
  out->tokenizer = m->tokenizer;
  out->store->lender = lmwb_model_ref((LmwbModel *)m);
  return out;
}

/* ---- device copies ------------------------------------------------------------------------------ */

static LmwbModel *root_of(LmwbModel *m) {
  while (m->parent) m = m->parent;
  return m;
}

static float *upload(LmwbWeightStore *s, const LmwbBackend *be, const float *host, size_t n) {
  float *d = be->alloc(n * sizeof(float));
  if (!d) return NULL;
  be->to_device(d, host, n * sizeof(float));
  g_ptr_array_add(s->dev_bufs, d);
  return d;
}

static gboolean build_device(LmwbModel *m, const LmwbBackend *be, GError **error) {
  LmwbWeightStore *s = m->store;
  s->dev_be = be; /* so that a failure part way frees what was made */
  LmwbModel *root = root_of(m);
  const float *root_host = root->params;
  const float *root_dev = NULL;
  if (root == m) {
    s->dev_flat = be->alloc(m->n_params * sizeof(float));
    if (!s->dev_flat) goto oom;
    be->to_device(s->dev_flat, m->params, m->n_params * sizeof(float));
    root_dev = s->dev_flat;
  } else {
    const LmwbWeights *rw = lmwb_model_weights_on(root, be, error);
    if (!rw) return FALSE;
    root_dev = root->store->dev_flat;
  }
  lmwb_model_layout_views(m, NULL, &s->dev);
  for (int i = 0; i < m->n_info; i++) {
    const float *host = view_of(m, &m->w, i);
    size_t n = numel(&m->info[i]);
    float *d;
    if (root_host && host >= root_host && host + n <= root_host + root->n_params) {
      d = (float *)root_dev + (host - root_host);
    } else if (!(d = upload(s, be, host, n))) {
      goto oom;
    }
    set_view(m, &s->dev, i, d);
  }
  const LmwbLowRank **dev_lists = g_new0(const LmwbLowRank *, m->n_info);
  for (int i = 0; i < m->n_info; i++) {
    const LmwbLowRank *prev = NULL;
    /* Same changes, in the same order, with device U and V. */
    for (const LmwbLowRank *l = s->lr[i]; l; l = l->next) {
      int64_t out = m->info[i].shape[0], in = m->info[i].shape[1];
      LmwbLowRank *dn = g_new0(LmwbLowRank, 1);
      g_ptr_array_add(s->dev_nodes, dn);
      dn->rank = l->rank;
      dn->U = upload(s, be, l->U, (size_t)out * l->rank);
      dn->V = upload(s, be, l->V, (size_t)in * l->rank);
      if (!dn->U || !dn->V) goto oom_lists;
      if (prev) ((LmwbLowRank *)prev)->next = dn;
      else dev_lists[i] = dn;
      prev = dn;
    }
  }
  set_lowrank_views(m, &s->dev, dev_lists);
  g_free(dev_lists);
  s->dev_valid = TRUE;
  return TRUE;
oom_lists:
  g_free(dev_lists);
oom:
  drop_device(s);
  lmwb_input_error(error, "out of %s memory for the model's weights", be->name);
  return FALSE;
}

const LmwbWeights *lmwb_model_weights_on(LmwbModel *m, const LmwbBackend *be, GError **error) {
  if (be->host_visible) return &m->w;
  LmwbWeightStore *s = m->store;
  g_mutex_lock(&s->lock);
  gboolean ok = s->dev_valid && s->dev_be == be;
  if (!ok) {
    drop_device(s);
    ok = build_device(m, be, error);
  }
  g_mutex_unlock(&s->lock);
  return ok ? &s->dev : NULL;
}

void lmwb_model_weights_changed(LmwbModel *m) {
  g_mutex_lock(&m->store->lock);
  drop_device(m->store);
  g_mutex_unlock(&m->store->lock);
}
