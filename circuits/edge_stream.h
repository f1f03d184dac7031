/* The disentangled residual stream of edge pruning (Bhaskar et al. 2024; methods/edge-pruning.md).
 *
 * Writers: `input` (token + position embedding, blocks.0.hook_resid_pre), every head `a{L}.h{H}`
 * (its output through its slice of W_O, attn.hook_result, plus b_O / H) and every MLP `m{L}`
 * (hook_mlp_out). Readers: every query head's input `a{L}.h{H}<q>` (hook_q_input), every key/value
 * head's `<k>`, `<v>` (hook_k_input / hook_v_input: per key-value head with grouped-query
 * attention), every MLP's input `m{L}` (hook_mlp_in) and `logits` (the final residual before
 * ln_final). A reader reads the writers upstream of it: the input and every writer of the layers
 * below; an MLP also its own layer's heads unless the model has a parallel residual.
 *
 * With a mask z in [0,1] on every edge w -> v, reader v's input is
 *     x_v = sum_w [ z_wv a_w + (1 - z_wv) ã_w ]   (ã: the writer's output on the corrupted input)
 *         = resid_v - sum_w (1 - z_wv) (a_w - ã_w)
 * where resid_v is the ordinary residual stream of this run at the reader (the sum of this run's
 * writer outputs; constant biases such as b_O / H cancel in a_w - ã_w). The stream runs on a
 * runner through CALL hooks: writer sites keep delta_w = a_w - ã_w, reader sites subtract the
 * masked sum (one GEMM per reader group). In a backward the reader hooks add
 *     dL/dz_wv = sum over batch and positions of delta_w . dL/dx_v
 * to the mask gradients and send -(1 - z_wv) dL/dx_v to the writer, which its hook adds to the
 * gradient at its site: gradients flow through a_w to every earlier mask. z = 1 everywhere is the
 * plain model; z = 0 everywhere is the corrupted run.
 *
 * Layout. Writers: 0 = input, then per layer L the heads 1 + L (H + 1) + h and the MLP
 * 1 + L (H + 1) + H. Readers: per layer L the query heads, the key heads, the value heads (Hkv
 * each) and the MLP, then `logits` last. Every reader reads a prefix 0 .. n_in - 1 of the writers,
 * so the edges are the rows of the readers one after another: edge (w, v) has index
 * reader_offset[v] + w. GPT-2 small: 157 writers, 445 readers, 32,491 edges.
 *
 * Memory: delta and its gradient, 2 x n_writers x B x T x d_model floats, plus the corrupted
 * outputs (the same again). The stream borrows the runner; one stream per runner at a time. */
#pragma once
#include "app/engine/runner.h"
#include "circuits/graph.h"

typedef enum { LMWB_EDGE_READ_Q, LMWB_EDGE_READ_K, LMWB_EDGE_READ_V, LMWB_EDGE_READ_MLP, LMWB_EDGE_READ_LOGITS } LmwbEdgeReadKind;

/* The edges of a model. */
typedef struct LmwbEdgeGraph {
  int n_layers, n_head, n_kv_head;
  bool parallel;           /* parallel residual: an MLP does not read its own layer's heads */
  int n_writers, n_readers;
  int64_t n_edges;
  int *reader_n_in;        /* [n_readers] writers the reader reads (a prefix) */
  int64_t *reader_offset;  /* [n_readers] index of its first edge */
} LmwbEdgeGraph;

/* The edges of a model of this configuration (input error for none). Free with _free. */
LmwbEdgeGraph *lmwb_edge_graph_new(const LmwbConfig *cfg, GError **error);
void lmwb_edge_graph_free(LmwbEdgeGraph *g);
int lmwb_edge_writer_head(const LmwbEdgeGraph *g, int layer, int head);
int lmwb_edge_writer_mlp(const LmwbEdgeGraph *g, int layer);
/* kind Q takes a query head, K and V a key-value head; layer and head are ignored for LOGITS. */
int lmwb_edge_reader(const LmwbEdgeGraph *g, LmwbEdgeReadKind kind, int layer, int head);
/* Names, Edge-Pruning's: "input", "a3.h1", "m5"; "a7.h2<q>", "m5", "logits". g_free them. */
char *lmwb_edge_writer_name(const LmwbEdgeGraph *g, int w);
char *lmwb_edge_reader_name(const LmwbEdgeGraph *g, int v);
/* Parse names back (-1 with an input error naming the text when it names no writer / reader of
 * this model). */
int lmwb_edge_writer_parse(const LmwbEdgeGraph *g, const char *name, GError **error);
int lmwb_edge_reader_parse(const LmwbEdgeGraph *g, const char *name, GError **error);
/* The edge w -> v, or -1 when v does not read w. */
int64_t lmwb_edge_index(const LmwbEdgeGraph *g, int w, int v);
/* The writer and reader of an edge. */
void lmwb_edge_ends(const LmwbEdgeGraph *g, int64_t e, int *w, int *v);

/* Edges with values as a circuit graph (circuits/graph.h, method edge-pruning): every writer and
 * reader node, and the edges with keep[e] != 0 (NULL: all) with weight score[e] (NULL: 1) and
 * in_circuit = in_circuit[e] != 0 (NULL: TRUE). NULL with an error. */
LmwbGraph *lmwb_edge_graph_export(const LmwbEdgeGraph *g, const float *score, const uint8_t *keep,
                                  const uint8_t *in_circuit, GError **error);

typedef struct LmwbEdgeStream LmwbEdgeStream;

/* Installs the stream's hooks on the runner (every mask 1: the plain model, until masks are set).
 * The runner's runs then compute the per-head sites the stream needs. */
LmwbEdgeStream *lmwb_edge_stream_new(LmwbRunner *r, GError **error);
/* Removes the hooks. */
void lmwb_edge_stream_free(LmwbEdgeStream *s);
const LmwbEdgeGraph *lmwb_edge_stream_graph(const LmwbEdgeStream *s);

/* Runs the corrupted batch through the plain model (the stream off) and keeps every writer's
 * output ã for the masked runs that follow, which must have the same B x T (runs of another shape
 * pass through unmasked). lens as in LmwbForwardOptions. Before any corrupted run ã = 0: zero
 * ablation. */
gboolean lmwb_edge_stream_corrupt(LmwbEdgeStream *s, const int32_t *ids, int B, int T, const int *lens,
                                  GError **error);
/* The corrupted run's writer outputs, [n_writers, B, T, d_model] (NULL before any), to keep and
 * set again later instead of running the corrupted batch once more. */
const float *lmwb_edge_stream_corrupted(const LmwbEdgeStream *s, int *B, int *T);
void lmwb_edge_stream_set_corrupted(LmwbEdgeStream *s, const float *outputs, int B, int T);
/* The masks, [n_edges] values in [0,1] (copied). NULL: all 1. */
void lmwb_edge_stream_set_masks(LmwbEdgeStream *s, const float *z);
/* The mask gradients summed over the backwards since the last reset: [n_edges]. */
const float *lmwb_edge_stream_mask_grads(const LmwbEdgeStream *s);
void lmwb_edge_stream_reset_grads(LmwbEdgeStream *s);
/* Hold delta_w = a_w - ã_w at the values of the last run instead of recomputing it from each
 * run's writers (EAP-IG: the gradients of runs on interpolated inputs, contracted with the clean
 * run's delta). Only meaningful while every mask is 1. */
void lmwb_edge_stream_hold_delta(LmwbEdgeStream *s, bool hold);
