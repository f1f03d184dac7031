/* Interventions from the command line (run_options.h). */
#include "ui/batch/run_options.h"
#include "app/core/errors.h"
#include "app/formats/npy.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

LmwbRunOptions lmwb_run_options;

const GOptionEntry lmwb_run_option_entries[] = {
  {"sites", 0, 0, G_OPTION_ARG_STRING, &lmwb_run_options.sites,
   "Also compute optional per-head sites: result (attn.hook_result), qkv (hook_q_input/k/v), mlp-in", "LIST"},
  {"patch", 0, 0, G_OPTION_ARG_STRING_ARRAY, &lmwb_run_options.patches,
   "Move the activation at HOOK towards SRC.npy (shaped as the site); ALPHA 1 copies it; repeatable",
   "HOOK=SRC.npy[@ALPHA]"},
  {NULL}};

const GOptionEntry lmwb_backward_option_entries[] = {
  {"loss", 0, 0, G_OPTION_ARG_STRING_ARRAY, &lmwb_run_options.losses,
   "What to differentiate: next-token (default), kl:REF.npy, kl-last:REF.npy, logit-diff:A:B[;A:B...], "
   "dlogits:D.npy; W* weights a term; repeatable (summed)", "[W*]SPEC"},
  {"from", 0, 0, G_OPTION_ARG_STRING_ARRAY, &lmwb_run_options.seeds,
   "Start the backward from gradient G.npy injected at HOOK instead of a loss; repeatable", "HOOK=G.npy"},
  {"freeze", 0, 0, G_OPTION_ARG_STRING, &lmwb_run_options.freeze,
   "Hold fixed in the backward: pattern, norm, mlp (the nonlinearity), mlp-out (every MLP's output)", "LIST"},
  {"stop-layer", 0, 0, G_OPTION_ARG_INT, &lmwb_run_options.stop_layer, "Lowest layer the backward goes through",
   "L"},
  {NULL}};

static size_t count_entries(const GOptionEntry *e) {
  size_t n = 0;
  while (e && e[n].long_name) n++;
  return n;
}

GOptionEntry *lmwb_run_options_entries(const GOptionEntry *own, gboolean backward) {
  size_t a = count_entries(own), b = count_entries(lmwb_run_option_entries),
         c = backward ? count_entries(lmwb_backward_option_entries) : 0;
  GOptionEntry *all = g_new0(GOptionEntry, a + b + c + 1);
  memcpy(all, own, a * sizeof *all);
  memcpy(all + a, lmwb_run_option_entries, b * sizeof *all);
  if (c) memcpy(all + a + b, lmwb_backward_option_entries, c * sizeof *all);
  return all;
}

void lmwb_run_options_clear(void) {
  if (lmwb_run_options.owned) g_ptr_array_free(lmwb_run_options.owned, TRUE);
  lmwb_run_options.owned = NULL;
}

static void *keep(void *p) {
  if (!lmwb_run_options.owned) lmwb_run_options.owned = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(lmwb_run_options.owned, p);
  return p;
}

/* A float32 .npy of exactly this shape. */
static float *load_shaped(const char *opt, const char *path, const int64_t *want, int want_nd, GError **error) {
  int64_t shape[LMWB_NPY_MAX_DIMS];
  int nd = 0;
  float *a = lmwb_npy_read_f32(path, shape, &nd, error);
  if (!a) {
    g_prefix_error(error, "%s: ", opt);
    return NULL;
  }
  gboolean ok = nd == want_nd;
  for (int i = 0; ok && i < nd; i++) ok = shape[i] == want[i];
  if (!ok) {
    GString *s = g_string_new(NULL), *w = g_string_new(NULL);
    for (int i = 0; i < nd; i++) g_string_append_printf(s, "%s%" G_GINT64_FORMAT, i ? "," : "", shape[i]);
    for (int i = 0; i < want_nd; i++) g_string_append_printf(w, "%s%" G_GINT64_FORMAT, i ? "," : "", want[i]);
    lmwb_input_error(error, "%s: %s has shape [%s] but the run needs [%s]", opt, path, s->str, w->str);
    g_string_free(s, TRUE);
    g_string_free(w, TRUE);
    g_free(a);
    return NULL;
  }
  return keep(a);
}

/* "HOOK=FILE": the site and the file (alpha after '@' when asked for). */
static gboolean split_hook(const LmwbConfig *c, const char *opt, const char *text, LmwbSite *site, char **file,
                           float *alpha, GError **error) {
  const char *eq = strchr(text, '=');
  if (!eq || eq == text || !eq[1]) {
    lmwb_input_error(error, "%s \"%s\": expected HOOK=FILE.npy", opt, text);
    return FALSE;
  }
  g_autofree char *hook = g_strndup(text, eq - text);
  if (!lmwb_site_parse(c, hook, site, error)) {
    g_prefix_error(error, "%s: ", opt);
    return FALSE;
  }
  const char *at = alpha ? strrchr(eq, '@') : NULL;
  if (at) {
    char *end = NULL;
    double a = g_ascii_strtod(at + 1, &end);
    if (!at[1] || *end || !isfinite(a)) {
      lmwb_input_error(error, "%s \"%s\": alpha \"%s\" is not a number", opt, text, at + 1);
      return FALSE;
    }
    *alpha = (float)a;
  } else if (alpha) {
    *alpha = 1.0f;
  }
  *file = at ? g_strndup(eq + 1, at - eq - 1) : g_strdup(eq + 1);
  return TRUE;
}

static gboolean parse_sites(const char *text, unsigned *out, GError **error) {
  g_auto(GStrv) parts = g_strsplit(text, ",", -1);
  for (char **p = parts; *p; p++) {
    const char *s = g_strstrip(*p);
    if (!strcmp(s, "result")) *out |= LMWB_RUN_ATTN_RESULT;
    else if (!strcmp(s, "qkv")) *out |= LMWB_RUN_SPLIT_QKV;
    else if (!strcmp(s, "mlp-in")) *out |= LMWB_RUN_MLP_IN;
    else {
      lmwb_input_error(error, "--sites: \"%s\" is not result, qkv or mlp-in", s);
      return FALSE;
    }
  }
  return TRUE;
}

gboolean lmwb_run_options_apply(LmwbRunner *r, int B, int T, LmwbForwardOptions *fo, GError **error) {
  const LmwbConfig *c = &lmwb_runner_model(r)->cfg;
  if (lmwb_run_options.sites && !parse_sites(lmwb_run_options.sites, &fo->sites, error)) return FALSE;
  for (char **p = lmwb_run_options.patches; p && *p; p++) {
    LmwbSite site;
    g_autofree char *file = NULL;
    float alpha;
    if (!split_hook(c, "--patch", *p, &site, &file, &alpha, error)) return FALSE;
    int64_t shape[4];
    int nd = lmwb_site_shape(c, site.kind, B, T, T, shape);
    const float *src = load_shaped("--patch", file, shape, nd, error);
    if (!src) return FALSE;
    LmwbHook h = {.site = site, .op = LMWB_HOOK_PATCH, .source = src, .alpha = alpha, .run_B = B, .run_T = T};
    if (!lmwb_runner_add_hook(r, &h, error)) return FALSE;
  }
  return TRUE;
}

static gboolean parse_freeze(const char *text, unsigned *out, GError **error) {
  g_auto(GStrv) parts = g_strsplit(text, ",", -1);
  for (char **p = parts; *p; p++) {
    const char *s = g_strstrip(*p);
    if (!strcmp(s, "pattern")) *out |= LMWB_FREEZE_PATTERN;
    else if (!strcmp(s, "norm")) *out |= LMWB_FREEZE_NORM;
    else if (!strcmp(s, "mlp")) *out |= LMWB_FREEZE_MLP;
    else if (!strcmp(s, "mlp-out")) *out |= LMWB_FREEZE_MLP_OUT;
    else {
      lmwb_input_error(error, "--freeze: \"%s\" is not pattern, norm, mlp or mlp-out", s);
      return FALSE;
    }
  }
  return TRUE;
}

/* Reference logits -> log-probabilities of the rows kept (every row, or each sequence's last). */
static float *ref_logprobs(const char *path, int B, int T, int V, gboolean last_only, GError **error) {
  int64_t want[3] = {B, T, V};
  const float *ref = load_shaped("--loss", path, want, 3, error);
  if (!ref) return NULL;
  int rows = last_only ? B : B * T;
  float *lp = keep(g_new(float, (size_t)rows * V));
  for (int k = 0; k < rows; k++) {
    const float *x = ref + (size_t)(last_only ? k * T + T - 1 : k) * V;
    double mx = x[0], s = 0;
    for (int v = 1; v < V; v++) mx = fmax(mx, x[v]);
    for (int v = 0; v < V; v++) s += exp(x[v] - mx);
    for (int v = 0; v < V; v++) lp[(size_t)k * V + v] = (float)(x[v] - mx - log(s));
  }
  return lp;
}

static gboolean parse_term(const char *text, int B, int T, int V, LmwbLoss *t, GError **error) {
  memset(t, 0, sizeof *t);
  const char *spec = text, *star = strchr(text, '*');
  if (star) {
    g_autofree char *w = g_strndup(text, star - text);
    char *end = NULL;
    t->weight = g_ascii_strtod(w, &end);
    if (!*w || *end || !isfinite(t->weight) || t->weight == 0) {
      lmwb_input_error(error, "--loss \"%s\": weight \"%s\" is not a non-zero number", text, w);
      return FALSE;
    }
    spec = star + 1;
  }
  int *last = keep(g_new(int, B));
  for (int b = 0; b < B; b++) last[b] = T - 1;
  if (!strcmp(spec, "next-token")) {
    t->kind = LMWB_LOSS_NEXT_TOKEN;
  } else if (g_str_has_prefix(spec, "kl:") || g_str_has_prefix(spec, "kl-last:")) {
    gboolean at_last = g_str_has_prefix(spec, "kl-last:");
    t->kind = LMWB_LOSS_KL;
    t->ref_logprobs = ref_logprobs(strchr(spec, ':') + 1, B, T, V, at_last, error);
    t->positions = at_last ? last : NULL;
    if (!t->ref_logprobs) return FALSE;
  } else if (g_str_has_prefix(spec, "dlogits:")) {
    int64_t want[3] = {B, T, V};
    t->kind = LMWB_LOSS_DLOGITS;
    if (!(t->dlogits = load_shaped("--loss", spec + 8, want, 3, error))) return FALSE;
  } else if (g_str_has_prefix(spec, "logit-diff:")) {
    g_auto(GStrv) pairs = g_strsplit(spec + 11, ";", -1);
    int n = (int)g_strv_length(pairs);
    if (n != 1 && n != B) {
      lmwb_input_error(error, "--loss \"%s\": give one A:B pair, or one per sequence (%d)", text, B);
      return FALSE;
    }
    int32_t *a = keep(g_new(int32_t, B)), *bb = keep(g_new(int32_t, B));
    for (int b = 0; b < B; b++) {
      int x, y, used = 0;
      if (sscanf(pairs[n == 1 ? 0 : b], "%d:%d%n", &x, &y, &used) != 2 || pairs[n == 1 ? 0 : b][used]) {
        lmwb_input_error(error, "--loss \"%s\": \"%s\" is not a token pair A:B", text, pairs[n == 1 ? 0 : b]);
        return FALSE;
      }
      a[b] = x, bb[b] = y;
    }
    t->kind = LMWB_LOSS_LOGIT_DIFF;
    t->positions = last;
    t->tok_a = a;
    t->tok_b = bb;
  } else {
    lmwb_input_error(error, "--loss \"%s\": expected next-token, kl:REF.npy, kl-last:REF.npy, logit-diff:A:B or "
                     "dlogits:D.npy", text);
    return FALSE;
  }
  return TRUE;
}

gboolean lmwb_run_options_backward(LmwbRunner *r, int B, int T, GError **error) {
  const LmwbConfig *c = &lmwb_runner_model(r)->cfg;
  LmwbBackwardOptions bo = {.stop_layer = lmwb_run_options.stop_layer};
  if (lmwb_run_options.freeze && !parse_freeze(lmwb_run_options.freeze, &bo.freeze, error)) return FALSE;
  if (lmwb_run_options.seeds) {
    if (lmwb_run_options.losses) {
      lmwb_input_error(error, "give either --loss or --from, not both");
      return FALSE;
    }
    int n = (int)g_strv_length(lmwb_run_options.seeds);
    g_autofree LmwbGradSeed *seeds = g_new0(LmwbGradSeed, n);
    for (int i = 0; i < n; i++) {
      g_autofree char *file = NULL;
      if (!split_hook(c, "--from", lmwb_run_options.seeds[i], &seeds[i].site, &file, NULL, error)) return FALSE;
      int64_t shape[4];
      int nd = lmwb_site_shape(c, seeds[i].site.kind, B, T, T, shape);
      if (!(seeds[i].grad = load_shaped("--from", file, shape, nd, error))) return FALSE;
    }
    return lmwb_runner_backward_from(r, seeds, n, &bo, error);
  }
  if (T < 2 && !lmwb_run_options.losses) {
    lmwb_input_error(error, "the next-token loss needs sequences of at least 2 tokens");
    return FALSE;
  }
  static char *next_token[] = {"next-token", NULL};
  char **specs = lmwb_run_options.losses ? lmwb_run_options.losses : next_token;
  int n = (int)g_strv_length(specs);
  g_autofree LmwbLoss *terms = g_new0(LmwbLoss, n);
  for (int i = 0; i < n; i++)
    if (!parse_term(specs[i], B, T, c->vocab_size, &terms[i], error)) return FALSE;
  double v;
  return lmwb_runner_backward(r, terms, n, &bo, &v, error);
}
