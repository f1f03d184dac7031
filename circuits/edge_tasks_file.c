/* JSONL task files (circuits/edge_tasks.h): {"clean", "corrupted", "answer", "wrong"} per line. */
#include "app/core/errors.h"
#include "app/formats/json_input.h"
#include "app/formats/tokenizer.h"
#include "circuits/edge_tasks.h"
#include <string.h>

/* A string member, or an input error naming the line and field. */
static const char *field(JsonObject *o, const char *key, const char *origin, int line, GError **error) {
  JsonNode *n = json_object_get_member(o, key);
  if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) {
    lmwb_input_error(error, "%s:%d: field \"%s\" %s", origin, line, key, n ? "is not a string" : "is missing");
    return NULL;
  }
  const char *s = json_node_get_string(n);
  if (!*s) lmwb_input_error(error, "%s:%d: field \"%s\" is empty", origin, line, key);
  return *s ? s : NULL;
}

static int32_t *encode_field(const LmwbTokenizer *tok, const char *s, size_t *n, const char *origin, int line,
                             const char *key, GError **error) {
  GError *e = NULL;
  int32_t *ids = lmwb_tokenizer_encode(tok, s, strlen(s), FALSE, n, &e);
  if (!ids) {
    lmwb_input_error(error, "%s:%d: field \"%s\": %s", origin, line, key, e->message);
    g_error_free(e);
  }
  return ids;
}

/* One line into e. */
static gboolean parse_line(const LmwbTokenizer *tok, int V, const char *text, size_t len, const char *origin, int line,
                           LmwbEdgeExample *e, GError **error) {
  g_autofree char *where = g_strdup_printf("%s:%d", origin, line);
  JsonNode *root = lmwb_json_parse(text, len, where, error);
  if (!root) return FALSE;
  gboolean ok = FALSE;
  int32_t *a = NULL, *w = NULL;
  if (!JSON_NODE_HOLDS_OBJECT(root)) {
    lmwb_input_error(error, "%s: not a JSON object", where);
    goto out;
  }
  JsonObject *o = json_node_get_object(root);
  const char *clean = field(o, "clean", origin, line, error), *corrupt = clean ? field(o, "corrupted", origin, line, error) : NULL;
  const char *answer = corrupt ? field(o, "answer", origin, line, error) : NULL;
  const char *wrong = answer ? field(o, "wrong", origin, line, error) : NULL;
  if (!wrong) goto out;
  size_t n1 = 0, n2 = 0, na = 0, nw = 0;
  e->clean = encode_field(tok, clean, &n1, origin, line, "clean", error);
  e->corrupt = e->clean ? encode_field(tok, corrupt, &n2, origin, line, "corrupted", error) : NULL;
  a = e->corrupt ? encode_field(tok, answer, &na, origin, line, "answer", error) : NULL;
  w = a ? encode_field(tok, wrong, &nw, origin, line, "wrong", error) : NULL;
  if (!w) goto out;
  if (n1 != n2) {
    lmwb_input_error(error, "%s: field \"corrupted\" is %zu tokens and \"clean\" %zu: they must be the same length", where,
                     n2, n1);
  } else if (n1 == 0) {
    lmwb_input_error(error, "%s: field \"clean\" has no tokens", where);
  } else if (na != 1 || nw != 1) {
    const char *key = na != 1 ? "answer" : "wrong";
    lmwb_input_error(error, "%s: field \"%s\" is %zu tokens, not one", where, key, na != 1 ? na : nw);
  } else if (a[0] >= V || w[0] >= V) {
    lmwb_input_error(error, "%s: field \"%s\" is token %d, beyond the model's vocabulary of %d", where,
                     a[0] >= V ? "answer" : "wrong", a[0] >= V ? a[0] : w[0], V);
  } else {
    e->len = (int)n1;
    e->answer = a[0];
    e->wrong = w[0];
    ok = TRUE;
  }
out:
  g_free(a);
  g_free(w);
  json_node_unref(root);
  return ok;
}

LmwbEdgeTask *lmwb_edge_task_parse_jsonl(const char *text, size_t len, const char *origin, const LmwbModel *m,
                                         GError **error) {
  if (!m->tokenizer) {
    lmwb_input_error(error, "%s: the model has no tokenizer", origin);
    return NULL;
  }
  g_autoptr(LmwbEdgeTask) t = g_new0(LmwbEdgeTask, 1);
  t->kind = LMWB_EDGE_TASK_FILE;
  t->name = g_strdup(origin);
  GArray *ex = g_array_new(FALSE, TRUE, sizeof(LmwbEdgeExample));
  int line = 0;
  gboolean ok = TRUE;
  for (size_t pos = 0; ok && pos < len;) {
    const char *nl = memchr(text + pos, '\n', len - pos);
    size_t end = nl ? (size_t)(nl - text) : len;
    line++;
    gboolean blank = TRUE;
    for (size_t i = pos; i < end && blank; i++) blank = g_ascii_isspace(text[i]);
    if (!blank) {
      if (ex->len >= LMWB_EDGE_TASK_MAX_EXAMPLES) {
        lmwb_input_error(error, "%s:%d: more than %d examples", origin, line, LMWB_EDGE_TASK_MAX_EXAMPLES);
        ok = FALSE;
        break;
      }
      LmwbEdgeExample e = {0};
      ok = parse_line(m->tokenizer, m->cfg.vocab_size, text + pos, end - pos, origin, line, &e, error);
      if (ok) g_array_append_val(ex, e);
      else {
        g_free(e.clean);
        g_free(e.corrupt);
      }
    }
    pos = end + 1;
  }
  t->n = (int)ex->len;
  t->ex = (LmwbEdgeExample *)g_array_free(ex, FALSE);
  if (!ok) return NULL;
  if (t->n == 0) {
    lmwb_input_error(error, "%s: no examples (an empty task file)", origin);
    return NULL;
  }
  return g_steal_pointer(&t);
}
