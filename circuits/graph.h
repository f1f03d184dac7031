/* The circuit graph: one model for every circuit the workbench finds, and its exports.
 *
 * Two methods fill it (methods/transcoders.md "Graph JSON", methods/edge-pruning.md):
 *   attribution   nodes are active transcoder features (layer, position, feature), one MLP error
 *                 node per (layer, position), one token (embedding) node per position and the top
 *                 logits; edge source -> target carries the direct attribution `weight`.
 *   edge-pruning  nodes are the writers `input`, heads `a{L}.h{H}`, MLPs `m{L}` and the readers
 *                 `a{L}.h{H}<q|k|v>` (a head's query, key or value input), `m{L}` (an MLP reads and
 *                 writes) and `logits`; edge writer -> reader carries its `weight` (the mask or EAP
 *                 score) and whether it is in the circuit. A reader feeds its own head: exports
 *                 draw that link (dotted) without it being an edge of the graph.
 *
 * Node ids (the strings exports and lookups use) follow Neuronpedia / circuit-tracer and
 * Edge-Pruning / EAP-IG, with these deliberate choices:
 *   feature "{layer}_{feature}_{pos}"    error "{layer}_-1_{pos}"    token "E_{token_id}_{pos}"
 *   logit   "{n_layers+1}_{vocab_id}_{pos}"
 *   input "input", head "a{L}.h{H}", mlp "m{L}", reader "a{L}.h{H}<q>" (<k>, <v>), output "logits".
 * Ids are unique in a graph: adding a node whose id is already there is an input error.
 *
 * Ownership: the graph owns its nodes, edges and every string in it (g_malloc'd; replace a string
 * field with g_free + g_strdup). Nodes and edges are plain arrays, read them directly; add only
 * through the functions below. A node's identity (kind, layer, pos, index, part) keys the id
 * table: never change it; every other field may be written freely.
 * Errors: user-caused problems (bad arguments, bad files) are LMWB_ERROR_INPUT naming the field or
 * node; a value that is not a finite number at export time is LMWB_ERROR_FAILED ("nothing
 * written", as every exporter in the workbench); Graphviz failures are LMWB_ERROR_FAILED. Nothing
 * aborts on bad input. Functions on different graphs may run on different threads; Graphviz
 * calls are serialised by one process-wide lock (libgvc is not reentrant). */
#pragma once
#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
  LMWB_GRAPH_ATTRIBUTION,  /* "attribution" */
  LMWB_GRAPH_EDGE_PRUNING, /* "edge-pruning" */
} LmwbGraphMethod;

typedef enum {
  /* attribution graphs */
  LMWB_GRAPH_FEATURE, /* index: feature within the layer's transcoder */
  LMWB_GRAPH_ERROR,   /* MLP reconstruction error; index -1 */
  LMWB_GRAPH_TOKEN,   /* embedding of the prompt token; index: token id; layer -1 ("E") */
  LMWB_GRAPH_LOGIT,   /* index: vocabulary id; layer n_layers + 1 */
  /* edge-pruning graphs; pos is always -1 */
  LMWB_GRAPH_INPUT,   /* the embeddings; index -1; layer -1 */
  LMWB_GRAPH_HEAD,    /* index: head */
  LMWB_GRAPH_MLP,     /* index -1 */
  LMWB_GRAPH_READER,  /* a head's q, k or v input; index: head; part says which */
  LMWB_GRAPH_OUTPUT,  /* "logits", the final reader; index -1; layer n_layers + 1 */
} LmwbGraphNodeKind;

typedef enum { LMWB_GRAPH_PART_NONE, LMWB_GRAPH_PART_Q, LMWB_GRAPH_PART_K, LMWB_GRAPH_PART_V } LmwbGraphPart;

typedef struct LmwbGraphNode {
  LmwbGraphNodeKind kind;      /* identity: kind, layer, pos, index, part */
  int layer;                   /* block 0..n_layers-1; -1 for token and input; n_layers+1 for logit, output */
  int pos;                     /* ctx_idx: the prompt position, -1 when it has none */
  int64_t index;               /* feature, token id, vocabulary id or head (see the kinds), else -1 */
  LmwbGraphPart part;          /* readers only */
  double activation;           /* when has_activation (features) */
  double influence;            /* when has_influence: circuit-tracer's cumulative-influence score
                                  (smaller = more important) */
  double token_prob;           /* logits: the token's probability; else 0 */
  char *label;                 /* "clerp": free text, UTF-8, never NULL ("" when none) */
  bool has_activation, has_influence;
  bool target_logit;           /* the logit the graph explains */
  bool pinned;                 /* pinned in the viewer (Neuronpedia qParams.pinnedIds) */
} LmwbGraphNode;

typedef struct LmwbGraphEdge {
  int source, target; /* node indices */
  double weight;      /* attribution weight, or the edge-pruning / EAP score */
  bool in_circuit;    /* TRUE when added; a pruner clears it for edges it leaves out */
} LmwbGraphEdge;

typedef struct LmwbGraphPrivate LmwbGraphPrivate;

typedef struct LmwbGraph {
  LmwbGraphMethod method;
  int n_layers;
  char *slug;                /* the graph's name ("" when none) */
  char *model_name;          /* written as Neuronpedia's "scan" */
  char *prompt;
  char **prompt_tokens;      /* [n_prompt] token texts (lmwb_graph_set_prompt) */
  int32_t *prompt_ids;       /* [n_prompt] token ids, -1 where unknown (an imported file may lack them) */
  int n_prompt;
  double node_threshold, edge_threshold; /* pruning thresholds when has_*; circuit-tracer: 0.8, 0.98 */
  bool has_node_threshold, has_edge_threshold;
  GPtrArray *transcoders;    /* of char*: Neuronpedia's transcoder_list (sources of the features) */
  GPtrArray *supernodes;     /* of char** (NULL-terminated): Neuronpedia qParams.supernodes, kept */
  char *clicked_id, *sg_pos; /* Neuronpedia qParams view state, kept ("" when none) */
  GHashTable *extras;        /* free key -> value strings (both owned) */
  LmwbGraphNode *nodes;      /* [n_nodes] */
  int n_nodes;
  LmwbGraphEdge *edges;      /* [n_edges] */
  int n_edges;
  LmwbGraphPrivate *priv;
} LmwbGraph;

/* ---- the model (graph.c; ids, captions and rows: graph_ids.c) ------------------------------- */

/* "attribution" / "edge-pruning" and back (parse: input error naming the text). */
const char *lmwb_graph_method_name(LmwbGraphMethod m);
gboolean lmwb_graph_method_parse(const char *text, LmwbGraphMethod *out, GError **error);
/* "feature", "error", "token", "logit", "input", "head", "mlp", "reader", "output". */
const char *lmwb_graph_kind_name(LmwbGraphNodeKind k);

/* An empty graph for a model of n_layers blocks (1..LMWB_GRAPH_MAX_LAYERS; else input error). */
#define LMWB_GRAPH_MAX_LAYERS 4096
LmwbGraph *lmwb_graph_new(LmwbGraphMethod method, int n_layers, GError **error);
void lmwb_graph_free(LmwbGraph *g);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(LmwbGraph, lmwb_graph_free)

/* Sets the prompt and its n tokens (texts, UTF-8) and ids (NULL: all unknown, -1). Copies. */
gboolean lmwb_graph_set_prompt(LmwbGraph *g, const char *prompt, const char *const *tokens, const int32_t *ids, int n,
                               GError **error);
/* Sets (or with value NULL removes) a free key/value extra. Both UTF-8 (else input error). */
gboolean lmwb_graph_set_extra(LmwbGraph *g, const char *key, const char *value, GError **error);

/* Adds a node with every other field zero/empty; returns its index (>= 0) or -1 with an input
 * error naming the node: a kind of the other method, layer outside 0..n_layers-1 (feature, error,
 * head, mlp, reader), pos < 0 for attribution kinds or != -1 for edge-pruning kinds, index < 0
 * where the kind needs one (feature, token, logit, head, reader), a reader without a part, an id
 * already in the graph. `layer` is ignored (set from the kind) for token, logit, input and output;
 * `index` for error, input, mlp and output; `part` for all but readers. */
int lmwb_graph_add_node(LmwbGraph *g, LmwbGraphNodeKind kind, int layer, int pos, int64_t index, LmwbGraphPart part,
                        GError **error);
/* The node's label; text UTF-8 (NULL: ""). Input error for a bad index or text. */
gboolean lmwb_graph_node_set_label(LmwbGraph *g, int node, const char *text, GError **error);
/* A logit node's label as circuit-tracer writes it: Output "tok" (p=0.123). g_free it. */
char *lmwb_graph_logit_label(const char *token, double prob);

/* Adds an edge source -> target (node indices) with in_circuit TRUE; returns its index or -1 with
 * an input error (an index out of range). Several edges between the same pair are allowed. */
int lmwb_graph_add_edge(LmwbGraph *g, int source, int target, double weight, GError **error);

/* The node's canonical id (see above). g_free it; NULL for a bad index. */
char *lmwb_graph_node_id(const LmwbGraph *g, int node);
/* The node with this id, or -1. */
int lmwb_graph_find(const LmwbGraph *g, const char *id);
/* The inverse of lmwb_graph_node_id for this graph's method and n_layers: the identity of the node
 * an id names (the node need not exist). Input error naming the id when it is not one. For
 * attribution ids the `kind` decides how to read it: pass the kind the id is said to be. */
gboolean lmwb_graph_parse_node_id(const LmwbGraph *g, const char *id, LmwbGraphNodeKind kind, int *layer, int *pos,
                                  int64_t *index, LmwbGraphPart *part, GError **error);
/* What exports show for a node: its label, or its id when the label is empty. g_free it. */
char *lmwb_graph_node_caption(const LmwbGraph *g, int node);
/* The row a node is drawn in, 0 at the bottom: attribution: tokens 0, layer L 1 + L, logits
 * n_layers + 1; edge pruning: input 0, layer L: readers 3L + 1, heads 3L + 2, MLP 3L + 3, logits
 * 3 n_layers + 1. Within a row nodes go left to right by (pos, index, part). -1 for a bad index. */
int lmwb_graph_node_rank(const LmwbGraph *g, int node);
/* The name shown beside a row: "Emb", "L3", "Logits" (attribution); "Input", "L1 qkv", "L1 heads",
 * "L1 MLP", "Logits" (edge pruning). g_free it. */
char *lmwb_graph_row_name(const LmwbGraph *g, int rank);

/* ---- helpers for pruners (graph_prune.c) ---------------------------------------------------- */

/* A new graph with the same metadata, the nodes with keep_nodes[i] != 0 (NULL: all) in their
 * order, and the edges with keep_edges[e] != 0 (NULL: all) whose ends are both kept. When
 * node_map is given (n_nodes entries) it receives each old node's new index, or -1. */
LmwbGraph *lmwb_graph_subgraph(const LmwbGraph *g, const uint8_t *keep_nodes, const uint8_t *keep_edges, int *node_map);

typedef enum {
  LMWB_GRAPH_BY_ABS_WEIGHT, /* |weight| descending; ties by (source, target) */
  LMWB_GRAPH_BY_ENDPOINTS,  /* (source, target) ascending; ties by |weight| descending */
} LmwbGraphEdgeOrder;
/* Reorders the edges in place (stable; a NaN weight counts as the smallest). */
void lmwb_graph_sort_edges(LmwbGraph *g, LmwbGraphEdgeOrder order);

/* Marks in keep[n_nodes] (1/0) the nodes that lie on a path from a source (token, error, input)
 * to a sink (logit, output), following edges in the circuit (all edges when circuit_only is
 * false) and from each reader to its head; sources and sinks of kinds token, logit, input and
 * output are always kept. What is left out is the dangling part a pruner drops (with
 * lmwb_graph_subgraph). Returns the number kept. */
int lmwb_graph_mask_connected(const LmwbGraph *g, bool circuit_only, uint8_t *keep);

/* ---- Neuronpedia / circuit-tracer graph JSON (graph_json.c, graph_json_read.c) ----------------
 * {"metadata": {slug, scan (= model_name), transcoder_list, prompt_tokens, prompt, node_threshold
 *   (null when unset), schema_version 1, "lmwb": {method, n_layers, edge_threshold (or null), prompt_ids,
 *   extras}},
 *  "qParams": {pinnedIds, supernodes, linkType "both", clickedId, sg_pos},
 *  "nodes": [{node_id, feature, layer (a string; "E" for tokens), ctx_idx, feature_type,
 *   token_prob, is_target_logit, run_idx 0, reverse_ctx_idx 0, jsNodeId, clerp, influence,
 *   activation (null when unset)}],
 *  "links": [{source, target, weight, in_circuit (only when false)}]}
 * feature_type: "cross layer transcoder" (features), "mlp reconstruction error", "embedding",
 * "logit"; edge-pruning nodes (an lmwb extension Neuronpedia does not draw): "input",
 * "attention head", "mlp", "attention input", "output". `feature`: the feature index (circuit-
 * tracer writes a pairing of layer and feature instead; the id carries the index either way), -1
 * for errors, the position for tokens, the vocabulary id for logits, the head for heads and
 * readers, -1 for the rest. jsNodeId: "{layer}_{feature}-0", errors "{layer}_-1-{pos}", tokens
 * "E_{id}-{pos}", logits "L_{id}-{pos}", edge-pruning nodes their id. Built with JsonBuilder,
 * written with JsonGenerator (lmwb_json_generate, app/formats/json_text.h, which mends json-glib
 * 1.6's "1e-300.0"), compact with one trailing newline; deterministic: export -> import -> export
 * gives the same bytes. */

/* The JSON text (*len without the NUL; len may be NULL). NULL with LMWB_ERROR_FAILED naming the
 * node or edge and field when a number is not finite, input error for a string that is not UTF-8. */
char *lmwb_graph_to_json(const LmwbGraph *g, size_t *len, GError **error);
/* The same, saved atomically (app/core/atomic_file.h: never over a file this process reads). */
gboolean lmwb_graph_write_json(const LmwbGraph *g, const char *path, GError **error);

/* Largest graph JSON file read: Neuronpedia's biggest graphs are about 100 MB, and json-glib holds
 * several times a file's size while it reads it. */
#define LMWB_GRAPH_JSON_MAX_BYTES ((uint64_t)256 << 20)
/* A graph from graph JSON: lmwb's own or circuit-tracer's / Neuronpedia's. The text is pre-checked
 * (app/formats/json_input.h: nesting, numbers, UTF-8) and every field is checked: required fields
 * (metadata.slug, prompt, prompt_tokens; nodes[].node_id, feature_type, layer, ctx_idx; links[].
 * source, target, weight) present with their types, optional ones typed when present, node_id
 * consistent with layer and ctx_idx, ids unique, links and pinned ids naming nodes that exist,
 * schema_version 1. Errors are input errors naming `origin` and the field ("nodes[3].ctx_idx").
 * Unknown fields are ignored; derived fields (jsNodeId, run_idx, reverse_ctx_idx, and `feature`
 * of features) are type-checked only. Error ids "0_{layer}_{pos}" (an older circuit-tracer form)
 * are read too and written back in the form above. n_layers comes from metadata.lmwb, else from
 * the logit nodes' layer, else the highest layer + 1. */
LmwbGraph *lmwb_graph_from_json(const char *data, size_t len, const char *origin, GError **error);
/* Reads `path` (a regular file of at most LMWB_GRAPH_JSON_MAX_BYTES, app/core/inputs.h). */
LmwbGraph *lmwb_graph_read_json(const char *path, GError **error);

/* ---- drawing: DOT (graph_dot.c), Graphviz layout, SVG and PNG (graph_layout.c) ---------------- */

typedef struct LmwbGraphDrawOptions {
  bool all_edges; /* also edges outside the circuit (dashed); default: only in_circuit ones */
  int max_edges;  /* at most this many edges, the largest |weight| first; 0: all */
} LmwbGraphDrawOptions;

/* Edge width: LMWB_GRAPH_PEN_MAX * |w| / max|w| over the drawn edges, at least LMWB_GRAPH_PEN_MIN;
 * colour by sign. Labels longer than LMWB_GRAPH_LABEL_MAX characters are cut with "…". */
#define LMWB_GRAPH_PEN_MAX 6.0
#define LMWB_GRAPH_PEN_MIN 0.3
#define LMWB_GRAPH_COLOR_POSITIVE "#2166ac"
#define LMWB_GRAPH_COLOR_NEGATIVE "#b2182b"
#define LMWB_GRAPH_LABEL_MAX 40

/* Graphviz DOT text: rankdir=BT, one rank=same row per lmwb_graph_node_rank (embeddings at the
 * bottom, logits at the top; an invisible chain keeps the rows in order and each row's nodes left to
 * right), node `id` = node id, label = caption, edges coloured and sized by weight. opt NULL:
 * defaults. NULL with LMWB_ERROR_FAILED when a drawn weight is not finite. g_free it. */
char *lmwb_graph_to_dot(const LmwbGraph *g, const LmwbGraphDrawOptions *opt, GError **error);
gboolean lmwb_graph_write_dot(const LmwbGraph *g, const LmwbGraphDrawOptions *opt, const char *path, GError **error);

/* Layout and rendering go through libgvc's `dot` layout of exactly the DOT text above. libgvc is
 * a build requirement (meson stops without it; .ci/setup-debian installs libgraphviz-dev and
 * graphviz). At run time Graphviz's plugins must be registered (the graphviz package does it);
 * where the layout or a renderer is missing these return LMWB_ERROR_FAILED with Graphviz's words.
 * Graphs beyond these sizes are an input error (prune first): dot's time grows fast with size. */
#define LMWB_GRAPH_LAYOUT_MAX_NODES 5000
#define LMWB_GRAPH_LAYOUT_MAX_EDGES 50000

/* PNGs are drawn at this resolution, lower where a side would be longer than the maximum. */
#define LMWB_GRAPH_PNG_DPI 96.0
#define LMWB_GRAPH_PNG_MAX_SIDE 16384.0

typedef enum { LMWB_GRAPH_SVG, LMWB_GRAPH_PNG } LmwbGraphImageFormat;
/* "svg" / "png" and back. */
const char *lmwb_graph_image_format_name(LmwbGraphImageFormat f);
gboolean lmwb_graph_image_format_parse(const char *text, LmwbGraphImageFormat *out, GError **error);
/* The rendered image (SVG text or PNG bytes); g_free it. Input errors as lmwb_graph_layout. */
guint8 *lmwb_graph_render(const LmwbGraph *g, const LmwbGraphDrawOptions *opt, LmwbGraphImageFormat format,
                          size_t *len, GError **error);
gboolean lmwb_graph_write_image(const LmwbGraph *g, const LmwbGraphDrawOptions *opt, LmwbGraphImageFormat format,
                                const char *path, GError **error);

/* The same layout as numbers, for the desktop to draw with Cairo. Units are points (1/72 inch),
 * origin at the top left, y growing downwards (Cairo's and SVG's convention): rows of higher rank
 * have smaller y. */
typedef struct LmwbGraphLayoutNode {
  double x, y;          /* centre */
  double width, height; /* of the node's shape */
} LmwbGraphLayoutNode;

typedef struct LmwbGraphLayoutEdge {
  int edge;             /* index in g->edges, or -1 for a reader -> head link */
  int source, target;   /* node indices */
  int n_points;         /* 3k + 1 */
  double *points;       /* [2 * n_points] x, y: a cubic Bézier chain p0 (c1 c2 p)* */
  bool has_arrow;       /* an arrowhead from the last point to (arrow_x, arrow_y) */
  double arrow_x, arrow_y;
} LmwbGraphLayoutEdge;

typedef struct LmwbGraphLayout {
  double width, height;        /* the drawing's bounding box */
  LmwbGraphLayoutNode *nodes;  /* [n_nodes], indexed like g->nodes */
  int n_nodes;
  LmwbGraphLayoutEdge *edges;  /* [n_edges]: the drawn edges by index, then reader -> head links */
  int n_edges;
} LmwbGraphLayout;

LmwbGraphLayout *lmwb_graph_layout(const LmwbGraph *g, const LmwbGraphDrawOptions *opt, GError **error);
void lmwb_graph_layout_free(LmwbGraphLayout *l);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(LmwbGraphLayout, lmwb_graph_layout_free)
