/* JSON from files a user hands us (config.json, tokenizer.json, safetensors headers, indexes,
 * recipes, manifests). json-glib's parser recurses once per nesting level and turns integers
 * beyond 64 bits into -1 without a word, so every JSON input is first scanned, without recursion,
 * and refused (LMWB_ERROR_INPUT naming the origin, line and column) when it nests deeper than
 * LMWB_JSON_MAX_DEPTH, holds an integer outside int64 or a number that overflows a double, or is
 * not UTF-8. Only then is it parsed. */
#pragma once
#include <glib.h>
#include <json-glib/json-glib.h>
#include <stddef.h>
#include <stdint.h>

/* Far above any real file (tokenizer.json nests about 6 deep) and far below what overflows the
 * parser's stack (tens of thousands of levels). */
#define LMWB_JSON_MAX_DEPTH 256

/* The scan alone. */
gboolean lmwb_json_check(const char *data, size_t len, const char *origin, GError **error);
/* Scan, then parse; the root node (any type), owned by the caller (json_node_unref). `origin`
 * names the input in messages. */
JsonNode *lmwb_json_parse(const char *data, size_t len, const char *origin, GError **error);
/* Read (lmwb_file_read: regular file, at most max_bytes) and parse a JSON file. */
JsonNode *lmwb_json_load_file(const char *path, uint64_t max_bytes, GError **error);
/* The first key that occurs twice in the top-level object of a checked document (g_free), or
 * NULL when all are distinct. json-glib keeps only the last of duplicated keys. */
char *lmwb_json_duplicate_top_key(const char *data, size_t len);
