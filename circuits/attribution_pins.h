/* Pinned nodes of an attribution graph: the nodes a person marked to keep in view while changing
 * the pruning thresholds (Neuronpedia's pinnedIds). Pruning is circuit-tracer's (attribution.h);
 * pinning only adds to what it keeps, so the same pins can be applied after every re-pruning. */
#pragma once
#include "circuits/attribution.h"

/* A node's identity, as the graph names it (graph.h: kind, layer, pos, index). */
typedef struct LmwbAttributionPin {
  LmwbGraphNodeKind kind; /* FEATURE, ERROR, TOKEN or LOGIT */
  int layer, pos;
  int64_t index;          /* feature, token id or vocabulary id; ignored for errors */
} LmwbAttributionPin;

/* The attribution's node with this identity, or -1 (not in this attribution). */
int lmwb_attribution_find_node(const LmwbAttribution *a, const LmwbAttributionPin *pin);

/* Keeps each pinned node that the attribution has, with its non-zero edges to and from the nodes
 * kept; nodes_kept and edges_kept follow. Returns how many pins were found. */
int lmwb_attribution_prune_keep_pins(const LmwbAttribution *a, LmwbAttributionPrune *p, const LmwbAttributionPin *pins,
                                     int n_pins);
