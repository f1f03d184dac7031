/* The Circuits view's jobs (lmwb-job.h functions: worker side, no GTK): trace a prompt's
 * attribution graph, re-prune it, find a feature's top contexts, train a transcoder. Each is a
 * thin composition of the methods in circuits/ that lmwb-batch runs too; the view only shows
 * what they return.
 *
 * Shared, immutable once made, refcounted so that a re-prune or a contexts job can read them while
 * the view moves on: a loaded transcoder set (CircuitsSet) and a traced attribution (CircuitsTrace). */
#pragma once
#include "circuits/attribution_pins.h"
#include "circuits/feature_contexts.h"
#include "circuits/transcoder_train.h"

/* ---- shared results ------------------------------------------------------------------------ */

typedef struct CircuitsSet {
  gint refs;
  LmwbTranscoderSet *set;
  char *dir;
  LmwbModel *model; /* the model it was checked against (a reference) */
} CircuitsSet;

CircuitsSet *circuits_set_ref(CircuitsSet *s);
void circuits_set_unref(gpointer s);

typedef struct CircuitsTrace {
  gint refs;
  LmwbAttribution *attribution;
  CircuitsSet *set;
  LmwbModel *model;
  char *prompt;
} CircuitsTrace;

CircuitsTrace *circuits_trace_ref(CircuitsTrace *t);
void circuits_trace_unref(gpointer t);

/* A pruned graph of a trace and its Graphviz layout, ready to draw. */
typedef struct CircuitsGraph {
  LmwbGraph *graph;
  LmwbGraphLayout *layout;
  double replacement, completeness;
  int pins_found;
} CircuitsGraph;

void circuits_graph_free(gpointer g);

/* ---- tracing and re-pruning ---------------------------------------------------------------- */

typedef struct CircuitsGraphIn {
  LmwbModel *model;       /* a reference */
  char *set_dir;          /* the set to load, unless `set` is already it */
  CircuitsSet *set;       /* a reference, or NULL */
  char *prompt;
  CircuitsTrace *trace;   /* re-prune: a reference; trace: NULL */
  double node_threshold, edge_threshold;
  LmwbAttributionPin *pins;
  int n_pins;
  int draw_edges;         /* the layout lays out and draws the strongest this many edges; 0: all */
} CircuitsGraphIn;

void circuits_graph_in_free(gpointer p);

typedef struct CircuitsTraceOut {
  CircuitsTrace *trace;
  CircuitsGraph *graph;
} CircuitsTraceOut;

void circuits_trace_out_free(gpointer p);

/* The set (loaded and checked against the model unless in->set is that folder's), the prompt's
 * attribution and its pruned graph: data CircuitsGraphIn, result CircuitsTraceOut. Input errors:
 * an empty prompt, a set that does not fit the model (naming its file and tensor). */
gpointer circuits_run_trace(gpointer data, LmwbReporter *rep, GError **error);
/* Pruning, pins, graph and layout again on in->trace: result CircuitsTraceOut without a trace. */
gpointer circuits_run_reprune(gpointer data, LmwbReporter *rep, GError **error);

/* ---- a feature's contexts and output tokens ------------------------------------------------- */

#define CIRCUITS_FEATURE_TOKENS 10
#define CIRCUITS_CONTEXT_TOKENS 32768 /* tokens of the text read for contexts (the first ones): a click answers in seconds */

typedef struct CircuitsFeatureIn {
  LmwbModel *model;
  CircuitsSet *set;
  int layer, feature;
  char *text_path;
} CircuitsFeatureIn;

void circuits_feature_in_free(gpointer p);

typedef struct CircuitsFeatureOut {
  int n_tokens;
  char *token_texts[CIRCUITS_FEATURE_TOKENS];
  float token_logits[CIRCUITS_FEATURE_TOKENS]; /* W_dec[f] · W_U: what the feature adds to each logit */
  LmwbFeatureContexts *contexts;
} CircuitsFeatureOut;

void circuits_feature_out_free(gpointer p);
/* Decoded output tokens (W_dec[f] · W_U) and top contexts on the text file: data
 * CircuitsFeatureIn, result CircuitsFeatureOut. */
gpointer circuits_run_feature(gpointer data, LmwbReporter *rep, GError **error);

/* ---- training -------------------------------------------------------------------------------- */

typedef struct CircuitsTrainIn {
  LmwbModel *model;
  LmwbTcTrainOptions options; /* in/out sites set for the layer */
  int layer;
  char *text_path;
  char *out_dir;              /* the transcoder is saved to out_dir/layer_{layer} (SAELens) */
} CircuitsTrainIn;

void circuits_train_in_free(gpointer p);

typedef struct CircuitsTrainOut {
  LmwbTcTrainResult result;
  char *saved_to;
} CircuitsTrainOut;

void circuits_train_out_free(gpointer p);
/* Trains on the text file's tokens (metrics loss, fvu, l0, ... through the reporter) and saves:
 * data CircuitsTrainIn, result CircuitsTrainOut. */
gpointer circuits_run_train(gpointer data, LmwbReporter *rep, GError **error);

/* ---- defaults -------------------------------------------------------------------------------- */

/* The Brown corpus ($LMWB_SHARED/data/brown/brown.txt, else the shared folder beside this checkout),
 * else the text shipped with the built-in model's transcoders; NULL when neither exists. g_free. */
char *circuits_default_text(void);
/* The model's transcoders/ folder when it has one, else NULL. g_free. */
char *circuits_default_set_dir(const LmwbModel *m);
