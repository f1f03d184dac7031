/* Loss terms of a backward: their values and dL/dlogits, summed with their weights (runner.h). */
#include "app/engine/runner_internal.h"
#include "app/core/errors.h"
#include <math.h>
#include <string.h>

static double term_weight(const LmwbLoss *t) { return t->weight == 0 ? 1.0 : t->weight; }

/* Input errors before anything is computed. */
static gboolean check_term(const LmwbRunner *r, const LmwbLoss *t, int i, GError **error) {
  int V = r->c->vocab_size;
  if (!isfinite(t->weight)) {
    lmwb_input_error(error, "loss term %d: the weight is not finite", i);
    return FALSE;
  }
  switch (t->kind) {
    case LMWB_LOSS_NEXT_TOKEN:
      if (t->targets)
        for (int k = 0; k < r->B * r->T; k++)
          if (t->targets[k] >= V) {
            lmwb_input_error(error, "loss term %d: target id %d is out of range", i, t->targets[k]);
            return FALSE;
          }
      return TRUE;
    case LMWB_LOSS_KL:
      if (!t->ref_logprobs) {
        lmwb_input_error(error, "loss term %d: KL needs reference log-probabilities", i);
        return FALSE;
      }
      break;
    case LMWB_LOSS_LOGIT_DIFF:
      if (!t->positions || !t->tok_a || !t->tok_b) {
        lmwb_input_error(error, "loss term %d: a logit difference needs positions and two tokens per sequence", i);
        return FALSE;
      }
      for (int b = 0; b < r->B; b++)
        if (t->tok_a[b] < 0 || t->tok_a[b] >= V || t->tok_b[b] < 0 || t->tok_b[b] >= V) {
          lmwb_input_error(error, "loss term %d: tokens %d/%d of sequence %d are out of range", i, t->tok_a[b],
                           t->tok_b[b], b);
          return FALSE;
        }
      break;
    case LMWB_LOSS_DLOGITS:
      if (!t->dlogits) {
        lmwb_input_error(error, "loss term %d: no dlogits given", i);
        return FALSE;
      }
      return TRUE;
    default:
      lmwb_input_error(error, "loss term %d: unknown kind %d", i, (int)t->kind);
      return FALSE;
  }
  if (t->positions)
    for (int b = 0; b < r->B; b++) {
      int len = r->lens ? r->lens[b] : r->T;
      if (t->positions[b] < 0 || t->positions[b] >= len) {
        lmwb_input_error(error, "loss term %d: position %d of sequence %d is not in 0..%d", i, t->positions[b], b, len - 1);
        return FALSE;
      }
    }
  return TRUE;
}

/* Host data for an op: the caller's memory on a host-visible backend, else a device copy in buf
 * (which holds at least `bytes`). */
static const void *on_device(LmwbRunner *r, Buf *buf, const void *host, size_t bytes) {
  if (r->be->host_visible) return host;
  r->be->to_device(buf->p, host, bytes);
  return buf->p;
}

static gboolean next_token(LmwbRunner *r, const LmwbLoss *t, double w, double *value, GError **error) {
  size_t N = (size_t)r->B * r->T;
  int V = r->c->vocab_size;
  g_autofree int32_t *tg = rn_make_targets(r, t->targets);
  size_t cnt = 0;
  for (size_t i = 0; i < N; i++) cnt += tg[i] >= 0;
  if (cnt == 0) {
    lmwb_input_error(error, "no next-token predictions to score (sequences need at least 2 tokens)");
    return FALSE;
  }
  g_autofree float *scale = g_new(float, N), *losses = g_new(float, N);
  for (size_t i = 0; i < N; i++) scale[i] = (float)(w / (double)cnt);
  r->be->to_device(r->loss_targets.p, tg, N * sizeof(int32_t));
  const int32_t *tgd = (const int32_t *)r->loss_targets.p;
  /* the gradient and the losses in one pass over the logits */
  r->o->xent_bwd(r->dlogits.p, r->loss_rows.p, r->logits.p, tgd, on_device(r, &r->loss_scale, scale, N * sizeof(float)), (int)N, V);
  r->be->to_host(losses, r->loss_rows.p, N * sizeof(float));
  double sum = 0;
  for (size_t i = 0; i < N; i++)
    if (tg[i] >= 0) sum += losses[i];
  *value = sum / (double)cnt;
  return TRUE;
}

/* KL(P_ref || P_model) over every valid row, or one row per sequence at positions[b]. */
static gboolean kl(LmwbRunner *r, const LmwbLoss *t, double w, double *value) {
  int B = r->B, T = r->T, V = r->c->vocab_size;
  size_t N = (size_t)B * T;
  if (!t->positions) {
    g_autofree uint8_t *mask = g_new0(uint8_t, N);
    g_autofree float *scale = g_new0(float, N), *losses = g_new0(float, N);
    size_t cnt = 0;
    for (int b = 0; b < B; b++)
      for (int k = 0; k < (r->lens ? r->lens[b] : T); k++, cnt++) mask[(size_t)b * T + k] = 1;
    for (size_t i = 0; i < N; i++) scale[i] = mask[i] ? (float)(w / (double)cnt) : 0.f;
    const float *ref = on_device(r, &r->loss_ref, t->ref_logprobs, N * V * sizeof(float));
    const uint8_t *maskd = on_device(r, &r->loss_targets, mask, N);
    r->o->kl_fwd(r->loss_rows.p, r->logits.p, ref, maskd, (int)N, V);
    r->be->to_host(losses, r->loss_rows.p, N * sizeof(float));
    double sum = 0;
    for (size_t i = 0; i < N; i++)
      if (mask[i]) sum += losses[i];
    *value = sum / (double)cnt;
    r->o->kl_bwd(r->dlogits.p, r->logits.p, ref, on_device(r, &r->loss_scale, scale, N * sizeof(float)), (int)N, V);
    return TRUE;
  }
  /* One row per sequence: gather the rows, take the KL there, scatter the gradient back. */
  float *rows = r->loss_dl.p, *drows = rows + (size_t)B * V;
  for (int b = 0; b < B; b++)
    rn_copy(r, rows + (size_t)b * V, r->logits.p + ((size_t)b * T + t->positions[b]) * V, V);
  g_autofree float *scale = g_new(float, B), *losses = g_new(float, B);
  for (int b = 0; b < B; b++) scale[b] = (float)(w / B);
  const float *ref = on_device(r, &r->loss_ref, t->ref_logprobs, (size_t)B * V * sizeof(float));
  r->o->kl_fwd(r->loss_rows.p, rows, ref, NULL, B, V);
  r->be->to_host(losses, r->loss_rows.p, (size_t)B * sizeof(float));
  double sum = 0;
  for (int b = 0; b < B; b++) sum += losses[b];
  *value = sum / B;
  r->be->zero(drows, (size_t)B * V * sizeof(float));
  r->o->kl_bwd(drows, rows, ref, on_device(r, &r->loss_scale, scale, (size_t)B * sizeof(float)), B, V);
  for (int b = 0; b < B; b++) {
    float *dst = r->dlogits.p + ((size_t)b * T + t->positions[b]) * V;
    r->o->add(dst, dst, drows + (size_t)b * V, V);
  }
  return TRUE;
}

static void logit_diff(LmwbRunner *r, const LmwbLoss *t, double w, double *value) {
  int B = r->B, T = r->T, V = r->c->vocab_size;
  double sum = 0;
  for (int b = 0; b < B; b++) {
    size_t row = ((size_t)b * T + t->positions[b]) * V;
    int32_t tok[2] = {t->tok_a[b], t->tok_b[b]};
    for (int j = 0; j < 2; j++) {
      float lg, d;
      r->be->to_host(&lg, r->logits.p + row + tok[j], sizeof(float));
      sum += j ? -(double)lg : (double)lg;
      /* dL/dlogit: +w/B for the answer, -w/B for the other token (the same token: both). */
      r->be->to_host(&d, r->dlogits.p + row + tok[j], sizeof(float));
      d += (float)((j ? -w : w) / B);
      r->be->to_device(r->dlogits.p + row + tok[j], &d, sizeof(float));
    }
  }
  *value = sum / B;
}

gboolean rn_loss_backward(LmwbRunner *r, const LmwbLoss *terms, int n_terms, double *value, GError **error) {
  size_t N = (size_t)r->B * r->T, V = r->c->vocab_size;
  for (int i = 0; i < n_terms; i++)
    if (!check_term(r, &terms[i], i, error)) return FALSE;
  gboolean ok = rn_ensure(r, &r->loss_targets, N) && rn_ensure(r, &r->loss_scale, N) && rn_ensure(r, &r->loss_rows, N);
  for (int i = 0; ok && i < n_terms; i++) {
    if (terms[i].kind == LMWB_LOSS_KL) ok = rn_ensure(r, &r->loss_ref, terms[i].positions ? r->B * V : N * V);
    if (terms[i].kind == LMWB_LOSS_KL && terms[i].positions) ok = ok && rn_ensure(r, &r->loss_dl, 2 * r->B * V);
    if (terms[i].kind == LMWB_LOSS_DLOGITS) ok = ok && rn_ensure(r, &r->loss_ref, N * V);
  }
  if (!ok) {
    lmwb_input_error(error, "out of %s memory for the loss", r->be->name);
    return FALSE;
  }
  rn_zero(r, &r->dlogits, N * V);
  double total = 0;
  for (int i = 0; i < n_terms; i++) {
    const LmwbLoss *t = &terms[i];
    double w = term_weight(t), v = 0;
    switch (t->kind) {
      case LMWB_LOSS_NEXT_TOKEN:
        if (!next_token(r, t, w, &v, error)) return FALSE;
        break;
      case LMWB_LOSS_KL: kl(r, t, w, &v); break;
      case LMWB_LOSS_LOGIT_DIFF: logit_diff(r, t, w, &v); break;
      case LMWB_LOSS_DLOGITS: {
        /* The caller's dL/dlogits, times the weight (scaled on the host when not 1). */
        g_autofree float *scaled = w != 1.0 ? g_new(float, N * V) : NULL;
        if (scaled)
          for (size_t k = 0; k < N * V; k++) scaled[k] = (float)(w * t->dlogits[k]);
        const float *src = on_device(r, &r->loss_ref, scaled ? scaled : t->dlogits, N * V * sizeof(float));
        r->o->add(r->dlogits.p, r->dlogits.p, src, N * V);
        v = NAN;
        break;
      }
    }
    total += w * v;
  }
  *value = total;
  return TRUE;
}
