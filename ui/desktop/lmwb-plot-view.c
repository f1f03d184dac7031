#include "ui/desktop/lmwb-plot-view.h"

struct _LmwbPlotView {
  GtkDrawingArea parent;
  LmwbPlot *plot;
  guint generation;       /* bumped by every set_plot */
  guint drawn_generation; /* what the last draw showed: this plot… */
  guint64 drawn_version;  /* …at this version */
  gint64 drawn_at; /* monotonic µs of the last draw */
  gboolean dark;
  LmwbPlotTooltipFunc tip_fn;
  gpointer tip_user;
  GtkWidget *menu;
};

G_DEFINE_FINAL_TYPE(LmwbPlotView, lmwb_plot_view, GTK_TYPE_DRAWING_AREA)

/* Dark theme = light foreground text; this follows both the app setting and the theme itself. */
static gboolean theme_is_dark(GtkWidget *w) {
  GdkRGBA fg;
  G_GNUC_BEGIN_IGNORE_DEPRECATIONS
  gtk_style_context_get_color(gtk_widget_get_style_context(w), &fg);
  G_GNUC_END_IGNORE_DEPRECATIONS
  return 0.299 * fg.red + 0.587 * fg.green + 0.114 * fg.blue > 0.5;
}

static void draw(GtkDrawingArea *area, cairo_t *cr, int w, int h, gpointer user) {
  LmwbPlotView *v = LMWB_PLOT_VIEW(area);
  v->drawn_generation = v->generation;
  if (!v->plot) return;
  gboolean dark = theme_is_dark(GTK_WIDGET(v));
  if (dark != v->dark) {
    v->dark = dark;
    lmwb_plot_set_dark(v->plot, dark);
  }
  v->drawn_version = lmwb_plot_version(v->plot);
  v->drawn_at = g_get_monotonic_time();
  lmwb_plot_draw(v->plot, cr, w, h);
}

static gboolean tick(GtkWidget *w, GdkFrameClock *clock, gpointer user) {
  LmwbPlotView *v = LMWB_PLOT_VIEW(w);
  /* Streamed points redraw at most ~12 times a second: a long series must not eat the main loop. */
  if (v->plot && lmwb_plot_version(v->plot) != v->drawn_version &&
      gdk_frame_clock_get_frame_time(clock) - v->drawn_at >= 80000)
    gtk_widget_queue_draw(w);
  return G_SOURCE_CONTINUE;
}

static gboolean query_tooltip(GtkWidget *w, int x, int y, gboolean kb, GtkTooltip *tip, gpointer user) {
  LmwbPlotView *v = LMWB_PLOT_VIEW(w);
  LmwbPlotHit hit;
  if (!v->plot || !lmwb_plot_hit(v->plot, gtk_widget_get_width(w), gtk_widget_get_height(w), x, y, &hit))
    return FALSE;
  char *text = v->tip_fn ? v->tip_fn(v->plot, &hit, v->tip_user) : NULL;
  if (!text) text = lmwb_plot_hit_describe(v->plot, &hit);
  if (!text) return FALSE;
  gtk_tooltip_set_text(tip, text);
  g_free(text);
  return TRUE;
}

static void css_changed(GtkWidget *w, GtkCssStyleChange *change) {
  GTK_WIDGET_CLASS(lmwb_plot_view_parent_class)->css_changed(w, change);
  gtk_widget_queue_draw(w);
}

gboolean lmwb_plot_view_export(LmwbPlotView *v, const char *path, GError **error) {
  if (!v->plot) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "nothing to export: the plot is empty");
    return FALSE;
  }
  int w = MAX(gtk_widget_get_width(GTK_WIDGET(v)), 480), h = MAX(gtk_widget_get_height(GTK_WIDGET(v)), 320);
  return lmwb_plot_save(v->plot, path, w, h, error);
}

static void export_response(GtkNativeDialog *dlg, int response, gpointer user) {
  LmwbPlotView *v = user;
  if (response == GTK_RESPONSE_ACCEPT) {
    g_autoptr(GFile) f = gtk_file_chooser_get_file(GTK_FILE_CHOOSER(dlg));
    g_autofree char *path = f ? g_file_get_path(f) : NULL;
    GError *err = NULL;
    if (path && !lmwb_plot_view_export(v, path, &err)) {
      /* The window's banner shows errors; a plot view only knows its root. */
      GtkRoot *root = gtk_widget_get_root(GTK_WIDGET(v));
      if (root) gtk_widget_activate_action(GTK_WIDGET(root), "win.show-error", "s", err->message);
      g_error_free(err);
    }
  }
  g_object_unref(dlg);
  g_object_unref(v);
}

void lmwb_plot_view_export_dialog(LmwbPlotView *v) {
  GtkRoot *root = gtk_widget_get_root(GTK_WIDGET(v));
  GtkFileChooserNative *dlg = gtk_file_chooser_native_new("Export plot", GTK_IS_WINDOW(root) ? GTK_WINDOW(root) : NULL,
                                                          GTK_FILE_CHOOSER_ACTION_SAVE, "_Export", "_Cancel");
  GtkFileFilter *png = gtk_file_filter_new();
  gtk_file_filter_set_name(png, "PNG image");
  gtk_file_filter_add_suffix(png, "png");
  GtkFileFilter *svg = gtk_file_filter_new();
  gtk_file_filter_set_name(svg, "SVG image");
  gtk_file_filter_add_suffix(svg, "svg");
  gtk_file_chooser_add_filter(GTK_FILE_CHOOSER(dlg), png);
  gtk_file_chooser_add_filter(GTK_FILE_CHOOSER(dlg), svg);
  gtk_file_chooser_set_current_name(GTK_FILE_CHOOSER(dlg), "plot.png");
  g_signal_connect(dlg, "response", G_CALLBACK(export_response), g_object_ref(v));
  gtk_native_dialog_show(GTK_NATIVE_DIALOG(dlg));
}

static void action_export(GtkWidget *w, const char *name, GVariant *param) {
  lmwb_plot_view_export_dialog(LMWB_PLOT_VIEW(w));
}

static void on_right_click(GtkGestureClick *g, int n, double x, double y, gpointer user) {
  LmwbPlotView *v = user;
  gtk_popover_set_pointing_to(GTK_POPOVER(v->menu), &(GdkRectangle){(int)x, (int)y, 1, 1});
  gtk_popover_popup(GTK_POPOVER(v->menu));
}

static void lmwb_plot_view_init(LmwbPlotView *v) {
  gtk_drawing_area_set_draw_func(GTK_DRAWING_AREA(v), draw, NULL, NULL);
  gtk_widget_set_has_tooltip(GTK_WIDGET(v), TRUE);
  gtk_widget_set_hexpand(GTK_WIDGET(v), TRUE);
  gtk_widget_set_vexpand(GTK_WIDGET(v), TRUE);
  gtk_drawing_area_set_content_width(GTK_DRAWING_AREA(v), 200);
  gtk_drawing_area_set_content_height(GTK_DRAWING_AREA(v), 160);
  g_signal_connect(v, "query-tooltip", G_CALLBACK(query_tooltip), NULL);
  gtk_widget_add_tick_callback(GTK_WIDGET(v), tick, NULL, NULL);
  GMenu *menu = g_menu_new();
  g_menu_append(menu, "Export as PNG or SVG…", "plot.export");
  v->menu = gtk_popover_menu_new_from_model(G_MENU_MODEL(menu));
  g_object_unref(menu);
  gtk_widget_set_parent(v->menu, GTK_WIDGET(v));
  GtkGesture *click = gtk_gesture_click_new();
  gtk_gesture_single_set_button(GTK_GESTURE_SINGLE(click), GDK_BUTTON_SECONDARY);
  g_signal_connect(click, "pressed", G_CALLBACK(on_right_click), v);
  gtk_widget_add_controller(GTK_WIDGET(v), GTK_EVENT_CONTROLLER(click));
}

static void dispose(GObject *o) {
  LmwbPlotView *v = LMWB_PLOT_VIEW(o);
  g_clear_pointer(&v->menu, gtk_widget_unparent);
  G_OBJECT_CLASS(lmwb_plot_view_parent_class)->dispose(o);
}

static void finalize(GObject *o) {
  LmwbPlotView *v = LMWB_PLOT_VIEW(o);
  g_clear_pointer(&v->plot, lmwb_plot_free);
  G_OBJECT_CLASS(lmwb_plot_view_parent_class)->finalize(o);
}

static void size_allocate(GtkWidget *w, int width, int height, int baseline) {
  GTK_WIDGET_CLASS(lmwb_plot_view_parent_class)->size_allocate(w, width, height, baseline);
  gtk_popover_present(GTK_POPOVER(LMWB_PLOT_VIEW(w)->menu));
}

static void lmwb_plot_view_class_init(LmwbPlotViewClass *k) {
  G_OBJECT_CLASS(k)->dispose = dispose;
  G_OBJECT_CLASS(k)->finalize = finalize;
  GTK_WIDGET_CLASS(k)->css_changed = css_changed;
  GTK_WIDGET_CLASS(k)->size_allocate = size_allocate;
  gtk_widget_class_install_action(GTK_WIDGET_CLASS(k), "plot.export", NULL, action_export);
  gtk_widget_class_set_css_name(GTK_WIDGET_CLASS(k), "plotview");
}

GtkWidget *lmwb_plot_view_new(void) { return g_object_new(LMWB_TYPE_PLOT_VIEW, NULL); }

void lmwb_plot_view_set_plot(LmwbPlotView *v, LmwbPlot *plot) {
  if (v->plot == plot) return;
  g_clear_pointer(&v->plot, lmwb_plot_free);
  v->plot = plot;
  v->generation++;
  v->dark = FALSE;
  if (plot) {
    v->dark = theme_is_dark(GTK_WIDGET(v));
    lmwb_plot_set_dark(plot, v->dark);
  }
  gtk_widget_queue_draw(GTK_WIDGET(v));
}

LmwbPlot *lmwb_plot_view_get_plot(LmwbPlotView *v) { return v->plot; }

gboolean lmwb_plot_view_is_drawn(LmwbPlotView *v) {
  GtkWidget *w = GTK_WIDGET(v);
  if (!gtk_widget_get_mapped(w) || gtk_widget_get_width(w) <= 0 || gtk_widget_get_height(w) <= 0) return TRUE;
  if (v->drawn_generation != v->generation) return FALSE;
  return !v->plot || lmwb_plot_version(v->plot) == v->drawn_version;
}

void lmwb_plot_view_set_tooltip_func(LmwbPlotView *v, LmwbPlotTooltipFunc fn, gpointer user) {
  v->tip_fn = fn;
  v->tip_user = user;
}
