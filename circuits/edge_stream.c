/* The masked residual stream on a runner's hooks (circuits/edge_stream.h). */
#include "app/core/errors.h"
#include "circuits/edge_stream.h"
#include <string.h>

/* One hook: the site, and which writers or readers its block holds. */
typedef struct {
  LmwbEdgeStream *s;
  LmwbSite site;
  bool writer;
  int first;  /* first writer / reader of the block */
  int count;  /* heads in the block (1 for single-row sites) */
  int id;     /* the runner's hook id */
} Site;

struct LmwbEdgeStream {
  LmwbRunner *r;
  LmwbEdgeGraph *g;
  int C;
  float *z, *dz;           /* [n_edges] masks and their gradients */
  bool all_ones;
  bool hold;               /* delta held at the last run's values */
  int B, T;                /* shape of the corrupted run (0: none yet; ã = 0) */
  float *corrupt, *delta, *gdelta; /* [n_writers, N, C] */
  size_t cap;              /* floats per writer block allocated (N * C) */
  float *tmp;              /* [max readers per site, N, C] */
  float *m;                /* [max readers per site, n_writers] 1 - z */
  Site *sites;
  int n_sites;
};


/* Buffers for a run of N rows: delta and its gradient (corrupted outputs are set elsewhere). */
static void ensure(LmwbEdgeStream *s, size_t NC) {
  if (NC <= s->cap) return;
  size_t nw = (size_t)s->g->n_writers, mr = (size_t)MAX(s->g->n_head, 1) + 1;
  g_free(s->delta);
  g_free(s->gdelta);
  g_free(s->tmp);
  s->delta = g_new0(float, nw * NC);
  s->gdelta = g_new0(float, nw * NC);
  s->tmp = g_new(float, mr * NC);
  float *c = g_new0(float, nw * NC);
  g_free(s->corrupt);
  s->corrupt = c;
  s->B = s->T = 0; /* the corrupted outputs are gone with the old buffer */
  s->cap = NC;
}

/* Whether the block belongs to a run the stream can act on. */
static bool usable(LmwbEdgeStream *s, const LmwbHookCtx *ctx) {
  size_t NC = (size_t)ctx->B * ctx->T * s->C;
  if (s->B && (ctx->B != s->B || ctx->T != s->T)) return false;
  ensure(s, NC);
  return true;
}

/* ---- writers ------------------------------------------------------------------------------- */

static void writer_fwd(float *block, const LmwbHookCtx *ctx, void *user) {
  Site *site = user;
  LmwbEdgeStream *s = site->s;
  if (!usable(s, ctx)) return;
  size_t N = (size_t)ctx->B * ctx->T, C = s->C, NC = N * C;
  if (site->first == 0) memset(s->gdelta, 0, (size_t)s->g->n_writers * NC * sizeof(float)); /* a new run */
  if (s->hold) return;
  int H = site->count;
  for (int h = 0; h < H; h++) {
    float *d = s->delta + (size_t)(site->first + h) * NC;
    const float *c = s->corrupt + (size_t)(site->first + h) * NC;
    for (size_t n = 0; n < N; n++) {
      const float *a = block + (n * H + h) * C;
      for (size_t i = 0; i < C; i++) d[n * C + i] = a[i] - (s->B ? c[n * C + i] : 0.f);
    }
  }
}

static void writer_bwd(float *block, const LmwbHookCtx *ctx, void *user) {
  Site *site = user;
  LmwbEdgeStream *s = site->s;
  if (!usable(s, ctx)) return;
  size_t N = (size_t)ctx->B * ctx->T, C = s->C, NC = N * C;
  int H = site->count;
  for (int h = 0; h < H; h++) {
    float *gd = s->gdelta + (size_t)(site->first + h) * NC;
    for (size_t n = 0; n < N; n++) {
      float *g = block + (n * H + h) * C;
      for (size_t i = 0; i < C; i++) g[i] += gd[n * C + i];
    }
    memset(gd, 0, NC * sizeof(float)); /* consumed: a second backward of the same run starts clean */
  }
}

/* ---- readers ------------------------------------------------------------------------------- */

/* m[k, P] = 1 - z of the block's readers; FALSE when every one is 0 (every edge kept). */
static bool load_m(LmwbEdgeStream *s, const Site *site, int P) {
  if (s->all_ones) return false;
  const float *z = s->z + s->g->reader_offset[site->first];
  bool any = false;
  for (int i = 0; i < site->count * P; i++) {
    s->m[i] = 1.f - z[i];
    any |= s->m[i] != 0.f;
  }
  return any;
}

static void reader_fwd(float *block, const LmwbHookCtx *ctx, void *user) {
  Site *site = user;
  LmwbEdgeStream *s = site->s;
  if (!usable(s, ctx)) return;
  int P = s->g->reader_n_in[site->first], K = site->count;
  if (!load_m(s, site, P)) return;
  size_t N = (size_t)ctx->B * ctx->T, C = s->C, NC = N * C;
  const LmwbBackend *cpu = lmwb_backend_cpu();
  /* tmp[k, N*C] = sum_w (1 - z_wk) delta_w */
  cpu->sgemm(false, false, K, (int)NC, P, 1.f, s->m, P, s->delta, (int)NC, 0.f, s->tmp, (int)NC);
  for (size_t n = 0; n < N; n++)
    for (int k = 0; k < K; k++) {
      float *x = block + (n * K + k) * C;
      const float *t = s->tmp + k * NC + n * C;
      for (size_t i = 0; i < C; i++) x[i] -= t[i];
    }
}

static void reader_bwd(float *block, const LmwbHookCtx *ctx, void *user) {
  Site *site = user;
  LmwbEdgeStream *s = site->s;
  if (!usable(s, ctx)) return;
  int P = s->g->reader_n_in[site->first], K = site->count;
  size_t N = (size_t)ctx->B * ctx->T, C = s->C, NC = N * C;
  const LmwbBackend *cpu = lmwb_backend_cpu();
  for (size_t n = 0; n < N; n++)
    for (int k = 0; k < K; k++) memcpy(s->tmp + k * NC + n * C, block + (n * K + k) * C, C * sizeof(float));
  /* dz[k, w] += <g_k, delta_w> */
  float *dz = s->dz + s->g->reader_offset[site->first];
  cpu->sgemm(false, true, K, P, (int)NC, 1.f, s->tmp, (int)NC, s->delta, (int)NC, 1.f, dz, P);
  /* dL/ddelta_w -= sum_k (1 - z_wk) g_k, handed to the writers' hooks */
  if (load_m(s, site, P))
    cpu->sgemm(true, false, P, (int)NC, K, -1.f, s->m, P, s->tmp, (int)NC, 1.f, s->gdelta, (int)NC);
}

/* ---- setup --------------------------------------------------------------------------------- */

static gboolean install(Site *site, GError **error) {
  LmwbHook h = {.site = site->site, .op = LMWB_HOOK_CALL, .fn = site->writer ? writer_fwd : reader_fwd,
                .bwd_fn = site->writer ? writer_bwd : reader_bwd, .user = site};
  site->id = lmwb_runner_add_hook(site->s->r, &h, error);
  return site->id != 0;
}

static gboolean add_site(LmwbEdgeStream *s, LmwbSiteKind kind, int layer, int first, int count, bool writer,
                         GError **error) {
  Site *site = &s->sites[s->n_sites];
  *site = (Site){.s = s, .site = {kind, layer}, .writer = writer, .first = first, .count = count};
  if (!install(site, error)) return FALSE;
  s->n_sites++;
  return TRUE;
}

LmwbEdgeStream *lmwb_edge_stream_new(LmwbRunner *r, GError **error) {
  const LmwbConfig *c = &lmwb_runner_model(r)->cfg;
  LmwbEdgeGraph *g = lmwb_edge_graph_new(c, error);
  if (!g) return NULL;
  LmwbEdgeStream *s = g_new0(LmwbEdgeStream, 1);
  s->r = r;
  s->g = g;
  s->C = c->d_model;
  s->z = g_new(float, g->n_edges);
  s->dz = g_new0(float, g->n_edges);
  lmwb_edge_stream_set_masks(s, NULL);
  s->m = g_new(float, (size_t)(MAX(c->n_head, c->n_kv_head) + 1) * g->n_writers);
  s->sites = g_new0(Site, 3 + 6 * c->n_layer);
  /* Sites is a fixed array: the hooks keep pointers into it. Writers before readers within a layer
   * does not matter to the runner (it applies each site's hooks where the site is computed). */
  gboolean ok = add_site(s, LMWB_SITE_RESID_PRE, 0, 0, 1, true, error);
  int H = c->n_head, K = c->n_kv_head;
  for (int l = 0; ok && l < c->n_layer; l++) {
    ok = add_site(s, LMWB_SITE_Q_INPUT, l, lmwb_edge_reader(g, LMWB_EDGE_READ_Q, l, 0), H, false, error) &&
         add_site(s, LMWB_SITE_K_INPUT, l, lmwb_edge_reader(g, LMWB_EDGE_READ_K, l, 0), K, false, error) &&
         add_site(s, LMWB_SITE_V_INPUT, l, lmwb_edge_reader(g, LMWB_EDGE_READ_V, l, 0), K, false, error) &&
         add_site(s, LMWB_SITE_RESULT, l, lmwb_edge_writer_head(g, l, 0), H, true, error) &&
         add_site(s, LMWB_SITE_MLP_IN, l, lmwb_edge_reader(g, LMWB_EDGE_READ_MLP, l, 0), 1, false, error) &&
         add_site(s, LMWB_SITE_MLP_OUT, l, lmwb_edge_writer_mlp(g, l), 1, true, error);
  }
  ok = ok && add_site(s, LMWB_SITE_RESID_POST, c->n_layer - 1, g->n_readers - 1, 1, false, error);
  if (!ok) {
    lmwb_edge_stream_free(s);
    return NULL;
  }
  return s;
}

void lmwb_edge_stream_free(LmwbEdgeStream *s) {
  if (!s) return;
  for (int i = 0; i < s->n_sites; i++) lmwb_runner_remove_hook(s->r, s->sites[i].id);
  lmwb_edge_graph_free(s->g);
  g_free(s->z);
  g_free(s->dz);
  g_free(s->corrupt);
  g_free(s->delta);
  g_free(s->gdelta);
  g_free(s->tmp);
  g_free(s->m);
  g_free(s->sites);
  g_free(s);
}

const LmwbEdgeGraph *lmwb_edge_stream_graph(const LmwbEdgeStream *s) { return s->g; }

/* Copy of a writer site's block into the corrupted outputs. */
static gboolean keep_writers(LmwbEdgeStream *s, LmwbSite site, int first, int count, size_t N, GError **error) {
  int64_t shape[4];
  const float *a = lmwb_runner_activation(s->r, site, shape, NULL, error);
  if (!a) return FALSE;
  size_t C = s->C, NC = N * C;
  for (int h = 0; h < count; h++)
    for (size_t n = 0; n < N; n++)
      memcpy(s->corrupt + (size_t)(first + h) * NC + n * C, a + (n * count + h) * C, C * sizeof(float));
  return TRUE;
}

gboolean lmwb_edge_stream_corrupt(LmwbEdgeStream *s, const int32_t *ids, int B, int T, const int *lens,
                                  GError **error) {
  /* The corrupted run needs only the writers' outputs: without the stream's hooks it runs without
   * the per-head copies of the residual (the costly part of a masked run). */
  LmwbForwardOptions fo = {.lens = lens, .last_logits_only = true, .sites = LMWB_RUN_ATTN_RESULT};
  for (int i = 0; i < s->n_sites; i++) lmwb_runner_remove_hook(s->r, s->sites[i].id);
  gboolean ok = lmwb_runner_forward(s->r, ids, B, T, &fo, error);
  gboolean back = TRUE;
  for (int i = 0; i < s->n_sites; i++) back &= install(&s->sites[i], ok && back ? error : NULL);
  if (!ok || !back) return FALSE;
  size_t N = (size_t)B * T;
  ensure(s, N * s->C);
  const LmwbEdgeGraph *g = s->g;
  ok = keep_writers(s, (LmwbSite){LMWB_SITE_RESID_PRE, 0}, 0, 1, N, error);
  for (int l = 0; ok && l < g->n_layers; l++)
    ok = keep_writers(s, (LmwbSite){LMWB_SITE_RESULT, l}, lmwb_edge_writer_head(g, l, 0), g->n_head, N, error) &&
         keep_writers(s, (LmwbSite){LMWB_SITE_MLP_OUT, l}, lmwb_edge_writer_mlp(g, l), 1, N, error);
  if (!ok) return FALSE;
  s->B = B;
  s->T = T;
  return TRUE;
}

const float *lmwb_edge_stream_corrupted(const LmwbEdgeStream *s, int *B, int *T) {
  *B = s->B;
  *T = s->T;
  return s->B ? s->corrupt : NULL;
}

void lmwb_edge_stream_set_corrupted(LmwbEdgeStream *s, const float *outputs, int B, int T) {
  size_t NC = (size_t)B * T * s->C;
  ensure(s, NC);
  memcpy(s->corrupt, outputs, (size_t)s->g->n_writers * NC * sizeof(float));
  s->B = B;
  s->T = T;
}

void lmwb_edge_stream_set_masks(LmwbEdgeStream *s, const float *z) {
  s->all_ones = true;
  for (int64_t e = 0; e < s->g->n_edges; e++) {
    s->z[e] = z ? z[e] : 1.f;
    s->all_ones &= s->z[e] == 1.f;
  }
}

const float *lmwb_edge_stream_mask_grads(const LmwbEdgeStream *s) { return s->dz; }
void lmwb_edge_stream_reset_grads(LmwbEdgeStream *s) { memset(s->dz, 0, (size_t)s->g->n_edges * sizeof(float)); }
void lmwb_edge_stream_hold_delta(LmwbEdgeStream *s, bool hold) { s->hold = hold; }
