#include "ui/desktop/lmwb-app.h"
#include "app/engine/model.h"
#include "ui/desktop/lmwb-job.h"
#include "ui/desktop/lmwb-script.h"
#include "ui/desktop/lmwb-window.h"

struct _LmwbApp {
  GtkApplication parent;
  char *model_dir;
  char *script;
  int script_status;
};

G_DEFINE_FINAL_TYPE(LmwbApp, lmwb_app, GTK_TYPE_APPLICATION)

const char *lmwb_app_default_model_dir(void) {
  return lmwb_model_default_dir(LMWB_BUILTIN_MODEL_DIR, LMWB_INSTALLED_MODEL_DIR);
}

char *lmwb_app_default_monitor(void) {
  g_autofree char *path = g_build_filename(LMWB_BUILTIN_MODEL_DIR, "..", "..", "monitor", "brown-50.txt", NULL);
  return g_canonicalize_filename(path, NULL);
}

static void act_quit(GSimpleAction *a, GVariant *p, gpointer user) {
  /* a copy: destroying a window removes it from the application's own list */
  GList *wins = g_list_copy(gtk_application_get_windows(GTK_APPLICATION(user)));
  for (GList *l = wins; l; l = l->next) gtk_window_destroy(l->data);
  g_list_free(wins);
  g_application_quit(G_APPLICATION(user));
}

static void act_about(GSimpleAction *a, GVariant *p, gpointer user) {
  static const char *authors[] = {"LM Workbench contributors", NULL};
  gtk_show_about_dialog(gtk_application_get_active_window(GTK_APPLICATION(user)), "program-name", "LM Workbench",
                        "logo-icon-name", "org.lmwb.Workbench", "version", LMWB_VERSION, "comments",
                        "Look inside transformer language models: logit lens, neuron decoding and clamping.",
                        "license-type", GTK_LICENSE_MIT_X11, "authors", authors, NULL);
}

static void act_dark(GSimpleAction *a, GVariant *p, gpointer user) {
  gboolean on = !g_variant_get_boolean(g_action_get_state(G_ACTION(a)));
  g_simple_action_set_state(a, g_variant_new_boolean(on));
  g_object_set(gtk_settings_get_default(), "gtk-application-prefer-dark-theme", on, NULL);
}

static const GActionEntry app_actions[] = {
  {"quit", act_quit}, {"about", act_about}, {"dark", act_dark, NULL, "false"},
};

static void startup(GApplication *app) {
  G_APPLICATION_CLASS(lmwb_app_parent_class)->startup(app);
  g_action_map_add_action_entries(G_ACTION_MAP(app), app_actions, G_N_ELEMENTS(app_actions), app);
  /* Keyboard shortcuts are the window's: it sets them with its views' (lmwb-window.c). */
  GtkCssProvider *css = gtk_css_provider_new();
  gtk_css_provider_load_from_resource(css, "/org/lmwb/Workbench/style.css");
  gtk_style_context_add_provider_for_display(gdk_display_get_default(), GTK_STYLE_PROVIDER(css),
                                             GTK_STYLE_PROVIDER_PRIORITY_APPLICATION);
  g_object_unref(css);
  gtk_window_set_default_icon_name("org.lmwb.Workbench");
}

static void shutdown(GApplication *app) {
  lmwb_job_shutdown(); /* a worker must not run into the libraries' teardown at exit */
  G_APPLICATION_CLASS(lmwb_app_parent_class)->shutdown(app);
}

static void activate(GApplication *app) {
  LmwbApp *self = LMWB_APP(app);
  GtkWindow *active = gtk_application_get_active_window(GTK_APPLICATION(app));
  if (active) {
    gtk_window_present(active);
    return;
  }
  LmwbWindow *w = lmwb_window_new(GTK_APPLICATION(app));
  lmwb_window_refresh_recent(w);
  gtk_window_present(GTK_WINDOW(w));
  const char *dir = self->model_dir ? self->model_dir : lmwb_app_default_model_dir();
  if (g_file_test(dir, G_FILE_TEST_IS_DIR)) {
    lmwb_window_open_model(w, dir);
  } else {
    g_autofree char *msg = g_strdup_printf(
        "The built-in model is not at %s. Open a Hugging Face model folder with Open… (Ctrl+O).", dir);
    lmwb_window_show_error(w, msg);
  }
  if (self->script) {
    GError *err = NULL;
    if (!lmwb_script_run(self->script, w, &self->script_status, &err)) {
      g_printerr("lmwb: %s\n", err->message);
      g_error_free(err);
      self->script_status = 2;
      g_application_quit(app);
    }
  }
}

static void finalize(GObject *o) {
  LmwbApp *self = LMWB_APP(o);
  g_free(self->model_dir);
  g_free(self->script);
  G_OBJECT_CLASS(lmwb_app_parent_class)->finalize(o);
}

static void lmwb_app_class_init(LmwbAppClass *k) {
  G_OBJECT_CLASS(k)->finalize = finalize;
  G_APPLICATION_CLASS(k)->startup = startup;
  G_APPLICATION_CLASS(k)->shutdown = shutdown;
  G_APPLICATION_CLASS(k)->activate = activate;
}

static void lmwb_app_init(LmwbApp *self) {}

LmwbApp *lmwb_app_new(const char *model_dir, const char *script) {
  /* Non-unique: a test or a second window on another model must not be routed to a running one. */
  LmwbApp *app = g_object_new(LMWB_TYPE_APP, "application-id", "org.lmwb.Workbench", "flags",
                              G_APPLICATION_NON_UNIQUE, NULL);
  app->model_dir = g_strdup(model_dir);
  app->script = g_strdup(script);
  return app;
}

int lmwb_app_script_status(LmwbApp *app) { return app->script_status; }
