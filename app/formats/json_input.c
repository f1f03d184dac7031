#include "app/formats/json_input.h"

#include <math.h>
#include <string.h>

#include "app/core/errors.h"
#include "app/core/inputs.h"

typedef struct {
  const char *data;
  size_t len, pos;
  const char *origin;
} Scan;

static void at_error(const Scan *s, size_t at, GError **error, const char *what) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < at && i < s->len; i++) {
    if (s->data[i] == '\n') {
      line++;
      col = 1;
    } else {
      col++;
    }
  }
  lmwb_input_error(error, "%s: JSON at line %zu, column %zu: %s", s->origin, line, col, what);
}

/* Skips a string starting at its opening quote; FALSE if it is not closed. */
static gboolean skip_string(Scan *s) {
  for (size_t i = s->pos + 1; i < s->len; i++) {
    if (s->data[i] == '\\') {
      i++;
    } else if (s->data[i] == '"') {
      s->pos = i + 1;
      return TRUE;
    }
  }
  return FALSE;
}

/* An integer literal that fits int64 (leading zeros ignored). */
static gboolean int_fits(const char *p, size_t n) {
  gboolean neg = n > 0 && p[0] == '-';
  if (neg) p++, n--;
  while (n > 1 && p[0] == '0') p++, n--;
  if (n < 19) return TRUE;
  if (n > 19) return FALSE;
  return memcmp(p, neg ? "9223372036854775808" : "9223372036854775807", 19) <= 0;
}

static gboolean check_number(Scan *s, GError **error) {
  size_t b = s->pos, e = b;
  gboolean is_float = FALSE;
  while (e < s->len && strchr("+-0123456789.eE", s->data[e]) && s->data[e]) {
    if (strchr(".eE", s->data[e])) is_float = TRUE;
    e++;
  }
  s->pos = e;
  if (!is_float) {
    if (int_fits(s->data + b, e - b)) return TRUE;
    at_error(s, b, error, "an integer does not fit in 64 bits");
    return FALSE;
  }
  char *tok = g_strndup(s->data + b, e - b);
  double v = g_ascii_strtod(tok, NULL);
  g_free(tok);
  if (isfinite(v)) return TRUE;
  at_error(s, b, error, "a number is too large for a double");
  return FALSE;
}

gboolean lmwb_json_check(const char *data, size_t len, const char *origin, GError **error) {
  Scan s = {data, len, 0, origin ? origin : "JSON"};
  if (!data || len == 0) {
    lmwb_input_error(error, "%s: empty, not JSON", s.origin);
    return FALSE;
  }
  const char *bad = NULL;
  if (!g_utf8_validate_len(data, len, &bad)) {
    at_error(&s, (size_t)(bad - data), error, "not UTF-8 text (or a NUL byte)");
    return FALSE;
  }
  size_t depth = 0;
  while (s.pos < len) {
    char c = data[s.pos];
    switch (c) {
      case '{': case '[':
        if (++depth > LMWB_JSON_MAX_DEPTH) {
          at_error(&s, s.pos, error, "nested deeper than " G_STRINGIFY(LMWB_JSON_MAX_DEPTH) " levels");
          return FALSE;
        }
        s.pos++;
        break;
      case '}': case ']':
        if (depth == 0) {
          at_error(&s, s.pos, error, "a closing bracket without an opening one");
          return FALSE;
        }
        depth--;
        s.pos++;
        break;
      case '"':
        if (!skip_string(&s)) {
          at_error(&s, s.pos, error, "a string is not closed");
          return FALSE;
        }
        break;
      case ' ': case '\t': case '\r': case '\n': case ',': case ':':
        s.pos++;
        break;
      default:
        if (c == '-' || g_ascii_isdigit(c)) {
          if (!check_number(&s, error)) return FALSE;
        } else if (g_ascii_islower(c)) {
          size_t e = s.pos;
          while (e < len && g_ascii_isalnum(data[e])) e++;
          size_t n = e - s.pos;
          if (!((n == 4 && !memcmp(data + s.pos, "true", 4)) || (n == 5 && !memcmp(data + s.pos, "false", 5)) ||
                (n == 4 && !memcmp(data + s.pos, "null", 4)))) {
            at_error(&s, s.pos, error, "unexpected word (only true, false and null are allowed)");
            return FALSE;
          }
          s.pos = e;
        } else {
          at_error(&s, s.pos, error, "unexpected character");
          return FALSE;
        }
    }
  }
  return TRUE;
}

JsonNode *lmwb_json_parse(const char *data, size_t len, const char *origin, GError **error) {
  if (!lmwb_json_check(data, len, origin, error)) return NULL;
  if (len > G_MAXSSIZE) {
    lmwb_input_error(error, "%s: too large", origin);
    return NULL;
  }
  JsonParser *parser = json_parser_new();
  GError *jerr = NULL;
  JsonNode *root = NULL;
  if (!json_parser_load_from_data(parser, data, (gssize)len, &jerr)) {
    lmwb_input_error(error, "%s: not valid JSON: %s", origin, jerr->message);
    g_error_free(jerr);
  } else {
    root = json_parser_steal_root(parser);
    if (!root) lmwb_input_error(error, "%s: no JSON value", origin);
  }
  g_object_unref(parser);
  return root;
}

JsonNode *lmwb_json_load_file(const char *path, uint64_t max_bytes, GError **error) {
  size_t len = 0;
  char *data = lmwb_file_read(path, max_bytes, LMWB_READ_REGULAR, &len, error);
  if (!data) return NULL;
  JsonNode *root = lmwb_json_parse(data, len, path, error);
  g_free(data);
  return root;
}

/* The text of a JSON string literal [b, e) (without quotes), escapes decoded. */
static char *unescape(const char *p, size_t n) {
  GString *s = g_string_sized_new(n);
  for (size_t i = 0; i < n; i++) {
    if (p[i] != '\\' || i + 1 >= n) {
      g_string_append_c(s, p[i]);
      continue;
    }
    char c = p[++i];
    const char *simple = NULL;
    switch (c) {
      case '"': simple = "\""; break;
      case '\\': simple = "\\"; break;
      case '/': simple = "/"; break;
      case 'b': simple = "\b"; break;
      case 'f': simple = "\f"; break;
      case 'n': simple = "\n"; break;
      case 'r': simple = "\r"; break;
      case 't': simple = "\t"; break;
      default: break;
    }
    if (simple) {
      g_string_append(s, simple);
    } else if (c == 'u' && i + 4 < n) {
      char hex[5] = {p[i + 1], p[i + 2], p[i + 3], p[i + 4], 0};
      gunichar u = (gunichar)g_ascii_strtoull(hex, NULL, 16);
      i += 4;
      if (u >= 0xD800 && u < 0xDC00 && i + 6 < n && p[i + 1] == '\\' && p[i + 2] == 'u') {
        char lo[5] = {p[i + 3], p[i + 4], p[i + 5], p[i + 6], 0};
        gunichar l = (gunichar)g_ascii_strtoull(lo, NULL, 16);
        if (l >= 0xDC00 && l < 0xE000) {
          u = 0x10000 + ((u - 0xD800) << 10) + (l - 0xDC00);
          i += 6;
        }
      }
      g_string_append_unichar(s, u);
    } else {
      g_string_append_c(s, '\\');
      g_string_append_c(s, c);
    }
  }
  return g_string_free(s, FALSE);
}

char *lmwb_json_duplicate_top_key(const char *data, size_t len) {
  Scan s = {data, len, 0, NULL};
  GHashTable *seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  size_t depth = 0;
  gboolean root_object = FALSE, expect_key = FALSE;
  char *dup = NULL;
  while (!dup && s.pos < len) {
    char c = data[s.pos];
    if (c == '{' || c == '[') {
      if (depth == 0) root_object = c == '{';
      depth++;
      expect_key = depth == 1 && root_object;
      s.pos++;
    } else if (c == '}' || c == ']') {
      if (depth > 0) depth--;
      s.pos++;
    } else if (c == ',') {
      expect_key = depth == 1 && root_object;
      s.pos++;
    } else if (c == '"') {
      size_t b = s.pos + 1;
      if (!skip_string(&s)) break;
      if (expect_key) {
        char *key = unescape(data + b, s.pos - 1 - b);
        if (g_hash_table_contains(seen, key)) dup = key;
        else g_hash_table_add(seen, key);
        expect_key = FALSE;
      }
    } else {
      s.pos++;
    }
  }
  g_hash_table_destroy(seen);
  return dup;
}
