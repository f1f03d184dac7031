/* Neuronpedia / circuit-tracer graph JSON (circuits/graph.h): every field of the export, an
 * expected file, byte-identical round trips, a circuit-tracer file, and hostile files. */
#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>
#include <glib/gstdio.h>
#include <unistd.h>

#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "graph_test_util.h"

static JsonObject *parse_export(const LmwbGraph *g, JsonParser *p) {
  GError *err = NULL;
  size_t len = 0;
  g_autofree char *text = lmwb_graph_to_json(g, &len, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(len, ==, strlen(text));
  g_assert_true(text[len - 1] == '\n');
  g_assert_true(json_parser_load_from_data(p, text, (gssize)len, &err));
  g_assert_no_error(err);
  return json_node_get_object(json_parser_get_root(p));
}

static void assert_null_member(JsonObject *o, const char *key) {
  g_assert_true(json_object_has_member(o, key));
  g_assert_true(JSON_NODE_HOLDS_NULL(json_object_get_member(o, key)));
}

static void assert_strings(JsonArray *a, const char *const *want, guint n) {
  g_assert_cmpuint(json_array_get_length(a), ==, n);
  for (guint i = 0; i < n; i++) g_assert_cmpstr(json_array_get_string_element(a, i), ==, want[i]);
}

static void test_attribution_fields(void) {
  g_autoptr(LmwbGraph) g = tu_attribution_graph();
  g_autoptr(JsonParser) p = json_parser_new();
  JsonObject *root = parse_export(g, p);
  g_assert_cmpuint(json_object_get_size(root), ==, 4);

  JsonObject *m = json_object_get_object_member(root, "metadata");
  g_assert_cmpstr(json_object_get_string_member(m, "slug"), ==, "cat-dog");
  g_assert_cmpstr(json_object_get_string_member(m, "scan"), ==, "tiny-world");
  const char *tcs[] = {"tc-layer0", "tc-layer1"}, *toks[] = {"The", " cat"};
  assert_strings(json_object_get_array_member(m, "transcoder_list"), tcs, 2);
  assert_strings(json_object_get_array_member(m, "prompt_tokens"), toks, 2);
  g_assert_cmpstr(json_object_get_string_member(m, "prompt"), ==, "The cat");
  g_assert_cmpfloat(json_object_get_double_member(m, "node_threshold"), ==, 0.8);
  g_assert_cmpint(json_object_get_int_member(m, "schema_version"), ==, 1);
  JsonObject *x = json_object_get_object_member(m, "lmwb");
  g_assert_cmpstr(json_object_get_string_member(x, "method"), ==, "attribution");
  g_assert_cmpint(json_object_get_int_member(x, "n_layers"), ==, 2);
  g_assert_cmpfloat(json_object_get_double_member(x, "edge_threshold"), ==, 0.98);
  JsonArray *ids = json_object_get_array_member(x, "prompt_ids");
  g_assert_cmpint(json_array_get_int_element(ids, 0), ==, 464);
  g_assert_cmpint(json_array_get_int_element(ids, 1), ==, 3797);
  g_assert_cmpstr(json_object_get_string_member(json_object_get_object_member(x, "extras"), "seed"), ==, "7");

  JsonObject *q = json_object_get_object_member(root, "qParams");
  const char *pinned[] = {"1_42_1"};
  assert_strings(json_object_get_array_member(q, "pinnedIds"), pinned, 1);
  g_assert_cmpuint(json_array_get_length(json_object_get_array_member(q, "supernodes")), ==, 0);
  g_assert_cmpstr(json_object_get_string_member(q, "linkType"), ==, "both");
  g_assert_cmpstr(json_object_get_string_member(q, "clickedId"), ==, "");
  g_assert_cmpstr(json_object_get_string_member(q, "sg_pos"), ==, "");

  /* every node: the schema's 13 fields, with the types the viewer expects */
  JsonArray *nodes = json_object_get_array_member(root, "nodes");
  g_assert_cmpuint(json_array_get_length(nodes), ==, 9);
  static const struct {
    const char *id, *layer, *type, *js;
    gint64 feature, ctx;
    double prob;
    gboolean target;
    const char *clerp;
    double influence, activation; /* NAN: null */
  } want[] = {
      {"E_464_0", "E", "embedding", "E_464-0", 0, 0, 0, FALSE, "", NAN, NAN},
      {"E_3797_1", "E", "embedding", "E_3797-1", 1, 1, 0, FALSE, "", NAN, NAN},
      {"0_17_0", "0", "cross layer transcoder", "0_17-0", 17, 0, 0, FALSE, "", 0.2, 1.5},
      {"0_5_1", "0", "cross layer transcoder", "0_5-0", 5, 1, 0, FALSE, "", 0.4, 2.25},
      {"1_42_1", "1", "cross layer transcoder", "1_42-0", 42, 1, 0, FALSE, "cat-ness", 0.1, 0.75},
      {"0_-1_1", "0", "mlp reconstruction error", "0_-1-1", -1, 1, 0, FALSE, "", 0.5, NAN},
      {"1_-1_1", "1", "mlp reconstruction error", "1_-1-1", -1, 1, 0, FALSE, "", 0.6, NAN},
      {"3_9246_1", "3", "logit", "L_9246-1", 9246, 1, 0.6, TRUE, "Output \" dog\" (p=0.600)", NAN, NAN},
      {"3_3290_1", "3", "logit", "L_3290-1", 3290, 1, 0.1, FALSE, "Output \" the\" (p=0.100)", NAN, NAN},
  };
  for (guint i = 0; i < G_N_ELEMENTS(want); i++) {
    JsonObject *n = json_array_get_object_element(nodes, i);
    g_assert_cmpuint(json_object_get_size(n), ==, 13);
    g_assert_cmpstr(json_object_get_string_member(n, "node_id"), ==, want[i].id);
    g_assert_cmpint(json_node_get_value_type(json_object_get_member(n, "layer")), ==, G_TYPE_STRING);
    g_assert_cmpstr(json_object_get_string_member(n, "layer"), ==, want[i].layer);
    g_assert_cmpstr(json_object_get_string_member(n, "feature_type"), ==, want[i].type);
    g_assert_cmpstr(json_object_get_string_member(n, "jsNodeId"), ==, want[i].js);
    g_assert_cmpint(json_object_get_int_member(n, "feature"), ==, want[i].feature);
    g_assert_cmpint(json_object_get_int_member(n, "ctx_idx"), ==, want[i].ctx);
    g_assert_cmpint(json_object_get_int_member(n, "run_idx"), ==, 0);
    g_assert_cmpint(json_object_get_int_member(n, "reverse_ctx_idx"), ==, 0);
    g_assert_cmpfloat(json_object_get_double_member(n, "token_prob"), ==, want[i].prob);
    g_assert_cmpint(json_object_get_boolean_member(n, "is_target_logit"), ==, want[i].target);
    g_assert_cmpstr(json_object_get_string_member(n, "clerp"), ==, want[i].clerp);
    if (isnan(want[i].influence))
      assert_null_member(n, "influence");
    else
      g_assert_cmpfloat(json_object_get_double_member(n, "influence"), ==, want[i].influence);
    if (isnan(want[i].activation))
      assert_null_member(n, "activation");
    else
      g_assert_cmpfloat(json_object_get_double_member(n, "activation"), ==, want[i].activation);
  }

  JsonArray *links = json_object_get_array_member(root, "links");
  g_assert_cmpuint(json_array_get_length(links), ==, 8);
  JsonObject *l2 = json_array_get_object_element(links, 2);
  g_assert_cmpuint(json_object_get_size(l2), ==, 3); /* in_circuit only when false */
  g_assert_cmpstr(json_object_get_string_member(l2, "source"), ==, "0_17_0");
  g_assert_cmpstr(json_object_get_string_member(l2, "target"), ==, "1_42_1");
  g_assert_cmpfloat(json_object_get_double_member(l2, "weight"), ==, -0.3);
  JsonObject *l5 = json_array_get_object_element(links, 5);
  g_assert_cmpstr(json_object_get_string_member(l5, "source"), ==, "1_42_1");
  g_assert_cmpstr(json_object_get_string_member(l5, "target"), ==, "3_9246_1");
  g_assert_cmpfloat(json_object_get_double_member(l5, "weight"), ==, 2.0);
}

static char *read_source_file(const char *name) {
  const char *root = g_getenv("LMWB_SOURCE_ROOT");
  g_assert_nonnull(root);
  g_autofree char *path = g_build_filename(root, "tests", "unit", "circuits", name, NULL);
  char *text = NULL;
  GError *err = NULL;
  g_assert_true(g_file_get_contents(path, &text, NULL, &err));
  g_assert_no_error(err);
  return text;
}

/* A small edge-pruning graph against the file written by hand. */
static void test_expected_file(void) {
  GError *err = NULL;
  g_autoptr(LmwbGraph) g = lmwb_graph_new(LMWB_GRAPH_EDGE_PRUNING, 1, &err);
  const char *tok[] = {"hi"};
  const int32_t id[] = {5};
  g_assert_true(lmwb_graph_set_prompt(g, "hi", tok, id, 1, &err));
  g_free(g->slug), g->slug = g_strdup("tiny");
  g_free(g->model_name), g->model_name = g_strdup("m");
  tu_node(g, LMWB_GRAPH_INPUT, 0, -1, 0, 0);
  tu_node(g, LMWB_GRAPH_READER, 0, -1, 0, LMWB_GRAPH_PART_Q);
  int h = tu_node(g, LMWB_GRAPH_HEAD, 0, -1, 0, 0);
  g_assert_true(lmwb_graph_node_set_label(g, h, "name mover", &err));
  tu_node(g, LMWB_GRAPH_OUTPUT, 0, -1, 0, 0);
  tu_edge(g, "input", "a0.h0<q>", 0.5, true);
  tu_edge(g, "a0.h0", "logits", -0.25, false);
  g_autofree char *text = lmwb_graph_to_json(g, NULL, &err);
  g_assert_no_error(err);
  g_autofree char *want = read_source_file("expected_edge_pruning.json");
  g_assert_cmpstr(text, ==, want);
}

static char *export_text(const LmwbGraph *g) {
  GError *err = NULL;
  char *text = lmwb_graph_to_json(g, NULL, &err);
  g_assert_no_error(err);
  return text;
}

/* export -> import -> export gives the same bytes, and the import holds what was exported. */
static void assert_round_trip(const LmwbGraph *g) {
  GError *err = NULL;
  g_autofree char *first = export_text(g);
  g_autoptr(LmwbGraph) back = lmwb_graph_from_json(first, strlen(first), "first.json", &err);
  g_assert_no_error(err);
  g_autofree char *second = export_text(back);
  g_assert_cmpstr(second, ==, first);
  g_assert_cmpint(back->method, ==, g->method);
  g_assert_cmpint(back->n_layers, ==, g->n_layers);
  g_assert_cmpint(back->n_nodes, ==, g->n_nodes);
  g_assert_cmpint(back->n_edges, ==, g->n_edges);
  for (int i = 0; i < g->n_nodes; i++) {
    const LmwbGraphNode *a = &g->nodes[i], *b = &back->nodes[i];
    g_assert_true(a->kind == b->kind && a->layer == b->layer && a->pos == b->pos && a->index == b->index &&
                  a->part == b->part && a->pinned == b->pinned && a->target_logit == b->target_logit);
    g_assert_true(a->has_activation == b->has_activation && a->has_influence == b->has_influence);
    g_assert_true(!a->has_activation || a->activation == b->activation);
    g_assert_true(!a->has_influence || a->influence == b->influence);
    g_assert_cmpfloat(a->token_prob, ==, b->token_prob);
    g_assert_cmpstr(a->label, ==, b->label);
  }
  for (int e = 0; e < g->n_edges; e++) {
    const LmwbGraphEdge *a = &g->edges[e], *b = &back->edges[e];
    g_assert_true(a->source == b->source && a->target == b->target && a->weight == b->weight &&
                  a->in_circuit == b->in_circuit);
  }
  for (int i = 0; i < g->n_prompt; i++) g_assert_cmpint(back->prompt_ids[i], ==, g->prompt_ids[i]);
}

static void test_round_trip(void) {
  g_autoptr(LmwbGraph) a = tu_attribution_graph();
  assert_round_trip(a);
  g_autoptr(LmwbGraph) e = tu_edge_pruning_graph();
  assert_round_trip(e);
  /* awkward strings, numbers that need all 17 digits, view state, no thresholds */
  GError *err = NULL;
  g_assert_true(lmwb_graph_node_set_label(a, 2, "quote \" backslash \\ line\nbreak \x01 tab\t ünï ✓ </script>", &err));
  g_assert_true(lmwb_graph_set_extra(a, "zeta", "last", &err));
  g_assert_true(lmwb_graph_set_extra(a, "alpha \"q\"", "ü\n", &err));
  a->nodes[3].activation = 1.0 / 3.0;
  a->nodes[3].influence = 1e-300;
  a->edges[0].weight = -123456789.123456789;
  a->edges[1].weight = 5e-324;
  a->edges[2].in_circuit = false;
  a->has_node_threshold = a->has_edge_threshold = false;
  char *super[] = {"dog group", "1_42_1", "0_17_0", NULL};
  g_ptr_array_add(a->supernodes, g_strdupv(super));
  g_free(a->clicked_id), a->clicked_id = g_strdup("1_42_1");
  g_free(a->sg_pos), a->sg_pos = g_strdup("0 1");
  a->nodes[0].pinned = true;
  assert_round_trip(a);
  g_autofree char *text = export_text(a);
  g_autoptr(LmwbGraph) back = lmwb_graph_from_json(text, strlen(text), "x.json", &err);
  g_assert_no_error(err);
  g_assert_cmpstr(back->nodes[2].label, ==, a->nodes[2].label);
  g_assert_cmpstr(g_hash_table_lookup(back->extras, "alpha \"q\""), ==, "ü\n");
  g_assert_cmpstr(((char **)g_ptr_array_index(back->supernodes, 0))[2], ==, "0_17_0");
  g_assert_cmpstr(back->clicked_id, ==, "1_42_1");
  g_assert_false(back->has_node_threshold);
  g_assert_true(back->edges[1].weight == 5e-324);
  /* an empty graph too */
  g_autoptr(LmwbGraph) empty = lmwb_graph_new(LMWB_GRAPH_ATTRIBUTION, 3, &err);
  assert_round_trip(empty);
}

/* A file as circuit-tracer writes it: no lmwb block, its `feature` pairing, the older error id,
 * integer weights, fields left out. */
static const char circuit_tracer_file[] =
    "{\"metadata\":{\"slug\":\"ct\",\"scan\":\"gemma-2-2b\",\"transcoder_list\":[],\"prompt_tokens\":[\"<bos>\",\"The\"],"
    "\"prompt\":\"The\",\"node_threshold\":0.8,\"schema_version\":1,\"info\":{\"creator\":\"x\"}},"
    "\"qParams\":{\"pinnedIds\":[\"1_7_1\"],\"supernodes\":[[\"say dog\",\"1_7_1\"]],\"linkType\":\"both\","
    "\"clickedId\":\"1_7_1\",\"sg_pos\":\"\"},"
    "\"nodes\":["
    "{\"node_id\":\"E_2_0\",\"feature\":0,\"layer\":\"E\",\"ctx_idx\":0,\"feature_type\":\"embedding\",\"token_prob\":0.0,"
    "\"is_target_logit\":false,\"run_idx\":0,\"reverse_ctx_idx\":0,\"jsNodeId\":\"E_2-0\",\"clerp\":\"\",\"influence\":0.9,"
    "\"activation\":null},"
    "{\"node_id\":\"E_651_1\",\"feature\":1,\"layer\":\"E\",\"ctx_idx\":1,\"feature_type\":\"embedding\"},"
    "{\"node_id\":\"1_7_1\",\"feature\":43,\"layer\":\"1\",\"ctx_idx\":1,\"feature_type\":\"cross layer transcoder\","
    "\"jsNodeId\":\"1_7-0\",\"clerp\":\"dogs\",\"influence\":0.3,\"activation\":3.5,\"future_field\":[1,2]},"
    "{\"node_id\":\"0_1_1\",\"feature\":-1,\"layer\":\"1\",\"ctx_idx\":1,\"feature_type\":\"mlp reconstruction error\","
    "\"jsNodeId\":\"1_1-0\",\"influence\":0.7},"
    "{\"node_id\":\"3_5_1\",\"feature\":5,\"layer\":\"3\",\"ctx_idx\":1,\"feature_type\":\"logit\",\"token_prob\":0.42,"
    "\"is_target_logit\":true,\"jsNodeId\":\"L_5-1\",\"clerp\":\"Output \\\" dog\\\" (p=0.420)\"}],"
    "\"links\":[{\"source\":\"E_651_1\",\"target\":\"1_7_1\",\"weight\":1.5},"
    "{\"source\":\"0_1_1\",\"target\":\"3_5_1\",\"weight\":-0.5},{\"source\":\"1_7_1\",\"target\":\"3_5_1\",\"weight\":2}]}";

static void test_circuit_tracer_import(void) {
  GError *err = NULL;
  g_autoptr(LmwbGraph) g = lmwb_graph_from_json(circuit_tracer_file, strlen(circuit_tracer_file), "ct.json", &err);
  g_assert_no_error(err);
  g_assert_cmpint(g->method, ==, LMWB_GRAPH_ATTRIBUTION);
  g_assert_cmpint(g->n_layers, ==, 2); /* the logits' layer 3 = n_layers + 1 */
  g_assert_cmpstr(g->model_name, ==, "gemma-2-2b");
  g_assert_cmpint(g->n_prompt, ==, 2);
  g_assert_cmpint(g->prompt_ids[0], ==, 2); /* from the token nodes */
  g_assert_cmpint(g->prompt_ids[1], ==, 651);
  g_assert_true(g->has_node_threshold && g->node_threshold == 0.8);
  g_assert_false(g->has_edge_threshold);
  int f = lmwb_graph_find(g, "1_7_1");
  g_assert_cmpint(f, ==, 2);
  g_assert_cmpint(g->nodes[f].index, ==, 7); /* from the id, not the pairing 43 */
  g_assert_true(g->nodes[f].pinned);
  g_assert_cmpfloat(g->nodes[f].activation, ==, 3.5);
  g_assert_cmpstr(g->nodes[f].label, ==, "dogs");
  int e = lmwb_graph_find(g, "1_-1_1"); /* "0_1_1" read as the error of layer 1 */
  g_assert_cmpint(e, ==, 3);
  g_assert_true(g->nodes[e].kind == LMWB_GRAPH_ERROR && g->nodes[e].layer == 1 && g->nodes[e].pos == 1);
  g_assert_false(g->nodes[e].has_activation);
  g_assert_true(g->nodes[4].target_logit && g->nodes[4].token_prob == 0.42 && g->nodes[4].index == 5);
  g_assert_cmpint(g->n_edges, ==, 3);
  g_assert_cmpint(g->edges[1].source, ==, e);
  g_assert_cmpfloat(g->edges[2].weight, ==, 2.0);
  g_assert_true(g->edges[2].in_circuit);
  g_assert_cmpstr(g->clicked_id, ==, "1_7_1");
  g_assert_cmpuint(g->supernodes->len, ==, 1);
  /* written back in this workbench's form, which then round-trips exactly */
  g_autofree char *text = export_text(g);
  g_assert_nonnull(strstr(text, "\"source\":\"1_-1_1\""));
  g_assert_null(strstr(text, "0_1_1"));
  assert_round_trip(g);
}

static void test_non_finite(void) {
  GError *err = NULL;
  g_autofree char *dir = g_dir_make_tmp("lmwb-graph-XXXXXX", &err);
  g_autofree char *path = g_build_filename(dir, "g.json", NULL);
  for (int c = 0; c < 4; c++) {
    g_autoptr(LmwbGraph) g = tu_attribution_graph();
    const char *needle = NULL;
    switch (c) {
      case 0: g->nodes[4].activation = NAN, needle = "1_42_1: activation"; break;
      case 1: g->nodes[2].influence = INFINITY, needle = "0_17_0: influence"; break;
      case 2: g->edges[3].weight = -INFINITY, needle = "link 0_5_1 -> 1_42_1: weight"; break;
      case 3: g->node_threshold = NAN, needle = "node_threshold"; break;
    }
    g_assert_null(lmwb_graph_to_json(g, NULL, &err));
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_FAILED);
    if (!strstr(err->message, needle)) g_error("\"%s\" not in \"%s\"", needle, err->message);
    g_clear_error(&err);
    g_assert_false(lmwb_graph_write_json(g, path, &err));
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_FAILED);
    g_clear_error(&err);
    g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
  }
  /* a NaN where the field is unset is not written, so not an error */
  g_autoptr(LmwbGraph) g = tu_attribution_graph();
  g->nodes[0].activation = NAN;
  g_autofree char *ok = lmwb_graph_to_json(g, NULL, &err);
  g_assert_no_error(err);
  /* a label a caller assigned directly that is not UTF-8 */
  g_free(g->nodes[1].label);
  g->nodes[1].label = g_strdup("\xc3\x28");
  g_assert_null(lmwb_graph_to_json(g, NULL, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  g_rmdir(dir);
}

#define TOK "{\"node_id\":\"E_9_0\",\"feature\":0,\"layer\":\"E\",\"ctx_idx\":0,\"feature_type\":\"embedding\"}"
#define FEAT_F(id, layer, ctx, extra)                                                                               \
  "{\"node_id\":\"" id "\",\"feature\":3,\"layer\":" layer ",\"ctx_idx\":" ctx                                     \
  ",\"feature_type\":\"cross layer transcoder\"" extra "}"
#define FEAT FEAT_F("0_3_1", "\"0\"", "1", "")
#define LINK "{\"source\":\"E_9_0\",\"target\":\"0_3_1\",\"weight\":0.5}"
#define DOC(meta, nodes, links)                                                                                     \
  "{\"metadata\":{\"slug\":\"s\",\"prompt\":\"p\",\"prompt_tokens\":[\"a\",\"b\"]" meta "},\"nodes\":[" nodes     \
  "],\"links\":[" links "]}"

static void test_hostile(void) {
  static const struct { const char *doc, *needle; } cases[] = {
      {"[]", "the top level must be an object"},
      {"{\"nodes\":[],\"links\":[]}", "metadata is missing"},
      {"{\"metadata\":{\"slug\":\"s\",\"prompt\":\"p\",\"prompt_tokens\":[]},\"links\":[]}", "nodes is missing"},
      {"{\"metadata\":{\"slug\":\"s\",\"prompt\":\"p\",\"prompt_tokens\":[]},\"nodes\":{},\"links\":[]}",
       "nodes must be an array"},
      {"{\"metadata\":{\"prompt\":\"p\",\"prompt_tokens\":[]},\"nodes\":[],\"links\":[]}", "metadata.slug is missing"},
      {"{\"metadata\":{\"slug\":1,\"prompt\":\"p\",\"prompt_tokens\":[]},\"nodes\":[],\"links\":[]}",
       "metadata.slug must be a string"},
      {"{\"metadata\":{\"slug\":\"s\",\"prompt\":\"p\",\"prompt_tokens\":[\"a\",2]},\"nodes\":[],\"links\":[]}",
       "metadata.prompt_tokens[1] must be a string"},
      {"{\"metadata\":{\"slug\":\"s\",\"prompt\":\"p\",\"prompt_tokens\":\"ab\"},\"nodes\":[],\"links\":[]}",
       "metadata.prompt_tokens must be an array"},
      {DOC("", TOK ",3", ""), "nodes[1] must be an object"},
      {DOC("", TOK ",{\"feature\":3,\"layer\":\"0\",\"ctx_idx\":1,\"feature_type\":\"embedding\"}", ""),
       "nodes[1].node_id is missing"},
      {DOC("", TOK "," FEAT_F("0_3_1", "\"0\"", "\"1\"", ""), ""), "nodes[1].ctx_idx must be an integer"},
      {DOC("", TOK "," FEAT_F("0_3_1", "\"0\"", "1.5", ""), ""), "nodes[1].ctx_idx must be an integer"},
      {DOC("", TOK "," FEAT_F("0_3_1", "\"0\"", "99999999999", ""), ""), "nodes[1].ctx_idx must be an integer from -1"},
      {DOC("", TOK "," FEAT_F("0_3_1", "\"1\"", "1", ""), ""), "nodes[1].layer \"1\" does not match node_id \"0_3_1\""},
      {DOC("", TOK "," FEAT_F("0_3_1", "0", "1", ""), ""), "nodes[1].layer must be a string"},
      {DOC("", TOK "," FEAT_F("0_3_1", "\"0\"", "2", ""), ""), "nodes[1].ctx_idx 2 does not match node_id \"0_3_1\""},
      {DOC("", TOK "," FEAT_F("0_3", "\"0\"", "1", ""), ""), "nodes[1].node_id: graph: \"0_3\" is not the id"},
      {DOC("", TOK ",{\"node_id\":\"0_3_1\",\"feature\":3,\"layer\":\"0\",\"ctx_idx\":1,\"feature_type\":\"lorsa\"}", ""),
       "nodes[1].feature_type \"lorsa\""},
      {DOC("", TOK "," FEAT "," FEAT, ""), "nodes[2].node_id \"0_3_1\" names an earlier node"},
      {DOC("",
           TOK ",{\"node_id\":\"0_-1_1\",\"feature\":-1,\"layer\":\"0\",\"ctx_idx\":1,\"feature_type\":\"mlp "
               "reconstruction error\"},{\"node_id\":\"0_0_1\",\"feature\":-1,\"layer\":\"0\",\"ctx_idx\":1,"
               "\"feature_type\":\"mlp reconstruction error\"}",
           ""),
       "nodes[2]: graph: node \"0_-1_1\" is already in the graph"},
      {DOC("", TOK ",{\"node_id\":\"a0.h0\",\"feature\":0,\"layer\":\"0\",\"ctx_idx\":-1,\"feature_type\":\"attention head\"}",
           ""),
       "nodes[1].node_id"},
      {DOC("", TOK ",{\"node_id\":\"2_5_1\",\"feature\":6,\"layer\":\"2\",\"ctx_idx\":1,\"feature_type\":\"logit\"}", ""),
       "nodes[1].feature 6 does not match node_id \"2_5_1\""},
      {DOC("", TOK "," FEAT_F("0_3_1", "\"0\"", "1", ",\"influence\":\"x\""), ""),
       "nodes[1].influence must be a number or null"},
      {DOC("", TOK "," FEAT_F("0_3_1", "\"0\"", "1", ",\"is_target_logit\":1"), ""),
       "nodes[1].is_target_logit must be true or false"},
      {DOC("", TOK "," FEAT_F("0_3_1", "\"0\"", "1", ",\"clerp\":5"), ""), "nodes[1].clerp must be a string"},
      {DOC("", TOK "," FEAT_F("0_3_1", "\"0\"", "1", ",\"jsNodeId\":[]"), ""), "nodes[1].jsNodeId must be a string"},
      {DOC("", TOK "," FEAT, "{\"source\":\"E_9_0\",\"target\":\"9_9_9\",\"weight\":1}"),
       "links[0].target \"9_9_9\" is not the node_id of any node"},
      {DOC("", TOK "," FEAT, "{\"target\":\"E_9_0\",\"weight\":1}"), "links[0].source is missing"},
      {DOC("", TOK "," FEAT, "{\"source\":\"E_9_0\",\"target\":\"0_3_1\"}"), "links[0].weight is missing"},
      {DOC("", TOK "," FEAT, "{\"source\":\"E_9_0\",\"target\":\"0_3_1\",\"weight\":\"1\"}"),
       "links[0].weight must be a number"},
      {DOC("", TOK "," FEAT, "{\"source\":\"E_9_0\",\"target\":\"0_3_1\",\"weight\":null}"),
       "links[0].weight must be a number"},
      {DOC("", TOK "," FEAT, LINK ",{\"source\":\"E_9_0\",\"target\":\"0_3_1\",\"weight\":1,\"in_circuit\":\"yes\"}"),
       "links[1].in_circuit must be true or false"},
      {DOC("", TOK "," FEAT, "7"), "links[0] must be an object"},
      {DOC(",\"schema_version\":2", "", ""), "metadata.schema_version is 2"},
      {DOC(",\"node_threshold\":\"0.8\"", "", ""), "metadata.node_threshold must be a number or null"},
      {DOC(",\"lmwb\":{\"n_layers\":0}", "", ""), "metadata.lmwb.n_layers must be an integer from 1"},
      {DOC(",\"lmwb\":{\"method\":\"acdc\"}", "", ""), "metadata.lmwb.method must be"},
      {DOC(",\"lmwb\":[]", "", ""), "metadata.lmwb must be an object"},
      {DOC(",\"lmwb\":{\"prompt_ids\":[1]}", "", ""), "metadata.lmwb.prompt_ids must have one id per prompt token"},
      {DOC(",\"lmwb\":{\"prompt_ids\":[\"x\",1]}", "", ""), "metadata.lmwb.prompt_ids[0] must be a token id"},
      {DOC(",\"lmwb\":{\"extras\":{\"k\":1}}", "", ""), "metadata.lmwb.extras.k must be a string"},
      {"{\"metadata\":{\"slug\":\"s\",\"prompt\":\"p\",\"prompt_tokens\":[]},\"qParams\":3,\"nodes\":[],\"links\":[]}",
       "qParams must be an object"},
      {"{\"metadata\":{\"slug\":\"s\",\"prompt\":\"p\",\"prompt_tokens\":[]},\"qParams\":{\"pinnedIds\":[\"nope\"]},"
       "\"nodes\":[],\"links\":[]}",
       "qParams.pinnedIds[0] must be the node_id of a node"},
      {"{\"metadata\":{\"slug\":\"s\",\"prompt\":\"p\",\"prompt_tokens\":[]},\"qParams\":{\"supernodes\":[[1]]},"
       "\"nodes\":[],\"links\":[]}",
       "qParams.supernodes[0] must be an array of strings"},
      /* what the JSON pre-check stops before json-glib sees it */
      {DOC("", TOK "," FEAT, "{\"source\":\"E_9_0\",\"target\":\"0_3_1\",\"weight\":NaN}"), "unexpected character"},
      {DOC("", TOK "," FEAT, "{\"source\":\"E_9_0\",\"target\":\"0_3_1\",\"weight\":1e999}"), "too large for a double"},
      {DOC("", TOK "," FEAT_F("0_3_1", "\"0\"", "99999999999999999999", ""), ""), "does not fit in 64 bits"},
      {"{\"metadata\":{\"slug\":\"\xff\"}}", "not UTF-8"},
      {"{\"metadata\":", "not valid JSON"},
      {"", "empty"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    GError *err = NULL;
    LmwbGraph *g = lmwb_graph_from_json(cases[i].doc, strlen(cases[i].doc), "hostile.json", &err);
    if (g) g_error("case %zu was read: %s", i, cases[i].doc);
    g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
    if (!g_str_has_prefix(err->message, "hostile.json") || !strstr(err->message, cases[i].needle))
      g_error("case %zu: \"%s\" not in \"%s\"", i, cases[i].needle, err->message);
    g_clear_error(&err);
  }
  /* the well-formed document the cases break is read */
  const char *good = DOC("", TOK "," FEAT, LINK);
  GError *err = NULL;
  g_autoptr(LmwbGraph) g = lmwb_graph_from_json(good, strlen(good), "good.json", &err);
  g_assert_no_error(err);
  g_assert_cmpint(g->n_nodes, ==, 2);
  g_assert_cmpint(g->n_layers, ==, 1);
  /* nesting far beyond what the parser's stack survives */
  GString *deep = g_string_new(NULL);
  for (int i = 0; i < 100000; i++) g_string_append_c(deep, '[');
  g_assert_null(lmwb_graph_from_json(deep->str, deep->len, "deep.json", &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_assert_nonnull(strstr(err->message, "nested deeper than 256"));
  g_clear_error(&err);
  g_string_free(deep, TRUE);
}

static void test_files(void) {
  GError *err = NULL;
  g_autofree char *dir = g_dir_make_tmp("lmwb-graph-XXXXXX", &err);
  g_autofree char *path = g_build_filename(dir, "cat-dog.json", NULL);
  g_autoptr(LmwbGraph) g = tu_attribution_graph();
  g_assert_true(lmwb_graph_write_json(g, path, &err));
  g_assert_no_error(err);
  g_autoptr(LmwbGraph) back = lmwb_graph_read_json(path, &err);
  g_assert_no_error(err);
  g_assert_cmpint(back->n_edges, ==, 8);
  /* not files to read */
  g_assert_null(lmwb_graph_read_json(dir, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  g_assert_null(lmwb_graph_read_json("/dev/zero", &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  g_autofree char *missing = g_build_filename(dir, "missing.json", NULL);
  g_assert_null(lmwb_graph_read_json(missing, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_assert_nonnull(strstr(err->message, "missing.json"));
  g_clear_error(&err);
  unlink(path);
  g_rmdir(dir);
}

/* With the input guard on (as in lmwb-batch), a graph file just read is never written over. */
static void test_guard(void) {
  if (!g_test_subprocess()) {
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_passed();
    return;
  }
  GError *err = NULL;
  g_autofree char *dir = g_dir_make_tmp("lmwb-graph-XXXXXX", &err);
  g_autofree char *path = g_build_filename(dir, "in.json", NULL);
  g_autoptr(LmwbGraph) g = tu_edge_pruning_graph();
  g_assert_true(lmwb_graph_write_json(g, path, &err));
  lmwb_input_guard_enable();
  g_autoptr(LmwbGraph) in = lmwb_graph_read_json(path, &err);
  g_assert_no_error(err);
  g_assert_false(lmwb_graph_write_json(in, path, &err));
  g_assert_error(err, LMWB_ERROR, LMWB_ERROR_INPUT);
  g_clear_error(&err);
  unlink(path);
  g_rmdir(dir);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/graph-json/attribution-fields", test_attribution_fields);
  g_test_add_func("/graph-json/expected-file", test_expected_file);
  g_test_add_func("/graph-json/round-trip", test_round_trip);
  g_test_add_func("/graph-json/circuit-tracer-import", test_circuit_tracer_import);
  g_test_add_func("/graph-json/non-finite", test_non_finite);
  g_test_add_func("/graph-json/hostile", test_hostile);
  g_test_add_func("/graph-json/files", test_files);
  g_test_add_func("/graph-json/guard", test_guard);
  return g_test_run();
}
