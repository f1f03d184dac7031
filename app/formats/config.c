#include "app/formats/config.h"
#include "app/core/errors.h"
#include "app/core/inputs.h"
#include "app/formats/json_text.h"
#include "app/formats/json_input.h"
#include <float.h>
#include <math.h>
#include <string.h>

/* Largest sizes we accept; anything beyond is certainly a corrupt or hostile file. */
enum { MAX_DIM = 1 << 20, MAX_LAYERS = 4096, MAX_VOCAB = 1 << 24, MAX_CTX = 1 << 24 };
/* A config.json is a few hundred bytes; anything near this is not one. */
#define MAX_CONFIG_BYTES ((uint64_t)16 << 20)

const char *lmwb_config_supported(void) { return "gpt2, llama, mistral, qwen2, gpt_neox"; }

const char *lmwb_arch_name(LmwbArch a) {
  switch (a) {
    case LMWB_ARCH_GPT2: return "gpt2";
    case LMWB_ARCH_LLAMA: return "llama";
    case LMWB_ARCH_NEOX: return "gpt_neox";
  }
  return "?";
}

typedef struct {
  JsonObject *o;
  const char *origin;
  GError **error;
  gboolean ok;
} Reader;

static JsonNode *member(Reader *r, const char *key) {
  if (!json_object_has_member(r->o, key)) return NULL;
  JsonNode *n = json_object_get_member(r->o, key);
  return JSON_NODE_HOLDS_NULL(n) ? NULL : n;
}

/* Integer field; `def` when absent (def < -1 marks it required). */
static int get_int(Reader *r, const char *key, long def) {
  if (!r->ok) return 0;
  JsonNode *n = member(r, key);
  if (!n) {
    if (def < -1) {
      lmwb_input_error(r->error, "%s: required field \"%s\" is missing", r->origin, key);
      r->ok = FALSE;
      return 0;
    }
    return (int)def;
  }
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64) {
    lmwb_input_error(r->error, "%s: field \"%s\" must be an integer", r->origin, key);
    r->ok = FALSE;
    return 0;
  }
  gint64 v = json_node_get_int(n);
  if (v < -1 || v > G_MAXINT32) {
    lmwb_input_error(r->error, "%s: field \"%s\" = %" G_GINT64_FORMAT " is out of range", r->origin, key, v);
    r->ok = FALSE;
    return 0;
  }
  return (int)v;
}

static double get_num(Reader *r, const char *key, double def) {
  if (!r->ok) return 0;
  JsonNode *n = member(r, key);
  if (!n) return def;
  if (JSON_NODE_HOLDS_VALUE(n)) {
    GType t = json_node_get_value_type(n);
    if (t == G_TYPE_INT64) return (double)json_node_get_int(n);
    if (t == G_TYPE_DOUBLE) return json_node_get_double(n);
  }
  lmwb_input_error(r->error, "%s: field \"%s\" must be a number", r->origin, key);
  r->ok = FALSE;
  return 0;
}

/* A number that is stored as a float: beyond FLT_MAX it would not convert. */
static float get_float(Reader *r, const char *key, double def) {
  double v = get_num(r, key, def);
  if (r->ok && !(fabs(v) <= FLT_MAX)) {
    lmwb_input_error(r->error, "%s: field \"%s\" = %g is out of range", r->origin, key, v);
    r->ok = FALSE;
    return 0;
  }
  return (float)v;
}

static gboolean get_bool(Reader *r, const char *key, gboolean def) {
  if (!r->ok) return FALSE;
  JsonNode *n = member(r, key);
  if (!n) return def;
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_BOOLEAN) {
    lmwb_input_error(r->error, "%s: field \"%s\" must be true or false", r->origin, key);
    r->ok = FALSE;
    return FALSE;
  }
  return json_node_get_boolean(n);
}

static const char *get_str(Reader *r, const char *key, const char *def) {
  if (!r->ok) return def;
  JsonNode *n = member(r, key);
  if (!n) return def;
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) {
    lmwb_input_error(r->error, "%s: field \"%s\" must be a string", r->origin, key);
    r->ok = FALSE;
    return def;
  }
  return json_node_get_string(n);
}

static int get_token_id(Reader *r, const char *key) {
  JsonNode *n = member(r, key);
  if (n && JSON_NODE_HOLDS_ARRAY(n)) return -1; /* lists of ids (some Llama 3 configs): unused */
  return get_int(r, key, -1);
}

static void read_act(Reader *r, const char *act, LmwbConfig *c) {
  if (!r->ok) return;
  if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh") || !strcmp(act, "gelu_fast"))
    c->act = LMWB_ACT_GELU_TANH;
  else if (!strcmp(act, "gelu"))
    c->act = LMWB_ACT_GELU_ERF;
  else if (!strcmp(act, "silu") || !strcmp(act, "swish"))
    c->act = LMWB_ACT_SILU;
  else {
    lmwb_input_error(r->error, "%s: activation \"%s\" is not supported (gelu_new, gelu, silu)", r->origin, act);
    r->ok = FALSE;
  }
}

static void read_gpt2(Reader *r, LmwbConfig *c) {
  c->arch = LMWB_ARCH_GPT2;
  c->n_layer = get_int(r, "n_layer", -2);
  c->d_model = get_int(r, "n_embd", -2);
  c->n_head = get_int(r, "n_head", -2);
  c->n_kv_head = c->n_head;
  c->head_dim = c->n_head > 0 ? c->d_model / c->n_head : 0;
  c->d_ff = get_int(r, "n_inner", -1);
  if (c->d_ff == -1) c->d_ff = (int)MIN(4 * (int64_t)c->d_model, G_MAXINT32); /* out of range: refused below */
  c->vocab_size = get_int(r, "vocab_size", -2);
  c->n_ctx = get_int(r, "n_positions", get_int(r, "n_ctx", 1024));
  c->norm = LMWB_NORM_LAYER;
  c->norm_eps = get_float(r, "layer_norm_epsilon", 1e-5);
  c->learned_pos = true;
  read_act(r, get_str(r, "activation_function", "gelu_new"), c);
  c->tied_head = get_bool(r, "tie_word_embeddings", TRUE);
  c->qkv_bias = c->o_bias = c->mlp_bias = c->norm_bias = true;
  if (r->ok && (get_bool(r, "scale_attn_by_inverse_layer_idx", FALSE) || !get_bool(r, "scale_attn_weights", TRUE)) && r->ok) {
    lmwb_input_error(r->error, "%s: scale_attn_by_inverse_layer_idx = true or scale_attn_weights = false is not supported", r->origin);
    r->ok = FALSE;
  }
}

static void read_llama(Reader *r, LmwbConfig *c, const char *type) {
  c->arch = LMWB_ARCH_LLAMA;
  c->n_layer = get_int(r, "num_hidden_layers", -2);
  c->d_model = get_int(r, "hidden_size", -2);
  c->n_head = get_int(r, "num_attention_heads", -2);
  c->n_kv_head = get_int(r, "num_key_value_heads", c->n_head);
  c->head_dim = get_int(r, "head_dim", c->n_head > 0 ? c->d_model / c->n_head : 0);
  c->d_ff = get_int(r, "intermediate_size", -2);
  c->vocab_size = get_int(r, "vocab_size", -2);
  c->n_ctx = get_int(r, "max_position_embeddings", 2048);
  c->norm = LMWB_NORM_RMS;
  c->norm_eps = get_float(r, "rms_norm_eps", 1e-6);
  c->rope_theta = get_float(r, "rope_theta", 10000.0);
  c->rotary_dim = c->head_dim;
  c->gated_mlp = true;
  read_act(r, get_str(r, "hidden_act", "silu"), c);
  gboolean qwen = !strcmp(type, "qwen2");
  c->tied_head = get_bool(r, "tie_word_embeddings", FALSE);
  c->qkv_bias = qwen ? TRUE : get_bool(r, "attention_bias", FALSE);
  c->o_bias = qwen ? FALSE : c->qkv_bias;
  c->mlp_bias = get_bool(r, "mlp_bias", FALSE);
  c->norm_bias = false;
  if (r->ok && member(r, "rope_scaling")) {
    lmwb_input_error(r->error, "%s: rope_scaling is not supported yet (remove it only if the model was trained without it)", r->origin);
    r->ok = FALSE;
  }
}

static void read_neox(Reader *r, LmwbConfig *c) {
  c->arch = LMWB_ARCH_NEOX;
  c->n_layer = get_int(r, "num_hidden_layers", -2);
  c->d_model = get_int(r, "hidden_size", -2);
  c->n_head = get_int(r, "num_attention_heads", -2);
  c->n_kv_head = c->n_head;
  c->head_dim = c->n_head > 0 ? c->d_model / c->n_head : 0;
  c->d_ff = get_int(r, "intermediate_size", -2);
  c->vocab_size = get_int(r, "vocab_size", -2);
  c->n_ctx = get_int(r, "max_position_embeddings", 2048);
  c->norm = LMWB_NORM_LAYER;
  c->norm_eps = get_float(r, "layer_norm_eps", 1e-5);
  c->rope_theta = get_float(r, "rotary_emb_base", get_num(r, "rope_theta", 10000.0));
  double pct = get_num(r, "rotary_pct", get_num(r, "partial_rotary_factor", 1.0));
  if (r->ok && (!(pct > 0.0) || pct > 1.0)) {
    lmwb_input_error(r->error, "%s: rotary_pct = %g must be in (0, 1]", r->origin, pct);
    r->ok = FALSE;
  }
  c->rotary_dim = (int)(c->head_dim * pct);
  read_act(r, get_str(r, "hidden_act", "gelu"), c);
  c->parallel_residual = get_bool(r, "use_parallel_residual", TRUE);
  c->tied_head = get_bool(r, "tie_word_embeddings", FALSE);
  gboolean bias = get_bool(r, "attention_bias", TRUE);
  c->qkv_bias = c->o_bias = bias;
  c->mlp_bias = c->norm_bias = true;
  if (r->ok && member(r, "rope_scaling")) {
    lmwb_input_error(r->error, "%s: rope_scaling is not supported yet", r->origin);
    r->ok = FALSE;
  }
}

gboolean lmwb_config_validate(const LmwbConfig *c, GError **error) {
#define NEED(cond, ...) do { if (!(cond)) { lmwb_input_error(error, __VA_ARGS__); return FALSE; } } while (0)
  NEED(c->n_layer >= 1 && c->n_layer <= MAX_LAYERS, "config: number of layers %d is out of range (1..%d)", c->n_layer, MAX_LAYERS);
  NEED(c->d_model >= 1 && c->d_model <= MAX_DIM, "config: hidden size %d is out of range", c->d_model);
  NEED(c->n_head >= 1 && c->n_head <= 4 * (int64_t)c->d_model, "config: number of heads %d is out of range", c->n_head);
  NEED(c->n_kv_head >= 1 && c->n_head % c->n_kv_head == 0,
       "config: %d attention heads is not a multiple of %d key/value heads", c->n_head, c->n_kv_head);
  NEED(c->head_dim >= 1 && c->head_dim <= MAX_DIM, "config: head size %d is out of range", c->head_dim);
  /* Sizes are multiplied in int elsewhere: bound the products here, in 64 bits. */
  NEED((int64_t)c->head_dim * c->n_head <= 4 * MAX_DIM, "config: %d heads of size %d are out of range", c->n_head, c->head_dim);
  NEED(c->arch == LMWB_ARCH_LLAMA || c->head_dim * c->n_head == c->d_model,
       "config: hidden size %d is not divisible by %d heads", c->d_model, c->n_head);
  NEED(c->d_ff >= 1 && c->d_ff <= MAX_DIM * 8, "config: MLP size %d is out of range", c->d_ff);
  NEED(c->vocab_size >= 1 && c->vocab_size <= MAX_VOCAB, "config: vocab_size %d is out of range", c->vocab_size);
  NEED(c->n_ctx >= 1 && c->n_ctx <= MAX_CTX, "config: context length %d is out of range", c->n_ctx);
  NEED(isfinite(c->norm_eps) && c->norm_eps > 0 && c->norm_eps < 1, "config: norm epsilon %g is out of range", c->norm_eps);
  if (!c->learned_pos) {
    NEED(c->rotary_dim >= 2 && c->rotary_dim <= c->head_dim && c->rotary_dim % 2 == 0,
         "config: rotary dims %d must be even and within the head size %d", c->rotary_dim, c->head_dim);
    NEED(isfinite(c->rope_theta) && c->rope_theta > 1, "config: rope_theta %g is out of range", c->rope_theta);
  }
  return TRUE;
#undef NEED
}

gboolean lmwb_config_load_data(const char *json, size_t len, const char *origin, LmwbConfig *cfg, GError **error) {
  memset(cfg, 0, sizeof *cfg);
  g_autoptr(JsonNode) root = lmwb_json_parse(json, len, origin, error);
  if (!root) return FALSE;
  if (!JSON_NODE_HOLDS_OBJECT(root)) {
    lmwb_input_error(error, "%s: expected a JSON object", origin);
    return FALSE;
  }
  Reader r = {json_node_get_object(root), origin, error, TRUE};
  const char *type = get_str(&r, "model_type", NULL);
  if (!r.ok) return FALSE;
  if (!type) {
    lmwb_input_error(error, "%s: field \"model_type\" is missing (supported: %s)", origin, lmwb_config_supported());
    return FALSE;
  }
  g_strlcpy(cfg->model_type, type, sizeof cfg->model_type);
  if (!strcmp(type, "gpt2")) read_gpt2(&r, cfg);
  else if (!strcmp(type, "llama") || !strcmp(type, "mistral") || !strcmp(type, "qwen2")) read_llama(&r, cfg, type);
  else if (!strcmp(type, "gpt_neox")) read_neox(&r, cfg);
  else {
    lmwb_input_error(error, "%s: model_type \"%s\" is not supported; supported architectures: %s",
                     origin, type, lmwb_config_supported());
    return FALSE;
  }
  cfg->bos_id = get_token_id(&r, "bos_token_id");
  cfg->eos_id = get_token_id(&r, "eos_token_id");
  /* Small configs often keep GPT-2's default ids (50256) beyond their vocabulary: ignore them. */
  if (cfg->bos_id >= cfg->vocab_size) cfg->bos_id = -1;
  if (cfg->eos_id >= cfg->vocab_size) cfg->eos_id = -1;
  if (!r.ok) return FALSE;
  if (lmwb_config_validate(cfg, error)) return TRUE;
  g_prefix_error(error, "%s: ", origin); /* which file the out-of-range size came from */
  return FALSE;
}

gboolean lmwb_config_load(const char *path, LmwbConfig *cfg, GError **error) {
  size_t len = 0;
  g_autofree char *data = lmwb_file_read(path, MAX_CONFIG_BYTES, LMWB_READ_REGULAR, &len, error);
  if (!data) return FALSE;
  return lmwb_config_load_data(data, len, path, cfg, error);
}

/* A float field as the short decimal a person wrote (1e-05, not 9.99999974737875e-06). */
static double short_decimal(float v) {
  char buf[32];
  g_snprintf(buf, sizeof buf, "%.7g", v);
  return g_ascii_strtod(buf, NULL);
}

char *lmwb_config_to_json(const LmwbConfig *c, const char *torch_dtype) {
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
#define KI(k, v) do { json_builder_set_member_name(b, k); json_builder_add_int_value(b, v); } while (0)
#define KD(k, v) do { json_builder_set_member_name(b, k); json_builder_add_double_value(b, v); } while (0)
#define KS(k, v) do { json_builder_set_member_name(b, k); json_builder_add_string_value(b, v); } while (0)
#define KB(k, v) do { json_builder_set_member_name(b, k); json_builder_add_boolean_value(b, v); } while (0)
  const char *arch_class = c->arch == LMWB_ARCH_GPT2 ? "GPT2LMHeadModel"
                           : c->arch == LMWB_ARCH_NEOX ? "GPTNeoXForCausalLM"
                           : !strcmp(c->model_type, "qwen2") ? "Qwen2ForCausalLM"
                           : !strcmp(c->model_type, "mistral") ? "MistralForCausalLM" : "LlamaForCausalLM";
  json_builder_set_member_name(b, "architectures");
  json_builder_begin_array(b);
  json_builder_add_string_value(b, arch_class);
  json_builder_end_array(b);
  KS("model_type", c->model_type);
  KI("vocab_size", c->vocab_size);
  const char *act = c->act == LMWB_ACT_GELU_TANH ? "gelu_new" : c->act == LMWB_ACT_GELU_ERF ? "gelu" : "silu";
  if (c->arch == LMWB_ARCH_GPT2) {
    KI("n_layer", c->n_layer); KI("n_embd", c->d_model); KI("n_head", c->n_head);
    KI("n_inner", c->d_ff); KI("n_positions", c->n_ctx); KI("n_ctx", c->n_ctx);
    KD("layer_norm_epsilon", short_decimal(c->norm_eps)); KS("activation_function", act);
    KD("attn_pdrop", 0.0); KD("embd_pdrop", 0.0); KD("resid_pdrop", 0.0);
    KD("initializer_range", 0.02); KB("tie_word_embeddings", c->tied_head);
  } else {
    KI("num_hidden_layers", c->n_layer); KI("hidden_size", c->d_model);
    KI("num_attention_heads", c->n_head); KI("intermediate_size", c->d_ff);
    KI("max_position_embeddings", c->n_ctx); KS("hidden_act", act);
    KB("tie_word_embeddings", c->tied_head);
    if (c->arch == LMWB_ARCH_LLAMA) {
      KI("num_key_value_heads", c->n_kv_head); KI("head_dim", c->head_dim);
      KD("rms_norm_eps", short_decimal(c->norm_eps)); KD("rope_theta", short_decimal(c->rope_theta));
      if (strcmp(c->model_type, "qwen2")) KB("attention_bias", c->qkv_bias);
      KB("mlp_bias", c->mlp_bias);
    } else {
      KD("layer_norm_eps", short_decimal(c->norm_eps)); KD("rotary_emb_base", short_decimal(c->rope_theta));
      KD("rotary_pct", (double)c->rotary_dim / c->head_dim);
      KB("use_parallel_residual", c->parallel_residual); KB("attention_bias", c->qkv_bias);
    }
  }
  if (c->bos_id >= 0) KI("bos_token_id", c->bos_id);
  if (c->eos_id >= 0) KI("eos_token_id", c->eos_id);
  KS("torch_dtype", torch_dtype ? torch_dtype : "float32");
  json_builder_end_object(b);
#undef KI
#undef KD
#undef KS
#undef KB
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  return lmwb_json_generate(root, TRUE, NULL);
}
