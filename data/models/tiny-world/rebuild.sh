#!/usr/bin/env bash
# Rebuilds the built-in model from nothing but the Brown corpus, with the project's own commands:
# corpus + world -> tokenizer -> training -> this folder -> measurements (MODEL_CARD.md figures).
# About 45-70 minutes on 2 cores. Usage: bash data/models/tiny-world/rebuild.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
B=${LMWB_BATCH:-$root/build/ui/batch/lmwb-batch}
brown=${BROWN:-$root/../shared/data/brown/brown.txt}
work=/tmp/tiny-world   # the recipe's paths point here
rm -rf "$work/out"
"$B" make-corpus --seed 3 --brown "$brown" --out "$work/corpus"
"$B" train-tokenizer --corpus "$work/corpus/train.txt" --vocab-size 8192 --split-digits --out "$work/tok"
"$B" train --recipe "$here/recipe.json"
cp "$work/out/config.json" "$work/out/model.safetensors" "$work/out/tokenizer.json" "$work/out/metrics.csv" "$here/"
cp "$work/corpus/world.json" "$here/world.json"
"$B" perplexity --model "$here" --file "$work/corpus/valid_brown.txt"
"$B" eval-world --model "$here"
