/* Model: the flat parameter layout, loading from Hugging Face folders (per-architecture name and
 * layout mapping), random initialisation and saving back in the architecture's own naming. */
#include "app/engine/model.h"
#include "app/engine/model_internal.h"
#include "app/core/errors.h"
#include "app/core/memory.h"
#include "app/core/rng.h"
#include "app/core/atomic_file.h"
#include "app/core/inputs.h"
#include "app/formats/half.h"
#include "app/formats/safetensors.h"
#include "app/formats/tokenizer.h"
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

/* ---- layout ---------------------------------------------------------------------------- */

typedef struct {
  const char *name;
  int64_t rows, cols; /* cols == 0: a vector */
  size_t field;       /* offset of the pointer inside LmwbLayerWeights, or (size_t)-1 */
} Slot;

#define LW(f) offsetof(LmwbLayerWeights, f)

/* The tensors of one layer in layout order; rows/cols 0 means absent for this config. */
static int layer_slots(const LmwbConfig *c, Slot *s) {
  int C = c->d_model, qd = c->n_head * c->head_dim, kd = c->n_kv_head * c->head_dim, F = c->d_ff;
  int n = 0;
  s[n++] = (Slot){"ln1.w", C, 0, LW(ln1_w)};
  if (c->norm_bias) s[n++] = (Slot){"ln1.b", C, 0, LW(ln1_b)};
  s[n++] = (Slot){"attn.W_Q", qd, C, LW(wq)};
  if (c->qkv_bias) s[n++] = (Slot){"attn.b_Q", qd, 0, LW(bq)};
  s[n++] = (Slot){"attn.W_K", kd, C, LW(wk)};
  if (c->qkv_bias) s[n++] = (Slot){"attn.b_K", kd, 0, LW(bk)};
  s[n++] = (Slot){"attn.W_V", kd, C, LW(wv)};
  if (c->qkv_bias) s[n++] = (Slot){"attn.b_V", kd, 0, LW(bv)};
  s[n++] = (Slot){"attn.W_O", C, qd, LW(wo)};
  if (c->o_bias) s[n++] = (Slot){"attn.b_O", C, 0, LW(bo)};
  s[n++] = (Slot){"ln2.w", C, 0, LW(ln2_w)};
  if (c->norm_bias) s[n++] = (Slot){"ln2.b", C, 0, LW(ln2_b)};
  s[n++] = (Slot){"mlp.W_in", F, C, LW(w_up)};
  if (c->mlp_bias) s[n++] = (Slot){"mlp.b_in", F, 0, LW(b_up)};
  if (c->gated_mlp) s[n++] = (Slot){"mlp.W_gate", F, C, LW(w_gate)};
  s[n++] = (Slot){"mlp.W_out", C, F, LW(w_down)};
  if (c->mlp_bias) s[n++] = (Slot){"mlp.b_out", C, 0, LW(b_down)};
  return n;
}

static size_t numel(const Slot *s) { return (size_t)s->rows * (size_t)(s->cols ? s->cols : 1); }

size_t lmwb_model_layout_size(const LmwbConfig *c) {
  Slot s[24];
  int n = layer_slots(c, s);
  size_t per = 0;
  for (int i = 0; i < n; i++) per += numel(&s[i]);
  size_t V = (size_t)c->vocab_size, C = (size_t)c->d_model;
  size_t total = V * C + (c->learned_pos ? (size_t)c->n_ctx * C : 0) + per * (size_t)c->n_layer + C;
  if (c->norm_bias) total += C;
  if (!c->tied_head) total += V * C;
  return total;
}

/* Walks the layout once; fills views and/or the info table. */
static void walk_layout(const LmwbConfig *c, float *base, LmwbWeights *w, LmwbParamInfo *info, int *n_info,
                        float ***slots) {
  size_t off = 0;
  int k = 0;
#define ADD(ptr, nm, r, cl) do { \
    if (slots) slots[k] = &(ptr); \
    else if (w) (ptr) = base ? base + off : NULL; \
    if (info) { g_strlcpy(info[k].name, nm, sizeof info[k].name); info[k].offset = off; \
      info[k].ndim = (cl) ? 2 : 1; info[k].shape[0] = (r); info[k].shape[1] = (cl) ? (cl) : 0; } \
    k++; off += (size_t)(r) * (size_t)((cl) ? (cl) : 1); } while (0)
  LmwbWeights dummy = {0};
  if (!w) w = &dummy;
  ADD(w->wte, "embed.W_E", c->vocab_size, c->d_model);
  if (c->learned_pos) ADD(w->wpe, "pos_embed.W_pos", c->n_ctx, c->d_model);
  Slot s[24];
  int n = layer_slots(c, s);
  for (int L = 0; L < c->n_layer; L++) {
    for (int i = 0; i < n; i++) {
      char nm[80];
      g_snprintf(nm, sizeof nm, "blocks.%d.%s", L, s[i].name);
      float *dummy_ptr = NULL;
      float **slot = (w != &dummy && w->layers) ? (float **)((char *)&w->layers[L] + s[i].field) : &dummy_ptr;
      ADD(*slot, nm, s[i].rows, s[i].cols);
    }
  }
  ADD(w->lnf_w, "ln_final.w", c->d_model, 0);
  if (c->norm_bias) ADD(w->lnf_b, "ln_final.b", c->d_model, 0);
  if (!c->tied_head) ADD(w->head, "unembed.W_U", c->vocab_size, c->d_model);
  else if (!slots) w->head = w->wte;
  if (n_info) *n_info = k;
#undef ADD
}

void lmwb_model_layout_views(const LmwbModel *m, float *base, LmwbWeights *out) {
  memset(out, 0, sizeof *out);
  out->layers = g_new0(LmwbLayerWeights, m->cfg.n_layer);
  walk_layout(&m->cfg, base, out, NULL, NULL, NULL);
}

void lmwb_model_weight_slots(const LmwbConfig *c, LmwbWeights *w, float ***slots) {
  walk_layout(c, NULL, w, NULL, NULL, slots);
}

void lmwb_weights_free_views(LmwbWeights *w) {
  g_free(w->layers);
  g_free(w->lowrank);
  w->layers = NULL;
  w->lowrank = NULL;
}

LmwbModel *lmwb_model_alloc(const LmwbConfig *cfg, GError **error) {
  size_t n = lmwb_model_layout_size(cfg);
  uint64_t bytes;
  if (!lmwb_mul_u64(n, sizeof(float), &bytes)) {
    lmwb_input_error(error, "model size overflows");
    return NULL;
  }
  if (!lmwb_memory_check(bytes, "the model's float32 weights", error)) return NULL;
  LmwbModel *m = g_new0(LmwbModel, 1);
  m->refcount = 1;
  m->cfg = *cfg;
  m->be = lmwb_backend_get(NULL, error);
  if (!m->be) {
    g_free(m);
    return NULL;
  }
  m->n_params = n;
  m->params = g_try_malloc0(bytes);
  if (!m->params) {
    g_free(m);
    lmwb_input_error(error, "cannot allocate %.2f GiB for the model's weights", bytes / 1073741824.0);
    return NULL;
  }
  int n_info = 0;
  walk_layout(cfg, NULL, NULL, NULL, &n_info, NULL);
  m->info = g_new0(LmwbParamInfo, n_info);
  walk_layout(cfg, NULL, NULL, m->info, &m->n_info, NULL);
  lmwb_model_layout_views(m, m->params, &m->w);
  m->store = lmwb_weight_store_new(m->n_info);
  g_strlcpy(m->source_dtype, "F32", sizeof m->source_dtype);
  return m;
}

LmwbModel *lmwb_model_ref(LmwbModel *m) {
  g_atomic_int_inc(&m->refcount);
  return m;
}

void lmwb_model_unref(LmwbModel *m) {
  if (!m || !g_atomic_int_dec_and_test(&m->refcount)) return;
  LmwbModel *lender = lmwb_weight_store_release(m);
  if (!lender) {
    if (m->tokenizer) lmwb_tokenizer_free(m->tokenizer);
    g_free(m->info);
  }
  lmwb_weights_free_views(&m->w);
  g_free(m->params);
  g_free(m->dir);
  g_free(m);
  lmwb_model_unref(lender);
}

uint64_t lmwb_model_param_count(const LmwbModel *m) { return m->n_params; }

/* ---- random init ------------------------------------------------------------------------ */

static void fill_normal(float *p, size_t n, double stdv, guint64 *state) {
  for (size_t i = 0; i < n; i += 2) {
    double u1 = lmwb_rng_uniform(state), u2 = lmwb_rng_uniform(state);
    double r = sqrt(-2.0 * log(u1)) * stdv;
    p[i] = (float)(r * cos(2 * M_PI * u2));
    if (i + 1 < n) p[i + 1] = (float)(r * sin(2 * M_PI * u2));
  }
}

LmwbModel *lmwb_model_new_random(const LmwbConfig *cfg, guint64 seed, GError **error) {
  if (!lmwb_config_validate(cfg, error)) return NULL;
  LmwbModel *m = lmwb_model_alloc(cfg, error);
  if (!m) return NULL;
  guint64 st = seed * 0x2545F4914F6CDD1Dull + 1;
  const double std = 0.02, std_res = 0.02 / sqrt(2.0 * cfg->n_layer);
  for (int i = 0; i < m->n_info; i++) {
    LmwbParamInfo *pi = &m->info[i];
    float *p = m->params + pi->offset;
    size_t n = (size_t)pi->shape[0] * (size_t)(pi->ndim == 2 ? pi->shape[1] : 1);
    const char *nm = pi->name;
    if (pi->ndim == 1) {
      float v = (g_str_has_suffix(nm, ".w") && (strstr(nm, "ln") != NULL)) ? 1.0f : 0.0f;
      for (size_t j = 0; j < n; j++) p[j] = v;
    } else {
      gboolean res = g_str_has_suffix(nm, "attn.W_O") || g_str_has_suffix(nm, "mlp.W_out");
      fill_normal(p, n, res ? std_res : (g_str_has_prefix(nm, "pos_embed") ? 0.01 : std), &st);
    }
  }
  return m;
}

/* ---- loading from a Hugging Face folder ------------------------------------------------- */

typedef struct {
  const LmwbSafetensors *st;
  const char *dir;
  const char *prefix; /* GPT-2 "transformer." or "" */
  GError **error;
  float *scratch;
  size_t scratch_n;
  char dtype[8];
} Loader;

static const char *dtype_name(LmwbDtype d) {
  return d == LMWB_DTYPE_F32 ? "F32" : d == LMWB_DTYPE_F16 ? "F16" : d == LMWB_DTYPE_BF16 ? "BF16" : "other";
}

/* Find a tensor and check its shape (rows, cols; cols 0 for a vector). Returns it widened to
 * float32 in ld->scratch (valid until the next fetch). */
static const float *fetch(Loader *ld, const char *name, int64_t rows, int64_t cols) {
  const LmwbTensorView *t = lmwb_safetensors_find(ld->st, name);
  if (!t) {
    lmwb_input_error(ld->error, "%s: tensor \"%s\" is missing from the weights", ld->dir, name);
    return NULL;
  }
  gboolean ok = cols ? (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols)
                     : (t->ndim == 1 && t->shape[0] == rows);
  if (!ok) {
    GString *s = g_string_new("[");
    for (int i = 0; i < t->ndim; i++) g_string_append_printf(s, "%s%" G_GINT64_FORMAT, i ? ", " : "", t->shape[i]);
    g_string_append(s, "]");
    if (cols)
      lmwb_input_error(ld->error, "%s: tensor \"%s\" has shape %s but the config implies [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "]",
                       ld->dir, name, s->str, rows, cols);
    else
      lmwb_input_error(ld->error, "%s: tensor \"%s\" has shape %s but the config implies [%" G_GINT64_FORMAT "]",
                       ld->dir, name, s->str, rows);
    g_string_free(s, TRUE);
    return NULL;
  }
  size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
  if (n > ld->scratch_n) {
    g_free(ld->scratch);
    ld->scratch = g_try_malloc(n * sizeof(float));
    ld->scratch_n = ld->scratch ? n : 0;
    if (!ld->scratch) {
      lmwb_input_error(ld->error, "out of memory reading \"%s\"", name);
      return NULL;
    }
  }
  if (!lmwb_tensor_to_f32(t, ld->scratch, ld->error)) return NULL;
  size_t bad = lmwb_f32_find_nonfinite(ld->scratch, n);
  if (bad < n) {
    lmwb_input_error(ld->error, "%s: tensor \"%s\" holds a non-finite value (%g) at element %zu: the weights are corrupt",
                     ld->dir, name, ld->scratch[bad], bad);
    return NULL;
  }
  g_strlcpy(ld->dtype, dtype_name(t->dtype), sizeof ld->dtype);
  return ld->scratch;
}

static gboolean copy_in(Loader *ld, float *dst, const char *name, int64_t rows, int64_t cols) {
  const float *src = fetch(ld, name, rows, cols);
  if (!src) return FALSE;
  memcpy(dst, src, (size_t)rows * (size_t)(cols ? cols : 1) * sizeof(float));
  return TRUE;
}

/* dst[out, in] = src[in, out]^T restricted to columns [c0, c0 + out) of a [in, total] Conv1D. */
static void transpose_cols(float *dst, const float *src, int64_t in, int64_t total, int64_t c0, int64_t out) {
  for (int64_t o = 0; o < out; o++)
    for (int64_t i = 0; i < in; i++) dst[o * in + i] = src[i * total + c0 + o];
}

static gboolean load_gpt2(Loader *ld, LmwbModel *m) {
  const LmwbConfig *c = &m->cfg;
  int64_t C = c->d_model, F = c->d_ff;
  ld->prefix = lmwb_safetensors_find(ld->st, "transformer.wte.weight") ? "transformer." : "";
  char nm[160];
#define N(fmt, ...) (g_snprintf(nm, sizeof nm, "%s" fmt, ld->prefix, __VA_ARGS__), nm)
  if (!copy_in(ld, m->w.wte, N("%s", "wte.weight"), c->vocab_size, C)) return FALSE;
  if (!copy_in(ld, m->w.wpe, N("%s", "wpe.weight"), c->n_ctx, C)) return FALSE;
  for (int L = 0; L < c->n_layer; L++) {
    LmwbLayerWeights *lw = &m->w.layers[L];
    const float *s;
    if (!copy_in(ld, lw->ln1_w, N("h.%d.ln_1.weight", L), C, 0)) return FALSE;
    if (!copy_in(ld, lw->ln1_b, N("h.%d.ln_1.bias", L), C, 0)) return FALSE;
    if (!(s = fetch(ld, N("h.%d.attn.c_attn.weight", L), C, 3 * C))) return FALSE;
    transpose_cols(lw->wq, s, C, 3 * C, 0, C);
    transpose_cols(lw->wk, s, C, 3 * C, C, C);
    transpose_cols(lw->wv, s, C, 3 * C, 2 * C, C);
    if (!(s = fetch(ld, N("h.%d.attn.c_attn.bias", L), 3 * C, 0))) return FALSE;
    memcpy(lw->bq, s, C * sizeof(float));
    memcpy(lw->bk, s + C, C * sizeof(float));
    memcpy(lw->bv, s + 2 * C, C * sizeof(float));
    if (!(s = fetch(ld, N("h.%d.attn.c_proj.weight", L), C, C))) return FALSE;
    transpose_cols(lw->wo, s, C, C, 0, C);
    if (!copy_in(ld, lw->bo, N("h.%d.attn.c_proj.bias", L), C, 0)) return FALSE;
    if (!copy_in(ld, lw->ln2_w, N("h.%d.ln_2.weight", L), C, 0)) return FALSE;
    if (!copy_in(ld, lw->ln2_b, N("h.%d.ln_2.bias", L), C, 0)) return FALSE;
    if (!(s = fetch(ld, N("h.%d.mlp.c_fc.weight", L), C, F))) return FALSE;
    transpose_cols(lw->w_up, s, C, F, 0, F);
    if (!copy_in(ld, lw->b_up, N("h.%d.mlp.c_fc.bias", L), F, 0)) return FALSE;
    if (!(s = fetch(ld, N("h.%d.mlp.c_proj.weight", L), F, C))) return FALSE;
    transpose_cols(lw->w_down, s, F, C, 0, C);
    if (!copy_in(ld, lw->b_down, N("h.%d.mlp.c_proj.bias", L), C, 0)) return FALSE;
  }
  if (!copy_in(ld, m->w.lnf_w, N("%s", "ln_f.weight"), C, 0)) return FALSE;
  if (!copy_in(ld, m->w.lnf_b, N("%s", "ln_f.bias"), C, 0)) return FALSE;
  if (!c->tied_head && !copy_in(ld, m->w.head, "lm_head.weight", c->vocab_size, C)) return FALSE;
#undef N
  return TRUE;
}

static gboolean load_llama(Loader *ld, LmwbModel *m) {
  const LmwbConfig *c = &m->cfg;
  int64_t C = c->d_model, F = c->d_ff, qd = (int64_t)c->n_head * c->head_dim, kd = (int64_t)c->n_kv_head * c->head_dim;
  char nm[160];
#define N(...) (g_snprintf(nm, sizeof nm, __VA_ARGS__), nm)
  if (!copy_in(ld, m->w.wte, "model.embed_tokens.weight", c->vocab_size, C)) return FALSE;
  for (int L = 0; L < c->n_layer; L++) {
    LmwbLayerWeights *lw = &m->w.layers[L];
    const char *p = "model.layers";
    if (!copy_in(ld, lw->ln1_w, N("%s.%d.input_layernorm.weight", p, L), C, 0)) return FALSE;
    if (!copy_in(ld, lw->wq, N("%s.%d.self_attn.q_proj.weight", p, L), qd, C)) return FALSE;
    if (!copy_in(ld, lw->wk, N("%s.%d.self_attn.k_proj.weight", p, L), kd, C)) return FALSE;
    if (!copy_in(ld, lw->wv, N("%s.%d.self_attn.v_proj.weight", p, L), kd, C)) return FALSE;
    if (c->qkv_bias) {
      if (!copy_in(ld, lw->bq, N("%s.%d.self_attn.q_proj.bias", p, L), qd, 0)) return FALSE;
      if (!copy_in(ld, lw->bk, N("%s.%d.self_attn.k_proj.bias", p, L), kd, 0)) return FALSE;
      if (!copy_in(ld, lw->bv, N("%s.%d.self_attn.v_proj.bias", p, L), kd, 0)) return FALSE;
    }
    if (!copy_in(ld, lw->wo, N("%s.%d.self_attn.o_proj.weight", p, L), C, qd)) return FALSE;
    if (c->o_bias && !copy_in(ld, lw->bo, N("%s.%d.self_attn.o_proj.bias", p, L), C, 0)) return FALSE;
    if (!copy_in(ld, lw->ln2_w, N("%s.%d.post_attention_layernorm.weight", p, L), C, 0)) return FALSE;
    if (!copy_in(ld, lw->w_gate, N("%s.%d.mlp.gate_proj.weight", p, L), F, C)) return FALSE;
    if (!copy_in(ld, lw->w_up, N("%s.%d.mlp.up_proj.weight", p, L), F, C)) return FALSE;
    if (!copy_in(ld, lw->w_down, N("%s.%d.mlp.down_proj.weight", p, L), C, F)) return FALSE;
    if (c->mlp_bias) {
      if (!copy_in(ld, lw->b_up, N("%s.%d.mlp.up_proj.bias", p, L), F, 0)) return FALSE;
      if (!copy_in(ld, lw->b_down, N("%s.%d.mlp.down_proj.bias", p, L), C, 0)) return FALSE;
      if (!lmwb_safetensors_find(ld->st, N("%s.%d.mlp.gate_proj.bias", p, L))) { /* gate bias: unsupported layout */ }
    }
  }
  if (!copy_in(ld, m->w.lnf_w, "model.norm.weight", C, 0)) return FALSE;
  if (!c->tied_head && !copy_in(ld, m->w.head, "lm_head.weight", c->vocab_size, C)) return FALSE;
#undef N
  return TRUE;
}

static gboolean load_neox(Loader *ld, LmwbModel *m) {
  const LmwbConfig *c = &m->cfg;
  int64_t C = c->d_model, F = c->d_ff, H = c->n_head, hd = c->head_dim;
  char nm[160];
#define N(...) (g_snprintf(nm, sizeof nm, __VA_ARGS__), nm)
  if (!copy_in(ld, m->w.wte, "gpt_neox.embed_in.weight", c->vocab_size, C)) return FALSE;
  for (int L = 0; L < c->n_layer; L++) {
    LmwbLayerWeights *lw = &m->w.layers[L];
    const char *p = "gpt_neox.layers";
    const float *s;
    if (!copy_in(ld, lw->ln1_w, N("%s.%d.input_layernorm.weight", p, L), C, 0)) return FALSE;
    if (!copy_in(ld, lw->ln1_b, N("%s.%d.input_layernorm.bias", p, L), C, 0)) return FALSE;
    if (!copy_in(ld, lw->ln2_w, N("%s.%d.post_attention_layernorm.weight", p, L), C, 0)) return FALSE;
    if (!copy_in(ld, lw->ln2_b, N("%s.%d.post_attention_layernorm.bias", p, L), C, 0)) return FALSE;
    /* Fused QKV output rows are [head][q|k|v][hd]: split per head. */
    if (!(s = fetch(ld, N("%s.%d.attention.query_key_value.weight", p, L), 3 * C, C))) return FALSE;
    for (int64_t h = 0; h < H; h++)
      for (int part = 0; part < 3; part++) {
        float *dst = part == 0 ? lw->wq : part == 1 ? lw->wk : lw->wv;
        memcpy(dst + h * hd * C, s + (h * 3 * hd + part * hd) * C, (size_t)(hd * C) * sizeof(float));
      }
    if (c->qkv_bias) {
      if (!(s = fetch(ld, N("%s.%d.attention.query_key_value.bias", p, L), 3 * C, 0))) return FALSE;
      for (int64_t h = 0; h < H; h++)
        for (int part = 0; part < 3; part++) {
          float *dst = part == 0 ? lw->bq : part == 1 ? lw->bk : lw->bv;
          memcpy(dst + h * hd, s + h * 3 * hd + part * hd, (size_t)hd * sizeof(float));
        }
    }
    if (!copy_in(ld, lw->wo, N("%s.%d.attention.dense.weight", p, L), C, C)) return FALSE;
    if (c->o_bias && !copy_in(ld, lw->bo, N("%s.%d.attention.dense.bias", p, L), C, 0)) return FALSE;
    if (!copy_in(ld, lw->w_up, N("%s.%d.mlp.dense_h_to_4h.weight", p, L), F, C)) return FALSE;
    if (!copy_in(ld, lw->b_up, N("%s.%d.mlp.dense_h_to_4h.bias", p, L), F, 0)) return FALSE;
    if (!copy_in(ld, lw->w_down, N("%s.%d.mlp.dense_4h_to_h.weight", p, L), C, F)) return FALSE;
    if (!copy_in(ld, lw->b_down, N("%s.%d.mlp.dense_4h_to_h.bias", p, L), C, 0)) return FALSE;
  }
  if (!copy_in(ld, m->w.lnf_w, "gpt_neox.final_layer_norm.weight", C, 0)) return FALSE;
  if (!copy_in(ld, m->w.lnf_b, "gpt_neox.final_layer_norm.bias", C, 0)) return FALSE;
  if (!c->tied_head && !copy_in(ld, m->w.head, "embed_out.weight", c->vocab_size, C)) return FALSE;
#undef N
  return TRUE;
}

const char *lmwb_model_default_dir(const char *source_dir, const char *installed_dir) {
  const char *env = g_getenv("LMWB_DEFAULT_MODEL");
  if (env && *env) return env;
  if (g_file_test(source_dir, G_FILE_TEST_IS_DIR)) return source_dir;
  return installed_dir;
}

LmwbModel *lmwb_model_load(const char *dir, GError **error) {
  if (!g_file_test(dir, G_FILE_TEST_IS_DIR)) {
    lmwb_input_error(error, "%s: not a folder (expected a Hugging Face model folder with config.json)", dir);
    return NULL;
  }
  g_autofree char *cfg_path = g_build_filename(dir, "config.json", NULL);
  if (!g_file_test(cfg_path, G_FILE_TEST_EXISTS)) {
    lmwb_input_error(error, "%s: no config.json: this folder is not a Hugging Face model", dir);
    return NULL;
  }
  lmwb_input_guard_add_folder(dir);
  LmwbConfig cfg;
  if (!lmwb_config_load(cfg_path, &cfg, error)) return NULL;
  /* Before mapping or allocating anything: the config's weights must fit memory. Before
   * allocating: a config that implies far more weights than the files hold (a hostile or wrong
   * config.json) is refused; a small shortfall is left to the loader, which names the missing or
   * mis-shaped tensor. */
  uint64_t need = lmwb_model_layout_size(&cfg);
  g_autofree char *what = g_strdup_printf("the model %s describes", cfg_path);
  if (!lmwb_memory_check(need * sizeof(float), what, error)) return NULL;
  LmwbSafetensors *st = lmwb_safetensors_open_dir(dir, error);
  if (!st) return NULL;
  uint64_t have = 0;
  for (size_t i = 0; i < lmwb_safetensors_count(st); i++) have += (uint64_t)lmwb_tensor_numel(lmwb_safetensors_at(st, i));
  if (have < need && (need - have) * sizeof(float) > ((uint64_t)64 << 20)) {
    lmwb_input_error(error, "%s: config.json implies %" G_GUINT64_FORMAT " weights but the safetensors files hold only %"
                     G_GUINT64_FORMAT " values", dir, need, have);
    lmwb_safetensors_close(st);
    return NULL;
  }
  LmwbModel *m = lmwb_model_alloc(&cfg, error);
  if (!m) {
    lmwb_safetensors_close(st);
    return NULL;
  }
  m->dir = g_strdup(dir);
  Loader ld = {.st = st, .dir = dir, .error = error};
  gboolean ok = cfg.arch == LMWB_ARCH_GPT2 ? load_gpt2(&ld, m)
                : cfg.arch == LMWB_ARCH_LLAMA ? load_llama(&ld, m) : load_neox(&ld, m);
  if (ld.dtype[0]) g_strlcpy(m->source_dtype, ld.dtype, sizeof m->source_dtype);
  g_free(ld.scratch);
  lmwb_safetensors_close(st);
  if (!ok) {
    lmwb_model_unref(m);
    return NULL;
  }
  /* The tokenizer is optional: a folder of weights alone still runs on token ids. */
  g_autofree char *tj = g_build_filename(dir, "tokenizer.json", NULL);
  g_autofree char *vj = g_build_filename(dir, "vocab.json", NULL);
  if (g_file_test(tj, G_FILE_TEST_EXISTS) || g_file_test(vj, G_FILE_TEST_EXISTS)) {
    m->tokenizer = lmwb_tokenizer_load_dir(dir, error);
    if (!m->tokenizer) {
      lmwb_model_unref(m);
      return NULL;
    }
    if (lmwb_tokenizer_vocab_size(m->tokenizer) > cfg.vocab_size) {
      lmwb_input_error(error, "%s: the tokenizer has %d tokens but the model's vocab_size is %d", dir,
                       lmwb_tokenizer_vocab_size(m->tokenizer), cfg.vocab_size);
      lmwb_model_unref(m);
      return NULL;
    }
    if (m->cfg.eos_id < 0) m->cfg.eos_id = lmwb_tokenizer_eos(m->tokenizer);
    if (m->cfg.bos_id < 0) m->cfg.bos_id = lmwb_tokenizer_bos(m->tokenizer);
  }
  return m;
}

/* ---- saving ------------------------------------------------------------------------------ */

typedef struct {
  LmwbSafetensorsWriter *w;
  LmwbDtype dt;
  GPtrArray *owned; /* temporaries kept alive until the writer saves */
} Saver;

static void put(Saver *s, const char *name, const float *data, int64_t rows, int64_t cols) {
  int64_t shape[2] = {rows, cols};
  lmwb_safetensors_writer_add_f32(s->w, name, s->dt, shape, cols ? 2 : 1, data);
}

static float *tmp(Saver *s, size_t n) {
  float *p = g_new(float, n);
  g_ptr_array_add(s->owned, p);
  return p;
}

/* Inverse of transpose_cols for Conv1D: dst[in, total] columns [c0, c0+out) from src[out, in]. */
static void untranspose(float *dst, const float *src, int64_t in, int64_t total, int64_t c0, int64_t out) {
  for (int64_t o = 0; o < out; o++)
    for (int64_t i = 0; i < in; i++) dst[i * total + c0 + o] = src[o * in + i];
}

static void save_gpt2(Saver *s, const LmwbModel *m) {
  const LmwbConfig *c = &m->cfg;
  int64_t C = c->d_model, F = c->d_ff;
  char nm[160];
#define N(...) (g_snprintf(nm, sizeof nm, __VA_ARGS__), nm)
  put(s, "transformer.wte.weight", m->w.wte, c->vocab_size, C);
  put(s, "transformer.wpe.weight", m->w.wpe, c->n_ctx, C);
  for (int L = 0; L < c->n_layer; L++) {
    const LmwbLayerWeights *lw = &m->w.layers[L];
    put(s, N("transformer.h.%d.ln_1.weight", L), lw->ln1_w, C, 0);
    put(s, N("transformer.h.%d.ln_1.bias", L), lw->ln1_b, C, 0);
    float *qkv = tmp(s, (size_t)(3 * C * C));
    untranspose(qkv, lw->wq, C, 3 * C, 0, C);
    untranspose(qkv, lw->wk, C, 3 * C, C, C);
    untranspose(qkv, lw->wv, C, 3 * C, 2 * C, C);
    put(s, N("transformer.h.%d.attn.c_attn.weight", L), qkv, C, 3 * C);
    float *b = tmp(s, (size_t)(3 * C));
    memcpy(b, lw->bq, C * sizeof(float));
    memcpy(b + C, lw->bk, C * sizeof(float));
    memcpy(b + 2 * C, lw->bv, C * sizeof(float));
    put(s, N("transformer.h.%d.attn.c_attn.bias", L), b, 3 * C, 0);
    float *wo = tmp(s, (size_t)(C * C));
    untranspose(wo, lw->wo, C, C, 0, C);
    put(s, N("transformer.h.%d.attn.c_proj.weight", L), wo, C, C);
    put(s, N("transformer.h.%d.attn.c_proj.bias", L), lw->bo, C, 0);
    put(s, N("transformer.h.%d.ln_2.weight", L), lw->ln2_w, C, 0);
    put(s, N("transformer.h.%d.ln_2.bias", L), lw->ln2_b, C, 0);
    float *fc = tmp(s, (size_t)(C * F));
    untranspose(fc, lw->w_up, C, F, 0, F);
    put(s, N("transformer.h.%d.mlp.c_fc.weight", L), fc, C, F);
    put(s, N("transformer.h.%d.mlp.c_fc.bias", L), lw->b_up, F, 0);
    float *pr = tmp(s, (size_t)(F * C));
    untranspose(pr, lw->w_down, F, C, 0, C);
    put(s, N("transformer.h.%d.mlp.c_proj.weight", L), pr, F, C);
    put(s, N("transformer.h.%d.mlp.c_proj.bias", L), lw->b_down, C, 0);
  }
  put(s, "transformer.ln_f.weight", m->w.lnf_w, C, 0);
  put(s, "transformer.ln_f.bias", m->w.lnf_b, C, 0);
  if (!c->tied_head) put(s, "lm_head.weight", m->w.head, c->vocab_size, C);
#undef N
}

static void save_llama(Saver *s, const LmwbModel *m) {
  const LmwbConfig *c = &m->cfg;
  int64_t C = c->d_model, F = c->d_ff, qd = (int64_t)c->n_head * c->head_dim, kd = (int64_t)c->n_kv_head * c->head_dim;
  char nm[160];
#define N(...) (g_snprintf(nm, sizeof nm, __VA_ARGS__), nm)
  put(s, "model.embed_tokens.weight", m->w.wte, c->vocab_size, C);
  for (int L = 0; L < c->n_layer; L++) {
    const LmwbLayerWeights *lw = &m->w.layers[L];
    put(s, N("model.layers.%d.input_layernorm.weight", L), lw->ln1_w, C, 0);
    put(s, N("model.layers.%d.self_attn.q_proj.weight", L), lw->wq, qd, C);
    put(s, N("model.layers.%d.self_attn.k_proj.weight", L), lw->wk, kd, C);
    put(s, N("model.layers.%d.self_attn.v_proj.weight", L), lw->wv, kd, C);
    if (c->qkv_bias) {
      put(s, N("model.layers.%d.self_attn.q_proj.bias", L), lw->bq, qd, 0);
      put(s, N("model.layers.%d.self_attn.k_proj.bias", L), lw->bk, kd, 0);
      put(s, N("model.layers.%d.self_attn.v_proj.bias", L), lw->bv, kd, 0);
    }
    put(s, N("model.layers.%d.self_attn.o_proj.weight", L), lw->wo, C, qd);
    if (c->o_bias) put(s, N("model.layers.%d.self_attn.o_proj.bias", L), lw->bo, C, 0);
    put(s, N("model.layers.%d.post_attention_layernorm.weight", L), lw->ln2_w, C, 0);
    put(s, N("model.layers.%d.mlp.gate_proj.weight", L), lw->w_gate, F, C);
    put(s, N("model.layers.%d.mlp.up_proj.weight", L), lw->w_up, F, C);
    put(s, N("model.layers.%d.mlp.down_proj.weight", L), lw->w_down, C, F);
  }
  put(s, "model.norm.weight", m->w.lnf_w, C, 0);
  if (!c->tied_head) put(s, "lm_head.weight", m->w.head, c->vocab_size, C);
#undef N
}

static void save_neox(Saver *s, const LmwbModel *m) {
  const LmwbConfig *c = &m->cfg;
  int64_t C = c->d_model, F = c->d_ff, H = c->n_head, hd = c->head_dim;
  char nm[160];
#define N(...) (g_snprintf(nm, sizeof nm, __VA_ARGS__), nm)
  put(s, "gpt_neox.embed_in.weight", m->w.wte, c->vocab_size, C);
  for (int L = 0; L < c->n_layer; L++) {
    const LmwbLayerWeights *lw = &m->w.layers[L];
    const char *p = "gpt_neox.layers";
    put(s, N("%s.%d.input_layernorm.weight", p, L), lw->ln1_w, C, 0);
    put(s, N("%s.%d.input_layernorm.bias", p, L), lw->ln1_b, C, 0);
    put(s, N("%s.%d.post_attention_layernorm.weight", p, L), lw->ln2_w, C, 0);
    put(s, N("%s.%d.post_attention_layernorm.bias", p, L), lw->ln2_b, C, 0);
    /* The fused QKV rows are [head][q|k|v][hd], as the loader splits them. */
    float *qkv = tmp(s, (size_t)(3 * C * C));
    for (int64_t h = 0; h < H; h++)
      for (int part = 0; part < 3; part++) {
        const float *src = part == 0 ? lw->wq : part == 1 ? lw->wk : lw->wv;
        memcpy(qkv + (h * 3 * hd + part * hd) * C, src + h * hd * C, (size_t)(hd * C) * sizeof(float));
      }
    put(s, N("%s.%d.attention.query_key_value.weight", p, L), qkv, 3 * C, C);
    if (c->qkv_bias) {
      float *b = tmp(s, (size_t)(3 * C));
      for (int64_t h = 0; h < H; h++)
        for (int part = 0; part < 3; part++) {
          const float *src = part == 0 ? lw->bq : part == 1 ? lw->bk : lw->bv;
          memcpy(b + h * 3 * hd + part * hd, src + h * hd, (size_t)hd * sizeof(float));
        }
      put(s, N("%s.%d.attention.query_key_value.bias", p, L), b, 3 * C, 0);
    }
    put(s, N("%s.%d.attention.dense.weight", p, L), lw->wo, C, C);
    if (c->o_bias) put(s, N("%s.%d.attention.dense.bias", p, L), lw->bo, C, 0);
    put(s, N("%s.%d.mlp.dense_h_to_4h.weight", p, L), lw->w_up, F, C);
    put(s, N("%s.%d.mlp.dense_h_to_4h.bias", p, L), lw->b_up, F, 0);
    put(s, N("%s.%d.mlp.dense_4h_to_h.weight", p, L), lw->w_down, C, F);
    put(s, N("%s.%d.mlp.dense_4h_to_h.bias", p, L), lw->b_down, C, 0);
  }
  put(s, "gpt_neox.final_layer_norm.weight", m->w.lnf_w, C, 0);
  put(s, "gpt_neox.final_layer_norm.bias", m->w.lnf_b, C, 0);
  if (!c->tied_head) put(s, "embed_out.weight", m->w.head, c->vocab_size, C);
#undef N
}

static gboolean copy_file_atomic(const char *src, const char *dst, GError **error) {
  size_t len = 0;
  g_autofree char *data = lmwb_file_read(src, (uint64_t)1 << 30, LMWB_READ_REGULAR, &len, error);
  return data && lmwb_file_write_atomic(dst, data, len, error);
}

/* The same folder under any spelling. */
static gboolean same_folder(const char *a, const char *b) {
  GStatBuf sa, sb;
  return g_stat(a, &sa) == 0 && g_stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

gboolean lmwb_model_save(const LmwbModel *m, const char *dir, const char *dtype, const char *tok_src, GError **error) {
  if (lmwb_model_has_lowrank(m, -1)) { /* low-rank changes are written as part of their tensors */
    g_autoptr(LmwbModel) flat = lmwb_model_materialize(m, error);
    return flat && lmwb_model_save(flat, dir, dtype, tok_src, error);
  }
  LmwbDtype dt = !g_strcmp0(dtype, "F16") ? LMWB_DTYPE_F16 : !g_strcmp0(dtype, "BF16") ? LMWB_DTYPE_BF16 : LMWB_DTYPE_F32;
  if (dtype && dt == LMWB_DTYPE_F32 && g_strcmp0(dtype, "F32")) {
    lmwb_input_error(error, "unknown dtype \"%s\" (F32, F16, BF16)", dtype);
    return FALSE;
  }
  if (g_mkdir_with_parents(dir, 0755) != 0) {
    lmwb_input_error(error, "cannot create folder %s", dir);
    return FALSE;
  }
  Saver s = {lmwb_safetensors_writer_new(), dt, g_ptr_array_new_with_free_func(g_free)};
  lmwb_safetensors_writer_set_metadata(s.w, "format", "pt");
  if (m->cfg.arch == LMWB_ARCH_GPT2) save_gpt2(&s, m);
  else if (m->cfg.arch == LMWB_ARCH_NEOX) save_neox(&s, m);
  else save_llama(&s, m);
  g_autofree char *st_path = g_build_filename(dir, "model.safetensors", NULL);
  gboolean ok = lmwb_safetensors_writer_save(s.w, st_path, error);
  lmwb_safetensors_writer_free(s.w);
  g_ptr_array_free(s.owned, TRUE);
  if (!ok) return FALSE;
  const char *torch_dtype = dt == LMWB_DTYPE_F16 ? "float16" : dt == LMWB_DTYPE_BF16 ? "bfloat16" : "float32";
  g_autofree char *cj = lmwb_config_to_json(&m->cfg, torch_dtype);
  g_autofree char *cfg_path = g_build_filename(dir, "config.json", NULL);
  ok = lmwb_file_write_atomic(cfg_path, cj, strlen(cj), error);
  if (!ok) return FALSE;
  const char *src = tok_src ? tok_src : m->dir;
  if (src && g_strcmp0(src, dir) && !same_folder(src, dir)) {
    const char *names[] = {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"};
    for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
      g_autofree char *a = g_build_filename(src, names[i], NULL);
      g_autofree char *b = g_build_filename(dir, names[i], NULL);
      if (g_file_test(a, G_FILE_TEST_EXISTS) && !copy_file_atomic(a, b, error)) return FALSE;
    }
  }
  return TRUE;
}
