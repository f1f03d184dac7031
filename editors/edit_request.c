/* Edit requests: parsing (CounterFact and flat, JSON or JSON Lines), the built-in world's
 * generator, and the checks against a tokenizer. Contract: edit_request.h. */
#include "editors/edit_request.h"
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/formats/json_input.h"
#include "app/formats/tokenizer.h"
#include "app/train/world.h"
#include <string.h>

static gboolean blank(const char *s) {
  while (*s && g_ascii_isspace(*s)) s++;
  return *s == 0;
}

static void request_clear(LmwbEditRequest *r) {
  g_free(r->prompt), g_free(r->subject), g_free(r->target_new), g_free(r->target_true);
  g_strfreev(r->paraphrases), g_strfreev(r->neighbours);
}

void lmwb_edit_requests_free(LmwbEditRequests *r) {
  if (!r) return;
  for (int i = 0; i < r->n; i++) request_clear(&r->items[i]);
  g_free(r->items);
  g_free(r);
}

/* A target: a string or {"str": string}, with a leading space added when it has none. */
static char *target(JsonObject *o, const char *key, gboolean required, const char *where, GError **error) {
  JsonNode *n = json_object_get_member(o, key);
  if (n && JSON_NODE_HOLDS_OBJECT(n)) n = json_object_get_member(json_node_get_object(n), "str");
  if (!n || JSON_NODE_HOLDS_NULL(n)) {
    if (required) lmwb_input_error(error, "%s: \"%s\" is missing", where, key);
    return NULL;
  }
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) {
    lmwb_input_error(error, "%s: \"%s\" must be a string or {\"str\": string}", where, key);
    return NULL;
  }
  const char *s = json_node_get_string(n);
  if (blank(s)) {
    lmwb_input_error(error, "%s: \"%s\" is empty", where, key);
    return NULL;
  }
  return s[0] == ' ' ? g_strdup(s) : g_strconcat(" ", s, NULL);
}

static char *string_member(JsonObject *o, const char *key, const char *where, GError **error) {
  JsonNode *n = json_object_get_member(o, key);
  if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) {
    lmwb_input_error(error, "%s: \"%s\" must be a string", where, key);
    return NULL;
  }
  return g_strdup(json_node_get_string(n));
}

/* An optional array of strings (absent: empty). */
static gboolean string_list(JsonObject *o, const char *key, char ***out, const char *where, GError **error) {
  JsonNode *n = json_object_get_member(o, key);
  GPtrArray *a = g_ptr_array_new();
  if (n && !JSON_NODE_HOLDS_NULL(n)) {
    if (!JSON_NODE_HOLDS_ARRAY(n)) {
      lmwb_input_error(error, "%s: \"%s\" must be an array of strings", where, key);
      g_ptr_array_free(a, TRUE);
      return FALSE;
    }
    JsonArray *arr = json_node_get_array(n);
    for (guint i = 0; i < json_array_get_length(arr); i++) {
      JsonNode *e = json_array_get_element(arr, i);
      if (!JSON_NODE_HOLDS_VALUE(e) || json_node_get_value_type(e) != G_TYPE_STRING) {
        lmwb_input_error(error, "%s: \"%s\"[%u] must be a string", where, key, i);
        g_ptr_array_free(a, TRUE);
        return FALSE;
      }
      g_ptr_array_add(a, g_strdup(json_node_get_string(e)));
    }
  }
  g_ptr_array_add(a, NULL);
  *out = (char **)g_ptr_array_free(a, FALSE);
  return TRUE;
}

static gboolean parse_one(JsonNode *node, const char *where, LmwbEditRequest *r, GError **error) {
  memset(r, 0, sizeof *r);
  if (!JSON_NODE_HOLDS_OBJECT(node)) {
    lmwb_input_error(error, "%s: a request must be a JSON object", where);
    return FALSE;
  }
  JsonObject *top = json_node_get_object(node);
  JsonNode *rw = json_object_get_member(top, "requested_rewrite");
  if (rw && !JSON_NODE_HOLDS_OBJECT(rw)) {
    lmwb_input_error(error, "%s: \"requested_rewrite\" must be an object", where);
    return FALSE;
  }
  JsonObject *o = rw ? json_node_get_object(rw) : top;
  GError *local = NULL;
  if (!(r->prompt = string_member(o, "prompt", where, error)) || !(r->subject = string_member(o, "subject", where, error)) ||
      !(r->target_new = target(o, "target_new", TRUE, where, error)))
    goto fail;
  r->target_true = target(o, "target_true", FALSE, where, &local);
  if (local) {
    g_propagate_error(error, local);
    goto fail;
  }
  const char *hole = strstr(r->prompt, "{}");
  if (!hole || strstr(hole + 2, "{}")) {
    lmwb_input_error(error, "%s: \"prompt\" must hold \"{}\" exactly once, where the subject goes (got \"%s\")", where,
                     r->prompt);
    goto fail;
  }
  if (blank(r->subject)) {
    lmwb_input_error(error, "%s: \"subject\" is empty", where);
    goto fail;
  }
  if (!string_list(top, "paraphrase_prompts", &r->paraphrases, where, error) ||
      !string_list(top, "neighborhood_prompts", &r->neighbours, where, error))
    goto fail;
  return TRUE;
fail:
  request_clear(r);
  memset(r, 0, sizeof *r);
  return FALSE;
}

LmwbEditRequests *lmwb_edit_requests_parse(const char *text, size_t len, const char *origin, GError **error) {
  GArray *items = g_array_new(FALSE, TRUE, sizeof(LmwbEditRequest));
  const char *p = text, *end = text + len;
  while (p < end && g_ascii_isspace(*p)) p++;
  gboolean ok = TRUE;
  /* One JSON document (an array, or one object however it is laid out), or JSON Lines. */
  /* JSON Lines: more than one line opens an object in the first column (a pretty-printed object
   * indents its inner ones) */
  int openers = 0;
  for (const char *q = text; q < end; q++)
    if (*q == '{' && (q == text || q[-1] == '\n')) openers++;
  gboolean whole = p < end && (*p == '[' || (*p == '{' && openers < 2));
  JsonNode *root = whole ? lmwb_json_parse(text, len, origin, error) : NULL;
  if (whole && !root) ok = FALSE;
  if (root && JSON_NODE_HOLDS_ARRAY(root)) {
    JsonArray *a = json_node_get_array(root);
    for (guint i = 0; ok && i < json_array_get_length(a); i++) {
      g_autofree char *where = g_strdup_printf("%s: item %u", origin, i + 1);
      LmwbEditRequest r;
      if ((ok = parse_one(json_array_get_element(a, i), where, &r, error))) g_array_append_val(items, r);
    }
  } else if (root) {
    LmwbEditRequest r;
    if ((ok = parse_one(root, origin, &r, error))) g_array_append_val(items, r);
  } else if (ok) {
    p = text;
    for (int line = 1; ok && p < end; line++) {
      const char *nl = memchr(p, '\n', (size_t)(end - p)), *e = nl ? nl : end, *q = p;
      while (q < e && g_ascii_isspace(*q)) q++;
      if (q < e) {
        g_autofree char *where = g_strdup_printf("%s: line %d", origin, line);
        JsonNode *n = lmwb_json_parse(q, (size_t)(e - q), where, error);
        LmwbEditRequest r;
        ok = n && parse_one(n, where, &r, error);
        if (ok) g_array_append_val(items, r);
        if (n) json_node_unref(n);
      }
      p = nl ? nl + 1 : end;
    }
  }
  if (root) json_node_unref(root);
  if (ok && items->len == 0) {
    lmwb_input_error(error, "%s: no requests", origin);
    ok = FALSE;
  }
  LmwbEditRequests *out = g_new0(LmwbEditRequests, 1);
  out->n = (int)items->len;
  out->items = (LmwbEditRequest *)g_array_free(items, FALSE);
  if (!ok) {
    lmwb_edit_requests_free(out);
    return NULL;
  }
  return out;
}

LmwbEditRequests *lmwb_edit_requests_read(const char *path, GError **error) {
  size_t len = 0;
  g_autofree char *text = lmwb_file_read(path, LMWB_EDIT_REQUESTS_MAX_BYTES, LMWB_READ_REGULAR, &len, error);
  return text ? lmwb_edit_requests_parse(text, len, path, error) : NULL;
}

char *lmwb_edit_request_text(const LmwbEditRequest *r) {
  const char *hole = strstr(r->prompt, "{}");
  return g_strdup_printf("%.*s%s%s", (int)(hole - r->prompt), r->prompt, r->subject, hole + 2);
}

gboolean lmwb_edit_request_check(const LmwbModel *m, const LmwbEditRequest *r, int index, GError **error) {
  if (!m->tokenizer) {
    lmwb_input_error(error, "%s has no tokenizer: requests are text", m->dir ? m->dir : "the model");
    return FALSE;
  }
  const char *targets[2] = {r->target_new, r->target_true};
  const char *names[2] = {"target_new", "target_true"};
  for (int i = 0; i < 2; i++) {
    if (!targets[i]) continue;
    size_t n = 0;
    g_autofree int32_t *ids = lmwb_tokenizer_encode(m->tokenizer, targets[i], strlen(targets[i]), FALSE, &n, error);
    if (!ids) return FALSE;
    if (n == 0) {
      lmwb_input_error(error, "request %d: %s \"%s\" encodes to no tokens", index + 1, names[i], targets[i]);
      return FALSE;
    }
  }
  /* The subject must end on a token boundary of the prompt: its last token is where the key is read. */
  const char *hole = strstr(r->prompt, "{}");
  g_autofree char *head = g_strdup_printf("%.*s%s", (int)(hole - r->prompt), r->prompt, r->subject);
  g_autofree char *full = lmwb_edit_request_text(r);
  size_t nh = 0, nf = 0;
  g_autofree int32_t *ih = lmwb_tokenizer_encode(m->tokenizer, head, strlen(head), TRUE, &nh, error);
  g_autofree int32_t *iff = ih ? lmwb_tokenizer_encode(m->tokenizer, full, strlen(full), TRUE, &nf, error) : NULL;
  if (!iff) return FALSE;
  if (nh == 0 || nh > nf || memcmp(ih, iff, nh * sizeof(int32_t)) != 0) {
    lmwb_input_error(error, "request %d: subject \"%s\" does not end on a token boundary of \"%s\"", index + 1,
                     r->subject, full);
    return FALSE;
  }
  if ((int64_t)nf >= m->cfg.n_ctx) {
    lmwb_input_error(error, "request %d: the prompt is longer than the model's context (%d)", index + 1, m->cfg.n_ctx);
    return FALSE;
  }
  return TRUE;
}

/* ---- the built-in world ---------------------------------------------------------------------- */

typedef struct {
  const char *relation, *subject, *object, *template_;
  JsonArray *eval;
} Fact;

/* The first training template that ends with its object ("{S} lives in {O}.") as a prompt. */
static char *prompt_of(JsonArray *templates) {
  for (guint i = 0; templates && i < json_array_get_length(templates); i++) {
    const char *t = json_array_get_string_element(templates, i);
    const char *s = t ? strstr(t, "{S}") : NULL, *o = t ? strstr(t, "{O}") : NULL;
    if (!s || !o || o < s || strcmp(o, "{O}.") != 0 || o == t || o[-1] != ' ') continue;
    return g_strdup_printf("%.*s{}%.*s", (int)(s - t), t, (int)(o - 1 - (s + 3)), s + 3);
  }
  return NULL;
}

LmwbEditRequests *lmwb_edit_requests_from_world(const char *world_json, int n, int n_neighbours, guint64 seed,
                                                GError **error) {
  JsonNode *root = lmwb_json_load_file(world_json, (uint64_t)256 << 20, error);
  if (!root) return NULL;
  JsonObject *o = JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  JsonNode *fn = o ? json_object_get_member(o, "facts") : NULL;
  if (!fn || !JSON_NODE_HOLDS_ARRAY(fn)) {
    lmwb_input_error(error, "%s: no \"facts\" array (not a world.json)", world_json);
    json_node_unref(root);
    return NULL;
  }
  JsonArray *fa = json_node_get_array(fn);
  guint nf = json_array_get_length(fa);
  GArray *facts = g_array_new(FALSE, TRUE, sizeof(Fact));
  for (guint i = 0; i < nf; i++) {
    JsonObject *f = json_array_get_object_element(fa, i);
    if (!f) continue;
    Fact x = {json_object_get_string_member_with_default(f, "relation", NULL),
              json_object_get_string_member_with_default(f, "subject", NULL),
              json_object_get_string_member_with_default(f, "object", NULL), NULL,
              json_object_has_member(f, "eval") ? json_object_get_array_member(f, "eval") : NULL};
    JsonArray *tt = json_object_has_member(f, "train_templates") ? json_object_get_array_member(f, "train_templates") : NULL;
    char *p = prompt_of(tt);
    x.template_ = p ? g_intern_string(p) : NULL;
    g_free(p);
    if (x.relation && x.subject && x.object && x.template_) g_array_append_val(facts, x);
  }
  LmwbEditRequests *out = NULL;
  gpointer *order = NULL;
  if (facts->len < 2 || n < 1) {
    lmwb_input_error(error, "%s: %s", world_json, n < 1 ? "ask for at least one request" : "fewer than two usable facts");
    goto done;
  }
  n = MIN(n, (int)facts->len);
  order = g_new(gpointer, facts->len);
  for (guint i = 0; i < facts->len; i++) order[i] = GUINT_TO_POINTER(i);
  LmwbWorldRng rng;
  lmwb_world_rng_init(&rng, seed);
  lmwb_world_rng_shuffle(&rng, order, facts->len);
  out = g_new0(LmwbEditRequests, 1);
  out->items = g_new0(LmwbEditRequest, n);
  for (int k = 0; k < n; k++) {
    const Fact *f = &g_array_index(facts, Fact, GPOINTER_TO_UINT(order[k]));
    /* another object of the same relation */
    GPtrArray *others = g_ptr_array_new(), *neigh = g_ptr_array_new();
    for (guint i = 0; i < facts->len; i++) {
      const Fact *g = &g_array_index(facts, Fact, (GPOINTER_TO_UINT(order[k]) + 1 + i) % facts->len);
      if (strcmp(g->relation, f->relation) != 0 || strcmp(g->subject, f->subject) == 0) continue;
      if (strcmp(g->object, f->object) != 0) g_ptr_array_add(others, (gpointer)g->object);
      if ((int)neigh->len < n_neighbours && g->template_ == f->template_) {
        const char *hole = strstr(g->template_, "{}");
        g_ptr_array_add(neigh, g_strdup_printf("%.*s%s%s", (int)(hole - g->template_), g->template_, g->subject, hole + 2));
      }
    }
    LmwbEditRequest *r = &out->items[out->n++];
    r->prompt = g_strdup(f->template_);
    r->subject = g_strdup(f->subject);
    r->target_true = g_strconcat(" ", f->object, NULL);
    const char *new_obj = others->len ? g_ptr_array_index(others, lmwb_world_rng_below(&rng, others->len)) : f->object;
    r->target_new = g_strconcat(" ", new_obj, NULL);
    GPtrArray *para = g_ptr_array_new();
    for (guint i = 0; f->eval && i < json_array_get_length(f->eval); i++) {
      JsonObject *e = json_array_get_object_element(f->eval, i);
      const char *pr = e ? json_object_get_string_member_with_default(e, "prompt", NULL) : NULL;
      if (pr) g_ptr_array_add(para, g_strdup(pr));
    }
    g_ptr_array_add(para, NULL);
    g_ptr_array_add(neigh, NULL);
    r->paraphrases = (char **)g_ptr_array_free(para, FALSE);
    r->neighbours = (char **)g_ptr_array_free(neigh, FALSE);
    g_ptr_array_free(others, TRUE);
  }
done:
  g_free(order);
  g_array_free(facts, TRUE);
  json_node_unref(root);
  return out;
}
