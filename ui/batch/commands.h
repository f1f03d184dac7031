/* Entry points of the lmwb-batch subcommands (each file of ui/batch/ owns a few). */
#pragma once

int lmwb_cmd_info(int argc, char **argv);
int lmwb_cmd_tokenize(int argc, char **argv);
int lmwb_cmd_logits(int argc, char **argv);
int lmwb_cmd_grad(int argc, char **argv);
int lmwb_cmd_activations(int argc, char **argv);
int lmwb_cmd_generate(int argc, char **argv);
int lmwb_cmd_perplexity(int argc, char **argv);
int lmwb_cmd_bench(int argc, char **argv);
int lmwb_cmd_train_tokenizer(int argc, char **argv);
int lmwb_cmd_train(int argc, char **argv);
int lmwb_cmd_neurons_decode(int argc, char **argv);
int lmwb_cmd_neurons_search(int argc, char **argv);
int lmwb_cmd_neurons_sweep(int argc, char **argv);
int lmwb_cmd_neurons_compare(int argc, char **argv);
int lmwb_cmd_transcoder_train(int argc, char **argv);
int lmwb_cmd_transcoder_eval(int argc, char **argv);
int lmwb_cmd_graph(int argc, char **argv);
int lmwb_cmd_edit_stats(int argc, char **argv);
int lmwb_cmd_edit_requests(int argc, char **argv);
int lmwb_cmd_edit_rome(int argc, char **argv);
int lmwb_cmd_edit_memit(int argc, char **argv);
int lmwb_cmd_edit_sequential(int argc, char **argv);
int lmwb_cmd_edit_plot(int argc, char **argv);
int lmwb_cmd_circuit_eap(int argc, char **argv);
int lmwb_cmd_circuit_prune(int argc, char **argv);
int lmwb_cmd_circuit_eval(int argc, char **argv);
int lmwb_cmd_codebook_train(int argc, char **argv);
int lmwb_cmd_codebook_search(int argc, char **argv);
int lmwb_cmd_codebook_steer(int argc, char **argv);
int lmwb_cmd_tokfsm_make(int argc, char **argv);
int lmwb_cmd_tokfsm_train(int argc, char **argv);
int lmwb_cmd_tokfsm_eval(int argc, char **argv);
