/* Parsing code clamps "L:SITE[:HEAD]=CODE[@P1,P2,...][#SLOT]". Contract: codebooks.h. */
#include "analysis/codebooks.h"
#include "analysis/neurons.h"
#include "app/core/errors.h"
#include <string.h>

static gboolean parse_int(const char *s, gint64 lo, gint64 hi, gint64 *out) {
  return s && g_ascii_string_to_signed(s, 10, lo, hi, out, NULL);
}

void lmwb_code_clamp_clear(LmwbCodeClamp *c) {
  g_free(c->positions);
  memset(c, 0, sizeof *c);
}

gboolean lmwb_code_clamp_parse(const LmwbConfig *cfg, const char *text, LmwbCodeClamp *out, GError **error) {
  memset(out, 0, sizeof *out);
  out->head = -1;
  out->slot = -1;
  const char *eq = strchr(text, '=');
  if (!eq) {
    lmwb_input_error(error, "clamp \"%s\": expected LAYER:SITE[:HEAD]=CODE[@POSITIONS][#SLOT], e.g. 2:attn:1=77@3,4 or "
                     "0:mlp=5#0", text);
    return FALSE;
  }
  g_autofree char *left = g_strndup(text, eq - text);
  g_auto(GStrv) parts = g_strsplit(left, ":", -1);
  int np = (int)g_strv_length(parts);
  if (np < 2 || np > 3) {
    lmwb_input_error(error, "clamp \"%s\": expected LAYER:SITE or LAYER:attn:HEAD before '='", text);
    return FALSE;
  }
  gint64 L, v;
  if (!parse_int(parts[0], 0, cfg->n_layer - 1, &L)) {
    lmwb_input_error(error, "clamp \"%s\": layer \"%s\" is not in 0..%d", text, parts[0], cfg->n_layer - 1);
    return FALSE;
  }
  if (!lmwb_codebook_site_parse(parts[1], &out->site)) {
    lmwb_input_error(error, "clamp \"%s\": site \"%s\" is not attn or mlp", text, parts[1]);
    return FALSE;
  }
  out->layer = (int)L;
  if (np == 3) {
    if (out->site != LMWB_CODEBOOK_ATTN) {
      lmwb_input_error(error, "clamp \"%s\": head: only attn codebooks have heads", text);
      return FALSE;
    }
    if (!parse_int(parts[2], 0, cfg->n_head - 1, &v)) {
      lmwb_input_error(error, "clamp \"%s\": head \"%s\" is not in 0..%d", text, parts[2], cfg->n_head - 1);
      return FALSE;
    }
    out->head = (int)v;
  }
  const char *rest = eq + 1, *hash = strchr(rest, '#'), *at = strchr(rest, '@');
  if (hash && at && at > hash) {
    lmwb_input_error(error, "clamp \"%s\": write the positions (@...) before the slot (#...)", text);
    return FALSE;
  }
  const char *code_end = at ? at : hash ? hash : rest + strlen(rest);
  g_autofree char *cs = g_strndup(rest, code_end - rest);
  if (!parse_int(cs, 0, LMWB_CODEBOOK_MAX_CODES - 1, &v)) {
    lmwb_input_error(error, "clamp \"%s\": code \"%s\" is not a code id (0..num_codes-1)", text, cs);
    return FALSE;
  }
  out->code = (int)v;
  if (hash) {
    if (!parse_int(hash + 1, 0, LMWB_CODEBOOK_MAX_CODES - 1, &v)) {
      lmwb_input_error(error, "clamp \"%s\": slot \"%s\" is not a slot (0..k-1)", text, hash + 1);
      return FALSE;
    }
    out->slot = (int)v;
  }
  if (at) {
    g_autofree char *ps = hash ? g_strndup(at + 1, hash - at - 1) : g_strdup(at + 1);
    if (!lmwb_neuron_clamp_parse_positions(cfg, ps, &out->positions, &out->n_positions, error)) {
      g_prefix_error(error, "clamp \"%s\": ", text);
      return FALSE;
    }
  }
  return TRUE;
}
