/* The checked backend: the CPU ops on "device" memory that host code cannot touch. Its buffers
 * live in one arena of address space that is mapped PROT_NONE except while one of the table's own
 * functions runs, so host code that reads or writes device memory directly (a memcpy, a loop, a
 * hook given a device pointer) faults at once; and every pointer the table's functions receive is
 * checked to lie in the arena (or, for host sides of copies, outside it), so a host pointer handed
 * to an op aborts with the op's name. Running the parity and runner tests with LMWB_BACKEND=checked
 * finds the host/device mix-ups a GPU would, without a GPU. Calls are serialised by one lock (the
 * arena is open for one call at a time), so several threads can share it, slowly. */
#include "app/engine/backend.h"
#include "app/engine/ops_cpu.h"

#include <glib.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Address space reserved (not memory: nothing is committed until written). */
#define ARENA_BYTES ((size_t)64 << 30)

static struct {
  GRecMutex lock;
  uint8_t *base;
  size_t used; /* bump pointer; freed blocks are returned to the system, never reused */
  int open;    /* nesting depth of table calls that opened the arena */
} A;

static gboolean arena_init(void) {
  if (A.base) return TRUE;
  void *p = mmap(NULL, ARENA_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return FALSE;
  A.base = p;
  return TRUE;
}

static gboolean in_arena(const void *p) {
  return A.base && (const uint8_t *)p >= A.base && (const uint8_t *)p < A.base + A.used;
}

static void need_device(const char *fn, const char *arg, const void *p) {
  if (p && !in_arena(p)) g_error("checked backend: %s got a host pointer for %s (%p)", fn, arg, p);
}

static void need_host(const char *fn, const char *arg, const void *p) {
  if (p && in_arena(p)) g_error("checked backend: %s got a device pointer for %s (%p)", fn, arg, p);
}

static void open_arena(void) {
  g_rec_mutex_lock(&A.lock);
  if (A.open++ == 0 && A.used) mprotect(A.base, A.used, PROT_READ | PROT_WRITE);
}

static void close_arena(void) {
  if (--A.open == 0 && A.used) mprotect(A.base, A.used, PROT_NONE);
  g_rec_mutex_unlock(&A.lock);
}

/* Page-aligned blocks, each with its size in a header page, so a free returns its pages. */
static void *ck_alloc(size_t bytes) {
  g_rec_mutex_lock(&A.lock);
  void *out = NULL;
  size_t page = (size_t)sysconf(_SC_PAGESIZE), span = ((bytes + page - 1) / page + 1) * page;
  if (arena_init() && A.used + span <= ARENA_BYTES) {
    uint8_t *blk = A.base + A.used;
    A.used += span;
    mprotect(blk, span, PROT_READ | PROT_WRITE);
    *(size_t *)blk = span;
    out = blk + page;
    if (A.open == 0) mprotect(blk, span, PROT_NONE);
  }
  g_rec_mutex_unlock(&A.lock);
  return out;
}

static void ck_free(void *p) {
  if (!p) return;
  need_device("free", "p", p);
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  uint8_t *blk = (uint8_t *)p - page;
  open_arena();
  size_t span = *(size_t *)blk;
  close_arena();
  madvise(blk, span, MADV_DONTNEED);
}

static void ck_zero(void *p, size_t bytes) {
  need_device("zero", "p", p);
  open_arena();
  if (p && bytes) memset(p, 0, bytes);
  close_arena();
}

static void ck_to_device(void *dst, const void *src, size_t bytes) {
  need_device("to_device", "dst", dst);
  need_host("to_device", "src", src);
  open_arena();
  if (bytes) memcpy(dst, src, bytes);
  close_arena();
}

static void ck_to_host(void *dst, const void *src, size_t bytes) {
  need_host("to_host", "dst", dst);
  need_device("to_host", "src", src);
  open_arena();
  if (bytes) memcpy(dst, src, bytes);
  close_arena();
}

static void ck_copy(void *dst, const void *src, size_t bytes) {
  need_device("copy", "dst", dst);
  need_device("copy", "src", src);
  open_arena();
  if (bytes && dst != src) memmove(dst, src, bytes);
  close_arena();
}

static void ck_copy2d(float *dst, int ldd, const float *src, int lds, int rows, int cols) {
  need_device("copy2d", "dst", dst);
  need_device("copy2d", "src", src);
  open_arena();
  lmwb_backend_cpu()->copy2d(dst, ldd, src, lds, rows, cols);
  close_arena();
}

static void ck_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *Am, int lda, const float *Bm,
                     int ldb, float beta, float *C, int ldc) {
  need_device("sgemm", "A", Am);
  need_device("sgemm", "B", Bm);
  need_device("sgemm", "C", C);
  open_arena();
  lmwb_backend_cpu()->sgemm(ta, tb, M, N, K, alpha, Am, lda, Bm, ldb, beta, C, ldc);
  close_arena();
}

static void ck_set_threads(int n) { lmwb_backend_cpu()->set_threads(n); }

/* Every op: check its pointer arguments, open the arena, run the CPU op, close it. */
#define D(x) need_device(__func__, #x, x)
#define RUN(call) do { open_arena(); call; close_arena(); } while (0)

static void embed_fwd(float *out, const int32_t *ids, const float *table, int N, int C) {
  D(out); D(ids); D(table);
  RUN(lmwb_cpu_embed_fwd(out, ids, table, N, C));
}
static void embed_bwd(float *dtable, const float *dout, const int32_t *ids, int N, int C) {
  D(dtable); D(dout); D(ids);
  RUN(lmwb_cpu_embed_bwd(dtable, dout, ids, N, C));
}
static void layernorm_fwd(float *out, float *mean, float *rstd, const float *x, const float *w, const float *b, int N,
                          int C, float eps) {
  D(out); D(mean); D(rstd); D(x); D(w); D(b);
  RUN(lmwb_cpu_layernorm_fwd(out, mean, rstd, x, w, b, N, C, eps));
}
static void layernorm_bwd(float *dx, float *dw, float *db, const float *dout, const float *x, const float *w,
                          const float *mean, const float *rstd, int N, int C, bool fz) {
  D(dx); D(dw); D(db); D(dout); D(x); D(w); D(mean); D(rstd);
  RUN(lmwb_cpu_layernorm_bwd(dx, dw, db, dout, x, w, mean, rstd, N, C, fz));
}
static void rmsnorm_fwd(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps) {
  D(out); D(rstd); D(x); D(w);
  RUN(lmwb_cpu_rmsnorm_fwd(out, rstd, x, w, N, C, eps));
}
static void rmsnorm_bwd(float *dx, float *dw, const float *dout, const float *x, const float *w, const float *rstd,
                        int N, int C, bool fz) {
  D(dx); D(dw); D(dout); D(x); D(w); D(rstd);
  RUN(lmwb_cpu_rmsnorm_bwd(dx, dw, dout, x, w, rstd, N, C, fz));
}
static void linear_fwd(float *y, const float *x, const float *W, const float *b, int N, int in, int out) {
  D(y); D(x); D(W); D(b);
  RUN(lmwb_cpu_linear_fwd(y, x, W, b, N, in, out));
}
static void linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W, int N, int in,
                       int out) {
  D(dx); D(dW); D(db); D(dy); D(x); D(W);
  RUN(lmwb_cpu_linear_bwd(dx, dW, db, dy, x, W, N, in, out));
}
static void bias_fwd(float *y, const float *b, int N, int C) {
  D(y); D(b);
  RUN(lmwb_cpu_bias_fwd(y, b, N, C));
}
static void bias_bwd(float *db, const float *dy, int N, int C) {
  D(db); D(dy);
  RUN(lmwb_cpu_bias_bwd(db, dy, N, C));
}
static void add(float *y, const float *a, const float *b, size_t n) {
  D(y); D(a); D(b);
  RUN(lmwb_cpu_add(y, a, b, n));
}
static void heads_spread(float *y, const float *x, int N, int H, int C) {
  D(y); D(x);
  RUN(lmwb_cpu_heads_spread(y, x, N, H, C));
}
static void heads_sum(float *y, const float *x, int N, int H, int C) {
  D(y); D(x);
  RUN(lmwb_cpu_heads_sum(y, x, N, H, C));
}
static void attn_pattern_fwd(float *p, const float *q, const float *k, int B, int T, int past, int Tcap, int Hq,
                             int Hkv, int hd, const int *lens) {
  D(p); D(q); D(k); D(lens);
  RUN(lmwb_cpu_attn_pattern_fwd(p, q, k, B, T, past, Tcap, Hq, Hkv, hd, lens));
}
static void attn_mix_fwd(float *z, const float *p, const float *v, int B, int T, int past, int Tcap, int Hq, int Hkv,
                         int hd) {
  D(z); D(p); D(v);
  RUN(lmwb_cpu_attn_mix_fwd(z, p, v, B, T, past, Tcap, Hq, Hkv, hd));
}
static void attn_mix_bwd(float *dp, float *dv, const float *dz, const float *p, const float *v, int B, int T, int past,
                         int Tcap, int Hq, int Hkv, int hd) {
  D(dp); D(dv); D(dz); D(p); D(v);
  RUN(lmwb_cpu_attn_mix_bwd(dp, dv, dz, p, v, B, T, past, Tcap, Hq, Hkv, hd));
}
static void attn_pattern_bwd(float *dq, float *dk, const float *dp, const float *p, const float *q, const float *k,
                             int B, int T, int past, int Tcap, int Hq, int Hkv, int hd) {
  D(dq); D(dk); D(dp); D(p); D(q); D(k);
  RUN(lmwb_cpu_attn_pattern_bwd(dq, dk, dp, p, q, k, B, T, past, Tcap, Hq, Hkv, hd));
}
static void rope(float *x, int B, int T, int stride, int H, int hd, int rot, int past, float theta, bool inverse) {
  D(x);
  RUN(lmwb_cpu_rope(x, B, T, stride, H, hd, rot, past, theta, inverse));
}
static void gelu_fwd(float *y, const float *x, size_t n, bool t) {
  D(y); D(x);
  RUN(lmwb_cpu_gelu_fwd(y, x, n, t));
}
static void gelu_bwd(float *dx, const float *dy, const float *x, size_t n, bool t, bool fz) {
  D(dx); D(dy); D(x);
  RUN(lmwb_cpu_gelu_bwd(dx, dy, x, n, t, fz));
}
static void swiglu_fwd(float *y, const float *g, const float *u, size_t n) {
  D(y); D(g); D(u);
  RUN(lmwb_cpu_swiglu_fwd(y, g, u, n));
}
static void swiglu_bwd(float *dg, float *du, const float *dy, const float *g, const float *u, size_t n, bool fz) {
  D(dg); D(du); D(dy); D(g); D(u);
  RUN(lmwb_cpu_swiglu_bwd(dg, du, dy, g, u, n, fz));
}
static void xent_fwd(float *losses, const float *logits, const int32_t *tg, int N, int V) {
  D(losses); D(logits); D(tg);
  RUN(lmwb_cpu_xent_fwd(losses, logits, tg, N, V));
}
static void xent_bwd(float *d, float *losses, const float *logits, const int32_t *tg, const float *scale, int N, int V) {
  D(d); D(losses); D(logits); D(tg); D(scale);
  RUN(lmwb_cpu_xent_bwd(d, losses, logits, tg, scale, N, V));
}
static void kl_fwd(float *losses, const float *logits, const float *ref, const uint8_t *mask, int N, int V) {
  D(losses); D(logits); D(ref); D(mask);
  RUN(lmwb_cpu_kl_fwd(losses, logits, ref, mask, N, V));
}
static void kl_bwd(float *d, const float *logits, const float *ref, const float *scale, int N, int V) {
  D(d); D(logits); D(ref); D(scale);
  RUN(lmwb_cpu_kl_bwd(d, logits, ref, scale, N, V));
}

static const LmwbOps checked_ops = {
    .embed_fwd = embed_fwd, .embed_bwd = embed_bwd, .layernorm_fwd = layernorm_fwd, .layernorm_bwd = layernorm_bwd,
    .rmsnorm_fwd = rmsnorm_fwd, .rmsnorm_bwd = rmsnorm_bwd, .linear_fwd = linear_fwd, .linear_bwd = linear_bwd,
    .bias_fwd = bias_fwd, .bias_bwd = bias_bwd, .add = add, .heads_spread = heads_spread, .heads_sum = heads_sum,
    .attn_pattern_fwd = attn_pattern_fwd, .attn_mix_fwd = attn_mix_fwd, .attn_mix_bwd = attn_mix_bwd,
    .attn_pattern_bwd = attn_pattern_bwd, .rope = rope, .gelu_fwd = gelu_fwd, .gelu_bwd = gelu_bwd,
    .swiglu_fwd = swiglu_fwd, .swiglu_bwd = swiglu_bwd, .xent_fwd = xent_fwd, .xent_bwd = xent_bwd,
    .kl_fwd = kl_fwd, .kl_bwd = kl_bwd,
};

static const LmwbBackend checked_backend = {
    .name = "checked",
    .alloc = ck_alloc,
    .free = ck_free,
    .zero = ck_zero,
    .to_device = ck_to_device,
    .to_host = ck_to_host,
    .copy = ck_copy,
    .copy2d = ck_copy2d,
    .sgemm = ck_sgemm,
    .set_threads = ck_set_threads,
    .ops = &checked_ops,
    .host_visible = false,
};

const LmwbBackend *lmwb_backend_checked(void) { return &checked_backend; }
