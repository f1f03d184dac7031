#include "ui/batch/cli.h"
#include "analysis/codebooks.h"
#include "analysis/neurons.h"
#include "app/core/atomic_file.h"
#include "app/core/inputs.h"
#include "app/formats/half.h"
#include "app/formats/json_text.h"
#include "app/formats/npy.h"
#include "app/formats/tokenizer.h"
#include "app/train/corpus.h"
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

LmwbCliCommon lmwb_cli;

static const GOptionEntry model_entry[] = {
  {"model", 'm', 0, G_OPTION_ARG_FILENAME, &lmwb_cli.model,
   "Hugging Face model folder (config.json, *.safetensors, tokenizer.json); default: the built-in model", "DIR"},
  {NULL}};
static const GOptionEntry out_entry[] = {
  {"out", 'o', 0, G_OPTION_ARG_FILENAME, &lmwb_cli.out, "Write the result to FILE (atomically) instead of stdout", "FILE"},
  {NULL}};
static const GOptionEntry threads_entry[] = {
  {"threads", 0, 0, G_OPTION_ARG_INT, &lmwb_cli.threads, "Compute threads (default: all cores)", "N"},
  {NULL}};
static const GOptionEntry clamp_entries[] = {
  {"clamp", 0, 0, G_OPTION_ARG_STRING_ARRAY, &lmwb_cli.clamps,
   "Clamp MLP neuron N of layer L to VALUE (at every position, or only at the listed positions); repeatable", "L:N=VALUE[@P1,P2]"},
  {"clamp-site", 0, 0, G_OPTION_ARG_STRING, &lmwb_cli.clamp_site,
   "Where clamps act: post (after the activation function, default) or pre (before it)", "post|pre"},
  {"codebooks", 0, 0, G_OPTION_ARG_FILENAME, &lmwb_cli.codebooks,
   "Splice a codebook set (codebooks.json + codebooks.safetensors) into the model", "DIR"},
  {"clamp-code", 0, 0, G_OPTION_ARG_STRING_ARRAY, &lmwb_cli.clamp_codes,
   "Force code CODE on at a --codebooks site (every head without HEAD; all k slots, or slot #SLOT; every position "
   "or the listed ones, generated ones included); repeatable", "L:SITE[:HEAD]=CODE[@P1,P2][#SLOT]"},
  {NULL}};

static LmwbCodebooks *cli_codebooks;
static LmwbCodebookRun *cli_codebook_run;

gboolean lmwb_cli_parse(int *argc, char ***argv, const char *usage, const char *summary, const char *description,
                        const GOptionEntry *entries, unsigned common) {
  g_autoptr(GOptionContext) ctx = g_option_context_new(usage);
  if (summary) g_option_context_set_summary(ctx, summary);
  if (description) g_option_context_set_description(ctx, description);
  if (entries) g_option_context_add_main_entries(ctx, entries, NULL);
  if (common & LMWB_CLI_MODEL) g_option_context_add_main_entries(ctx, model_entry, NULL);
  if (common & LMWB_CLI_OUT) g_option_context_add_main_entries(ctx, out_entry, NULL);
  if (common & LMWB_CLI_THREADS) g_option_context_add_main_entries(ctx, threads_entry, NULL);
  if (common & LMWB_CLI_CLAMP) g_option_context_add_main_entries(ctx, clamp_entries, NULL);
  GError *err = NULL;
  if (!g_option_context_parse(ctx, argc, argv, &err)) {
    fprintf(stderr, "lmwb-batch: error: %s (see --help)\n", err->message);
    g_error_free(err);
    return FALSE;
  }
  if (*argc > 1) {
    fprintf(stderr, "lmwb-batch: error: unexpected argument \"%s\" (see --help)\n", (*argv)[1]);
    return FALSE;
  }
  return TRUE;
}

int lmwb_cli_fail(GError *err) {
  int status = lmwb_error_exit_status(err);
  fprintf(stderr, "\nlmwb-batch: error: %s\n", err ? err->message : "unknown error");
  if (err) g_error_free(err);
  return status;
}

int lmwb_cli_usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  fprintf(stderr, "lmwb-batch: error: %s (see --help)\n", msg);
  return 2;
}

const char *lmwb_cli_default_model_dir(void) {
  return lmwb_model_default_dir(LMWB_BUILTIN_MODEL_DIR, LMWB_INSTALLED_MODEL_DIR);
}

LmwbModel *lmwb_cli_load_model(GError **error) {
  const char *dir = lmwb_cli.model ? lmwb_cli.model : lmwb_cli_default_model_dir();
  if (lmwb_cli.threads < 0) {
    lmwb_input_error(error, "--threads %d must be positive", lmwb_cli.threads);
    return NULL;
  }
  LmwbModel *m = lmwb_model_load(dir, error);
  /* --out into the model folder is refused now, not after the work. */
  if (m && lmwb_cli.out && !lmwb_input_guard_check_output(lmwb_cli.out, error)) g_clear_pointer(&m, lmwb_model_unref);
  if (m && lmwb_cli.threads > 0 && m->be->set_threads) m->be->set_threads(lmwb_cli.threads);
  return m;
}

gboolean lmwb_cli_apply_clamps(LmwbRunner *r, GError **error) {
  const LmwbConfig *c = &lmwb_runner_model(r)->cfg;
  gboolean at_pre = lmwb_cli.clamp_site && !strcmp(lmwb_cli.clamp_site, "pre");
  if (lmwb_cli.clamp_site && !at_pre && strcmp(lmwb_cli.clamp_site, "post")) {
    lmwb_input_error(error, "--clamp-site \"%s\": expected post or pre", lmwb_cli.clamp_site);
    return FALSE;
  }
  for (char **p = lmwb_cli.clamps; p && *p; p++) {
    LmwbNeuronClamp s;
    if (!lmwb_neuron_clamp_parse(c, *p, &s, error)) {
      g_prefix_error(error, "--clamp: ");
      return FALSE;
    }
    s.at_pre = at_pre;
    int id = lmwb_neuron_clamp_add(r, &s, error);
    lmwb_neuron_clamp_clear(&s);
    if (!id) return FALSE;
  }
  if (!lmwb_cli.codebooks) {
    if (lmwb_cli.clamp_codes && *lmwb_cli.clamp_codes) {
      lmwb_input_error(error, "--clamp-code \"%s\": needs --codebooks DIR (the set whose codes it forces)",
                       *lmwb_cli.clamp_codes);
      return FALSE;
    }
    return TRUE;
  }
  if (!(cli_codebooks = lmwb_codebooks_load(lmwb_cli.codebooks, c, error))) {
    g_prefix_error(error, "--codebooks: ");
    return FALSE;
  }
  if (!(cli_codebook_run = lmwb_codebooks_attach(r, cli_codebooks, error))) return FALSE;
  for (char **p = lmwb_cli.clamp_codes; p && *p; p++) {
    LmwbCodeClamp cc;
    if (!lmwb_code_clamp_parse(c, *p, &cc, error)) {
      g_prefix_error(error, "--clamp-code: ");
      return FALSE;
    }
    gboolean ok = lmwb_codebook_run_clamp(cli_codebook_run, &cc, error);
    lmwb_code_clamp_clear(&cc);
    if (!ok) {
      g_prefix_error(error, "--clamp-code \"%s\": ", *p);
      return FALSE;
    }
  }
  return TRUE;
}

gboolean lmwb_cli_check_clamp_positions(int length, GError **error) {
  if (!cli_codebook_run || lmwb_codebook_run_check_positions(cli_codebook_run, length, error)) return TRUE;
  g_prefix_error(error, "--clamp-code: ");
  return FALSE;
}

LmwbCodebookRun *lmwb_cli_codebook_run(void) { return cli_codebook_run; }

void lmwb_cli_release_clamps(LmwbRunner *r) {
  lmwb_codebooks_detach(r, cli_codebook_run);
  cli_codebook_run = NULL;
  g_clear_pointer(&cli_codebooks, lmwb_codebooks_free);
}

gboolean lmwb_cli_parse_ids(const char *text, int32_t **ids, int *B, int *T, GError **error) {
  g_auto(GStrv) rows = g_strsplit(text, ";", -1);
  int nb = 0, nt = -1;
  GArray *all = g_array_new(FALSE, FALSE, sizeof(int32_t));
  for (char **row = rows; *row; row++) {
    if (!*g_strstrip(*row)) continue;
    g_auto(GStrv) items = g_strsplit(*row, ",", -1);
    int n = 0;
    for (char **it = items; *it; it++) {
      char *s = g_strstrip(*it), *end = NULL;
      gint64 v = g_ascii_strtoll(s, &end, 10);
      if (!*s || *end || v < 0 || v > G_MAXINT32) {
        lmwb_input_error(error, "--ids: \"%s\" in sequence %d is not a token id", s, nb);
        g_array_free(all, TRUE);
        return FALSE;
      }
      int32_t id = (int32_t)v;
      g_array_append_val(all, id);
      n++;
    }
    if (nt >= 0 && n != nt) {
      lmwb_input_error(error, "--ids: sequence %d has %d tokens but sequence 0 has %d (rows must be of equal length)", nb, n, nt);
      g_array_free(all, TRUE);
      return FALSE;
    }
    nt = n;
    nb++;
  }
  if (nb == 0 || nt <= 0) {
    lmwb_input_error(error, "--ids: no token ids given (e.g. --ids \"464,3290,318;464,3797,318\")");
    g_array_free(all, TRUE);
    return FALSE;
  }
  *B = nb;
  *T = nt;
  *ids = (int32_t *)g_array_free(all, FALSE);
  return TRUE;
}

gboolean lmwb_cli_input_ids(LmwbModel *m, const char *ids_text, const char *text, int32_t **ids, int *B, int *T,
                            GError **error) {
  if ((ids_text != NULL) == (text != NULL)) {
    lmwb_input_error(error, "give exactly one of --ids or --text");
    return FALSE;
  }
  if (ids_text) return lmwb_cli_parse_ids(ids_text, ids, B, T, error);
  if (!m->tokenizer) {
    lmwb_input_error(error, "%s has no tokenizer: use --ids", m->dir);
    return FALSE;
  }
  size_t n = 0;
  *ids = lmwb_tokenizer_encode(m->tokenizer, text, strlen(text), TRUE, &n, error);
  if (!*ids) return FALSE;
  if (n == 0) {
    g_free(*ids);
    lmwb_input_error(error, "--text encodes to no tokens");
    return FALSE;
  }
  *B = 1;
  *T = (int)n;
  return TRUE;
}

/* The first member (or element) holding a number that is not finite, as a path like
 * "perplexity" or "rows[3].p"; NULL when all are finite. */
static char *nonfinite_member(JsonNode *n, const char *where) {
  if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_DOUBLE)
    return isfinite(json_node_get_double(n)) ? NULL : g_strdup(*where ? where : "the result");
  char *hit = NULL;
  if (JSON_NODE_HOLDS_OBJECT(n)) {
    JsonObjectIter it;
    const char *key;
    JsonNode *child;
    json_object_iter_init(&it, json_node_get_object(n));
    while (!hit && json_object_iter_next(&it, &key, &child)) {
      g_autofree char *w = *where ? g_strdup_printf("%s.%s", where, key) : g_strdup(key);
      hit = nonfinite_member(child, w);
    }
  } else if (JSON_NODE_HOLDS_ARRAY(n)) {
    JsonArray *a = json_node_get_array(n);
    for (guint i = 0; !hit && i < json_array_get_length(a); i++) {
      g_autofree char *w = g_strdup_printf("%s[%u]", where, i);
      hit = nonfinite_member(json_array_get_element(a, i), w);
    }
  }
  return hit;
}

gboolean lmwb_cli_emit_json(JsonNode *root, const char *out, GError **error) {
  g_autofree char *bad = nonfinite_member(root, "");
  if (bad) {
    json_node_unref(root);
    g_set_error(error, LMWB_ERROR, LMWB_ERROR_FAILED, "the result \"%s\" is not a finite number (NaN or infinity); "
                "nothing written", bad);
    return FALSE;
  }
  size_t len = 0;
  g_autofree char *s = lmwb_json_generate(root, out == NULL && isatty(1), &len);
  json_node_unref(root);
  if (out) {
    GString *g = g_string_new_len(s, len);
    g_string_append_c(g, '\n');
    gboolean ok = lmwb_file_write_atomic(out, g->str, g->len, error);
    g_string_free(g, TRUE);
    return ok;
  }
  fwrite(s, 1, len, stdout);
  fputc('\n', stdout);
  fflush(stdout);
  return TRUE;
}

gboolean lmwb_cli_write_npy(const char *out, const char *what, const float *data, const int64_t *shape, int ndim,
                            GError **error) {
  size_t n = 1;
  for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
  size_t bad = lmwb_f32_find_nonfinite(data, n);
  if (bad < n) {
    GString *at = g_string_new(NULL);
    for (int i = ndim - 1, rest = 0; i >= 0; i--, rest = 1) {
      g_string_prepend(at, rest ? "," : "");
      g_autofree char *k = g_strdup_printf("%zu", (size_t)(bad % (size_t)shape[i]));
      g_string_prepend(at, k);
      bad /= (size_t)shape[i];
    }
    g_set_error(error, LMWB_ERROR, LMWB_ERROR_FAILED, "%s: the %s at [%s] is not a finite number (NaN or infinity): "
                "the model's weights overflow; nothing written", out, what, at->str);
    g_string_free(at, TRUE);
    return FALSE;
  }
  return lmwb_npy_write_f32(out, data, shape, ndim, error);
}

/* Every --file, tokenised and joined; each must hold text. */
int32_t *lmwb_cli_read_token_files(LmwbModel *m, char **files, size_t *n, GError **error) {
  GArray *all = g_array_new(FALSE, FALSE, sizeof(int32_t));
  for (char **f = files; *f; f++) {
    g_autofree char *text = lmwb_cli_read_text(*f, error);
    if (!text) {
      g_array_free(all, TRUE);
      return NULL;
    }
    size_t k = 0;
    g_autofree int32_t *ids = *text ? lmwb_tokenizer_encode(m->tokenizer, text, strlen(text), FALSE, &k, error) : NULL;
    if (*text && !ids) {
      g_prefix_error(error, "%s: ", *f);
      g_array_free(all, TRUE);
      return NULL;
    }
    if (k == 0) {
      lmwb_input_error(error, "%s holds no text", *f);
      g_array_free(all, TRUE);
      return NULL;
    }
    g_array_append_vals(all, ids, (guint)k);
  }
  *n = all->len;
  return (int32_t *)g_array_free(all, FALSE);
}

char *lmwb_cli_read_text(const char *path, GError **error) {
  size_t len = 0;
  char *data = lmwb_file_read(path, LMWB_TEXT_MAX_BYTES, LMWB_READ_STREAM, &len, error);
  if (!data) return NULL;
  if (!g_utf8_validate(data, (gssize)len, NULL)) {
    g_free(data);
    lmwb_input_error(error, "%s is not valid UTF-8 text", path);
    return NULL;
  }
  if (lmwb_cli.out && !lmwb_input_guard_check_output(lmwb_cli.out, error)) g_clear_pointer(&data, g_free);
  return data;
}

void lmwb_json_add_ids(JsonBuilder *b, const int32_t *ids, size_t n) {
  json_builder_begin_array(b);
  for (size_t i = 0; i < n; i++) json_builder_add_int_value(b, ids[i]);
  json_builder_end_array(b);
}

void lmwb_json_add_tokens(JsonBuilder *b, const LmwbModel *m, const int32_t *ids, size_t n) {
  json_builder_begin_array(b);
  for (size_t i = 0; i < n; i++) {
    g_autofree char *t = m->tokenizer ? lmwb_tokenizer_token_text(m->tokenizer, ids[i]) : NULL;
    if (!t) t = g_strdup_printf("<%d>", ids[i]);
    json_builder_add_string_value(b, t);
  }
  json_builder_end_array(b);
}

/* ---- progress bar ------------------------------------------------------------------------- */

typedef struct {
  LmwbReporter r;
  gint64 start, last_draw;
  gboolean tty;
} CliReporter;

static CliReporter cli_rep;
static gint reporter_active;

static void on_signal(int sig) {
  if (sig == SIGINT && g_atomic_int_get(&reporter_active) && !g_atomic_int_get(&cli_rep.r.cancel_requested)) {
    g_atomic_int_set(&cli_rep.r.cancel_requested, 1);
    static const char msg[] = "\nlmwb-batch: cancelling (Ctrl-C again to quit at once)\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    return;
  }
  lmwb_atomic_file_remove_temps();
  signal(sig, SIG_DFL);
  raise(sig);
}

void lmwb_cli_install_signal_handlers(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE};
  for (size_t i = 0; i < G_N_ELEMENTS(sigs); i++) sigaction(sigs[i], &sa, NULL);
}

static void draw_progress(LmwbReporter *r, double f, const char *stage) {
  CliReporter *c = (CliReporter *)r;
  if (!c->tty) return;
  gint64 now = g_get_monotonic_time();
  if (now - c->last_draw < 100000 && f < 1.0) return;
  c->last_draw = now;
  double el = (now - c->start) / 1e6;
  double eta = f > 0.001 ? el * (1 - f) / f : 0;
  int w = 30, k = (int)(f * w);
  char bar[64];
  for (int i = 0; i < w; i++) bar[i] = i < k ? '#' : '.';
  bar[w] = 0;
  fprintf(stderr, "\r%-22.22s [%s] %5.1f%%  %5.0fs elapsed, ETA %5.0fs ", stage ? stage : "", bar, 100 * f, el, eta);
  if (f >= 1.0) fputc('\n', stderr);
  fflush(stderr);
}

static void print_log(LmwbReporter *r, const char *msg) {
  (void)r;
  fprintf(stderr, "%s\n", msg);
}

LmwbReporter *lmwb_cli_reporter(void) {
  cli_rep.r.progress = draw_progress;
  cli_rep.r.log = print_log;
  cli_rep.start = g_get_monotonic_time();
  cli_rep.tty = isatty(2);
  g_atomic_int_set(&reporter_active, 1);
  return &cli_rep.r;
}

void lmwb_json_member_double(JsonBuilder *b, const char *key, double v) {
  json_builder_set_member_name(b, key);
  json_builder_add_double_value(b, v);
}

void lmwb_json_member_double_or_null(JsonBuilder *b, const char *key, double v) {
  json_builder_set_member_name(b, key);
  if (isfinite(v)) json_builder_add_double_value(b, v);
  else json_builder_add_null_value(b);
}

void lmwb_json_member_int(JsonBuilder *b, const char *key, gint64 v) {
  json_builder_set_member_name(b, key);
  json_builder_add_int_value(b, v);
}

void lmwb_json_member_string(JsonBuilder *b, const char *key, const char *v) {
  json_builder_set_member_name(b, key);
  json_builder_add_string_value(b, v);
}

char *lmwb_cli_default_brown(GError **error) {
  char *brown = lmwb_corpus_brown_path(LMWB_BUILTIN_MODEL_DIR);
  if (g_file_test(brown, G_FILE_TEST_IS_REGULAR)) return brown;
  lmwb_input_error(error, "no Brown corpus at %s (set LMWB_SHARED to the folder holding data/brown/brown.txt, or "
                   "give a text file)", brown);
  g_free(brown);
  return NULL;
}

gboolean lmwb_cli_plot_path_ok(const char *path) {
  const char *dot = strrchr(path, '.');
  return dot && (!g_ascii_strcasecmp(dot, ".png") || !g_ascii_strcasecmp(dot, ".svg") || !g_ascii_strcasecmp(dot, ".pdf"));
}
