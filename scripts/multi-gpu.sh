#!/usr/bin/env bash
# Expert parallelism over the GPUs of one machine, in one call: the figures
# docs/perf.md records for a multi-GPU machine. Runs on the GPU machine from
# the repository root after scripts/gpu-pack.sh:
#
#   bash scripts/multi-gpu.sh              # 1, 2, 4 and 8 ranks, as far as there are GPUs
#   DRY_RUN=1 bash scripts/multi-gpu.sh    # 1, 2 and 4 ranks all on GPU 0 with small
#                                          # batches: checks the script on one GPU (its
#                                          # figures are not multi-GPU figures)
#
# SECTIONS (default: all three, in this order):
#   transport    `n bench rdep` at the super config's per-rank shapes (32 x 2048
#                tokens, 256 experts, top-7, dim 768, BF16): dispatch and return ms
#                and GB/s per rank, next to NCCL all-to-all on the same bytes
#                (scripts/bench_nccl_alltoall.py, PyTorch; a reference only)
#   scaling      `n bench --nproc W` of the moe and super configs, micro-batch fixed
#                per GPU (weak scaling): tokens/s per GPU, scaling efficiency, MFU,
#                MoE transport share, and the super speedrun time projected from
#                the rate at the largest rank count
#   equivalence  the tiny MoE, 6 steps, at every rank count: the losses per step
#                (the same within bf16 noise)
# NVLink multicast stays off (scripts/gpu-env.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/nmoe-multi-gpu}
source scripts/gpu-env.sh
DRY=${DRY_RUN:-0}
GPUS=${GPUS:-$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)}
SECTIONS=${SECTIONS:-transport scaling equivalence}
if [ "$DRY" = 1 ]; then
  COUNTS="1 2 4"
  MICRO=${MICRO:-2}
else
  COUNTS=$(for w in 1 2 4 8; do [ "$w" -le "$GPUS" ] && printf '%s ' "$w"; done)
  MICRO=${MICRO:-16}
fi
ACCUMULATE=${ACCUMULATE:-2}  # 2 x 16 sequences per GPU and step: the speedrun's 256 over 8 GPUs
STEPS=${STEPS:-5}
devices() {  # the device list of W ranks
  if [ "$DRY" = 1 ]; then python3 -c "print(','.join(['0'] * $1))"
  else python3 -c "print(','.join(str(i) for i in range($1)))"; fi
}
# val FILE KEY FORMAT: KEY of the last JSON line of FILE, formatted ("-" if missing).
val() {
  python3 -c "import json,sys; d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print(format(d[sys.argv[2]], sys.argv[3]))" \
    "$1" "$2" "$3" 2>/dev/null || echo "-"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
echo "$GPUS GPU(s), rank counts: $COUNTS, dry run: $DRY"

if [[ " $SECTIONS " == *" transport "* ]]; then
  echo
  echo "| ranks | RDEP dispatch ms | RDEP return ms | MB to other ranks per rank | dispatch / return GB/s per rank | NCCL all-to-all ms | NCCL GB/s per rank |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for W in $COUNTS; do
    [ "$W" -lt 2 ] && continue
    f="$OUT/rdep_$W.json"
    timeout 300 .gpu/bin/n bench rdep --nproc "$W" --devices "$(devices "$W")" --tokens 65536 --dim 768 \
      --experts 256 --top-k 7 --iters 10 > "$f" 2> "$OUT/rdep_$W.err"
    # NCCL refuses two ranks on one GPU: the dry run measures it at one rank only (below).
    g="$OUT/nccl_a2a_$W.json"
    if [ "$DRY" != 1 ]; then
      timeout 300 python3 -m torch.distributed.run --nproc_per_node "$W" scripts/bench_nccl_alltoall.py \
        --tokens 65536 --top-k 7 --dim 768 > "$g" 2> "$OUT/nccl_a2a_$W.err"
    fi
    echo "| $W | $(val "$f" dispatch_ms .3f) | $(val "$f" return_ms .3f) | $(val "$f" remote_mb_per_rank .0f) | $(val "$f" dispatch_gb_per_s .0f) / $(val "$f" return_gb_per_s .0f) | $(val "$g" ms .3f) | $(val "$g" gb_per_s .0f) |"
  done
  if [ "$DRY" = 1 ]; then
    timeout 300 python3 -m torch.distributed.run --nproc_per_node 1 scripts/bench_nccl_alltoall.py \
      --tokens 65536 --top-k 7 --dim 768 > "$OUT/nccl_a2a_1.json" 2> "$OUT/nccl_a2a_1.err"
    echo "NCCL all-to-all, 1 rank (the script's check only): $(tail -1 "$OUT/nccl_a2a_1.json")"
  fi
  echo "NVLink on H200: 450 GB/s per direction per GPU."
fi

if [[ " $SECTIONS " == *" scaling "* ]]; then
  echo
  echo "| config | GPUs | tokens/s per GPU | all GPUs | efficiency | MFU | MoE transport share | ms per micro-batch |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  last_all=""; last_w=""
  for cfg in moe super; do
    base=""
    for W in $COUNTS; do
      f="$OUT/scale_${cfg}_$W.json"
      launch=""; [ "$W" -gt 1 ] && launch="--nproc $W --devices $(devices "$W")"
      timeout 600 .gpu/bin/n bench "configs/speedrun/$cfg.toml" --set device=cuda $launch --micro-batch "$MICRO" \
        --seq 2048 --accumulate "$ACCUMULATE" --steps "$STEPS" --warmup 1 > "$f" 2> "$OUT/scale_${cfg}_$W.err"
      tps=$(val "$f" tokens_per_s .1f)
      [ "$W" = 1 ] && base=$tps
      all=$(python3 -c "print(round($tps * $W))" 2>/dev/null || echo -)
      eff=$(python3 -c "print(f'{$tps / $base:.3f}')" 2>/dev/null || echo -)
      echo "| $cfg | $W | $(val "$f" tokens_per_s .0f) | $all | $eff | $(val "$f" mfu .3f) | $(val "$f" moe_comm_share .3f) | $(val "$f" ms_per_micro_batch .1f) |"
      if [ "$cfg" = super ] && [ "$all" != - ]; then last_all=$all; last_w=$W; fi  # the largest count that ran
    done
  done
  # The reference reaches the super target (validation loss 3.28) after 2.55 B
  # tokens, in 4284 s on 8 x H100.
  if [ -n "${last_all:-}" ]; then
    python3 -c "t=2.55e9/$last_all; print(f'super speedrun projected from $last_w GPU(s): {t:.0f} s to 2.55 B tokens (reference: 4284 s on 8 x H100)')"
  else
    echo "super speedrun projection: no super rate measured"
  fi
fi

if [[ " $SECTIONS " == *" equivalence "* ]]; then
  N=.gpu/bin/n bash scripts/prep-tiny-data.sh > "$OUT/prep.log" 2>&1
  echo
  echo "| ranks | training loss, steps 1-6 (tiny MoE, cuda) |"
  echo "|---|---|"
  for W in $COUNTS; do
    d=/tmp/nmoe-equiv-$W
    rm -rf "$d"
    launch=""; [ "$W" -gt 1 ] && launch="--nproc $W --devices $(devices "$W")"
    NMOE_RUN=equiv timeout 300 .gpu/bin/n train configs/tiny.toml $launch --set device=cuda --set steps=6 \
      --set log_every=1 --set micro_batch_size=2 --set validation_enabled=false \
      --set checkpoint_dir="$d/ckpt" --set experiments_db="$d/exp.db" > "$OUT/equiv_$W.log" 2>&1
    rc=$?
    echo "| $W | exit $rc: $(python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(' '.join(f'{v:.5f}' for (v,) in c.execute(\"select value from metrics where run_id='equiv' and tag='train/loss' order by step\")))" "$d/exp.db" 2>&1 | tail -c 200) |"
  done
  grep -h -m1 "dense gradients and parameters" "$OUT"/equiv_*.log | sort -u
fi
