/* JSON text written by hand, where a JsonBuilder would be slow or heavy (a safetensors header,
 * a table of a hundred thousand neurons): one string escaper for all of them. */
#pragma once
#include <glib.h>

/* Append s (UTF-8; NULL as "") as a quoted JSON string: quote, backslash and control characters
 * escaped. */
void lmwb_json_append_string(GString *out, const char *s);
