/* Logit lens view: a heatmap of layers × positions; each cell shows the top token that layer's
 * residual stream predicts (through the final norm and unembedding), coloured by its
 * probability; the tooltip lists the top 5. The last layer is at the top, the embeddings at the
 * bottom, as the residual stream flows upward. */
#pragma once
#include "ui/desktop/lmwb-analysis.h"
#include "ui/desktop/lmwb-plot-view.h"

#define LMWB_TYPE_LENS_VIEW (lmwb_lens_view_get_type())
G_DECLARE_FINAL_TYPE(LmwbLensView, lmwb_lens_view, LMWB, LENS_VIEW, GtkBox)

void lmwb_lens_view_set_analysis(LmwbLensView *v, LmwbAnalysis *a);
LmwbPlotView *lmwb_lens_view_plot(LmwbLensView *v);
char *lmwb_lens_view_describe(LmwbLensView *v); /* "lens rows=R cols=C" + top tokens; g_free */
