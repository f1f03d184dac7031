/* The registry of the workbench's views (lmwb-views.c): their types in switcher order, the
 * first is Alt+1. Each type implements LmwbView (lmwb-view.h). */
#pragma once
#include <glib-object.h>

guint lmwb_views_count(void);
GType lmwb_views_type(guint i);
