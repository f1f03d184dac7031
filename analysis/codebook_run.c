/* Codebooks in a run: CALL hooks that replace hook_z / hook_mlp_out by the mean of the chosen
 * codes, the code ids of the last forward, clamps, and the gradients training needs.
 * Contract: codebooks.h. */
#include "analysis/codebooks.h"
#include "app/core/errors.h"
#include <math.h>
#include <string.h>

typedef struct {
  LmwbCodebookRun *run;
  int book;
} BookHook;

typedef struct {
  int32_t *ids;   /* [B*T, groups, k] of the last forward */
  size_t cap;
  int B, T;
  bool have;
  float *chat;    /* unit codes [groups, C, width] */
  float *grads;   /* training: [groups, C, width] */
  int64_t *used;  /* training: [groups * C] */
  float *inputs;  /* keep_inputs: the site's rows before replacement [B*T, groups * width] */
  size_t in_cap;
  int in_rows;
} BookState;

struct LmwbCodebookRun {
  LmwbRunner *r;
  LmwbCodebooks *cb;
  const LmwbConfig *cfg;
  int *hook_ids;
  BookHook *bh;
  BookState *st;
  bool chat_stale;
  GArray *clamps; /* LmwbCodeClamp, positions owned */
  float *scratch;
  size_t scratch_n;
  int32_t *gids;  /* one group's ids [N, k] */
  size_t gids_n;
  bool training, keep_inputs, passthrough;
  float mse_weight;
  double mse_sum;
  int64_t mse_forwards;
};

static float *grow(float **p, size_t *cap, size_t n) {
  if (n > *cap) {
    g_free(*p);
    *p = g_new(float, n);
    *cap = n;
  }
  return *p;
}

static void refresh_chat(LmwbCodebookRun *run) {
  const LmwbCodebooks *cb = run->cb;
  for (int i = 0; i < cb->n; i++) {
    const LmwbCodebook *b = &cb->books[i];
    size_t rows = (size_t)b->groups * cb->num_codes;
    if (!run->st[i].chat) run->st[i].chat = g_new(float, rows * b->width);
#pragma omp parallel for schedule(static) if (rows * b->width > 65536)
    for (size_t j = 0; j < rows; j++) {
      const float *c = b->codes + j * b->width;
      float *o = run->st[i].chat + j * b->width;
      double s = 0;
      for (int d = 0; d < b->width; d++) s += (double)c[d] * c[d];
      /* A zero code scores 0 everywhere rather than NaN. */
      float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.f;
      for (int d = 0; d < b->width; d++) o[d] = c[d] * inv;
    }
  }
  run->chat_stale = false;
}

static gboolean position_in(const LmwbCodeClamp *c, int pos) {
  if (!c->positions) return TRUE;
  for (int i = 0; i < c->n_positions; i++)
    if (c->positions[i] == pos) return TRUE;
  return FALSE;
}

/* Clamps of this codebook group overwrite the chosen ids. */
static void apply_clamps(LmwbCodebookRun *run, const LmwbCodebook *b, int g, int32_t *ids, const LmwbHookCtx *ctx) {
  int k = run->cb->k;
  for (guint ci = 0; ci < run->clamps->len; ci++) {
    const LmwbCodeClamp *c = &g_array_index(run->clamps, LmwbCodeClamp, ci);
    if (c->layer != b->layer || c->site != b->site || (c->head >= 0 && c->head != g)) continue;
    for (int bb = 0; bb < ctx->B; bb++)
      for (int t = 0; t < ctx->T; t++) {
        if (!position_in(c, ctx->past + t)) continue;
        int32_t *row = ids + ((size_t)bb * ctx->T + t) * k;
        if (c->slot < 0)
          for (int s = 0; s < k; s++) row[s] = c->code;
        else
          row[c->slot] = c->code;
      }
  }
}

static bool row_valid(const LmwbHookCtx *ctx, int i) {
  return !ctx->lens || i % ctx->T < ctx->lens[i / ctx->T];
}

/* Training: the reconstruction term's gradient to the chosen codes, and its value. */
static void mse_grads(LmwbCodebookRun *run, int book, int g, const int32_t *ids, const float *x, int ldx,
                      const float *out, int n, const LmwbHookCtx *ctx) {
  const LmwbCodebook *b = &run->cb->books[book];
  BookState *st = &run->st[book];
  int k = run->cb->k, W = b->width, C = run->cb->num_codes;
  int valid = 0;
  for (int i = 0; i < n; i++) valid += row_valid(ctx, i);
  if (!valid) return;
  float *grads = st->grads + (size_t)g * C * W;
  double sum = 0;
  float scale = run->mse_weight * 2.f / ((float)k * valid);
  for (int i = 0; i < n; i++) {
    if (!row_valid(ctx, i)) continue;
    const float *xi = x + (size_t)i * ldx, *oi = out + (size_t)i * W;
    for (int d = 0; d < W; d++) sum += (double)(oi[d] - xi[d]) * (oi[d] - xi[d]);
    for (int s = 0; s < k; s++) {
      int32_t j = ids[(size_t)i * k + s];
      float *gj = grads + (size_t)j * W;
      for (int d = 0; d < W; d++) gj[d] += scale * (oi[d] - xi[d]);
      st->used[(size_t)g * C + j]++;
    }
  }
  run->mse_sum += sum / valid / b->groups;
}

static void codebook_fwd(float *block, const LmwbHookCtx *ctx, void *user) {
  BookHook *bh = user;
  LmwbCodebookRun *run = bh->run;
  const LmwbCodebook *b = &run->cb->books[bh->book];
  BookState *st = &run->st[bh->book];
  int k = run->cb->k, C = run->cb->num_codes, W = b->width, G = b->groups;
  int n = ctx->B * ctx->T;
  if (run->keep_inputs) {
    grow(&st->inputs, &st->in_cap, (size_t)n * ctx->R);
    memcpy(st->inputs, block, sizeof(float) * (size_t)n * ctx->R);
    st->in_rows = n;
  }
  if (run->passthrough) return;
  if (run->chat_stale) refresh_chat(run);
  size_t need = (size_t)n * G * k;
  if (need > st->cap) {
    g_free(st->ids);
    st->ids = g_new(int32_t, need);
    st->cap = need;
  }
  if ((size_t)n * k > run->gids_n) {
    g_free(run->gids);
    run->gids = g_new(int32_t, (size_t)n * k);
    run->gids_n = (size_t)n * k;
  }
  size_t sn = lmwb_codebook_scratch_floats(n, W, C) + (size_t)n * W;
  float *scratch = grow(&run->scratch, &run->scratch_n, sn), *out = scratch + lmwb_codebook_scratch_floats(n, W, C);
  for (int g = 0; g < G; g++) {
    float *x = block + (size_t)g * W;
    lmwb_codebook_select(st->chat + (size_t)g * C * W, C, W, k, x, ctx->R, n, run->gids, scratch);
    apply_clamps(run, b, g, run->gids, ctx);
    lmwb_codebook_decode(b->codes + (size_t)g * C * W, W, k, run->gids, n, out, W);
    if (run->training) mse_grads(run, bh->book, g, run->gids, x, ctx->R, out, n, ctx);
    for (int i = 0; i < n; i++) {
      memcpy(x + (size_t)i * ctx->R, out + (size_t)i * W, sizeof(float) * W);
      memcpy(st->ids + ((size_t)i * G + g) * k, run->gids + (size_t)i * k, sizeof(int32_t) * k);
    }
  }
  st->B = ctx->B;
  st->T = ctx->T;
  st->have = true;
  if (run->training && bh->book == 0) run->mse_forwards++;
}

/* Straight-through: the gradient reaching the output passes to the input unchanged; in training
 * it also reaches the chosen codes, 1/k each. */
static void codebook_bwd(float *block, const LmwbHookCtx *ctx, void *user) {
  BookHook *bh = user;
  LmwbCodebookRun *run = bh->run;
  if (!run->training || run->passthrough) return;
  const LmwbCodebook *b = &run->cb->books[bh->book];
  BookState *st = &run->st[bh->book];
  int k = run->cb->k, C = run->cb->num_codes, W = b->width, G = b->groups, n = ctx->B * ctx->T;
  if (!st->have || st->B != ctx->B || st->T != ctx->T) return;
  float inv = 1.f / (float)k;
  for (int i = 0; i < n; i++)
    for (int g = 0; g < G; g++) {
      const float *d = block + (size_t)i * ctx->R + (size_t)g * W;
      for (int s = 0; s < k; s++) {
        float *gj = st->grads + ((size_t)g * C + st->ids[((size_t)i * G + g) * k + s]) * W;
        for (int e = 0; e < W; e++) gj[e] += inv * d[e];
      }
    }
}

LmwbCodebookRun *lmwb_codebooks_attach(LmwbRunner *r, LmwbCodebooks *cb, GError **error) {
  const LmwbConfig *cfg = &lmwb_runner_model(r)->cfg;
  if (!lmwb_codebooks_check(cb, cfg, cb->source ? cb->source : "codebooks", error)) return NULL;
  LmwbCodebookRun *run = g_new0(LmwbCodebookRun, 1);
  run->r = r;
  run->cb = cb;
  run->cfg = cfg;
  run->hook_ids = g_new0(int, cb->n);
  run->bh = g_new0(BookHook, cb->n);
  run->st = g_new0(BookState, cb->n);
  run->clamps = g_array_new(FALSE, TRUE, sizeof(LmwbCodeClamp));
  run->chat_stale = true;
  for (int i = 0; i < cb->n; i++) {
    run->bh[i] = (BookHook){run, i};
    LmwbHook h = {.site = lmwb_codebook_engine_site(cb->books[i].site, cb->books[i].layer), .op = LMWB_HOOK_CALL,
                  .fn = codebook_fwd, .bwd_fn = codebook_bwd, .user = &run->bh[i]};
    run->hook_ids[i] = lmwb_runner_add_hook(r, &h, error);
    if (!run->hook_ids[i]) {
      lmwb_codebooks_detach(r, run);
      return NULL;
    }
  }
  return run;
}

void lmwb_codebook_run_clear_clamps(LmwbCodebookRun *run) {
  for (guint i = 0; i < run->clamps->len; i++) lmwb_code_clamp_clear(&g_array_index(run->clamps, LmwbCodeClamp, i));
  g_array_set_size(run->clamps, 0);
}

void lmwb_codebooks_detach(LmwbRunner *r, LmwbCodebookRun *run) {
  if (!run) return;
  for (int i = 0; r && i < run->cb->n; i++)
    if (run->hook_ids[i]) lmwb_runner_remove_hook(r, run->hook_ids[i]);
  for (int i = 0; i < run->cb->n; i++) {
    g_free(run->st[i].ids);
    g_free(run->st[i].chat);
    g_free(run->st[i].grads);
    g_free(run->st[i].used);
    g_free(run->st[i].inputs);
  }
  lmwb_codebook_run_clear_clamps(run);
  g_array_free(run->clamps, TRUE);
  g_free(run->hook_ids);
  g_free(run->bh);
  g_free(run->st);
  g_free(run->scratch);
  g_free(run->gids);
  g_free(run);
}

void lmwb_codebook_run_changed(LmwbCodebookRun *run) { run->chat_stale = true; }

gboolean lmwb_codebook_run_clamp(LmwbCodebookRun *run, const LmwbCodeClamp *c, GError **error) {
  const LmwbCodebooks *cb = run->cb;
  const char *sn = lmwb_codebook_site_name(c->site);
  const LmwbCodebook *b = lmwb_codebooks_find(cb, c->layer, c->site);
  if (!b) {
    lmwb_input_error(error, "clamp: site: layer %d has no %s codebook in this codebook set", c->layer, sn);
    return FALSE;
  }
  if (c->code < 0 || c->code >= cb->num_codes) {
    lmwb_input_error(error, "clamp: code %d is not in 0..%d (the set has %d codes)", c->code, cb->num_codes - 1,
                     cb->num_codes);
    return FALSE;
  }
  if (c->head >= b->groups || (c->site == LMWB_CODEBOOK_MLP && c->head > 0) || c->head < -1) {
    lmwb_input_error(error, "clamp: head %d is not in 0..%d", c->head, b->groups - 1);
    return FALSE;
  }
  if (c->slot < -1 || c->slot >= cb->k) {
    lmwb_input_error(error, "clamp: slot %d is not in 0..%d (k = %d)", c->slot, cb->k - 1, cb->k);
    return FALSE;
  }
  for (int i = 0; i < c->n_positions; i++)
    if (c->positions[i] < 0 || c->positions[i] >= run->cfg->n_ctx) {
      lmwb_input_error(error, "clamp: position %d is not in 0..%d", c->positions[i], run->cfg->n_ctx - 1);
      return FALSE;
    }
  LmwbCodeClamp copy = *c;
  copy.positions = c->positions ? g_memdup2(c->positions, sizeof(int) * (size_t)c->n_positions) : NULL;
  g_array_append_val(run->clamps, copy);
  return TRUE;
}

gboolean lmwb_codebook_run_check_positions(LmwbCodebookRun *run, int length, GError **error) {
  for (guint i = 0; i < run->clamps->len; i++) {
    const LmwbCodeClamp *c = &g_array_index(run->clamps, LmwbCodeClamp, i);
    for (int j = 0; j < c->n_positions; j++)
      if (c->positions[j] >= length) {
        lmwb_input_error(error, "clamp %u: position %d is past the sequence (positions 0..%d)", i, c->positions[j],
                         length - 1);
        return FALSE;
      }
  }
  return TRUE;
}

const int32_t *lmwb_codebook_run_codes(LmwbCodebookRun *run, int layer, LmwbCodebookSite site, int64_t shape[4],
                                       int *ndim, GError **error) {
  for (int i = 0; i < run->cb->n; i++) {
    const LmwbCodebook *b = &run->cb->books[i];
    if (b->layer != layer || b->site != site) continue;
    BookState *st = &run->st[i];
    if (!st->have) {
      lmwb_input_error(error, "blocks.%d.%s.hook_codes: no forward pass has been run", layer,
                       lmwb_codebook_site_name(site));
      return NULL;
    }
    shape[0] = st->B;
    shape[1] = st->T;
    if (site == LMWB_CODEBOOK_ATTN) {
      shape[2] = b->groups;
      shape[3] = run->cb->k;
      *ndim = 4;
    } else {
      shape[2] = run->cb->k;
      *ndim = 3;
    }
    return st->ids;
  }
  lmwb_input_error(error, "blocks.%d.%s.hook_codes: the codebook set has no %s codebook at layer %d", layer,
                   lmwb_codebook_site_name(site), lmwb_codebook_site_name(site), layer);
  return NULL;
}

gboolean lmwb_codebook_codes_site_parse(const char *name, int *layer, LmwbCodebookSite *site) {
  if (!g_str_has_prefix(name, "blocks.")) return FALSE;
  char *end = NULL;
  long L = strtol(name + 7, &end, 10);
  if (end == name + 7 || L < 0 || L > G_MAXINT) return FALSE;
  if (!strcmp(end, ".attn.hook_codes")) *site = LMWB_CODEBOOK_ATTN;
  else if (!strcmp(end, ".mlp.hook_codes")) *site = LMWB_CODEBOOK_MLP;
  else return FALSE;
  *layer = (int)L;
  return TRUE;
}

/* ---- training ---------------------------------------------------------------------------------- */

void lmwb_codebook_run_set_training(LmwbCodebookRun *run, bool on, float mse_weight) {
  run->training = on;
  run->mse_weight = mse_weight;
  if (!on) return;
  for (int i = 0; i < run->cb->n; i++) {
    const LmwbCodebook *b = &run->cb->books[i];
    size_t n = (size_t)b->groups * run->cb->num_codes;
    if (!run->st[i].grads) run->st[i].grads = g_new0(float, n * b->width);
    if (!run->st[i].used) run->st[i].used = g_new0(int64_t, n);
  }
}

void lmwb_codebook_run_zero_grads(LmwbCodebookRun *run) {
  for (int i = 0; i < run->cb->n; i++) {
    const LmwbCodebook *b = &run->cb->books[i];
    size_t n = (size_t)b->groups * run->cb->num_codes;
    if (run->st[i].grads) memset(run->st[i].grads, 0, sizeof(float) * n * b->width);
    if (run->st[i].used) memset(run->st[i].used, 0, sizeof(int64_t) * n);
  }
  run->mse_sum = 0;
  run->mse_forwards = 0;
}

float *lmwb_codebook_run_grads(LmwbCodebookRun *run, int book) { return run->st[book].grads; }
const int64_t *lmwb_codebook_run_used(LmwbCodebookRun *run, int book) { return run->st[book].used; }

double lmwb_codebook_run_mse(LmwbCodebookRun *run, int64_t *forwards) {
  if (forwards) *forwards = run->mse_forwards;
  return run->mse_sum;
}

void lmwb_codebook_run_set_inputs(LmwbCodebookRun *run, bool keep, bool passthrough) {
  run->keep_inputs = keep;
  run->passthrough = passthrough;
}

const float *lmwb_codebook_run_inputs(LmwbCodebookRun *run, int book, int *rows) {
  *rows = run->keep_inputs ? run->st[book].in_rows : 0;
  return *rows ? run->st[book].inputs : NULL;
}
