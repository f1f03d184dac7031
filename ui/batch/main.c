/* lmwb-batch: the headless front end. `lmwb-batch COMMAND [SUBCOMMAND] [OPTIONS]`. */
#include "ui/batch/cli.h"
#include "app/core/inputs.h"
#include <locale.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
  fprintf(f,
          "Usage: lmwb-batch COMMAND [OPTIONS]\n\n"
          "LM Workbench without a display: look inside transformer language models and edit them.\n"
          "Every command prints JSON on stdout (or writes --out FILE) and takes --help.\n\nCommands:\n");
  for (const LmwbCommand *c = lmwb_commands; c->name; c++) fprintf(f, "  %-18s %s\n", c->name, c->summary);
  fprintf(f, "\nWithout --model, commands use the built-in model (%s).\n"
             "Exit status: 0 success, 2 bad input (the message names the file and field), 1 other failure.\n",
          lmwb_cli_default_model_dir());
}

int main(int argc, char **argv) {
  /* Command-line text is UTF-8 whatever the locale: GOption converts string options from the
   * locale's charset, which GLib takes from $CHARSET first (under LC_ALL=C it would be ASCII and
   * every accented prompt would be refused). */
  g_setenv("CHARSET", "UTF-8", TRUE);
  setlocale(LC_ALL, "");
  setlocale(LC_NUMERIC, "C");
  /* No command writes over a file it reads; every command removes its temporary files when it
   * is interrupted. */
  lmwb_input_guard_enable();
  lmwb_cli_install_signal_handlers();
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  /* Two-word commands ("neurons decode") are matched first. */
  for (const LmwbCommand *c = lmwb_commands; c->name; c++) {
    const char *sp = strchr(c->name, ' ');
    if (sp && argc >= 3 && !strncmp(argv[1], c->name, sp - c->name) && strlen(argv[1]) == (size_t)(sp - c->name) &&
        !strcmp(argv[2], sp + 1)) {
      argv[2] = g_strdup_printf("lmwb-batch %s", c->name);
      return c->run(argc - 2, argv + 2);
    }
  }
  for (const LmwbCommand *c = lmwb_commands; c->name; c++) {
    if (!strchr(c->name, ' ') && !strcmp(argv[1], c->name)) {
      argv[1] = g_strdup_printf("lmwb-batch %s", c->name);
      return c->run(argc - 1, argv + 1);
    }
  }
  /* A group name alone ("neurons") lists its subcommands. */
  gboolean group = FALSE;
  for (const LmwbCommand *c = lmwb_commands; c->name; c++) {
    const char *sp = strchr(c->name, ' ');
    if (sp && strlen(argv[1]) == (size_t)(sp - c->name) && !strncmp(argv[1], c->name, sp - c->name)) {
      if (!group) fprintf(stderr, "lmwb-batch %s: choose a subcommand:\n", argv[1]);
      group = TRUE;
      fprintf(stderr, "  %-18s %s\n", c->name, c->summary);
    }
  }
  if (group) return 2;
  fprintf(stderr, "lmwb-batch: error: unknown command \"%s\"\n\n", argv[1]);
  usage(stderr);
  return 2;
}
