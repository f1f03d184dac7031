/* Model view: what the model is (architecture, sizes, tokenizer) and what it predicts for the
 * prompt: the token strip (each position's token with its top next-token predictions and their
 * probabilities; the tooltip lists the top 5) and a bar plot of the prediction after the last
 * token. */
#pragma once
#include "ui/desktop/lmwb-analysis.h"
#include "ui/desktop/lmwb-plot-view.h"

#define LMWB_TYPE_MODEL_VIEW (lmwb_model_view_get_type())
G_DECLARE_FINAL_TYPE(LmwbModelView, lmwb_model_view, LMWB, MODEL_VIEW, GtkBox)

void lmwb_model_view_set_model(LmwbModelView *v, const LmwbModel *m);
void lmwb_model_view_set_analysis(LmwbModelView *v, LmwbAnalysis *a); /* NULL clears */
LmwbPlotView *lmwb_model_view_plot(LmwbModelView *v);
/* One line per token: "pos token -> top1 p1, top2 p2" (for the script log). g_free. */
char *lmwb_model_view_describe(LmwbModelView *v);
