/* What ROME and MEMIT share: context templates, prompts with the subject's last token located,
 * the mean key over templates, and the optimisation of the value shift δ. Contract: rome.h;
 * private interface: rome_internal.h. */
#include "app/core/errors.h"
#include "app/core/rows.h"
#include "app/engine/generate.h"
#include "app/engine/optim.h"
#include "app/formats/tokenizer.h"
#include "editors/rome_internal.h"
#include <math.h>
#include <string.h>

void lmwb_rome_options_init(LmwbRomeOptions *o) {
  *o = (LmwbRomeOptions){.keys = LMWB_ROME_KEYS_PAPER, .steps = 25, .lr = 0.5, .kl_weight = 0.0625,
                         .weight_decay = 0.5, .clamp = 4.0, .stop_loss = 0.05, .n_short = 10, .n_long = 10,
                         .lambda = 15000.0, .seed = 1};
}

gboolean lmwb_rome_keys_parse(const char *text, LmwbRomeKeys *out, GError **error) {
  if (text && !strcmp(text, "paper")) *out = LMWB_ROME_KEYS_PAPER;
  else if (text && !strcmp(text, "consistent")) *out = LMWB_ROME_KEYS_CONSISTENT;
  else {
    lmwb_input_error(error, "keys \"%s\" is not paper or consistent", text ? text : "");
    return FALSE;
  }
  return TRUE;
}

char **lmwb_edit_context_templates(LmwbModel *m, int n_short, int n_long, guint64 seed, GError **error) {
  static const char *const starts[] = {"The", "Therefore", "Because", "I", "You"};
  if (!m->tokenizer) {
    lmwb_input_error(error, "%s has no tokenizer", m->dir ? m->dir : "the model");
    return NULL;
  }
  GPtrArray *out = g_ptr_array_new();
  g_ptr_array_add(out, g_strdup("{}"));
  LmwbRunner *r = lmwb_runner_new(m);
  const int lengths[2] = {5, 10}, counts[2] = {n_short, n_long};
  gboolean ok = TRUE;
  for (int k = 0; ok && k < 2; k++)
    for (int i = 0; ok && i < counts[k]; i++) {
      const char *s = starts[i % G_N_ELEMENTS(starts)];
      size_t n = 0;
      g_autofree int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, s, strlen(s), TRUE, &n, error);
      LmwbGenerateOptions go;
      lmwb_generate_options_init(&go);
      go.max_tokens = lengths[k] - 1;
      go.temperature = 1.0f;
      go.top_k = 5;
      go.seed = seed * 1000003u + (guint64)(k * 100 + i);
      go.stop_at_eos = false;
      int n_new = 0;
      lmwb_runner_reset_cache(r);
      g_autofree int32_t *gen = ids ? lmwb_generate(r, ids, (int)n, &go, &n_new, NULL, NULL, error) : NULL;
      if (!gen) {
        ok = FALSE;
        break;
      }
      g_autofree int32_t *all = g_new(int32_t, n + (size_t)n_new);
      memcpy(all, ids, n * sizeof(int32_t));
      memcpy(all + n, gen, (size_t)n_new * sizeof(int32_t));
      g_autofree char *text = lmwb_tokenizer_decode(m->tokenizer, all, n + (size_t)n_new, TRUE, NULL);
      /* braces would read as a hole; the template continues with ". {}" as ROME's */
      for (char *c = text; c && *c; c++)
        if (*c == '{' || *c == '}') *c = ' ';
      g_ptr_array_add(out, g_strconcat(text ? text : "", ". {}", NULL));
    }
  lmwb_runner_free(r);
  g_ptr_array_add(out, NULL);
  char **t = (char **)g_ptr_array_free(out, FALSE);
  if (!ok) g_clear_pointer(&t, g_strfreev);
  return t;
}

/* ---- prompts ---------------------------------------------------------------------------------- */

int32_t *lmwb_rome_encode_subject(const LmwbModel *m, const char *text, const char *subject, size_t *n, int *lookup,
                                  GError **error) {
  const char *hole = strstr(text, "{}");
  g_autofree char *head = g_strdup_printf("%.*s%s", (int)(hole - text), text, subject);
  g_autofree char *full = g_strconcat(head, hole + 2, NULL);
  size_t nh = 0;
  g_autofree int32_t *ih = lmwb_tokenizer_encode(m->tokenizer, head, strlen(head), TRUE, &nh, error);
  int32_t *ids = ih ? lmwb_tokenizer_encode(m->tokenizer, full, strlen(full), TRUE, n, error) : NULL;
  if (!ids) return NULL;
  if (nh == 0 || nh > *n || memcmp(ih, ids, nh * sizeof(int32_t)) != 0) {
    lmwb_input_error(error, "subject \"%s\" does not end on a token boundary of \"%s\"", subject, full);
    g_free(ids);
    return NULL;
  }
  *lookup = (int)nh - 1;
  return ids;
}

void lmwb_rome_batch_free(LmwbRomeBatch *b) {
  if (!b) return;
  g_free(b->ids), g_free(b->lens), g_free(b->lookup), g_free(b->targets), g_free(b->mask);
  g_free(b);
}

/* A right-padded batch of sequences (ids[i] of n[i] tokens). */
static LmwbRomeBatch *batch_of(int32_t **ids, const size_t *n, const int *lookup, int B) {
  LmwbRomeBatch *b = g_new0(LmwbRomeBatch, 1);
  b->B = B;
  for (int i = 0; i < B; i++) b->T = MAX(b->T, (int)n[i]);
  size_t bt = (size_t)B * b->T;
  b->ids = g_new0(int32_t, bt);
  b->targets = g_new(int32_t, bt);
  b->mask = g_new0(uint8_t, bt);
  b->lens = g_new(int, B);
  b->lookup = g_new(int, B);
  for (size_t i = 0; i < bt; i++) b->targets[i] = -1;
  for (int i = 0; i < B; i++) {
    memcpy(b->ids + (size_t)i * b->T, ids[i], n[i] * sizeof(int32_t));
    b->lens[i] = (int)n[i];
    b->lookup[i] = lookup[i];
    b->mask[(size_t)i * b->T + lookup[i]] = 1;
  }
  return b;
}

LmwbRomeBatch *lmwb_rome_templated(const LmwbModel *m, const LmwbEditRequest *req, char **templates,
                                   const int32_t *suffix, size_t n_suffix, GError **error) {
  int B = (int)g_strv_length(templates);
  int32_t **ids = g_new0(int32_t *, B);
  size_t *n = g_new(size_t, B);
  int *lookup = g_new(int, B);
  LmwbRomeBatch *b = NULL;
  int i = 0;
  for (; i < B; i++) {
    const char *hole = strstr(templates[i], "{}");
    g_autofree char *text = g_strdup_printf("%.*s%s%s", (int)(hole - templates[i]), templates[i], req->prompt, hole + 2);
    int32_t *p = lmwb_rome_encode_subject(m, text, req->subject, &n[i], &lookup[i], error);
    if (!p) break;
    ids[i] = g_renew(int32_t, p, n[i] + n_suffix);
    if (n_suffix) memcpy(ids[i] + n[i], suffix, n_suffix * sizeof(int32_t));
    n[i] += n_suffix;
    if ((int64_t)n[i] > m->cfg.n_ctx) {
      lmwb_input_error(error, "the prompt \"%s\" with its target is longer than the model's context (%d)", text,
                       m->cfg.n_ctx);
      i++;
      break;
    }
  }
  if (i == B && !(error && *error)) b = batch_of(ids, n, lookup, B);
  for (int k = 0; k < B; k++) g_free(ids[k]);
  g_free(ids), g_free(n), g_free(lookup);
  return b;
}

/* ---- keys ------------------------------------------------------------------------------------- */

gboolean lmwb_rome_keys(LmwbRunner *r, const LmwbRomeBatch *b, int layer, double *mean, float *first, GError **error) {
  LmwbForwardOptions fo = {.lens = b->lens, .last_logits_only = true};
  if (!lmwb_runner_forward(r, b->ids, b->B, b->T, &fo, error)) return FALSE;
  int64_t shape[4];
  const float *k = lmwb_runner_activation(r, (LmwbSite){LMWB_SITE_MLP_POST, layer}, shape, NULL, error);
  if (!k) return FALSE;
  int F = (int)shape[2];
  memset(mean, 0, sizeof(double) * F);
  for (int i = 0; i < b->B; i++) {
    const float *row = k + ((size_t)i * b->T + b->lookup[i]) * F;
    for (int j = 0; j < F; j++) mean[j] += row[j] / (double)b->B;
    if (i == 0 && first) memcpy(first, row, sizeof(float) * F);
  }
  return TRUE;
}

/* ---- the value shift δ ------------------------------------------------------------------------ */

static double norm2(const float *x, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) s += (double)x[i] * x[i];
  return sqrt(s);
}

gboolean lmwb_rome_delta(LmwbRunner *r, const LmwbEditRequest *req, char **templates, LmwbSite site, double clamp,
                         const LmwbRomeOptions *o, float *v0, float *delta, LmwbEditInfo *info, LmwbReporter *rep,
                         GError **error) {
  LmwbModel *m = lmwb_runner_model(r);
  int d = m->cfg.d_model, V = m->cfg.vocab_size;
  size_t n_t = 0;
  g_autofree int32_t *tgt = lmwb_tokenizer_encode(m->tokenizer, req->target_new, strlen(req->target_new), FALSE, &n_t,
                                                  error);
  if (!tgt) return FALSE;
  if (n_t == 0) {
    lmwb_input_error(error, "target_new \"%s\" encodes to no tokens", req->target_new);
    return FALSE;
  }
  /* the templated prompts followed by the target but its last token, and "{subject} is a" */
  int n_tpl = (int)g_strv_length(templates);
  char **all = g_new0(char *, n_tpl + 2);
  for (int i = 0; i < n_tpl; i++) all[i] = templates[i];
  LmwbRomeBatch *rw = lmwb_rome_templated(m, req, all, tgt, n_t - 1, error);
  g_free(all);
  if (!rw) return FALSE;
  LmwbEditRequest kl_req = *req;
  kl_req.prompt = (char *)"{} is a";
  char *kl_t[2] = {(char *)"{}", NULL};
  LmwbRomeBatch *klb = lmwb_rome_templated(m, &kl_req, kl_t, NULL, 0, error);
  if (!klb) {
    lmwb_rome_batch_free(rw);
    return FALSE;
  }
  /* one batch: rewriting rows, then the KL row */
  int B = rw->B + 1, T = MAX(rw->T, klb->T);
  size_t bt = (size_t)B * T;
  g_autofree int32_t *ids = g_new0(int32_t, bt), *targets = g_new(int32_t, bt);
  g_autofree uint8_t *mask = g_new0(uint8_t, bt);
  g_autofree int *lens = g_new(int, B), *lookup = g_new(int, B);
  for (size_t i = 0; i < bt; i++) targets[i] = -1;
  for (int i = 0; i < B; i++) {
    const LmwbRomeBatch *s = i < rw->B ? rw : klb;
    int j = i < rw->B ? i : 0;
    memcpy(ids + (size_t)i * T, s->ids + (size_t)j * s->T, sizeof(int32_t) * s->lens[j]);
    lens[i] = s->lens[j];
    lookup[i] = s->lookup[j];
    mask[(size_t)i * T + lookup[i]] = 1;
    if (i < rw->B) /* the target's tokens are predicted from the prompt's last token on */
      for (size_t t = 0; t < n_t; t++) targets[(size_t)i * T + (lens[i] - (int)n_t) + t] = tgt[t];
  }
  lmwb_rome_batch_free(rw);
  lmwb_rome_batch_free(klb);
  int kl_row = (B - 1) * T + lookup[B - 1];

  memset(delta, 0, sizeof(float) * d);
  LmwbHook h = {.site = site, .op = LMWB_HOOK_ADD, .mask = mask, .values = delta, .run_B = B, .run_T = T};
  int hook = lmwb_runner_add_hook(r, &h, error);
  if (!hook) return FALSE;
  g_autofree float *dlogits = g_try_new0(float, bt * V), *q0 = g_new(float, V), *p = g_new(float, V),
                   *losses = g_new(float, bt), *grad = g_new(float, d);
  LmwbAdamW *adam = lmwb_adamw_new((size_t)d, 0.9f, 0.999f, 1e-8f, 0.0f, NULL);
  gboolean ok = dlogits != NULL;
  if (!ok) lmwb_input_error(error, "out of memory for the logits' gradient of %d prompts", B);
  double v0_norm = 1, nll = NAN;
  int step = 0;
  for (; ok; step++) {
    LmwbForwardOptions fo = {.lens = lens};
    if (!(ok = lmwb_runner_forward(r, ids, B, T, &fo, error))) break;
    int rows = 0;
    const float *logits = lmwb_runner_logits(r, &rows);
    if (step == 0) {
      int64_t shape[4];
      const float *a = lmwb_runner_activation(r, site, shape, NULL, error);
      if (!(ok = a != NULL)) break;
      memcpy(v0, a + (size_t)lookup[0] * d, sizeof(float) * d);
      v0_norm = norm2(v0, d);
      lmwb_log_softmax_row(q0, logits + (size_t)kl_row * V, V);
    }
    size_t n_valid = lmwb_runner_token_losses(r, targets, losses);
    double sum = 0;
    for (size_t i = 0; i < bt; i++)
      if (targets[i] >= 0) sum += losses[i];
    nll = n_valid ? sum / (double)n_valid : NAN;
    /* KL(P_δ ‖ P_0) of the KL row and its gradient p ⊙ (log p − q0 − KL) */
    lmwb_log_softmax_row(p, logits + (size_t)kl_row * V, V);
    double kl = 0;
    for (int v = 0; v < V; v++) kl += exp(p[v]) * (p[v] - q0[v]);
    double dn = norm2(delta, d), loss = nll + o->kl_weight * kl + o->weight_decay * dn / (v0_norm * v0_norm);
    if (step == 0 && info) info->nll_first = nll;
    if (info) info->nll_last = nll;
    lmwb_report_metric(rep, "loss", step, loss);
    if (!isfinite(loss)) {
      lmwb_input_error(error, "the value optimisation diverged (loss %g at step %d)", loss, step);
      ok = FALSE;
      break;
    }
    if (loss < o->stop_loss || step >= o->steps) break;
    float *drow = dlogits + (size_t)kl_row * V;
    for (int v = 0; v < V; v++) drow[v] = (float)(o->kl_weight * exp(p[v]) * (p[v] - q0[v] - kl));
    LmwbLoss terms[2] = {{.kind = LMWB_LOSS_NEXT_TOKEN, .targets = targets}, {.kind = LMWB_LOSS_DLOGITS, .dlogits = dlogits}};
    LmwbBackwardOptions bo = {.stop_layer = site.layer};
    double lv = 0;
    if (!(ok = lmwb_runner_backward(r, terms, 2, &bo, &lv, error))) break;
    int64_t shape[4];
    const float *g = lmwb_runner_grad(r, site, shape, NULL, error);
    if (!(ok = g != NULL)) break;
    memset(grad, 0, sizeof(float) * d);
    for (int i = 0; i < B; i++) {
      const float *row = g + ((size_t)i * T + lookup[i]) * d;
      for (int j = 0; j < d; j++) grad[j] += row[j];
    }
    if (dn > 0)
      for (int j = 0; j < d; j++) grad[j] += (float)(o->weight_decay * delta[j] / (dn * v0_norm * v0_norm));
    lmwb_adamw_step(adam, delta, grad, (float)o->lr);
    double after = norm2(delta, d), max_norm = clamp * v0_norm;
    if (after > max_norm)
      for (int j = 0; j < d; j++) delta[j] = (float)(delta[j] * max_norm / after);
    if (lmwb_reporter_cancelled(rep, error)) ok = FALSE;
  }
  lmwb_adamw_free(adam);
  lmwb_runner_remove_hook(r, hook);
  if (info) {
    info->steps += step;
    info->delta_norm = norm2(delta, d);
  }
  return ok;
}
