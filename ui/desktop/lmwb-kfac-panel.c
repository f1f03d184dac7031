/* The K-FAC memorisation page of the Editing view (lmwb-kfac-panel.h). Three kinds of job, each
 * with its own reference on the model and on the factors (shared read-only, refcounted):
 *   factors   collect over a text (lmwb_kfac_collect, saved into the folder when one is given)
 *             or load a folder (lmwb_kfac_load, checked against the model; collected factors are
 *             read back from the folder they were saved in), then decompose every
 *             factor once (the cache every later edit reads) and compute the mass curves;
 *   evaluate  the edit at ρ as a new version of the model (lmwb_kfac_edit: a weight overlay, the
 *             loaded model untouched) measured by lmwb_memo_measure on the sample (the first N
 *             items of the model's memorised set: world.json's secrets or memorised.jsonl; the
 *             held-out text, windows advancing by the stride; N items of each world task), and the unedited
 *             model once per sample: the same figures as `lmwb-batch kfac sweep` and `memorisation
 *             eval` with --max-items N --heldout TEXT --heldout-stride S;
 *   save      the same edit written with lmwb_model_save in the source's dtype (`kfac edit`).
 * Moving ρ waits EVAL_DEBOUNCE_MS for it to rest, then cancels a running evaluation and starts
 * the newest when that one has stopped. */
#include "ui/desktop/lmwb-kfac-panel.h"
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/formats/tokenizer.h"
#include "app/train/corpus.h"
#include "editors/kfac.h"
#include "editors/kfac_sweep.h"
#include "editors/memorisation.h"
#include "ui/desktop/lmwb-app.h"
#include "ui/desktop/lmwb-job.h"
#include "ui/desktop/lmwb-view.h"
#include <math.h>
#include <string.h>

#define EVAL_DEBOUNCE_MS 250
#define CURVE_POINTS 64
#define DEFAULT_ITEMS 8

/* ---- factors shared by the panel and its jobs (read-only once made) -------------------------- */

typedef struct {
  LmwbKfacFactors *f;
  LmwbKfacEigen *eig; /* [f->n], every one decomposed */
  double *fc, *fm;    /* [f->n][CURVE_POINTS] mass curves */
  int *layers, n_layers;
  unsigned mask;
  char *origin;       /* where they came from, as shown */
} Factors;

static void factors_clear(gpointer p) {
  Factors *x = p;
  for (int i = 0; x->f && x->eig && i < x->f->n; i++) lmwb_kfac_eigen_clear(&x->eig[i]);
  g_free(x->eig), g_free(x->fc), g_free(x->fm), g_free(x->layers), g_free(x->origin);
  if (x->f) lmwb_kfac_factors_free(x->f);
}

static Factors *factors_ref(Factors *x) { return x ? g_atomic_rc_box_acquire(x) : NULL; }
static void factors_unref(Factors *x) {
  if (x) g_atomic_rc_box_release_full(x, factors_clear);
}

struct _LmwbKfacPanel {
  GtkBox parent;
  GtkEntry *text_entry, *layers_entry, *folder_entry, *heldout_entry;
  GtkSpinButton *tokens_spin, *context_spin, *items_spin, *stride_spin;
  GtkCheckButton *up_check, *gate_check, *down_check;
  GtkScale *rho_scale;
  GtkAdjustment *rho_adj;
  GtkLabel *factors_label, *rho_label, *metrics_label, *secret_label, *status_label, *recommend_label;
  GtkDropDown *secret_drop;
  GtkStringList *secret_list;
  LmwbPlotView *a_plot, *g_plot, *mass_plot;

  LmwbModel *model;
  LmwbRecitationSet *secrets; /* the model's memorised set, for the picker (NULL without one) */
  guint serial;               /* bumped by a new model or new factors: older results are dropped */
  Factors *factors;
  LmwbJob *factors_job, *eval_job, *save_job, *recommend_job;
  guint debounce_id;
  gboolean eval_pending;      /* an evaluation waits for the cancelled one to stop */
  int evaluations, cancelled;
  /* the unedited sample and the last edit measured */
  LmwbMemoResult *base;
  char *base_key;             /* the sample it was measured on */
  LmwbMemoResult *edited;
  double edited_rho, eval_seconds;
  LmwbKfacEditStats *stats;
  int n_stats;
  char *saved;
  double recommended; /* the last Recommend's ρ (NaN: none met the goals or not run), of n_tried */
  int n_tried;
};

G_DEFINE_FINAL_TYPE(LmwbKfacPanel, lmwb_kfac_panel, GTK_TYPE_BOX)

static const char *text_of(GtkEntry *e) { return gtk_editable_get_text(GTK_EDITABLE(e)); }
static void set_text(GtkEntry *e, const char *t) { gtk_editable_set_text(GTK_EDITABLE(e), t ? t : ""); }

static LmwbView *view_of(LmwbKfacPanel *p) {
  GtkWidget *a = gtk_widget_get_ancestor(GTK_WIDGET(p), LMWB_TYPE_VIEW);
  return a ? LMWB_VIEW(a) : NULL;
}

static void banner(LmwbKfacPanel *p, const char *msg) {
  LmwbView *v = view_of(p);
  if (v) lmwb_view_show_error(v, msg);
}

static void job_banner(LmwbKfacPanel *p, const GError *error) {
  LmwbView *v = view_of(p);
  if (v) lmwb_view_show_job_error(v, error);
}

static void busy_changed(LmwbKfacPanel *p) {
  LmwbView *v = view_of(p);
  if (v) lmwb_view_busy_changed(v);
}

static void memo_free(LmwbMemoResult *r) {
  if (!r) return;
  lmwb_memo_result_clear(r);
  g_free(r);
}

static char *world_path(LmwbModel *m) {
  return m && m->dir ? g_build_filename(m->dir, LMWB_CORPUS_MANIFEST_FILE, NULL) : NULL;
}

static char *stripped(GtkEntry *e) { return g_strstrip(g_strdup(text_of(e))); }

/* ---- the factors job (worker) ----------------------------------------------------------------- */

typedef struct {
  guint serial;
  LmwbModel *model;
  Factors *factors;   /* evaluate, save */
  char *text, *folder;
  int64_t tokens;
  int context;
  int *layers, n_layers;
  unsigned mask;
  gboolean load;
  double rho;
  int items, stride;
  char *heldout, *world, *out, *dtype;
  gboolean need_base;
  char *base_key;
} JobIn;

static void job_in_free(gpointer data) {
  JobIn *in = data;
  lmwb_model_unref(in->model);
  factors_unref(in->factors);
  g_free(in->text), g_free(in->folder), g_free(in->layers), g_free(in->heldout), g_free(in->world);
  g_free(in->out), g_free(in->dtype), g_free(in->base_key);
  g_free(in);
}

/* Decompositions, curves and the lists of layers and matrices of loaded or collected factors. */
static Factors *factors_finish(LmwbKfacFactors *f, char *origin, LmwbReporter *rep, GError **error) {
  Factors *x = g_atomic_rc_box_new0(Factors);
  x->f = f;
  x->origin = origin;
  x->eig = g_new0(LmwbKfacEigen, MAX(f->n, 1));
  x->fc = g_new0(double, (size_t)MAX(f->n, 1) * CURVE_POINTS);
  x->fm = g_new0(double, (size_t)MAX(f->n, 1) * CURVE_POINTS);
  x->layers = g_new0(int, MAX(f->n, 1));
  for (int i = 0; i < f->n; i++) {
    if (lmwb_reporter_cancelled(rep, error) || !lmwb_kfac_eigen(&f->f[i], &x->eig[i], error)) {
      factors_unref(x);
      return NULL;
    }
    lmwb_report_progress(rep, 0.9 + 0.1 * (i + 1) / f->n, "decomposing the factors");
    lmwb_kfac_mass_curve(&x->eig[i], CURVE_POINTS, x->fc + (size_t)i * CURVE_POINTS, x->fm + (size_t)i * CURVE_POINTS);
    if (!x->n_layers || x->layers[x->n_layers - 1] != f->f[i].layer) x->layers[x->n_layers++] = f->f[i].layer;
    x->mask |= 1u << f->f[i].matrix;
  }
  return x;
}

/* "DIR" or a mixture "DIR:SHARE; DIR:SHARE; ..." (the shares as `kfac merge --weights`; a folder
 * without one counts by its positions only when none has one). Input error naming the part. */
static gboolean parse_mixture(const char *spec, GPtrArray *dirs, GArray *shares, GError **error) {
  g_auto(GStrv) parts = g_strsplit(spec, ";", -1);
  int with = 0;
  for (int i = 0; parts[i]; i++) {
    char *d = g_strstrip(parts[i]), *colon = strrchr(d, ':'), *end = NULL;
    if (!*d) continue;
    double w = colon ? g_ascii_strtod(colon + 1, &end) : NAN;
    if (colon && end && end != colon + 1 && !*end) {
      if (!(isfinite(w) && w > 0)) {
        lmwb_input_error(error, "%s: the share %s must be a number above 0", d, colon + 1);
        return FALSE;
      }
      *colon = '\0';
      g_strstrip(d);
      with++;
    } else {
      w = NAN;
    }
    g_ptr_array_add(dirs, g_strdup(d));
    g_array_append_val(shares, w);
  }
  if (with && with != (int)dirs->len) {
    lmwb_input_error(error, "%s: give every folder of a mixture a share (DIR:0.6; DIR:0.4) or none", spec);
    return FALSE;
  }
  if (!with) g_array_set_size(shares, 0);
  return TRUE;
}

/* The factors of one folder, or the mixture of several (lmwb_kfac_load_merged), checked against the model. */
static LmwbKfacFactors *load_factors(const char *spec, const LmwbModel *model, GError **error) {
  g_autoptr(GPtrArray) dirs = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GArray) shares = g_array_new(FALSE, FALSE, sizeof(double));
  if (!parse_mixture(spec, dirs, shares, error)) return NULL;
  return lmwb_kfac_load_merged((const char *const *)dirs->pdata, (int)dirs->len,
                               shares->len ? (double *)shares->data : NULL, model, error);
}

static gpointer run_factors(gpointer data, LmwbReporter *rep, GError **error) {
  JobIn *in = data;
  if (in->load) {
    lmwb_report_progress(rep, 0.05, "loading the factors");
    LmwbKfacFactors *f = load_factors(in->folder, in->model, error);
    if (!f) return NULL;
    if (f->n == 0) {
      lmwb_kfac_factors_free(f);
      lmwb_input_error(error, "%s holds no factors", in->folder);
      return NULL;
    }
    return factors_finish(f, g_strdup(in->folder), rep, error);
  }
  size_t len = 0;
  g_autofree char *text = lmwb_file_read(in->text, LMWB_TEXT_MAX_BYTES, LMWB_READ_REGULAR, &len, error);
  if (!text) return NULL;
  if (!g_utf8_validate(text, (gssize)len, NULL)) {
    lmwb_input_error(error, "%s is not UTF-8 text", in->text);
    return NULL;
  }
  size_t n = 0;
  lmwb_report_progress(rep, 0.01, "tokenizing the text");
  g_autofree int32_t *ids = lmwb_tokenizer_encode(in->model->tokenizer, text, len, FALSE, &n, error);
  if (!ids) {
    g_prefix_error(error, "%s: ", in->text);
    return NULL;
  }
  if (n < (size_t)in->context) {
    lmwb_input_error(error, "%s: %zu tokens, fewer than one window of %d", in->text, n, in->context);
    return NULL;
  }
  if (in->folder) {
    g_autofree char *ckpt = g_build_filename(in->folder, LMWB_KFAC_CHECKPOINT_FILE, NULL);
    g_autofree char *st = g_build_filename(in->folder, LMWB_KFAC_FACTORS_FILE, NULL);
    g_autofree char *meta = g_build_filename(in->folder, LMWB_KFAC_META_FILE, NULL);
    if (!lmwb_input_guard_check_output(st, error) || !lmwb_input_guard_check_output(meta, error)) return NULL;
    if (g_file_test(ckpt, G_FILE_TEST_EXISTS)) {
      lmwb_input_error(error, "%s holds a checkpoint of an unfinished run of lmwb-batch kfac collect: choose another "
                       "folder", in->folder);
      return NULL;
    }
  }
  LmwbKfacCollectOptions o;
  lmwb_kfac_collect_options_init(&o);
  o.layers = in->layers, o.n_layers = in->n_layers, o.matrices = in->mask;
  o.tokens = in->tokens, o.context = in->context, o.labels = LMWB_KFAC_LABELS_SAMPLE, o.seed = 1;
  LmwbKfacFactors *f = lmwb_kfac_collect(in->model, ids, n, &o, rep, error);
  if (!f) return NULL;
  if (in->folder) {
    if (g_mkdir_with_parents(in->folder, 0755) != 0) {
      lmwb_input_error(error, "%s: cannot create the folder", in->folder);
      lmwb_kfac_factors_free(f);
      return NULL;
    }
    gboolean ok = lmwb_kfac_save(f, in->folder, error);
    lmwb_kfac_factors_free(f);
    /* From now on the folder's factors (F32), as lmwb-batch kfac edit and sweep will read them. */
    if (!ok || !(f = lmwb_kfac_load(in->folder, in->model, error))) return NULL;
  }
  g_autofree char *base = g_path_get_basename(in->text);
  return factors_finish(f, in->folder ? g_strdup(in->folder) : g_strdup_printf("collected over %s (not saved)", base),
                        rep, error);
}

/* ---- the evaluation job (worker) -------------------------------------------------------------- */

typedef struct {
  double rho;
  LmwbMemoResult *base; /* when the job measured it */
  LmwbMemoResult *edited;
  LmwbKfacEditStats *stats;
  int n_stats;
  double seconds; /* the edit and its measurement (and the unedited one's, when made) */
} EvalOut;

static void eval_out_free(gpointer p) {
  EvalOut *o = p;
  if (!o) return;
  memo_free(o->base), memo_free(o->edited);
  g_free(o->stats);
  g_free(o);
}

/* The sample of a job: the model's memorised set and the held-out text (mo borrows both). */
static gboolean load_sample(const JobIn *in, LmwbRecitationSet **set, char **heldout, LmwbMemoOptions *mo,
                            GError **error) {
  if (!(*set = lmwb_recitation_set_load_for_model(in->model->dir, error))) return FALSE;
  if (in->heldout) {
    size_t len = 0;
    *heldout = lmwb_file_read(in->heldout, LMWB_TEXT_MAX_BYTES, LMWB_READ_REGULAR, &len, error);
    if (!*heldout || !g_utf8_validate(*heldout, (gssize)len, NULL)) {
      if (*heldout) lmwb_input_error(error, "%s is not UTF-8 text", in->heldout);
      g_clear_pointer(heldout, g_free);
      g_clear_pointer(set, lmwb_recitation_set_free);
      return FALSE;
    }
  }
  *mo = (LmwbMemoOptions){.set = *set, .heldout_text = *heldout, .heldout_stride = in->stride,
                          .world_manifest = in->world, .max_items = in->items};
  return TRUE;
}

static gpointer run_eval(gpointer data, LmwbReporter *rep, GError **error) {
  JobIn *in = data;
  LmwbRecitationSet *set = NULL;
  g_autofree char *heldout = NULL;
  LmwbMemoOptions mo;
  if (!load_sample(in, &set, &heldout, &mo, error)) return NULL;
  EvalOut *o = g_new0(EvalOut, 1);
  o->rho = in->rho;
  gint64 t0 = g_get_monotonic_time();
  gboolean ok = TRUE;
  if (in->need_base) {
    lmwb_report_progress(rep, 0.05, "measuring the unedited model");
    o->base = g_new0(LmwbMemoResult, 1);
    ok = lmwb_memo_measure(in->model, &mo, o->base, rep, error);
    if (!ok) g_clear_pointer(&o->base, g_free);
  }
  LmwbModel *ed = NULL;
  if (ok && !lmwb_reporter_cancelled(rep, error)) {
    lmwb_report_progress(rep, 0.5, "editing");
    LmwbKfacFactors *f = in->factors->f;
    ed = lmwb_kfac_edit(in->model, f, in->factors->layers, in->factors->n_layers, in->factors->mask, in->rho,
                        &in->factors->eig, &o->stats, &o->n_stats, error);
    ok = ed != NULL;
  } else {
    ok = FALSE;
  }
  if (ok) {
    lmwb_report_progress(rep, 0.6, "measuring the edited model");
    o->edited = g_new0(LmwbMemoResult, 1);
    ok = lmwb_memo_measure(ed, &mo, o->edited, rep, error);
    if (!ok) g_clear_pointer(&o->edited, g_free);
  }
  if (ed) lmwb_model_unref(ed);
  lmwb_recitation_set_free(set);
  if (!ok) {
    eval_out_free(o);
    return NULL;
  }
  o->seconds = (g_get_monotonic_time() - t0) / 1e6;
  return o;
}

/* ---- the recommend job (worker): kfac sweep's values, and its recommended ρ ------------------ */

typedef struct {
  char *summary; /* what the sweep found, for the page */
  int n_tried;
  EvalOut *best; /* the unedited and recommended figures, as an evaluation would give them; NULL: none */
} RecommendOut;

static void recommend_out_free(gpointer data) {
  RecommendOut *r = data;
  if (!r) return;
  g_free(r->summary);
  eval_out_free(r->best);
  g_free(r);
}

static char *recommend_summary(const LmwbKfacSweep *sw) {
  if (sw->recommended < 0)
    return g_strdup_printf("Recommend: none of the %d values of ρ tried keeps perplexity within +%.0f%% and fact "
                           "recall at %.0f%%; ρ left as it was.", sw->n, 100 * LMWB_MEMO_MAX_PPL_RISE,
                           100 * LMWB_MEMO_MIN_FACT_RETAINED);
  const LmwbMemoResult *b = &sw->base, *e = &sw->res[sw->recommended];
  GString *t = g_string_new(NULL);
  g_string_append_printf(t, "Recommended ρ = %.3g (of %d tried: the lowest strict recitation with perplexity within +%.0f%%"
                            "%s): strict %.1f%% → %.1f%%, perplexity %+.1f%%", sw->rho[sw->recommended], sw->n,
                         100 * LMWB_MEMO_MAX_PPL_RISE, b->has_world ? " and fact recall at 80%" : "",
                         100 * b->rec.strict, 100 * e->rec.strict,
                         isfinite(b->perplexity) && b->perplexity > 0 ? 100 * (e->perplexity / b->perplexity - 1) : NAN);
  if (b->has_world && e->has_world)
    g_string_append_printf(t, ", facts %.1f%% → %.1f%%", 100 * b->world.fact_top1, 100 * e->world.fact_top1);
  return g_string_free(t, FALSE);
}

static gpointer run_recommend(gpointer data, LmwbReporter *rep, GError **error) {
  JobIn *in = data;
  LmwbRecitationSet *set = NULL;
  g_autofree char *heldout = NULL;
  g_autofree double *rho = NULL;
  int n = 0;
  LmwbMemoOptions mo;
  if (!lmwb_kfac_sweep_parse(LMWB_KFAC_SWEEP_DEFAULT, &rho, &n, error)) return NULL;
  if (!load_sample(in, &set, &heldout, &mo, error)) return NULL;
  LmwbKfacSweep sw;
  gboolean ok = lmwb_kfac_sweep_run(in->model, in->factors->f, in->factors->layers, in->factors->n_layers,
                                    in->factors->mask, rho, n, &in->factors->eig, &mo, &sw, rep, error);
  lmwb_recitation_set_free(set);
  if (!ok) return NULL;
  RecommendOut *r = g_new0(RecommendOut, 1);
  r->summary = recommend_summary(&sw);
  r->n_tried = n;
  int i = sw.recommended;
  if (i >= 0) { /* the figures move to the page: the slider's measurement of this ρ is not made again */
    EvalOut *o = r->best = g_new0(EvalOut, 1);
    o->rho = rho[i];
    o->base = g_memdup2(&sw.base, sizeof sw.base);
    o->edited = g_memdup2(&sw.res[i], sizeof sw.res[i]);
    memset(&sw.base, 0, sizeof sw.base);
    memset(&sw.res[i], 0, sizeof sw.res[i]);
    o->stats = g_steal_pointer(&sw.stats[i]);
    o->n_stats = sw.n_stats[i];
    o->seconds = sw.seconds[i];
  }
  lmwb_kfac_sweep_clear(&sw);
  return r;
}

/* ---- the save job (worker) -------------------------------------------------------------------- */

static gpointer run_save(gpointer data, LmwbReporter *rep, GError **error) {
  JobIn *in = data;
  if (in->model->dir) {
    g_autofree char *a = g_canonicalize_filename(in->model->dir, NULL), *b = g_canonicalize_filename(in->out, NULL);
    if (!strcmp(a, b)) {
      lmwb_input_error(error, "%s is the loaded model's folder: save the edited model into another", in->out);
      return NULL;
    }
  }
  lmwb_report_progress(rep, 0.1, "editing");
  LmwbModel *ed = lmwb_kfac_edit(in->model, in->factors->f, in->factors->layers, in->factors->n_layers,
                                 in->factors->mask, in->rho, &in->factors->eig, NULL, NULL, error);
  if (!ed) return NULL;
  lmwb_report_progress(rep, 0.5, "saving");
  gboolean ok = lmwb_model_save(ed, in->out, in->dtype, NULL, error);
  lmwb_model_unref(ed);
  return ok ? g_strdup(in->out) : NULL;
}

/* ---- showing (main loop) ---------------------------------------------------------------------- */

static double rho_of(LmwbKfacPanel *p) { return round(gtk_adjustment_get_value(p->rho_adj) * 1000) / 1000; }

static char *pct(double x) { return isfinite(x) ? g_strdup_printf("%.1f%%", 100 * x) : g_strdup("—"); }
static char *num(double x, int digits) { return isfinite(x) ? g_strdup_printf("%.*f", digits, x) : g_strdup("—"); }

static double facts_of(const LmwbMemoResult *r) { return r && r->has_world ? r->world.fact_top1 : NAN; }

static void show_metrics(LmwbKfacPanel *p) {
  const LmwbMemoResult *b = p->base, *e = p->edited;
  if (!b) {
    gtk_label_set_text(p->metrics_label, p->factors ? "Measuring…" : "Collect or load factors to edit with them.");
    return;
  }
  GString *t = g_string_new(NULL);
  g_autofree char *head = e ? g_strdup_printf("ρ = %.3g", p->edited_rho) : g_strdup("");
  g_string_append_printf(t, "%-18s %10s %12s\n", "", "unedited", head);
  const char *names[] = {"strict recitation", "loose recitation", "mean distance", "perplexity", "fact recall"};
  for (int r = 0; r < 5; r++) {
    char *cell[2];
    for (int k = 0; k < 2; k++) {
      const LmwbMemoResult *m = k ? e : b;
      if (!m) {
        cell[k] = g_strdup("");
        continue;
      }
      cell[k] = r == 0 ? pct(m->rec.strict) : r == 1 ? pct(m->rec.loose) : r == 2 ? num(m->rec.mean_distance, 3)
              : r == 3 ? num(m->perplexity, 2) : pct(facts_of(m));
    }
    g_string_append_printf(t, "%-18s %10s %12s", names[r], cell[0], cell[1]);
    if (r == 3 && e && isfinite(e->perplexity) && isfinite(b->perplexity) && b->perplexity > 0)
      g_string_append_printf(t, " (%+.1f%%)", 100 * (e->perplexity / b->perplexity - 1));
    g_string_append_c(t, '\n');
    g_free(cell[0]), g_free(cell[1]);
  }
  g_string_append_printf(t, "on %d memorised items, %zu held-out tokens, %d facts", b->rec.n, b->ppl_tokens,
                         b->has_world ? b->world.fact_n : 0);
  if (e && p->n_stats) {
    double kept = 0, change = 0;
    for (int i = 0; i < p->n_stats; i++) kept += p->stats[i].kept_fraction, change += p->stats[i].rel_change;
    g_string_append_printf(t, "\nkept %.1f%% of the components; mean ‖W′−W‖/‖W‖ %.3f; measured in %.1f s",
                           100 * kept / p->n_stats, change / p->n_stats, p->eval_seconds);
  }
  gtk_label_set_text(p->metrics_label, t->str);
  g_string_free(t, TRUE);
}

static void show_secret(LmwbKfacPanel *p) {
  guint i = gtk_drop_down_get_selected(p->secret_drop);
  if (!p->secrets || i >= (guint)p->secrets->n) {
    gtk_label_set_text(p->secret_label, p->secrets ? " " : "Neither world.json nor memorised.jsonl beside this model: nothing to recite.");
    return;
  }
  const LmwbRecitationItem *it = &p->secrets->items[i];
  g_autofree char *pre = g_markup_escape_text(it->prefix, -1), *suf = g_markup_escape_text(it->suffix, -1);
  GString *t = g_string_new(NULL);
  g_string_append_printf(t, "%s<b>%s</b>  (the memorised suffix)", pre, suf);
  const LmwbMemoResult *rs[2] = {p->base, p->edited};
  const char *when[2] = {"before", "after"};
  for (int k = 0; k < 2; k++) {
    const LmwbMemoResult *r = rs[k];
    if (!r || (int)i >= r->rec.n) {
      g_string_append_printf(t, "\n%s: %s", when[k], r ? "not in the sample (raise the sample size)"
                                                    : p->factors ? "measuring…" : "not measured yet");
      continue;
    }
    g_autofree char *one = g_strdup(r->rec.continuation[i]);
    g_strdelimit(one, "\n\r\t", ' '); /* one line: a continuation may run into the next sentence */
    g_autofree char *c = g_markup_escape_text(one, -1);
    g_string_append_printf(t, "\n%s: <tt>%s</tt>  (distance %.2f%s)", when[k], c, r->rec.distance[i],
                           r->rec.distance[i] == 0 ? ", recited" : "");
  }
  gtk_label_set_markup(p->secret_label, t->str);
  g_string_free(t, TRUE);
}


/* The mass curves with the chosen ρ across them: where a curve crosses the line is the share of
 * its components the edit keeps. */
static void show_mass(LmwbKfacPanel *p) {
  Factors *x = p->factors;
  LmwbPlot *pm = lmwb_plot_new(LMWB_PLOT_LINE, "Curvature mass: components kept by decreasing λμ", "share of components kept",
                               "mass kept");
  for (int i = 0; x && i < x->f->n; i++) {
    g_autofree char *name = g_strdup_printf("L%d %s", x->f->f[i].layer, lmwb_kfac_matrix_name(x->f->f[i].matrix));
    int s = lmwb_plot_add_series(pm, name);
    for (int q = 0; q < CURVE_POINTS; q++)
      lmwb_plot_append(pm, s, x->fc[(size_t)i * CURVE_POINTS + q], x->fm[(size_t)i * CURVE_POINTS + q]);
  }
  if (x) {
    int s = lmwb_plot_add_series(pm, "ρ");
    lmwb_plot_append(pm, s, 0, rho_of(p));
    lmwb_plot_append(pm, s, 1, rho_of(p));
    lmwb_plot_set_x_range(pm, 0, 1);
    lmwb_plot_set_y_range(pm, 0, 1.02);
  }
  lmwb_plot_view_set_plot(p->mass_plot, pm);
}

static void show_factors(LmwbKfacPanel *p) {
  Factors *x = p->factors;
  LmwbPlot *pa = lmwb_plot_new(LMWB_PLOT_LINE, "Eigenvalues μ of A (input)", "rank / dimension", "eigenvalue");
  LmwbPlot *pg = lmwb_plot_new(LMWB_PLOT_LINE, "Eigenvalues λ of G (output gradient)", "rank / dimension", "eigenvalue");
  lmwb_plot_set_log_y(pa, TRUE);
  lmwb_plot_set_log_y(pg, TRUE);
  if (!x) {
    gtk_label_set_text(p->factors_label, "No factors yet.");
  } else {
    const LmwbKfacFactors *f = x->f;
    g_autofree char *layers = NULL;
    GString *ls = g_string_new(NULL);
    for (int i = 0; i < x->n_layers; i++) g_string_append_printf(ls, "%s%d", i ? "," : "", x->layers[i]);
    layers = g_string_free(ls, FALSE);
    GString *ms = g_string_new(NULL);
    for (int k = 0; k < LMWB_KFAC_N_MATRICES; k++)
      if (x->mask & (1u << k)) g_string_append_printf(ms, "%s%s", ms->len ? "," : "", lmwb_kfac_matrix_name(k));
    g_autofree char *msg =
      g_strdup_printf("%d factors · layers %s · %s · %" G_GINT64_FORMAT " tokens · window %d · labels %s\n%s", f->n,
                      layers, ms->str, f->tokens, f->context, lmwb_kfac_labels_name(f->labels), x->origin);
    g_string_free(ms, TRUE);
    gtk_label_set_text(p->factors_label, msg);
    /* One series per matrix in each plot; zero eigenvalues have no place on the log scale. */
    for (int i = 0; i < f->n; i++) {
      const LmwbKfacEigen *e = &x->eig[i];
      g_autofree char *name = g_strdup_printf("L%d %s", f->f[i].layer, lmwb_kfac_matrix_name(f->f[i].matrix));
      int sg = lmwb_plot_add_series(pg, name), sa = lmwb_plot_add_series(pa, name);
      for (int j = 0; j < e->d_out; j++)
        if (e->lambda[j] > 0) lmwb_plot_append(pg, sg, (j + 0.5) / e->d_out, e->lambda[j]);
      for (int j = 0; j < e->d_in; j++)
        if (e->mu[j] > 0) lmwb_plot_append(pa, sa, (j + 0.5) / e->d_in, e->mu[j]);
    }
  }
  lmwb_plot_view_set_plot(p->a_plot, pa);
  lmwb_plot_view_set_plot(p->g_plot, pg);
  show_mass(p);
}

static void update_rho_label(LmwbKfacPanel *p) {
  double rho = rho_of(p);
  GString *t = g_string_new(NULL);
  g_string_append_printf(t, "keep %.1f%% of the curvature mass", 100 * rho);
  if (p->factors && rho < 1) {
    double kept = 0;
    for (int i = 0; i < p->factors->f->n; i++) {
      int64_t k = 0;
      const LmwbKfacEigen *e = &p->factors->eig[i];
      lmwb_kfac_threshold(e, rho, NULL, &k);
      kept += (double)k / ((double)e->d_in * e->d_out);
    }
    g_string_append_printf(t, ": %.1f%% of the components", 100 * kept / p->factors->f->n);
  }
  gtk_label_set_text(p->rho_label, t->str);
  g_string_free(t, TRUE);
}

static void show_recommended(LmwbKfacPanel *p, const char *summary) {
  gtk_label_set_text(p->recommend_label, summary ? summary : " ");
}

/* ---- evaluation scheduling -------------------------------------------------------------------- */

static char *sample_key(LmwbKfacPanel *p) {
  g_autofree char *h = stripped(p->heldout_entry);
  return g_strdup_printf("%d|%d|%s", gtk_spin_button_get_value_as_int(p->items_spin),
                         gtk_spin_button_get_value_as_int(p->stride_spin), h);
}

static void eval_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data);

/* Takes a measurement's figures (the unedited ones too when it made them, for the sample of key). */
static void install_eval(LmwbKfacPanel *p, EvalOut *o, const char *key) {
  if (o->base) {
    memo_free(p->base);
    p->base = g_steal_pointer(&o->base);
    g_free(p->base_key);
    p->base_key = g_strdup(key);
  }
  memo_free(p->edited);
  p->edited = g_steal_pointer(&o->edited);
  p->edited_rho = o->rho;
  p->eval_seconds = o->seconds;
  g_free(p->stats);
  p->stats = g_steal_pointer(&o->stats);
  p->n_stats = o->n_stats;
  gtk_label_set_text(p->status_label, " ");
  show_metrics(p);
  show_secret(p);
}

/* A job's input for measuring on the page's sample (NULL with a banner when there is nothing to
 * measure). */
static JobIn *sample_job_in(LmwbKfacPanel *p) {
  if (!p->model || !p->factors) return NULL;
  if (!p->secrets) {
    banner(p, "K-FAC: this model has neither world.json (secrets) nor memorised.jsonl beside it: no memorised set "
              "to measure.");
    return NULL;
  }
  g_autofree char *world = world_path(p->model);
  if (world && !g_file_test(world, G_FILE_TEST_IS_REGULAR)) g_clear_pointer(&world, g_free); /* no facts */
  JobIn *in = g_new0(JobIn, 1);
  in->serial = p->serial;
  in->model = lmwb_model_ref(p->model);
  in->factors = factors_ref(p->factors);
  in->rho = rho_of(p);
  in->items = gtk_spin_button_get_value_as_int(p->items_spin);
  in->stride = gtk_spin_button_get_value_as_int(p->stride_spin);
  g_autofree char *h = stripped(p->heldout_entry);
  in->heldout = *h ? g_strdup(h) : NULL;
  in->world = g_steal_pointer(&world);
  return in;
}

static void start_eval(LmwbKfacPanel *p) {
  g_autofree char *key = sample_key(p);
  if (p->edited && p->edited_rho == rho_of(p) && p->base && !g_strcmp0(p->base_key, key)) return; /* shown already */
  JobIn *in = sample_job_in(p);
  if (!in) return;
  in->base_key = g_steal_pointer(&key);
  in->need_base = !p->base || g_strcmp0(p->base_key, in->base_key);
  g_autofree char *title = g_strdup_printf("Measuring the K-FAC edit at ρ = %.3g", in->rho);
  LmwbJob *job = lmwb_job_new(title, run_eval, in, job_in_free);
  lmwb_job_on_done(job, eval_done, eval_out_free);
  p->eval_job = lmwb_job_start(job, GTK_WIDGET(p));
  gtk_label_set_text(p->status_label, title);
}

static void eval_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbKfacPanel *p = LMWB_KFAC_PANEL(owner);
  JobIn *in = data;
  if (p->eval_job == job) p->eval_job = NULL;
  if (lmwb_job_cancelled(error)) p->cancelled++;
  if (p->eval_pending) {
    p->eval_pending = FALSE;
    start_eval(p);
    busy_changed(p);
    return;
  }
  if (in->serial != p->serial) return;
  if (error) {
    gtk_label_set_text(p->status_label, lmwb_job_cancelled(error) ? "Measurement cancelled." : "Measurement failed.");
    job_banner(p, error);
    return;
  }
  install_eval(p, result, in->base_key);
  p->evaluations++;
}

static gboolean debounce_fire(gpointer user) {
  LmwbKfacPanel *p = user;
  p->debounce_id = 0;
  if (p->eval_job) { /* the newest ρ when the running one has stopped */
    lmwb_job_cancel(p->eval_job);
    p->eval_pending = TRUE;
  } else {
    start_eval(p);
  }
  busy_changed(p);
  return G_SOURCE_REMOVE;
}

static void schedule_eval(LmwbKfacPanel *p) {
  if (!p->factors) return;
  if (p->debounce_id) g_source_remove(p->debounce_id);
  p->debounce_id = g_timeout_add(EVAL_DEBOUNCE_MS, debounce_fire, p);
  busy_changed(p);
}

static void on_rho_changed(GtkAdjustment *adj, gpointer user) {
  LmwbKfacPanel *p = user;
  update_rho_label(p);
  if (p->factors) show_mass(p);
  schedule_eval(p);
}

static void on_sample_changed(gpointer w, gpointer user) { schedule_eval(user); }
static void on_secret_picked(GObject *o, GParamSpec *ps, gpointer user) { show_secret(user); }

/* ---- the factors job (main loop) -------------------------------------------------------------- */

static void factors_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbKfacPanel *p = LMWB_KFAC_PANEL(owner);
  JobIn *in = data;
  if (p->factors_job == job) p->factors_job = NULL;
  if (in->serial != p->serial) return;
  if (error) {
    gtk_label_set_text(p->status_label, lmwb_job_cancelled(error) ? "Collection cancelled: no factors were kept."
                                                                   : "No factors: see the message above.");
    job_banner(p, error);
    return;
  }
  p->serial++; /* measurements of the previous factors are dropped */
  if (p->eval_job) lmwb_job_cancel(p->eval_job);
  if (p->recommend_job) lmwb_job_cancel(p->recommend_job);
  p->recommended = NAN, p->n_tried = 0;
  show_recommended(p, NULL);
  p->eval_pending = FALSE;
  factors_unref(p->factors);
  p->factors = result;
  g_atomic_rc_box_acquire(p->factors); /* the job frees its result after this */
  memo_free(p->edited);
  p->edited = NULL;
  g_clear_pointer(&p->stats, g_free);
  p->n_stats = p->evaluations = p->cancelled = 0; /* counted per factors */
  gtk_label_set_text(p->status_label, " ");
  show_factors(p);
  update_rho_label(p);
  show_metrics(p);
  show_secret(p);
  if (p->eval_job) p->eval_pending = TRUE; /* the cancelled one stops first */
  else start_eval(p);
}

static gboolean refuse_busy(LmwbKfacPanel *p) {
  if (p->factors_job || p->save_job)
    banner(p, "K-FAC: a collection or save is running: wait for it or cancel it (Esc).");
  return p->factors_job || p->save_job;
}

static void start_factors(LmwbKfacPanel *p, JobIn *in, const char *title) {
  LmwbJob *job = lmwb_job_new(title, run_factors, in, job_in_free);
  lmwb_job_on_done(job, factors_done, (GDestroyNotify)factors_unref);
  p->factors_job = lmwb_job_start(job, GTK_WIDGET(p));
  gtk_label_set_text(p->status_label, title);
}

static void collect(LmwbKfacPanel *p) {
  if (!p->model || refuse_busy(p)) return;
  LmwbModel *m = p->model;
  g_autofree char *text = stripped(p->text_entry), *folder = stripped(p->folder_entry);
  if (!*text) {
    banner(p, "K-FAC: choose a text to collect the factors over (e.g. the training text of make-corpus).");
    return;
  }
  if (!m->tokenizer) {
    banner(p, "K-FAC: this model has no tokenizer to read the text with.");
    return;
  }
  GError *err = NULL;
  int n_layers = 0;
  g_autofree int *layers = lmwb_kfac_layers_parse(text_of(p->layers_entry), m->cfg.n_layer, &n_layers, &err);
  unsigned mask = (gtk_check_button_get_active(p->up_check) ? 1u << LMWB_KFAC_UP : 0) |
                  (gtk_check_button_get_active(p->gate_check) ? 1u << LMWB_KFAC_GATE : 0) |
                  (gtk_check_button_get_active(p->down_check) ? 1u << LMWB_KFAC_DOWN : 0);
  for (int k = 0; layers && k < LMWB_KFAC_N_MATRICES; k++) {
    LmwbKfacInfo info;
    if ((mask & (1u << k)) && !lmwb_kfac_info(&m->cfg, layers[0], (LmwbKfacMatrix)k, &info, &err)) break;
  }
  if (!err && !mask) lmwb_input_error(&err, "choose at least one matrix (up, gate, down)");
  int context = gtk_spin_button_get_value_as_int(p->context_spin);
  if (!err && (context < 2 || context > m->cfg.n_ctx))
    lmwb_input_error(&err, "context %d must be within 2..%d (the model's context)", context, m->cfg.n_ctx);
  if (err) {
    g_autofree char *msg = g_strdup_printf("K-FAC: %s", err->message);
    banner(p, msg);
    g_error_free(err);
    return;
  }
  JobIn *in = g_new0(JobIn, 1);
  in->serial = p->serial;
  in->model = lmwb_model_ref(m);
  in->text = g_steal_pointer(&text);
  in->folder = *folder ? g_steal_pointer(&folder) : NULL;
  in->tokens = (int64_t)gtk_spin_button_get_value(p->tokens_spin);
  in->context = context;
  in->layers = g_steal_pointer(&layers);
  in->n_layers = n_layers;
  in->mask = mask;
  start_factors(p, in, "Collecting K-FAC factors");
}

static void load(LmwbKfacPanel *p, const char *dir) {
  if (!p->model || refuse_busy(p)) return;
  g_autofree char *d = g_strstrip(g_strdup(dir && *dir ? dir : text_of(p->folder_entry)));
  if (!*d) {
    banner(p, "K-FAC: choose a factor folder to load (from lmwb-batch kfac collect or Collect here).");
    return;
  }
  set_text(p->folder_entry, d);
  JobIn *in = g_new0(JobIn, 1);
  in->serial = p->serial;
  in->model = lmwb_model_ref(p->model);
  in->folder = g_steal_pointer(&d);
  in->load = TRUE;
  start_factors(p, in, "Loading K-FAC factors");
}

static void save_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbKfacPanel *p = LMWB_KFAC_PANEL(owner);
  JobIn *in = data;
  if (p->save_job == job) p->save_job = NULL;
  if (in->serial != p->serial) return;
  if (error) {
    gtk_label_set_text(p->status_label, " ");
    job_banner(p, error);
    return;
  }
  g_free(p->saved);
  p->saved = g_strdup(result);
  g_autofree char *msg = g_strdup_printf("Saved the model edited at ρ = %.3g to %s", in->rho, p->saved);
  gtk_label_set_text(p->status_label, msg);
}

static void save(LmwbKfacPanel *p, const char *dir) {
  if (!p->model || refuse_busy(p)) return;
  if (!p->factors) {
    banner(p, "K-FAC: collect or load factors before saving an edited model.");
    return;
  }
  if (!dir || !*dir) {
    banner(p, "K-FAC: Save: choose a folder.");
    return;
  }
  JobIn *in = g_new0(JobIn, 1);
  in->serial = p->serial;
  in->model = lmwb_model_ref(p->model);
  in->factors = factors_ref(p->factors);
  in->rho = rho_of(p);
  in->out = g_strdup(dir);
  in->dtype = g_strdup(*p->model->source_dtype ? p->model->source_dtype : "F32");
  LmwbJob *job = lmwb_job_new("Saving the K-FAC-edited model", run_save, in, job_in_free);
  lmwb_job_on_done(job, save_done, g_free);
  p->save_job = lmwb_job_start(job, GTK_WIDGET(p));
}

static void recommend_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbKfacPanel *p = LMWB_KFAC_PANEL(owner);
  JobIn *in = data;
  if (p->recommend_job == job) p->recommend_job = NULL;
  busy_changed(p);
  if (in->serial != p->serial) return;
  if (error) {
    gtk_label_set_text(p->status_label, " ");
    if (!lmwb_job_cancelled(error)) job_banner(p, error);
    return;
  }
  RecommendOut *r = result;
  p->n_tried = r->n_tried;
  p->recommended = r->best ? r->best->rho : NAN;
  show_recommended(p, r->summary);
  gtk_label_set_text(p->status_label, " ");
  if (!r->best) return;
  g_autofree char *key = sample_key(p);
  if (!g_strcmp0(key, in->base_key)) install_eval(p, r->best, key); /* the sample has not changed meanwhile */
  gtk_adjustment_set_value(p->rho_adj, p->recommended);
}

static void recommend(LmwbKfacPanel *p) {
  if (!p->model || refuse_busy(p)) return;
  if (!p->factors) {
    banner(p, "K-FAC: collect or load factors before asking for a recommended ρ.");
    return;
  }
  if (p->recommend_job) return;
  JobIn *in = sample_job_in(p);
  if (!in) return;
  in->base_key = sample_key(p);
  const char *title = "Recommending ρ: kfac sweep over " LMWB_KFAC_SWEEP_DEFAULT;
  LmwbJob *job = lmwb_job_new(title, run_recommend, in, job_in_free);
  lmwb_job_on_done(job, recommend_done, recommend_out_free);
  p->recommend_job = lmwb_job_start(job, GTK_WIDGET(p));
  gtk_label_set_text(p->status_label, title);
  busy_changed(p);
}

/* ---- file dialogs ----------------------------------------------------------------------------- */

static void save_to(gpointer owner, const char *path) { save(owner, path); }

/* A chosen file fills the entry; with entry NULL, a chosen folder is saved to. */
static void choose(LmwbKfacPanel *p, GtkEntry *entry, const char *title, GtkFileChooserAction action, const char *accept) {
  if (entry) lmwb_ask_path_into(GTK_WIDGET(p), entry, title, action, accept);
  else lmwb_ask_path(GTK_WIDGET(p), title, action, accept, NULL, save_to);
}

/* ---- actions (user data: the view holding the panel) ------------------------------------------ */

static LmwbKfacPanel *panel_of(gpointer user) { return g_object_get_data(G_OBJECT(user), LMWB_KFAC_PANEL_KEY); }

#define ENTRY_ACTION(name, field) \
  static void act_##name(GSimpleAction *a, GVariant *v, gpointer user) { set_text(panel_of(user)->field, g_variant_get_string(v, NULL)); }
ENTRY_ACTION(text, text_entry)
ENTRY_ACTION(layers, layers_entry)
ENTRY_ACTION(folder, folder_entry)
ENTRY_ACTION(heldout, heldout_entry)

#define SPIN_ACTION(name, field) \
  static void act_##name(GSimpleAction *a, GVariant *v, gpointer user) { gtk_spin_button_set_value(panel_of(user)->field, g_variant_get_int32(v)); }
SPIN_ACTION(tokens, tokens_spin)
SPIN_ACTION(context, context_spin)
SPIN_ACTION(items, items_spin)
SPIN_ACTION(stride, stride_spin)

static void act_matrices(GSimpleAction *a, GVariant *v, gpointer user) {
  LmwbKfacPanel *p = panel_of(user);
  unsigned mask = 0;
  GError *err = NULL;
  if (!lmwb_kfac_matrices_parse(g_variant_get_string(v, NULL), &mask, &err)) {
    g_autofree char *msg = g_strdup_printf("K-FAC: %s", err->message);
    banner(p, msg);
    g_error_free(err);
    return;
  }
  gtk_check_button_set_active(p->up_check, (mask >> LMWB_KFAC_UP) & 1);
  gtk_check_button_set_active(p->gate_check, (mask >> LMWB_KFAC_GATE) & 1);
  gtk_check_button_set_active(p->down_check, (mask >> LMWB_KFAC_DOWN) & 1);
}

static void act_collect(GSimpleAction *a, GVariant *v, gpointer user) { collect(panel_of(user)); }
static void act_load(GSimpleAction *a, GVariant *v, gpointer user) { load(panel_of(user), g_variant_get_string(v, NULL)); }
static void act_save(GSimpleAction *a, GVariant *v, gpointer user) { save(panel_of(user), g_variant_get_string(v, NULL)); }

static void act_cancel(GSimpleAction *a, GVariant *v, gpointer user) {
  LmwbKfacPanel *p = panel_of(user);
  if (p->factors_job) lmwb_job_cancel(p->factors_job);
  if (p->recommend_job) lmwb_job_cancel(p->recommend_job);
}

static void act_recommend(GSimpleAction *a, GVariant *v, gpointer user) { recommend(panel_of(user)); }

static void act_keep_mass(GSimpleAction *a, GVariant *v, gpointer user) {
  LmwbKfacPanel *p = panel_of(user);
  double rho = g_variant_get_double(v);
  if (!(rho > 0 && rho <= 1)) {
    g_autofree char *msg = g_strdup_printf("K-FAC: keep-mass %g must be in (0, 1]", rho);
    banner(p, msg);
    return;
  }
  gtk_adjustment_set_value(p->rho_adj, rho);
}

static void act_secret(GSimpleAction *a, GVariant *v, gpointer user) {
  LmwbKfacPanel *p = panel_of(user);
  int i = g_variant_get_int32(v);
  if (!p->secrets || i < 0 || i >= p->secrets->n) {
    g_autofree char *msg = g_strdup_printf("K-FAC: there is no secret %d (%d in the world)", i, p->secrets ? p->secrets->n : 0);
    banner(p, msg);
    return;
  }
  gtk_drop_down_set_selected(p->secret_drop, (guint)i);
}

static void act_save_dialog(GSimpleAction *a, GVariant *v, gpointer user) {
  choose(panel_of(user), NULL, "Save the K-FAC-edited model as a folder", GTK_FILE_CHOOSER_ACTION_SELECT_FOLDER, "_Save");
}

static void act_browse(GSimpleAction *a, GVariant *v, gpointer user) {
  LmwbKfacPanel *p = panel_of(user);
  const char *w = g_variant_get_string(v, NULL);
  if (!strcmp(w, "folder"))
    choose(p, p->folder_entry, "Choose a factor folder", GTK_FILE_CHOOSER_ACTION_SELECT_FOLDER, "_Choose");
  else if (!strcmp(w, "text") || !strcmp(w, "heldout"))
    choose(p, !strcmp(w, "text") ? p->text_entry : p->heldout_entry, "Choose a text file", GTK_FILE_CHOOSER_ACTION_OPEN,
           "_Open");
}

const GActionEntry lmwb_kfac_panel_actions[LMWB_KFAC_PANEL_N_ACTIONS] = {
  {"kfac-text", act_text, "s"},         {"kfac-tokens", act_tokens, "i"},     {"kfac-context", act_context, "i"},
  {"kfac-layers", act_layers, "s"},     {"kfac-matrices", act_matrices, "s"}, {"kfac-folder", act_folder, "s"},
  {"kfac-collect", act_collect},        {"kfac-load", act_load, "s"},         {"kfac-cancel", act_cancel},
  {"kfac-keep-mass", act_keep_mass, "d"}, {"kfac-items", act_items, "i"},     {"kfac-heldout", act_heldout, "s"},
  {"kfac-heldout-stride", act_stride, "i"}, {"kfac-recommend", act_recommend},
  {"kfac-secret", act_secret, "i"},     {"kfac-save", act_save, "s"},         {"kfac-save-dialog", act_save_dialog},
  {"kfac-browse", act_browse, "s"},
};

/* ---- for the view ----------------------------------------------------------------------------- */

void lmwb_kfac_panel_set_model(LmwbKfacPanel *p, LmwbModel *m) {
  p->serial++;
  if (p->factors_job) lmwb_job_cancel(p->factors_job);
  if (p->eval_job) lmwb_job_cancel(p->eval_job);
  if (p->recommend_job) lmwb_job_cancel(p->recommend_job);
  if (p->debounce_id) g_source_remove(p->debounce_id);
  p->debounce_id = 0;
  p->eval_pending = FALSE;
  if (m) lmwb_model_ref(m);
  g_clear_pointer(&p->model, lmwb_model_unref);
  p->model = m;
  g_clear_pointer(&p->factors, factors_unref);
  g_clear_pointer(&p->base, memo_free);
  g_clear_pointer(&p->edited, memo_free);
  g_clear_pointer(&p->base_key, g_free);
  g_clear_pointer(&p->stats, g_free);
  g_clear_pointer(&p->saved, g_free);
  p->n_stats = p->evaluations = p->cancelled = 0;
  p->recommended = NAN, p->n_tried = 0;
  show_recommended(p, NULL);
  g_clear_pointer(&p->secrets, lmwb_recitation_set_free);
  if (m) p->secrets = lmwb_recitation_set_load_for_model(m->dir, NULL);
  gtk_string_list_splice(p->secret_list, 0, g_list_model_get_n_items(G_LIST_MODEL(p->secret_list)), NULL);
  for (int i = 0; p->secrets && i < p->secrets->n; i++) {
    g_autofree char *item = g_strdup_printf("%d · %s…", i, p->secrets->items[i].prefix);
    gtk_string_list_append(p->secret_list, item);
  }
  gtk_widget_set_sensitive(GTK_WIDGET(p->secret_drop), p->secrets != NULL);
  if (m) {
    g_autofree char *all = g_strdup_printf("0-%d", m->cfg.n_layer - 1);
    set_text(p->layers_entry, all);
    gtk_check_button_set_active(p->gate_check, FALSE);
    gtk_widget_set_sensitive(GTK_WIDGET(p->gate_check), m->cfg.gated_mlp);
    gtk_spin_button_set_range(p->context_spin, 2, m->cfg.n_ctx);
    gtk_spin_button_set_value(p->context_spin, MIN(LMWB_KFAC_DEFAULT_CONTEXT, m->cfg.n_ctx));
    gtk_spin_button_set_range(p->stride_spin, 0, m->cfg.n_ctx);
  }
  gtk_label_set_text(p->status_label, " ");
  show_factors(p);
  update_rho_label(p);
  show_metrics(p);
  show_secret(p);
  busy_changed(p);
}

gboolean lmwb_kfac_panel_busy(LmwbKfacPanel *p) { return p->debounce_id != 0 || p->eval_pending; }

LmwbPlotView *lmwb_kfac_panel_current_plot(LmwbKfacPanel *p) { return p->mass_plot; }

static void describe_memo(GString *s, const char *when, const LmwbMemoResult *r) {
  if (!r) {
    g_string_append_printf(s, "kfac %s none\n", when);
    return;
  }
  g_string_append_printf(s, "kfac %s strict=%.10g loose=%.10g distance=%.10g perplexity=%.10g facts=%.10g n=%d ppl_tokens=%zu fact_n=%d\n",
                         when, r->rec.strict, r->rec.loose, r->rec.mean_distance, r->perplexity, facts_of(r), r->rec.n,
                         r->ppl_tokens, r->has_world ? r->world.fact_n : 0);
}

char *lmwb_kfac_panel_describe(LmwbKfacPanel *p) {
  GString *s = g_string_new(NULL);
  if (p->factors) {
    const LmwbKfacFactors *f = p->factors->f;
    g_string_append_printf(s, "kfac factors=%d tokens=%" G_GINT64_FORMAT " positions=%" G_GINT64_FORMAT " context=%d\n", f->n,
                           f->tokens, f->positions, f->context);
    for (int i = 0; i < f->n; i++) {
      const LmwbKfacEigen *e = &p->factors->eig[i];
      g_string_append_printf(s, "kfac factor L%d %s in=%d out=%d mu0=%.6g lambda0=%.6g\n", f->f[i].layer,
                             lmwb_kfac_matrix_name(f->f[i].matrix), e->d_in, e->d_out, e->mu[0], e->lambda[0]);
    }
  } else {
    g_string_append(s, "kfac factors=0\n");
  }
  LmwbPlot *pl[3] = {lmwb_plot_view_get_plot(p->a_plot), lmwb_plot_view_get_plot(p->g_plot),
                     lmwb_plot_view_get_plot(p->mass_plot)};
  int ns[3], pts = 0;
  for (int k = 0; k < 3; k++) {
    ns[k] = pl[k] ? lmwb_plot_series_count(pl[k]) : 0;
    for (int i = 0; i < ns[k]; i++) pts += (int)lmwb_plot_series_length(pl[k], i);
  }
  g_string_append_printf(s, "kfac plots a_series=%d g_series=%d mass_series=%d points=%d\n", ns[0], ns[1], ns[2], pts);
  g_string_append_printf(s, "kfac rho=%.6g evaluated_rho=%.6g evaluations=%d cancelled=%d items=%d seconds=%.3f\n",
                         rho_of(p), p->edited ? p->edited_rho : NAN, p->evaluations, p->cancelled,
                         gtk_spin_button_get_value_as_int(p->items_spin), p->edited ? p->eval_seconds : NAN);
  g_string_append_printf(s, "kfac recommend=%.6g tried=%d\n", p->recommended, p->n_tried);
  describe_memo(s, "base", p->base);
  describe_memo(s, "edited", p->edited);
  for (int i = 0; i < p->n_stats; i++)
    g_string_append_printf(s, "kfac stats L%d %s kept_mass=%.6g kept_components=%.6g change=%.6g\n", p->stats[i].layer,
                           lmwb_kfac_matrix_name(p->stats[i].matrix), p->stats[i].kept_mass, p->stats[i].kept_fraction,
                           p->stats[i].rel_change);
  guint i = gtk_drop_down_get_selected(p->secret_drop);
  if (p->secrets && i < (guint)p->secrets->n) {
    const LmwbMemoResult *rs[2] = {p->base, p->edited};
    g_autofree char *suf = g_strescape(p->secrets->items[i].suffix, NULL);
    g_string_append_printf(s, "kfac secret %u suffix=\"%s\"\n", i, suf);
    for (int k = 0; k < 2; k++) {
      const char *c = rs[k] && (int)i < rs[k]->rec.n ? rs[k]->rec.continuation[i] : "";
      g_autofree char *esc = g_strescape(c, NULL);
      g_string_append_printf(s, "kfac secret %s=\"%s\"\n", k ? "after" : "before", esc);
    }
  }
  g_string_append_printf(s, "kfac saved=%s\n", p->saved ? p->saved : "");
  return g_string_free(s, FALSE);
}

/* ---- object ----------------------------------------------------------------------------------- */

static void dispose(GObject *o) {
  LmwbKfacPanel *p = LMWB_KFAC_PANEL(o);
  if (p->factors_job) lmwb_job_cancel(p->factors_job);
  if (p->eval_job) lmwb_job_cancel(p->eval_job);
  if (p->save_job) lmwb_job_cancel(p->save_job);
  if (p->recommend_job) lmwb_job_cancel(p->recommend_job);
  p->factors_job = p->eval_job = p->save_job = p->recommend_job = NULL;
  if (p->debounce_id) g_source_remove(p->debounce_id);
  p->debounce_id = 0;
  g_clear_pointer(&p->model, lmwb_model_unref);
  g_clear_pointer(&p->factors, factors_unref);
  g_clear_pointer(&p->secrets, lmwb_recitation_set_free);
  g_clear_pointer(&p->base, memo_free);
  g_clear_pointer(&p->edited, memo_free);
  g_clear_pointer(&p->base_key, g_free);
  g_clear_pointer(&p->stats, g_free);
  g_clear_pointer(&p->saved, g_free);
  gtk_widget_dispose_template(GTK_WIDGET(o), LMWB_TYPE_KFAC_PANEL);
  G_OBJECT_CLASS(lmwb_kfac_panel_parent_class)->dispose(o);
}

static void lmwb_kfac_panel_class_init(LmwbKfacPanelClass *k) {
  G_OBJECT_CLASS(k)->dispose = dispose;
  g_type_ensure(LMWB_TYPE_PLOT_VIEW);
  GtkWidgetClass *wk = GTK_WIDGET_CLASS(k);
  gtk_widget_class_set_template_from_resource(wk, "/org/lmwb/Workbench/lmwb-kfac-panel.ui");
#define BIND(x) gtk_widget_class_bind_template_child(wk, LmwbKfacPanel, x)
  BIND(text_entry), BIND(layers_entry), BIND(folder_entry), BIND(heldout_entry), BIND(tokens_spin), BIND(context_spin);
  BIND(items_spin), BIND(stride_spin), BIND(up_check), BIND(gate_check), BIND(down_check), BIND(rho_scale), BIND(rho_adj);
  BIND(factors_label), BIND(rho_label), BIND(recommend_label), BIND(metrics_label), BIND(secret_label), BIND(status_label), BIND(secret_drop);
  BIND(secret_list), BIND(a_plot), BIND(g_plot), BIND(mass_plot);
#undef BIND
}

static void lmwb_kfac_panel_init(LmwbKfacPanel *p) {
  gtk_widget_init_template(GTK_WIDGET(p));
  p->recommended = NAN;
  g_autofree char *heldout = lmwb_app_default_monitor();
  set_text(p->heldout_entry, heldout);
  gtk_spin_button_set_value(p->items_spin, DEFAULT_ITEMS);
  gtk_scale_add_mark(p->rho_scale, 1.0, GTK_POS_BOTTOM, "1");
  gtk_scale_add_mark(p->rho_scale, 0.9, GTK_POS_BOTTOM, "0.9");
  gtk_scale_add_mark(p->rho_scale, 0.5, GTK_POS_BOTTOM, "0.5");
  g_signal_connect(p->rho_adj, "value-changed", G_CALLBACK(on_rho_changed), p);
  g_signal_connect(p->items_spin, "value-changed", G_CALLBACK(on_sample_changed), p);
  g_signal_connect(p->stride_spin, "value-changed", G_CALLBACK(on_sample_changed), p);
  g_signal_connect(p->heldout_entry, "changed", G_CALLBACK(on_sample_changed), p);
  g_signal_connect(p->secret_drop, "notify::selected", G_CALLBACK(on_secret_picked), p);
  show_factors(p);
  update_rho_label(p);
  show_metrics(p);
}
