/* Unicode helpers and the hand-written equivalents of the pre-tokenizer regexes.
 * The matchers reproduce the leftmost-alternative semantics of the Oniguruma/PCRE patterns that
 * HF tokenizers uses, including the backtracking of \s+(?!\S) and \s*[\r\n]+. */
#include "app/formats/tokenizer_internal.h"

#include <string.h>

enum { CL_L = 1, CL_N = 2, CL_S = 3, CL_O = 4 };

/* Unicode White_Space (what \s means in the Unicode-mode regexes, and Rust's is_whitespace). */
gboolean lmwb_tok_is_space(gunichar c) {
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
  if (c < 0x85) return FALSE;
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static int classify(gunichar c) {
  if (c < 0x80) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return CL_L;
    if (c >= '0' && c <= '9') return CL_N;
    if (c == ' ' || (c >= 0x09 && c <= 0x0D)) return CL_S;
    return CL_O;
  }
  if (lmwb_tok_is_space(c)) return CL_S;
  switch (g_unichar_type(c)) {
  case G_UNICODE_UPPERCASE_LETTER:
  case G_UNICODE_LOWERCASE_LETTER:
  case G_UNICODE_TITLECASE_LETTER:
  case G_UNICODE_MODIFIER_LETTER:
  case G_UNICODE_OTHER_LETTER:
    return CL_L;
  case G_UNICODE_DECIMAL_NUMBER:
  case G_UNICODE_LETTER_NUMBER:
  case G_UNICODE_OTHER_NUMBER:
    return CL_N;
  default:
    return CL_O;
  }
}

gboolean lmwb_tok_is_alnum(gunichar c) {
  int k = classify(c);
  /* Rust's is_alphanumeric is Alphabetic || Numeric; letters and numbers cover the cases that
   * matter for single_word added tokens. */
  return k == CL_L || k == CL_N;
}

/* ---- GPT-2 bytes_to_unicode ---- */
static gunichar byte_cp[256];
static int cp_byte[512];
static char byte_utf8[256][3];
static gsize byte_map_once = 0;

static void init_byte_map(void) {
  if (g_once_init_enter(&byte_map_once)) {
    int n = 0;
    for (int i = 0; i < 512; i++) cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
      gboolean printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      byte_cp[b] = printable ? (gunichar)b : (gunichar)(256 + n++);
    }
    for (int b = 0; b < 256; b++) {
      cp_byte[byte_cp[b]] = b;
      int k = g_unichar_to_utf8(byte_cp[b], byte_utf8[b]);
      byte_utf8[b][k] = 0;
    }
    g_once_init_leave(&byte_map_once, 1);
  }
}

gunichar lmwb_tokenizer_byte_to_unichar(uint8_t b) {
  init_byte_map();
  return byte_cp[b];
}

int lmwb_tok_unichar_to_byte(gunichar c) {
  init_byte_map();
  return c < 512 ? cp_byte[c] : -1;
}

const char *lmwb_tok_byte_utf8(uint8_t b) {
  init_byte_map();
  return byte_utf8[b];
}

/* ---- splitters ---- */
typedef struct {
  gunichar *cp;
  uint8_t *cls;
  size_t *off; /* byte offset of each char; off[n] = len */
  size_t n;
} Chars;

static size_t run_of(const Chars *c, size_t i, int cl) {
  size_t j = i;
  while (j < c->n && c->cls[j] == cl) j++;
  return j - i;
}

static gboolean is_crlf(gunichar u) { return u == '\r' || u == '\n'; }

/* \s+(?!\S) then \s+ : a whitespace run followed by a non-space gives back its last char. */
static size_t match_space_tail(const Chars *c, size_t i) {
  size_t k = run_of(c, i, CL_S);
  if (i + k == c->n || k < 2) return k;
  return k - 1;
}

static size_t match_gpt2(const Chars *c, size_t i) {
  const gunichar *cp = c->cp;
  size_t n = c->n;
  if (cp[i] == '\'' && i + 1 < n) {
    gunichar a = cp[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (i + 2 < n) {
      gunichar b = cp[i + 2];
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    }
  }
  int cl = c->cls[i];
  if (cl == CL_L || cl == CL_N || cl == CL_O) return run_of(c, i, cl);
  if (cp[i] == ' ' && i + 1 < n && c->cls[i + 1] != CL_S) return 1 + run_of(c, i + 1, c->cls[i + 1]);
  return match_space_tail(c, i);
}

static gboolean ieq(gunichar u, char lower) {
  return u == (gunichar)lower || u == (gunichar)g_ascii_toupper(lower) ||
         (lower == 's' && u == 0x017F); /* long s folds to s */
}

static size_t match_llama3(const Chars *c, size_t i, size_t max_digits) {
  const gunichar *cp = c->cp;
  size_t n = c->n;
  if (cp[i] == '\'' && i + 1 < n) {
    gunichar a = cp[i + 1];
    if (ieq(a, 's') || ieq(a, 't') || ieq(a, 'm') || ieq(a, 'd')) return 2;
    if (i + 2 < n) {
      gunichar b = cp[i + 2];
      if ((ieq(a, 'r') && ieq(b, 'e')) || (ieq(a, 'v') && ieq(b, 'e')) || (ieq(a, 'l') && ieq(b, 'l')))
        return 3;
    }
  }
  int cl = c->cls[i];
  /* [^\r\n\p{L}\p{N}]?\p{L}+ */
  if (cl == CL_L) return run_of(c, i, CL_L);
  if (cl != CL_N && !is_crlf(cp[i]) && i + 1 < n && c->cls[i + 1] == CL_L) return 1 + run_of(c, i + 1, CL_L);
  /* \p{N}{1,3} */
  if (cl == CL_N) {
    size_t k = run_of(c, i, CL_N);
    return k < max_digits ? k : max_digits;
  }
  /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
  size_t j = SIZE_MAX;
  if (cp[i] == ' ' && i + 1 < n && c->cls[i + 1] == CL_O) j = i + 1;
  else if (cl == CL_O) j = i;
  if (j != SIZE_MAX) {
    j += run_of(c, j, CL_O);
    while (j < n && is_crlf(cp[j])) j++;
    return j - i;
  }
  /* \s*[\r\n]+ : up to and including the last CR/LF of the whitespace run */
  size_t k = run_of(c, i, CL_S);
  for (size_t p = i + k; p > i; p--)
    if (is_crlf(cp[p - 1])) return p - i;
  return match_space_tail(c, i);
}

void lmwb_tok_split(LmwbSplitKind kind, const char *text, size_t len, LmwbTokenizerPieceFn fn,
                    void *user) {
  if (len == 0) return;
  Chars c;
  c.cp = g_new(gunichar, len);
  c.cls = g_new(uint8_t, len);
  c.off = g_new(size_t, len + 1);
  c.n = 0;
  const char *p = text, *end = text + len;
  while (p < end) {
    gunichar u = g_utf8_get_char(p);
    c.off[c.n] = (size_t)(p - text);
    c.cp[c.n] = u;
    c.cls[c.n] = (uint8_t)classify(u);
    c.n++;
    p = g_utf8_next_char(p);
  }
  c.off[c.n] = len;
  size_t i = 0;
  while (i < c.n) {
    size_t k;
    switch (kind) {
    case LMWB_SPLIT_LLAMA3: k = match_llama3(&c, i, 3); break;
    case LMWB_SPLIT_QWEN2: k = match_llama3(&c, i, 1); break;
    default: k = match_gpt2(&c, i); break;
    }
    if (k == 0) k = 1; /* cannot happen: every class has an alternative; stay safe anyway */
    fn(text, c.off[i], c.off[i + k], user);
    i += k;
  }
  g_free(c.cp);
  g_free(c.cls);
  g_free(c.off);
}

void lmwb_tokenizer_split_gpt2(const char *text, size_t len, LmwbTokenizerPieceFn fn, void *user) {
  lmwb_tok_split(LMWB_SPLIT_GPT2, text, len, fn, user);
}

gboolean lmwb_tok_split_kind_from_pattern(const char *pattern, LmwbSplitKind *kind) {
  static const char gpt2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
  static const char llama3[] =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
      "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  static const char qwen2[] =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
      "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  if (strcmp(pattern, gpt2) == 0) *kind = LMWB_SPLIT_GPT2;
  else if (strcmp(pattern, llama3) == 0) *kind = LMWB_SPLIT_LLAMA3;
  else if (strcmp(pattern, qwen2) == 0) *kind = LMWB_SPLIT_QWEN2;
  else return FALSE;
  return TRUE;
}

/* Length of the valid UTF-8 prefix of a sequence at p (1..4 if complete and valid); for an
 * invalid or truncated sequence, returns 0 and sets *bad to the length of its maximal subpart. */
static int utf8_seq(const unsigned char *p, size_t avail, int *bad) {
  unsigned char b = p[0];
  int need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) need = 2;
  else if (b >= 0xE0 && b <= 0xEF) {
    need = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    *bad = 1;
    return 0;
  }
  int k = 1;
  while (k < need && (size_t)k < avail) {
    unsigned char x = p[k];
    unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (x < l || x > h) break;
    k++;
  }
  if (k == need) return need;
  *bad = k;
  return 0;
}

gboolean lmwb_tok_utf8_valid(const char *s, size_t len, size_t *bad) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    int b = 0;
    int k = utf8_seq(p + i, len - i, &b);
    if (k == 0) {
      if (bad) *bad = i;
      return FALSE;
    }
    i += (size_t)k;
  }
  return TRUE;
}

void lmwb_tok_append_lossy(GString *out, const char *bytes, size_t len) {
  const unsigned char *p = (const unsigned char *)bytes;
  size_t i = 0;
  while (i < len) {
    int bad = 0;
    int k = utf8_seq(p + i, len - i, &bad);
    if (k > 0) {
      g_string_append_len(out, bytes + i, k);
      i += (size_t)k;
    } else {
      g_string_append(out, "\xEF\xBF\xBD");
      i += (size_t)bad;
    }
  }
}

void lmwb_tok_append_escaped(GString *out, const char *bytes, size_t len) {
  const unsigned char *p = (const unsigned char *)bytes;
  size_t i = 0;
  while (i < len) {
    int bad = 0;
    int k = utf8_seq(p + i, len - i, &bad);
    if (k > 0) {
      g_string_append_len(out, bytes + i, k);
      i += (size_t)k;
    } else {
      for (int j = 0; j < bad; j++) g_string_append_printf(out, "\\x%02X", p[i + j]);
      i += (size_t)bad;
    }
  }
}
