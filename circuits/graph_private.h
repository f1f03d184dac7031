/* Shared inside circuits/graph*.c only: the id table, the names graph JSON uses for node kinds, and
 * the DOT text builder the Graphviz layout reads. */
#pragma once
#include "circuits/graph.h"

struct LmwbGraphPrivate {
  GHashTable *ids; /* canonical node id (owned) -> node index + 1 */
  int node_cap, edge_cap;
};

/* The index of `text` in names[n] (ASCII case ignored where fold_case), or -1. */
int lmwb_graph_name_index(const char *const *names, unsigned n, const char *text, gboolean fold_case);

/* The id of a node that need not be in the graph yet; g_free it. */
char *lmwb_graph_id_of(const LmwbGraph *g, const LmwbGraphNode *n);

/* Graph JSON's feature_type of a kind, and back (FALSE for an unknown name). */
const char *lmwb_graph_feature_type(LmwbGraphNodeKind k);
gboolean lmwb_graph_feature_type_parse(const char *name, LmwbGraphNodeKind *out);
/* The layer as graph JSON writes it ("E" for -1); g_free it. */
char *lmwb_graph_layer_text(int layer);
/* FALSE for the attribution kinds (feature, error, token, logit). */
gboolean lmwb_graph_kind_is_edge_pruning(LmwbGraphNodeKind k);

/* The head node a reader feeds, or -1. */
int lmwb_graph_reader_head(const LmwbGraph *g, int reader);

/* DOT text (lmwb_graph_to_dot) and, when n_drawn is given, the number of edges it draws. Graphviz
 * node names are "n{index}" (rows' label nodes "row{rank}"); edge `id`s are "e{index}", reader ->
 * head links "r{reader index}". */
char *lmwb_graph_dot_build(const LmwbGraph *g, const LmwbGraphDrawOptions *opt, int *n_drawn, GError **error);
