/* lmwb: the GTK4 desktop workbench. Parses its few options before touching the display so that
 * --help works anywhere and a missing display is a clear message (exit 2), not a crash. */
#include "ui/desktop/lmwb-app.h"
#include "app/core/inputs.h"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* OpenMP workers that spin while they wait take the cores the window's own thread needs while a
 * job runs; passive waiting keeps the window fluid and the job barely slower. libgomp reads the
 * setting when it loads, before main, so the program starts itself again with it set (once: a
 * setting the user gave is kept). */
static void wait_passively(char **argv) {
  if (g_getenv("OMP_WAIT_POLICY")) return;
  g_setenv("OMP_WAIT_POLICY", "passive", TRUE);
  execv("/proc/self/exe", argv);
  /* no /proc: run on with the default */
}

int main(int argc, char **argv) {
  wait_passively(argv);
  lmwb_input_guard_enable(); /* an export never writes over a file or folder the workbench opened */
  char *model = NULL, *script = NULL;
  gboolean version = FALSE;
  GOptionEntry entries[] = {
    {"model", 'm', 0, G_OPTION_ARG_FILENAME, &model, "Hugging Face model folder to open (default: the built-in model)", "DIR"},
    {"script", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_FILENAME, &script, "Test mode: run the commands in FILE, then quit", "FILE"},
    {"version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version", NULL},
    {NULL},
  };
  GOptionContext *ctx = g_option_context_new("- LM Workbench, look inside transformer language models");
  g_option_context_set_summary(ctx,
      "Opens a model (config.json, *.safetensors, tokenizer.json) and shows what it computes: the\n"
      "next-token predictions for a prompt, the logit lens, and the MLP neurons behind a token, which\n"
      "you can clamp while it generates. Without a display, use the headless front end: lmwb-batch --help");
  g_option_context_add_main_entries(ctx, entries, NULL);
  GError *err = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
    fprintf(stderr, "lmwb: %s (see lmwb --help)\n", err->message);
    return 2;
  }
  g_option_context_free(ctx);
  if (version) {
    printf("lmwb %s\n", LMWB_VERSION);
    return 0;
  }
  if (argc > 1) {
    fprintf(stderr, "lmwb: unexpected argument \"%s\" (use --model DIR)\n", argv[1]);
    return 2;
  }
  if (!gtk_init_check()) {
    fprintf(stderr, "lmwb: cannot open a display (DISPLAY / WAYLAND_DISPLAY not set or not reachable).\n"
                    "Run the headless front end instead: lmwb-batch --help\n"
                    "or run under a virtual display: xvfb-run -a lmwb\n");
    return 2;
  }
  LmwbApp *app = lmwb_app_new(model, script);
  char *args[] = {argv[0], NULL};
  int status = g_application_run(G_APPLICATION(app), 1, args);
  if (script && status == 0) status = lmwb_app_script_status(app);
  g_object_unref(app);
  g_free(model);
  g_free(script);
  return status;
}
