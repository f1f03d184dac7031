/* Shared by model.c (layout, loading, saving) and weights.c (versions, edits, device copies). */
#pragma once
#include "app/engine/model.h"

/* A model with zeroed weights for a config, its views, info table and weight store. */
LmwbModel *lmwb_model_alloc(const LmwbConfig *cfg, GError **error);
/* slots[i] = the address of the view of m->info[i] inside w (n_info entries). */
void lmwb_model_weight_slots(const LmwbConfig *c, LmwbWeights *w, float ***slots);

LmwbWeightStore *lmwb_weight_store_new(int n_info);
/* Frees the store of a model that is going away (device copies, edited tensors, low-rank
 * changes). Returns the model whose tokenizer and info table it borrowed (the caller drops that
 * reference last), or NULL when they are its own. */
LmwbModel *lmwb_weight_store_release(LmwbModel *m);
