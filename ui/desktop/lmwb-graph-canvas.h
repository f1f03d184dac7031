/* LmwbGraphCanvas: draws a circuit graph (circuits/graph.h) with Cairo from its Graphviz layout
 * (lmwb_graph_layout): rows bottom to top as the layout has them, nodes coloured by kind as the
 * DOT export colours them, edge width and colour by weight (LMWB_GRAPH_PEN_*, LMWB_GRAPH_COLOR_*),
 * pinned nodes with a double orange frame, the selected node framed in blue with its edges
 * drawn over the others. The rows fill the widget's height; the whole width fits at first, with
 * text in the boxes when they are large enough and, when not, beside the answer, the selected and
 * the pinned nodes. Ctrl+wheel zooms (horizontally) about the pointer; the wheel and dragging pan. A click on a node emits "node-clicked" (its index; -1 for the background); hovering shows
 * the node's id, label, activation and influence. A click on no node but within a few pixels of a
 * drawn edge's spline also emits "edge-clicked" (the index in g->edges). */
#pragma once
#include "circuits/graph.h"
#include <gtk/gtk.h>

#define LMWB_TYPE_GRAPH_CANVAS (lmwb_graph_canvas_get_type())
G_DECLARE_FINAL_TYPE(LmwbGraphCanvas, lmwb_graph_canvas, LMWB, GRAPH_CANVAS, GtkDrawingArea)

GtkWidget *lmwb_graph_canvas_new(void);
/* Borrows both (they must stay valid until the next call; NULL, NULL: nothing drawn). Keeps the
 * zoom when keep_view, else fits the graph. */
void lmwb_graph_canvas_set_graph(LmwbGraphCanvas *c, const LmwbGraph *g, const LmwbGraphLayout *l, gboolean keep_view);
/* The text shown when there is no graph. */
void lmwb_graph_canvas_set_message(LmwbGraphCanvas *c, const char *message);
void lmwb_graph_canvas_set_selected(LmwbGraphCanvas *c, int node);
/* Back to the whole graph in view. */
void lmwb_graph_canvas_fit(LmwbGraphCanvas *c);
/* The node under widget point (x, y), or -1. */
int lmwb_graph_canvas_node_at(LmwbGraphCanvas *c, double x, double y);
/* The drawn edge (index in g->edges) whose spline passes within a few pixels of (x, y), or -1. */
int lmwb_graph_canvas_edge_at(LmwbGraphCanvas *c, double x, double y);
/* The widget point halfway along a drawn edge's spline (FALSE when it is not drawn). */
gboolean lmwb_graph_canvas_edge_point(LmwbGraphCanvas *c, int edge, double *x, double *y);
/* The widget point at a node's centre (FALSE for a bad index): tests click there. */
gboolean lmwb_graph_canvas_node_point(LmwbGraphCanvas *c, int node, double *x, double *y);
/* What a node's box shows: a token's text, "error" for an error (the row and the order say the
 * layer and position), else its caption (lmwb_graph_node_caption) as the exports show it. */
char *lmwb_graph_canvas_node_text(const LmwbGraph *g, int node);
