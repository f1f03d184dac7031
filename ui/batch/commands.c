/* The table of lmwb-batch subcommands, in the order `lmwb-batch --help` lists them. */
#include "ui/batch/cli.h"
#include "ui/batch/commands.h"
#include "ui/batch/cmd_world.h"
#include "ui/batch/cmd_kfac.h"

const LmwbCommand lmwb_commands[] = {
  {"info", "Describe a model: architecture, sizes, parameters, dtype, tokenizer", lmwb_cmd_info},
  {"tokenize", "Encode text with the model's tokenizer", lmwb_cmd_tokenize},
  {"logits", "Next-token logits [B,T,V] as .npy", lmwb_cmd_logits},
  {"activations", "Activations at a hook site as .npy", lmwb_cmd_activations},
  {"grad", "Gradient at a hook site (of a loss, or from injected gradients) as .npy", lmwb_cmd_grad},
  {"generate", "Continue a prompt (greedy or sampled)", lmwb_cmd_generate},
  {"perplexity", "Perplexity on a text file (sliding window; per line)", lmwb_cmd_perplexity},
  {"bench", "Tokens per second of forward / forward+backward", lmwb_cmd_bench},
  {"make-corpus", "Build the built-in model's training corpus (Brown + generated world) and its manifest", lmwb_cmd_make_corpus},
  {"eval-world", "Measure a model on the world's held-out facts, secrets, IOI and greater-than", lmwb_cmd_eval_world},
  {"train-tokenizer", "Learn a byte-level BPE tokenizer.json from text", lmwb_cmd_train_tokenizer},
  {"train", "Train or fine-tune a model from a recipe", lmwb_cmd_train},
  {"neurons decode", "Decode MLP neurons through the LM head: top tokens of each neuron (JSON/CSV)", lmwb_cmd_neurons_decode},
  {"neurons search", "Find the neurons whose decoded top tokens include given tokens", lmwb_cmd_neurons_search},
  {"neurons sweep", "Probability of a token as a neuron's clamp value moves (JSON + plot)", lmwb_cmd_neurons_sweep},
  {"neurons compare", "Share of neurons with the same top token in two models; most-changed neurons", lmwb_cmd_neurons_compare},
  {"transcoder train", "Train a transcoder for an MLP layer (or an SAE on a hook site) into a SAELens folder", lmwb_cmd_transcoder_train},
  {"transcoder eval", "FVU, L0, dead features and loss recovered of a transcoder set spliced into the model", lmwb_cmd_transcoder_eval},
  {"edit stats", "The key covariance of a layer's MLP output projection, for ROME and MEMIT", lmwb_cmd_edit_stats},
  {"edit requests", "CounterFact-style edit requests from the built-in world's facts", lmwb_cmd_edit_requests},
  {"edit rome", "Rewrite one fact with ROME (a rank-one change of one layer)", lmwb_cmd_edit_rome},
  {"edit memit", "Rewrite many facts with MEMIT (a change spread over layers)", lmwb_cmd_edit_memit},
  {"edit sequential", "Edit facts one after another, watching the monitor perplexity for collapse", lmwb_cmd_edit_sequential},
  {"edit plot", "Plot logs of edit sequences together (monitor perplexity per edit)", lmwb_cmd_edit_plot},
  {"graph", "The attribution graph of a prompt through transcoders, as graph JSON, DOT, SVG or PNG", lmwb_cmd_graph},
  {"circuit eap", "Edge attribution patching (EAP, EAP-IG) scores of a task's edges, top-N circuit", lmwb_cmd_circuit_eap},
  {"circuit prune", "Learn a task's circuit by edge pruning (hard-concrete masks, target sparsity)", lmwb_cmd_circuit_prune},
  {"circuit eval", "KL, logit difference, accuracy and exact match of a circuit (interchange ablation)", lmwb_cmd_circuit_eval},
  {"codebook train", "Train codebooks (discrete codes) for attention heads and MLP outputs of a frozen model", lmwb_cmd_codebook_train},
  {"codebook search", "Codes that stand for a regex over a text (precision, recall, contexts); topic codes", lmwb_cmd_codebook_search},
  {"codebook steer", "Share of sampled generations containing a word, code clamps off vs on (JSON + plot)", lmwb_cmd_codebook_steer},
  {"kfac collect", "K-FAC factors (input and output-gradient second moments) of MLP matrices over a text", lmwb_cmd_kfac_collect},
  {"kfac spectrum", "Eigenvalues of K-FAC factors and the curvature mass curve (JSON + plots)", lmwb_cmd_kfac_spectrum},
  {"kfac edit", "Remove the low-curvature components of MLP matrices: an edited model folder", lmwb_cmd_kfac_edit},
  {"kfac sweep", "Recitation, perplexity and facts against the K-FAC keep-mass; a recommended value", lmwb_cmd_kfac_sweep},
  {"memorisation eval", "Recitation of a memorised set (strict, loose, Levenshtein), perplexity, world figures", lmwb_cmd_memorisation_eval},
  {NULL, NULL, NULL}};
