/* lmwb-batch transcoder train | eval: train a transcoder (or an SAE) into a SAELens folder, and
 * measure a set of transcoders spliced into the model. Each parses, checks everything it can
 * before any work, calls circuits/transcoder_train.h or transcoder.h, and writes JSON. */
#include "ui/batch/cli.h"
#include "ui/batch/commands.h"
#include "app/core/atomic_file.h"
#include "app/core/inputs.h"
#include "app/formats/json_text.h"
#include "app/formats/tokenizer.h"
#include "circuits/transcoder_train.h"
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The L1 coefficient when neither --l1, --k nor --l0 is given (the built-in model's set:
 * data/models/tiny-world/transcoders/CARD.md). */
#define DEFAULT_L1 0.004

#define TC_HELP \
  "A transcoder for MLP layer L reads blocks.L.ln2.hook_normalized and imitates blocks.L.hook_mlp_out\n" \
  "(Dunefsky, Chlenski & Nanda 2024); --sae HOOK trains a plain sparse autoencoder on one site instead.\n" \
  "Activations: ReLU with an L1 penalty (--l1, the default), TopK (--k) or JumpReLU with an L0 penalty\n" \
  "(--l0). The loss, the initialisation, dead-feature resampling and the units are described in\n" \
  "circuits/transcoder_train.h. Without --model the built-in model is used. Exit status: 0 ok, 2 bad\n" \
  "input (the message names the file or option), 1 other failure."

/* Removes a finished run's checkpoint folder (its one file, then the folder). */
static void remove_checkpoint(const char *dir) {
  g_autofree char *f = g_build_filename(dir, "state.safetensors", NULL);
  g_unlink(f);
  g_rmdir(dir);
}

/* train.json beside the weights, and the same on stdout. */
static gboolean write_train_json(const LmwbTcTrainResult *res, const LmwbTcTrainOptions *o, const char *out,
                                 const char *json_path, gboolean transcoder, int layer, LmwbDtype store, gint64 seed,
                                 size_t n, GError **err) {
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  lmwb_json_member_string(b, "out", out);
  g_autofree char *hin = lmwb_site_name(res->tc->in), *hout = lmwb_site_name(res->tc->out);
  lmwb_json_member_string(b, "hook_in", hin);
  lmwb_json_member_string(b, "hook_out", hout);
  if (transcoder) lmwb_json_member_int(b, "layer", layer);
  lmwb_json_member_int(b, "features", res->tc->d_sae);
  lmwb_json_member_string(b, "activation", lmwb_tc_activation_name(res->tc->act));
  if (o->act == LMWB_TC_TOPK) lmwb_json_member_int(b, "k", o->k);
  else lmwb_json_member_double(b, o->act == LMWB_TC_JUMPRELU ? "l0_coefficient" : "l1", o->sparsity);
  lmwb_json_member_string(b, "dtype", lmwb_dtype_name(store));
  lmwb_json_member_int(b, "seed", seed);
  lmwb_json_member_int(b, "steps", res->steps);
  lmwb_json_member_int(b, "tokens", res->tokens);
  lmwb_json_member_int(b, "text_tokens", (gint64)n);
  lmwb_json_member_double(b, "fvu", res->fvu);
  lmwb_json_member_double(b, "mse", res->mse);
  lmwb_json_member_double(b, "l0", res->l0);
  lmwb_json_member_double(b, "dead_fraction", res->dead_fraction);
  lmwb_json_member_int(b, "resampled", res->resampled);
  lmwb_json_member_double(b, "seconds", res->seconds);
  lmwb_json_member_double(b, "tokens_per_s", res->tokens_per_s);
  lmwb_json_member_double(b, "step_tokens_per_s", res->step_tokens_per_s);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  size_t len = 0;
  g_autofree char *text = lmwb_json_generate(root, TRUE, &len);
  return lmwb_file_write_atomic(json_path, text, len, err) && lmwb_cli_emit_json(json_node_ref(root), NULL, err);
}

/* ---- train ------------------------------------------------------------------------------------- */

int lmwb_cmd_transcoder_train(int argc, char **argv) {
  char **files = NULL, *out = NULL, *sae = NULL, *dtype = NULL;
  int layer = -1, features = 0, k = 0, context = 0, batch = 0, buffer = 0, fwd = 0;
  double l1 = NAN, l0 = NAN, lr = 0;
  gint64 tokens = 0, seed = 1, warmup = 0, dead_window = 0, resample_every = 0, stop_after = 0, ckpt_every = 0;
  gboolean resume = FALSE;
  GOptionEntry e[] = {
    {"layer", 'l', 0, G_OPTION_ARG_INT, &layer, "MLP layer to imitate (0-based)", "L"},
    {"sae", 0, 0, G_OPTION_ARG_STRING, &sae, "Train a plain SAE on this hook site instead (input = target), e.g. blocks.2.hook_resid_post", "HOOK"},
    {"features", 'f', 0, G_OPTION_ARG_INT, &features, "Number of features (default 16 x the input width)", "N"},
    {"l1", 0, 0, G_OPTION_ARG_DOUBLE, &l1, "ReLU with this L1 coefficient (default " G_STRINGIFY(DEFAULT_L1) ")", "X"},
    {"k", 'k', 0, G_OPTION_ARG_INT, &k, "TopK: exactly the K largest features are active", "K"},
    {"l0", 0, 0, G_OPTION_ARG_DOUBLE, &l0, "JumpReLU with this L0 coefficient", "X"},
    {"tokens", 't', 0, G_OPTION_ARG_INT64, &tokens, "Training tokens (required)", "N"},
    {"file", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &files, "Text to train on (repeatable; default: the Brown corpus at $LMWB_SHARED/data/brown/brown.txt)", "TEXT"},
    {"context", 'c', 0, G_OPTION_ARG_INT, &context, "Window length in tokens (default min(128, the model's context))", "N"},
    {"batch", 'b', 0, G_OPTION_ARG_INT, &batch, "Tokens per step (default 4096)", "N"},
    {"buffer", 0, 0, G_OPTION_ARG_INT, &buffer, "Tokens in the shuffled activation buffer (default 8 batches)", "N"},
    {"forward-batch", 0, 0, G_OPTION_ARG_INT, &fwd, "Windows per forward pass (default 16)", "N"},
    {"lr", 0, 0, G_OPTION_ARG_DOUBLE, &lr, "Adam's peak learning rate (default 4e-4); cosine decay to 0", "X"},
    {"warmup", 0, 0, G_OPTION_ARG_INT64, &warmup, "Warm-up steps (default 5% of the steps)", "N"},
    {"dead-window", 0, 0, G_OPTION_ARG_INT64, &dead_window, "A feature not active for N tokens is dead (default tokens/10)", "N"},
    {"resample-every", 0, 0, G_OPTION_ARG_INT64, &resample_every, "Tokens between resamplings of dead features (default the dead window; -1: never)", "N"},
    {"seed", 's', 0, G_OPTION_ARG_INT64, &seed, "Seed of the initialisation, the windows and the shuffle (default 1)", "S"},
    {"dtype", 0, 0, G_OPTION_ARG_STRING, &dtype, "Store the weights as F32 (default), F16 or BF16", "T"},
    {"checkpoint-every", 0, 0, G_OPTION_ARG_INT64, &ckpt_every, "Steps between checkpoints (default 500)", "N"},
    {"resume", 0, 0, G_OPTION_ARG_NONE, &resume, "Continue the run whose checkpoint is in DIR/checkpoint", NULL},
    {"stop-after", 0, 0, G_OPTION_ARG_INT64, &stop_after, "Stop (with a checkpoint) after N steps of this run", "N"},
    {"out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "Folder to write the transcoder into (SAELens: cfg.json, sae_weights.safetensors)", "DIR"},
    {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- train a transcoder (or an SAE) into a SAELens folder",
                      "Streams the model's activations on windows of the text into a shuffled buffer and trains with\n"
                      "Adam. Writes DIR/cfg.json and DIR/sae_weights.safetensors (SAELens; `transcoder eval` and the\n"
                      "desktop read them), DIR/metrics.csv (a row per step: loss, MSE, FVU, L0, dead fraction) and\n"
                      "DIR/train.json (the settings and results). Ctrl-C stops with a checkpoint in DIR/checkpoint;\n"
                      "--resume continues it exactly (the same weights as a run never stopped); the checkpoint is\n"
                      "removed when the run ends. A set for `transcoder eval --transcoders SET` is built layer by layer\n"
                      "with --out SET/layer_0, SET/layer_1, ...\n"
                      "Example: lmwb-batch transcoder train --layer 2 --features 4096 --l1 0.004 --tokens 4000000 --out set/layer_2",
                      TC_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_THREADS))
    return 2;
  int given = !isnan(l1) + (k != 0) + !isnan(l0);
  if (given > 1) return lmwb_cli_usage_error("give at most one of --l1 (ReLU), --k (TopK) and --l0 (JumpReLU)");
  if (!out) return lmwb_cli_usage_error("--out DIR is required");
  if (tokens <= 0) return lmwb_cli_usage_error("--tokens N (the number of training tokens, at least 1) is required");
  if ((layer >= 0) == (sae != NULL)) return lmwb_cli_usage_error("give exactly one of --layer L (a transcoder) or --sae HOOK");
  if (k < 0) return lmwb_cli_usage_error("--k %d must be positive", k);
  if (features < 0 || context < 0 || batch < 0 || buffer < 0 || fwd < 0 || warmup < 0 || dead_window < 0 || ckpt_every < 0 ||
      stop_after < 0 || resample_every < -1)
    return lmwb_cli_usage_error("sizes and counts must not be negative");
  if (!isnan(l1) && (!isfinite(l1) || l1 < 0)) return lmwb_cli_usage_error("--l1 %g must be a number >= 0", l1);
  if (!isnan(l0) && (!isfinite(l0) || l0 < 0)) return lmwb_cli_usage_error("--l0 %g must be a number >= 0", l0);
  if (lr < 0 || !isfinite(lr)) return lmwb_cli_usage_error("--lr %g must be positive", lr);
  if (seed < 0) return lmwb_cli_usage_error("--seed must not be negative");
  LmwbDtype store = LMWB_DTYPE_F32;
  if (dtype && !(lmwb_dtype_from_name(dtype, &store) &&
                 (store == LMWB_DTYPE_F32 || store == LMWB_DTYPE_F16 || store == LMWB_DTYPE_BF16)))
    return lmwb_cli_usage_error("--dtype %s: expected F32, F16 or BF16", dtype);
  GError *err = NULL;
  LmwbModel *m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  int status = 0;
  LmwbTcTrainOptions o;
  lmwb_tc_train_options_init(&o, layer);
  g_autofree char *ckpt = g_build_filename(out, "checkpoint", NULL);
  g_autofree char *csv = g_build_filename(out, "metrics.csv", NULL);
  g_autofree char *cfg_path = g_build_filename(out, "cfg.json", NULL);
  g_autofree char *w_path = g_build_filename(out, "sae_weights.safetensors", NULL);
  g_autofree char *json_path = g_build_filename(out, "train.json", NULL);
  g_autofree int32_t *ids = NULL;
  size_t n = 0;
  LmwbTcTrainResult res = {0};
  if (!m->tokenizer) {
    lmwb_input_error(&err, "%s has no tokenizer to read the text with", m->dir ? m->dir : "the model");
    goto fail;
  }
  if (sae && !lmwb_site_parse(&m->cfg, sae, &o.in, &err)) {
    g_prefix_error(&err, "--sae: ");
    goto fail;
  }
  if (sae) o.out = o.in;
  if (layer >= m->cfg.n_layer) {
    lmwb_input_error(&err, "--layer %d: the model has %d layers (0..%d)", layer, m->cfg.n_layer, m->cfg.n_layer - 1);
    goto fail;
  }
  /* the outputs may not be inputs (the model, a text, ...) */
  const char *outs[5] = {cfg_path, w_path, csv, json_path, NULL};
  for (int i = 0; outs[i]; i++)
    if (!lmwb_input_guard_check_output(outs[i], &err)) goto fail;
  if (!files) {
    g_autofree char *brown = lmwb_cli_default_brown(&err);
    if (!brown) {
      g_prefix_error(&err, "no --file given and ");
      goto fail;
    }
    files = g_new0(char *, 2);
    files[0] = g_strdup(brown);
  }
  ids = lmwb_cli_read_token_files(m, files, &n, &err);
  if (!ids) goto fail;
  o.d_sae = features;
  if (k) o.act = LMWB_TC_TOPK, o.k = k;
  else if (!isnan(l0)) o.act = LMWB_TC_JUMPRELU, o.sparsity = l0;
  else o.sparsity = isnan(l1) ? DEFAULT_L1 : l1;
  o.tokens = tokens, o.context = context, o.batch = batch, o.buffer = buffer, o.forward_batch = fwd, o.lr = lr;
  o.warmup = warmup, o.dead_window = dead_window, o.resample_every = resample_every, o.seed = (guint64)seed;
  o.checkpoint_dir = ckpt, o.checkpoint_every = ckpt_every, o.resume = resume, o.max_steps_this_run = stop_after;
  o.metrics_csv = csv;
  if (n < (size_t)(context ? context : MIN(128, m->cfg.n_ctx))) {
    g_autofree char *list = g_strjoinv(", ", files);
    lmwb_input_error(&err, "%s: %zu tokens, fewer than one window of %d", list, n, context ? context : MIN(128, m->cfg.n_ctx));
    goto fail;
  }
  LmwbReporter *rep = lmwb_cli_reporter();
  if (!lmwb_tc_train(m, ids, n, &o, rep, &res, &err)) goto fail;
  if (isatty(2)) fputc('\n', stderr);
  if (!lmwb_transcoder_save_saelens_as(res.tc, out, store, &err)) goto fail;
  if (!write_train_json(&res, &o, out, json_path, sae == NULL, layer, store, seed, n, &err)) goto fail;
  remove_checkpoint(ckpt);
  goto done;
fail:
  status = lmwb_cli_fail(err);
done:
  lmwb_tc_train_result_clear(&res);
  g_strfreev(files);
  lmwb_model_unref(m);
  return status;
}

/* ---- eval ------------------------------------------------------------------------------------- */

int lmwb_cmd_transcoder_eval(int argc, char **argv) {
  char *set_dir = NULL, *file = NULL;
  int context = 0, batch = 0;
  gint64 tokens = 0;
  GOptionEntry e[] = {
    {"transcoders", 'T', 0, G_OPTION_ARG_FILENAME, &set_dir, "The set: SET/layer_{L}/ SAELens folders, or circuit-tracer's layer_{L}.safetensors + config.yaml", "SET"},
    {"file", 0, 0, G_OPTION_ARG_FILENAME, &file, "Text to measure on (required)", "TEXT"},
    {"context", 'c', 0, G_OPTION_ARG_INT, &context, "Window length in tokens (default min(128, the model's context))", "N"},
    {"tokens", 't', 0, G_OPTION_ARG_INT64, &tokens, "At most N tokens of the text (default: all of it, in whole windows)", "N"},
    {"batch", 'b', 0, G_OPTION_ARG_INT, &batch, "Windows per forward pass (default 8)", "N"},
    {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- measure a set of transcoders spliced into the model",
                      "On consecutive windows of the text, prints JSON:\n"
                      "  {\"tokens\", \"context\", \"ce_clean\", \"ce_all_spliced\", \"ce_all_ablated\", \"ce_all_recovered\",\n"
                      "   \"layers\": [{\"layer\", \"fvu\", \"l0\", \"dead_fraction\", \"ce_spliced\", \"ce_ablated\", \"ce_recovered\"}, ...]}\n"
                      "FVU = sum ||out - mlp_out||^2 / sum ||mlp_out - its mean||^2; L0 = mean active features per\n"
                      "token; dead = features never active on the text; CE = mean next-token cross-entropy (nats) with\n"
                      "the model as it is, with that layer's MLP replaced by its transcoder (spliced) or its output\n"
                      "set to zero (ablated); recovered = (ablated - spliced) / (ablated - clean). The all_ figures\n"
                      "replace or ablate every MLP at once.\n"
                      "Example: lmwb-batch transcoder eval --transcoders data/models/tiny-world/transcoders --file held_out.txt",
                      TC_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if (!set_dir) return lmwb_cli_usage_error("--transcoders SET is required");
  if (!file) return lmwb_cli_usage_error("--file TEXT is required");
  if (context < 0 || batch < 0 || tokens < 0) return lmwb_cli_usage_error("--context, --batch and --tokens must not be negative");
  GError *err = NULL;
  LmwbModel *m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  if (context > m->cfg.n_ctx || context == 1) {
    lmwb_input_error(&err, "--context %d must be in 2..%d (the model's context)", context, m->cfg.n_ctx);
    lmwb_model_unref(m);
    return lmwb_cli_fail(err);
  }
  LmwbTranscoderSet *set = lmwb_transcoder_set_load(set_dir, &m->cfg, &err);
  g_autofree char *text = set ? lmwb_cli_read_text(file, &err) : NULL;
  LmwbTcEval *ev = NULL;
  if (text) {
    LmwbTcEvalOptions eo = {.context = context, .max_tokens = tokens, .batch = batch};
    ev = lmwb_transcoder_eval(m, set, text, &eo, lmwb_cli_reporter(), &err);
    if (!ev && g_error_matches(err, LMWB_ERROR, LMWB_ERROR_INPUT)) g_prefix_error(&err, "%s: ", file);
  }
  lmwb_transcoder_set_free(set);
  if (!ev) {
    lmwb_model_unref(m);
    return lmwb_cli_fail(err);
  }
  if (isatty(2)) fputc('\n', stderr);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  lmwb_json_member_string(b, "transcoders", set_dir);
  lmwb_json_member_string(b, "file", file);
  lmwb_json_member_int(b, "tokens", ev->tokens);
  lmwb_json_member_int(b, "context", context ? context : MIN(128, m->cfg.n_ctx));
  lmwb_json_member_double(b, "ce_clean", ev->ce_clean);
  lmwb_json_member_double(b, "ce_all_spliced", ev->ce_all_spliced);
  lmwb_json_member_double(b, "ce_all_ablated", ev->ce_all_ablated);
  lmwb_json_member_double(b, "ce_all_recovered", ev->ce_all_recovered);
  json_builder_set_member_name(b, "layers");
  json_builder_begin_array(b);
  for (int L = 0; L < ev->n_layers; L++) {
    const LmwbTcLayerEval *le = &ev->layers[L];
    json_builder_begin_object(b);
    lmwb_json_member_int(b, "layer", L);
    lmwb_json_member_double(b, "fvu", le->fvu);
    lmwb_json_member_double(b, "l0", le->l0);
    lmwb_json_member_double(b, "dead_fraction", le->dead_fraction);
    lmwb_json_member_double(b, "ce_spliced", le->ce_spliced);
    lmwb_json_member_double(b, "ce_ablated", le->ce_ablated);
    lmwb_json_member_double(b, "ce_recovered", le->ce_recovered);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  lmwb_tc_eval_free(ev);
  lmwb_model_unref(m);
  return lmwb_cli_emit_json(json_builder_get_root(b), lmwb_cli.out, &err) ? 0 : lmwb_cli_fail(err);
}
