#!/usr/bin/env bash
# Rebuilds the TokFSM model, its codebooks and their figures (CARD.md) with the project's own
# commands: the FSM language -> a 4-layer GPT-2 (recipe.json) -> attention + MLP codebooks (k = 1)
# trained on the frozen model -> tokfsm eval. About 35 minutes on one core of a loaded 2-core machine.
# Usage (from the repository root, after building): bash data/models/tokfsm/rebuild.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
B=${LMWB_BATCH:-$root/build/ui/batch/lmwb-batch}
work=/tmp/tokfsm   # recipe.json's paths point here
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
rm -rf "$work/model"
"$B" tokfsm make --states 100 --edges 10 --seed 1 --sequences 50000 --valid 2000 --out "$work/data"
"$B" tokfsm train --data "$work/data" --out "$work/model" --threads 1   # model, then model/codebooks
cp "$work/data/fsm.json" "$work/data/valid.txt" "$here/fsm/"
cp "$work/model/config.json" "$work/model/model.safetensors" "$work/model/tokenizer.json" "$work/model/metrics.csv" "$here/"
cp "$work/model/codebooks/codebooks.json" "$work/model/codebooks/codebooks.safetensors" "$work/model/codebooks/train.json" "$here/codebooks/"
# the model without and with its codebooks: (a) LM and state accuracy, (b) codes vs neurons, (c) code patching
"$B" tokfsm eval --model "$here" --fsm "$here/fsm" --codebooks "$here/codebooks" --sequences 200 --threads 1 \
  --out "$here/eval.json"
