/* JSON strings written by hand parse back to the same text in json-glib, whatever they hold. */
#include "app/formats/json_text.h"
#include <json-glib/json-glib.h>
#include <string.h>

static void test_round_trip(void) {
  const char *cases[] = {"", "plain", "quote \" and backslash \\", "line\nbreak\ttab\rreturn", "\x01\x1f control",
                         "Ġdog ünïcødé ✓", "{\"not\": \"json\"}"};
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    GString *g = g_string_new("[");
    lmwb_json_append_string(g, cases[i]);
    g_string_append(g, "]");
    g_autoptr(JsonParser) p = json_parser_new();
    GError *err = NULL;
    g_assert_true(json_parser_load_from_data(p, g->str, -1, &err));
    g_assert_no_error(err);
    JsonArray *a = json_node_get_array(json_parser_get_root(p));
    g_assert_cmpstr(json_array_get_string_element(a, 0), ==, cases[i]);
    g_string_free(g, TRUE);
  }
  GString *g = g_string_new(NULL);
  lmwb_json_append_string(g, NULL);
  g_assert_cmpstr(g->str, ==, "\"\"");
  g_string_free(g, TRUE);
}

/* Doubles json-glib 1.6 prints in exponent form without a '.' come out as valid JSON, every
 * number reads back the same, and strings that look like the slip are left alone. */
static void test_generate_exponents(void) {
  const double values[] = {1e-300, 1e20, -1e300, 2e17, 5e-324, 2.5, 3.0, 0.1, -0.0, 123456789.125};
  const char *strings[] = {"1e-300.0", "e5.0", "\\\"e1.0"};
  JsonBuilder *b = json_builder_new();
  json_builder_begin_array(b);
  for (size_t i = 0; i < G_N_ELEMENTS(values); i++) json_builder_add_double_value(b, values[i]);
  for (size_t i = 0; i < G_N_ELEMENTS(strings); i++) json_builder_add_string_value(b, strings[i]);
  json_builder_add_boolean_value(b, TRUE);
  json_builder_add_boolean_value(b, FALSE);
  json_builder_end_array(b);
  JsonNode *root = json_builder_get_root(b);
  g_object_unref(b);
  for (int pretty = 0; pretty < 2; pretty++) {
    size_t len = 0;
    char *text = lmwb_json_generate(root, pretty, &len);
    g_assert_cmpuint(len, ==, strlen(text));
    g_assert_null(strstr(text, "e-300.0,"));
    g_assert_nonnull(strstr(text, "\"1e-300.0\""));
    g_autoptr(JsonParser) p = json_parser_new();
    GError *err = NULL;
    g_assert_true(json_parser_load_from_data(p, text, (gssize)len, &err));
    g_assert_no_error(err);
    JsonArray *a = json_node_get_array(json_parser_get_root(p));
    for (guint i = 0; i < G_N_ELEMENTS(values); i++) {
      JsonNode *n = json_array_get_element(a, i);
      g_assert_cmpint(json_node_get_value_type(n), ==, G_TYPE_DOUBLE);
      g_assert_true(json_node_get_double(n) == values[i]);
    }
    for (guint i = 0; i < G_N_ELEMENTS(strings); i++)
      g_assert_cmpstr(json_array_get_string_element(a, G_N_ELEMENTS(values) + i), ==, strings[i]);
    g_assert_true(json_array_get_boolean_element(a, G_N_ELEMENTS(values) + G_N_ELEMENTS(strings)));
    g_free(text);
  }
  json_node_unref(root);
}

/* Every control character in a string comes out escaped (strict JSON readers refuse raw ones) and
 * reads back the same. */
static void test_generate_controls(void) {
  char s[40];
  for (int c = 1; c < 32; c++) s[c - 1] = (char)c;
  strcpy(s + 31, "\\\"x");
  JsonNode *root = json_node_new(JSON_NODE_VALUE);
  json_node_set_string(root, s);
  for (int pretty = 0; pretty < 2; pretty++) {
    size_t len = 0;
    char *text = lmwb_json_generate(root, pretty, &len);
    g_assert_cmpuint(len, ==, strlen(text));
    for (size_t i = 0; i < len; i++) g_assert_cmpint((unsigned char)text[i], >=, 0x20);
    g_autoptr(JsonParser) p = json_parser_new();
    GError *err = NULL;
    g_assert_true(json_parser_load_from_data(p, text, (gssize)len, &err));
    g_assert_cmpstr(json_node_get_string(json_parser_get_root(p)), ==, s);
    g_free(text);
  }
  json_node_unref(root);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/json-text/round-trip", test_round_trip);
  g_test_add_func("/json-text/generate-exponents", test_generate_exponents);
  g_test_add_func("/json-text/generate-controls", test_generate_controls);
  return g_test_run();
}
