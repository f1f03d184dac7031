/* Finite-difference checks of every op pair of the CPU backend, plus forward checks against naive
 * formulas. For each op: L = sum(out * R) with random R (accumulated in double); the analytic
 * gradient from backward is compared with (L(x+h) - L(x-h)) / 2h for every input element.
 * Every backward is called into gradient buffers pre-filled with random values, so an op that
 * overwrote instead of accumulating would fail the comparison. */
#include "app/engine/backend.h"

#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const LmwbOps *O;

/* ---- helpers ---- */

static guint64 rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (double)(rng_state >> 11) / (double)(1ull << 53);
}
static float nrand(void) {
  double u1 = urand(), u2 = urand();
  if (u1 < 1e-300) u1 = 1e-300;
  return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * G_PI * u2));
}
static float *randn(size_t n, float s) {
  float *a = g_new(float, n ? n : 1);
  for (size_t i = 0; i < n; i++) a[i] = s * nrand();
  return a;
}
static float *zeros(size_t n) { return g_new0(float, n ? n : 1); }
static float *fdup(const float *a, size_t n) { return g_memdup2(a, sizeof(float) * (n ? n : 1)); }

static double dotd(const float *a, const float *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
  return s;
}

/* Gradient buffers start with junk so that backward must add, not overwrite. */
typedef struct {
  float *g, *g0;
  size_t n;
} Grad;
static Grad grad_new(size_t n) {
  Grad gr = {randn(n, 1.f), NULL, n};
  gr.g0 = fdup(gr.g, n);
  return gr;
}
/* The accumulated part: g - g0. */
static float *grad_delta(Grad *gr) {
  for (size_t i = 0; i < gr->n; i++) gr->g[i] -= gr->g0[i];
  return gr->g;
}
static void grad_free(Grad *gr) {
  g_free(gr->g);
  g_free(gr->g0);
}

typedef double (*LossFn)(void *ctx);

#define FD_EPS 1e-2
#define FD_RTOL 2e-3
#define FD_ATOL 5e-4

/* Compare analytic[i] with the central difference of f in x[i], for every i. */
static void check_grad(const char *what, float *x, size_t n, const float *analytic, LossFn f,
                       void *ctx, gboolean expect_nonzero) {
  double max_err = 0, norm = 0;
  for (size_t i = 0; i < n; i++) {
    float xi = x[i];
    float xp = xi + (float)FD_EPS, xm = xi - (float)FD_EPS;
    x[i] = xp;
    double lp = f(ctx);
    x[i] = xm;
    double lm = f(ctx);
    x[i] = xi;
    double fd = (lp - lm) / ((double)xp - (double)xm);
    double an = analytic[i];
    double err = fabs(fd - an);
    double tol = FD_RTOL * fmax(fabs(fd), fabs(an)) + FD_ATOL;
    if (!(err <= tol))
      g_error("%s: gradient mismatch at %zu: analytic %.6g, finite difference %.6g", what, i, an, fd);
    max_err = fmax(max_err, err);
    norm += an * an;
  }
  if (expect_nonzero && !(norm > 1e-6)) g_error("%s: analytic gradient is all zero", what);
  g_test_message("%s: %zu elements, max abs error %.3g, |grad| %.3g", what, n, max_err, sqrt(norm));
}

static void assert_close(const char *what, const float *a, const float *b, size_t n, double rtol,
                         double atol) {
  for (size_t i = 0; i < n; i++) {
    double err = fabs((double)a[i] - b[i]);
    if (!(err <= atol + rtol * fabs((double)b[i])))
      g_error("%s: mismatch at %zu: %.8g vs %.8g", what, i, a[i], b[i]);
  }
}

/* ---- backend selection, memory, sgemm ---- */

static void test_backend(void) {
  const LmwbBackend *cpu = lmwb_backend_cpu();
  g_assert_nonnull(cpu);
  g_assert_cmpstr(cpu->name, ==, "cpu");
  g_unsetenv("LMWB_BACKEND");
  GError *err = NULL;
  g_assert_true(lmwb_backend_get(NULL, &err) == cpu);
  g_assert_true(lmwb_backend_get("cpu", &err) == cpu);
  g_assert_true(lmwb_backend_get("CPU", &err) == cpu);
  g_assert_true(lmwb_backend_get("checked", &err) == lmwb_backend_checked());
  g_assert_no_error(err);
  g_assert_null(lmwb_backend_get("tpu", &err));
  g_assert_nonnull(strstr(err->message, "unknown backend"));
  g_clear_error(&err);
  /* cuda without a device (or without CUDA in the build) is refused with the reason, never a
   * silent fall back to the CPU */
  const LmwbBackend *cuda = lmwb_backend_get("cuda", &err);
  g_assert_true(cuda == lmwb_backend_cuda());
  if (!cuda) {
    g_assert_nonnull(strstr(err->message, "cuda"));
    g_clear_error(&err);
  }
  g_setenv("LMWB_BACKEND", "nonsense", TRUE);
  g_assert_null(lmwb_backend_get(NULL, &err));
  g_assert_nonnull(strstr(err->message, "LMWB_BACKEND=nonsense"));
  g_clear_error(&err);
  g_setenv("LMWB_BACKEND", "cpu", TRUE);
  g_assert_true(lmwb_backend_get(NULL, &err) == cpu);
  g_unsetenv("LMWB_BACKEND");
  /* copy2d moves strided rows */
  float src[12], dst[12] = {0};
  for (int i = 0; i < 12; i++) src[i] = (float)i;
  cpu->copy2d(dst, 4, src + 1, 3, 3, 2); /* rows of 2 from a stride of 3 into a stride of 4 */
  const float want[12] = {1, 2, 0, 0, 4, 5, 0, 0, 7, 8, 0, 0};
  assert_close("copy2d", dst, want, 12, 0, 0);

  float host[37], back[37];
  for (int i = 0; i < 37; i++) host[i] = (float)i * 0.5f;
  float *d = cpu->alloc(sizeof host);
  g_assert_nonnull(d);
  g_assert_cmpuint((guintptr)d % 64, ==, 0);
  cpu->to_device(d, host, sizeof host);
  cpu->to_host(back, d, sizeof host);
  g_assert_cmpmem(host, sizeof host, back, sizeof back);
  cpu->zero(d, sizeof host);
  cpu->to_host(back, d, sizeof host);
  for (int i = 0; i < 37; i++) g_assert_cmpfloat(back[i], ==, 0.f);
  cpu->free(d);

  cpu->set_threads(1);
  cpu->set_threads(2);

  /* sgemm, all four transpose cases, padded leading dimensions, alpha and beta. */
  const int M = 5, N = 7, K = 3, pad = 2;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
      int lda = ac + pad, ldb = bc + pad, ldc = N + pad;
      float *A = randn((size_t)ar * lda, 1.f), *Bm = randn((size_t)br * ldb, 1.f);
      float *C = randn((size_t)M * ldc, 1.f), *C0 = fdup(C, (size_t)M * ldc);
      cpu->sgemm(ta, tb, M, N, K, 0.5f, A, lda, Bm, ldb, 2.0f, C, ldc);
      for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
          double s = 0;
          for (int k = 0; k < K; k++) {
            double a = ta ? A[k * lda + i] : A[i * lda + k];
            double b = tb ? Bm[j * ldb + k] : Bm[k * ldb + j];
            s += a * b;
          }
          double want = 0.5 * s + 2.0 * C0[i * ldc + j];
          g_assert_cmpfloat_with_epsilon(C[i * ldc + j], want, 1e-4);
        }
      /* padding columns of C untouched */
      for (int i = 0; i < M; i++)
        for (int j = N; j < ldc; j++) g_assert_cmpfloat(C[i * ldc + j], ==, C0[i * ldc + j]);
      g_free(A), g_free(Bm), g_free(C), g_free(C0);
    }
}

/* ---- embedding ---- */

typedef struct {
  int N, C;
  const int32_t *ids;
  float *table, *out, *R;
} EmbedCtx;
static double embed_loss(void *p) {
  EmbedCtx *c = p;
  O->embed_fwd(c->out, c->ids, c->table, c->N, c->C);
  return dotd(c->out, c->R, (size_t)c->N * c->C);
}

static void test_embed(void) {
  enum { V = 6, N = 7, C = 5 };
  const int32_t ids[N] = {3, 1, 3, 0, 5, 3, -1}; /* repeats accumulate; -1 is a zero row */
  EmbedCtx c = {N, C, ids, randn(V * C, 1.f), zeros(N * C), randn(N * C, 1.f)};
  embed_loss(&c);
  for (int n = 0; n < N; n++)
    for (int k = 0; k < C; k++)
      g_assert_cmpfloat(c.out[n * C + k], ==, ids[n] < 0 ? 0.f : c.table[ids[n] * C + k]);
  Grad g = grad_new(V * C);
  O->embed_bwd(g.g, c.R, ids, N, C);
  check_grad("embed dtable", c.table, V * C, grad_delta(&g), embed_loss, &c, TRUE);
  /* rows never looked up (id 2, 4) get no gradient */
  for (int k = 0; k < C; k++) g_assert_cmpfloat(g.g[2 * C + k], ==, 0.f);
  grad_free(&g);
  g_free(c.table), g_free(c.out), g_free(c.R);
}

/* ---- LayerNorm and RMSNorm ---- */

typedef struct {
  int N, C;
  gboolean rms, freeze;
  float *x, *w, *b, *out, *R, *mean, *rstd;
  const float *rstd0; /* frozen scales: the forward's rstd, held fixed */
} NormCtx;

static double norm_loss(void *p) {
  NormCtx *c = p;
  if (!c->freeze) {
    if (c->rms)
      O->rmsnorm_fwd(c->out, c->rstd, c->x, c->w, c->N, c->C, 1e-5f);
    else
      O->layernorm_fwd(c->out, c->mean, c->rstd, c->x, c->w, c->b, c->N, c->C, 1e-5f);
    return dotd(c->out, c->R, (size_t)c->N * c->C);
  }
  /* The frozen-scale function, in double: rstd fixed, the mean still a function of x. */
  double L = 0;
  for (int n = 0; n < c->N; n++) {
    const float *xr = c->x + (size_t)n * c->C;
    double m = 0;
    if (!c->rms) {
      for (int k = 0; k < c->C; k++) m += xr[k];
      m /= c->C;
    }
    for (int k = 0; k < c->C; k++) {
      double o = (xr[k] - m) * c->rstd0[n] * c->w[k] + (c->b ? c->b[k] : 0.0);
      L += o * c->R[(size_t)n * c->C + k];
    }
  }
  return L;
}

static void run_norm(gboolean rms, gboolean bias, gboolean freeze) {
  enum { N = 4, C = 9 };
  NormCtx c = {N, C, rms, FALSE};
  c.x = randn(N * C, 2.f);
  for (int i = 0; i < N * C; i++) c.x[i] += 1.5f; /* a non-zero mean */
  c.w = randn(C, 1.f), c.b = bias ? randn(C, 1.f) : NULL;
  c.out = zeros(N * C), c.R = randn(N * C, 1.f), c.mean = zeros(N), c.rstd = zeros(N);
  norm_loss(&c);
  /* forward statistics against double */
  for (int n = 0; n < N; n++) {
    double m = 0, v = 0, ss = 0;
    for (int k = 0; k < C; k++) m += c.x[n * C + k], ss += (double)c.x[n * C + k] * c.x[n * C + k];
    m /= C;
    for (int k = 0; k < C; k++) v += (c.x[n * C + k] - m) * (c.x[n * C + k] - m);
    double r = rms ? 1.0 / sqrt(ss / C + 1e-5) : 1.0 / sqrt(v / C + 1e-5);
    g_assert_cmpfloat_with_epsilon(c.rstd[n], r, 1e-5 * r);
    if (!rms) g_assert_cmpfloat_with_epsilon(c.mean[n], m, 1e-5);
    for (int k = 0; k < C; k++) {
      double want = (c.x[n * C + k] - (rms ? 0 : m)) * r * c.w[k] + (bias ? c.b[k] : 0);
      g_assert_cmpfloat_with_epsilon(c.out[n * C + k], want, 1e-4);
    }
  }
  float *rstd0 = fdup(c.rstd, N), *mean0 = fdup(c.mean, N);
  Grad dx = grad_new(N * C), dw = grad_new(C), db = grad_new(C);
  if (rms)
    O->rmsnorm_bwd(dx.g, dw.g, c.R, c.x, c.w, rstd0, N, C, freeze);
  else
    O->layernorm_bwd(dx.g, dw.g, bias ? db.g : NULL, c.R, c.x, c.w, mean0, rstd0, N, C, freeze);
  c.freeze = freeze;
  c.rstd0 = rstd0;
  char name[64];
  snprintf(name, sizeof name, "%s%s%s dx", rms ? "rmsnorm" : "layernorm", bias ? "+bias" : "",
           freeze ? " frozen" : "");
  check_grad(name, c.x, N * C, grad_delta(&dx), norm_loss, &c, TRUE);
  /* dw and db are the same whether or not the scale is frozen (x is not perturbed here). */
  snprintf(name, sizeof name, "%s dw", rms ? "rmsnorm" : "layernorm");
  check_grad(name, c.w, C, grad_delta(&dw), norm_loss, &c, TRUE);
  if (bias) check_grad("layernorm db", c.b, C, grad_delta(&db), norm_loss, &c, TRUE);
  else
    for (int k = 0; k < C; k++) g_assert_cmpfloat(db.g[k], ==, db.g0[k]); /* NULL db: untouched */
  if (freeze) {
    /* A frozen-scale gradient really differs from the full one. */
    Grad full = grad_new(N * C);
    if (rms)
      O->rmsnorm_bwd(full.g, NULL, c.R, c.x, c.w, rstd0, N, C, false);
    else
      O->layernorm_bwd(full.g, NULL, NULL, c.R, c.x, c.w, mean0, rstd0, N, C, false);
    grad_delta(&full);
    double diff = 0;
    for (int i = 0; i < N * C; i++) diff += fabs(full.g[i] - dx.g[i]);
    g_assert_cmpfloat(diff, >, 1e-3);
    grad_free(&full);
  }
  grad_free(&dx), grad_free(&dw), grad_free(&db);
  g_free(c.x), g_free(c.w), g_free(c.b), g_free(c.out), g_free(c.R), g_free(c.mean), g_free(c.rstd);
  g_free(rstd0), g_free(mean0);
}

static void test_layernorm(void) {
  for (int bias = 0; bias < 2; bias++)
    for (int fr = 0; fr < 2; fr++) run_norm(FALSE, bias, fr);
}
static void test_rmsnorm(void) {
  run_norm(TRUE, FALSE, FALSE);
  run_norm(TRUE, FALSE, TRUE);
}

/* ---- linear ---- */

typedef struct {
  int N, in, out;
  float *x, *W, *b, *y, *R;
} LinCtx;
static double lin_loss(void *p) {
  LinCtx *c = p;
  O->linear_fwd(c->y, c->x, c->W, c->b, c->N, c->in, c->out);
  return dotd(c->y, c->R, (size_t)c->N * c->out);
}

static void test_linear(void) {
  enum { N = 6, IN = 7, OUT = 5 };
  for (int bias = 0; bias < 2; bias++) {
    LinCtx c = {N, IN, OUT, randn(N * IN, 1.f), randn(OUT * IN, 1.f), bias ? randn(OUT, 1.f) : NULL,
                randn(N * OUT, 1.f) /* junk: forward must overwrite */, randn(N * OUT, 1.f)};
    lin_loss(&c);
    for (int n = 0; n < N; n++)
      for (int o = 0; o < OUT; o++) {
        double s = bias ? c.b[o] : 0;
        for (int i = 0; i < IN; i++) s += (double)c.x[n * IN + i] * c.W[o * IN + i];
        g_assert_cmpfloat_with_epsilon(c.y[n * OUT + o], s, 1e-4);
      }
    Grad dx = grad_new(N * IN), dW = grad_new(OUT * IN), db = grad_new(OUT);
    O->linear_bwd(dx.g, dW.g, bias ? db.g : NULL, c.R, c.x, c.W, N, IN, OUT);
    check_grad("linear dx", c.x, N * IN, grad_delta(&dx), lin_loss, &c, TRUE);
    check_grad("linear dW", c.W, OUT * IN, grad_delta(&dW), lin_loss, &c, TRUE);
    if (bias) check_grad("linear db", c.b, OUT, grad_delta(&db), lin_loss, &c, TRUE);
    /* NULL gradients are skipped; the others come out the same */
    Grad dx2 = grad_new(N * IN);
    O->linear_bwd(dx2.g, NULL, NULL, c.R, c.x, c.W, N, IN, OUT);
    assert_close("linear dx alone", grad_delta(&dx2), dx.g, N * IN, 1e-5, 1e-5);
    grad_free(&dx), grad_free(&dW), grad_free(&db), grad_free(&dx2);
    g_free(c.x), g_free(c.W), g_free(c.b), g_free(c.y), g_free(c.R);
  }
}

/* ---- attention ---- */

typedef struct {
  int B, T, past, Tcap, Hq, Hkv, hd;
  const int *lens;
  float *q, *k, *v, *pattern, *z, *Rz, *Rp;
} AttnCtx;

static size_t aq(const AttnCtx *c) { return (size_t)c->B * c->T * c->Hq * c->hd; }
static size_t akv(const AttnCtx *c) { return (size_t)c->B * c->Tcap * c->Hkv * c->hd; }
static size_t ap(const AttnCtx *c) { return (size_t)c->B * c->Hq * c->T * (c->past + c->T); }

static double attn_loss(void *p) {
  AttnCtx *c = p;
  O->attn_pattern_fwd(c->pattern, c->q, c->k, c->B, c->T, c->past, c->Tcap, c->Hq, c->Hkv, c->hd,
                      c->lens);
  O->attn_mix_fwd(c->z, c->pattern, c->v, c->B, c->T, c->past, c->Tcap, c->Hq, c->Hkv, c->hd);
  /* Both the pattern and z enter the loss, so dpattern gets an outside contribution too. */
  return dotd(c->z, c->Rz, aq(c)) + dotd(c->pattern, c->Rp, ap(c));
}

static AttnCtx attn_new(int B, int T, int past, int Tcap, int Hq, int Hkv, int hd, const int *lens) {
  AttnCtx c = {B, T, past, Tcap, Hq, Hkv, hd, lens};
  c.q = randn(aq(&c), 1.f), c.k = randn(akv(&c), 1.f), c.v = randn(akv(&c), 1.f);
  c.pattern = randn(ap(&c), 1.f), c.z = randn(aq(&c), 1.f);
  c.Rz = randn(aq(&c), 1.f), c.Rp = randn(ap(&c), 1.f);
  return c;
}
static void attn_free(AttnCtx *c) {
  g_free(c->q), g_free(c->k), g_free(c->v), g_free(c->pattern), g_free(c->z), g_free(c->Rz),
      g_free(c->Rp);
}

/* Pattern properties: causal, padded rows zero, other rows sum to 1. */
static void check_pattern(const AttnCtx *c) {
  int Tk = c->past + c->T;
  for (int b = 0; b < c->B; b++)
    for (int h = 0; h < c->Hq; h++)
      for (int t = 0; t < c->T; t++) {
        const float *p = c->pattern + (((size_t)b * c->Hq + h) * c->T + t) * Tk;
        int qpos = c->past + t, len = c->lens ? c->lens[b] : Tk;
        double s = 0;
        for (int j = 0; j < Tk; j++) {
          if (j > qpos || j >= len || qpos >= len) g_assert_cmpfloat(p[j], ==, 0.f);
          else g_assert_cmpfloat(p[j], >, 0.f);
          s += p[j];
        }
        g_assert_cmpfloat_with_epsilon(s, qpos < len ? 1.0 : 0.0, 1e-5);
      }
}

/* Reference attention in double for one configuration. */
static void check_attn_naive(const AttnCtx *c) {
  int Tk = c->past + c->T, group = c->Hq / c->Hkv;
  size_t qs = (size_t)c->Hq * c->hd, ks = (size_t)c->Hkv * c->hd;
  double *sc = g_new(double, Tk);
  for (int b = 0; b < c->B; b++)
    for (int h = 0; h < c->Hq; h++)
      for (int t = 0; t < c->T; t++) {
        int qpos = c->past + t, len = c->lens ? c->lens[b] : Tk;
        int kh = h / group;
        const float *qr = c->q + ((size_t)b * c->T + t) * qs + (size_t)h * c->hd;
        double m = -INFINITY, s = 0;
        for (int j = 0; j <= qpos && j < len; j++) {
          const float *kr = c->k + ((size_t)b * c->Tcap + j) * ks + (size_t)kh * c->hd;
          sc[j] = dotd(qr, kr, c->hd) / sqrt(c->hd);
          m = fmax(m, sc[j]);
        }
        for (int j = 0; j <= qpos && j < len; j++) s += exp(sc[j] - m);
        for (int d = 0; d < c->hd; d++) {
          double zz = 0;
          for (int j = 0; j <= qpos && j < len; j++)
            zz += exp(sc[j] - m) / s * c->v[((size_t)b * c->Tcap + j) * ks + (size_t)kh * c->hd + d];
          if (qpos >= len) zz = 0; /* a padded query attends nothing */
          g_assert_cmpfloat_with_epsilon(c->z[((size_t)b * c->T + t) * qs + (size_t)h * c->hd + d], zz, 1e-5);
        }
      }
  g_free(sc);
}

static void run_attn(const char *name, int B, int T, int past, int Tcap, int Hq, int Hkv, int hd,
                     const int *lens) {
  AttnCtx c = attn_new(B, T, past, Tcap, Hq, Hkv, hd, lens);
  attn_loss(&c);
  check_pattern(&c);
  check_attn_naive(&c);
  /* Backward: dz = Rz, dpattern = Rp + (from mix). */
  float *dpat = fdup(c.Rp, ap(&c));
  Grad dq = grad_new(aq(&c)), dk = grad_new(akv(&c)), dv = grad_new(akv(&c));
  O->attn_mix_bwd(dpat, dv.g, c.Rz, c.pattern, c.v, B, T, past, Tcap, Hq, Hkv, hd);
  O->attn_pattern_bwd(dq.g, dk.g, dpat, c.pattern, c.q, c.k, B, T, past, Tcap, Hq, Hkv, hd);
  char buf[128];
  snprintf(buf, sizeof buf, "%s dq", name);
  check_grad(buf, c.q, aq(&c), grad_delta(&dq), attn_loss, &c, TRUE);
  snprintf(buf, sizeof buf, "%s dk", name);
  check_grad(buf, c.k, akv(&c), grad_delta(&dk), attn_loss, &c, TRUE);
  snprintf(buf, sizeof buf, "%s dv", name);
  check_grad(buf, c.v, akv(&c), grad_delta(&dv), attn_loss, &c, TRUE);
  /* cache rows at or after past+T are never read, so they get exactly nothing */
  size_t ks = (size_t)Hkv * hd;
  for (int b = 0; b < B; b++)
    for (int j = past + T; j < Tcap; j++)
      for (size_t d = 0; d < ks; d++) {
        g_assert_cmpfloat(dk.g[((size_t)b * Tcap + j) * ks + d], ==, 0.f);
        g_assert_cmpfloat(dv.g[((size_t)b * Tcap + j) * ks + d], ==, 0.f);
      }
  g_free(dpat);
  grad_free(&dq), grad_free(&dk), grad_free(&dv);
  attn_free(&c);
}

static void test_attn_grad(void) {
  const int lens[2] = {5, 3};
  run_attn("attn MHA", 2, 5, 0, 5, 3, 3, 4, NULL);
  run_attn("attn GQA 4/2", 2, 5, 0, 5, 4, 2, 4, NULL);
  run_attn("attn GQA padded", 2, 5, 0, 6, 4, 2, 4, lens);
  run_attn("attn GQA past=2 Tcap=9", 2, 4, 2, 9, 4, 2, 4, NULL);
  const int lens2[2] = {6, 4};
  run_attn("attn MQA past=2 padded", 2, 4, 2, 8, 4, 1, 4, lens2);
}

/* A KV cache run (past > 0, Tcap > past+T) equals the full run at the same positions, also with
 * padding, and NaN in cache rows that must not be read (beyond past+T, or padding keys) changes
 * nothing. */
static void test_attn_cache(void) {
  enum { B = 2, TF = 7, TCAP = 10, HQ = 4, HKV = 2, HD = 8 };
  const int lens[B] = {7, 5};
  const size_t qs = HQ * HD, ks = HKV * HD;
  AttnCtx full = attn_new(B, TF, 0, TCAP, HQ, HKV, HD, lens);
  /* poison rows no query may read */
  for (int b = 0; b < B; b++)
    for (int j = 0; j < TCAP; j++)
      if (j >= TF || j >= lens[b])
        for (size_t d = 0; d < ks; d++) {
          full.k[((size_t)b * TCAP + j) * ks + d] = NAN;
          full.v[((size_t)b * TCAP + j) * ks + d] = NAN;
        }
  attn_loss(&full);
  for (int b = 0; b < B; b++)
    for (int t = 0; t < TF; t++)
      for (size_t d = 0; d < qs; d++) {
        float zv = full.z[((size_t)b * TF + t) * qs + d];
        g_assert_true(isfinite(zv));
        if (t >= lens[b]) g_assert_cmpfloat(zv, ==, 0.f); /* padded query: zero pattern, zero z */
      }
  /* gradients stay finite even with NaN in unread rows */
  float *dpat = zeros(ap(&full)), *dq = zeros(aq(&full)), *dk = zeros(akv(&full)), *dv = zeros(akv(&full));
  O->attn_mix_bwd(dpat, dv, full.Rz, full.pattern, full.v, B, TF, 0, TCAP, HQ, HKV, HD);
  O->attn_pattern_bwd(dq, dk, dpat, full.pattern, full.q, full.k, B, TF, 0, TCAP, HQ, HKV, HD);
  for (size_t i = 0; i < aq(&full); i++) g_assert_true(isfinite(dq[i]));
  for (size_t i = 0; i < akv(&full); i++) g_assert_true(isfinite(dk[i]) && isfinite(dv[i]));
  g_free(dpat), g_free(dq), g_free(dk), g_free(dv);

  for (int past = 1; past < TF; past++)
    for (int T = 1; past + T <= TF; T++) {
      AttnCtx inc = {B, T, past, TCAP, HQ, HKV, HD, lens, .k = full.k, .v = full.v};
      inc.q = g_new(float, aq(&inc));
      inc.pattern = randn(ap(&inc), 1.f);
      inc.z = randn(aq(&inc), 1.f);
      for (int b = 0; b < B; b++)
        memcpy(inc.q + (size_t)b * T * qs, full.q + ((size_t)b * TF + past) * qs, sizeof(float) * T * qs);
      O->attn_pattern_fwd(inc.pattern, inc.q, inc.k, B, T, past, TCAP, HQ, HKV, HD, lens);
      O->attn_mix_fwd(inc.z, inc.pattern, inc.v, B, T, past, TCAP, HQ, HKV, HD);
      int Tk = past + T;
      for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
          for (int h = 0; h < HQ; h++) {
            const float *pi = inc.pattern + (((size_t)b * HQ + h) * T + t) * Tk;
            const float *pf = full.pattern + (((size_t)b * HQ + h) * TF + past + t) * TF;
            assert_close("cached pattern", pi, pf, Tk, 1e-5, 1e-7);
            for (int j = Tk; j < TF; j++) g_assert_cmpfloat(pf[j], ==, 0.f);
          }
          assert_close("cached z", inc.z + ((size_t)b * T + t) * qs,
                       full.z + ((size_t)b * TF + past + t) * qs, qs, 1e-5, 1e-6);
        }
      g_free(inc.q), g_free(inc.pattern), g_free(inc.z);
    }
  attn_free(&full);
}

/* ---- rope ---- */

typedef struct {
  int B, T, stride, H, hd, rot, past;
  float theta;
  float *x, *y, *R;
} RopeCtx;
static size_t rope_n(const RopeCtx *c) { return (size_t)c->B * c->T * c->stride; }
static double rope_loss(void *p) {
  RopeCtx *c = p;
  memcpy(c->y, c->x, sizeof(float) * rope_n(c));
  O->rope(c->y, c->B, c->T, c->stride, c->H, c->hd, c->rot, c->past, c->theta, false);
  return dotd(c->y, c->R, rope_n(c));
}

static void test_rope(void) {
  /* full and partial rotation; row stride wider than H*hd as inside a fused qkv or cache row */
  const int rots[2] = {8, 4};
  for (int ri = 0; ri < 2; ri++) {
    RopeCtx c = {2, 5, 3 * 8 + 3, 3, 8, rots[ri], 4, 10000.f};
    size_t n = rope_n(&c);
    c.x = randn(n, 1.f), c.y = zeros(n), c.R = randn(n, 1.f);
    rope_loss(&c);
    int half = c.rot / 2;
    for (int b = 0; b < c.B; b++)
      for (int t = 0; t < c.T; t++) {
        size_t row = ((size_t)b * c.T + t) * c.stride;
        for (int h = 0; h < c.H; h++)
          for (int d = 0; d < c.hd; d++) {
            size_t i = row + (size_t)h * c.hd + d;
            double want;
            if (d >= c.rot) {
              want = c.x[i]; /* beyond rot_dim: untouched */
              g_assert_cmpfloat(c.y[i], ==, c.x[i]);
              continue;
            }
            int j = d < half ? d : d - half;
            double ang = (c.past + t) * pow(c.theta, -2.0 * j / c.rot);
            double x1 = c.x[row + (size_t)h * c.hd + j], x2 = c.x[row + (size_t)h * c.hd + j + half];
            want = d < half ? x1 * cos(ang) - x2 * sin(ang) : x2 * cos(ang) + x1 * sin(ang);
            g_assert_cmpfloat_with_epsilon(c.y[i], want, 2e-5);
          }
        for (int d = c.H * c.hd; d < c.stride; d++) g_assert_cmpfloat(c.y[row + d], ==, c.x[row + d]);
      }
    /* inverse undoes forward */
    float *back = fdup(c.y, n);
    O->rope(back, c.B, c.T, c.stride, c.H, c.hd, c.rot, c.past, c.theta, true);
    assert_close("rope inverse", back, c.x, n, 1e-5, 1e-6);
    /* gradient: backward is the inverse rotation of dy */
    float *g = fdup(c.R, n);
    O->rope(g, c.B, c.T, c.stride, c.H, c.hd, c.rot, c.past, c.theta, true);
    check_grad(ri ? "rope partial dx" : "rope dx", c.x, n, g, rope_loss, &c, TRUE);
    g_free(back), g_free(g), g_free(c.x), g_free(c.y), g_free(c.R);
  }
  /* position 0 is the identity; Hugging Face's float inv_freq at a large position */
  float x[4] = {1, 2, 3, 4}, y[4];
  memcpy(y, x, sizeof x);
  O->rope(y, 1, 1, 4, 1, 4, 4, 0, 10000.f, false);
  g_assert_cmpmem(x, sizeof x, y, sizeof y);
  memcpy(y, x, sizeof x);
  O->rope(y, 1, 1, 4, 1, 4, 4, 1000, 500000.f, false);
  float inv1 = 1.0f / powf(500000.f, 2.f / 4.f);
  float a0 = 1000.f, a1 = 1000.f * inv1;
  g_assert_cmpfloat_with_epsilon(y[0], 1 * cosf(a0) - 3 * sinf(a0), 1e-5);
  g_assert_cmpfloat_with_epsilon(y[1], 2 * cosf(a1) - 4 * sinf(a1), 1e-5);
}

/* ---- activations ---- */

typedef struct {
  size_t n;
  int kind; /* 0 gelu tanh, 1 gelu erf, 2 swiglu */
  float *x, *up, *y, *R;
  const float *frozen; /* the linearised forms: the held multiplier (gelu(x0)/x0 or silu(gate0)) */
} ActCtx;
static double act_loss(void *p) {
  ActCtx *c = p;
  if (c->frozen) {
    for (size_t i = 0; i < c->n; i++) c->y[i] = (c->kind == 2 ? c->up[i] : c->x[i]) * c->frozen[i];
    return dotd(c->y, c->R, c->n);
  }
  if (c->kind == 2)
    O->swiglu_fwd(c->y, c->x, c->up, c->n);
  else
    O->gelu_fwd(c->y, c->x, c->n, c->kind == 0);
  return dotd(c->y, c->R, c->n);
}

static void test_activations(void) {
  enum { N = 64 };
  for (int kind = 0; kind < 3; kind++) {
    ActCtx c = {N, kind, randn(N, 3.f), randn(N, 1.f), zeros(N), randn(N, 1.f)};
    act_loss(&c);
    for (int i = 0; i < N; i++) {
      double x = c.x[i], want;
      if (kind == 0) want = 0.5 * x * (1 + tanh(sqrt(2 / G_PI) * (x + 0.044715 * x * x * x)));
      else if (kind == 1) want = 0.5 * x * (1 + erf(x / sqrt(2.0)));
      else want = x / (1 + exp(-x)) * c.up[i];
      g_assert_cmpfloat_with_epsilon(c.y[i], want, 1e-5 * (1 + fabs(want)));
    }
    Grad dx = grad_new(N), dup_g = grad_new(N);
    if (kind == 2) {
      O->swiglu_bwd(dx.g, dup_g.g, c.R, c.x, c.up, N, false);
      check_grad("swiglu dgate", c.x, N, grad_delta(&dx), act_loss, &c, TRUE);
      check_grad("swiglu dup", c.up, N, grad_delta(&dup_g), act_loss, &c, TRUE);
    } else {
      O->gelu_bwd(dx.g, c.R, c.x, N, kind == 0, false);
      check_grad(kind == 0 ? "gelu tanh dx" : "gelu erf dx", c.x, N, grad_delta(&dx), act_loss, &c, TRUE);
    }
    grad_free(&dx), grad_free(&dup_g);
    /* Frozen (linearised) nonlinearity: the gradient of the function with the multiplier held at
     * its value on x0. */
    float *mult = zeros(N);
    for (int i = 0; i < N; i++) {
      double x = c.x[i];
      mult[i] = (float)(kind == 2   ? x / (1 + exp(-x))
                        : kind == 0 ? 0.5 * (1 + tanh(sqrt(2 / G_PI) * (x + 0.044715 * x * x * x)))
                                    : 0.5 * (1 + erf(x / sqrt(2.0))));
    }
    c.frozen = mult;
    dx = grad_new(N), dup_g = grad_new(N);
    if (kind == 2) {
      O->swiglu_bwd(dx.g, dup_g.g, c.R, c.x, c.up, N, true);
      check_grad("swiglu frozen dgate", c.x, N, grad_delta(&dx), act_loss, &c, FALSE);
      check_grad("swiglu frozen dup", c.up, N, grad_delta(&dup_g), act_loss, &c, TRUE);
    } else {
      O->gelu_bwd(dx.g, c.R, c.x, N, kind == 0, true);
      check_grad(kind == 0 ? "gelu tanh frozen dx" : "gelu erf frozen dx", c.x, N, grad_delta(&dx), act_loss, &c, TRUE);
    }
    c.frozen = NULL;
    g_free(mult);
    grad_free(&dx), grad_free(&dup_g);
    g_free(c.x), g_free(c.up), g_free(c.y), g_free(c.R);
  }
  /* the two GELU forms differ, by a little */
  float x = 1.5f, a, b;
  O->gelu_fwd(&a, &x, 1, true);
  O->gelu_fwd(&b, &x, 1, false);
  g_assert_cmpfloat(fabsf(a - b), >, 1e-5f);
  g_assert_cmpfloat(fabsf(a - b), <, 1e-2f);
}

/* ---- pieces of per-head linears and residual sums ---- */

typedef struct {
  int N, H, C;
  float *x, *b, *y, *R;
  int which; /* 0 bias, 1 heads_spread, 2 heads_sum */
} PieceCtx;
static double piece_loss(void *p) {
  PieceCtx *c = p;
  size_t n = (size_t)c->N * c->C, nh = n * c->H;
  if (c->which == 0) {
    memcpy(c->y, c->x, n * sizeof(float));
    O->bias_fwd(c->y, c->b, c->N, c->C);
    return dotd(c->y, c->R, n);
  }
  if (c->which == 1) {
    O->heads_spread(c->y, c->x, c->N, c->H, c->C);
    return dotd(c->y, c->R, nh);
  }
  memset(c->y, 0, n * sizeof(float));
  O->heads_sum(c->y, c->x, c->N, c->H, c->C);
  return dotd(c->y, c->R, n);
}

static void test_pieces(void) {
  enum { N = 5, H = 3, C = 7 };
  size_t n = (size_t)N * C, nh = n * H;
  PieceCtx c = {N, H, C, randn(nh, 1.f), randn(C, 1.f), zeros(nh), randn(nh, 1.f), 0};
  /* bias: dy flows to db as the column sums */
  Grad db = grad_new(C);
  piece_loss(&c);
  O->bias_bwd(db.g, c.R, N, C);
  check_grad("bias db", c.b, C, grad_delta(&db), piece_loss, &c, TRUE);
  grad_free(&db);
  /* heads_spread's backward is heads_sum (accumulating), and heads_sum's is heads_spread */
  c.which = 1;
  piece_loss(&c);
  Grad dx = grad_new(n);
  O->heads_sum(dx.g, c.R, N, H, C);
  check_grad("heads_spread dx", c.x, n, grad_delta(&dx), piece_loss, &c, TRUE);
  grad_free(&dx);
  c.which = 2;
  piece_loss(&c);
  float *spread = zeros(nh);
  O->heads_spread(spread, c.R, N, H, C);
  check_grad("heads_sum dx", c.x, nh, spread, piece_loss, &c, TRUE);
  /* add: y = a + b, also in place */
  float *a = randn(n, 1.f), *bb = randn(n, 1.f), *y = zeros(n);
  O->add(y, a, bb, n);
  for (size_t i = 0; i < n; i++) g_assert_cmpfloat(y[i], ==, a[i] + bb[i]);
  O->add(a, a, bb, n);
  assert_close("add in place", a, y, n, 0, 0);
  g_free(a), g_free(bb), g_free(y), g_free(spread);
  g_free(c.x), g_free(c.b), g_free(c.y), g_free(c.R);
}

/* ---- losses ---- */

typedef struct {
  int N, V;
  gboolean kl;
  const int32_t *targets;
  const uint8_t *mask;
  float *logits, *ref, *losses, *s;
} LossCtx;
static double loss_loss(void *p) {
  LossCtx *c = p;
  if (c->kl)
    O->kl_fwd(c->losses, c->logits, c->ref, c->mask, c->N, c->V);
  else
    O->xent_fwd(c->losses, c->logits, c->targets, c->N, c->V);
  return dotd(c->losses, c->s, c->N);
}

static double lse_d(const float *l, int V) {
  double m = -INFINITY, s = 0;
  for (int i = 0; i < V; i++) m = fmax(m, l[i]);
  for (int i = 0; i < V; i++) s += exp(l[i] - m);
  return m + log(s);
}

static void test_xent(void) {
  enum { N = 6, V = 11 };
  const int32_t targets[N] = {3, -1, 0, 10, 7, -1};
  LossCtx c = {N, V, FALSE, targets, NULL, randn(N * V, 2.f), NULL, zeros(N), randn(N, 1.f)};
  for (int i = 0; i < V; i++) c.logits[4 * V + i] += 1000.f; /* stable for huge logits */
  loss_loss(&c);
  for (int n = 0; n < N; n++) {
    if (targets[n] < 0) {
      g_assert_cmpfloat(c.losses[n], ==, 0.f);
      continue;
    }
    double want = lse_d(c.logits + n * V, V) - c.logits[n * V + targets[n]];
    g_assert_true(isfinite(c.losses[n]));
    g_assert_cmpfloat_with_epsilon(c.losses[n], want, 1e-4 * (1 + want));
  }
  Grad d = grad_new(N * V);
  O->xent_bwd(d.g, NULL, c.logits, targets, c.s, N, V);
  grad_delta(&d);
  /* ignored rows: no gradient at all; other rows: softmax - onehot sums to zero */
  for (int n = 0; n < N; n++) {
    double s = 0;
    for (int i = 0; i < V; i++) {
      if (targets[n] < 0) g_assert_cmpfloat(d.g[n * V + i], ==, 0.f);
      s += d.g[n * V + i];
    }
    g_assert_cmpfloat_with_epsilon(s, 0.0, 1e-5);
  }
  /* FD away from the +1000 row (float spacing there is 6e-5, too coarse for h = 1e-2 checks) */
  check_grad("xent dlogits", c.logits, 4 * V, d.g, loss_loss, &c, TRUE);
  /* scale NULL means 1; the losses from the same pass are the forward's */
  Grad d1 = grad_new(N * V);
  float *fused = zeros(N);
  loss_loss(&c);
  O->xent_bwd(d1.g, fused, c.logits, targets, NULL, N, V);
  grad_delta(&d1);
  assert_close("xent losses from the backward pass", fused, c.losses, N, 0, 0);
  g_free(fused);
  for (int i = 0; i < V; i++) g_assert_cmpfloat_with_epsilon(d1.g[i] * c.s[0], d.g[i], 1e-5);
  grad_free(&d), grad_free(&d1);
  g_free(c.logits), g_free(c.losses), g_free(c.s);
}

static void test_kl(void) {
  enum { N = 5, V = 9 };
  const uint8_t mask[N] = {1, 0, 1, 1, 1};
  LossCtx c = {N, V, TRUE, NULL, mask, randn(N * V, 2.f), randn(N * V, 2.f), zeros(N), randn(N, 1.f)};
  /* ref as log-probabilities; row 3 has a zero-probability token (-inf) */
  for (int n = 0; n < N; n++) {
    double l = lse_d(c.ref + n * V, V);
    for (int i = 0; i < V; i++) c.ref[n * V + i] -= (float)l;
  }
  {
    float *r = c.ref + 3 * V;
    r[2] = -INFINITY;
    double l = lse_d(r, V);
    for (int i = 0; i < V; i++) r[i] -= (float)l;
  }
  loss_loss(&c);
  for (int n = 0; n < N; n++) {
    if (!mask[n]) {
      g_assert_cmpfloat(c.losses[n], ==, 0.f);
      continue;
    }
    double lse = lse_d(c.logits + n * V, V), want = 0;
    for (int i = 0; i < V; i++) {
      double p = exp(c.ref[n * V + i]);
      if (p > 0) want += p * (c.ref[n * V + i] - (c.logits[n * V + i] - lse));
    }
    g_assert_true(isfinite(c.losses[n]));
    g_assert_cmpfloat(c.losses[n], >=, -1e-6);
    g_assert_cmpfloat_with_epsilon(c.losses[n], want, 1e-4 * (1 + want));
  }
  /* KL of a distribution with itself is 0 */
  float self;
  O->kl_fwd(&self, c.ref, c.ref, NULL, 1, V);
  g_assert_cmpfloat_with_epsilon(self, 0.f, 1e-6);
  /* the masked row's loss does not depend on its logits: give it scale 0 in backward */
  c.s[1] = 0.f;
  Grad d = grad_new(N * V);
  O->kl_bwd(d.g, c.logits, c.ref, c.s, N, V);
  check_grad("kl dlogits", c.logits, N * V, grad_delta(&d), loss_loss, &c, TRUE);
  grad_free(&d);
  g_free(c.logits), g_free(c.ref), g_free(c.losses), g_free(c.s);
}

/* ---- accumulation: two backward calls add twice ---- */

static void test_accumulate(void) {
  enum { N = 4, IN = 6, OUT = 3, C = 6 };
  float *x = randn(N * IN, 1.f), *W = randn(OUT * IN, 1.f), *dy = randn(N * OUT, 1.f);
  float *dx = zeros(N * IN), *dW = zeros(OUT * IN), *db = zeros(OUT);
  O->linear_bwd(dx, dW, db, dy, x, W, N, IN, OUT);
  float *dx1 = fdup(dx, N * IN), *dW1 = fdup(dW, OUT * IN), *db1 = fdup(db, OUT);
  O->linear_bwd(dx, dW, db, dy, x, W, N, IN, OUT);
  for (int i = 0; i < N * IN; i++) g_assert_cmpfloat_with_epsilon(dx[i], 2 * dx1[i], 1e-5);
  for (int i = 0; i < OUT * IN; i++) g_assert_cmpfloat_with_epsilon(dW[i], 2 * dW1[i], 1e-5);
  for (int i = 0; i < OUT; i++) g_assert_cmpfloat_with_epsilon(db[i], 2 * db1[i], 1e-5);

  /* layernorm, attention and the losses, the same way */
  float *w = randn(C, 1.f), *out = zeros(N * C), *mean = zeros(N), *rstd = zeros(N);
  O->layernorm_fwd(out, mean, rstd, x, w, NULL, N, C, 1e-5f);
  float *lx = zeros(N * C), *lw = zeros(C), *dout = randn(N * C, 1.f);
  O->layernorm_bwd(lx, lw, NULL, dout, x, w, mean, rstd, N, C, false);
  float *lx1 = fdup(lx, N * C), *lw1 = fdup(lw, C);
  O->layernorm_bwd(lx, lw, NULL, dout, x, w, mean, rstd, N, C, false);
  for (int i = 0; i < N * C; i++) g_assert_cmpfloat_with_epsilon(lx[i], 2 * lx1[i], 1e-5);
  for (int i = 0; i < C; i++) g_assert_cmpfloat_with_epsilon(lw[i], 2 * lw1[i], 1e-5);

  AttnCtx a = attn_new(1, 3, 0, 3, 2, 1, 4, NULL);
  attn_loss(&a);
  float *dq = zeros(aq(&a)), *dk = zeros(akv(&a));
  O->attn_pattern_bwd(dq, dk, a.Rp, a.pattern, a.q, a.k, 1, 3, 0, 3, 2, 1, 4);
  float *dq1 = fdup(dq, aq(&a)), *dk1 = fdup(dk, akv(&a));
  O->attn_pattern_bwd(dq, dk, a.Rp, a.pattern, a.q, a.k, 1, 3, 0, 3, 2, 1, 4);
  for (size_t i = 0; i < aq(&a); i++) g_assert_cmpfloat_with_epsilon(dq[i], 2 * dq1[i], 1e-5);
  for (size_t i = 0; i < akv(&a); i++) g_assert_cmpfloat_with_epsilon(dk[i], 2 * dk1[i], 1e-5);

  g_free(x), g_free(W), g_free(dy), g_free(dx), g_free(dW), g_free(db), g_free(dx1), g_free(dW1),
      g_free(db1), g_free(w), g_free(out), g_free(mean), g_free(rstd), g_free(lx), g_free(lw),
      g_free(lx1), g_free(lw1), g_free(dout), g_free(dq), g_free(dk), g_free(dq1), g_free(dk1);
  attn_free(&a);
}

/* A larger attention and norm run through the parallel paths (above the single-thread cut-off),
 * against the same ops with one thread. */
static void test_parallel_matches_serial(void) {
  const LmwbBackend *be = lmwb_backend_cpu();
  enum { B = 2, T = 40, HQ = 8, HKV = 2, HD = 16 };
  const int lens[B] = {40, 29};
  AttnCtx c[2];
  float *dq[2], *dk[2], *dv[2];
  for (int run = 0; run < 2; run++) {
    rng_state = 12345;
    be->set_threads(run == 0 ? 1 : 2);
    c[run] = attn_new(B, T, 0, T, HQ, HKV, HD, lens);
    attn_loss(&c[run]);
    float *dpat = fdup(c[run].Rp, ap(&c[run]));
    dq[run] = zeros(aq(&c[run])), dk[run] = zeros(akv(&c[run])), dv[run] = zeros(akv(&c[run]));
    O->attn_mix_bwd(dpat, dv[run], c[run].Rz, c[run].pattern, c[run].v, B, T, 0, T, HQ, HKV, HD);
    O->attn_pattern_bwd(dq[run], dk[run], dpat, c[run].pattern, c[run].q, c[run].k, B, T, 0, T, HQ, HKV, HD);
    g_free(dpat);
  }
  be->set_threads(2);
  assert_close("parallel z", c[1].z, c[0].z, aq(&c[0]), 1e-5, 1e-6);
  assert_close("parallel dq", dq[1], dq[0], aq(&c[0]), 1e-4, 1e-5);
  assert_close("parallel dk", dk[1], dk[0], akv(&c[0]), 1e-4, 1e-5);
  assert_close("parallel dv", dv[1], dv[0], akv(&c[0]), 1e-4, 1e-5);
  for (int run = 0; run < 2; run++) {
    g_free(dq[run]), g_free(dk[run]), g_free(dv[run]);
    attn_free(&c[run]);
  }
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  O = lmwb_backend_cpu()->ops;
  g_test_add_func("/ops/backend", test_backend);
  g_test_add_func("/ops/embed", test_embed);
  g_test_add_func("/ops/layernorm", test_layernorm);
  g_test_add_func("/ops/rmsnorm", test_rmsnorm);
  g_test_add_func("/ops/linear", test_linear);
  g_test_add_func("/ops/attention/grad", test_attn_grad);
  g_test_add_func("/ops/attention/cache", test_attn_cache);
  g_test_add_func("/ops/attention/parallel", test_parallel_matches_serial);
  g_test_add_func("/ops/rope", test_rope);
  g_test_add_func("/ops/activations", test_activations);
  g_test_add_func("/ops/pieces", test_pieces);
  g_test_add_func("/ops/xent", test_xent);
  g_test_add_func("/ops/kl", test_kl);
  g_test_add_func("/ops/accumulate", test_accumulate);
  return g_test_run();
}
