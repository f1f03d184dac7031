/* K-FAC editing: matrix names and sites, layer lists, the factors container, the fingerprint
 * (kfac.h). */
#include "editors/kfac.h"
#include "app/core/errors.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const MATRIX_NAMES[LMWB_KFAC_N_MATRICES] = {"up", "gate", "down"};

const char *lmwb_kfac_matrix_name(LmwbKfacMatrix m) {
  return (unsigned)m < LMWB_KFAC_N_MATRICES ? MATRIX_NAMES[m] : "?";
}

const char *lmwb_kfac_labels_name(LmwbKfacLabels l) { return l == LMWB_KFAC_LABELS_DATA ? "data" : "sample"; }

gboolean lmwb_kfac_matrices_parse(const char *list, unsigned *mask, GError **error) {
  *mask = 0;
  g_auto(GStrv) words = g_strsplit(list ? list : "", ",", -1);
  for (char **w = words; *w; w++) {
    char *s = g_strstrip(*w);
    int k = -1;
    for (int i = 0; i < LMWB_KFAC_N_MATRICES; i++)
      if (!strcmp(s, MATRIX_NAMES[i])) k = i;
    if (k < 0) {
      lmwb_input_error(error, "matrices: \"%s\" is not one of up, gate, down", s);
      return FALSE;
    }
    *mask |= 1u << k;
  }
  if (!*mask) {
    lmwb_input_error(error, "matrices: none given (expected a list of up, gate, down)");
    return FALSE;
  }
  return TRUE;
}

static gboolean parse_int(const char *s, long *v) {
  char *end = NULL;
  s = s ? s : "";
  while (*s == ' ') s++;
  if (!*s) return FALSE;
  *v = strtol(s, &end, 10);
  while (*end == ' ') end++;
  return *end == '\0';
}

int *lmwb_kfac_layers_parse(const char *spec, int n_layer, int *n, GError **error) {
  g_autofree bool *on = g_new0(bool, MAX(n_layer, 1));
  if (spec && !g_ascii_strcasecmp(spec, "all")) {
    for (int l = 0; l < n_layer; l++) on[l] = true;
  } else {
    g_auto(GStrv) parts = g_strsplit(spec ? spec : "", ",", -1);
    for (char **p = parts; *p; p++) {
      long a, b;
      char *dash = strchr(*p + (**p == '-'), '-');
      gboolean ok;
      if (dash) {
        *dash = '\0';
        ok = parse_int(*p, &a) && parse_int(dash + 1, &b);
      } else {
        ok = parse_int(*p, &a);
        b = a;
      }
      if (!ok || a > b) {
        lmwb_input_error(error, "layers: \"%s\" is not a layer, a range A-B or \"all\"", spec ? spec : "");
        return NULL;
      }
      for (long l = a; l <= b; l++) {
        if (l < 0 || l >= n_layer) {
          lmwb_input_error(error, "layers: layer %ld is out of range (the model has %d layers, 0..%d)", l, n_layer,
                           n_layer - 1);
          return NULL;
        }
        on[l] = true;
      }
    }
  }
  int *out = g_new(int, MAX(n_layer, 1)), k = 0;
  for (int l = 0; l < n_layer; l++)
    if (on[l]) out[k++] = l;
  if (!k) {
    g_free(out);
    lmwb_input_error(error, "layers: none given");
    return NULL;
  }
  *n = k;
  return out;
}

gboolean lmwb_kfac_info(const LmwbConfig *cfg, int layer, LmwbKfacMatrix m, LmwbKfacInfo *out, GError **error) {
  if (layer < 0 || layer >= cfg->n_layer) {
    lmwb_input_error(error, "layer %d is out of range (the model has %d layers, 0..%d)", layer, cfg->n_layer,
                     cfg->n_layer - 1);
    return FALSE;
  }
  memset(out, 0, sizeof *out);
  int C = cfg->d_model, F = cfg->d_ff;
  switch (m) {
  case LMWB_KFAC_UP:
    *out = (LmwbKfacInfo){{LMWB_SITE_LN2, layer},
                          {cfg->gated_mlp ? LMWB_SITE_MLP_PRE_LINEAR : LMWB_SITE_MLP_PRE, layer}, "", C, F};
    g_snprintf(out->param, sizeof out->param, "blocks.%d.mlp.W_in", layer);
    return TRUE;
  case LMWB_KFAC_GATE:
    if (!cfg->gated_mlp) {
      lmwb_input_error(error, "blocks.%d.mlp.gate: the model has no gated MLP (gate exists only in Llama-style "
                              "models; use up and down)", layer);
      return FALSE;
    }
    *out = (LmwbKfacInfo){{LMWB_SITE_LN2, layer}, {LMWB_SITE_MLP_PRE, layer}, "", C, F};
    g_snprintf(out->param, sizeof out->param, "blocks.%d.mlp.W_gate", layer);
    return TRUE;
  case LMWB_KFAC_DOWN:
    *out = (LmwbKfacInfo){{LMWB_SITE_MLP_POST, layer}, {LMWB_SITE_MLP_OUT, layer}, "", F, C};
    g_snprintf(out->param, sizeof out->param, "blocks.%d.mlp.W_out", layer);
    return TRUE;
  default:
    lmwb_input_error(error, "matrix %d is not up, gate or down", (int)m);
    return FALSE;
  }
}

void lmwb_kfac_factors_free(LmwbKfacFactors *f) {
  if (!f) return;
  for (int i = 0; i < f->n; i++) {
    g_free(f->f[i].A);
    g_free(f->f[i].G);
  }
  g_free(f->f);
  g_free(f->model);
  for (int i = 0; i < f->n_parts; i++) g_free(f->parts[i].source);
  g_free(f->parts);
  g_free(f);
}

const LmwbKfacFactor *lmwb_kfac_factors_find(const LmwbKfacFactors *f, int layer, LmwbKfacMatrix m) {
  for (int i = 0; i < f->n; i++)
    if (f->f[i].layer == layer && f->f[i].matrix == m) return &f->f[i];
  return NULL;
}

gboolean lmwb_kfac_fingerprint(const LmwbModel *m, char out[65], GError **error) {
  g_autoptr(GChecksum) h = g_checksum_new(G_CHECKSUM_SHA256);
  for (int i = 0; i < m->n_info; i++) {
    const LmwbParamInfo *pi = &m->info[i];
    g_checksum_update(h, (const guchar *)pi->name, (gssize)strlen(pi->name) + 1);
    g_checksum_update(h, (const guchar *)pi->shape, sizeof pi->shape);
    float *t = lmwb_model_effective_tensor(m, i, error);
    if (!t) return FALSE;
    size_t numel = (size_t)pi->shape[0] * (size_t)(pi->ndim > 1 ? pi->shape[1] : 1);
    g_checksum_update(h, (const guchar *)t, (gssize)(numel * sizeof(float)));
    g_free(t);
  }
  g_strlcpy(out, g_checksum_get_string(h), 65);
  return TRUE;
}

gboolean lmwb_kfac_values_parse(const char *text, const char *what, double upper, double **values, int *n,
                                GError **error) {
  g_auto(GStrv) parts = g_strsplit(text ? text : "", ",", -1);
  int k = (int)g_strv_length(parts);
  g_autofree double *v = g_new(double, MAX(k, 1));
  for (int i = 0; i < k; i++) {
    char *end = NULL;
    v[i] = g_ascii_strtod(g_strstrip(parts[i]), &end);
    if (!*parts[i] || *end || !(v[i] > 0 && v[i] <= upper)) {
      if (isinf(upper)) lmwb_input_error(error, "%s: \"%s\" is not a number above 0", what, parts[i]);
      else lmwb_input_error(error, "%s: \"%s\" is not a value in (0, %g]", what, parts[i], upper);
      return FALSE;
    }
  }
  if (k == 0) {
    lmwb_input_error(error, "%s: no values given", what);
    return FALSE;
  }
  *values = g_steal_pointer(&v);
  *n = k;
  return TRUE;
}
