#!/usr/bin/env bash
# Trains the tiny speedrun model (configs/speedrun/tiny.toml) for STEPS steps
# (default 200) on the shipped Wikipedia sample on one device and writes the
# training loss per step to OUT_CSV, for comparing the CPU (fp32) and CUDA
# (BF16) backends' curves. Usage:
#   N=build/n DEVICE=cpu OUT_CSV=runs/curves/cpu.csv bash scripts/loss-curves.sh
#   python3 scripts/compare-curves.py runs/curves/cpu.csv runs/curves/cuda.csv
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-build/n}
DEVICE=${DEVICE:-cpu}
STEPS=${STEPS:-200}
WORK=${WORK:-runs/curves}
OUT_CSV=${OUT_CSV:-$WORK/$DEVICE.csv}
mkdir -p "$WORK"
for split in train val; do
  if [ ! -f "$WORK/data/$split/manifest.json" ]; then
    "$N" data prep --source text --text-format wikiextractor --tokenizer bytes --name enwiki_sample \
      --data-files "assets/corpus/enwiki_sample/$split.txt.zst" --output "$WORK/data/$split" > /dev/null
  fi
done
rm -rf "$WORK/$DEVICE"
NMOE_RUN=curve "$N" train configs/speedrun/tiny.toml --set device="$DEVICE" --set steps="$STEPS" \
  --set target_loss=0 --set log_every=1 --set validation_every=50 --set eval_enabled=false \
  --set data_path="$WORK/data/train" --set validation_data_path="$WORK/data/val" \
  --set checkpoint_dir="$WORK/$DEVICE/ckpt" --set experiments_db="$WORK/$DEVICE/exp.db" > "$WORK/$DEVICE.log" 2>&1
python3 - "$WORK/$DEVICE/exp.db" "$OUT_CSV" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
rows = c.execute("select step, value from metrics where tag='train/loss' order by step").fetchall()
with open(sys.argv[2], "w") as f:
    f.write("step,loss\n")
    for s, v in rows:
        f.write(f"{s},{v:.6f}\n")
print(f"{len(rows)} steps -> {sys.argv[2]}")
PY
