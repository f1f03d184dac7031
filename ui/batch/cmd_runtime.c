/* lmwb-batch subcommands of the runtime: info, tokenize, logits, grad, activations, generate,
 * perplexity, bench. Each parses, calls the runtime, and writes JSON or .npy. */
#include "ui/batch/cli.h"
#include "ui/batch/commands.h"
#include "ui/batch/run_options.h"
#include "analysis/codebooks.h"
#include "app/engine/bench.h"
#include "app/engine/generate.h"
#include "app/engine/perplexity.h"
#include "app/formats/npy.h"
#include "app/formats/tokenizer.h"
#include <math.h>
#include <string.h>

/* JsonBuilder shorthands: one member of each type. */
#define KI(k, v) do { json_builder_set_member_name(b, k); json_builder_add_int_value(b, v); } while (0)
#define KS(k, v) do { json_builder_set_member_name(b, k); json_builder_add_string_value(b, v); } while (0)
#define KB(k, v) do { json_builder_set_member_name(b, k); json_builder_add_boolean_value(b, v); } while (0)
#define KD(k, v) do { json_builder_set_member_name(b, k); json_builder_add_double_value(b, v); } while (0)

#define MODEL_HELP \
  "The model is a Hugging Face folder (GPT-2, Llama/Mistral/Qwen2 or GPT-NeoX/Pythia); without\n" \
  "--model the built-in model is used. Exit status: 0 ok, 2 bad input (the message names the file\n" \
  "and field), 1 other failure."

int lmwb_cmd_info(int argc, char **argv) {
  gboolean hooks = FALSE;
  GOptionEntry e[] = {{"hooks", 0, 0, G_OPTION_ARG_NONE, &hooks, "Also list every hook site name", NULL}, {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- describe a model", "Prints architecture, sizes, parameter count, dtype and tokenizer kind as JSON.",
                      MODEL_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_OUT))
    return 2;
  GError *err = NULL;
  LmwbModel *m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  const LmwbConfig *c = &m->cfg;
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  KS("path", m->dir);
  KS("architecture", lmwb_arch_name(c->arch));
  KS("model_type", c->model_type);
  KI("n_layer", c->n_layer);
  KI("d_model", c->d_model);
  KI("n_head", c->n_head);
  KI("n_kv_head", c->n_kv_head);
  KI("head_dim", c->head_dim);
  KI("d_ff", c->d_ff);
  KI("vocab_size", c->vocab_size);
  KI("context", c->n_ctx);
  KS("norm", c->norm == LMWB_NORM_LAYER ? "layernorm" : "rmsnorm");
  KS("positions", c->learned_pos ? "learned" : "rotary");
  if (!c->learned_pos) KI("rotary_dim", c->rotary_dim);
  KS("mlp", c->gated_mlp ? "swiglu" : c->act == LMWB_ACT_GELU_TANH ? "gelu_tanh" : "gelu_erf");
  KB("parallel_residual", c->parallel_residual);
  KB("tied_head", c->tied_head);
  KI("parameters", (gint64)lmwb_model_param_count(m));
  KS("dtype", m->source_dtype);
  KS("tokenizer", m->tokenizer ? lmwb_tokenizer_kind(m->tokenizer) : "none");
  if (m->tokenizer) KI("tokenizer_vocab", lmwb_tokenizer_vocab_size(m->tokenizer));
  KS("backend", m->be->name);
  if (hooks) {
    json_builder_set_member_name(b, "hooks");
    json_builder_begin_array(b);
    g_auto(GStrv) names = lmwb_site_list(c);
    for (char **p = names; *p; p++) json_builder_add_string_value(b, *p);
    json_builder_end_array(b);
  }
  json_builder_end_object(b);
  lmwb_model_unref(m);
  return lmwb_cli_emit_json(json_builder_get_root(b), lmwb_cli.out, &err) ? 0 : lmwb_cli_fail(err);
}

int lmwb_cmd_tokenize(int argc, char **argv) {
  char *text = NULL, *file = NULL;
  gboolean no_special = FALSE;
  GOptionEntry e[] = {{"text", 't', 0, G_OPTION_ARG_STRING, &text, "Text to encode", "STR"},
                      {"file", 'f', 0, G_OPTION_ARG_FILENAME, &file, "Encode the contents of a UTF-8 file", "F"},
                      {"no-special", 0, 0, G_OPTION_ARG_NONE, &no_special, "Do not add the tokenizer's special tokens (e.g. Llama's BOS)", NULL},
                      {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- encode text with the model's tokenizer",
                      "Prints {\"ids\":[...],\"tokens\":[...]} exactly as the model's own (Hugging Face) tokenizer would.",
                      MODEL_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_OUT))
    return 2;
  if ((text != NULL) == (file != NULL)) return lmwb_cli_usage_error("give exactly one of --text or --file");
  GError *err = NULL;
  g_autofree char *content = file ? lmwb_cli_read_text(file, &err) : g_strdup(text);
  if (!content) return lmwb_cli_fail(err);
  LmwbModel *m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  if (!m->tokenizer) {
    lmwb_input_error(&err, "%s has no tokenizer (tokenizer.json or vocab.json + merges.txt)", m->dir);
    lmwb_model_unref(m);
    return lmwb_cli_fail(err);
  }
  size_t n = 0;
  g_autofree int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, content, strlen(content), !no_special, &n, &err);
  if (!ids) {
    lmwb_model_unref(m);
    return lmwb_cli_fail(err);
  }
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "ids");
  lmwb_json_add_ids(b, ids, n);
  json_builder_set_member_name(b, "tokens");
  json_builder_begin_array(b);
  for (size_t i = 0; i < n; i++) {
    const char *t = lmwb_tokenizer_token(m->tokenizer, ids[i]);
    json_builder_add_string_value(b, t ? t : "");
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  lmwb_model_unref(m);
  return lmwb_cli_emit_json(json_builder_get_root(b), lmwb_cli.out, &err) ? 0 : lmwb_cli_fail(err);
}

/* Shared by logits / grad / activations: load, parse input, make a runner with clamps. */
typedef struct {
  LmwbModel *m;
  LmwbRunner *r;
  int32_t *ids;
  int B, T;
} Job;

static gboolean job_begin(Job *j, const char *ids_text, const char *text, GError **err) {
  memset(j, 0, sizeof *j);
  j->m = lmwb_cli_load_model(err);
  if (!j->m) return FALSE;
  if (!lmwb_cli_input_ids(j->m, ids_text, text, &j->ids, &j->B, &j->T, err)) return FALSE;
  j->r = lmwb_runner_new(j->m);
  return lmwb_cli_apply_clamps(j->r, err);
}

static void job_end(Job *j) {
  lmwb_run_options_clear();
  lmwb_cli_release_clamps(j->r);
  lmwb_runner_free(j->r);
  lmwb_model_unref(j->m);
  g_free(j->ids);
}

static int need_out(const char *what) {
  if (!lmwb_cli.out) return lmwb_cli_usage_error("%s writes a .npy array: give --out FILE.npy", what);
  return 0;
}

int lmwb_cmd_logits(int argc, char **argv) {
  char *ids = NULL, *text = NULL;
  GOptionEntry e[] = {{"ids", 0, 0, G_OPTION_ARG_STRING, &ids, "Token ids: commas between tokens, ';' between sequences of equal length", "\"1,2,3;4,5,6\""},
                      {"text", 't', 0, G_OPTION_ARG_STRING, &text, "Text to encode with the model's tokenizer (one sequence)", "STR"},
                      {NULL}};
  g_autofree GOptionEntry *all = lmwb_run_options_entries(e, FALSE);
  if (!lmwb_cli_parse(&argc, &argv, "- next-token logits as a .npy array",
                      "Writes float32 logits [B, T, vocab] in NumPy .npy format to --out.\n"
                      "Example: lmwb-batch logits --ids \"464,3290;464,3797\" --out logits.npy\n"
                      "Interchange: lmwb-batch logits --ids ... --patch blocks.1.hook_resid_pre=other.npy --out l.npy",
                      MODEL_HELP, all, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS | LMWB_CLI_CLAMP))
    return 2;
  int rc = need_out("logits");
  if (rc) return rc;
  GError *err = NULL;
  Job j;
  LmwbForwardOptions fo = {0};
  gboolean ok = job_begin(&j, ids, text, &err) && lmwb_cli_check_clamp_positions(j.T, &err) &&
                lmwb_run_options_apply(j.r, j.B, j.T, &fo, &err) && lmwb_runner_forward(j.r, j.ids, j.B, j.T, &fo, &err);
  if (ok) {
    int64_t shape[3] = {j.B, j.T, j.m->cfg.vocab_size};
    ok = lmwb_cli_write_npy(lmwb_cli.out, "logit", lmwb_runner_logits(j.r, NULL), shape, 3, &err);
  }
  job_end(&j);
  return ok ? 0 : lmwb_cli_fail(err);
}

/* activations at blocks.L.attn.hook_codes / mlp.hook_codes: the code ids of the --codebooks set
 * (int32 .npy; they are not runner sites: analysis/codebooks.h). */
static int codes_cmd(Job *j, int layer, LmwbCodebookSite site) {
  GError *err = NULL;
  LmwbCodebookRun *run = lmwb_cli_codebook_run();
  LmwbForwardOptions fo = {0};
  int64_t shape[4];
  int nd = 0;
  const int32_t *ids = NULL;
  gboolean ok = TRUE;
  if (!run) {
    lmwb_input_error(&err, "--hook blocks.%d.%s.hook_codes: the code ids need --codebooks DIR", layer,
                     lmwb_codebook_site_name(site));
    ok = FALSE;
  }
  ok = ok && lmwb_run_options_apply(j->r, j->B, j->T, &fo, &err) && lmwb_runner_forward(j->r, j->ids, j->B, j->T, &fo, &err) &&
       (ids = lmwb_codebook_run_codes(run, layer, site, shape, &nd, &err)) != NULL &&
       lmwb_npy_write_i32(lmwb_cli.out, ids, shape, nd, &err);
  job_end(j);
  return ok ? 0 : lmwb_cli_fail(err);
}

static int hook_array_cmd(int argc, char **argv, gboolean grad) {
  char *ids = NULL, *text = NULL, *hook = NULL;
  GOptionEntry e[] = {{"ids", 0, 0, G_OPTION_ARG_STRING, &ids, "Token ids: commas between tokens, ';' between sequences of equal length", "\"1,2,3;4,5,6\""},
                      {"text", 't', 0, G_OPTION_ARG_STRING, &text, "Text to encode with the model's tokenizer", "STR"},
                      {"hook", 0, 0, G_OPTION_ARG_STRING, &hook, "Hook site (TransformerLens name), e.g. blocks.0.hook_resid_pre; `info --hooks` lists them", "NAME"},
                      {NULL}};
  g_autofree GOptionEntry *all = lmwb_run_options_entries(e, grad);
  const char *summary = grad ? "Writes dL/d(activation at --hook) as float32 .npy, same shape as the activation (e.g. [B,T,d_model],\n"
                               "[B,T,heads,d_head], [B,heads,T,T] for attn.hook_pattern). L is the mean next-token cross-entropy\n"
                               "over all B x (T-1) predictions unless --loss or --from says otherwise.\n"
                               "Examples: grad --ids ... --hook hook_embed --loss logit-diff:318:262 --freeze pattern,norm --out g.npy\n"
                               "          grad --ids ... --hook blocks.0.hook_resid_pre --from blocks.1.ln2.hook_normalized=row.npy --out g.npy"
                             : "Writes the activation at --hook as float32 .npy (shapes as TransformerLens: [B,T,d_model],\n"
                               "[B,T,heads,d_head], [B,heads,T,T] for attn.hook_pattern, [B,T,d_mlp] for mlp.hook_post,\n"
                               "[B,T,heads,d_model] for attn.hook_result and hook_q_input). With --codebooks, the code ids\n"
                               "blocks.L.attn.hook_codes [B,T,heads,k] and blocks.L.mlp.hook_codes [B,T,k] as int32 .npy.";
  if (!lmwb_cli_parse(&argc, &argv, grad ? "- gradient at a hook" : "- activations at a hook", summary, MODEL_HELP, all,
                      LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS | LMWB_CLI_CLAMP))
    return 2;
  int rc = need_out(grad ? "grad" : "activations");
  if (rc) return rc;
  if (!hook) return lmwb_cli_usage_error("--hook NAME is required");
  GError *err = NULL;
  Job j;
  LmwbSite site;
  int code_layer;
  LmwbCodebookSite code_site;
  gboolean codes = !grad && lmwb_codebook_codes_site_parse(hook, &code_layer, &code_site);
  gboolean ok = job_begin(&j, ids, text, &err) && lmwb_cli_check_clamp_positions(j.T, &err);
  if (ok && codes) return codes_cmd(&j, code_layer, code_site);
  ok = ok && lmwb_site_parse(&j.m->cfg, hook, &site, &err);
  LmwbForwardOptions fo = {.sites = ok ? lmwb_site_info(site.kind)->run_flag : 0};
  ok = ok && lmwb_run_options_apply(j.r, j.B, j.T, &fo, &err) && lmwb_runner_forward(j.r, j.ids, j.B, j.T, &fo, &err);
  const float *data = NULL;
  int64_t shape[4];
  int nd = 0;
  if (ok && grad) {
    ok = lmwb_run_options_backward(j.r, j.B, j.T, &err) && (data = lmwb_runner_grad(j.r, site, shape, &nd, &err));
  } else if (ok) {
    ok = (data = lmwb_runner_activation(j.r, site, shape, &nd, &err)) != NULL;
  }
  if (ok) ok = lmwb_cli_write_npy(lmwb_cli.out, grad ? "gradient" : "activation", data, shape, nd, &err);
  job_end(&j);
  return ok ? 0 : lmwb_cli_fail(err);
}

int lmwb_cmd_grad(int argc, char **argv) { return hook_array_cmd(argc, argv, TRUE); }
int lmwb_cmd_activations(int argc, char **argv) { return hook_array_cmd(argc, argv, FALSE); }

int lmwb_cmd_generate(int argc, char **argv) {
  char *prompt = NULL;
  int max_tokens = 32, top_k = 0;
  double temperature = 0, top_p = 1.0;
  gint64 seed = 0;
  gboolean no_stop = FALSE;
  GOptionEntry e[] = {{"prompt", 'p', 0, G_OPTION_ARG_STRING, &prompt, "Prompt text", "STR"},
                      {"max-tokens", 'n', 0, G_OPTION_ARG_INT, &max_tokens, "New tokens to generate (default 32)", "N"},
                      {"temperature", 0, 0, G_OPTION_ARG_DOUBLE, &temperature, "Sampling temperature; 0 = greedy (default)", "T"},
                      {"top-k", 0, 0, G_OPTION_ARG_INT, &top_k, "Sample only from the K most likely tokens (0 = off)", "K"},
                      {"top-p", 0, 0, G_OPTION_ARG_DOUBLE, &top_p, "Nucleus sampling mass (1 = off)", "P"},
                      {"seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Random seed for sampling (default 0)", "S"},
                      {"no-stop", 0, 0, G_OPTION_ARG_NONE, &no_stop, "Do not stop at the end-of-text token", NULL},
                      {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- continue a prompt",
                      "Generates a continuation with the KV cache. Prints {\"prompt\",\"completion\",\"ids\",\"tokens\"}.\n"
                      "With --clamp, the neuron is clamped on the prompt and on every generated token.",
                      MODEL_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS | LMWB_CLI_CLAMP))
    return 2;
  if (!prompt) return lmwb_cli_usage_error("--prompt STR is required");
  GError *err = NULL;
  Job j;
  if (!job_begin(&j, NULL, prompt, &err) || !lmwb_cli_check_clamp_positions(j.T + MAX(max_tokens, 0), &err)) {
    job_end(&j);
    return lmwb_cli_fail(err);
  }
  LmwbGenerateOptions go;
  lmwb_generate_options_init(&go);
  go.max_tokens = max_tokens;
  go.temperature = (float)temperature;
  go.top_k = top_k;
  go.top_p = (float)top_p;
  go.seed = (guint64)seed;
  go.stop_at_eos = !no_stop;
  int n = 0;
  g_autofree int32_t *out = lmwb_generate(j.r, j.ids, j.T, &go, &n, NULL, lmwb_cli_reporter(), &err);
  if (!out) {
    job_end(&j);
    return lmwb_cli_fail(err);
  }
  g_autofree char *completion = lmwb_tokenizer_decode(j.m->tokenizer, out, n, TRUE, NULL);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "prompt");
  json_builder_add_string_value(b, prompt);
  json_builder_set_member_name(b, "completion");
  json_builder_add_string_value(b, completion);
  json_builder_set_member_name(b, "ids");
  lmwb_json_add_ids(b, out, n);
  json_builder_set_member_name(b, "tokens");
  lmwb_json_add_tokens(b, j.m, out, n);
  json_builder_end_object(b);
  job_end(&j);
  return lmwb_cli_emit_json(json_builder_get_root(b), lmwb_cli.out, &err) ? 0 : lmwb_cli_fail(err);
}

int lmwb_cmd_perplexity(int argc, char **argv) {
  char *file = NULL;
  int context = 0, stride = 0;
  gboolean per_line = FALSE;
  GOptionEntry e[] = {{"file", 'f', 0, G_OPTION_ARG_FILENAME, &file, "UTF-8 text file to score", "F"},
                      {"context", 0, 0, G_OPTION_ARG_INT, &context, "Window length in tokens (default: the model's context, at most 1024)", "N"},
                      {"stride", 0, 0, G_OPTION_ARG_INT, &stride, "Window step (default: context/2); every token is scored once", "N"},
                      {"per-line", 0, 0, G_OPTION_ARG_NONE, &per_line, "Also score each non-empty line alone and report the mean of per-line perplexities", NULL},
                      {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- perplexity of a model on a text file",
                      "Token-weighted perplexity exp(mean NLL) with a sliding window; with --per-line also the mean of\n"
                      "per-line perplexities (the collapse alarm used after model edits).",
                      MODEL_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS | LMWB_CLI_CLAMP))
    return 2;
  if (!file) return lmwb_cli_usage_error("--file F is required");
  if (context < 0 || stride < 0) return lmwb_cli_usage_error("--context and --stride must be positive");
  GError *err = NULL;
  g_autofree char *text = lmwb_cli_read_text(file, &err);
  if (!text) return lmwb_cli_fail(err);
  Job j;
  memset(&j, 0, sizeof j);
  j.m = lmwb_cli_load_model(&err);
  if (!j.m) return lmwb_cli_fail(err);
  j.r = lmwb_runner_new(j.m);
  LmwbPerplexityOptions po = {.context = context, .stride = stride, .per_line = per_line};
  LmwbPerplexityResult res;
  memset(&res, 0, sizeof res);
  gboolean ok = lmwb_cli_apply_clamps(j.r, &err) && lmwb_perplexity_text(j.r, text, &po, &res, lmwb_cli_reporter(), &err);
  if (!ok) {
    job_end(&j);
    return lmwb_cli_fail(err);
  }
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  KD("perplexity", res.perplexity);
  KD("nll", res.nll);
  KI("tokens", (gint64)res.n_tokens);
  if (per_line) {
    KD("mean_line_perplexity", res.mean_line_perplexity);
    KI("lines", (gint64)res.n_lines);
  }
  json_builder_end_object(b);
  g_free(res.line_perplexity);
  job_end(&j);
  return lmwb_cli_emit_json(json_builder_get_root(b), lmwb_cli.out, &err) ? 0 : lmwb_cli_fail(err);
}

int lmwb_cmd_bench(int argc, char **argv) {
  int batch = 4, seq = 128, runs = 3;
  gboolean backward = FALSE;
  GOptionEntry e[] = {{"batch", 'b', 0, G_OPTION_ARG_INT, &batch, "Sequences per batch (default 4)", "B"},
                      {"seq", 's', 0, G_OPTION_ARG_INT, &seq, "Tokens per sequence (default 128)", "T"},
                      {"backward", 0, 0, G_OPTION_ARG_NONE, &backward, "Time forward + backward of the mean LM loss with gradients for all parameters", NULL},
                      {"runs", 0, 0, G_OPTION_ARG_INT, &runs, "Timed runs after one warm-up; the best is reported (default 3, at least 3)", "N"},
                      {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- tokens per second of forward (and backward)",
                      "Times the forward pass with full logits (or forward + backward) on random token ids and prints\n"
                      "{\"tokens_per_s\",\"seconds\",\"gflops\",\"sgemm_peak_gflops\",\"peak_share\"}. The SGEMM peak is this\n"
                      "machine's OpenBLAS on a large square product with the same thread count.",
                      MODEL_HELP, e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if (batch < 1 || seq < 2 || runs < 1) return lmwb_cli_usage_error("--batch >= 1, --seq >= 2 and --runs >= 1 are required");
  GError *err = NULL;
  LmwbModel *m = lmwb_cli_load_model(&err);
  if (!m) return lmwb_cli_fail(err);
  LmwbBenchResult br;
  if (!lmwb_bench_model(m, batch, seq, backward, MAX(runs, 3), &br, &err)) {
    lmwb_model_unref(m);
    return lmwb_cli_fail(err);
  }
  double peak = lmwb_bench_sgemm_peak(m->be);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "mode");
  json_builder_add_string_value(b, backward ? "forward+backward" : "forward");
  KI("batch", batch);
  KI("seq", seq);
  KD("tokens_per_s", br.tokens_per_s);
  KD("seconds", br.seconds);
  KD("gflops", br.gflops);
  KD("sgemm_peak_gflops", peak);
  KD("peak_share", br.gflops / peak);
  json_builder_end_object(b);
  lmwb_model_unref(m);
  return lmwb_cli_emit_json(json_builder_get_root(b), lmwb_cli.out, &err) ? 0 : lmwb_cli_fail(err);
}
