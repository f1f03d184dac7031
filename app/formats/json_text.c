/* JSON strings written by hand (json_text.h). */
#include "app/formats/json_text.h"

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
