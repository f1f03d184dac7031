/* Shared by the edge-circuit methods: a batch of a task's examples. */
#pragma once
#include "circuits/edge_circuit.h"

typedef struct EdgeBatch {
  int first, B, T;
  int32_t *clean, *corrupt; /* [B, T], right-padded with each example's first token */
  int *lens;                /* [B] */
  int *last;                /* [B] row of the last token in [B*T] logits: b * T + len - 1 */
} EdgeBatch;

/* Examples first .. first+B-1. */
void edge_batch_make(const LmwbEdgeTask *t, int first, int B, EdgeBatch *b);
void edge_batch_clear(EdgeBatch *b);
/* The batch size of options (0: the default), and the number of batches of the task. */
int edge_batch_size(int batch);
/* A runner of the model with the edge stream on it (NULL with the error), and both freed. */
LmwbEdgeStream *edge_stream_open(LmwbModel *m, LmwbRunner **r, GError **error);
void edge_stream_close(LmwbEdgeStream *s, LmwbRunner *r);
/* The backward of a loss whose gradient is given at each example's last logits (dlast [B, V]),
 * after a forward that kept only those: the gradient enters at ln_final through the unembedding,
 * so neither pass computes the logits of the other positions. */
gboolean edge_backward_last(LmwbRunner *r, const EdgeBatch *b, const float *dlast, GError **error);
/* Runs the corrupted batch into the stream. */
gboolean edge_batch_corrupt(LmwbEdgeStream *s, const EdgeBatch *b, GError **error);
