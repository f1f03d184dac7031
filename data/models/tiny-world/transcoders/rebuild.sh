#!/usr/bin/env bash
# Rebuilds the built-in model's transcoders (one per MLP layer, SAELens folders layer_0..layer_3)
# and the figures of CARD.md, with the project's own commands: the model's corpus (make-corpus, as
# ../rebuild.sh makes it) -> a transcoder per layer -> measurements on held-out text.
# About 25 minutes on 2 cores. Usage (from anywhere, after building): bash data/models/tiny-world/transcoders/rebuild.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
model=$(cd "$here/.." && pwd)
root=$(cd "$model/../../.." && pwd)
B=${LMWB_BATCH:-$root/build/ui/batch/lmwb-batch}
brown=${BROWN:-$root/../shared/data/brown/brown.txt}
work=${WORK:-/tmp/tiny-world-transcoders}
rm -rf "$work/set"
mkdir -p "$work"
"$B" make-corpus --seed 3 --brown "$brown" --out "$work/corpus" > /dev/null
# The model's training text (95% of Brown and the generated world), less its last 4,000 lines,
# which the transcoders never see and are measured on.
head -n -4000 "$work/corpus/train.txt" > "$work/train.txt"
tail -n 4000 "$work/corpus/train.txt" > "$work/heldout.txt"
for L in 0 1 2 3; do
  nice "$B" transcoder train --model "$model" --layer "$L" --features 4096 --k 32 --tokens 2097152 \
    --batch 1024 --buffer 65536 --lr 1e-3 --seed 1 --dtype F16 --file "$work/train.txt" --out "$work/set/layer_$L"
done
for L in 0 1 2 3; do
  mkdir -p "$here/layer_$L"
  cp "$work/set/layer_$L"/{cfg.json,sae_weights.safetensors,train.json,metrics.csv} "$here/layer_$L/"
done
# A short held-out sample for the default test suite (tests/unit/circuits/test_transcoder_builtin.py).
head -n 240 "$work/heldout.txt" > "$here/sample.txt"
nice "$B" transcoder eval --model "$model" --transcoders "$here" --file "$work/heldout.txt" --out "$here/eval-heldout.json"
nice "$B" transcoder eval --model "$model" --transcoders "$here" --file "$work/corpus/valid_brown.txt" --out "$here/eval-brown.json"
nice "$B" transcoder eval --model "$model" --transcoders "$here" --file "$here/sample.txt" --out "$here/eval-sample.json"
