/* The Editing view's memorisation page: K-FAC curvature editing (editors/kfac.h, memorisation.h).
 * Collect the factors of MLP matrices over a text as a job (or load a factor folder), see their
 * eigenvalue spectra and curvature mass curves, move the keep-mass ρ and see strict and loose
 * recitation of the built-in world's secrets, held-out perplexity and world-fact recall of the
 * edited version beside the unedited one (a small sample, re-measured in the background, a newer
 * ρ cancelling the older measurement), a secret's greedy continuation before and after, and save
 * the edited model as a Hugging Face folder (the edit and the save of `lmwb-batch kfac edit`).
 *
 * The panel is a widget of the view that holds it: that view forwards set_model, describe and
 * busy, and adds the panel's actions to its own (user data: the view, which keeps the panel as
 * object data LMWB_KFAC_PANEL_KEY). Banners go to the view above the panel. */
#pragma once
#include "app/engine/model.h"
#include "ui/desktop/lmwb-plot-view.h"
#include <gtk/gtk.h>

#define LMWB_TYPE_KFAC_PANEL (lmwb_kfac_panel_get_type())
G_DECLARE_FINAL_TYPE(LmwbKfacPanel, lmwb_kfac_panel, LMWB, KFAC_PANEL, GtkBox)

#define LMWB_KFAC_PANEL_KEY "lmwb-kfac-panel"

/* Actions, named kfac-*: text PATH (collection text), tokens N, context N, layers 'L', matrices
 * 'up,down', folder DIR (collect writes, load reads), collect, load DIR ('' = the folder field),
 * cancel, keep-mass X, items N (sample size), heldout PATH, heldout-stride N (0: half the
 * context), recommend (kfac sweep's values on the sample; ρ moved to the recommended one), secret N,
 * save DIR, save-dialog,
 * browse text|folder|heldout. */
#define LMWB_KFAC_PANEL_N_ACTIONS 18
extern const GActionEntry lmwb_kfac_panel_actions[LMWB_KFAC_PANEL_N_ACTIONS];

void lmwb_kfac_panel_set_model(LmwbKfacPanel *p, LmwbModel *model);
/* TRUE while an evaluation waits for ρ to rest (no job shows that yet). */
gboolean lmwb_kfac_panel_busy(LmwbKfacPanel *p);
/* Lines starting with "kfac " for the script's dump. */
char *lmwb_kfac_panel_describe(LmwbKfacPanel *p);
LmwbPlotView *lmwb_kfac_panel_current_plot(LmwbKfacPanel *p);
