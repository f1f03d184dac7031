#!/usr/bin/env bash
# Rebuilds the built-in model from nothing but the Brown corpus, with the project's own commands:
# corpus + world -> tokenizer -> four training stages -> this folder -> measurements (the
# MODEL_CARD.md figures). About 55-60 minutes on 2 cores. Usage: bash data/models/tiny-world/rebuild.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
B=${LMWB_BATCH:-$root/build/ui/batch/lmwb-batch}
brown=${BROWN:-$root/../shared/data/brown/brown.txt}
work=/tmp/tiny-world   # the recipes' paths point here
rm -rf "$work/warmup" "$work/ioi" "$work/mix" "$work/out"
"$B" make-corpus --seed 3 --brown "$brown" --out "$work/corpus"
"$B" train-tokenizer --corpus "$work/corpus/train.txt" --vocab-size 8192 --split-digits --out "$work/tok"
"$B" train --recipe "$here/recipe-warmup.json"   # stage 1: copy stories (warmup.txt)
"$B" train --recipe "$here/recipe-ioi.json"      # stage 2: IOI and held-out names' role sentences (ioi.txt)
"$B" train --recipe "$here/recipe-mix.json"      # stage 3: Brown + the whole world (train.txt)
"$B" train --recipe "$here/recipe.json"          # stage 4: more IOI text in the mix, gentler (the shipped weights)
cp "$work/warmup/metrics.csv" "$here/metrics-warmup.csv"
cp "$work/ioi/metrics.csv" "$here/metrics-ioi.csv"
cp "$work/mix/metrics.csv" "$here/metrics-mix.csv"
cp "$work/out/config.json" "$work/out/model.safetensors" "$work/out/tokenizer.json" "$work/out/metrics.csv" "$here/"
cp "$work/corpus/world.json" "$here/world.json"
"$B" perplexity --model "$here" --file "$work/corpus/valid_brown.txt"
"$B" eval-world --model "$here"
