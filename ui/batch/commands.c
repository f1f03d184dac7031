/* The table of lmwb-batch subcommands, in the order `lmwb-batch --help` lists them. */
#include "ui/batch/cli.h"
#include "ui/batch/commands.h"

const LmwbCommand lmwb_commands[] = {
  {"info", "Describe a model: architecture, sizes, parameters, dtype, tokenizer", lmwb_cmd_info},
  {"tokenize", "Encode text with the model's tokenizer", lmwb_cmd_tokenize},
  {"logits", "Next-token logits [B,T,V] as .npy", lmwb_cmd_logits},
  {"activations", "Activations at a hook site as .npy", lmwb_cmd_activations},
  {"grad", "Gradient of the LM loss at a hook site as .npy", lmwb_cmd_grad},
  {"generate", "Continue a prompt (greedy or sampled)", lmwb_cmd_generate},
  {"perplexity", "Perplexity on a text file (sliding window; per line)", lmwb_cmd_perplexity},
  {"bench", "Tokens per second of forward / forward+backward", lmwb_cmd_bench},
  {NULL, NULL, NULL}};
