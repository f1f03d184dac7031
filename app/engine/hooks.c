/* Hook lists: validation when a hook is added, and applying hooks to a block (hooks.h). */
#include "app/engine/hooks.h"
#include "app/core/errors.h"
#include <math.h>
#include <string.h>

typedef struct {
  int id;
  LmwbHook h; /* positions and indices point to copies owned here */
} Entry;

struct LmwbHookList {
  GArray *e; /* Entry, in the order added */
  int next_id;
};

LmwbHookList *lmwb_hook_list_new(void) {
  LmwbHookList *l = g_new0(LmwbHookList, 1);
  l->e = g_array_new(FALSE, TRUE, sizeof(Entry));
  l->next_id = 1;
  return l;
}

static void entry_clear(Entry *e) {
  g_free((void *)e->h.positions);
  g_free((void *)e->h.indices);
}

void lmwb_hook_list_clear(LmwbHookList *l) {
  for (guint i = 0; i < l->e->len; i++) entry_clear(&g_array_index(l->e, Entry, i));
  g_array_set_size(l->e, 0);
}

void lmwb_hook_list_free(LmwbHookList *l) {
  if (!l) return;
  lmwb_hook_list_clear(l);
  g_array_free(l->e, TRUE);
  g_free(l);
}

int lmwb_hook_list_count(const LmwbHookList *l) { return (int)l->e->len; }

static const char *op_name(LmwbHookOp op) {
  static const char *const names[] = {"set", "add", "scale", "patch", "call", "observe"};
  return (unsigned)op < G_N_ELEMENTS(names) ? names[op] : "unknown";
}

int lmwb_hook_list_add(LmwbHookList *l, const LmwbConfig *cfg, const LmwbHook *h, GError **error) {
  const LmwbSiteInfo *si = lmwb_site_info(h->site.kind);
  gboolean layer_ok = si && (si->model_level ? h->site.layer == -1 : h->site.layer >= 0 && h->site.layer < cfg->n_layer);
  if (!si || !layer_ok || !lmwb_site_exists(cfg, h->site.kind)) {
    lmwb_input_error(error, "hook: site (kind %d, layer %d) does not exist in this %s model", (int)h->site.kind,
                     h->site.layer, cfg->model_type);
    return 0;
  }
  g_autofree char *name = lmwb_site_name(h->site);
  if ((unsigned)h->op > LMWB_HOOK_OBSERVE) {
    lmwb_input_error(error, "hook at %s: unknown operation %d", name, (int)h->op);
    return 0;
  }
  if ((h->op == LMWB_HOOK_CALL || h->op == LMWB_HOOK_OBSERVE) && !h->fn && !h->bwd_fn) {
    lmwb_input_error(error, "hook at %s: a %s hook needs a function", name, op_name(h->op));
    return 0;
  }
  if (h->op == LMWB_HOOK_PATCH && (!h->source || !isfinite(h->alpha))) {
    lmwb_input_error(error, "hook at %s: a patch needs a source block and a finite alpha", name);
    return 0;
  }
  if ((h->mask || h->source) && (h->run_B < 1 || h->run_T < 1)) {
    lmwb_input_error(error, "hook at %s: a mask or a source needs the run shape it was made for (run_B, run_T)", name);
    return 0;
  }
  if (h->n_positions < 0 || (h->n_positions > 0 && !h->positions) || h->n_indices < 0 ||
      (h->n_indices > 0 && !h->indices)) {
    lmwb_input_error(error, "hook at %s: position or index count without a list", name);
    return 0;
  }
  for (int i = 0; i < h->n_positions; i++)
    if (h->positions[i] < 0 || h->positions[i] >= cfg->n_ctx) {
      lmwb_input_error(error, "hook at %s: position %d is not in 0..%d", name, h->positions[i], cfg->n_ctx - 1);
      return 0;
    }
  /* The pattern's row width depends on the run (Tk keys): its indices are checked when applied. */
  int R = si->shape == LMWB_SHAPE_PATTERN ? cfg->n_ctx : lmwb_site_row_size(cfg, h->site.kind, 0);
  for (int i = 0; i < h->n_indices; i++)
    if (h->indices[i] < 0 || h->indices[i] >= R) {
      lmwb_input_error(error, "hook at %s: index %d is not in 0..%d", name, h->indices[i], R - 1);
      return 0;
    }
  if (h->values)
    for (int i = 0; i < (h->indices ? h->n_indices : 0); i++)
      if (!isfinite(h->values[i])) {
        lmwb_input_error(error, "hook at %s: value %d is not finite", name, i);
        return 0;
      }
  if (!h->values && (h->op <= LMWB_HOOK_SCALE) && !isfinite(h->value)) {
    lmwb_input_error(error, "hook at %s: the value is not finite", name);
    return 0;
  }
  Entry e = {.id = l->next_id++, .h = *h};
  e.h.positions = h->positions ? g_memdup2(h->positions, sizeof(int) * (size_t)h->n_positions) : NULL;
  e.h.indices = h->indices ? g_memdup2(h->indices, sizeof(int) * (size_t)h->n_indices) : NULL;
  g_array_append_val(l->e, e);
  return e.id;
}

gboolean lmwb_hook_list_remove(LmwbHookList *l, int id) {
  for (guint i = 0; i < l->e->len; i++) {
    Entry *e = &g_array_index(l->e, Entry, i);
    if (e->id == id) {
      entry_clear(e);
      g_array_remove_index(l->e, i);
      return TRUE;
    }
  }
  return FALSE;
}

unsigned lmwb_hook_list_run_sites(const LmwbHookList *l) {
  unsigned f = 0;
  for (guint i = 0; i < l->e->len; i++) f |= lmwb_site_info(g_array_index(l->e, Entry, i).h.site.kind)->run_flag;
  return f;
}

gboolean lmwb_hook_list_check_run(const LmwbHookList *l, const LmwbConfig *cfg, int B, int T, GError **error) {
  for (guint i = 0; i < l->e->len; i++) {
    const LmwbHook *h = &g_array_index(l->e, Entry, i).h;
    if ((h->mask || h->source) && (h->run_B != B || h->run_T != T)) {
      g_autofree char *name = lmwb_site_name(h->site);
      lmwb_input_error(error, "hook at %s: its %s is for %d x %d positions but the run has %d x %d", name,
                       h->source ? "source" : "mask", h->run_B, h->run_T, B, T);
      return FALSE;
    }
  }
  return TRUE;
}

static gboolean site_eq(LmwbSite a, LmwbSite b) { return a.kind == b.kind && a.layer == b.layer; }

bool lmwb_hook_list_at(const LmwbHookList *l, LmwbSite s, bool *observe_only) {
  bool any = false, obs = true;
  for (guint i = 0; i < l->e->len; i++) {
    const LmwbHook *h = &g_array_index(l->e, Entry, i).h;
    if (!site_eq(h->site, s)) continue;
    any = true;
    obs = obs && h->op == LMWB_HOOK_OBSERVE;
  }
  if (observe_only) *observe_only = any && obs;
  return any;
}

static gboolean position_selected(const LmwbHook *h, int pos) {
  if (!h->positions) return TRUE;
  for (int i = 0; i < h->n_positions; i++)
    if (h->positions[i] == pos) return TRUE;
  return FALSE;
}

/* One elementwise hook (SET/ADD/SCALE/PATCH) on the selected rows and indices. */
static void apply_elementwise(const LmwbHook *h, float *block, const LmwbHookCtx *c) {
  for (int b = 0; b < c->B; b++) {
    for (int rr = 0; rr < c->rows_per_seq; rr++) {
      int t = rr % c->T;
      if (!position_selected(h, c->past + t)) continue;
      if (h->mask && !h->mask[(size_t)b * c->T + t]) continue;
      size_t row_at = ((size_t)b * c->rows_per_seq + rr) * (size_t)c->R;
      float *row = block + row_at;
      const float *src = h->source ? h->source + row_at : NULL;
      int cnt = h->indices ? h->n_indices : c->R;
      for (int i = 0; i < cnt; i++) {
        int j = h->indices ? h->indices[i] : i;
        if (j < 0 || j >= c->R) continue;
        float v = h->values ? h->values[i] : h->value;
        switch (h->op) {
          case LMWB_HOOK_SET: row[j] = c->backward ? 0.0f : v; break;
          case LMWB_HOOK_ADD: if (!c->backward) row[j] += v; break;
          case LMWB_HOOK_SCALE: row[j] *= v; break;
          case LMWB_HOOK_PATCH:
            row[j] = c->backward ? row[j] * (1.0f - h->alpha) : row[j] + h->alpha * (src[j] - row[j]);
            break;
          default: break;
        }
      }
    }
  }
}

void lmwb_hook_list_apply(const LmwbHookList *l, float *block, const LmwbHookCtx *ctx) {
  guint n = l->e->len;
  for (guint k = 0; k < n; k++) {
    const LmwbHook *h = &g_array_index(l->e, Entry, ctx->backward ? n - 1 - k : k).h;
    if (!site_eq(h->site, ctx->site)) continue;
    if (h->op == LMWB_HOOK_CALL || h->op == LMWB_HOOK_OBSERVE) {
      LmwbHookFn fn = ctx->backward ? h->bwd_fn : h->fn;
      if (fn) fn(block, ctx, h->user);
    } else if (!(ctx->backward && h->op == LMWB_HOOK_ADD)) {
      apply_elementwise(h, block, ctx);
    }
  }
}
