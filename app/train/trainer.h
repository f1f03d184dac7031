/* The trainer behind `lmwb-batch train --recipe R.json`: trains a GPT-2- or Llama-architecture
 * model from scratch (or fine-tunes a Hugging Face folder) on tokenised text with AdamW, warm-up +
 * cosine decay, global-norm clipping, validation at intervals, atomic checkpoints and exact
 * resume, a metrics CSV, and writes a Hugging Face folder at the end.
 *
 * Recipe (JSON; paths relative to the recipe's folder; unknown keys are an error):
 *   "out": DIR, "tokenizer": DIR (from scratch) | "init_from": DIR (fine-tune),
 *   "model": {"architecture": "gpt2"|"llama", "n_layer", "d_model", "n_head", "n_kv_head",
 *             "d_ff", "context"},
 *   "train_files": [...], "valid_files": [...], "seed", "batch", "seq", "grad_accum", "steps",
 *   "lr", "min_lr", "warmup", "weight_decay", "beta1", "beta2", "eps", "grad_clip",
 *   "eval_every", "eval_batches", "checkpoint_every", "dtype" ("F32"|"F16"|"BF16"), "threads",
 *   "window_start" ("any" | "eos").
 * Training windows are drawn uniformly from the train files' tokens, concatenated, so a file
 * listed twice is drawn twice as often. With "window_start": "eos" a window starts only at an
 * end-of-text token (a document boundary; the TokFSM sequences, whose state parity is read from
 * the position after it), for training and validation alike.
 * Optimiser defaults: beta1 0.9, beta2 0.95, weight_decay 0.1 (GPT-2 recipes), eps 1e-8. On narrow
 * data a larger eps (1e-6 to 1e-5) damps the drift of tokens the data never uses: their softmax
 * gradients are ~1e-7, which eps 1e-8 turns into nearly full-size steps
 * (data/models/tiny-world/MODEL_CARD.md).
 * Same recipe and seed -> bit-identical weights (for a fixed thread count); a resumed run equals
 * an uninterrupted one. */
#pragma once
#include "app/engine/model.h"
#include "app/jobs/reporter.h"

typedef struct LmwbTrainResult {
  int64_t steps;
  double final_train_loss, final_valid_loss;
  double tokens_per_s;
  double seconds;
  char *out_dir;
} LmwbTrainResult;

/* resume: continue from out/checkpoint when it exists. max_steps_this_run > 0 stops (with a
 * checkpoint) after that many steps, as an interruption would (used by tests). */
gboolean lmwb_train(const char *recipe_path, gboolean resume, int64_t max_steps_this_run, LmwbReporter *rep,
                    LmwbTrainResult *result, GError **error);
void lmwb_train_result_clear(LmwbTrainResult *r);

/* Where windows of `span` tokens may start when each must begin at a document boundary ("window_start":
 * "eos" here, `codebook train --eos-windows`): the positions of the end-of-text token eos with span
 * tokens from it inside ids. NULL with *n = 0 when there is none; g_free. */
size_t *lmwb_eos_window_starts(const int32_t *ids, size_t n_ids, int32_t eos, size_t span, size_t *n);
