/* Sequential editing with the collapse alarm. Contract: edit_sequence.h. */
#include "editors/edit_sequence.h"
#include "app/core/errors.h"
#include "app/engine/perplexity.h"
#include <math.h>

gboolean lmwb_edit_monitor_ppl(LmwbModel *m, const char *const *monitor, size_t n, double *ppl, GError **error) {
  LmwbRunner *r = lmwb_runner_new(m);
  LmwbPerplexityOptions po = {.per_line = true};
  LmwbPerplexityResult res = {0};
  gboolean ok = lmwb_perplexity_lines(r, monitor, n, &po, &res, NULL, error);
  lmwb_runner_free(r);
  if (ok) *ppl = res.mean_line_perplexity;
  g_free(res.line_perplexity);
  return ok;
}

void lmwb_edit_sequence_free(LmwbEditSequence *s) {
  if (!s) return;
  for (int i = 0; i < s->n_steps; i++) lmwb_model_unref(s->versions[i]);
  g_free(s->versions);
  g_free(s->steps);
  g_free(s->failure);
  g_free(s);
}

static void push(LmwbEditSequence *s, const LmwbEditStep *st, LmwbModel *version) {
  s->steps = g_renew(LmwbEditStep, s->steps, s->n_steps + 1);
  s->versions = g_renew(LmwbModel *, s->versions, s->n_steps + 1);
  s->steps[s->n_steps] = *st;
  s->versions[s->n_steps] = lmwb_model_ref(version);
  s->n_steps++;
}

/* One edit of the current version: a new version, or NULL with an error. */
static LmwbModel *edit_one(LmwbModel *cur, const LmwbEditRequest *req, const LmwbEditSequenceOptions *o,
                           char **templates, GError **error) {
  LmwbRomeOptions ro = o->rome;
  ro.templates = templates;
  if (o->method == LMWB_EDIT_ROME)
    return lmwb_rome_edit(cur, req, o->layers[0], o->stats ? o->stats[0] : NULL, &ro, NULL, NULL, error);
  LmwbEditRequests one = {.items = (LmwbEditRequest *)req, .n = 1};
  return lmwb_memit_edit(cur, &one, o->layers, o->n_layers, o->stats, &ro, NULL, NULL, error);
}

LmwbEditSequence *lmwb_edit_sequence_run(LmwbModel *m, const LmwbEditRequests *reqs, const LmwbEditSequenceOptions *o,
                                         LmwbEditStepFn fn, void *user, LmwbReporter *rep, GError **error) {
  if (!o || !reqs || reqs->n < 1 || o->n_layers < 1 || !o->layers || !o->monitor || o->n_monitor == 0) {
    lmwb_input_error(error, "an edit sequence needs requests, a layer and a monitor set");
    return NULL;
  }
  if (!(o->alarm_factor >= 0) || !isfinite(o->alarm_factor)) {
    lmwb_input_error(error, "the alarm factor %g is not a positive number", o->alarm_factor);
    return NULL;
  }
  for (int i = 0; i < reqs->n; i++)
    if (!lmwb_edit_request_check(m, &reqs->items[i], i, error)) return NULL;
  double factor = o->alarm_factor > 0 ? o->alarm_factor : LMWB_EDIT_ALARM_FACTOR;
  LmwbEditStep s0 = {.edit = 0, .efficacy = NAN, .p_new = NAN};
  gint64 t0 = g_get_monotonic_time();
  if (!lmwb_edit_monitor_ppl(m, o->monitor, o->n_monitor, &s0.ppl, error)) return NULL;
  if (!isfinite(s0.ppl)) {
    lmwb_input_error(error, "the unedited model's monitor perplexity is not finite");
    return NULL;
  }
  s0.seconds = (g_get_monotonic_time() - t0) / 1e6;
  g_auto(GStrv) templates = o->rome.templates ? g_strdupv(o->rome.templates)
                                              : lmwb_edit_context_templates(m, o->rome.n_short, o->rome.n_long,
                                                                            o->rome.seed, error);
  if (!templates) return NULL;
  LmwbEditSequence *s = g_new0(LmwbEditSequence, 1);
  push(s, &s0, m);
  lmwb_report_metric(rep, "ppl", 0, s0.ppl);
  if (fn) fn(&s0, user);
  LmwbModel *cur = m;
  for (int i = 0; i < reqs->n; i++) {
    lmwb_report_progress(rep, (double)i / reqs->n, "editing");
    if (lmwb_reporter_cancelled(rep, error)) {
      lmwb_edit_sequence_free(s);
      return NULL;
    }
    const LmwbEditRequest *req = &reqs->items[i];
    t0 = g_get_monotonic_time();
    GError *e = NULL;
    LmwbModel *next = edit_one(cur, req, o, templates, &e);
    LmwbEditStep st = {.edit = i + 1, .subject = req->subject, .ppl = NAN, .efficacy = NAN, .p_new = NAN};
    LmwbEditScores sc;
    if (next && (!lmwb_edit_monitor_ppl(next, o->monitor, o->n_monitor, &st.ppl, &e) ||
                 !lmwb_edit_score(next, NULL, req, &sc, &e)))
      g_clear_pointer(&next, lmwb_model_unref);
    if (!next) {
      s->failure = g_strdup_printf("edit %d (%s): %s", i + 1, req->subject, e->message);
      g_error_free(e);
      break;
    }
    st.efficacy = sc.efficacy;
    st.p_new = sc.p_new;
    st.alarm = !isfinite(st.ppl) || st.ppl > factor * s0.ppl;
    st.rolled_back = st.alarm && o->on_alarm == LMWB_ALARM_ROLLBACK;
    st.seconds = (g_get_monotonic_time() - t0) / 1e6;
    if (!st.rolled_back) cur = next;
    push(s, &st, cur);
    lmwb_model_unref(next);
    lmwb_report_metric(rep, "ppl", st.edit, st.ppl);
    lmwb_report_metric(rep, "efficacy", st.edit, st.efficacy);
    if (fn) fn(&st, user);
    if (st.alarm && o->on_alarm == LMWB_ALARM_STOP) {
      s->stopped = true;
      break;
    }
  }
  lmwb_report_progress(rep, 1.0, "editing");
  return s;
}
