/* The registry of the workbench's views, in switcher order: the first is Alt+1, the next Alt+2…
 *
 * Adding a view NAME takes one new file and one line here:
 *   1. lmwb-NAME-view.c (and lmwb-NAME-view.ui when it has a template, loaded from the resource
 *      /org/lmwb/Workbench/lmwb-NAME-view.ui): a widget whose type function is
 *      lmwb_NAME_view_get_type and that implements LmwbView (lmwb-view.h);
 *   2. a line X(NAME) in the list below.
 * The window builds the page, the switcher and menu entries, the shortcuts and the help from
 * the list; the build (meson.build) reads the same list to compile the file and bundle the .ui. */
#include "ui/desktop/lmwb-views.h"

#define LMWB_VIEWS(X) \
  X(model)            \
  X(lens)             \
  X(neuron)           \
  X(circuits)         \
  X(editing)          \
  X(edges)            \
  X(codes)

#define DECLARE(name) GType lmwb_##name##_view_get_type(void);
LMWB_VIEWS(DECLARE)
#define ENTRY(name) lmwb_##name##_view_get_type,
static GType (*const view_types[])(void) = {LMWB_VIEWS(ENTRY)};

guint lmwb_views_count(void) { return G_N_ELEMENTS(view_types); }

GType lmwb_views_type(guint i) { return i < G_N_ELEMENTS(view_types) ? view_types[i]() : G_TYPE_INVALID; }
