/* lmwb-batch circuit eap / prune / eval: edge circuits of a task (circuits/edge_circuit.h). */
#include "circuits/edge_circuit.h"
#include "app/core/atomic_file.h"
#include "app/core/inputs.h"
#include "ui/batch/cli.h"
#include "ui/batch/commands.h"
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <unistd.h>

#define TASK_HELP                                                                                              \
  "Tasks (--task): ioi, gt (greater-than), gp (gendered pronouns), generated from the model folder's\n"       \
  "world.json when it has one (the built-in model) or GPT-2 style templates; or a JSONL file, one\n"          \
  "{\"clean\": \"...\", \"corrupted\": \"...\", \"answer\": \" X\", \"wrong\": \" Y\"} per line (clean and\n" \
  "corrupted of the same token length, answer and wrong one token each). Metrics are read at the\n"           \
  "last token; edges left out of a circuit read the corrupted run's value (interchange ablation).\n"          \
  "Edge names follow Edge-Pruning: writers input, a{L}.h{H}, m{L}; readers a{L}.h{H}<q|k|v>, m{L}, logits."

typedef struct {
  char *task, *dot, *svg, *edges, *graph, *metrics;
  int examples, batch;
  gint64 seed;
} Common;

static Common co;

#define COMMON_ENTRIES                                                                                                   \
  {"task", 0, 0, G_OPTION_ARG_FILENAME, &co.task, "ioi, gt, gp or a JSONL file (required)", "TASK"},                  \
  {"examples", 'n', 0, G_OPTION_ARG_INT, &co.examples, "Examples (default: 64 generated, or a file's every line)", "N"}, \
  {"seed", 0, 0, G_OPTION_ARG_INT64, &co.seed, "Seed of generated tasks (default 0)", "S"},                            \
  {"batch", 'b', 0, G_OPTION_ARG_INT, &co.batch, "Examples per forward pass (default 32)", "B"}

#define EXPORT_ENTRIES                                                                                                  \
  {"edges", 0, 0, G_OPTION_ARG_FILENAME, &co.edges, "Also write Edge-Pruning's edges.json of the circuit", "FILE"},   \
  {"dot", 0, 0, G_OPTION_ARG_FILENAME, &co.dot, "Also write the circuit as Graphviz DOT", "FILE"},                    \
  {"svg", 0, 0, G_OPTION_ARG_FILENAME, &co.svg, "Also draw the circuit as SVG (Graphviz layout)", "FILE"},          \
  {"graph", 0, 0, G_OPTION_ARG_FILENAME, &co.graph, "Also write the circuit as graph JSON (the desktop's graph files)", "FILE"}

/* The model and the task; NULL with the error. */
static LmwbEdgeTask *open_task(LmwbModel **m, GError **error) {
  if (!co.task) {
    lmwb_input_error(error, "--task is required (ioi, gt, gp or a JSONL file)");
    return NULL;
  }
  if (co.examples < 0 || co.batch < 0 || co.seed < 0) {
    lmwb_input_error(error, "--examples, --batch and --seed must not be negative");
    return NULL;
  }
  *m = lmwb_cli_load_model(error);
  if (!*m) return NULL;
  LmwbEdgeTask *t = lmwb_edge_task_open(co.task, *m, co.examples, (guint64)co.seed, error);
  if (t && lmwb_edge_task_max_len(t) > (*m)->cfg.n_ctx) {
    lmwb_input_error(error, "--task %s: an example of %d tokens exceeds the model's context of %d", co.task,
                     lmwb_edge_task_max_len(t), (*m)->cfg.n_ctx);
    g_clear_pointer(&t, lmwb_edge_task_free);
  }
  if (!t) g_clear_pointer(m, lmwb_model_unref);
  return t;
}

/* Every output may be written (not an input of this process) before any work. */
static gboolean check_outputs(GError **error) {
  const char *outs[] = {lmwb_cli.out, co.edges, co.dot, co.svg, co.graph, co.metrics};
  for (size_t i = 0; i < G_N_ELEMENTS(outs); i++)
    if (outs[i] && !lmwb_input_guard_check_output(outs[i], error)) return FALSE;
  return TRUE;
}

/* The extra exports of a circuit. */
static gboolean write_exports(const LmwbEdgeGraph *g, const float *score, const uint8_t *keep, GError **error) {
  if (co.edges && !lmwb_edge_list_write(g, keep, co.edges, error)) return FALSE;
  if (!co.dot && !co.svg && !co.graph) return TRUE;
  g_autoptr(LmwbGraph) gr = lmwb_edge_graph_export(g, score, keep, NULL, error);
  if (!gr) return FALSE;
  g_autoptr(LmwbGraph) sub = NULL;
  {
    /* drop the nodes with no edge left: a drawing of the circuit, not of the whole model */
    g_autofree uint8_t *used = g_new0(uint8_t, gr->n_nodes);
    for (int e = 0; e < gr->n_edges; e++) used[gr->edges[e].source] = used[gr->edges[e].target] = 1;
    sub = lmwb_graph_subgraph(gr, used, NULL, NULL);
  }
  if (co.graph && !lmwb_graph_write_json(sub, co.graph, error)) return FALSE;
  if (co.dot && !lmwb_graph_write_dot(sub, NULL, co.dot, error)) return FALSE;
  return !co.svg || lmwb_graph_write_image(sub, NULL, LMWB_GRAPH_SVG, co.svg, error);
}

/* The scores JSON to --out, or stdout. */
static gboolean emit_scores(const LmwbEdgeGraph *g, const float *score, const uint8_t *keep, JsonNode *fields,
                            GError **error) {
  JsonObject *f = json_node_get_object(fields);
  if (lmwb_cli.out) return lmwb_edge_scores_write(g, score, keep, f, lmwb_cli.out, error);
  size_t len = 0;
  g_autofree char *text = lmwb_edge_scores_json(g, score, keep, f, &len, error);
  if (!text) return FALSE;
  if (fwrite(text, 1, len, stdout) == len && fflush(stdout) == 0) return TRUE;
  g_set_error(error, LMWB_ERROR, LMWB_ERROR_FAILED, "could not write the scores to stdout");
  return FALSE;
}

static void add_task_fields(JsonBuilder *b, const LmwbEdgeTask *t) {
  lmwb_json_member_string(b, "task", co.task);
  lmwb_json_member_int(b, "examples", t->n);
}

static int finish(int rc, LmwbModel *m, LmwbEdgeTask *t) {
  lmwb_edge_task_free(t);
  if (m) lmwb_model_unref(m);
  return rc;
}

/* ---- eap ---------------------------------------------------------------------------------------- */

int lmwb_cmd_circuit_eap(int argc, char **argv) {
  int ig = 0;
  gint64 top = -1;
  GOptionEntry e[] = {COMMON_ENTRIES,
                      {"ig-steps", 0, 0, G_OPTION_ARG_INT, &ig, "EAP-IG with M interpolation steps (default 0: EAP)", "M"},
                      {"top", 0, 0, G_OPTION_ARG_INT64, &top, "Mark the N edges of largest |score| (dangling ones removed) as the circuit", "N"},
                      EXPORT_ENTRIES,
                      {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- edge attribution patching scores of a task",
                      "score(w -> v) = mean over examples of the sum over positions of (ã_w - a_w) . dM/dx_v on the\n"
                      "clean run: about how much M (the logit difference; gt: the probability difference) moves when\n"
                      "the edge reads the corrupted run. --ig-steps M averages the gradient over M inputs on the line\n"
                      "from the corrupted to the clean input embeddings (EAP-IG). Writes the scores JSON\n"
                      "{\"method\", \"task\", \"examples\", \"ig_steps\", \"n_edges\", \"in_circuit\", \"edges\": [{\"source\",\n"
                      "\"target\", \"score\", \"in_circuit\"}, ...]} to --out (default stdout).\n\n" TASK_HELP
                      "\n\nExample: lmwb-batch circuit eap --task ioi --ig-steps 5 --top 300 --out scores.json",
                      "Edge circuits", e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if (ig < 0 || ig > 1000) return lmwb_cli_usage_error("--ig-steps %d is not in 0..1000", ig);
  GError *err = NULL;
  LmwbModel *m = NULL;
  if (!check_outputs(&err)) return lmwb_cli_fail(err);
  LmwbEdgeTask *t = open_task(&m, &err);
  if (!t) return lmwb_cli_fail(err);
  LmwbEapOptions o = {.ig_steps = ig, .batch = co.batch};
  g_autofree float *score = lmwb_edge_eap(m, t, &o, lmwb_cli_reporter(), &err);
  if (!score) return finish(lmwb_cli_fail(err), m, t);
  if (isatty(2)) fputc('\n', stderr);
  LmwbEdgeGraph *g = lmwb_edge_graph_new(&m->cfg, &err);
  g_autofree uint8_t *keep = g_new(uint8_t, g->n_edges);
  memset(keep, 1, (size_t)g->n_edges);
  if (top >= 0) lmwb_edge_select_top(g, score, top, keep);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  lmwb_json_member_string(b, "method", ig ? "eap-ig" : "eap");
  add_task_fields(b, t);
  lmwb_json_member_int(b, "ig_steps", ig);
  if (top >= 0) lmwb_json_member_int(b, "top", top);
  json_builder_end_object(b);
  JsonNode *fields = json_builder_get_root(b);
  gboolean ok = emit_scores(g, score, keep, fields, &err) &&
                write_exports(g, score, keep, &err);
  json_node_unref(fields);
  lmwb_edge_graph_free(g);
  return finish(ok ? 0 : lmwb_cli_fail(err), m, t);
}

/* ---- eval --------------------------------------------------------------------------------------- */

static void add_metrics(JsonBuilder *b, const LmwbEdgeTask *t, const LmwbEdgeMetrics *x) {
  lmwb_json_member_double(b, "kl", x->kl);
  lmwb_json_member_double(b, "accuracy", x->accuracy);
  lmwb_json_member_double(b, "exact_match", x->exact_match);
  if (t->kind == LMWB_EDGE_TASK_GT) lmwb_json_member_double(b, "prob_diff", x->prob_diff);
  else lmwb_json_member_double(b, "logit_diff", x->logit_diff);
}

/* a / b, or 0 when b is 0 (a share of nothing). */
static double share(double a, double b) { return b != 0 ? a / b : 0; }

int lmwb_cmd_circuit_eval(int argc, char **argv) {
  g_autofree char *circuit = NULL;
  GOptionEntry e[] = {COMMON_ENTRIES,
                      {"circuit", 'c', 0, G_OPTION_ARG_FILENAME, &circuit, "edges.json or a scores JSON (required)", "FILE"},
                      {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- faithfulness of a circuit on a task",
                      "Runs every example with the circuit's edges reading the clean run and every other edge the\n"
                      "corrupted run, and prints {\"kl\", \"logit_diff\" (gt: \"prob_diff\"), \"accuracy\", \"exact_match\",\n"
                      "\"edges\", \"total_edges\", \"logit_diff_share\" (gt: \"prob_diff_share\"), \"accuracy_share\",\n"
                      "\"full\": {...}, \"corrupted\": {...}}: KL(full || circuit) over the vocabulary at the last token,\n"
                      "the answer's logit minus the wrong one's, the top token is the answer, the top token is the full\n"
                      "model's; shares of the full model's figures; the same for the full model and with no edge.\n"
                      "The circuit file: Edge-Pruning's edges.json ([[source, target], ...]) or the scores JSON of\n"
                      "`circuit eap` / `circuit prune` (its edges with in_circuit true).\n\n" TASK_HELP
                      "\n\nExample: lmwb-batch circuit eval --task ioi --circuit circuit.json",
                      "Edge circuits", e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if (!circuit) return lmwb_cli_usage_error("--circuit FILE is required");
  GError *err = NULL;
  LmwbModel *m = NULL;
  if (!check_outputs(&err)) return lmwb_cli_fail(err);
  LmwbEdgeTask *t = open_task(&m, &err);
  if (!t) return lmwb_cli_fail(err);
  LmwbEdgeGraph *g = lmwb_edge_graph_new(&m->cfg, &err);
  g_autofree uint8_t *keep = g_new0(uint8_t, g->n_edges);
  LmwbEdgeEval ev;
  gboolean ok = lmwb_edge_circuit_read(g, circuit, keep, &err) &&
                lmwb_edge_eval(m, t, keep, co.batch, &ev, lmwb_cli_reporter(), &err);
  lmwb_edge_graph_free(g);
  if (!ok) return finish(lmwb_cli_fail(err), m, t);
  if (isatty(2)) fputc('\n', stderr);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  add_metrics(b, t, &ev.circuit);
  lmwb_json_member_int(b, "edges", ev.edges);
  lmwb_json_member_int(b, "total_edges", ev.total_edges);
  add_task_fields(b, t);
  lmwb_json_member_string(b, "circuit", circuit);
  if (t->kind == LMWB_EDGE_TASK_GT) lmwb_json_member_double(b, "prob_diff_share", share(ev.circuit.prob_diff, ev.full.prob_diff));
  else lmwb_json_member_double(b, "logit_diff_share", share(ev.circuit.logit_diff, ev.full.logit_diff));
  lmwb_json_member_double(b, "accuracy_share", share(ev.circuit.accuracy, ev.full.accuracy));
  json_builder_set_member_name(b, "full");
  json_builder_begin_object(b);
  add_metrics(b, t, &ev.full);
  json_builder_end_object(b);
  json_builder_set_member_name(b, "corrupted");
  json_builder_begin_object(b);
  add_metrics(b, t, &ev.corrupted);
  json_builder_end_object(b);
  json_builder_end_object(b);
  return finish(lmwb_cli_emit_json(json_builder_get_root(b), lmwb_cli.out, &err) ? 0 : lmwb_cli_fail(err), m, t);
}

/* ---- prune -------------------------------------------------------------------------------------- */

/* The pruning curves as CSV rows: step,loss,kl,sparsity,target,lambda1 (the job reports them in this
 * order, lambda1 last). */
static GString *curves;

static void collect_metric(LmwbReporter *r, const char *series, double x, double y) {
  if (!strcmp(series, "loss")) g_string_append_printf(curves, "%.0f", x);
  g_string_append_printf(curves, ",%.9g", y);
  if (!strcmp(series, "lambda1")) g_string_append_c(curves, '\n');
}

int lmwb_cmd_circuit_prune(int argc, char **argv) {
  double sparsity = -1, lr = 0;
  int steps = 0, warmup = 0, every = 0;
  g_autofree char *checkpoint = NULL;
  gboolean paper = FALSE;
  GOptionEntry e[] = {COMMON_ENTRIES,
                      {"paper", 0, 0, G_OPTION_ARG_NONE, &paper, "The paper's GPT-2 schedule: 3000 steps, 2500 of warm-up, lr 0.8", NULL},
                      {"target-sparsity", 's', 0, G_OPTION_ARG_DOUBLE, &sparsity, "Share of edges to remove, in [0, 1) (required)", "S"},
                      {"steps", 0, 0, G_OPTION_ARG_INT, &steps, "Optimisation steps (default 600; the paper: 3000)", "N"},
                      {"warmup", 0, 0, G_OPTION_ARG_INT, &warmup, "Steps of the sparsity ramp (default 5/6 of the steps)", "N"},
                      {"lr", 0, 0, G_OPTION_ARG_DOUBLE, &lr, "Learning rate of masks and lambdas (default 0.1)", "X"},
                      {"checkpoint", 0, 0, G_OPTION_ARG_FILENAME, &checkpoint, "Save the state here as it runs and on Ctrl-C; resume from it", "FILE"},
                      {"checkpoint-every", 0, 0, G_OPTION_ARG_INT, &every, "Steps between checkpoints (default 50)", "N"},
                      {"metrics", 0, 0, G_OPTION_ARG_FILENAME, &co.metrics, "Write the curves as CSV: step,loss,kl,sparsity,target,lambda1", "FILE"},
                      EXPORT_ENTRIES,
                      {NULL}};
  if (!lmwb_cli_parse(&argc, &argv, "- learn a circuit by edge pruning",
                      "Learns hard-concrete masks on every edge (the model frozen) minimising KL(full || circuit) at\n"
                      "the last token under a sparsity constraint ramped to --target-sparsity, then binarises them and\n"
                      "removes dangling edges. Writes the scores JSON (score: the mask's keep probability) to --out\n"
                      "(default stdout) with \"steps\", \"final_kl\", \"final_sparsity\", \"edges\"; progress and the\n"
                      "loss go to stderr. Ctrl-C saves --checkpoint; the same command resumes.\n\n" TASK_HELP
                      "\n\nExample: lmwb-batch circuit prune --task ioi --target-sparsity 0.95 --out circuit.json",
                      "Edge circuits", e, LMWB_CLI_MODEL | LMWB_CLI_OUT | LMWB_CLI_THREADS))
    return 2;
  if (!(sparsity >= 0 && sparsity < 1)) return lmwb_cli_usage_error("--target-sparsity S is required, in [0, 1)");
  if (steps < 0 || warmup < 0 || every < 0 || !(lr >= 0 && isfinite(lr)))
    return lmwb_cli_usage_error("--steps, --warmup, --checkpoint-every and --lr must not be negative");
  if (paper) {
    steps = steps ? steps : LMWB_EDGE_PAPER_STEPS;
    warmup = warmup ? warmup : LMWB_EDGE_PAPER_WARMUP;
    lr = lr > 0 ? lr : LMWB_EDGE_PAPER_LR;
  }
  if (steps && warmup > steps) return lmwb_cli_usage_error("--warmup %d is more than --steps %d", warmup, steps);
  GError *err = NULL;
  LmwbModel *m = NULL;
  if (!check_outputs(&err)) return lmwb_cli_fail(err);
  LmwbEdgeTask *t = open_task(&m, &err);
  if (!t) return lmwb_cli_fail(err);
  LmwbEdgePruneOptions o = {.target_sparsity = sparsity, .steps = steps, .warmup = warmup, .lr = lr,
                            .batch = co.batch, .seed = (guint64)co.seed, .checkpoint = checkpoint,
                            .checkpoint_every = every};
  LmwbReporter *rep = lmwb_cli_reporter();
  curves = g_string_new("step,loss,kl,sparsity,target,lambda1\n");
  if (co.metrics) rep->metric = collect_metric;
  LmwbEdgePruneResult *res = lmwb_edge_prune(m, t, &o, rep, &err);
  GError *merr = NULL; /* the curves so far, also after a cancel */
  if (co.metrics && !lmwb_file_write_atomic(co.metrics, curves->str, curves->len, &merr) && res) {
    lmwb_edge_prune_result_free(res);
    res = NULL;
    err = merr;
  } else {
    g_clear_error(&merr);
  }
  g_string_free(curves, TRUE);
  if (!res) return finish(lmwb_cli_fail(err), m, t);
  if (isatty(2)) fputc('\n', stderr);
  LmwbEdgeGraph *g = lmwb_edge_graph_new(&m->cfg, &err);
  g_autofree float *soft = g_new(float, g->n_edges);
  for (int64_t i = 0; i < g->n_edges; i++) soft[i] = (float)(1.0 / (1.0 + exp(-res->log_alpha[i])));
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  lmwb_json_member_string(b, "method", "edge-pruning");
  add_task_fields(b, t);
  lmwb_json_member_double(b, "target_sparsity", sparsity);
  lmwb_json_member_int(b, "steps", res->steps_done);
  lmwb_json_member_double(b, "final_kl", res->final_kl);
  lmwb_json_member_double(b, "final_sparsity", res->final_sparsity);
  lmwb_json_member_int(b, "edges", res->edges);
  json_builder_end_object(b);
  JsonNode *fields = json_builder_get_root(b);
  gboolean ok = emit_scores(g, soft, res->keep, fields, &err) &&
                write_exports(g, soft, res->keep, &err);
  json_node_unref(fields);
  lmwb_edge_graph_free(g);
  lmwb_edge_prune_result_free(res);
  if (ok && checkpoint) g_unlink(checkpoint); /* finished: nothing to resume */
  return finish(ok ? 0 : lmwb_cli_fail(err), m, t);
}
