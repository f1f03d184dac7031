/* BPE merge table (open addressing on the (left, right) id pair) and the merge loop of HF's
 * Word::merge_all: a min-heap of candidate merges ordered by (rank, position) over a doubly linked
 * list of symbols; stale heap entries are recognised and skipped. */
#include "app/formats/tokenizer_internal.h"

#include <string.h>

static inline uint64_t pair_key(int32_t l, int32_t r) {
  return (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
}

static inline size_t hash_key(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return (size_t)k;
}

void lmwb_merge_map_init(LmwbMergeMap *m, size_t expected) {
  size_t cap = 16;
  while (cap < expected * 2 + 16) cap <<= 1;
  m->cap = cap;
  m->n = 0;
  m->keys = g_new0(uint64_t, cap);
  m->ranks = g_new(uint32_t, cap);
  m->new_ids = g_new(int32_t, cap);
}

void lmwb_merge_map_clear(LmwbMergeMap *m) {
  g_free(m->keys);
  g_free(m->ranks);
  g_free(m->new_ids);
  memset(m, 0, sizeof *m);
}

static void grow(LmwbMergeMap *m) {
  LmwbMergeMap bigger;
  lmwb_merge_map_init(&bigger, m->cap);
  for (size_t i = 0; i < m->cap; i++) {
    if (!m->keys[i]) continue;
    uint64_t k = m->keys[i] - 1;
    lmwb_merge_map_put(&bigger, (int32_t)(k >> 32), (int32_t)(uint32_t)k, m->ranks[i], m->new_ids[i]);
  }
  lmwb_merge_map_clear(m);
  *m = bigger;
}

void lmwb_merge_map_put(LmwbMergeMap *m, int32_t left, int32_t right, uint32_t rank, int32_t new_id) {
  if ((m->n + 1) * 2 > m->cap) grow(m);
  uint64_t k = pair_key(left, right);
  size_t mask = m->cap - 1, i = hash_key(k) & mask;
  while (m->keys[i] && m->keys[i] != k) i = (i + 1) & mask;
  if (!m->keys[i]) {
    m->keys[i] = k;
    m->n++;
  }
  m->ranks[i] = rank;
  m->new_ids[i] = new_id;
}

gboolean lmwb_merge_map_get(const LmwbMergeMap *m, int32_t left, int32_t right, uint32_t *rank,
                            int32_t *new_id) {
  if (m->n == 0) return FALSE;
  uint64_t k = pair_key(left, right);
  size_t mask = m->cap - 1, i = hash_key(k) & mask;
  while (m->keys[i]) {
    if (m->keys[i] == k) {
      *rank = m->ranks[i];
      *new_id = m->new_ids[i];
      return TRUE;
    }
    i = (i + 1) & mask;
  }
  return FALSE;
}

typedef struct {
  uint32_t rank;
  uint32_t pos;
  int32_t new_id;
} Cand;

static inline gboolean cand_less(const Cand *a, const Cand *b) {
  return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

typedef struct {
  Cand *v;
  size_t n, cap;
} Heap;

static void heap_push(Heap *h, Cand c) {
  if (h->n == h->cap) {
    h->cap = h->cap ? h->cap * 2 : 16;
    h->v = g_renew(Cand, h->v, h->cap);
  }
  size_t i = h->n++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!cand_less(&c, &h->v[p])) break;
    h->v[i] = h->v[p];
    i = p;
  }
  h->v[i] = c;
}

static Cand heap_pop(Heap *h) {
  Cand top = h->v[0], last = h->v[--h->n];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    const Cand *best = &last;
    if (l < h->n && cand_less(&h->v[l], best)) { m = l; best = &h->v[l]; }
    if (r < h->n && cand_less(&h->v[r], best)) { m = r; }
    if (m == i) break;
    h->v[i] = h->v[m];
    i = m;
  }
  if (h->n > 0) h->v[i] = last;
  return top;
}

size_t lmwb_bpe_merge_all(const LmwbMergeMap *m, int32_t *ids, size_t n) {
  if (n < 2 || m->n == 0) return n;
  int32_t *prev = g_new(int32_t, n), *next = g_new(int32_t, n);
  gboolean *dead = g_new0(gboolean, n);
  Heap h = {0};
  for (size_t i = 0; i < n; i++) {
    prev[i] = (int32_t)i - 1;
    next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
  }
  for (size_t i = 0; i + 1 < n; i++) {
    Cand c = {0, (uint32_t)i, 0};
    if (lmwb_merge_map_get(m, ids[i], ids[i + 1], &c.rank, &c.new_id)) heap_push(&h, c);
  }
  while (h.n > 0) {
    Cand top = heap_pop(&h);
    size_t pos = top.pos;
    if (dead[pos] || next[pos] < 0) continue;
    size_t right = (size_t)next[pos];
    uint32_t rank;
    int32_t nid;
    /* Stale entry: the pair at pos changed since it was queued. */
    if (!lmwb_merge_map_get(m, ids[pos], ids[right], &rank, &nid) || nid != top.new_id) continue;
    ids[pos] = top.new_id;
    dead[right] = TRUE;
    next[pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = (int32_t)pos;
    if (prev[pos] >= 0) {
      Cand c = {0, (uint32_t)prev[pos], 0};
      if (lmwb_merge_map_get(m, ids[prev[pos]], ids[pos], &c.rank, &c.new_id)) heap_push(&h, c);
    }
    if (next[pos] >= 0) {
      Cand c = {0, (uint32_t)pos, 0};
      if (lmwb_merge_map_get(m, ids[pos], ids[next[pos]], &c.rank, &c.new_id)) heap_push(&h, c);
    }
  }
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (!dead[i]) ids[k++] = ids[i];
  g_free(prev);
  g_free(next);
  g_free(dead);
  g_free(h.v);
  return k;
}
