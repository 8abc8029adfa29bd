#!/usr/bin/env bash
# Byte-tokenized tinyshakespeare shards for configs/tiny.toml: the first 90% of
# the text is the training split, the last 10% the validation split.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-./build/n}
src=data/corpus/tinyshakespeare.txt
out=data/tinyshakespeare
if [ -f "$out/train/manifest.json" ] && [ -f "$out/val/manifest.json" ]; then
  echo "data: $out already prepared"; exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
total=$(wc -c < "$src")
cut=$((total * 9 / 10))
head -c "$cut" "$src" > "$tmp/train.txt"
tail -c +"$((cut + 1))" "$src" > "$tmp/val.txt"
"$N" data prep --source text --tokenizer bytes --data-files "$tmp/train.txt" --output "$out/train" --name tinyshakespeare
"$N" data prep --source text --tokenizer bytes --data-files "$tmp/val.txt" --output "$out/val" --name tinyshakespeare
