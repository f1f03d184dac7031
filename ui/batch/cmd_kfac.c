/* lmwb-batch kfac collect | merge | spectrum | edit: K-FAC factors of MLP matrices, mixtures of
 * them, their spectra and the curvature edit (editors/kfac.h). Each checks everything it can before any work or any file
 * is written. `kfac sweep` and `memorisation eval` are in cmd_memorisation.c. */
#include "ui/batch/cli.h"
#include "ui/batch/cmd_kfac.h"
#include "app/core/inputs.h"
#include "app/formats/tokenizer.h"
#include "editors/kfac.h"
#include "ui/plot/plot.h"
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define KFAC_HELP \
  "K-FAC memorisation editing (Merullo et al. 2025, arXiv 2510.24256). For each MLP matrix W [out, in]\n" \
  "(up: GPT-2 c_fc, Llama up_proj, NeoX dense_h_to_4h; gate: Llama gate_proj; down: c_proj, down_proj,\n" \
  "dense_4h_to_h) the loss curvature is approximated by two factors: A = E[a aᵀ] over the matrix's input\n" \
  "and G = E[g gᵀ] over the gradient at its output. In the eigenbasis of A and G each component (i, j)\n" \
  "of W has curvature λ_i μ_j. Memorised text sits in the flat (low-curvature) components: keeping\n" \
  "only the components that hold a share ρ of the curvature mass (--keep-mass) removes much of the\n" \
  "verbatim recitation while general ability stays. The steps:\n" \
  "  1. kfac collect   the factors over a text (labels sampled from the model by default)\n" \
  "     kfac merge     factors over several texts as one mixture (what the edit should keep)\n" \
  "  2. kfac spectrum  the eigenvalues and how much mass the top components hold\n" \
  "  3. kfac sweep     recitation, perplexity and facts against ρ; a recommended ρ\n" \
  "  4. kfac edit      the edited model as a new Hugging Face folder (the source is never written)\n" \
  "  memorisation eval measures any model on its memorised set.\n" \
  "Exit status: 0 ok, 2 bad input (the message names the option, file or tensor), 1 other failure."

static gboolean has_suffix_ci(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !g_ascii_strcasecmp(s + n - k, suffix);
}

gboolean lmwb_kfac_cli_plot_path(const char *opt, const char *path) {
  if (!path || has_suffix_ci(path, ".png") || has_suffix_ci(path, ".svg") || has_suffix_ci(path, ".pdf")) return TRUE;
  lmwb_cli_usage_error("%s \"%s\": expected a .png, .svg or .pdf file", opt, path);
  return FALSE;
}

gboolean lmwb_kfac_cli_targets(const LmwbModel *m, const LmwbKfacFactors *f, const char *layers, const char *matrices,
                               int **list, int *n, unsigned *mask, GError **err) {
  if (!layers && f) {
    *list = g_new(int, f->n);
    *n = 0;
    for (int i = 0; i < f->n; i++)
      if (!*n || (*list)[*n - 1] != f->f[i].layer) (*list)[(*n)++] = f->f[i].layer; /* f is sorted by layer */
  } else if (!(*list = lmwb_kfac_layers_parse(layers ? layers : "all", m->cfg.n_layer, n, err))) {
    g_prefix_error(err, "--");
    return FALSE;
  }
  if (matrices) {
    if (!lmwb_kfac_matrices_parse(matrices, mask, err)) {
      g_prefix_error(err, "--");
      return FALSE;
    }
  } else if (f) {
    *mask = 0;
    for (int i = 0; i < f->n; i++) *mask |= 1u << f->f[i].matrix;
  } else {
    *mask = (1u << LMWB_KFAC_UP) | (1u << LMWB_KFAC_DOWN) | (m->cfg.gated_mlp ? 1u << LMWB_KFAC_GATE : 0);
  }
  for (int k = 0; k < LMWB_KFAC_N_MATRICES; k++) {
    LmwbKfacInfo info;
    if ((*mask & (1u << k)) && !lmwb_kfac_info(&m->cfg, (*list)[0], (LmwbKfacMatrix)k, &info, err)) {
      g_prefix_error(err, "--matrices: ");
      return FALSE;
    }
  }
  return TRUE;
}

/* ---- collect ----------------------------------------------------------------------------------- */

int lmwb_cmd_kfac_collect(int argc, char **argv) {
  char *file = NULL, *out = NULL, *layers = NULL, *matrices = NULL, *labels = NULL;
  gint64 tokens = 0, seed = 1, stop_after = 0, ckpt_every = 0;
  int context = 0, batch = 0;
  gboolean resume = FALSE;
  GOptionEntry e[] = {
      {"file", 0, 0, G_OPTION_ARG_FILENAME, &file, "Text to collect over (required); tokenized as a whole", "TEXT"},
      {"tokens", 't', 0, G_OPTION_ARG_INT64, &tokens, "Tokens to use (default: every full window of the text)", "N"},
      {"context", 'c', 0, G_OPTION_ARG_INT, &context, "Window length (default min(512, the model's context))", "N"},
      {"layers", 'l', 0, G_OPTION_ARG_STRING, &layers, "Layers, e.g. 2-3 or 0,2 (default all)", "L"},
      {"matrices", 0, 0, G_OPTION_ARG_STRING, &matrices, "Any of up,gate,down (default: every one the model has)", "M"},
      {"labels", 0, 0, G_OPTION_ARG_STRING, &labels, "sample (from the model; default) or data (the text's next tokens)", "K"},
      {"seed", 's', 0, G_OPTION_ARG_INT64, &seed, "Seed of the sampled labels (default 1)", "S"},
      {"batch", 'b', 0, G_OPTION_ARG_INT, &batch, "Windows per forward/backward (default 8)", "N"},
      {"checkpoint-every", 0, 0, G_OPTION_ARG_INT64, &ckpt_every, "Windows between checkpoints (default 256)", "N"},
      {"resume", 0, 0, G_OPTION_ARG_NONE, &resume, "Continue the run whose checkpoint is in DIR", NULL},
      {"stop-after", 0, 0, G_OPTION_ARG_INT64, &stop_after, "Stop (with a checkpoint) after N windows of this run", "N"},
      {"out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "Factor folder to write (factors.safetensors, factors.json)", "DIR"},
      {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- collect K-FAC factors of MLP matrices over a text",
                      "Runs windows of the text forward and backward and accumulates, for each chosen matrix,\n"
                      "A = E[a aᵀ] over its input and G = E[g gᵀ] over the gradient at its output (before the bias),\n"
                      "in double precision, uncentred, over every position but each window's last. The loss of a\n"
                      "window is the sum of its next-token losses; its labels are drawn from the model's own\n"
                      "distribution (the true Fisher; --labels sample, seeded) or are the text's next tokens.\n"
                      "Writes DIR/factors.safetensors (blocks.L.mlp.{up|gate|down}.A [in, in] and .G [out, out], F32)\n"
                      "and DIR/factors.json (model, fingerprint, tokens, positions, context, labels, seed). Ctrl-C\n"
                      "stops with DIR/checkpoint.safetensors; --resume continues it.\n"
                      "Example: lmwb-batch kfac collect --file train.txt --tokens 1000000 --layers 0-3 --matrices up,down --out f",
                      KFAC_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_THREADS))
    return 2;
  if (!file) return lmwb_cli_usage_error("--file TEXT is required");
  if (!out) return lmwb_cli_usage_error("--out DIR is required");
  if (tokens < 0 || context < 0 || batch < 0 || stop_after < 0 || ckpt_every < 0 || seed < 0)
    return lmwb_cli_usage_error("--tokens, --context, --batch, --seed, --stop-after and --checkpoint-every must not be negative");
  if (labels && strcmp(labels, "sample") && strcmp(labels, "data"))
    return lmwb_cli_usage_error("--labels %s: expected sample or data", labels);
  GError *err = NULL;
  g_autoptr(LmwbModel) m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  g_autofree int *list = NULL;
  int n_layers = 0;
  unsigned mask = 0;
  if (!lmwb_kfac_cli_targets(m, NULL, layers, matrices, &list, &n_layers, &mask, &err)) return lmwb_cli_fail(err);
  if (context && (context < 2 || context > m->cfg.n_ctx))
    return lmwb_cli_usage_error("--context %d must be within 2..%d (the model's context)", context, m->cfg.n_ctx);
  if (!m->tokenizer) {
    lmwb_input_error(&err, "%s has no tokenizer to read the text with", m->dir ? m->dir : "the model");
    return lmwb_cli_fail(err);
  }
  g_autofree char *ckpt = g_build_filename(out, LMWB_KFAC_CHECKPOINT_FILE, NULL);
  g_autofree char *st_path = g_build_filename(out, LMWB_KFAC_FACTORS_FILE, NULL);
  g_autofree char *meta = g_build_filename(out, LMWB_KFAC_META_FILE, NULL);
  gboolean have_ckpt = g_file_test(ckpt, G_FILE_TEST_EXISTS);
  if (resume && !have_ckpt) return lmwb_cli_usage_error("--resume: no checkpoint in %s", out);
  if (!resume && have_ckpt)
    return lmwb_cli_usage_error("%s holds a checkpoint of an unfinished run: give --resume to continue it, or "
                                "another --out", out);
  const char *outs[] = {ckpt, st_path, meta, NULL};
  for (int i = 0; outs[i]; i++)
    if (!lmwb_input_guard_check_output(outs[i], &err)) return lmwb_cli_fail(err);
  g_autofree char *text = lmwb_cli_read_text(file, &err);
  if (!text) return lmwb_cli_fail(err);
  size_t n = 0;
  g_autofree int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, text, strlen(text), FALSE, &n, &err);
  if (!ids) {
    g_prefix_error(&err, "%s: ", file);
    return lmwb_cli_fail(err);
  }
  LmwbKfacCollectOptions o;
  lmwb_kfac_collect_options_init(&o);
  o.layers = list, o.n_layers = n_layers, o.matrices = mask;
  o.context = context ? context : MIN(LMWB_KFAC_DEFAULT_CONTEXT, m->cfg.n_ctx);
  o.tokens = tokens ? tokens : (int64_t)n;
  o.batch = batch, o.seed = (guint64)seed;
  o.labels = labels && !strcmp(labels, "data") ? LMWB_KFAC_LABELS_DATA : LMWB_KFAC_LABELS_SAMPLE;
  o.checkpoint = ckpt, o.checkpoint_every = ckpt_every, o.stop_after = stop_after;
  if (n < (size_t)o.context) {
    lmwb_input_error(&err, "%s: %zu tokens, fewer than one window of %d", file, n, o.context);
    return lmwb_cli_fail(err);
  }
  if (g_mkdir_with_parents(out, 0755) != 0) {
    lmwb_input_error(&err, "--out %s: cannot create the folder", out);
    return lmwb_cli_fail(err);
  }
  gint64 t0 = g_get_monotonic_time();
  LmwbKfacFactors *f = lmwb_kfac_collect(m, ids, n, &o, lmwb_cli_reporter(), &err);
  if (!f) return lmwb_cli_fail(err);
  double secs = (g_get_monotonic_time() - t0) / 1e6;
  if (!lmwb_kfac_save(f, out, &err)) {
    lmwb_kfac_factors_free(f);
    return lmwb_cli_fail(err);
  }
  g_unlink(ckpt);
  /* factors.json, and where and how fast */
  JsonNode *root = lmwb_kfac_factors_json(f);
  JsonObject *obj = json_node_get_object(root);
  json_object_set_string_member(obj, "out", out);
  json_object_set_int_member(obj, "text_tokens", (gint64)n);
  json_object_set_double_member(obj, "seconds", secs);
  json_object_set_double_member(obj, "tokens_per_s", secs > 0 ? f->tokens / secs : 0);
  lmwb_kfac_factors_free(f);
  return lmwb_cli_emit_json(root, NULL, &err) ? 0 : lmwb_cli_fail(err);
}

/* ---- merge ------------------------------------------------------------------------------------- */

int lmwb_cmd_kfac_merge(int argc, char **argv) {
  char **dirs = NULL, *weights = NULL, *out = NULL;
  GOptionEntry e[] = {
      {"factors", 'f', 0, G_OPTION_ARG_FILENAME_ARRAY, &dirs, "A factor folder from kfac collect (give two or more)", "DIR"},
      {"weights", 'w', 0, G_OPTION_ARG_STRING, &weights, "Shares of the folders, in order, e.g. 0.6,0.4 (default: by positions)", "W"},
      {"out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "Factor folder to write (factors.safetensors, factors.json)", "DIR"},
      {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- K-FAC factors over several texts as one mixture",
                      "The edit keeps the components of W that its collection text exercises and removes the rest,\n"
                      "so the text says what the edited model keeps. Collect over each text that holds something to\n"
                      "keep (and none of the memorised text), then merge: each A and G becomes the weighted mean of\n"
                      "the folders'. Without --weights each folder counts by its positions, which is the same as\n"
                      "collecting over all their windows; --weights sets the shares of the mixture instead (they are\n"
                      "normalised to sum to 1). The folders must come from the same model, with the same labels,\n"
                      "context and matrices. factors.json lists the parts and their shares.\n"
                      "Example: lmwb-batch kfac merge --factors facts-f --factors brown-f --weights 0.6,0.4 --out f",
                      KFAC_HELP, e, 0))
    return 2;
  g_auto(GStrv) owned = dirs;
  int n = dirs ? (int)g_strv_length(dirs) : 0;
  if (n < 2) return lmwb_cli_usage_error("--factors DIR is needed at least twice (the folders to merge)");
  if (!out) return lmwb_cli_usage_error("--out DIR is required");
  g_autofree double *w = NULL;
  GError *err = NULL;
  if (weights) {
    int nw = 0;
    if (!lmwb_kfac_values_parse(weights, "--weights", INFINITY, &w, &nw, &err)) return lmwb_cli_fail(err);
    if (nw != n) return lmwb_cli_usage_error("--weights gives %d shares for %d folders", nw, n);
  }
  g_autofree char *st_path = g_build_filename(out, LMWB_KFAC_FACTORS_FILE, NULL);
  g_autofree char *meta = g_build_filename(out, LMWB_KFAC_META_FILE, NULL);
  LmwbKfacFactors *merged = lmwb_kfac_load_merged((const char *const *)dirs, n, w, NULL, &err);
  if (!merged) return lmwb_cli_fail(err);
  int status = 0;
  if (!lmwb_input_guard_check_output(st_path, &err) || !lmwb_input_guard_check_output(meta, &err) ||
      !lmwb_kfac_save(merged, out, &err)) {
    status = lmwb_cli_fail(err);
  } else {
    JsonNode *root = lmwb_kfac_factors_json(merged);
    json_object_set_string_member(json_node_get_object(root), "out", out);
    if (!lmwb_cli_emit_json(root, NULL, &err)) status = lmwb_cli_fail(err);
  }
  lmwb_kfac_factors_free(merged);
  return status;
}

/* ---- spectrum ---------------------------------------------------------------------------------- */

#define CURVE_POINTS 64
static const double MASS_MARKS[] = {0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99};

static void add_doubles(JsonBuilder *b, const char *k, const double *v, int n) {
  json_builder_set_member_name(b, k);
  json_builder_begin_array(b);
  for (int i = 0; i < n; i++) json_builder_add_double_value(b, v[i]);
  json_builder_end_array(b);
}

int lmwb_cmd_kfac_spectrum(int argc, char **argv) {
  char *factors = NULL, *plot_mass = NULL, *plot_eigen = NULL;
  GOptionEntry e[] = {
      {"factors", 'f', 0, G_OPTION_ARG_FILENAME, &factors, "Factor folder from kfac collect (required)", "DIR"},
      {"plot-mass", 0, 0, G_OPTION_ARG_FILENAME, &plot_mass, "Draw the mass curves to a .png, .svg or .pdf", "FILE"},
      {"plot-eigen", 0, 0, G_OPTION_ARG_FILENAME, &plot_eigen, "Draw the eigenvalues (log scale) to a .png, .svg or .pdf", "FILE"},
      {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- eigenvalues of K-FAC factors and the curvature mass curve",
                      "For each matrix of the factor folder: the eigenvalues of A (μ) and G (λ), descending, and the\n"
                      "curvature mass curve: as the threshold on λ_i μ_j falls, the share of the components kept (x)\n"
                      "against the share of the total mass (Σλ)(Σμ) they hold (y). A curve that rises steeply means a\n"
                      "few components carry most of the curvature, and keeping ρ of the mass removes many. For each\n"
                      "mass in 0.5 .. 0.99 the JSON gives the share of components that keep it.\n"
                      "Example: lmwb-batch kfac spectrum --factors f --plot-mass mass.png --plot-eigen eig.png",
                      KFAC_HELP, e, LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if (!factors) return lmwb_cli_usage_error("--factors DIR is required");
  if (!lmwb_kfac_cli_plot_path("--plot-mass", plot_mass) || !lmwb_kfac_cli_plot_path("--plot-eigen", plot_eigen))
    return 2;
  GError *err = NULL;
  LmwbKfacFactors *f = lmwb_kfac_load(factors, NULL, &err);
  if (!f) return lmwb_cli_fail(err);
  LmwbPlot *pm = lmwb_plot_new(LMWB_PLOT_LINE, "K-FAC curvature mass", "share of components kept", "share of curvature mass");
  LmwbPlot *pe = lmwb_plot_new(LMWB_PLOT_LINE, "K-FAC eigenvalues", "rank / dimension", "eigenvalue");
  lmwb_plot_set_log_y(pe, TRUE);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "factors");
  json_builder_begin_array(b);
  int status = 0;
  for (int i = 0; i < f->n; i++) {
    LmwbKfacEigen eg;
    if (!lmwb_kfac_eigen(&f->f[i], &eg, &err)) {
      status = lmwb_cli_fail(err);
      break;
    }
    g_autofree char *name = g_strdup_printf("blocks.%d.mlp.%s", f->f[i].layer, lmwb_kfac_matrix_name(f->f[i].matrix));
    double fc[CURVE_POINTS], fm[CURVE_POINTS];
    lmwb_kfac_mass_curve(&eg, CURVE_POINTS, fc, fm);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, name);
    add_doubles(b, "A_eigenvalues", eg.mu, eg.d_in);
    add_doubles(b, "G_eigenvalues", eg.lambda, eg.d_out);
    json_builder_set_member_name(b, "mass_curve");
    json_builder_begin_object(b);
    add_doubles(b, "components", fc, CURVE_POINTS);
    add_doubles(b, "mass", fm, CURVE_POINTS);
    json_builder_end_object(b);
    json_builder_set_member_name(b, "components_for_mass");
    json_builder_begin_object(b);
    for (size_t k = 0; k < G_N_ELEMENTS(MASS_MARKS); k++) {
      int64_t kept = 0;
      lmwb_kfac_threshold(&eg, MASS_MARKS[k], NULL, &kept);
      char key[16];
      g_snprintf(key, sizeof key, "%g", MASS_MARKS[k]);
      json_builder_set_member_name(b, key);
      json_builder_add_double_value(b, (double)kept / ((double)eg.d_in * eg.d_out));
    }
    json_builder_end_object(b);
    json_builder_end_object(b);
    int s = lmwb_plot_add_series(pm, name);
    for (int q = 0; q < CURVE_POINTS; q++) lmwb_plot_append(pm, s, fc[q], fm[q]);
    g_autofree char *an = g_strconcat(name, ".A", NULL), *gn = g_strconcat(name, ".G", NULL);
    int sa = lmwb_plot_add_series(pe, an), sg = lmwb_plot_add_series(pe, gn);
    for (int j = 0; j < eg.d_in; j++) lmwb_plot_append(pe, sa, (j + 0.5) / eg.d_in, eg.mu[j]);
    for (int j = 0; j < eg.d_out; j++) lmwb_plot_append(pe, sg, (j + 0.5) / eg.d_out, eg.lambda[j]);
    lmwb_kfac_eigen_clear(&eg);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  if (!status && plot_mass && !lmwb_plot_save(pm, plot_mass, 900, 560, &err)) status = lmwb_cli_fail(err);
  if (!status && plot_eigen && !lmwb_plot_save(pe, plot_eigen, 900, 560, &err)) status = lmwb_cli_fail(err);
  lmwb_plot_free(pm);
  lmwb_plot_free(pe);
  lmwb_kfac_factors_free(f);
  if (status) return status;
  return lmwb_cli_emit_json(json_builder_get_root(b), lmwb_cli.out, &err) ? 0 : lmwb_cli_fail(err);
}

/* ---- edit -------------------------------------------------------------------------------------- */

JsonNode *lmwb_kfac_cli_stats_json(const LmwbKfacEditStats *s, int n) {
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_array(b);
  for (int i = 0; i < n; i++) {
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "layer");
    json_builder_add_int_value(b, s[i].layer);
    json_builder_set_member_name(b, "matrix");
    json_builder_add_string_value(b, lmwb_kfac_matrix_name(s[i].matrix));
    json_builder_set_member_name(b, "kept_mass");
    json_builder_add_double_value(b, s[i].kept_mass);
    json_builder_set_member_name(b, "kept_components");
    json_builder_add_double_value(b, s[i].kept_fraction);
    json_builder_set_member_name(b, "relative_change");
    json_builder_add_double_value(b, s[i].rel_change);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  return json_builder_get_root(b);
}

int lmwb_cmd_kfac_edit(int argc, char **argv) {
  char *factors = NULL, *out = NULL, *layers = NULL, *matrices = NULL, *dtype = NULL;
  double rho = NAN;
  GOptionEntry e[] = {
      {"factors", 'f', 0, G_OPTION_ARG_FILENAME, &factors, "Factor folder from kfac collect on this model (required)", "DIR"},
      {"layers", 'l', 0, G_OPTION_ARG_STRING, &layers, "Layers to edit, e.g. 0-3 (default: those of the factors)", "L"},
      {"matrices", 0, 0, G_OPTION_ARG_STRING, &matrices, "Any of up,gate,down (default: those of the factors)", "M"},
      {"keep-mass", 'r', 0, G_OPTION_ARG_DOUBLE, &rho, "ρ in (0, 1]: the share of curvature mass to keep (required)", "RHO"},
      {"dtype", 0, 0, G_OPTION_ARG_STRING, &dtype, "Store the weights as F32, F16 or BF16 (default: the source's)", "T"},
      {"out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "Folder to write the edited model into (required)", "DIR"},
      {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- remove low-curvature components of MLP matrices (K-FAC edit)",
                      "For each chosen matrix: eigendecompose A and G, rotate W into their eigenbasis, keep the\n"
                      "components of largest curvature λ_i μ_j until they hold ρ of the total mass (a threshold\n"
                      "found by bisection), zero the rest, and rotate back. Writes a normal Hugging Face folder\n"
                      "(config.json, model.safetensors, the tokenizer) atomically; the source is never written.\n"
                      "Prints, for each matrix, the mass and share of components kept and ||W' - W|| / ||W||.\n"
                      "Example: lmwb-batch kfac edit --factors f --layers 0-3 --matrices up,down --keep-mass 0.8 --out edited",
                      KFAC_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_THREADS))
    return 2;
  if (!factors) return lmwb_cli_usage_error("--factors DIR is required");
  if (!out) return lmwb_cli_usage_error("--out DIR is required");
  if (isnan(rho)) return lmwb_cli_usage_error("--keep-mass RHO is required");
  if (!(rho > 0 && rho <= 1)) return lmwb_cli_usage_error("--keep-mass %g must be in (0, 1]", rho);
  if (dtype && strcmp(dtype, "F32") && strcmp(dtype, "F16") && strcmp(dtype, "BF16"))
    return lmwb_cli_usage_error("--dtype %s: expected F32, F16 or BF16", dtype);
  GError *err = NULL;
  g_autoptr(LmwbModel) m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  if (m->dir) {
    g_autofree char *a = g_canonicalize_filename(m->dir, NULL), *o = g_canonicalize_filename(out, NULL);
    if (!strcmp(a, o)) return lmwb_cli_usage_error("--out %s is the source model's folder; give another", out);
  }
  LmwbKfacFactors *f = lmwb_kfac_load(factors, m, &err);
  if (!f) return lmwb_cli_fail(err);
  g_autofree int *list = NULL;
  int n_layers = 0;
  unsigned mask = 0;
  if (!lmwb_kfac_cli_targets(m, f, layers, matrices, &list, &n_layers, &mask, &err)) {
    lmwb_kfac_factors_free(f);
    return lmwb_cli_fail(err);
  }
  LmwbKfacEditStats *st = NULL;
  int n_st = 0;
  LmwbModel *ed = lmwb_kfac_edit(m, f, list, n_layers, mask, rho, NULL, &st, &n_st, &err);
  lmwb_kfac_factors_free(f);
  if (!ed) return lmwb_cli_fail(err);
  const char *store = dtype ? dtype : m->source_dtype;
  gboolean ok = lmwb_model_save(ed, out, store, NULL, &err);
  lmwb_model_unref(ed);
  if (!ok) {
    g_free(st);
    return lmwb_cli_fail(err);
  }
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "out");
  json_builder_add_string_value(b, out);
  json_builder_set_member_name(b, "keep_mass");
  json_builder_add_double_value(b, rho);
  json_builder_set_member_name(b, "dtype");
  json_builder_add_string_value(b, store);
  json_builder_set_member_name(b, "matrices");
  json_builder_add_value(b, lmwb_kfac_cli_stats_json(st, n_st));
  json_builder_end_object(b);
  g_free(st);
  return lmwb_cli_emit_json(json_builder_get_root(b), NULL, &err) ? 0 : lmwb_cli_fail(err);
}
