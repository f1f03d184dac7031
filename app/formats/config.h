/* config.json -> LmwbConfig: the architecture-neutral description of a transformer.
 * Supported model types: gpt2, llama, mistral, qwen2, gpt_neox. Every size is validated. */
#pragma once
#include <glib.h>
#include <stdbool.h>

typedef enum { LMWB_ARCH_GPT2, LMWB_ARCH_LLAMA, LMWB_ARCH_NEOX } LmwbArch;
typedef enum { LMWB_NORM_LAYER, LMWB_NORM_RMS } LmwbNormKind;
typedef enum { LMWB_ACT_GELU_TANH, LMWB_ACT_GELU_ERF, LMWB_ACT_SILU } LmwbActKind;

typedef struct LmwbConfig {
  LmwbArch arch;
  char model_type[32];      /* as in config.json: gpt2, llama, mistral, qwen2, gpt_neox */
  int n_layer, d_model, n_head, n_kv_head, head_dim, d_ff, vocab_size, n_ctx;
  LmwbNormKind norm;
  float norm_eps;
  bool learned_pos;         /* GPT-2 position table; otherwise rotary */
  float rope_theta;
  int rotary_dim;           /* dims per head that rotate (NeoX rotary_pct); 0 without rotary */
  bool gated_mlp;           /* SwiGLU: down(silu(gate x) * up x) */
  LmwbActKind act;
  bool parallel_residual;   /* x + attn(ln1 x) + mlp(ln2 x) */
  bool tied_head;
  bool qkv_bias, o_bias, mlp_bias, norm_bias;
  int bos_id, eos_id;       /* -1 when unknown */
} LmwbConfig;

/* Read config.json and validate every size. Unknown architectures are an input error that lists
 * the supported ones. */
gboolean lmwb_config_load(const char *config_json_path, LmwbConfig *cfg, GError **error);
gboolean lmwb_config_load_data(const char *json, size_t len, const char *origin, LmwbConfig *cfg,
                               GError **error);
gboolean lmwb_config_validate(const LmwbConfig *cfg, GError **error);
/* Comma-separated list of supported model types, for error messages and --help. */
const char *lmwb_config_supported(void);
const char *lmwb_arch_name(LmwbArch a);
/* config.json text for a config, in the architecture's Hugging Face form (g_free). */
char *lmwb_config_to_json(const LmwbConfig *cfg, const char *torch_dtype);
