/* Measuring a model version for memorisation editing, and the recommended keep-mass
 * (memorisation.h). */
#include "editors/memorisation.h"
#include "app/core/errors.h"
#include "app/engine/perplexity.h"
#include <math.h>
#include <string.h>

gboolean lmwb_memo_measure(LmwbModel *m, const LmwbMemoOptions *o, LmwbMemoResult *out, LmwbReporter *rep,
                           GError **error) {
  memset(out, 0, sizeof *out);
  out->perplexity = NAN;
  LmwbRunner *r = lmwb_runner_new(m);
  gboolean ok = lmwb_recitation_eval(r, o->set, o->max_items, &out->rec, rep, error);
  if (ok && o->heldout_text) {
    LmwbPerplexityOptions po = {.stride = o->heldout_stride};
    LmwbPerplexityResult pr = {0};
    ok = lmwb_perplexity_text(r, o->heldout_text, &po, &pr, rep, error);
    out->perplexity = pr.perplexity;
    out->ppl_tokens = pr.n_tokens;
    g_free(pr.line_perplexity);
  }
  lmwb_runner_free(r);
  if (ok && o->world_manifest) {
    LmwbWorldEvalOptions wo = {.max_items = o->max_items};
    ok = lmwb_world_eval_file(m, o->world_manifest, &wo, rep, &out->world, error);
    out->has_world = ok;
  }
  if (!ok) lmwb_memo_result_clear(out);
  return ok;
}

void lmwb_memo_result_clear(LmwbMemoResult *r) {
  lmwb_recitation_result_clear(&r->rec);
  if (r->has_world) lmwb_world_eval_result_clear(&r->world);
  r->has_world = false;
}

static void num(JsonBuilder *b, const char *k, double v) {
  json_builder_set_member_name(b, k);
  if (isfinite(v)) json_builder_add_double_value(b, v);
  else json_builder_add_null_value(b);
}

void lmwb_memo_result_to_json(const LmwbMemoResult *r, JsonBuilder *b) {
  json_builder_set_member_name(b, "n_items");
  json_builder_add_int_value(b, r->rec.n);
  num(b, "strict", r->rec.strict);
  num(b, "loose", r->rec.loose);
  num(b, "mean_distance", r->rec.mean_distance);
  num(b, "perplexity", r->perplexity);
  if (r->has_world) {
    json_builder_set_member_name(b, "world");
    json_builder_add_value(b, lmwb_world_eval_to_json(&r->world));
  }
}

int lmwb_memo_recommend(const LmwbMemoResult *base, const LmwbMemoResult *e, const double *values, int n) {
  int best = -1;
  for (int i = 0; i < n; i++) {
    if (isfinite(base->perplexity) && !(e[i].perplexity <= base->perplexity * (1 + LMWB_MEMO_MAX_PPL_RISE))) continue;
    if (base->has_world && e[i].has_world &&
        !(e[i].world.fact_top1 >= base->world.fact_top1 * LMWB_MEMO_MIN_FACT_RETAINED))
      continue;
    if (best < 0 || e[i].rec.strict < e[best].rec.strict ||
        (e[i].rec.strict == e[best].rec.strict && values[i] > values[best]))
      best = i;
  }
  return best;
}
