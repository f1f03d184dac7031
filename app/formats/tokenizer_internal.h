/* Internal pieces of the tokenizer shared by tokenizer*.c (not a public API). */
#pragma once
#include "app/formats/tokenizer.h"

/* ---- tokenizer_unicode.c: character classes, regex-equivalent splitters, UTF-8 helpers ---- */
typedef enum {
  LMWB_SPLIT_GPT2,   /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
  LMWB_SPLIT_LLAMA3, /* (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|... */
  LMWB_SPLIT_QWEN2,  /* as Llama-3 with \p{N} (one digit per piece) */
} LmwbSplitKind;

void lmwb_tok_split(LmwbSplitKind kind, const char *text, size_t len, LmwbTokenizerPieceFn fn,
                    void *user);
/* Map a regex pattern string from tokenizer.json to a known splitter; FALSE if unknown. */
gboolean lmwb_tok_split_kind_from_pattern(const char *pattern, LmwbSplitKind *kind);
/* UTF-8 validity (embedded NUL allowed, unlike g_utf8_validate); *bad gets the first bad offset. */
gboolean lmwb_tok_utf8_valid(const char *s, size_t len, size_t *bad);
/* Rust's String::from_utf8_lossy: each maximal invalid subpart becomes one U+FFFD. */
void lmwb_tok_append_lossy(GString *out, const char *bytes, size_t len);
/* Append bytes, showing bytes that are not part of valid UTF-8 as \xNN. */
void lmwb_tok_append_escaped(GString *out, const char *bytes, size_t len);
/* Rust char::is_whitespace (Unicode White_Space) and char::is_alphanumeric. */
gboolean lmwb_tok_is_space(gunichar c);
gboolean lmwb_tok_is_alnum(gunichar c);
/* Inverse byte-level map: byte for code point c, or -1 if c is not one of the 256. */
int lmwb_tok_unichar_to_byte(gunichar c);
/* UTF-8 of the code point that stands for byte b (1 or 2 bytes, NUL-terminated). */
const char *lmwb_tok_byte_utf8(uint8_t b);

/* ---- tokenizer_bpe.c: merge table and the merge loop ---- */
typedef struct {
  uint64_t *keys;   /* (left << 32 | right) + 1; 0 = empty slot */
  uint32_t *ranks;
  int32_t *new_ids;
  size_t cap, n;
} LmwbMergeMap;

void lmwb_merge_map_init(LmwbMergeMap *m, size_t expected);
void lmwb_merge_map_clear(LmwbMergeMap *m);
/* Later insertions of the same pair replace earlier ones (HF builds a HashMap from the list). */
void lmwb_merge_map_put(LmwbMergeMap *m, int32_t left, int32_t right, uint32_t rank, int32_t new_id);
gboolean lmwb_merge_map_get(const LmwbMergeMap *m, int32_t left, int32_t right, uint32_t *rank,
                            int32_t *new_id);

/* Apply merges to a symbol sequence in place (HF Word::merge_all: lowest rank first, then the
 * leftmost); returns the new length. */
size_t lmwb_bpe_merge_all(const LmwbMergeMap *m, int32_t *ids, size_t n);
