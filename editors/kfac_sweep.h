/* The K-FAC keep-mass sweep (`lmwb-batch kfac sweep`, the desktop's Recommend): the unedited model
 * and its edit at each ρ of a list (in memory, nothing written), each measured the same way
 * (memorisation.h), and the recommended ρ (lmwb_memo_recommend). */
#pragma once
#include "editors/kfac.h"
#include "editors/memorisation.h"

/* The values tried when none are given: coarse below 0.85, in steps of 0.01 from 0.9 where
 * recitation, perplexity and facts move fastest (the built-in model's frontier is 0.9-0.93,
 * tokfsm-mem's 0.95-0.97). */
#define LMWB_KFAC_SWEEP_DEFAULT "0.5,0.6,0.7,0.8,0.85,0.88,0.9,0.91,0.92,0.93,0.94,0.95,0.96,0.97,0.98,0.99"

typedef struct LmwbKfacSweep {
  int n;                    /* values of ρ */
  double *rho;              /* [n] */
  LmwbMemoResult base;      /* the unedited model */
  LmwbMemoResult *res;      /* [n] */
  LmwbKfacEditStats **stats; /* [n] per (layer, matrix) edit statistics, n_stats[i] each */
  int *n_stats;
  double *seconds;          /* [n] wall time of each point's edit and measurement */
  int recommended;          /* index into rho, -1 when no edit meets the goals */
} LmwbKfacSweep;

/* Parses "0.9,0.95,…" (every value in (0, 1]); input errors name the value. */
gboolean lmwb_kfac_sweep_parse(const char *text, double **rho, int *n, GError **error);

/* Runs the sweep over the lists of layers and matrices (as lmwb_kfac_edit): the unedited model,
 * then each ρ of rho[n] (copied into out). eig is lmwb_kfac_edit's decomposition cache (an array
 * of factors->n, filled on first use, kept by the caller). Progress goes from 0 to 1 over the
 * n + 1 measurements, and a log line per point; cancelling stops it. On failure out is cleared. */
gboolean lmwb_kfac_sweep_run(LmwbModel *m, const LmwbKfacFactors *factors, const int *layers, int n_layers,
                             unsigned matrices, const double *rho, int n, LmwbKfacEigen **eig, const LmwbMemoOptions *o,
                             LmwbKfacSweep *out, LmwbReporter *rep, GError **error);
void lmwb_kfac_sweep_clear(LmwbKfacSweep *s);
