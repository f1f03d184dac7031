/* lmwb-batch subcommands of the built-in model's corpus and world (app/train/corpus.h,
 * world_eval.h): make-corpus builds train.txt / valid_brown.txt / world.json; eval-world measures
 * a model on the manifest's held-out sets and prints JSON. Both return the exit status. */
#pragma once

int lmwb_cmd_make_corpus(int argc, char **argv);
int lmwb_cmd_eval_world(int argc, char **argv);
