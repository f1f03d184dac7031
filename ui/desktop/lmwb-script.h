/* Test-only scripted mode (`lmwb --script FILE`): drives the window as a person would, one
 * command per line, on the main loop (so the window keeps drawing between commands):
 *   action NAME [GVARIANT]  activate a GAction: app.*, win.* or a view's (its id as prefix), e.g.
 *                           `action win.set-prompt 'The cat'`, `action neurons.clamp 4.0`
 *   wait-ready [SECONDS]    wait until the window is ready (lmwb_window_is_ready: no job, nothing
 *                           queued, every plot drawn) and has painted a frame so (default 120 s; at
 *                           the timeout the script fails, says why, dumps the window and quits)
 *   idle [SECONDS]          the same as wait-ready
 *   wait MS                 let the main loop run MS milliseconds (for measuring, not for waiting)
 *   shot PATH               screenshot of the whole screen with `import -window root PATH`
 *   dump                    print what the window shows (title, banner, views) to stdout
 *   ticks-start / ticks-stop  count main-loop ticks of a 20 ms timer; stop prints "ticks hz=H max_gap_ms=G"
 *   quit                    close the window and exit with the script's status
 * Lines starting with # are comments. Errors print "script: line N: ..." and set status 1. */
#pragma once
#include "ui/desktop/lmwb-window.h"

gboolean lmwb_script_run(const char *path, LmwbWindow *w, int *status, GError **error);
