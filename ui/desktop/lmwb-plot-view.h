/* LmwbPlotView: a GtkDrawingArea that shows one LmwbPlot (ui/plot) with the same drawing code
 * the batch front end saves. Redraws when the plot's version moves (streamed points), follows
 * the light/dark theme, shows tooltips from lmwb_plot_hit (or a caller's text for a hit), and
 * exports PNG/SVG from its right-click menu. */
#pragma once
#include "ui/plot/plot.h"
#include <gtk/gtk.h>

#define LMWB_TYPE_PLOT_VIEW (lmwb_plot_view_get_type())
G_DECLARE_FINAL_TYPE(LmwbPlotView, lmwb_plot_view, LMWB, PLOT_VIEW, GtkDrawingArea)

/* Custom tooltip text for a hit (g_free'd by the view); NULL falls back to the plot's own. */
typedef char *(*LmwbPlotTooltipFunc)(LmwbPlot *plot, const LmwbPlotHit *hit, gpointer user);

GtkWidget *lmwb_plot_view_new(void);
/* The view takes ownership of plot (NULL: "no data" placeholder). */
void lmwb_plot_view_set_plot(LmwbPlotView *v, LmwbPlot *plot);
LmwbPlot *lmwb_plot_view_get_plot(LmwbPlotView *v);
/* TRUE when the screen shows the current plot with all its points (or the view is not shown):
 * FALSE from set_plot or a streamed point until the next draw. */
gboolean lmwb_plot_view_is_drawn(LmwbPlotView *v);
void lmwb_plot_view_set_tooltip_func(LmwbPlotView *v, LmwbPlotTooltipFunc fn, gpointer user);
/* Save at the view's current size (at least 480×320) by the extension of path. */
gboolean lmwb_plot_view_export(LmwbPlotView *v, const char *path, GError **error);
/* Open a save dialog and export (used by the menu and by win.export-plot). */
void lmwb_plot_view_export_dialog(LmwbPlotView *v);
