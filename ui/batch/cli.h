/* Shared plumbing of the lmwb-batch subcommands: option parsing with the common options,
 * model loading (the built-in model when --model is omitted), id lists, JSON/.npy output,
 * a terminal progress bar with Ctrl-C cancel, and error reporting with the exit statuses
 * (2: bad input, 1: failure). No GTK here: lmwb-batch runs on a display-less server. */
#pragma once
#include "app/core/errors.h"
#include "app/engine/runner.h"
#include "app/jobs/reporter.h"
#include <json-glib/json-glib.h>

typedef struct LmwbCommand {
  const char *name;    /* e.g. "logits" or "neurons decode" */
  const char *summary; /* one line for the command list */
  int (*run)(int argc, char **argv);
} LmwbCommand;

/* Options most commands share; fill by adding lmwb_cli_common_entries() to a context. */
typedef struct LmwbCliCommon {
  char *model;    /* --model DIR */
  char *out;      /* --out FILE */
  int threads;    /* --threads N */
  char **clamps;  /* --clamp L:N=V[@P,...] (repeatable) */
  char *clamp_site; /* --clamp-site post|pre */
  char *codebooks;  /* --codebooks DIR: a codebook set spliced into every run (analysis/codebooks.h) */
  char **clamp_codes; /* --clamp-code L:SITE[:HEAD]=CODE[@P,...][#SLOT] (repeatable) */
} LmwbCliCommon;

extern LmwbCliCommon lmwb_cli;

enum {
  LMWB_CLI_MODEL = 1 << 0,
  LMWB_CLI_OUT = 1 << 1,
  LMWB_CLI_THREADS = 1 << 2,
  LMWB_CLI_CLAMP = 1 << 3,
};

/* Parse argv with the given entries plus the common ones selected by `common` (flags above).
 * On --help prints and exits 0; on a parse error prints it and returns FALSE (exit 2). */
gboolean lmwb_cli_parse(int *argc, char ***argv, const char *usage, const char *summary, const char *description,
                        const GOptionEntry *entries, unsigned common);

/* Print "lmwb-batch: error: ..." to stderr, free the error; returns the exit status. */
int lmwb_cli_fail(GError *err);
int lmwb_cli_usage_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

const char *lmwb_cli_default_model_dir(void);
/* The Brown corpus the built-in model was trained on: $LMWB_SHARED/data/brown/brown.txt, else the
 * shared folder beside this checkout (as data/models/tiny-world/rebuild.sh finds it). g_free it;
 * NULL with an input error saying where it looked. */
char *lmwb_cli_default_brown(GError **error);
/* Load --model (or the built-in model), set threads. */
LmwbModel *lmwb_cli_load_model(GError **error);
/* Add the --clamp hooks to a runner (validated against the model), and the --codebooks set with
 * its --clamp-code clamps (a code clamp without --codebooks is an input error). */
gboolean lmwb_cli_apply_clamps(LmwbRunner *r, GError **error);
/* Every --clamp-code position is below `length` (the run's tokens, generated ones included). */
gboolean lmwb_cli_check_clamp_positions(int length, GError **error);
/* The attached codebook set of lmwb_cli_apply_clamps, or NULL. */
struct LmwbCodebookRun *lmwb_cli_codebook_run(void);
/* Detach the codebooks from r (before r is freed) and free them. */
void lmwb_cli_release_clamps(LmwbRunner *r);

/* "1,2,3;4,5,6" -> ids [B*T]; rows must be of equal length. */
gboolean lmwb_cli_parse_ids(const char *text, int32_t **ids, int *B, int *T, GError **error);
/* --ids or --text (encoded with the model's tokenizer, add_special as HF's default). */
gboolean lmwb_cli_input_ids(LmwbModel *m, const char *ids_text, const char *text, int32_t **ids, int *B, int *T,
                            GError **error);

/* Write JSON to --out (atomic) or stdout. Takes ownership of root. A number that is not finite
 * (NaN, infinity) is never written: failure (exit 1) naming the member. */
gboolean lmwb_cli_emit_json(JsonNode *root, const char *out, GError **error);
/* Write a float32 .npy array to `out` unless a value is not finite (failure naming `what` and the
 * element). */
gboolean lmwb_cli_write_npy(const char *out, const char *what, const float *data, const int64_t *shape, int ndim,
                            GError **error);
/* Read a whole UTF-8 text file, a regular file or a pipe, of at most LMWB_TEXT_MAX_BYTES (input
 * error naming it on failure). */
char *lmwb_cli_read_text(const char *path, GError **error);
/* Every file of a NULL-terminated list read as above, tokenised with the model's tokenizer and
 * joined (g_free); a file without text is an input error naming it. */
int32_t *lmwb_cli_read_token_files(LmwbModel *m, char **files, size_t *n, GError **error);

/* SIGINT, SIGTERM, SIGHUP, SIGQUIT and SIGPIPE: temporary files are removed before the process
 * dies; while a reporter is active the first Ctrl-C only asks the job to cancel. */
void lmwb_cli_install_signal_handlers(void);
/* A reporter that draws a progress bar on stderr (when it is a terminal) and cancels on Ctrl-C. */
LmwbReporter *lmwb_cli_reporter(void);

/* Object members for JsonBuilder: a number (lmwb_cli_emit_json refuses it when not finite), a
 * number written as null when it is not finite (where null has a documented meaning), an integer,
 * a string. */
void lmwb_json_member_double(JsonBuilder *b, const char *key, double v);
void lmwb_json_member_double_or_null(JsonBuilder *b, const char *key, double v);
void lmwb_json_member_int(JsonBuilder *b, const char *key, gint64 v);
void lmwb_json_member_string(JsonBuilder *b, const char *key, const char *v);
/* TRUE when a --plot path ends in .png, .svg or .pdf (any case), what ui/plot can write. */
gboolean lmwb_cli_plot_path_ok(const char *path);
/* Array helpers for JsonBuilder. */
void lmwb_json_add_ids(JsonBuilder *b, const int32_t *ids, size_t n);
void lmwb_json_add_tokens(JsonBuilder *b, const LmwbModel *m, const int32_t *ids, size_t n);

/* All registered commands (commands.c), NULL-terminated by name. */
extern const LmwbCommand lmwb_commands[];
