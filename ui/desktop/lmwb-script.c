#include "ui/desktop/lmwb-script.h"
#include "ui/desktop/lmwb-job.h"
#include "app/core/inputs.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS 20
#define IDLE_SETTLE_MS 400 /* no job for this long: the clamp's debounce cannot start a new one */

typedef struct {
  char **lines;
  int n, next;
  LmwbWindow *win;
  int *status;
  /* idle */
  gint64 idle_deadline, idle_since;
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

static gboolean idle_poll(gpointer p) {
  Script *s = p;
  gint64 now = g_get_monotonic_time();
  if (lmwb_job_running_count() > 0) s->idle_since = 0;
  else if (!s->idle_since) s->idle_since = now;
  if (s->idle_since && now - s->idle_since >= IDLE_SETTLE_MS * 1000) {
    next_soon(s);
    return G_SOURCE_REMOVE;
  }
  if (now > s->idle_deadline) {
    fail(s, "idle: jobs still running at the timeout");
    next_soon(s);
    return G_SOURCE_REMOVE;
  }
  return G_SOURCE_CONTINUE;
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
  GActionGroup *group = NULL;
  const char *dot = strchr(name ? name : "", '.');
  if (dot && !strncmp(name, "win.", 4)) group = G_ACTION_GROUP(s->win);
  else if (dot && !strncmp(name, "app.", 4)) group = G_ACTION_GROUP(gtk_window_get_application(GTK_WINDOW(s->win)));
  if (!group || !g_action_group_has_action(group, dot + 1)) {
    fail(s, "action %s: no such action", name ? name : "");
    if (param) g_variant_unref(g_variant_ref_sink(param));
    return;
  }
  g_action_group_activate_action(group, dot + 1, param);
}

static void step(Script *s) {
  while (s->next < s->n) {
    char *line = g_strstrip(s->lines[s->next++]);
    if (!*line || line[0] == '#') continue;
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
    } else if (!strcmp(line, "idle")) {
      int secs = *arg ? atoi(arg) : 120;
      s->idle_deadline = g_get_monotonic_time() + (gint64)secs * G_USEC_PER_SEC;
      s->idle_since = 0;
      g_timeout_add(50, idle_poll, s);
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
  GApplication *app = G_APPLICATION(gtk_window_get_application(GTK_WINDOW(s->win)));
  g_action_group_activate_action(G_ACTION_GROUP(app), "quit", NULL);
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
