/* Sequences of knowledge edits watched for collapse (Yang et al. 2024, "The Butterfly Effect of
 * Model Editing"): after every edit the perplexity of a fixed monitor set (one sentence a line; the
 * mean of per-sentence perplexities, as they measure it) is recomputed; the alarm fires when it
 * exceeds alarm_factor times the unedited value or is not finite. On the alarm the sequence goes
 * on, stops, or rolls the edit back (the model goes on from the version before it).
 *
 * Every edit is a new model version (model.h): versions[i] is the model after step i, versions[0]
 * the unedited one, so undo to any step is taking its version, exactly. Nothing is written here. */
#pragma once
#include "editors/rome.h"

typedef enum { LMWB_EDIT_ROME, LMWB_EDIT_MEMIT } LmwbEditMethod;
typedef enum { LMWB_ALARM_CONTINUE, LMWB_ALARM_STOP, LMWB_ALARM_ROLLBACK } LmwbAlarmAction;

#define LMWB_EDIT_ALARM_FACTOR 2.0

typedef struct LmwbEditSequenceOptions {
  LmwbEditMethod method;
  const int *layers;            /* ROME: layers[0]; MEMIT: every layer, ascending */
  int n_layers;
  LmwbEditStats *const *stats;  /* one per layer, NULL entries (or NULL): C = I */
  LmwbRomeOptions rome;
  double alarm_factor;          /* 0: LMWB_EDIT_ALARM_FACTOR */
  LmwbAlarmAction on_alarm;
  const char *const *monitor;   /* the monitor sentences */
  size_t n_monitor;
} LmwbEditSequenceOptions;

typedef struct LmwbEditStep {
  int edit;             /* 0: the unedited model; i: after the i-th request */
  const char *subject;  /* NULL for step 0 */
  double ppl;           /* mean per-sentence perplexity of the monitor (may be infinite or NaN) */
  double efficacy;      /* 1 or 0 for this step's request (NaN for step 0) */
  double p_new;         /* p(target_new | prompt) after the step (NaN for step 0) */
  bool alarm;
  bool rolled_back;     /* the edit was undone (on_alarm ROLLBACK) */
  double seconds;       /* the edit and its measurements */
} LmwbEditStep;

typedef struct LmwbEditSequence {
  LmwbEditStep *steps;  /* [n_steps], step 0 first */
  int n_steps;
  LmwbModel **versions; /* [n_steps] (held references) */
  bool stopped;         /* stopped on the alarm */
  char *failure;        /* an edit failed (NaN, singular C, ...): the message; the steps before it stand */
} LmwbEditSequence;

/* Called after each step (for live plots); may be NULL. Runs on the caller's thread. */
typedef void (*LmwbEditStepFn)(const LmwbEditStep *step, void *user);

/* The default options of a method: ROME's (rome.h), MEMIT's clamp 0.75 of ‖h_L‖. */
void lmwb_edit_method_options_init(LmwbRomeOptions *o, LmwbEditMethod method);
/* "L" or "A-B" (ascending, within the model's layers) as a new array of layers (g_free); an input
 * error naming the text otherwise. */
gboolean lmwb_edit_layers_parse(const LmwbModel *m, const char *text, int **layers, int *n, GError **error);

/* A layer's statistics from `edit stats`: the file itself, or C{layer}.safetensors in a folder. */
LmwbEditStats *lmwb_edit_stats_load_for(const char *path, const LmwbModel *m, int layer, GError **error);

/* The monitor sentences of a text file: its non-blank lines, stripped (g_strfreev). An input error
 * naming the file when it is not UTF-8 text or has no sentence. */
char **lmwb_edit_monitor_read(const char *path, GError **error);
/* The mean per-sentence perplexity of the monitor on a model (perplexity.h). */
gboolean lmwb_edit_monitor_ppl(LmwbModel *m, const char *const *monitor, size_t n, double *ppl, GError **error);

/* Runs the requests in order. NULL with an error only for bad input found before the first edit
 * (options, requests, the monitor) or a cancel; an edit that fails later ends the sequence with
 * `failure` set. The reporter gets progress and the series "ppl" and "efficacy" per edit. */
LmwbEditSequence *lmwb_edit_sequence_run(LmwbModel *m, const LmwbEditRequests *reqs, const LmwbEditSequenceOptions *o,
                                         LmwbEditStepFn fn, void *user, LmwbReporter *rep, GError **error);
void lmwb_edit_sequence_free(LmwbEditSequence *s);
