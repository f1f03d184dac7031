/* TokFSM: the machine, its walks, fsm.json and the 11-token tokenizer (tokfsm.h). */
#include "analysis/tokfsm.h"
#include "app/core/errors.h"
#include "app/core/rng.h"
#include "app/formats/json_input.h"
#include <stdlib.h>
#include <string.h>

LmwbTokfsm *lmwb_tokfsm_new(int states, int edges, int length, guint64 seed, GError **error) {
  if (states < 1 || states > LMWB_TOKFSM_MAX_STATES) {
    lmwb_input_error(error, "states: %d is outside 1..%d (each state is written as a 2-digit string)", states,
                     LMWB_TOKFSM_MAX_STATES);
    return NULL;
  }
  if (edges < 1 || edges > states) {
    lmwb_input_error(error, "edges: %d is outside 1..%d (distinct successors among the states)", edges, states);
    return NULL;
  }
  if (length < 1 || length > LMWB_TOKFSM_MAX_LENGTH) {
    lmwb_input_error(error, "length: %d is outside 1..%d (states per sequence)", length, LMWB_TOKFSM_MAX_LENGTH);
    return NULL;
  }
  LmwbTokfsm *f = g_new0(LmwbTokfsm, 1);
  f->states = states;
  f->edges = edges;
  f->length = length;
  f->seed = seed;
  f->next = g_new(int32_t, (size_t)states * edges);
  guint64 rng = seed * 0x9E3779B97F4A7C15ull + 0x7F5Au;
  int32_t perm[LMWB_TOKFSM_MAX_STATES];
  for (int s = 0; s < states; s++) {
    for (int j = 0; j < states; j++) perm[j] = j;
    for (int j = 0; j < edges; j++) { /* partial Fisher-Yates: `edges` distinct successors */
      int r = j + (int)(lmwb_splitmix64(&rng) % (guint64)(states - j));
      int32_t t = perm[j];
      perm[j] = perm[r];
      perm[r] = t;
      f->next[(size_t)s * edges + j] = perm[j];
    }
  }
  return f;
}

void lmwb_tokfsm_free(LmwbTokfsm *f) {
  if (!f) return;
  g_free(f->next);
  g_free(f);
}

gboolean lmwb_tokfsm_is_edge(const LmwbTokfsm *f, int from, int to) {
  if (from < 0 || from >= f->states) return FALSE;
  for (int j = 0; j < f->edges; j++)
    if (f->next[(size_t)from * f->edges + j] == to) return TRUE;
  return FALSE;
}

void lmwb_tokfsm_sequence(const LmwbTokfsm *f, LmwbTokfsmSplit split, int64_t i, int32_t *out) {
  guint64 rng = f->seed * 0xD1B54A32D192ED03ull ^ ((guint64)split << 56) ^ ((guint64)i * 0x94D049BB133111EBull);
  lmwb_splitmix64(&rng);
  int s = (int)(lmwb_splitmix64(&rng) % (guint64)f->states);
  out[0] = LMWB_TOKFSM_EOT;
  for (int t = 0; t < f->length; t++) {
    if (t > 0) s = f->next[(size_t)s * f->edges + (int)(lmwb_splitmix64(&rng) % (guint64)f->edges)];
    out[1 + 2 * t] = s / 10;
    out[2 + 2 * t] = s % 10;
  }
}

typedef struct {
  int64_t slot;
  int32_t walk;
} Placed;

static int placed_cmp(const void *a, const void *b) {
  const Placed *x = a, *y = b;
  if (x->slot != y->slot) return x->slot < y->slot ? -1 : 1;
  return (x->walk > y->walk) - (x->walk < y->walk);
}

void lmwb_tokfsm_memorised_schedule(const LmwbTokfsm *f, int64_t n_train, int n_memorised, int repeats, int64_t *slot,
                                    int32_t *walk) {
  size_t n = (size_t)n_memorised * (size_t)repeats;
  Placed *p = g_new(Placed, n);
  guint64 rng = f->seed * 0xA0761D6478BD642Full + 0xE7037ED1A0B428DBull;
  for (size_t k = 0; k < n; k++) {
    p[k].walk = (int32_t)(k % (size_t)n_memorised);
    p[k].slot = (int64_t)(lmwb_splitmix64(&rng) % (guint64)(n_train + 1)); /* copies spread uniformly */
  }
  qsort(p, n, sizeof *p, placed_cmp);
  for (size_t k = 0; k < n; k++) {
    slot[k] = p[k].slot;
    walk[k] = p[k].walk;
  }
  g_free(p);
}

char *lmwb_tokfsm_to_json(const LmwbTokfsm *f, size_t *len) {
  GString *s = g_string_new(NULL);
  g_string_append_printf(s, "{\n  \"states\": %d,\n  \"edges\": %d,\n  \"seed\": %" G_GUINT64_FORMAT ",\n  \"length\": %d,\n"
                         "  \"next\": [\n", f->states, f->edges, f->seed, f->length);
  for (int st = 0; st < f->states; st++) {
    g_string_append(s, "    [");
    for (int j = 0; j < f->edges; j++) g_string_append_printf(s, "%s%d", j ? ", " : "", f->next[(size_t)st * f->edges + j]);
    g_string_append_printf(s, "]%s\n", st + 1 < f->states ? "," : "");
  }
  g_string_append(s, "  ]\n}\n");
  if (len) *len = s->len;
  return g_string_free(s, FALSE);
}

static gboolean int_field(JsonObject *o, const char *name, gint64 lo, gint64 hi, gint64 *v, const char *path,
                          GError **error) {
  JsonNode *n = json_object_get_member(o, name);
  if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64) {
    lmwb_input_error(error, "%s: \"%s\" is missing or not an integer", path, name);
    return FALSE;
  }
  *v = json_node_get_int(n);
  if (*v < lo || *v > hi) {
    lmwb_input_error(error, "%s: \"%s\" = %" G_GINT64_FORMAT " is outside %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT,
                     path, name, *v, lo, hi);
    return FALSE;
  }
  return TRUE;
}

LmwbTokfsm *lmwb_tokfsm_load(const char *path, GError **error) {
  g_autoptr(JsonNode) root = lmwb_json_load_file(path, 1 << 20, error);
  if (!root) return NULL;
  if (!JSON_NODE_HOLDS_OBJECT(root)) {
    lmwb_input_error(error, "%s: expected a JSON object", path);
    return NULL;
  }
  JsonObject *o = json_node_get_object(root);
  gint64 states, edges, length, seed;
  if (!int_field(o, "states", 1, LMWB_TOKFSM_MAX_STATES, &states, path, error) ||
      !int_field(o, "edges", 1, states, &edges, path, error) ||
      !int_field(o, "length", 1, LMWB_TOKFSM_MAX_LENGTH, &length, path, error) ||
      !int_field(o, "seed", 0, G_MAXINT64, &seed, path, error))
    return NULL;
  JsonNode *nn = json_object_get_member(o, "next");
  if (!nn || !JSON_NODE_HOLDS_ARRAY(nn) || json_array_get_length(json_node_get_array(nn)) != (guint)states) {
    lmwb_input_error(error, "%s: \"next\" must be an array of %" G_GINT64_FORMAT " arrays (one per state)", path, states);
    return NULL;
  }
  LmwbTokfsm *f = g_new0(LmwbTokfsm, 1);
  f->states = (int)states;
  f->edges = (int)edges;
  f->length = (int)length;
  f->seed = (guint64)seed;
  f->next = g_new(int32_t, (size_t)states * edges);
  JsonArray *a = json_node_get_array(nn);
  for (int s = 0; s < f->states; s++) {
    JsonNode *rn = json_array_get_element(a, (guint)s);
    JsonArray *row = JSON_NODE_HOLDS_ARRAY(rn) ? json_node_get_array(rn) : NULL;
    if (!row || json_array_get_length(row) != (guint)edges) {
      lmwb_input_error(error, "%s: \"next\"[%d] must be an array of %" G_GINT64_FORMAT " states", path, s, edges);
      lmwb_tokfsm_free(f);
      return NULL;
    }
    for (int j = 0; j < f->edges; j++) {
      JsonNode *e = json_array_get_element(row, (guint)j);
      gint64 v = (JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_INT64) ? json_node_get_int(e) : -1;
      if (v < 0 || v >= states) {
        lmwb_input_error(error, "%s: \"next\"[%d][%d] is not a state in 0..%" G_GINT64_FORMAT, path, s, j, states - 1);
        lmwb_tokfsm_free(f);
        return NULL;
      }
      f->next[(size_t)s * edges + j] = (int32_t)v;
    }
  }
  return f;
}

char *lmwb_tokfsm_tokenizer_json(size_t *len) {
  GString *s = g_string_new(
      "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n"
      "  \"added_tokens\": [{\"id\": 10, \"content\": \"<|endoftext|>\", \"single_word\": false, \"lstrip\": false,"
      " \"rstrip\": false, \"normalized\": false, \"special\": true}],\n"
      "  \"normalizer\": null,\n"
      "  \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true},\n"
      "  \"post_processor\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": false, \"use_regex\": true},\n"
      "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": true},\n"
      "  \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"continuing_subword_prefix\": null,"
      " \"end_of_word_suffix\": null, \"fuse_unk\": false, \"byte_fallback\": false, \"ignore_merges\": false,\n"
      "    \"vocab\": {");
  for (int d = 0; d < 10; d++) g_string_append_printf(s, "\"%d\": %d, ", d, d);
  g_string_append(s, "\"<|endoftext|>\": 10},\n    \"merges\": []\n  }\n}\n");
  if (len) *len = s->len;
  return g_string_free(s, FALSE);
}
