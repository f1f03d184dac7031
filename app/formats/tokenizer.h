/* Tokenizer: Hugging Face `tokenizers`-compatible BPE (tokenizer.json, or the legacy GPT-2
 * vocab.json + merges.txt pair). Encoding and decoding follow HF byte for byte for the supported
 * pipelines: byte-level BPE with the GPT-2 regex (GPT-2), Split(Llama-3 / Qwen2 regex) +
 * ByteLevel (Llama-3), and SentencePiece-style BPE (Prepend/Replace normalizer or Metaspace,
 * byte_fallback, unk, fuse_unk). Added tokens are matched first (longest first) honouring
 * lstrip/rstrip/single_word/normalized. Anything else in the file (an unknown normalizer,
 * pre-tokenizer, model or decoder type, or a malformed field) is refused with LMWB_ERROR_INPUT
 * naming the file and the JSON field; nothing in a file can crash the loader.
 * A loaded tokenizer is immutable apart from an internal, locked word cache: encode/decode may be
 * called from several threads at once. */
#pragma once
#include <glib.h>
#include <stddef.h>
#include <stdint.h>

typedef struct LmwbTokenizer LmwbTokenizer;

/* A model folder: tokenizer.json, else vocab.json + merges.txt. tokenizer_config.json, if present,
 * supplies bos_token/eos_token. */
LmwbTokenizer *lmwb_tokenizer_load_dir(const char *dir, GError **error);
LmwbTokenizer *lmwb_tokenizer_load_json(const char *path, GError **error);
/* `len` bytes of tokenizer.json text (need not be NUL-terminated); used by the fuzzer. */
LmwbTokenizer *lmwb_tokenizer_load_json_data(const char *data, size_t len, GError **error);
/* GPT-2 legacy pair: byte-level BPE with the GPT-2 regex; "#version" line in merges.txt skipped;
 * <|endoftext|> (if in the vocabulary) is a special added token and is BOS/EOS. */
LmwbTokenizer *lmwb_tokenizer_load_gpt2_pair(const char *vocab_json, const char *merges_txt,
                                             GError **error);
void lmwb_tokenizer_free(LmwbTokenizer *t);

/* Encode UTF-8 text (invalid UTF-8 -> input error). add_special: apply the post-processor template
 * (e.g. Llama's BOS) as HF's encode(add_special_tokens=True) does. Returns g_malloc'd ids (never
 * NULL on success, even for 0 ids). */
int32_t *lmwb_tokenizer_encode(const LmwbTokenizer *t, const char *text, size_t len,
                               gboolean add_special, size_t *n_ids, GError **error);
/* Like HF decode: unknown ids are skipped, invalid UTF-8 becomes U+FFFD. Returns a NUL-terminated
 * g_malloc'd string; *len_out (may be NULL) gets its length. */
char *lmwb_tokenizer_decode(const LmwbTokenizer *t, const int32_t *ids, size_t n,
                            gboolean skip_special, size_t *len_out);

int lmwb_tokenizer_vocab_size(const LmwbTokenizer *t); /* max id + 1 including added tokens */
/* Raw vocabulary string (e.g. "Ġdog"); NULL if out of range or a hole. Owned by t. */
const char *lmwb_tokenizer_token(const LmwbTokenizer *t, int32_t id);
/* Human-readable decoded text of one token (" dog"); bytes that are not valid UTF-8 are shown as
 * \xNN. NULL if the id is unknown. g_free the result. */
char *lmwb_tokenizer_token_text(const LmwbTokenizer *t, int32_t id);
int32_t lmwb_tokenizer_token_id(const LmwbTokenizer *t, const char *token); /* -1 if absent */
gboolean lmwb_tokenizer_is_special(const LmwbTokenizer *t, int32_t id);
int32_t lmwb_tokenizer_bos(const LmwbTokenizer *t); /* -1 if none */
int32_t lmwb_tokenizer_eos(const LmwbTokenizer *t); /* -1 if none */
/* "bpe-bytelevel-gpt2", "bpe-bytelevel-llama3", "bpe-bytelevel-qwen2", "bpe-sentencepiece",
 * "bpe-bytelevel-legacy-pair", or "bpe" for other accepted combinations. */
const char *lmwb_tokenizer_kind(const LmwbTokenizer *t);

/* The GPT-2 byte <-> printable code point map (bytes_to_unicode): code point for byte b. */
gunichar lmwb_tokenizer_byte_to_unichar(uint8_t b);
/* Split valid UTF-8 text with the GPT-2 pre-tokenizer regex (hand-written matcher). Calls fn for
 * each piece [start, end) in byte offsets, in order; the pieces tile the text. Used by the BPE
 * trainer so that training and encoding split identically. */
typedef void (*LmwbTokenizerPieceFn)(const char *text, size_t start, size_t end, void *user);
void lmwb_tokenizer_split_gpt2(const char *text, size_t len, LmwbTokenizerPieceFn fn, void *user);
