/* lmwb-batch kfac collect | merge | spectrum | edit | sweep and memorisation eval (editors/kfac.h,
 * editors/memorisation.h), and what their files share. Entry points return the exit status. */
#pragma once
#include "editors/kfac.h"
#include <json-glib/json-glib.h>

int lmwb_cmd_kfac_collect(int argc, char **argv);
int lmwb_cmd_kfac_merge(int argc, char **argv);
int lmwb_cmd_kfac_spectrum(int argc, char **argv);
int lmwb_cmd_kfac_edit(int argc, char **argv);
int lmwb_cmd_kfac_sweep(int argc, char **argv);
int lmwb_cmd_memorisation_eval(int argc, char **argv);

/* FALSE (after printing the usage error) unless path is NULL or ends in .png, .svg or .pdf. */
gboolean lmwb_kfac_cli_plot_path(const char *opt, const char *path);
/* --layers / --matrices against a model; NULL takes them from the factors when given, else all
 * layers and every matrix the model has. */
gboolean lmwb_kfac_cli_targets(const LmwbModel *m, const LmwbKfacFactors *f, const char *layers, const char *matrices,
                               int **list, int *n, unsigned *mask, GError **err);
/* The per-matrix statistics of an edit as a JSON array. */
JsonNode *lmwb_kfac_cli_stats_json(const LmwbKfacEditStats *s, int n);
