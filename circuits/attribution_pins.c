/* Pinned nodes kept through pruning. Contract: attribution_pins.h. */
#include "circuits/attribution_pins.h"

int lmwb_attribution_find_node(const LmwbAttribution *a, const LmwbAttributionPin *pin) {
  switch (pin->kind) {
    case LMWB_GRAPH_FEATURE:
      for (int i = 0; i < a->n_features; i++)
        if (a->feat_layer[i] == pin->layer && a->feat_pos[i] == pin->pos && a->feat_index[i] == pin->index) return i;
      return -1;
    case LMWB_GRAPH_ERROR:
      if (pin->layer < 0 || pin->layer >= a->n_layers || pin->pos < 0 || pin->pos >= a->n_pos) return -1;
      return lmwb_attr_error_node(a, pin->layer, pin->pos);
    case LMWB_GRAPH_TOKEN:
      if (pin->pos < 0 || pin->pos >= a->n_pos || a->tokens[pin->pos] != pin->index) return -1;
      return lmwb_attr_token_node(a, pin->pos);
    case LMWB_GRAPH_LOGIT:
      for (int i = 0; i < a->n_logits; i++)
        if (a->logit_token[i] == pin->index && pin->pos == a->n_pos - 1) return lmwb_attr_logit_node(a, i);
      return -1;
    default:
      return -1;
  }
}

int lmwb_attribution_prune_keep_pins(const LmwbAttribution *a, LmwbAttributionPrune *p, const LmwbAttributionPin *pins,
                                     int n_pins) {
  int found = 0, n = a->n_nodes;
  for (int k = 0; k < n_pins; k++) {
    int v = lmwb_attribution_find_node(a, &pins[k]);
    if (v < 0) continue;
    found++;
    if (!p->node_keep[v]) p->node_keep[v] = 1, p->nodes_kept++;
  }
  /* then the edges, so that two pinned nodes are joined whichever was pinned first */
  for (int k = 0; k < n_pins; k++) {
    int v = lmwb_attribution_find_node(a, &pins[k]);
    if (v < 0) continue;
    for (int u = 0; u < n; u++) {
      if (!p->node_keep[u]) continue;
      size_t in = (size_t)v * n + u, out = (size_t)u * n + v; /* rows are targets */
      if (a->adj[in] != 0.f && !p->edge_keep[in]) p->edge_keep[in] = 1, p->edges_kept++;
      if (a->adj[out] != 0.f && !p->edge_keep[out]) p->edge_keep[out] = 1, p->edges_kept++;
    }
  }
  return found;
}
