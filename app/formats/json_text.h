/* JSON text written by hand, where a JsonBuilder would be slow or heavy (a safetensors header,
 * a table of a hundred thousand neurons): one string escaper for all of them. And JSON text from
 * a json-glib tree, with json-glib's own slip mended. */
#pragma once
#include <glib.h>
#include <json-glib/json-glib.h>
#include <stddef.h>

/* Append s (UTF-8; NULL as "") as a quoted JSON string: quote, backslash and control characters
 * escaped. */
void lmwb_json_append_string(GString *out, const char *s);

/* JsonGenerator's text of `root` (*len without the NUL; len may be NULL); g_free it. json-glib
 * before 1.8 appends ".0" to every double printed without a '.', exponent forms included: 1e-300
 * comes out as "1e-300.0", which is not JSON. That ".0" is removed here, so the text is valid JSON
 * and the same whichever json-glib wrote it. The caller keeps non-finite numbers out (json-glib
 * would write "nan" or "inf"). */
char *lmwb_json_generate(JsonNode *root, gboolean pretty, size_t *len);
