/* JSON strings written by hand (json_text.h). */
#include "app/formats/json_text.h"

#include <string.h>

void lmwb_json_append_string(GString *g, const char *s) {
  g_string_append_c(g, '"');
  for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
    if (*p == '"') g_string_append(g, "\\\"");
    else if (*p == '\\') g_string_append(g, "\\\\");
    else if (*p == '\n') g_string_append(g, "\\n");
    else if (*p == '\t') g_string_append(g, "\\t");
    else if (*p == '\r') g_string_append(g, "\\r");
    else if (*p < 0x20) g_string_append_printf(g, "\\u%04x", *p);
    else g_string_append_c(g, (char)*p);
  }
  g_string_append_c(g, '"');
}

/* Removes, in place, the ".0" json-glib < 1.8 puts after an exponent ("1e-300.0"). Outside
 * strings an 'e' or 'E' followed by an optional sign and digits can only be a number's exponent
 * (true and false end at their 'e'). Returns the new length. */
static size_t mend_exponents(char *t, size_t n) {
  size_t w = 0;
  gboolean in_string = FALSE;
  for (size_t r = 0; r < n;) {
    char c = t[r];
    if (in_string) {
      t[w++] = t[r++];
      if (c == '\\' && r < n) t[w++] = t[r++];
      else if (c == '"') in_string = FALSE;
      continue;
    }
    if (c == '"') in_string = TRUE;
    if ((c == 'e' || c == 'E') && r + 1 < n) {
      size_t d = r + 1;
      if (t[d] == '+' || t[d] == '-') d++;
      size_t digits = d;
      while (d < n && g_ascii_isdigit(t[d])) d++;
      if (d > digits && d + 2 <= n && t[d] == '.' && t[d + 1] == '0' &&
          (d + 2 == n || !g_ascii_isdigit(t[d + 2]))) {
        memmove(t + w, t + r, d - r);
        w += d - r;
        r = d + 2;
        continue;
      }
    }
    t[w++] = t[r++];
  }
  t[w] = 0;
  return w;
}

/* json-glib 1.6 copies some control characters (U+001F among them) into strings unescaped, which
 * makes the text invalid JSON: escape every byte below 0x20 that lies inside a string. */
static char *mend_controls(char *t, size_t *n) {
  size_t bad = 0;
  gboolean in_string = FALSE;
  for (size_t r = 0; r < *n; r++) {
    unsigned char c = (unsigned char)t[r];
    if (in_string && c == '\\') r++;
    else if (c == '"') in_string = !in_string;
    else if (in_string && c < 0x20) bad++;
  }
  if (!bad) return t;
  GString *g = g_string_sized_new(*n + 5 * bad);
  in_string = FALSE;
  for (size_t r = 0; r < *n; r++) {
    unsigned char c = (unsigned char)t[r];
    if (in_string && c == '\\' && r + 1 < *n) {
      g_string_append_c(g, t[r++]);
      g_string_append_c(g, t[r]);
      continue;
    }
    if (c == '"') in_string = !in_string;
    if (in_string && c < 0x20) g_string_append_printf(g, "\\u%04x", c);
    else g_string_append_c(g, (char)c);
  }
  g_free(t);
  *n = g->len;
  return g_string_free(g, FALSE);
}

char *lmwb_json_generate(JsonNode *root, gboolean pretty, size_t *len) {
  JsonGenerator *gen = json_generator_new();
  json_generator_set_pretty(gen, pretty);
  json_generator_set_root(gen, root);
  gsize n = 0;
  char *text = json_generator_to_data(gen, &n);
  g_object_unref(gen);
  n = mend_exponents(text, n);
  text = mend_controls(text, &n);
  if (len) *len = n;
  return text;
}
