/* The Circuits view's jobs, on a worker thread. Contract: lmwb-circuits-jobs.h. */
#include "ui/desktop/lmwb-circuits-jobs.h"
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/formats/tokenizer.h"
#include "app/train/corpus.h"
#include <string.h>

/* ---- shared results ------------------------------------------------------------------------ */

CircuitsSet *circuits_set_ref(CircuitsSet *s) {
  if (s) g_atomic_int_inc(&s->refs);
  return s;
}

void circuits_set_unref(gpointer p) {
  CircuitsSet *s = p;
  if (!s || !g_atomic_int_dec_and_test(&s->refs)) return;
  lmwb_transcoder_set_free(s->set);
  lmwb_model_unref(s->model);
  g_free(s->dir);
  g_free(s);
}

CircuitsTrace *circuits_trace_ref(CircuitsTrace *t) {
  if (t) g_atomic_int_inc(&t->refs);
  return t;
}

void circuits_trace_unref(gpointer p) {
  CircuitsTrace *t = p;
  if (!t || !g_atomic_int_dec_and_test(&t->refs)) return;
  lmwb_attribution_free(t->attribution);
  circuits_set_unref(t->set);
  lmwb_model_unref(t->model);
  g_free(t->prompt);
  g_free(t);
}

void circuits_graph_free(gpointer p) {
  CircuitsGraph *g = p;
  if (!g) return;
  lmwb_graph_free(g->graph);
  lmwb_graph_layout_free(g->layout);
  g_free(g);
}

void circuits_graph_in_free(gpointer p) {
  CircuitsGraphIn *in = p;
  lmwb_model_unref(in->model);
  circuits_set_unref(in->set);
  circuits_trace_unref(in->trace);
  g_free(in->set_dir);
  g_free(in->prompt);
  g_free(in->pins);
  g_free(in);
}

void circuits_trace_out_free(gpointer p) {
  CircuitsTraceOut *o = p;
  circuits_trace_unref(o->trace);
  circuits_graph_free(o->graph);
  g_free(o);
}

/* ---- tracing and re-pruning ---------------------------------------------------------------- */

/* Prune, keep the pins, make the graph (pins marked) and lay it out. */
static CircuitsGraph *build_graph(const CircuitsTrace *t, const CircuitsGraphIn *in, GError **error) {
  LmwbAttributionPrune *p = lmwb_attribution_prune(t->attribution, in->node_threshold, in->edge_threshold, error);
  if (!p) return NULL;
  CircuitsGraph *g = g_new0(CircuitsGraph, 1);
  g->pins_found = lmwb_attribution_prune_keep_pins(t->attribution, p, in->pins, in->n_pins);
  g->replacement = p->replacement;
  g->completeness = p->completeness;
  g->graph = lmwb_attribution_to_graph(t->attribution, p, t->model, t->set->set, t->prompt, error);
  lmwb_attribution_prune_free(p);
  if (!g->graph) goto fail;
  for (int i = 0; i < g->graph->n_nodes; i++) {
    LmwbGraphNode *n = &g->graph->nodes[i];
    for (int k = 0; k < in->n_pins; k++) {
      const LmwbAttributionPin *pin = &in->pins[k];
      if (pin->kind == n->kind && pin->layer == n->layer && pin->pos == n->pos &&
          (pin->kind == LMWB_GRAPH_ERROR || pin->index == n->index))
        n->pinned = true;
    }
  }
  LmwbGraphDrawOptions draw = {.max_edges = in->draw_edges};
  g->layout = lmwb_graph_layout(g->graph, &draw, error);
  if (!g->layout) goto fail;
  return g;
fail:
  circuits_graph_free(g);
  return NULL;
}

static CircuitsSet *load_set(const CircuitsGraphIn *in, LmwbReporter *rep, GError **error) {
  if (in->set && in->set->model == in->model && !g_strcmp0(in->set->dir, in->set_dir)) return circuits_set_ref(in->set);
  if (!in->set_dir || !*in->set_dir) {
    lmwb_input_error(error, "Circuits: choose a transcoder set folder (SET/layer_{L}/ SAELens folders or "
                     "circuit-tracer's layer_{L}.safetensors)");
    return NULL;
  }
  lmwb_report_progress(rep, 0.02, "loading the transcoders");
  LmwbTranscoderSet *set = lmwb_transcoder_set_load(in->set_dir, &in->model->cfg, error);
  if (!set) return NULL;
  CircuitsSet *s = g_new0(CircuitsSet, 1);
  s->refs = 1;
  s->set = set;
  s->dir = g_strdup(in->set_dir);
  s->model = lmwb_model_ref(in->model);
  return s;
}

gpointer circuits_run_trace(gpointer data, LmwbReporter *rep, GError **error) {
  CircuitsGraphIn *in = data;
  LmwbModel *m = in->model;
  g_autofree char *stripped = g_strstrip(g_strdup(in->prompt ? in->prompt : ""));
  if (!*stripped) {
    lmwb_input_error(error, "Circuits: the prompt is empty: type the text whose next token the graph explains");
    return NULL;
  }
  CircuitsSet *set = load_set(in, rep, error);
  if (!set) return NULL;
  size_t n = 0;
  g_autofree int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, in->prompt, strlen(in->prompt), TRUE, &n, error);
  if (!ids) {
    circuits_set_unref(set);
    return NULL;
  }
  if (n > (size_t)m->cfg.n_ctx) {
    lmwb_input_error(error, "Circuits: the prompt has %zu tokens, more than the model's context of %d", n, m->cfg.n_ctx);
    circuits_set_unref(set);
    return NULL;
  }
  LmwbAttribution *a = lmwb_attribute(m, set->set, ids, (int)n, NULL, rep, error);
  if (!a) {
    circuits_set_unref(set);
    return NULL;
  }
  CircuitsTrace *t = g_new0(CircuitsTrace, 1);
  t->refs = 1;
  t->attribution = a;
  t->set = set;
  t->model = lmwb_model_ref(m);
  t->prompt = g_strdup(in->prompt);
  lmwb_report_progress(rep, 0.97, "pruning and laying out the graph");
  CircuitsGraph *g = build_graph(t, in, error);
  if (!g) {
    circuits_trace_unref(t);
    return NULL;
  }
  CircuitsTraceOut *out = g_new0(CircuitsTraceOut, 1);
  out->trace = t;
  out->graph = g;
  return out;
}

gpointer circuits_run_reprune(gpointer data, LmwbReporter *rep, GError **error) {
  CircuitsGraphIn *in = data;
  lmwb_report_progress(rep, 0.1, "pruning and laying out the graph");
  CircuitsGraph *g = build_graph(in->trace, in, error);
  if (!g) return NULL;
  CircuitsTraceOut *out = g_new0(CircuitsTraceOut, 1);
  out->graph = g;
  return out;
}

/* ---- a feature's contexts and output tokens ------------------------------------------------- */

void circuits_feature_in_free(gpointer p) {
  CircuitsFeatureIn *in = p;
  lmwb_model_unref(in->model);
  circuits_set_unref(in->set);
  g_free(in->text_path);
  g_free(in);
}

void circuits_feature_out_free(gpointer p) {
  CircuitsFeatureOut *o = p;
  for (int i = 0; i < o->n_tokens; i++) g_free(o->token_texts[i]);
  lmwb_feature_contexts_free(o->contexts);
  g_free(o);
}

gpointer circuits_run_feature(gpointer data, LmwbReporter *rep, GError **error) {
  CircuitsFeatureIn *in = data;
  LmwbModel *m = in->model;
  if (in->layer < 0 || in->layer >= in->set->set->n_layers) {
    lmwb_input_error(error, "Circuits: layer %d has no transcoder", in->layer);
    return NULL;
  }
  const LmwbTranscoder *tc = in->set->set->layers[in->layer];
  CircuitsFeatureOut *o = g_new0(CircuitsFeatureOut, 1);
  o->n_tokens = MIN(CIRCUITS_FEATURE_TOKENS, m->cfg.vocab_size);
  int32_t ids[CIRCUITS_FEATURE_TOKENS];
  float probs[CIRCUITS_FEATURE_TOKENS];
  if (!lmwb_attribution_feature_tokens(m, tc, in->feature, o->n_tokens, ids, o->token_logits, probs, error)) {
    o->n_tokens = 0;
    circuits_feature_out_free(o);
    return NULL;
  }
  for (int i = 0; i < o->n_tokens; i++) o->token_texts[i] = lmwb_tokenizer_token_text(m->tokenizer, ids[i]);
  if (!in->text_path || !*in->text_path) {
    lmwb_input_error(error, "Circuits: choose a text file to find the feature's top contexts in");
    circuits_feature_out_free(o);
    return NULL;
  }
  g_autofree char *text = lmwb_file_read(in->text_path, LMWB_CORPUS_MAX_BYTES, LMWB_READ_REGULAR, NULL, error);
  LmwbFeatureContextOptions fo = {.max_tokens = CIRCUITS_CONTEXT_TOKENS};
  o->contexts = text ? lmwb_feature_contexts(m, tc, in->feature, text, &fo, rep, error) : NULL;
  if (!o->contexts) {
    if (text && g_error_matches(*error, LMWB_ERROR, LMWB_ERROR_INPUT)) g_prefix_error(error, "%s: ", in->text_path);
    circuits_feature_out_free(o);
    return NULL;
  }
  return o;
}

/* ---- training -------------------------------------------------------------------------------- */

void circuits_train_in_free(gpointer p) {
  CircuitsTrainIn *in = p;
  lmwb_model_unref(in->model);
  g_free(in->text_path);
  g_free(in->out_dir);
  g_free(in);
}

void circuits_train_out_free(gpointer p) {
  CircuitsTrainOut *o = p;
  lmwb_tc_train_result_clear(&o->result);
  g_free(o->saved_to);
  g_free(o);
}

gpointer circuits_run_train(gpointer data, LmwbReporter *rep, GError **error) {
  CircuitsTrainIn *in = data;
  LmwbModel *m = in->model;
  if (!in->out_dir || !*in->out_dir) {
    lmwb_input_error(error, "Circuits: choose a folder to save the trained transcoder in");
    return NULL;
  }
  g_autofree char *dest = g_strdup_printf("%s/layer_%d", in->out_dir, in->layer);
  if (!lmwb_input_guard_check_output(dest, error)) return NULL;
  lmwb_report_progress(rep, 0, "reading the text");
  g_autofree char *text = lmwb_file_read(in->text_path ? in->text_path : "", LMWB_CORPUS_MAX_BYTES, LMWB_READ_REGULAR,
                                         NULL, error);
  if (!text) return NULL;
  size_t n = 0;
  g_autofree int32_t *ids = *text ? lmwb_tokenizer_encode(m->tokenizer, text, strlen(text), FALSE, &n, error) : NULL;
  if (*text && !ids) return NULL;
  if (n == 0) {
    lmwb_input_error(error, "%s holds no text", in->text_path);
    return NULL;
  }
  CircuitsTrainOut *o = g_new0(CircuitsTrainOut, 1);
  if (!lmwb_tc_train(m, ids, n, &in->options, rep, &o->result, error) ||
      !lmwb_transcoder_save_saelens(o->result.tc, dest, error)) {
    if (g_error_matches(*error, LMWB_ERROR, LMWB_ERROR_INPUT) && !strstr((*error)->message, in->text_path))
      g_prefix_error(error, "training on %s: ", in->text_path);
    circuits_train_out_free(o);
    return NULL;
  }
  o->saved_to = g_steal_pointer(&dest);
  return o;
}

/* ---- defaults -------------------------------------------------------------------------------- */

char *circuits_default_text(void) {
  char *brown = lmwb_corpus_brown_path(LMWB_BUILTIN_MODEL_DIR);
  if (g_file_test(brown, G_FILE_TEST_IS_REGULAR)) {
    char *canon = g_canonicalize_filename(brown, NULL);
    g_free(brown);
    return canon;
  }
  g_free(brown);
  char *sample = g_build_filename(LMWB_BUILTIN_MODEL_DIR, "transcoders", "sample.txt", NULL);
  if (g_file_test(sample, G_FILE_TEST_IS_REGULAR)) return sample;
  g_free(sample);
  return NULL;
}

char *circuits_default_set_dir(const LmwbModel *m) {
  if (!m || !m->dir) return NULL;
  char *dir = g_build_filename(m->dir, "transcoders", NULL);
  if (g_file_test(dir, G_FILE_TEST_IS_DIR)) return dir;
  g_free(dir);
  return NULL;
}
