#include "ui/desktop/lmwb-script.h"
#include "app/core/inputs.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS 20
#define READY_TIMEOUT_S 120

typedef struct {
  char **lines;
  int n, next;
  LmwbWindow *win;
  int *status;
  /* wait-ready */
  gulong ready_id;
  guint ready_timeout_id;
  int ready_secs;
  /* ticks */
  guint tick_id;
  gint64 tick_start, tick_last, tick_max_gap;
  int ticks;
} Script;

static void step(Script *s);

static gboolean step_cb(gpointer p) {
  step(p);
  return G_SOURCE_REMOVE;
}

static void next_soon(Script *s) { g_idle_add(step_cb, s); }

static void fail(Script *s, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void fail(Script *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  printf("script: line %d: %s\n", s->next, msg);
  fflush(stdout);
  *s->status = 1;
}

static gboolean tick(gpointer p) {
  Script *s = p;
  gint64 now = g_get_monotonic_time();
  s->tick_max_gap = MAX(s->tick_max_gap, now - s->tick_last);
  s->tick_last = now;
  s->ticks++;
  return G_SOURCE_CONTINUE;
}

static void stop_waiting(Script *s) {
  g_clear_signal_handler(&s->ready_id, s->win);
  g_clear_handle_id(&s->ready_timeout_id, g_source_remove);
}

static void quit(Script *s) {
  GApplication *app = G_APPLICATION(gtk_window_get_application(GTK_WINDOW(s->win)));
  g_action_group_activate_action(G_ACTION_GROUP(app), "quit", NULL);
}

static void on_ready(LmwbWindow *w, gpointer p) {
  Script *s = p;
  stop_waiting(s);
  /* The X server has everything the frame sent before a screenshot asks it. */
  gdk_display_sync(gtk_widget_get_display(GTK_WIDGET(w)));
  next_soon(s);
}

static gboolean ready_timeout(gpointer p) {
  Script *s = p;
  s->ready_timeout_id = 0;
  stop_waiting(s);
  g_autofree char *why = lmwb_window_not_ready(s->win);
  fail(s, "wait-ready: not ready after %d s: %s", s->ready_secs, why ? why : "no frame was painted");
  g_autofree char *d = lmwb_window_describe(s->win);
  printf("--- dump\n%s--- end\n", d);
  fflush(stdout);
  quit(s);
  return G_SOURCE_REMOVE;
}

static void wait_ready(Script *s, int secs) {
  s->ready_secs = secs > 0 ? secs : READY_TIMEOUT_S;
  s->ready_id = g_signal_connect(s->win, "ready", G_CALLBACK(on_ready), s);
  s->ready_timeout_id = g_timeout_add_seconds(s->ready_secs, ready_timeout, s);
  gtk_widget_queue_draw(GTK_WIDGET(s->win)); /* a frame soon: a window that is ready now says so */
}

static void shot_done(GObject *src, GAsyncResult *res, gpointer p) {
  Script *s = p;
  GError *err = NULL;
  if (!g_subprocess_wait_check_finish(G_SUBPROCESS(src), res, &err)) {
    fail(s, "shot: %s", err->message);
    g_error_free(err);
  }
  next_soon(s);
}

static void do_action(Script *s, const char *arg) {
  g_auto(GStrv) parts = g_strsplit(arg, " ", 2);
  const char *name = parts[0];
  GVariant *param = NULL;
  if (parts[0] && parts[1] && *parts[1]) {
    GError *err = NULL;
    param = g_variant_parse(NULL, parts[1], NULL, NULL, &err);
    if (!param) {
      fail(s, "action %s: bad parameter %s: %s", name, parts[1], err->message);
      g_error_free(err);
      return;
    }
  }
  /* app.* from the application, win.* and the views' actions (neurons.clamp) from the window. */
  const char *dot = strchr(name ? name : "", '.');
  gboolean found = FALSE;
  if (dot && !strncmp(name, "app.", 4)) {
    GActionGroup *app = G_ACTION_GROUP(gtk_window_get_application(GTK_WINDOW(s->win)));
    found = g_action_group_has_action(app, dot + 1);
    if (found) g_action_group_activate_action(app, dot + 1, param);
  } else if (dot) {
    found = gtk_widget_activate_action_variant(GTK_WIDGET(s->win), name, param);
  }
  if (!found) {
    fail(s, "action %s: no such action", name ? name : "");
    if (param) g_variant_unref(g_variant_ref_sink(param));
  }
}

static void step(Script *s) {
  while (s->next < s->n) {
    char *line = g_strstrip(s->lines[s->next++]);
    if (!line || !*line || line[0] == '#') continue;
    char *arg = strchr(line, ' ');
    if (arg) *arg++ = 0;
    else arg = "";
    printf("script: %s %s\n", line, arg);
    fflush(stdout);
    if (!strcmp(line, "action")) {
      do_action(s, arg);
      next_soon(s);
      return;
    } else if (!strcmp(line, "wait")) {
      g_timeout_add(MAX(0, atoi(arg)), step_cb, s);
      return;
    } else if (!strcmp(line, "wait-ready") || !strcmp(line, "idle")) {
      wait_ready(s, atoi(arg));
      return;
    } else if (!strcmp(line, "shot")) {
      GError *err = NULL;
      GSubprocess *p = g_subprocess_new(G_SUBPROCESS_FLAGS_NONE, &err, "import", "-window", "root", arg, NULL);
      if (!p) {
        fail(s, "shot: %s", err->message);
        g_error_free(err);
        continue;
      }
      g_subprocess_wait_check_async(p, NULL, shot_done, s);
      g_object_unref(p);
      return;
    } else if (!strcmp(line, "dump")) {
      g_autofree char *d = lmwb_window_describe(s->win);
      printf("--- dump\n%s--- end\n", d);
      fflush(stdout);
    } else if (!strcmp(line, "ticks-start")) {
      s->ticks = 0;
      s->tick_start = s->tick_last = g_get_monotonic_time();
      s->tick_max_gap = 0;
      if (!s->tick_id) s->tick_id = g_timeout_add(TICK_MS, tick, s);
    } else if (!strcmp(line, "ticks-stop")) {
      if (s->tick_id) g_source_remove(s->tick_id);
      s->tick_id = 0;
      double secs = (g_get_monotonic_time() - s->tick_start) / 1e6;
      printf("ticks hz=%.1f max_gap_ms=%.0f n=%d secs=%.2f\n", secs > 0 ? s->ticks / secs : 0.0,
             s->tick_max_gap / 1e3, s->ticks, secs);
      fflush(stdout);
    } else if (!strcmp(line, "quit")) {
      break;
    } else {
      fail(s, "unknown command \"%s\"", line);
    }
  }
  quit(s);
}

gboolean lmwb_script_run(const char *path, LmwbWindow *w, int *status, GError **error) {
  char *text = lmwb_file_read(path, (uint64_t)16 << 20, LMWB_READ_REGULAR, NULL, error);
  if (!text) return FALSE;
  Script *s = g_new0(Script, 1); /* lives until the process exits with the script */
  s->lines = g_strsplit(text, "\n", -1);
  g_free(text);
  s->n = (int)g_strv_length(s->lines);
  s->win = w;
  s->status = status;
  next_soon(s);
  return TRUE;
}
