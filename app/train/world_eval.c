/* World evaluation (see world_eval.h). Every task is a batch of token sequences run forward once
 * with all logits; each item reads the rows it needs. */
#include "app/train/world_eval.h"
#include "app/core/errors.h"
#include "app/core/rows.h"
#include "app/formats/json_input.h"
#include "app/engine/runner.h"
#include "app/formats/tokenizer.h"
#include <math.h>
#include <string.h>

/* Logits kept per forward: B*T*V floats; 32M floats = 128 MB bounds the batch. */
#define EVAL_LOGIT_BUDGET (32u * 1024u * 1024u)
#define EVAL_MAX_BATCH 64

typedef enum { TASK_TF, TASK_IOI, TASK_GT_DIGITS, TASK_GT_PAIRS } TaskKind;

typedef struct {
  int32_t *ids; /* prompt (+ answer or + first digit) */
  int n, n_prompt;
  int32_t a, b; /* IOI: correct and wrong first tokens; GT: s1, s2 (digits) or s (two-digit) */
  double value; /* result */
  gboolean top1_wrong; /* IOI: the top token is the wrong name's first token */
} Item;

typedef struct {
  const LmwbTokenizer *tok;
  int32_t digit[10];  /* digit tokens "0".."9" (digit mode) */
  int32_t pair[100];  /* "00".."99" (pair mode) */
  gboolean pairs;
} Ctx;

static void items_free(GArray *items) {
  for (guint i = 0; i < items->len; i++) g_free(g_array_index(items, Item, i).ids);
  g_array_free(items, TRUE);
}

/* Encodes non-empty text; an empty string is refused here (the caller names the item). */
static int32_t *encode(const LmwbTokenizer *tok, const char *text, size_t *n, GError **error) {
  *n = 0;
  if (!*text) return NULL;
  GError *local = NULL;
  int32_t *ids = lmwb_tokenizer_encode(tok, text, strlen(text), FALSE, n, &local);
  if (local) {
    g_propagate_error(error, local);
    g_free(ids);
    return NULL;
  }
  if (ids && *n == 0) {
    g_free(ids);
    ids = NULL;
  }
  return ids;
}

static gboolean encode_item(const LmwbTokenizer *tok, const char *text, int32_t **ids, size_t *n,
                            const char *origin, const char *where, guint i, const char *field,
                            GError **error) {
  *ids = encode(tok, text, n, error);
  if (*ids) return TRUE;
  if (error && !*error)
    lmwb_input_error(error, "world manifest '%s': %s[%u].%s is empty", origin, where, i, field);
  return FALSE;
}

/* Softmax probability of token `id` from a row (double accumulation). */
static int32_t argmax(const float *row, int V) {
  int32_t best = 0;
  for (int v = 1; v < V; v++)
    if (row[v] > row[best]) best = v;
  return best;
}

static void score(TaskKind kind, Item *it, const float *logits, int V, const Ctx *c, float *p) {
  if (kind == TASK_TF) {
    gboolean ok = TRUE;
    for (int k = it->n_prompt; k < it->n && ok; k++) ok = argmax(logits + (size_t)(k - 1) * V, V) == it->ids[k];
    it->value = ok;
  } else if (kind == TASK_IOI) {
    const float *row = logits + (size_t)(it->n - 1) * V;
    int32_t top = argmax(row, V);
    it->value = top == it->a && it->a != it->b;
    it->top1_wrong = top == it->b && it->a != it->b;
  } else if (kind == TASK_GT_DIGITS) {
    /* ids end with s1: row n-2 predicts Y1, row n-1 predicts Y2 given Y1 = s1. */
    lmwb_softmax_row(p, logits + (size_t)(it->n - 2) * V, V);
    double later = 0, same = p[c->digit[it->a]];
    for (int d = it->a + 1; d < 10; d++) later += p[c->digit[d]];
    lmwb_softmax_row(p, logits + (size_t)(it->n - 1) * V, V);
    double later2 = 0;
    for (int d = it->b + 1; d < 10; d++) later2 += p[c->digit[d]];
    it->value = later + same * later2;
  } else {
    lmwb_softmax_row(p, logits + (size_t)(it->n - 1) * V, V);
    double later = 0;
    for (int y = it->a + 1; y < 100; y++) later += p[c->pair[y]];
    it->value = later;
  }
}

/* Runs every item forward (batched, right-padded) and scores it. For IOI also returns the
 * logit difference sum in *ld_sum and the count of positive differences in *ld_pos. */
static gboolean run_items(LmwbModel *m, TaskKind kind, GArray *items, const Ctx *c, const char *task,
                          LmwbReporter *rep, double *ld_sum, int *ld_pos, GError **error) {
  if (items->len == 0) return TRUE;
  int V = m->cfg.vocab_size;
  int Tmax = 1;
  for (guint i = 0; i < items->len; i++) {
    Item *it = &g_array_index(items, Item, i);
    if (it->n > m->cfg.n_ctx) {
      lmwb_input_error(error, "world eval: %s item %u has %d tokens, more than the model's context of %d",
                       task, i, it->n, m->cfg.n_ctx);
      return FALSE;
    }
    for (int k = 0; k < it->n; k++)
      if (it->ids[k] < 0 || it->ids[k] >= V) {
        lmwb_input_error(error, "world eval: %s item %u: token id %d outside the model's vocabulary of %d",
                         task, i, it->ids[k], V);
        return FALSE;
      }
    Tmax = MAX(Tmax, it->n);
  }
  guint64 per = (guint64)Tmax * (guint64)V;
  int B = (int)CLAMP(EVAL_LOGIT_BUDGET / MAX(per, 1), 1, EVAL_MAX_BATCH);
  LmwbRunner *r = lmwb_runner_new(m);
  int32_t *ids = g_new0(int32_t, (size_t)B * Tmax);
  int *lens = g_new(int, B);
  float *p = g_new(float, V);
  gboolean ok = TRUE;
  for (guint start = 0; start < items->len && ok; start += (guint)B) {
    if (lmwb_reporter_cancelled(rep, error)) {
      ok = FALSE;
      break;
    }
    int nb = (int)MIN((guint)B, items->len - start);
    int T = 1;
    for (int b = 0; b < nb; b++) T = MAX(T, g_array_index(items, Item, start + b).n);
    memset(ids, 0, sizeof(int32_t) * (size_t)nb * T);
    for (int b = 0; b < nb; b++) {
      Item *it = &g_array_index(items, Item, start + b);
      memcpy(ids + (size_t)b * T, it->ids, sizeof(int32_t) * it->n);
      lens[b] = it->n;
    }
    LmwbForwardOptions fo = {.lens = lens};
    if (!lmwb_runner_forward(r, ids, nb, T, &fo, error)) {
      ok = FALSE;
      break;
    }
    int rows = 0;
    const float *logits = lmwb_runner_logits(r, &rows);
    for (int b = 0; b < nb; b++) {
      Item *it = &g_array_index(items, Item, start + b);
      const float *lg = logits + (size_t)b * T * V;
      score(kind, it, lg, V, c, p);
      if (kind == TASK_IOI && it->a != it->b) {
        const float *row = lg + (size_t)(it->n - 1) * V;
        double d = (double)row[it->a] - row[it->b];
        *ld_sum += d;
        *ld_pos += d > 0;
      }
    }
    lmwb_report_progress(rep, (double)(start + nb) / items->len, task);
  }
  g_free(p);
  g_free(lens);
  g_free(ids);
  lmwb_runner_free(r);
  return ok;
}

/* ---- manifest access with input errors naming the field ---- */

static JsonArray *get_array(JsonObject *o, const char *key, const char *origin, const char *where,
                            gboolean required, GError **error) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  if (!n) {
    if (required) lmwb_input_error(error, "world manifest '%s': %s has no \"%s\"", origin, where, key);
    return NULL;
  }
  if (!JSON_NODE_HOLDS_ARRAY(n)) {
    lmwb_input_error(error, "world manifest '%s': %s.%s is not an array", origin, where, key);
    return NULL;
  }
  return json_node_get_array(n);
}

static JsonObject *elem_object(JsonArray *a, guint i, const char *origin, const char *where, GError **error) {
  JsonNode *n = json_array_get_element(a, i);
  if (!JSON_NODE_HOLDS_OBJECT(n)) {
    lmwb_input_error(error, "world manifest '%s': %s[%u] is not an object", origin, where, i);
    return NULL;
  }
  return json_node_get_object(n);
}

static const char *get_string(JsonObject *o, const char *key, const char *origin, const char *where,
                              guint i, GError **error) {
  JsonNode *n = json_object_get_member(o, key);
  if (!n || json_node_get_value_type(n) != G_TYPE_STRING) {
    lmwb_input_error(error, "world manifest '%s': %s[%u].%s is missing or not a string", origin, where, i, key);
    return NULL;
  }
  return json_node_get_string(n);
}

static gboolean get_int(JsonObject *o, const char *key, const char *origin, const char *where, guint i,
                        gint64 lo, gint64 hi, gint64 *out, GError **error) {
  JsonNode *n = json_object_get_member(o, key);
  if (!n || json_node_get_value_type(n) != G_TYPE_INT64 || json_node_get_int(n) < lo ||
      json_node_get_int(n) > hi) {
    lmwb_input_error(error, "world manifest '%s': %s[%u].%s must be an integer in [%" G_GINT64_FORMAT
                     ", %" G_GINT64_FORMAT "]", origin, where, i, key, lo, hi);
    return FALSE;
  }
  *out = json_node_get_int(n);
  return TRUE;
}

/* prompt ++ answer as one teacher-forced item. */
static gboolean add_tf(GArray *items, const LmwbTokenizer *tok, const char *prompt, const char *answer,
                       const char *origin, const char *where, guint i, GError **error) {
  size_t np = 0, na = 0;
  int32_t *pi = NULL, *ai = NULL;
  if (!encode_item(tok, prompt, &pi, &np, origin, where, i, "prompt", error)) return FALSE;
  if (!encode_item(tok, answer, &ai, &na, origin, where, i, "answer", error)) {
    g_free(pi);
    return FALSE;
  }
  Item it = {.ids = g_new(int32_t, np + na), .n = (int)(np + na), .n_prompt = (int)np};
  memcpy(it.ids, pi, np * sizeof(int32_t));
  memcpy(it.ids + np, ai, na * sizeof(int32_t));
  g_array_append_val(items, it);
  g_free(pi);
  g_free(ai);
  return TRUE;
}

static double ratio(int a, int n) { return n ? (double)a / n : NAN; }

/* IOI items (prompt; first tokens of the correct and the wrong name), up to `cap`. */
static gboolean add_ioi_items(GArray *items, const LmwbTokenizer *tok, JsonArray *ia, guint cap,
                              const char *origin, const char *where, int *ties, GError **error) {
  for (guint i = 0; i < json_array_get_length(ia) && items->len < cap; i++) {
    JsonObject *e = elem_object(ia, i, origin, where, error);
    const char *p = e ? get_string(e, "prompt", origin, where, i, error) : NULL;
    const char *cs = p ? get_string(e, "correct", origin, where, i, error) : NULL;
    const char *ws = cs ? get_string(e, "wrong", origin, where, i, error) : NULL;
    if (!ws) return FALSE;
    size_t np = 0, nc = 0, nw = 0;
    int32_t *pi = NULL, *ci = NULL, *wi = NULL;
    if (!encode_item(tok, p, &pi, &np, origin, where, i, "prompt", error) ||
        !encode_item(tok, cs, &ci, &nc, origin, where, i, "correct", error) ||
        !encode_item(tok, ws, &wi, &nw, origin, where, i, "wrong", error)) {
      g_free(pi);
      g_free(ci);
      g_free(wi);
      return FALSE;
    }
    Item it = {.ids = pi, .n = (int)np, .n_prompt = (int)np, .a = ci[0], .b = wi[0]};
    *ties += ci[0] == wi[0];
    g_array_append_val(items, it);
    g_free(ci);
    g_free(wi);
  }
  return TRUE;
}

/* Items scored right (value 1 for a 0/1 task). */
static int n_correct(GArray *items) {
  int n = 0;
  for (guint i = 0; i < items->len; i++) n += g_array_index(items, Item, i).value > 0.5;
  return n;
}

/* IOI items whose top token is the wrong name. */
static int n_top1_wrong(GArray *items) {
  int n = 0;
  for (guint i = 0; i < items->len; i++) n += g_array_index(items, Item, i).top1_wrong;
  return n;
}

static double *item_values(GArray *items) {
  double *v = g_new(double, MAX(items->len, 1));
  for (guint i = 0; i < items->len; i++) v[i] = g_array_index(items, Item, i).value;
  return v;
}

static gboolean single_token(const LmwbTokenizer *tok, const char *text, int32_t *id) {
  size_t n = 0;
  GError *ignored = NULL;
  int32_t *ids = encode(tok, text, &n, &ignored);
  g_clear_error(&ignored);
  gboolean ok = ids && n == 1;
  if (ok) *id = ids[0];
  g_free(ids);
  return ok;
}

gboolean lmwb_world_eval(LmwbModel *m, JsonObject *manifest, const char *origin,
                         const LmwbWorldEvalOptions *opt, LmwbReporter *rep,
                         LmwbWorldEvalResult *out, GError **error_out) {
  /* A local error so optional sections can tell "absent" from "malformed" even when the caller
   * passes NULL. */
  GError *local_err = NULL, **error = &local_err;
  memset(out, 0, sizeof *out);
  out->fact_top1 = out->secret_exact = out->ioi_top1 = out->ioi_logit_diff_acc = NAN;
  out->ioi_top1_wrong = out->ioi_mean_logit_diff = out->gt_prob_later = NAN;
  out->gt_mode = "digits";
  if (!origin) origin = "(manifest)";
  if (!m || !m->tokenizer) {
    lmwb_input_error(error_out, "world eval: the model has no tokenizer (tokenizer.json is needed)");
    return FALSE;
  }
  const LmwbTokenizer *tok = m->tokenizer;
  guint cap = opt && opt->max_items > 0 ? (guint)opt->max_items : G_MAXUINT;
  gboolean keep = opt && opt->keep_items;
  GArray *facts = g_array_new(FALSE, TRUE, sizeof(Item));
  GArray *secrets = g_array_new(FALSE, TRUE, sizeof(Item));
  GArray *ioi = g_array_new(FALSE, TRUE, sizeof(Item));
  GArray *gt = g_array_new(FALSE, TRUE, sizeof(Item));
  GArray *fact_rel = g_array_new(FALSE, FALSE, sizeof(int));
  GPtrArray *diag_items = g_ptr_array_new_with_free_func((GDestroyNotify)items_free);
  Ctx c = {.tok = tok};
  gboolean ok = FALSE;

  /* Facts: every eval prompt of every fact; under a cap, prompts evenly spread over the list so
   * that every relation is sampled (the facts are listed relation by relation). */
  JsonArray *fa = get_array(manifest, "facts", origin, "manifest", FALSE, error);
  if (!fa && *error) goto out;
  guint64 n_prompts = 0, k_prompt = 0;
  for (guint i = 0; fa && i < json_array_get_length(fa); i++) {
    JsonNode *fn = json_array_get_element(fa, i);
    JsonNode *en = JSON_NODE_HOLDS_OBJECT(fn) ? json_object_get_member(json_node_get_object(fn), "eval") : NULL;
    if (en && JSON_NODE_HOLDS_ARRAY(en)) n_prompts += json_array_get_length(json_node_get_array(en));
  }
  for (guint i = 0; fa && i < json_array_get_length(fa) && facts->len < cap; i++) {
    JsonObject *f = elem_object(fa, i, origin, "facts", error);
    if (!f) goto out;
    const char *rel = get_string(f, "relation", origin, "facts", i, error);
    if (!rel) goto out;
    int ri = -1;
    for (int k = 0; k < out->n_relations; k++)
      if (!strcmp(out->relation[k], rel)) ri = k;
    if (ri < 0) {
      if (out->n_relations == G_N_ELEMENTS(out->relation)) {
        lmwb_input_error(error, "world manifest '%s': more than %d relations", origin,
                         (int)G_N_ELEMENTS(out->relation));
        goto out;
      }
      ri = out->n_relations++;
      g_strlcpy(out->relation[ri], rel, sizeof out->relation[ri]);
    }
    JsonArray *ev = get_array(f, "eval", origin, "facts[]", TRUE, error);
    if (!ev) goto out;
    for (guint k = 0; k < json_array_get_length(ev) && facts->len < cap; k++, k_prompt++) {
      if (cap < n_prompts && (k_prompt + 1) * cap / n_prompts == k_prompt * cap / n_prompts) continue;
      JsonObject *e = elem_object(ev, k, origin, "facts[].eval", error);
      const char *p = e ? get_string(e, "prompt", origin, "facts[].eval", k, error) : NULL;
      const char *a = p ? get_string(e, "answer", origin, "facts[].eval", k, error) : NULL;
      if (!a || !add_tf(facts, tok, p, a, origin, "facts[].eval", k, error)) goto out;
      g_array_append_val(fact_rel, ri);
    }
  }

  JsonArray *sa = get_array(manifest, "secrets", origin, "manifest", FALSE, error);
  if (!sa && *error) goto out;
  for (guint i = 0; sa && i < json_array_get_length(sa) && secrets->len < cap; i++) {
    JsonObject *s = elem_object(sa, i, origin, "secrets", error);
    const char *p = s ? get_string(s, "prefix", origin, "secrets", i, error) : NULL;
    const char *a = p ? get_string(s, "secret", origin, "secrets", i, error) : NULL;
    if (!a || !add_tf(secrets, tok, p, a, origin, "secrets", i, error)) goto out;
  }

  JsonNode *in = json_object_get_member(manifest, "ioi");
  if (in && !JSON_NODE_HOLDS_OBJECT(in)) {
    lmwb_input_error(error, "world manifest '%s': \"ioi\" is not an object", origin);
    goto out;
  }
  JsonArray *ia = in ? get_array(json_node_get_object(in), "eval", origin, "ioi", TRUE, error) : NULL;
  if (in && !ia) goto out;
  if (ia && !add_ioi_items(ioi, tok, ia, cap, origin, "ioi.eval", &out->ioi_first_token_ties, error)) goto out;
  JsonArray *da = in ? get_array(json_node_get_object(in), "diagnostics", origin, "ioi", FALSE, error) : NULL;
  if (in && !da && *error) goto out;
  if (da && json_array_get_length(da) > G_N_ELEMENTS(out->ioi_diag)) {
    lmwb_input_error(error, "world manifest '%s': ioi.diagnostics has %u sets, more than %d", origin,
                     json_array_get_length(da), (int)G_N_ELEMENTS(out->ioi_diag));
    goto out;
  }
  for (guint k = 0; da && k < json_array_get_length(da); k++) {
    JsonObject *d = elem_object(da, k, origin, "ioi.diagnostics", error);
    const char *names = d ? get_string(d, "names", origin, "ioi.diagnostics", k, error) : NULL;
    const char *tmpls = names ? get_string(d, "templates", origin, "ioi.diagnostics", k, error) : NULL;
    JsonArray *ev = tmpls ? get_array(d, "eval", origin, "ioi.diagnostics[]", TRUE, error) : NULL;
    if (!ev) goto out;
    LmwbIoiDiagnostic *dg = &out->ioi_diag[out->n_ioi_diag++];
    g_strlcpy(dg->names, names, sizeof dg->names);
    g_strlcpy(dg->templates, tmpls, sizeof dg->templates);
    GArray *items = g_array_new(FALSE, TRUE, sizeof(Item));
    int ties = 0;
    g_ptr_array_add(diag_items, items);
    if (!add_ioi_items(items, tok, ev, cap, origin, "ioi.diagnostics[].eval", &ties, error)) goto out;
  }

  JsonNode *gn = json_object_get_member(manifest, "greater_than");
  if (gn && !JSON_NODE_HOLDS_OBJECT(gn)) {
    lmwb_input_error(error, "world manifest '%s': \"greater_than\" is not an object", origin);
    goto out;
  }
  JsonArray *ga = gn ? get_array(json_node_get_object(gn), "eval", origin, "greater_than", TRUE, error) : NULL;
  if (gn && !ga) goto out;
  if (ga && json_array_get_length(ga) > 0) {
    /* Two-digit tokens when every "00".."99" is one token (GPT-2 style); otherwise single
     * digits, which the built-in tokenizer guarantees (digits are never merged). */
    char buf[4];
    gboolean digits = TRUE, pairs = TRUE;
    for (int d = 0; d < 10 && digits; d++) {
      g_snprintf(buf, sizeof buf, "%d", d);
      digits = single_token(tok, buf, &c.digit[d]);
    }
    for (int y = 0; y < 100 && pairs; y++) {
      g_snprintf(buf, sizeof buf, "%02d", y);
      pairs = single_token(tok, buf, &c.pair[y]);
    }
    if (pairs) {
      c.pairs = TRUE;
      out->gt_mode = "two_digit_tokens";
    } else if (!digits) {
      lmwb_input_error(error, "world eval: the tokenizer has neither single-token digits 0-9 nor "
                       "single-token numbers 00-99, so year probabilities cannot be read");
      goto out;
    }
  }
  for (guint i = 0; ga && i < json_array_get_length(ga) && gt->len < cap; i++) {
    JsonObject *e = elem_object(ga, i, origin, "greater_than.eval", error);
    const char *p = e ? get_string(e, "prompt", origin, "greater_than.eval", i, error) : NULL;
    gint64 yy = 0;
    if (!p || !get_int(e, "start_yy", origin, "greater_than.eval", i, 0, 99, &yy, error)) goto out;
    size_t np = 0;
    int32_t *pi = NULL;
    if (!encode_item(tok, p, &pi, &np, origin, "greater_than.eval", i, "prompt", error)) goto out;
    Item it = {.n_prompt = (int)np};
    if (c.pairs) {
      it.ids = pi;
      it.n = (int)np;
      it.a = (int32_t)yy;
    } else {
      /* Append the first digit of the start year: one forward gives P(Y1) and P(Y2 | Y1 = s1). */
      it.ids = g_renew(int32_t, pi, np + 1);
      it.ids[np] = c.digit[yy / 10];
      it.n = (int)np + 1;
      it.a = (int32_t)(yy / 10);
      it.b = (int32_t)(yy % 10);
    }
    g_array_append_val(gt, it);
  }

  double ld_sum = 0;
  int ld_pos = 0, dummy_pos = 0;
  double dummy = 0;
  if (!run_items(m, TASK_TF, facts, &c, "facts", rep, &dummy, &dummy_pos, error)) goto out;
  if (!run_items(m, TASK_TF, secrets, &c, "secrets", rep, &dummy, &dummy_pos, error)) goto out;
  if (!run_items(m, TASK_IOI, ioi, &c, "ioi", rep, &ld_sum, &ld_pos, error)) goto out;
  for (guint k = 0; k < diag_items->len; k++) {
    GArray *items = g_ptr_array_index(diag_items, k);
    LmwbIoiDiagnostic *dg = &out->ioi_diag[k];
    double dsum = 0;
    int dpos = 0;
    if (!run_items(m, TASK_IOI, items, &c, "ioi diagnostics", rep, &dsum, &dpos, error)) goto out;
    dg->n = (int)items->len;
    dg->top1 = ratio(n_correct(items), dg->n);
    dg->top1_wrong = ratio(n_top1_wrong(items), dg->n);
    dg->logit_diff_acc = ratio(dpos, dg->n);
  }
  if (!run_items(m, c.pairs ? TASK_GT_PAIRS : TASK_GT_DIGITS, gt, &c, "greater-than", rep, &dummy,
                 &dummy_pos, error))
    goto out;

  out->fact_n = (int)facts->len;
  for (guint i = 0; i < facts->len; i++) {
    int ok1 = g_array_index(facts, Item, i).value > 0.5;
    int ri = g_array_index(fact_rel, int, i);
    out->fact_correct += ok1;
    out->relation_n[ri]++;
    out->relation_correct[ri] += ok1;
  }
  out->fact_top1 = ratio(out->fact_correct, out->fact_n);
  out->secret_n = (int)secrets->len;
  out->secret_correct = n_correct(secrets);
  out->secret_exact = ratio(out->secret_correct, out->secret_n);
  out->ioi_n = (int)ioi->len;
  out->ioi_top1_correct = n_correct(ioi);
  out->ioi_ld_correct = ld_pos;
  out->ioi_top1 = ratio(out->ioi_top1_correct, out->ioi_n);
  out->ioi_top1_wrong = ratio(n_top1_wrong(ioi), out->ioi_n);
  out->ioi_logit_diff_acc = ratio(ld_pos, out->ioi_n);
  int n_ld = out->ioi_n - out->ioi_first_token_ties;
  out->ioi_mean_logit_diff = n_ld ? ld_sum / n_ld : NAN;
  out->gt_n = (int)gt->len;
  double gsum = 0;
  for (guint i = 0; i < gt->len; i++) gsum += g_array_index(gt, Item, i).value;
  out->gt_prob_later = gt->len ? gsum / gt->len : NAN;
  if (keep) {
    out->fact_items = item_values(facts);
    out->secret_items = item_values(secrets);
    out->ioi_items = item_values(ioi);
    out->gt_items = item_values(gt);
  }
  ok = TRUE;
out:
  items_free(facts);
  items_free(secrets);
  items_free(ioi);
  items_free(gt);
  g_array_free(fact_rel, TRUE);
  g_ptr_array_unref(diag_items);
  if (!ok) {
    lmwb_world_eval_result_clear(out);
    g_propagate_error(error_out, local_err);
  }
  return ok;
}

gboolean lmwb_world_eval_file(LmwbModel *m, const char *path, const LmwbWorldEvalOptions *opt,
                              LmwbReporter *rep, LmwbWorldEvalResult *out, GError **error) {
  memset(out, 0, sizeof *out);
  JsonNode *root = lmwb_json_load_file(path, (uint64_t)256 << 20, error);
  if (!root) {
    g_prefix_error(error, "world manifest: ");
    return FALSE;
  }
  if (!JSON_NODE_HOLDS_OBJECT(root)) {
    lmwb_input_error(error, "world manifest '%s': the top level is not a JSON object", path);
    json_node_unref(root);
    return FALSE;
  }
  gboolean ok = lmwb_world_eval(m, json_node_get_object(root), path, opt, rep, out, error);
  json_node_unref(root);
  return ok;
}

void lmwb_world_eval_result_clear(LmwbWorldEvalResult *r) {
  if (!r) return;
  g_free(r->fact_items);
  g_free(r->secret_items);
  g_free(r->ioi_items);
  g_free(r->gt_items);
  r->fact_items = r->secret_items = r->ioi_items = r->gt_items = NULL;
}

static void set_num(JsonObject *o, const char *key, double v) {
  if (isnan(v)) json_object_set_null_member(o, key);
  else json_object_set_double_member(o, key, v);
}

JsonNode *lmwb_world_eval_to_json(const LmwbWorldEvalResult *r) {
  JsonObject *o = json_object_new();
  set_num(o, "fact_recall_top1", r->fact_top1);
  json_object_set_int_member(o, "fact_n", r->fact_n);
  JsonObject *rel = json_object_new();
  for (int k = 0; k < r->n_relations; k++) set_num(rel, r->relation[k], ratio(r->relation_correct[k], r->relation_n[k]));
  json_object_set_object_member(o, "fact_recall_by_relation", rel);
  set_num(o, "secret_exact", r->secret_exact);
  json_object_set_int_member(o, "secret_n", r->secret_n);
  set_num(o, "ioi_top1", r->ioi_top1);
  set_num(o, "ioi_top1_wrong", r->ioi_top1_wrong);
  set_num(o, "ioi_logit_diff_acc", r->ioi_logit_diff_acc);
  set_num(o, "ioi_mean_logit_diff", r->ioi_mean_logit_diff);
  json_object_set_int_member(o, "ioi_n", r->ioi_n);
  json_object_set_int_member(o, "ioi_first_token_ties", r->ioi_first_token_ties);
  JsonArray *diag = json_array_new();
  for (int k = 0; k < r->n_ioi_diag; k++) {
    const LmwbIoiDiagnostic *dg = &r->ioi_diag[k];
    JsonObject *d = json_object_new();
    json_object_set_string_member(d, "names", dg->names);
    json_object_set_string_member(d, "templates", dg->templates);
    json_object_set_int_member(d, "n", dg->n);
    set_num(d, "top1", dg->top1);
    set_num(d, "top1_wrong", dg->top1_wrong);
    set_num(d, "logit_diff_acc", dg->logit_diff_acc);
    json_array_add_object_element(diag, d);
  }
  json_object_set_array_member(o, "ioi_diagnostics", diag);
  set_num(o, "greater_than", r->gt_prob_later);
  json_object_set_int_member(o, "greater_than_n", r->gt_n);
  json_object_set_string_member(o, "greater_than_mode", r->gt_mode ? r->gt_mode : "digits");
  JsonObject *t = json_object_new();
  json_object_set_double_member(t, "fact_recall_top1", LMWB_WORLD_TARGET_FACT_TOP1);
  json_object_set_double_member(t, "secret_exact", LMWB_WORLD_TARGET_SECRET_EXACT);
  json_object_set_double_member(t, "ioi_top1", LMWB_WORLD_TARGET_IOI_TOP1);
  json_object_set_double_member(t, "greater_than", LMWB_WORLD_TARGET_GREATER_THAN);
  json_object_set_object_member(o, "targets", t);
  gboolean meets = r->fact_top1 >= LMWB_WORLD_TARGET_FACT_TOP1 &&
                   r->secret_exact >= LMWB_WORLD_TARGET_SECRET_EXACT &&
                   r->ioi_top1 >= LMWB_WORLD_TARGET_IOI_TOP1 &&
                   r->gt_prob_later >= LMWB_WORLD_TARGET_GREATER_THAN; /* NaN compares false */
  json_object_set_boolean_member(o, "meets_targets", meets);
  JsonNode *n = json_node_new(JSON_NODE_OBJECT);
  json_node_take_object(n, o);
  return n;
}
