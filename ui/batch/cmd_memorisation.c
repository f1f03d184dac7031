/* lmwb-batch kfac sweep and memorisation eval: recitation of a memorised set, held-out perplexity
 * and the world's figures of a model, and of its K-FAC edits over a range of keep-mass ρ
 * (editors/memorisation.h). */
#include "ui/batch/cli.h"
#include "ui/batch/cmd_kfac.h"
#include "app/train/corpus.h"
#include "editors/kfac_sweep.h"
#include "editors/memorisation.h"
#include "ui/plot/plot.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KFAC_SWEEP_EXIT "Exit status: 0 ok, 2 bad input (the message names the option, file or tensor), 1 failure."

/* The options both commands share. */
typedef struct {
  char *set, *heldout, *manifest;
  gboolean no_world;
  int max_items, heldout_stride;
} MemoArgs;

#define MEMO_ENTRIES(a)                                                                                              \
  {"set", 0, 0, G_OPTION_ARG_FILENAME, &(a).set,                                                                   \
   "Memorised set: JSONL of {\"prefix\", \"suffix\"} (default: the secrets of --manifest or of the model's "  \
   "world.json, else the model folder's memorised.jsonl)", "FILE"},      \
  {"heldout", 0, 0, G_OPTION_ARG_FILENAME, &(a).heldout, "Held-out text for perplexity (default: none)", "TEXT"},    \
  {"heldout-stride", 0, 0, G_OPTION_ARG_INT, &(a).heldout_stride,                                                  \
   "Perplexity windows (the model's context) advance by N tokens (default: half the context; the context: windows " \
   "that do not overlap, e.g. one TokFSM walk each)", "N"},                                                          \
  {"manifest", 0, 0, G_OPTION_ARG_FILENAME, &(a).manifest,                                                         \
   "World manifest for facts, IOI and greater-than (default: world.json in the model folder, if any)", "FILE"},     \
  {"no-world", 0, 0, G_OPTION_ARG_NONE, &(a).no_world, "Do not run the world's evaluation", NULL},                  \
  {"max-items", 0, 0, G_OPTION_ARG_INT, &(a).max_items, "At most N items of the set and of each world task", "N"}

#define MEMO_HELP_TEXT \
  "Recitation: greedy continuation of each prefix for as many tokens as its suffix; strict = exact, loose =\n" \
  "token-level normalised Levenshtein similarity >= 0.75, mean_distance = mean of distance / length.\n"

/* Loads the set, the held-out text and finds the manifest. */
static gboolean memo_prepare(const LmwbModel *m, const MemoArgs *a, LmwbRecitationSet **set, char **heldout,
                             char **manifest, GError **err) {
  g_autofree char *world = m->dir ? g_build_filename(m->dir, LMWB_CORPUS_MANIFEST_FILE, NULL) : NULL;
  gboolean have_world = world && g_file_test(world, G_FILE_TEST_IS_REGULAR);
  if (a->max_items < 0) {
    lmwb_input_error(err, "--max-items %d must be 0 (all) or positive", a->max_items);
    return FALSE;
  }
  if (a->heldout_stride < 0 || a->heldout_stride > m->cfg.n_ctx) {
    lmwb_input_error(err, "--heldout-stride %d is not 0 (half the context) or 1..%d (the model's context)", a->heldout_stride, m->cfg.n_ctx);
    return FALSE;
  }
  if (a->manifest && !g_file_test(a->manifest, G_FILE_TEST_IS_REGULAR)) {
    lmwb_input_error(err, "--manifest %s: no such file", a->manifest);
    return FALSE;
  }
  const char *man = a->manifest ? a->manifest : have_world ? world : NULL;
  if (a->set) *set = lmwb_recitation_set_load_jsonl(a->set, err);
  else if (a->manifest) *set = lmwb_recitation_set_load_world(a->manifest, err);
  else *set = lmwb_recitation_set_load_for_model(m->dir, err);
  if (!*set) return FALSE;
  if (a->heldout && !(*heldout = lmwb_cli_read_text(a->heldout, err))) return FALSE;
  *manifest = !a->no_world && man ? g_strdup(man) : NULL;
  return TRUE;
}

static void add_items(JsonBuilder *b, const LmwbRecitationSet *set, const LmwbRecitationResult *r) {
  json_builder_set_member_name(b, "items");
  json_builder_begin_array(b);
  for (int i = 0; i < r->n; i++) {
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "prefix");
    json_builder_add_string_value(b, set->items[i].prefix);
    json_builder_set_member_name(b, "suffix");
    json_builder_add_string_value(b, set->items[i].suffix);
    json_builder_set_member_name(b, "continuation");
    json_builder_add_string_value(b, r->continuation[i]);
    json_builder_set_member_name(b, "distance");
    json_builder_add_double_value(b, r->distance[i]);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
}

/* ---- memorisation eval ------------------------------------------------------------------------- */

int lmwb_cmd_memorisation_eval(int argc, char **argv) {
  MemoArgs a = {0};
  GOptionEntry e[] = {MEMO_ENTRIES(a), {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- how much of a memorised set a model recites",
                      MEMO_HELP_TEXT
                      "Also perplexity on --heldout text and the world's facts, IOI and greater-than (eval-world).\n"
                      "Prints JSON with every item's continuation.\n"
                      "Example: lmwb-batch memorisation eval --model edited --heldout valid_brown.txt",
                      "Exit status: 0 ok, 2 bad input (the message names the file, line or option), 1 failure.",
                      e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  GError *err = NULL;
  g_autoptr(LmwbModel) m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  LmwbRecitationSet *set = NULL;
  g_autofree char *heldout = NULL, *manifest = NULL;
  if (!memo_prepare(m, &a, &set, &heldout, &manifest, &err)) return lmwb_cli_fail(err);
  LmwbMemoOptions o = {.set = set, .heldout_text = heldout, .world_manifest = manifest, .max_items = a.max_items,
                    .heldout_stride = a.heldout_stride};
  LmwbMemoResult r;
  if (!lmwb_memo_measure(m, &o, &r, lmwb_cli_reporter(), &err)) {
    lmwb_recitation_set_free(set);
    return lmwb_cli_fail(err);
  }
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "model");
  json_builder_add_string_value(b, m->dir ? m->dir : "");
  lmwb_memo_result_to_json(&r, b);
  add_items(b, set, &r.rec);
  json_builder_end_object(b);
  lmwb_memo_result_clear(&r);
  lmwb_recitation_set_free(set);
  return lmwb_cli_emit_json(json_builder_get_root(b), lmwb_cli.out, &err) ? 0 : lmwb_cli_fail(err);
}

/* ---- kfac sweep -------------------------------------------------------------------------------- */

static double ratio(double a, double b) { return isfinite(a) && isfinite(b) && b > 0 ? a / b : NAN; }

int lmwb_cmd_kfac_sweep(int argc, char **argv) {
  MemoArgs a = {0};
  char *factors = NULL, *layers = NULL, *matrices = NULL, *values = NULL, *plot = NULL;
  GOptionEntry e[] = {
      {"factors", 'f', 0, G_OPTION_ARG_FILENAME, &factors, "Factor folder from kfac collect on this model (required)", "DIR"},
      {"layers", 'l', 0, G_OPTION_ARG_STRING, &layers, "Layers to edit (default: those of the factors)", "L"},
      {"matrices", 0, 0, G_OPTION_ARG_STRING, &matrices, "Any of up,gate,down (default: those of the factors)", "M"},
      {"keep-mass", 'r', 0, G_OPTION_ARG_STRING, &values, "Values of ρ to try (default " LMWB_KFAC_SWEEP_DEFAULT ")", "R1,R2,..."},
      {"plot", 0, 0, G_OPTION_ARG_FILENAME, &plot, "Draw recitation, perplexity and facts against ρ to a .png, .svg or .pdf", "FILE"},
      MEMO_ENTRIES(a),
      {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- recitation, perplexity and facts against the K-FAC keep-mass",
                      "Measures the unedited model, then edits it (in memory, nothing written) at each ρ and measures\n"
                      "each edit the same way. " MEMO_HELP_TEXT
                      "Perplexity on --heldout text, facts (and IOI, greater-than) from the world manifest.\n"
                      "The recommended ρ has the lowest strict recitation among the edits whose perplexity rose at most\n"
                      "20% and whose fact recall kept at least 80% of its value (ties: the larger ρ).\n"
                      "Example: lmwb-batch kfac sweep --factors f --layers 0-3 --matrices up,down --heldout valid_brown.txt --plot sweep.png",
                      KFAC_SWEEP_EXIT, e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if (!factors) return lmwb_cli_usage_error("--factors DIR is required");
  if (!lmwb_kfac_cli_plot_path("--plot", plot)) return 2;
  g_autofree double *rho = NULL;
  int n = 0;
  GError *err = NULL;
  if (!lmwb_kfac_sweep_parse(values ? values : LMWB_KFAC_SWEEP_DEFAULT, &rho, &n, &err)) {
    g_prefix_error(&err, "--");
    return lmwb_cli_fail(err);
  }
  g_autoptr(LmwbModel) m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  LmwbRecitationSet *set = NULL;
  g_autofree char *heldout = NULL, *manifest = NULL;
  LmwbKfacFactors *f = NULL;
  g_autofree int *list = NULL;
  int n_layers = 0, status = 0;
  unsigned mask = 0;
  if (!memo_prepare(m, &a, &set, &heldout, &manifest, &err) || !(f = lmwb_kfac_load(factors, m, &err)) ||
      !lmwb_kfac_cli_targets(m, f, layers, matrices, &list, &n_layers, &mask, &err)) {
    lmwb_recitation_set_free(set);
    lmwb_kfac_factors_free(f);
    return lmwb_cli_fail(err);
  }
  LmwbMemoOptions o = {.set = set, .heldout_text = heldout, .world_manifest = manifest, .max_items = a.max_items,
                    .heldout_stride = a.heldout_stride};
  LmwbKfacSweep sw = {0};
  LmwbKfacEigen *eig = g_new0(LmwbKfacEigen, f->n);
  g_autoptr(JsonBuilder) b = json_builder_new();
  if (!lmwb_kfac_sweep_run(m, f, list, n_layers, mask, rho, n, &eig, &o, &sw, lmwb_cli_reporter(), &err)) goto fail;
  const LmwbMemoResult *base = &sw.base, *res = sw.res;
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "base");
  json_builder_begin_object(b);
  lmwb_memo_result_to_json(base, b);
  json_builder_end_object(b);
  json_builder_set_member_name(b, "points");
  json_builder_begin_array(b);
  for (int i = 0; i < n; i++) {
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "keep_mass");
    json_builder_add_double_value(b, rho[i]);
    lmwb_memo_result_to_json(&res[i], b);
    json_builder_set_member_name(b, "matrices");
    json_builder_add_value(b, lmwb_kfac_cli_stats_json(sw.stats[i], sw.n_stats[i]));
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_set_member_name(b, "recommended_keep_mass");
  if (sw.recommended >= 0) json_builder_add_double_value(b, rho[sw.recommended]);
  else json_builder_add_null_value(b);
  json_builder_set_member_name(b, "goals");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "max_perplexity_rise");
  json_builder_add_double_value(b, LMWB_MEMO_MAX_PPL_RISE);
  json_builder_set_member_name(b, "min_fact_recall_retained");
  json_builder_add_double_value(b, LMWB_MEMO_MIN_FACT_RETAINED);
  json_builder_end_object(b);
  json_builder_end_object(b);
  if (plot) {
    LmwbPlot *p = lmwb_plot_new(LMWB_PLOT_LINE, "K-FAC edit: keep-mass sweep", "keep-mass ρ", "share / ratio to unedited");
    int ss = lmwb_plot_add_series(p, "strict recitation"), sl = lmwb_plot_add_series(p, "loose recitation");
    int sp = heldout ? lmwb_plot_add_series(p, "perplexity / unedited") : -1;
    int sf = manifest ? lmwb_plot_add_series(p, "fact recall / unedited") : -1;
    for (int i = 0; i < n; i++) {
      lmwb_plot_append(p, ss, rho[i], res[i].rec.strict);
      lmwb_plot_append(p, sl, rho[i], res[i].rec.loose);
      if (sp >= 0) lmwb_plot_append(p, sp, rho[i], ratio(res[i].perplexity, base->perplexity));
      if (sf >= 0 && res[i].has_world) lmwb_plot_append(p, sf, rho[i], ratio(res[i].world.fact_top1, base->world.fact_top1));
    }
    gboolean ok = lmwb_plot_save(p, plot, 900, 560, &err);
    lmwb_plot_free(p);
    if (!ok) goto fail;
  }
  status = lmwb_cli_emit_json(json_builder_get_root(b), lmwb_cli.out, &err) ? 0 : lmwb_cli_fail(err);
  goto done;
fail:
  status = lmwb_cli_fail(err);
done:
  lmwb_kfac_sweep_clear(&sw);
  for (int i = 0; i < f->n; i++) lmwb_kfac_eigen_clear(&eig[i]);
  g_free(eig);
  lmwb_kfac_factors_free(f);
  lmwb_recitation_set_free(set);
  return status;
}
