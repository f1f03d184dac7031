/* Codes view: codebook features (analysis/codebooks.h, codebook_search.h; Tamkin, Taufeeque &
 * Goodman 2023). Choose a codebook set (default: the model folder's codebooks/), and:
 *   - Show codes: the prompt runs with the set spliced in; a grid lists each token's active codes
 *     (the k chosen ids, best first) at every site of the set, for the chosen head of attention
 *     sites. A code is a link: clicking it selects it.
 *   - Search: the codes whose activations match a regex over a text file (default: the Brown
 *     corpus, else the built-in model's sample text), with precision and recall as the paper
 *     defines them; clicking a hit selects it.
 *   - The selected code shows its top contexts in the text (searching builds the text's code cache
 *     once; a click before any search builds it).
 *   - Clamp: the selected code forced on (all k slots, every position, generated ones included);
 *     the greedy continuation regenerates live, shown beside the one without the clamp.
 * Every job runs on a worker with its own runner and its own copy of the set; the text's code
 * cache is shared, immutable once built. lmwb-batch gives the same numbers: `activations --codebooks
 * DIR --hook blocks.L.attn.hook_codes`, `codebook search`, `generate --codebooks DIR --clamp-code`.
 * Actions (codes.*): set-codebooks DIR, choose-codebooks, set-prompt S, show, head H, set-file F,
 * choose-file, set-regex R, set-tokens N, search, select 'L:SITE[:HEAD]=CODE', select-hit I,
 * click 'POS,COLUMN,SLOT' (a code of the grid), clamp true|false, set-new-tokens N. */
#include "ui/desktop/lmwb-view.h"
#include "analysis/codebook_search.h"
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/engine/generate.h"
#include "app/formats/tokenizer.h"
#include "ui/desktop/lmwb-circuits-jobs.h"
#include "ui/desktop/lmwb-job.h"
#include <stdio.h>
#include <string.h>

#define DEFAULT_TEXT_TOKENS 20000 /* text tokens cached for search (lmwb-batch: --tokens) */
#define DEFAULT_NEW_TOKENS 16     /* greedy continuation */
#define SEARCH_CONTEXT 64         /* window length, as lmwb-batch codebook search: min(64, n_ctx) */
#define CONTEXTS 8                /* top contexts shown for a code */
#define CONTEXT_BEFORE 8          /* tokens around each, as lmwb-batch codebook search */
#define CONTEXT_AFTER 3

#define LMWB_TYPE_CODES_VIEW (lmwb_codes_view_get_type())
G_DECLARE_FINAL_TYPE(LmwbCodesView, lmwb_codes_view, LMWB, CODES_VIEW, GtkBox)

/* A code: (layer, site, head) names one codebook (head -1 for mlp), code its row. */
typedef struct {
  int layer;
  LmwbCodebookSite site;
  int head;
  int code;
} CodeRef;

static char *code_spec(const CodeRef *c) {
  return c->site == LMWB_CODEBOOK_ATTN ? g_strdup_printf("%d:attn:%d=%d", c->layer, c->head, c->code)
                                       : g_strdup_printf("%d:mlp=%d", c->layer, c->code);
}

/* ---- shared: a text's code cache ------------------------------------------------------------- */

typedef struct {
  gint refs;
  LmwbCodebooks *cb; /* the cache borrows it */
  LmwbCodeCache *cache;
  char *cb_dir, *file;
  gint64 tokens;
  LmwbModel *model;
} TextCodes;

static TextCodes *text_codes_ref(TextCodes *t) {
  g_atomic_int_inc(&t->refs);
  return t;
}

static void text_codes_unref(gpointer p) {
  TextCodes *t = p;
  if (!t || !g_atomic_int_dec_and_test(&t->refs)) return;
  lmwb_code_cache_free(t->cache);
  lmwb_codebooks_free(t->cb);
  g_free(t->cb_dir);
  g_free(t->file);
  lmwb_model_unref(t->model);
  g_free(t);
}

/* ---- jobs (worker side: no GTK) -------------------------------------------------------------- */

static LmwbCodebooks *load_set(LmwbModel *m, const char *dir, GError **error) {
  if (!dir || !*dir) {
    lmwb_input_error(error, "choose a codebook set folder (codebooks.json + codebooks.safetensors)");
    return NULL;
  }
  LmwbCodebooks *cb = lmwb_codebooks_load(dir, &m->cfg, error);
  if (!cb && !strstr((*error)->message, dir)) g_prefix_error(error, "codebook set %s: ", dir);
  else if (!cb) g_prefix_error(error, "codebook set: ");
  return cb;
}

static gboolean has_tokenizer(LmwbModel *m, GError **error) {
  if (m->tokenizer) return TRUE;
  lmwb_input_error(error, "%s has no tokenizer to read text with", m->dir ? m->dir : "the model");
  return FALSE;
}

static int32_t *encode_prompt(LmwbModel *m, const char *prompt, int *n, GError **error) {
  if (!has_tokenizer(m, error)) return NULL;
  size_t k = 0;
  int32_t *ids = *prompt ? lmwb_tokenizer_encode(m->tokenizer, prompt, strlen(prompt), TRUE, &k, error) : NULL;
  if (*prompt && !ids) return NULL;
  if (k == 0) {
    g_free(ids);
    lmwb_input_error(error, "the prompt is empty: type one to see its codes");
    return NULL;
  }
  if (k > (size_t)m->cfg.n_ctx) {
    g_free(ids);
    lmwb_input_error(error, "the prompt has %zu tokens, more than the model's context of %d", k, m->cfg.n_ctx);
    return NULL;
  }
  *n = (int)k;
  return ids;
}

/* Show codes: the prompt's code ids at every site of the set. */
typedef struct {
  LmwbModel *model;
  char *cb_dir, *prompt;
} PromptIn;

static void prompt_in_free(gpointer p) {
  PromptIn *in = p;
  lmwb_model_unref(in->model);
  g_free(in->cb_dir);
  g_free(in->prompt);
  g_free(in);
}

typedef struct {
  char *cb_dir;
  int k, num_codes, n_books, n_heads;
  int *layer, *groups;
  LmwbCodebookSite *site;
  int n;          /* prompt tokens (0: the set was only loaded) */
  char **texts;   /* [n] display texts */
  int32_t **ids;  /* per book [n, groups, k] */
} PromptOut;

static void prompt_out_free(gpointer p) {
  PromptOut *o = p;
  if (!o) return;
  for (int b = 0; b < o->n_books; b++) g_free(o->ids ? o->ids[b] : NULL);
  g_free(o->ids);
  if (o->texts) g_strfreev(o->texts);
  g_free(o->layer);
  g_free(o->groups);
  g_free(o->site);
  g_free(o->cb_dir);
  g_free(o);
}

static gpointer run_prompt(gpointer data, LmwbReporter *rep, GError **error) {
  PromptIn *in = data;
  LmwbModel *m = in->model;
  LmwbCodebooks *cb = load_set(m, in->cb_dir, error);
  if (!cb) return NULL;
  PromptOut *o = g_new0(PromptOut, 1);
  o->cb_dir = g_strdup(in->cb_dir);
  o->k = cb->k, o->num_codes = cb->num_codes, o->n_books = cb->n, o->n_heads = m->cfg.n_head;
  o->layer = g_new(int, cb->n), o->groups = g_new(int, cb->n), o->site = g_new(LmwbCodebookSite, cb->n);
  o->ids = g_new0(int32_t *, cb->n);
  for (int b = 0; b < cb->n; b++) o->layer[b] = cb->books[b].layer, o->site[b] = cb->books[b].site, o->groups[b] = cb->books[b].groups;
  int n = 0;
  g_autofree int32_t *ids = *in->prompt ? encode_prompt(m, in->prompt, &n, error) : NULL;
  if (*in->prompt && !ids) goto fail;
  if (n > 0) {
    lmwb_report_progress(rep, 0.2, "running the prompt with the codebooks");
    LmwbRunner *r = lmwb_runner_new(m);
    LmwbCodebookRun *run = lmwb_codebooks_attach(r, cb, error);
    gboolean ok = run && lmwb_runner_forward(r, ids, 1, n, NULL, error);
    for (int b = 0; ok && b < cb->n; b++) {
      int64_t shape[4];
      int nd = 0;
      const int32_t *c = lmwb_codebook_run_codes(run, cb->books[b].layer, cb->books[b].site, shape, &nd, error);
      if (!c) {
        ok = FALSE;
        break;
      }
      size_t count = (size_t)n * cb->books[b].groups * cb->k;
      o->ids[b] = g_memdup2(c, count * sizeof(int32_t));
    }
    lmwb_codebooks_detach(r, run);
    lmwb_runner_free(r);
    if (!ok) goto fail;
    o->n = n;
    o->texts = g_new0(char *, n + 1);
    for (int t = 0; t < n; t++) {
      g_autofree char *tt = lmwb_tokenizer_token_text(m->tokenizer, ids[t]);
      o->texts[t] = lmwb_token_display(tt ? tt : "?");
    }
  }
  lmwb_codebooks_free(cb);
  return o;
fail:
  lmwb_codebooks_free(cb);
  prompt_out_free(o);
  return NULL;
}

/* Search and contexts: builds the text's code cache unless given one, then searches the regex
 * and/or lists the code's contexts. */
typedef struct {
  LmwbModel *model;
  char *cb_dir, *file, *regex;
  gint64 tokens;
  TextCodes *have; /* a cache of the same set, text and size, or NULL */
  gboolean want_code;
  CodeRef code;
} SearchIn;

static void search_in_free(gpointer p) {
  SearchIn *in = p;
  lmwb_model_unref(in->model);
  g_free(in->cb_dir);
  g_free(in->file);
  g_free(in->regex);
  if (in->have) text_codes_unref(in->have);
  g_free(in);
}

typedef struct {
  TextCodes *text;
  char *regex;          /* NULL: no search ran */
  int64_t n_marked;
  LmwbCodeHit *hits;
  int n_hits;
  gboolean has_code;
  CodeRef code;
  int64_t activations;  /* of the code in the text */
  char **contexts;      /* NULL-terminated */
} SearchOut;

static void search_out_free(gpointer p) {
  SearchOut *o = p;
  if (!o) return;
  if (o->text) text_codes_unref(o->text);
  g_free(o->regex);
  g_free(o->hits);
  if (o->contexts) g_strfreev(o->contexts);
  g_free(o);
}

static TextCodes *build_text_codes(const SearchIn *in, LmwbReporter *rep, GError **error) {
  LmwbModel *m = in->model;
  if (!in->file || !*in->file) {
    lmwb_input_error(error, "choose a text file to search");
    return NULL;
  }
  if (!has_tokenizer(m, error)) return NULL;
  LmwbCodebooks *cb = load_set(m, in->cb_dir, error);
  if (!cb) return NULL;
  lmwb_report_progress(rep, 0, "reading the text");
  size_t len = 0;
  g_autofree char *text = lmwb_file_read(in->file, LMWB_TEXT_MAX_BYTES, LMWB_READ_STREAM, &len, error);
  if (text && !g_utf8_validate(text, (gssize)len, NULL)) {
    lmwb_input_error(error, "%s is not valid UTF-8 text", in->file);
    g_clear_pointer(&text, g_free);
  }
  size_t n = 0;
  g_autofree int32_t *ids = text && *text ? lmwb_tokenizer_encode(m->tokenizer, text, strlen(text), FALSE, &n, error) : NULL;
  if (text && !*text) lmwb_input_error(error, "%s holds no text", in->file);
  if (!ids) {
    lmwb_codebooks_free(cb);
    return NULL;
  }
  LmwbCodeCache *cache = lmwb_code_cache_build(m, cb, ids, n, MIN(SEARCH_CONTEXT, m->cfg.n_ctx), in->tokens, rep, error);
  if (!cache) {
    lmwb_codebooks_free(cb);
    return NULL;
  }
  TextCodes *t = g_new0(TextCodes, 1);
  t->refs = 1;
  t->cb = cb;
  t->cache = cache;
  t->cb_dir = g_strdup(in->cb_dir);
  t->file = g_strdup(in->file);
  t->tokens = in->tokens;
  t->model = lmwb_model_ref(m);
  return t;
}

static gpointer run_search(gpointer data, LmwbReporter *rep, GError **error) {
  SearchIn *in = data;
  TextCodes *t = in->have ? text_codes_ref(in->have) : build_text_codes(in, rep, error);
  if (!t) return NULL;
  SearchOut *o = g_new0(SearchOut, 1);
  o->text = t;
  const LmwbCodeCache *c = t->cache;
  if (in->regex) {
    g_autofree int64_t *marked = lmwb_code_cache_match(c, in->regex, &o->n_marked, error);
    if (!marked) {
      search_out_free(o);
      return NULL;
    }
    LmwbCodeSearchOptions so = {0}; /* the paper's: top 5 per codebook, precision > 0.5, recall > 0.01 */
    o->hits = lmwb_code_search(c, marked, o->n_marked, &so, &o->n_hits);
    o->regex = g_strdup(in->regex);
  }
  if (in->want_code) {
    const LmwbCodebook *book = lmwb_codebooks_find(t->cb, in->code.layer, in->code.site);
    if (!book || in->code.code >= t->cb->num_codes) {
      lmwb_input_error(error, "the set has no code %d at layer %d %s", in->code.code, in->code.layer,
                       lmwb_codebook_site_name(in->code.site));
      search_out_free(o);
      return NULL;
    }
    int bi = (int)(book - t->cb->books), g = MAX(in->code.head, 0);
    o->has_code = TRUE;
    o->code = in->code;
    o->activations = c->active[bi][(size_t)g * t->cb->num_codes + in->code.code];
    int n = 0;
    g_autofree int64_t *occ = lmwb_code_cache_occurrences(c, bi, g, in->code.code, CONTEXTS, &n);
    o->contexts = g_new0(char *, n + 1);
    for (int i = 0; i < n; i++) o->contexts[i] = lmwb_code_cache_context(c, occ[i], CONTEXT_BEFORE, CONTEXT_AFTER);
  }
  return o;
}

/* Clamp: the greedy continuation with the set spliced in, without and with the code forced on. */
typedef struct {
  LmwbModel *model;
  char *cb_dir, *prompt;
  CodeRef code;
  int new_tokens;
} GenIn;

static void gen_in_free(gpointer p) {
  GenIn *in = p;
  lmwb_model_unref(in->model);
  g_free(in->cb_dir);
  g_free(in->prompt);
  g_free(in);
}

typedef struct {
  char *before, *after, *clamp;
} GenOut;

static void gen_out_free(gpointer p) {
  GenOut *o = p;
  if (!o) return;
  g_free(o->before);
  g_free(o->after);
  g_free(o->clamp);
  g_free(o);
}

static char *generate(LmwbRunner *r, const int32_t *ids, int n, int new_tokens, LmwbReporter *rep, GError **error) {
  LmwbModel *m = lmwb_runner_model(r);
  LmwbGenerateOptions go;
  lmwb_generate_options_init(&go);
  go.max_tokens = new_tokens;
  go.temperature = 0; /* greedy, as lmwb-batch generate's default */
  go.stop_at_eos = true;
  int n_out = 0;
  g_autofree int32_t *out = lmwb_generate(r, ids, n, &go, &n_out, NULL, rep, error);
  return out ? lmwb_tokenizer_decode(m->tokenizer, out, n_out, TRUE, NULL) : NULL;
}

static gpointer run_generate(gpointer data, LmwbReporter *rep, GError **error) {
  GenIn *in = data;
  LmwbModel *m = in->model;
  int n = 0;
  g_autofree int32_t *ids = encode_prompt(m, in->prompt, &n, error);
  if (!ids) return NULL;
  int new_tokens = MIN(in->new_tokens, m->cfg.n_ctx - n);
  if (new_tokens <= 0) {
    lmwb_input_error(error, "the prompt fills the model's context of %d tokens: nothing to generate", m->cfg.n_ctx);
    return NULL;
  }
  LmwbCodebooks *cb = load_set(m, in->cb_dir, error);
  if (!cb) return NULL;
  GenOut *o = g_new0(GenOut, 1);
  o->clamp = code_spec(&in->code);
  LmwbRunner *r = lmwb_runner_new(m);
  LmwbCodebookRun *run = lmwb_codebooks_attach(r, cb, error);
  LmwbCodeClamp c = {.layer = in->code.layer, .site = in->code.site, .head = in->code.head, .code = in->code.code,
                     .slot = -1};
  gboolean ok = run != NULL;
  if (ok) {
    lmwb_report_progress(rep, 0.1, "continuation without the clamp");
    ok = (o->before = generate(r, ids, n, new_tokens, rep, error)) != NULL;
  }
  if (ok) {
    lmwb_report_progress(rep, 0.5, "continuation with the code on");
    ok = lmwb_codebook_run_clamp(run, &c, error) && (o->after = generate(r, ids, n, new_tokens, rep, error)) != NULL;
  }
  lmwb_codebooks_detach(r, run);
  lmwb_runner_free(r);
  lmwb_codebooks_free(cb);
  if (!ok) {
    gen_out_free(o);
    return NULL;
  }
  return o;
}

/* ---- the view -------------------------------------------------------------------------------- */

struct _LmwbCodesView {
  GtkBox parent;
  GtkEntry *set_entry, *prompt_entry, *file_entry, *regex_entry;
  GtkAdjustment *head_adj, *tokens_adj, *new_tokens_adj;
  GtkLabel *set_label, *status_label, *search_label, *code_label, *contexts_label, *before_label, *after_label;
  GtkGrid *grid;
  GtkListBox *hits_list;
  GtkToggleButton *clamp_toggle;
  LmwbPlotView *hits_plot;

  LmwbModel *model;
  char *synced_prompt;
  char *shown_key;   /* "set\nprompt" of the last Show codes */
  LmwbJob *prompt_job, *search_job, *gen_job;
  PromptOut *codes;   /* the shown prompt's codes */
  char *codes_prompt; /* the prompt they are of */
  TextCodes *text;    /* the last text cache */
  SearchOut *search;  /* the last search's hits (text unreffed into ->text) */
  gboolean has_selected;
  CodeRef selected;
  gint64 selected_activations;
  char **contexts;
  GenOut *gen;
  gboolean gen_pending; /* regenerate when the running one ends */
};

static void view_iface_init(LmwbViewInterface *iface);

G_DEFINE_FINAL_TYPE_WITH_CODE(LmwbCodesView, lmwb_codes_view, GTK_TYPE_BOX,
                              G_IMPLEMENT_INTERFACE(LMWB_TYPE_VIEW, view_iface_init))

static const char *entry_text(GtkEntry *e) { return gtk_editable_get_text(GTK_EDITABLE(e)); }
static void set_entry_text(GtkEntry *e, const char *t) { gtk_editable_set_text(GTK_EDITABLE(e), t ? t : ""); }

static void show_error(LmwbCodesView *v, const char *what, const char *message) {
  g_autofree char *m = what ? g_strdup_printf("Codes: %s: %s", what, message) : g_strdup_printf("Codes: %s", message);
  gtk_label_set_text(v->status_label, m);
  lmwb_view_show_error(LMWB_VIEW(v), m);
}

static void set_job(LmwbJob **slot, LmwbJob *job) {
  lmwb_job_cancel(*slot);
  *slot = job;
}

static int shown_head(LmwbCodesView *v) { return (int)gtk_adjustment_get_value(v->head_adj); }

/* The book's group for the shown head (attn) or 0 (mlp). */
static int book_group(const PromptOut *o, int b, int head) { return o->site[b] == LMWB_CODEBOOK_ATTN ? MIN(head, o->groups[b] - 1) : 0; }

static CodeRef grid_code(const PromptOut *o, int pos, int b, int slot, int head) {
  int g = book_group(o, b, head);
  CodeRef c = {.layer = o->layer[b], .site = o->site[b], .head = o->site[b] == LMWB_CODEBOOK_ATTN ? g : -1,
               .code = o->ids[b][((size_t)pos * o->groups[b] + g) * o->k + slot]};
  return c;
}

static gboolean same_code(const CodeRef *a, const CodeRef *b) {
  return a->layer == b->layer && a->site == b->site && a->head == b->head && a->code == b->code;
}

static void select_code(LmwbCodesView *v, const CodeRef *c);

static gboolean on_code_link(GtkLabel *l, const char *uri, gpointer user) {
  LmwbCodesView *v = user;
  if (!v->model) return TRUE;
  LmwbCodeClamp cc;
  if (lmwb_code_clamp_parse(&v->model->cfg, uri, &cc, NULL)) {
    CodeRef c = {cc.layer, cc.site, cc.site == LMWB_CODEBOOK_ATTN ? cc.head : -1, cc.code};
    lmwb_code_clamp_clear(&cc);
    select_code(v, &c);
  }
  return TRUE;
}

static GtkWidget *grid_label(const char *text, gboolean heading, float xalign) {
  GtkWidget *l = gtk_label_new(text);
  gtk_label_set_xalign(GTK_LABEL(l), xalign);
  if (heading) gtk_widget_add_css_class(l, "heading");
  return l;
}

/* The grid: a row per token, a column per site of the set (the shown head for attention sites). */
static void fill_grid(LmwbCodesView *v) {
  GtkWidget *child;
  while ((child = gtk_widget_get_first_child(GTK_WIDGET(v->grid)))) gtk_grid_remove(v->grid, child);
  PromptOut *o = v->codes;
  if (!o || o->n == 0) {
    gtk_grid_attach(v->grid, grid_label(o ? "Show codes (Ctrl+K) to see each token's active codes."
                                          : "Choose a codebook set and a prompt, then Show codes (Ctrl+K).",
                                        FALSE, 0),
                    0, 0, 1, 1);
    return;
  }
  int head = shown_head(v);
  gtk_grid_attach(v->grid, grid_label("#", TRUE, 1), 0, 0, 1, 1);
  gtk_grid_attach(v->grid, grid_label("token", TRUE, 0), 1, 0, 1, 1);
  for (int b = 0; b < o->n_books; b++) {
    g_autofree char *h = o->site[b] == LMWB_CODEBOOK_ATTN ? g_strdup_printf("L%d attn head %d", o->layer[b], book_group(o, b, head))
                                                          : g_strdup_printf("L%d mlp", o->layer[b]);
    gtk_grid_attach(v->grid, grid_label(h, TRUE, 0), 2 + b, 0, 1, 1);
  }
  for (int t = 0; t < o->n; t++) {
    g_autofree char *num = g_strdup_printf("%d", t);
    GtkWidget *tl = grid_label(o->texts[t], FALSE, 0);
    gtk_widget_add_css_class(tl, "monospace");
    gtk_grid_attach(v->grid, grid_label(num, FALSE, 1), 0, 1 + t, 1, 1);
    gtk_grid_attach(v->grid, tl, 1, 1 + t, 1, 1);
    for (int b = 0; b < o->n_books; b++) {
      GString *m = g_string_new(NULL);
      for (int s = 0; s < o->k; s++) {
        CodeRef c = grid_code(o, t, b, s, head);
        g_autofree char *spec = code_spec(&c);
        gboolean sel = v->has_selected && same_code(&c, &v->selected);
        /* k codes on two lines (the best first) so that every site's column fits */
        const char *sep = !s ? "" : (o->k > 4 && s == (o->k + 1) / 2) ? "\n" : " ";
        g_string_append_printf(m, "%s<a href=\"%s\" title=\"%s (slot %d)\">%s%d%s</a>", sep, spec, spec, s,
                               sel ? "<b>[" : "", c.code, sel ? "]</b>" : "");
      }
      GtkWidget *l = gtk_label_new(NULL);
      gtk_label_set_markup(GTK_LABEL(l), m->str);
      gtk_label_set_xalign(GTK_LABEL(l), 0);
      gtk_widget_add_css_class(l, "monospace");
      g_signal_connect(l, "activate-link", G_CALLBACK(on_code_link), v);
      gtk_grid_attach(v->grid, l, 2 + b, 1 + t, 1, 1);
      g_string_free(m, TRUE);
    }
  }
}

static void update_set_label(LmwbCodesView *v) {
  PromptOut *o = v->codes;
  if (!o) {
    gtk_label_set_text(v->set_label, "No codebook set loaded.");
    return;
  }
  GString *s = g_string_new(NULL);
  g_string_append_printf(s, "%d sites, %d codes each, k = %d:", o->n_books, o->num_codes, o->k);
  for (int b = 0; b < o->n_books; b++)
    g_string_append_printf(s, "%s L%d %s", b ? "," : "", o->layer[b], lmwb_codebook_site_name(o->site[b]));
  gtk_label_set_text(v->set_label, s->str);
  g_string_free(s, TRUE);
}

static void show_contexts(LmwbCodesView *v) {
  if (!v->has_selected) {
    gtk_label_set_text(v->code_label, "No code selected: click one in the grid or the search results.");
    gtk_label_set_text(v->contexts_label, "");
    return;
  }
  g_autofree char *spec = code_spec(&v->selected);
  g_autofree char *t = g_strdup_printf("Code %s", spec);
  gtk_label_set_text(v->code_label, t);
  if (!v->contexts) {
    gtk_label_set_text(v->contexts_label, "Finding its contexts in the text…");
    return;
  }
  GString *s = g_string_new(NULL);
  g_string_append_printf(s, "Active on %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT " tokens of %s. Top contexts:",
                         v->selected_activations, v->text ? v->text->cache->n_tokens : 0,
                         v->text ? v->text->file : "the text");
  { /* the file name in the markup below */
    g_autofree char *esc = g_markup_escape_text(s->str, -1);
    g_string_assign(s, esc);
  }
  if (!v->contexts[0]) g_string_append(s, "\n(none)");
  for (char **c = v->contexts; *c; c++) {
    g_autofree char *flat = g_strdelimit(g_strdup(*c), "\n\r\t", ' ');
    g_autofree char *d = g_markup_escape_text(flat, -1);
    /* the code's token, between \u00ab and \u00bb (2 bytes each), in bold */
    const char *a = strstr(d, "\u00ab"), *b = a ? strstr(a, "\u00bb") : NULL;
    g_autofree char *marked = a && b ? g_strdup_printf("%.*s<b>%.*s</b>%s", (int)(a - d), d, (int)(b - a - 2), a + 2, b + 2)
                                     : g_strdup(d);
    g_string_append_printf(s, "\n• %s", marked);
  }
  gtk_label_set_markup(v->contexts_label, s->str);
  g_string_free(s, TRUE);
}

static void show_gen(LmwbCodesView *v) {
  gboolean on = gtk_toggle_button_get_active(v->clamp_toggle);
  if (!on || !v->gen) {
    gtk_label_set_text(v->before_label, on ? "Generating…" : "Turn the clamp on to regenerate with the code forced on.");
    gtk_label_set_text(v->after_label, "");
    return;
  }
  g_autofree char *be = g_markup_escape_text(v->gen->before, -1);
  g_autofree char *ae = g_markup_escape_text(v->gen->after, -1);
  g_autofree char *b = g_strdup_printf("<b>Without the clamp:</b> %s", be);
  g_autofree char *a = g_strdup_printf("<b>With %s on:</b> %s", v->gen->clamp, ae);
  gtk_label_set_markup(v->before_label, b);
  gtk_label_set_markup(v->after_label, a);
}

/* ---- starting jobs --------------------------------------------------------------------------- */

static void regenerate(LmwbCodesView *v);

static void prompt_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbCodesView *v = LMWB_CODES_VIEW(owner);
  PromptIn *in = data;
  if (v->prompt_job == job) v->prompt_job = NULL;
  if (in->model != v->model || lmwb_job_cancelled(error)) return;
  if (error) {
    show_error(v, NULL, error->message);
    return;
  }
  prompt_out_free(v->codes);
  v->codes = g_memdup2(result, sizeof(PromptOut));
  memset(result, 0, sizeof(PromptOut));
  g_free(v->codes_prompt);
  v->codes_prompt = g_strdup(in->prompt);
  gtk_adjustment_set_upper(v->head_adj, MAX(v->codes->n_heads - 1, 0));
  update_set_label(v);
  fill_grid(v);
  g_autofree char *t = v->codes->n ? g_strdup_printf("Codes of %d tokens at %d sites.", v->codes->n, v->codes->n_books)
                                   : g_strdup("The codebook set is loaded.");
  gtk_label_set_text(v->status_label, t);
  regenerate(v); /* with the clamp on, the continuation follows the prompt and the set */
}

static void show_codes(LmwbCodesView *v) {
  if (!v->model) return;
  g_free(v->shown_key);
  v->shown_key = g_strdup_printf("%s\n%s", entry_text(v->set_entry), entry_text(v->prompt_entry));
  PromptIn *in = g_new0(PromptIn, 1);
  in->model = lmwb_model_ref(v->model);
  in->cb_dir = g_strdup(entry_text(v->set_entry));
  in->prompt = g_strdup(entry_text(v->prompt_entry));
  gtk_label_set_text(v->status_label, "Running the prompt with the codebooks…");
  LmwbJob *job = lmwb_job_new("Reading the prompt's codes", run_prompt, in, prompt_in_free);
  lmwb_job_on_done(job, prompt_done, prompt_out_free);
  set_job(&v->prompt_job, lmwb_job_start(job, GTK_WIDGET(v)));
}

/* While the view is on the screen, the prompt's codes follow the set and the window's prompt: shown
 * once for each (set, prompt) unless asked again. */
static void auto_show(LmwbCodesView *v) {
  if (!v->model || !gtk_widget_get_mapped(GTK_WIDGET(v)) || !*entry_text(v->set_entry) || !*entry_text(v->prompt_entry))
    return;
  g_autofree char *key = g_strdup_printf("%s\n%s", entry_text(v->set_entry), entry_text(v->prompt_entry));
  if (g_strcmp0(key, v->shown_key)) show_codes(v);
}

/* Precision against recall of every search result, the selected code apart. */
static void plot_hits(LmwbCodesView *v) {
  SearchOut *o = v->search;
  if (!o || !o->regex) {
    lmwb_plot_view_set_plot(v->hits_plot, NULL);
    return;
  }
  g_autofree char *title = g_strdup_printf("codes for /%s/", o->regex);
  LmwbPlot *p = lmwb_plot_new(LMWB_PLOT_SCATTER, title, "recall", "precision");
  int all = lmwb_plot_add_series(p, "codes"), sel = lmwb_plot_add_series(p, "selected");
  for (int i = 0; i < o->n_hits; i++) {
    const LmwbCodeHit *h = &o->hits[i];
    CodeRef c = {h->layer, h->site, h->head, h->code};
    lmwb_plot_append(p, v->has_selected && same_code(&c, &v->selected) ? sel : all, h->recall, h->precision);
  }
  lmwb_plot_set_x_range(p, 0, 1);
  lmwb_plot_set_y_range(p, 0, 1.05);
  lmwb_plot_view_set_plot(v->hits_plot, p);
}

/* The code of a plotted point: the series keep the hits' order. */
static char *hit_tooltip(LmwbPlot *plot, const LmwbPlotHit *hit, gpointer user) {
  LmwbCodesView *v = user;
  SearchOut *o = v->search;
  if (!o || hit->series < 0 || hit->series > 1) return NULL;
  for (int i = 0, k = 0; i < o->n_hits; i++) {
    const LmwbCodeHit *h = &o->hits[i];
    CodeRef c = {h->layer, h->site, h->head, h->code};
    int series = v->has_selected && same_code(&c, &v->selected) ? 1 : 0;
    if (series != hit->series) continue;
    if (series == 1 || k++ == hit->index) {
      g_autofree char *spec = code_spec(&c);
      return g_strdup_printf("%s: precision %.3f, recall %.3f", spec, h->precision, h->recall);
    }
  }
  return NULL;
}

static void fill_hits(LmwbCodesView *v) {
  GtkWidget *child;
  plot_hits(v);
  while ((child = gtk_widget_get_first_child(GTK_WIDGET(v->hits_list)))) gtk_list_box_remove(v->hits_list, child);
  SearchOut *o = v->search;
  if (!o || !o->regex) {
    gtk_label_set_text(v->search_label, "Search a regex over the text to find the codes that stand for it.");
    return;
  }
  g_autofree char *t = g_strdup_printf("%d codes for /%s/ (%" G_GINT64_FORMAT " of %" G_GINT64_FORMAT " tokens marked), "
                                       "by precision; last: marked activations / all:", o->n_hits, o->regex, o->n_marked,
                                       v->text->cache->n_tokens);
  gtk_label_set_text(v->search_label, t);
  for (int i = 0; i < o->n_hits; i++) {
    const LmwbCodeHit *h = &o->hits[i];
    CodeRef c = {h->layer, h->site, h->head, h->code};
    g_autofree char *spec = code_spec(&c);
    g_autofree char *row = g_strdup_printf("%-13s precision %.3f  recall %.3f  %" G_GINT64_FORMAT "/%" G_GINT64_FORMAT, spec,
                                           h->precision, h->recall, h->matched, h->activations);
    GtkWidget *l = gtk_label_new(row);
    gtk_label_set_xalign(GTK_LABEL(l), 0);
    gtk_widget_add_css_class(l, "monospace");
    gtk_list_box_append(v->hits_list, l);
  }
}

static void search_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbCodesView *v = LMWB_CODES_VIEW(owner);
  SearchIn *in = data;
  if (v->search_job == job) v->search_job = NULL;
  if (in->model != v->model || lmwb_job_cancelled(error)) return;
  if (error) {
    show_error(v, in->regex ? "search" : "contexts", error->message);
    if (v->has_selected && !v->contexts) v->contexts = g_new0(char *, 1);
    show_contexts(v);
    return;
  }
  SearchOut *o = result;
  if (v->text != o->text) {
    if (v->text) text_codes_unref(v->text);
    v->text = text_codes_ref(o->text);
  }
  if (o->regex) {
    search_out_free(v->search);
    v->search = g_memdup2(o, sizeof *o);
    memset(o, 0, sizeof *o);
    o = v->search;
    fill_hits(v);
    g_autofree char *t = g_strdup_printf("Search: %d codes found.", o->n_hits);
    gtk_label_set_text(v->status_label, t);
  }
  if (o->has_code && v->has_selected && same_code(&o->code, &v->selected)) {
    if (v->contexts) g_strfreev(v->contexts);
    v->contexts = g_steal_pointer(&o->contexts);
    v->selected_activations = o->activations;
    show_contexts(v);
  }
}

/* The cache to reuse for the current settings, or NULL. */
static TextCodes *usable_text(LmwbCodesView *v, const SearchIn *in) {
  TextCodes *t = v->text;
  if (t && t->model == v->model && !g_strcmp0(t->cb_dir, in->cb_dir) && !g_strcmp0(t->file, in->file) &&
      t->tokens == in->tokens)
    return t;
  return NULL;
}

static void start_search(LmwbCodesView *v, const char *regex, const CodeRef *code) {
  if (!v->model) return;
  SearchIn *in = g_new0(SearchIn, 1);
  in->model = lmwb_model_ref(v->model);
  in->cb_dir = g_strdup(entry_text(v->set_entry));
  in->file = g_strdup(entry_text(v->file_entry));
  in->tokens = (gint64)gtk_adjustment_get_value(v->tokens_adj);
  in->regex = g_strdup(regex);
  if (code) in->want_code = TRUE, in->code = *code;
  TextCodes *t = usable_text(v, in);
  if (t) in->have = text_codes_ref(t);
  const char *title = regex ? "Searching codes" : "Finding the code's contexts";
  gtk_label_set_text(v->status_label, t ? "Searching the cached codes…" : "Caching the text's codes…");
  LmwbJob *job = lmwb_job_new(title, run_search, in, search_in_free);
  lmwb_job_on_done(job, search_done, search_out_free);
  set_job(&v->search_job, lmwb_job_start(job, GTK_WIDGET(v)));
}

static void search(LmwbCodesView *v) {
  const char *re = entry_text(v->regex_entry);
  if (!*re) {
    show_error(v, "search", "type a regex to search (e.g. \" capital\")");
    return;
  }
  GError *err = NULL;
  GRegex *probe = g_regex_new(re, 0, 0, &err);
  if (!probe) {
    g_autofree char *m = g_strdup_printf("the regex \"%s\" does not compile: %s", re, err->message);
    g_error_free(err);
    show_error(v, "search", m);
    return;
  }
  g_regex_unref(probe);
  start_search(v, re, v->has_selected ? &v->selected : NULL);
}

static void gen_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data);

static void regenerate(LmwbCodesView *v) {
  if (!v->model || !gtk_toggle_button_get_active(v->clamp_toggle)) return;
  if (!v->has_selected) {
    show_error(v, "clamp", "select a code first (click one in the grid or the search results)");
    return;
  }
  if (v->gen_job) {
    v->gen_pending = TRUE; /* the newest settings once this one ends */
    return;
  }
  GenIn *in = g_new0(GenIn, 1);
  in->model = lmwb_model_ref(v->model);
  in->cb_dir = g_strdup(entry_text(v->set_entry));
  in->prompt = g_strdup(entry_text(v->prompt_entry));
  in->code = v->selected;
  in->new_tokens = (int)gtk_adjustment_get_value(v->new_tokens_adj);
  g_clear_pointer(&v->gen, gen_out_free);
  show_gen(v);
  LmwbJob *job = lmwb_job_new("Generating with the code on", run_generate, in, gen_in_free);
  lmwb_job_on_done(job, gen_done, gen_out_free);
  v->gen_job = lmwb_job_start(job, GTK_WIDGET(v));
}

static void gen_done(LmwbJob *job, GtkWidget *owner, gpointer result, const GError *error, gpointer data) {
  LmwbCodesView *v = LMWB_CODES_VIEW(owner);
  GenIn *in = data;
  if (v->gen_job == job) v->gen_job = NULL;
  if (in->model != v->model) return;
  gboolean pending = v->gen_pending;
  v->gen_pending = FALSE;
  if (error && !lmwb_job_cancelled(error)) show_error(v, "clamp", error->message);
  if (!error) {
    gen_out_free(v->gen);
    v->gen = g_memdup2(result, sizeof(GenOut));
    memset(result, 0, sizeof(GenOut));
    gtk_label_set_text(v->status_label, "Regenerated with the code on.");
  }
  show_gen(v);
  if (pending && !lmwb_job_cancelled(error)) regenerate(v);
}

static void select_code(LmwbCodesView *v, const CodeRef *c) {
  v->has_selected = TRUE;
  v->selected = *c;
  /* the search result of the code, when it is one, selected in the list */
  GtkListBoxRow *row = NULL;
  for (int i = 0; v->search && i < v->search->n_hits && !row; i++) {
    const LmwbCodeHit *h = &v->search->hits[i];
    CodeRef hc = {h->layer, h->site, h->head, h->code};
    if (same_code(&hc, c)) row = gtk_list_box_get_row_at_index(v->hits_list, i);
  }
  if (row) gtk_list_box_select_row(v->hits_list, row);
  else gtk_list_box_unselect_all(v->hits_list);
  g_clear_pointer(&v->contexts, g_strfreev);
  show_contexts(v);
  fill_grid(v);
  plot_hits(v);
  start_search(v, NULL, c);
  regenerate(v);
}

/* ---- file choosers --------------------------------------------------------------------------- */

typedef void (*PathFunc)(LmwbCodesView *v, const char *path);
static void ask_path(LmwbCodesView *v, const char *title, gboolean folder, PathFunc fn) {
  lmwb_ask_path(GTK_WIDGET(v), title, folder ? GTK_FILE_CHOOSER_ACTION_SELECT_FOLDER : GTK_FILE_CHOOSER_ACTION_OPEN,
                "_Open", NULL, (LmwbPathFunc)fn);
}

static void set_codebooks(LmwbCodesView *v, const char *dir) {
  set_entry_text(v->set_entry, dir);
  show_codes(v); /* loads the set (a banner when it is not one) and shows the prompt's codes */
}

static void set_file(LmwbCodesView *v, const char *path) { set_entry_text(v->file_entry, path); }

/* ---- actions --------------------------------------------------------------------------------- */

#define V(u) LMWB_CODES_VIEW(u)
static void act_set_codebooks(GSimpleAction *a, GVariant *p, gpointer u) { set_codebooks(V(u), g_variant_get_string(p, NULL)); }
static void act_choose_codebooks(GSimpleAction *a, GVariant *p, gpointer u) {
  ask_path(V(u), "Open a codebook set folder", TRUE, set_codebooks);
}
static void act_set_prompt(GSimpleAction *a, GVariant *p, gpointer u) { set_entry_text(V(u)->prompt_entry, g_variant_get_string(p, NULL)); }
static void act_show(GSimpleAction *a, GVariant *p, gpointer u) { show_codes(V(u)); }
static void act_head(GSimpleAction *a, GVariant *p, gpointer u) { gtk_adjustment_set_value(V(u)->head_adj, g_variant_get_int32(p)); }
static void act_set_file(GSimpleAction *a, GVariant *p, gpointer u) { set_file(V(u), g_variant_get_string(p, NULL)); }
static void act_choose_file(GSimpleAction *a, GVariant *p, gpointer u) { ask_path(V(u), "Choose a text to search", FALSE, set_file); }
static void act_set_regex(GSimpleAction *a, GVariant *p, gpointer u) { set_entry_text(V(u)->regex_entry, g_variant_get_string(p, NULL)); }
static void act_set_tokens(GSimpleAction *a, GVariant *p, gpointer u) { gtk_adjustment_set_value(V(u)->tokens_adj, g_variant_get_int32(p)); }
static void act_search(GSimpleAction *a, GVariant *p, gpointer u) { search(V(u)); }
static void act_select(GSimpleAction *a, GVariant *p, gpointer u) {
  LmwbCodesView *v = V(u);
  const char *t = g_variant_get_string(p, NULL);
  LmwbCodeClamp cc;
  GError *err = NULL;
  if (!v->model) return;
  if (!lmwb_code_clamp_parse(&v->model->cfg, t, &cc, &err)) {
    show_error(v, "select", err->message);
    g_error_free(err);
    return;
  }
  gboolean ok = !cc.positions && cc.slot < 0 && (cc.site == LMWB_CODEBOOK_MLP || cc.head >= 0);
  CodeRef c = {cc.layer, cc.site, cc.site == LMWB_CODEBOOK_ATTN ? cc.head : -1, cc.code};
  lmwb_code_clamp_clear(&cc);
  if (!ok) {
    g_autofree char *m = g_strdup_printf("\"%s\": expected L:attn:HEAD=CODE or L:mlp=CODE", t);
    show_error(v, "select", m);
    return;
  }
  select_code(v, &c);
}
static void act_select_hit(GSimpleAction *a, GVariant *p, gpointer u) {
  LmwbCodesView *v = V(u);
  int i = g_variant_get_int32(p);
  if (!v->search || i < 0 || i >= v->search->n_hits) {
    show_error(v, "select-hit", "no such search result");
    return;
  }
  const LmwbCodeHit *h = &v->search->hits[i];
  CodeRef c = {h->layer, h->site, h->head, h->code};
  select_code(v, &c);
}
static void act_click(GSimpleAction *a, GVariant *p, gpointer u) {
  LmwbCodesView *v = V(u);
  int pos, col, slot;
  PromptOut *o = v->codes;
  if (sscanf(g_variant_get_string(p, NULL), "%d,%d,%d", &pos, &col, &slot) != 3 || !o || pos < 0 || pos >= o->n ||
      col < 0 || col >= o->n_books || slot < 0 || slot >= o->k) {
    show_error(v, "click", "expected POS,COLUMN,SLOT of a code shown in the grid");
    return;
  }
  CodeRef c = grid_code(o, pos, col, slot, shown_head(v));
  select_code(v, &c);
}
static void act_clamp(GSimpleAction *a, GVariant *p, gpointer u) {
  gtk_toggle_button_set_active(V(u)->clamp_toggle, g_variant_get_boolean(p));
}
static void act_set_new_tokens(GSimpleAction *a, GVariant *p, gpointer u) {
  gtk_adjustment_set_value(V(u)->new_tokens_adj, g_variant_get_int32(p));
}
#undef V

static const GActionEntry actions[] = {
  {"set-codebooks", act_set_codebooks, "s"}, {"choose-codebooks", act_choose_codebooks}, {"set-prompt", act_set_prompt, "s"},
  {"show", act_show}, {"head", act_head, "i"}, {"set-file", act_set_file, "s"}, {"choose-file", act_choose_file},
  {"set-regex", act_set_regex, "s"}, {"set-tokens", act_set_tokens, "i"}, {"search", act_search},
  {"select", act_select, "s"}, {"select-hit", act_select_hit, "i"}, {"click", act_click, "s"},
  {"clamp", act_clamp, "b"}, {"set-new-tokens", act_set_new_tokens, "i"},
};

static const LmwbShortcut shortcuts[] = {
  {"codes.show", "<Control>k", "Show the prompt's codes"},
  {"codes.search", "<Control><Shift>f", "Search codes by regex"},
};

/* ---- LmwbView -------------------------------------------------------------------------------- */

static void forget(LmwbCodesView *v) {
  set_job(&v->prompt_job, NULL);
  set_job(&v->search_job, NULL);
  set_job(&v->gen_job, NULL);
  v->gen_pending = FALSE;
  g_clear_pointer(&v->codes, prompt_out_free);
  g_clear_pointer(&v->codes_prompt, g_free);
  g_clear_pointer(&v->shown_key, g_free);
  g_clear_pointer(&v->search, search_out_free);
  g_clear_pointer(&v->text, text_codes_unref);
  g_clear_pointer(&v->contexts, g_strfreev);
  g_clear_pointer(&v->gen, gen_out_free);
  v->has_selected = FALSE;
}

static void set_model(LmwbView *view, LmwbModel *m) {
  LmwbCodesView *v = LMWB_CODES_VIEW(view);
  forget(v);
  if (m) lmwb_model_ref(m);
  g_clear_pointer(&v->model, lmwb_model_unref);
  v->model = m;
  g_autofree char *dir = m && m->dir ? g_build_filename(m->dir, "codebooks", NULL) : NULL;
  if (dir && !g_file_test(dir, G_FILE_TEST_IS_DIR)) g_clear_pointer(&dir, g_free);
  set_entry_text(v->set_entry, dir);
  if (m) gtk_adjustment_set_upper(v->head_adj, MAX(m->cfg.n_head - 1, 0));
  gtk_label_set_text(v->status_label, dir ? "" : "This model has no codebooks/ folder: open a codebook set.");
  update_set_label(v);
  fill_grid(v);
  fill_hits(v);
  show_contexts(v);
  show_gen(v);
}

static void set_analysis(LmwbView *view, LmwbAnalysis *a) {
  LmwbCodesView *v = LMWB_CODES_VIEW(view);
  if (!a) return;
  /* the window's prompt, unless one was typed here since */
  const char *cur = entry_text(v->prompt_entry);
  if (!*cur || !g_strcmp0(cur, v->synced_prompt)) set_entry_text(v->prompt_entry, a->prompt);
  g_free(v->synced_prompt);
  v->synced_prompt = g_strdup(a->prompt);
  auto_show(v);
}

static LmwbPlotView *current_plot(LmwbView *view) { return LMWB_CODES_VIEW(view)->hits_plot; }

static char *describe(LmwbView *view) {
  LmwbCodesView *v = LMWB_CODES_VIEW(view);
  GString *s = g_string_new(NULL);
  g_autofree char *sd = g_strescape(entry_text(v->set_entry), NULL);
  g_autofree char *pr = g_strescape(entry_text(v->prompt_entry), NULL);
  g_autofree char *fi = g_strescape(entry_text(v->file_entry), NULL);
  g_autofree char *re = g_strescape(entry_text(v->regex_entry), NULL);
  g_string_append_printf(s, "codes set=%s\ncodes prompt=%s\ncodes file=%s\ncodes regex=%s\n", sd, pr, fi, re);
  g_string_append_printf(s, "codes settings head=%d tokens=%.0f new_tokens=%.0f clamp=%d\n", shown_head(v),
                         gtk_adjustment_get_value(v->tokens_adj), gtk_adjustment_get_value(v->new_tokens_adj),
                         gtk_toggle_button_get_active(v->clamp_toggle));
  PromptOut *o = v->codes;
  if (o) {
    g_autofree char *cp = g_strescape(v->codes_prompt ? v->codes_prompt : "", NULL);
    g_string_append_printf(s, "codes loaded k=%d num_codes=%d sites=%d tokens=%d of=%s\n", o->k, o->num_codes, o->n_books,
                           o->n, cp);
    /* the grid as shown: a line per token and column */
    int head = shown_head(v);
    for (int t = 0; t < o->n; t++)
      for (int b = 0; b < o->n_books; b++) {
        g_autofree char *tok = g_strescape(o->texts[t], NULL);
        g_string_append_printf(s, "codes cell pos=%d col=%d layer=%d site=%s head=%d token=%s ids=", t, b, o->layer[b],
                               lmwb_codebook_site_name(o->site[b]), o->site[b] == LMWB_CODEBOOK_ATTN ? book_group(o, b, head) : -1,
                               tok);
        for (int k = 0; k < o->k; k++) g_string_append_printf(s, "%s%d", k ? "," : "", grid_code(o, t, b, k, head).code);
        g_string_append_c(s, '\n');
      }
  } else {
    g_string_append(s, "codes loaded none\n");
  }
  if (v->search && v->search->regex) {
    SearchOut *so = v->search;
    g_autofree char *r = g_strescape(so->regex, NULL);
    g_string_append_printf(s, "codes search regex=%s text_tokens=%" G_GINT64_FORMAT " marked=%" G_GINT64_FORMAT " hits=%d\n", r,
                           v->text ? v->text->cache->n_tokens : 0, so->n_marked, so->n_hits);
    LmwbPlot *pl = lmwb_plot_view_get_plot(v->hits_plot);
    if (pl)
      g_string_append_printf(s, "codes plot points=%zu selected=%zu\n", (size_t)lmwb_plot_series_length(pl, 0),
                             (size_t)lmwb_plot_series_length(pl, 1));
    for (int i = 0; i < so->n_hits; i++) {
      const LmwbCodeHit *h = &so->hits[i];
      CodeRef c = {h->layer, h->site, h->head, h->code};
      g_autofree char *spec = code_spec(&c);
      g_string_append_printf(s, "codes hit %s precision=%.9g recall=%.9g matched=%" G_GINT64_FORMAT " activations=%" G_GINT64_FORMAT "\n",
                             spec, h->precision, h->recall, h->matched, h->activations);
    }
  }
  if (v->has_selected) {
    g_autofree char *spec = code_spec(&v->selected);
    g_string_append_printf(s, "codes selected=%s activations=%" G_GINT64_FORMAT " contexts=%d\n", spec,
                           v->selected_activations, v->contexts ? (int)g_strv_length(v->contexts) : -1);
    for (char **c = v->contexts; c && *c; c++) {
      g_autofree char *e = g_strescape(*c, NULL);
      g_string_append_printf(s, "codes context %s\n", e);
    }
  } else {
    g_string_append(s, "codes selected=\n");
  }
  if (v->gen) {
    g_autofree char *b = g_strescape(v->gen->before, NULL);
    g_autofree char *a = g_strescape(v->gen->after, NULL);
    g_string_append_printf(s, "codes gen clamp=%s\ncodes gen before=%s\ncodes gen after=%s\n", v->gen->clamp, b, a);
  }
  g_autofree char *st = g_strescape(gtk_label_get_text(v->status_label), NULL);
  g_string_append_printf(s, "codes status=%s\n", st);
  return g_string_free(s, FALSE);
}

static void view_iface_init(LmwbViewInterface *iface) {
  static const LmwbViewInfo info = {.id = "codes", .title = "Codes", .icon_name = "view-grid-symbolic",
                                    .actions = actions, .n_actions = G_N_ELEMENTS(actions),
                                    .shortcuts = shortcuts, .n_shortcuts = G_N_ELEMENTS(shortcuts)};
  iface->info = &info;
  iface->set_model = set_model;
  iface->set_analysis = set_analysis;
  iface->describe = describe;
  iface->current_plot = current_plot;
}

/* ---- object ---------------------------------------------------------------------------------- */

static void on_show_clicked(GtkButton *b, gpointer user) { show_codes(user); }
static void on_prompt_activate(GtkEntry *e, gpointer user) { show_codes(user); }
static void on_open_clicked(GtkButton *b, gpointer user) { ask_path(user, "Open a codebook set folder", TRUE, set_codebooks); }
static void on_set_activate(GtkEntry *e, gpointer user) { show_codes(user); }
static void on_file_clicked(GtkButton *b, gpointer user) { ask_path(user, "Choose a text to search", FALSE, set_file); }
static void on_search_clicked(GtkButton *b, gpointer user) { search(user); }
static void on_regex_activate(GtkEntry *e, gpointer user) { search(user); }
static void on_head_changed(GtkAdjustment *a, gpointer user) { fill_grid(user); }
static void on_map(GtkWidget *w, gpointer user) { auto_show(user); }
static void on_clamp_toggled(GtkToggleButton *b, gpointer user) {
  LmwbCodesView *v = user;
  if (gtk_toggle_button_get_active(b)) regenerate(v);
  else {
    set_job(&v->gen_job, NULL);
    v->gen_pending = FALSE;
    g_clear_pointer(&v->gen, gen_out_free);
    show_gen(v);
  }
}
static void on_new_tokens_changed(GtkAdjustment *a, gpointer user) { regenerate(user); }
static void on_hit_activated(GtkListBox *box, GtkListBoxRow *row, gpointer user) {
  LmwbCodesView *v = user;
  int i = gtk_list_box_row_get_index(row);
  if (!v->search || i < 0 || i >= v->search->n_hits) return;
  const LmwbCodeHit *h = &v->search->hits[i];
  CodeRef c = {h->layer, h->site, h->head, h->code};
  select_code(v, &c);
}

static void dispose(GObject *o) {
  LmwbCodesView *v = LMWB_CODES_VIEW(o);
  forget(v);
  g_clear_pointer(&v->model, lmwb_model_unref);
  g_clear_pointer(&v->synced_prompt, g_free);
  gtk_widget_dispose_template(GTK_WIDGET(o), LMWB_TYPE_CODES_VIEW);
  G_OBJECT_CLASS(lmwb_codes_view_parent_class)->dispose(o);
}

static void lmwb_codes_view_class_init(LmwbCodesViewClass *k) {
  G_OBJECT_CLASS(k)->dispose = dispose;
  g_type_ensure(LMWB_TYPE_PLOT_VIEW);
  GtkWidgetClass *wk = GTK_WIDGET_CLASS(k);
  gtk_widget_class_set_template_from_resource(wk, "/org/lmwb/Workbench/lmwb-codes-view.ui");
#define BIND(x) gtk_widget_class_bind_template_child(wk, LmwbCodesView, x)
  BIND(set_entry), BIND(prompt_entry), BIND(file_entry), BIND(regex_entry);
  BIND(head_adj), BIND(tokens_adj), BIND(new_tokens_adj);
  BIND(set_label), BIND(status_label), BIND(search_label), BIND(code_label), BIND(contexts_label), BIND(before_label),
    BIND(after_label);
  BIND(grid), BIND(hits_list), BIND(clamp_toggle), BIND(hits_plot);
#undef BIND
  gtk_widget_class_bind_template_callback(wk, on_show_clicked);
  gtk_widget_class_bind_template_callback(wk, on_prompt_activate);
  gtk_widget_class_bind_template_callback(wk, on_open_clicked);
  gtk_widget_class_bind_template_callback(wk, on_set_activate);
  gtk_widget_class_bind_template_callback(wk, on_file_clicked);
  gtk_widget_class_bind_template_callback(wk, on_search_clicked);
  gtk_widget_class_bind_template_callback(wk, on_regex_activate);
  gtk_widget_class_bind_template_callback(wk, on_clamp_toggled);
  gtk_widget_class_bind_template_callback(wk, on_hit_activated);
}

static void lmwb_codes_view_init(LmwbCodesView *v) {
  gtk_widget_init_template(GTK_WIDGET(v));
  gtk_adjustment_set_value(v->tokens_adj, DEFAULT_TEXT_TOKENS);
  gtk_adjustment_set_value(v->new_tokens_adj, DEFAULT_NEW_TOKENS);
  g_signal_connect(v->head_adj, "value-changed", G_CALLBACK(on_head_changed), v);
  g_signal_connect(v->new_tokens_adj, "value-changed", G_CALLBACK(on_new_tokens_changed), v);
  g_signal_connect(v, "map", G_CALLBACK(on_map), v);
  lmwb_plot_view_set_tooltip_func(v->hits_plot, hit_tooltip, v);
  g_autofree char *text = circuits_default_text();
  set_entry_text(v->file_entry, text);
  set_entry_text(v->regex_entry, " capital");
  update_set_label(v);
  fill_grid(v);
  fill_hits(v);
  show_contexts(v);
  show_gen(v);
}
