#!/usr/bin/env bash
# Rebuilds the built-in model's codebook set (CARD.md) and its figures. Usage: make.sh [BUILD_DIR]
# Needs the Brown corpus at ../shared/data/brown/brown.txt (as rebuild.sh of the model does).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
batch=${1:-$root/build}/ui/batch/lmwb-batch
shared=${LMWB_SHARED:-$root/../shared}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The model's own corpus (seed 3, as MODEL_CARD.md); codes are trained on its first 4 MB.
"$batch" make-corpus --seed 3 --brown "$shared/data/brown/brown.txt" --out "$work/corpus" > /dev/null
head -c 4000000 "$work/corpus/train.txt" > "$work/train4m.txt"
# Held-out text for search: 1 MB of train.txt the codes never saw.
tail -c +8000001 "$work/corpus/train.txt" | head -c 1000000 > "$work/search.txt"
OMP_NUM_THREADS=2 "$batch" codebook train --sites attn --codes 1024 --k 8 --steps 600 --lr 2e-3 --kmeans \
  --dead-every 150 --checkpoint-every 100 --eval-windows 32 --file "$work/train4m.txt" --context 64 --batch 8 \
  --seed 1 --out "$work/set" > "$work/train.json"
cp "$work/set/codebooks.json" "$work/set/codebooks.safetensors" "$work/set/train.json" "$here/"
# Loss cost on the held-out Brown text.
"$batch" perplexity --file "$work/corpus/valid_brown.txt" > "$here/perplexity_plain.json"
"$batch" perplexity --file "$work/corpus/valid_brown.txt" --codebooks "$here" > "$here/perplexity_codebooks.json"
# The codes that stand for " capital" (the best by precision in each layer above 0: layer 0's are
# the token itself, which clamped everywhere breaks the text), and steering with them on.
"$batch" codebook search --codebooks "$here" --file "$work/search.txt" --regex ' capital' --tokens 20000 \
  --examples 3 --min-precision -1 --top 1 > "$here/search_capital.json"
clamps=$(python3 -c '
import json, sys
best = {}
for h in json.load(open(sys.argv[1]))["codes"]:
    if h["layer"] > 0 and h["layer"] not in best:
        best[h["layer"]] = h["clamp"]
print(" ".join("--clamp-code " + best[l] for l in sorted(best)))' "$here/search_capital.json")
# shellcheck disable=SC2086
"$batch" codebook steer --codebooks "$here" $clamps --word capital --samples 10 --max-tokens 24 \
  --prompt "The" --prompt "Yesterday" --prompt "He said that" --prompt "In the morning" \
  --plot "$here/steer_capital.svg" > "$here/steer_capital.json"
