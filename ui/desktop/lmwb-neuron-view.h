/* Neuron explorer: search MLP neurons by the token they promote (decoded through the LM head by
 * analysis/neurons.h), list them with their decoded top tokens, and for the selected neuron show
 * its top tokens (bar plot), its activation at each prompt position (blocks.L.mlp.hook_post), a
 * clamp slider that regenerates the continuation live (debounced, on a worker thread) and a sweep
 * that plots the target token's probability against the clamp value as the points arrive. */
#pragma once
#include "ui/desktop/lmwb-analysis.h"
#include "ui/desktop/lmwb-plot-view.h"

#define LMWB_TYPE_NEURON_VIEW (lmwb_neuron_view_get_type())
G_DECLARE_FINAL_TYPE(LmwbNeuronView, lmwb_neuron_view, LMWB, NEURON_VIEW, GtkBox)

/* Starts jobs through the window (progress bar, cancel). */
typedef struct LmwbJob LmwbJob;
typedef struct LmwbJobSpec LmwbJobSpec;
typedef LmwbJob *(*LmwbJobStarter)(gpointer host, const LmwbJobSpec *spec);
void lmwb_neuron_view_set_job_starter(LmwbNeuronView *v, LmwbJobStarter fn, gpointer host);

void lmwb_neuron_view_set_model(LmwbNeuronView *v, LmwbSharedModel *m);
void lmwb_neuron_view_set_analysis(LmwbNeuronView *v, LmwbAnalysis *a);
/* Commands (also GActions of the window). */
void lmwb_neuron_view_search(LmwbNeuronView *v, const char *token_text);
void lmwb_neuron_view_select(LmwbNeuronView *v, int layer, int neuron);
void lmwb_neuron_view_set_clamp(LmwbNeuronView *v, double value); /* moves the slider */
void lmwb_neuron_view_clear_clamp(LmwbNeuronView *v);
void lmwb_neuron_view_sweep(LmwbNeuronView *v);
/* Clamp values per sweep (2..10000; default 41). */
void lmwb_neuron_view_set_sweep_steps(LmwbNeuronView *v, int steps);
void lmwb_neuron_view_focus_search(LmwbNeuronView *v);
LmwbPlotView *lmwb_neuron_view_plot(LmwbNeuronView *v, int which); /* 0 tokens, 1 activation, 2 sweep */
char *lmwb_neuron_view_describe(LmwbNeuronView *v); /* state lines for the script log; g_free */
