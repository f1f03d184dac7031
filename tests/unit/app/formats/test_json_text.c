/* JSON strings written by hand parse back to the same text in json-glib, whatever they hold. */
#include "app/formats/json_text.h"
#include <json-glib/json-glib.h>

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

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/json-text/round-trip", test_round_trip);
  return g_test_run();
}
