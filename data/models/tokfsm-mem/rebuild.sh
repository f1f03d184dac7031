#!/usr/bin/env bash
# Rebuilds the TokFSM model with memorised walks and its K-FAC figures (CARD.md) with the project's
# own commands: the TokFSM language with 32 walks copied 300 times each -> a 4-layer GPT-2
# (recipe.json) -> K-FAC factors over ordinary walks -> kfac sweep. About 15 minutes on a 2-core machine.
# Usage (from the repository root, after building): bash data/models/tokfsm-mem/rebuild.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
B=${LMWB_BATCH:-$root/build/ui/batch/lmwb-batch}
work=/tmp/tokfsm-mem   # recipe.json's paths point here
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
rm -rf "$work/model"
"$B" tokfsm make --states 100 --edges 10 --seed 1 --sequences 50000 --valid 2000 \
  --memorised 32 --repeats 300 --suffix-states 8 --out "$work/data"
"$B" train --recipe "$here/recipe.json"
cp "$work/data/fsm.json" "$work/data/valid.txt" "$here/fsm/"
cp "$work/data/memorised.jsonl" "$here/"
cp "$work/model/config.json" "$work/model/model.safetensors" "$work/model/tokenizer.json" "$work/model/metrics.csv" "$here/"
# K-FAC factors over 200,000 tokens of ordinary walks of the same machine (the training walks
# without the memorised copies: `tokfsm make` with the same seed and no --memorised)
"$B" tokfsm make --seed 1 --sequences 2000 --valid 1 --out "$work/plain"
"$B" kfac collect --model "$here" --file "$work/plain/train.txt" --tokens 200000 --context 129 \
  --layers 0-3 --matrices up,down --out "$work/factors"
"$B" kfac sweep --model "$here" --factors "$work/factors" --set "$here/memorised.jsonl" \
  --heldout "$here/fsm/valid.txt" --heldout-stride 129 --no-world \
  --keep-mass 0.9,0.94,0.95,0.96,0.97,0.98,0.99,0.995 --plot "$work/sweep.png" --out "$work/sweep.json"
cp "$work/sweep.png" "$work/sweep.json" "$here/"   # (a command never writes into the model folder it reads)
