#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, after scripts/gpu-pack.sh
# packed .gpu/ here: unpacks the libraries, runs every GPU test, trains the tiny
# config on the GPU, and prints a short table last.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu-env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

N=.gpu/bin/n bash scripts/prep-tiny-data.sh > "$OUT/prep.log" 2>&1
# ONLY_RDEP=1 skips the op tests and the single-rank training (short device budgets).
if [ "${ONLY_RDEP:-0}" != 1 ]; then
status_tests=FAIL
if .gpu/bin/nmoe_gpu_tests --gtest_brief=1 2>&1 | tee "$OUT/gpu_tests.log" | tail -30; then status_tests=ok; fi

status_train=FAIL
if .gpu/bin/n train configs/tiny.toml --set device=cuda --set steps=100 --set validation_every=100 \
     --set checkpoint_dir=/tmp/nmoe-ckpt --set experiments_db=/tmp/nmoe-exp.db 2>&1 | tee "$OUT/train_tiny.log" | tail -8; then
  status_train=ok
fi

echo
echo "| check | result |"
echo "|---|---|"
echo "| GPU op and model tests | $status_tests ($(grep -E '^\[  PASSED|^\[  FAILED' "$OUT/gpu_tests.log" | head -2 | tr '\n' ' ')) |"
echo "| tiny config, 100 steps on cuda | $status_train ($(grep -E 'validation at step' "$OUT/train_tiny.log" | tail -1)) |"
fi

# Expert parallelism with several ranks on the one GPU (CUDA IPC between the
# processes): the tiny MoE for 6 steps on 1, 2 and 4 ranks (losses agree within
# bf16 noise), the transport benchmark at the super config's per-rank shapes,
# and a rank killed mid-run.
if [ "${RDEP:-0}" = 1 ]; then
  echo
  echo "| ranks | losses (6 steps, tiny MoE, cuda) | MoE comm share (steps 2-6) |"
  echo "|---|---|---|"
  # The third field: where the ranks wait for each other's rows (NMOE_RDEP_WAITS;
  # auto waits on the host when ranks share a GPU, as here; stream forces the
  # GPU-side flags).
  for run in "1 moe" "2 moe" "4 moe" "2 moe stream" "4 moe stream" "1 super" "2 super" "4 super" "4 super stream"; do
    set -- $run; W=$1; arch=$2; waits=${3:-auto}
    # "super": more, narrower experts and a larger top-k than the tiny config.
    extra=""; [ "$arch" = super ] && extra="--set n_routed_experts=16 --set n_activated_experts=4 --set moe_inter_dim=64 --set route_scale=2.0"
    devs=$(python3 -c "print(','.join(['0']*$W))")
    rm -rf /tmp/nmoe-ep$W
    NMOE_RDEP_WAITS=$waits NMOE_RUN=ep timeout 120 .gpu/bin/n train configs/tiny.toml $extra --nproc $W --devices "$devs" --set device=cuda \
      --set steps=6 --set log_every=1 --set micro_batch_size=2 --set validation_enabled=false \
      --set checkpoint_dir=/tmp/nmoe-ep$W/ckpt --set experiments_db=/tmp/nmoe-ep$W/exp.db > "$OUT/ep_train_$W.log" 2>&1
    echo "| $W ($arch, $waits waits) | exit $? $(python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(' '.join(f'{v:.5f}' for (v,) in c.execute(\"select value from metrics where run_id='ep' and tag='train/loss' order by step\")))" /tmp/nmoe-ep$W/exp.db 2>&1 | tail -c 200) | $(python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); v=[x for (x,) in c.execute(\"select value from metrics where run_id='ep' and tag='time/moe_comm_share' and step>1\")]; print(f'{sum(v)/len(v):.2f}' if v else '-')" /tmp/nmoe-ep$W/exp.db 2>&1 | tail -c 100) |"
  done
  echo
  for run in "2 auto" "4 auto" "2 stream" "4 stream"; do
    set -- $run; W=$1; waits=$2
    devs=$(python3 -c "print(','.join(['0']*$W))")
    echo "bench rdep, $W ranks, $waits waits:"
    NMOE_RDEP_WAITS=$waits timeout 120 .gpu/bin/n bench rdep --nproc $W --devices "$devs" --tokens 65536 --dim 768 \
      --experts 256 --top-k 7 --iters 10 2>&1 | tail -2 | tee "$OUT/bench_rdep_${W}_$waits.json"
  done
  # NCCL cannot run two ranks on one GPU: forcing it must stop with a clear error.
  NMOE_DENSE_COMM=nccl timeout 60 .gpu/bin/n train configs/tiny.toml --nproc 2 --devices 0,0 --set device=cuda \
    --set steps=2 --set checkpoint_dir=/tmp/nmoe-nccl/ckpt --set experiments_db=/tmp/nmoe-nccl/exp.db > "$OUT/ep_nccl.log" 2>&1
  echo "forced NCCL on one shared GPU: exit $? ($(grep -m1 -o 'NCCL refuses[^;]*' "$OUT/ep_nccl.log"))"
  grep -h -m1 "dense gradients and parameters" "$OUT/ep_train_2.log"
  # Kill one of two ranks after its first steps: the other must stop with an error.
  rm -rf /tmp/nmoe-kill
  .gpu/bin/n train configs/tiny.toml --nproc 2 --devices 0,0 --set device=cuda --set steps=100000 --set log_every=1 \
    --set checkpoint_dir=/tmp/nmoe-kill/ckpt --set experiments_db=/tmp/nmoe-kill/exp.db > "$OUT/ep_kill.log" 2>&1 &
  lp=$!
  for i in $(seq 1 60); do grep -q "step 3/" "$OUT/ep_kill.log" 2>/dev/null && break; sleep 1; done
  victim=$(pgrep -P $lp | tail -1)
  t0=$(date +%s); kill -9 "$victim"; wait $lp; rc=$?; t1=$(date +%s)
  echo "kill-a-rank: launcher exit $rc after $((t1 - t0)) s; $(grep -m1 -E 'error' "$OUT/ep_kill.log")"
fi

# Expert grouped GEMMs at the super shapes: the TMA, wgmma and mma.sync kernels
# (the tests of the non-default ones too), the per-expert cuBLAS loop and
# torch._grouped_mm, same GPU, same call.
if [ "${GG_BENCH:-0}" = 1 ]; then
  echo
  for v in "tma serial 128 auto" "tma serial 192 staged" "tma serial 256 staged" "tma serial 256 direct" "wgmma serial auto auto" \
           "mma serial auto auto" "wgmma overlap auto auto"; do
    set -- $v
    echo "grouped GEMM tests, $1 $2 $3 $4: $(NMOE_GROUPED_GEMM=$1 NMOE_GG_PIPELINE=$2 NMOE_GG_TILE_N=$3 NMOE_GG_STORE=$4 .gpu/bin/nmoe_gpu_tests \
      --gtest_brief=1 --gtest_filter='CudaGroupedGemm.*' 2>&1 | grep -E '^\[  (PASSED|FAILED)' | tr '\n' ' ')"
  done
  # A variant is kernel:pipeline[:tile width of the TMA kernel[:its store of 256-wide tiles]].
  for v in ${GG_VARIANTS:-auto:serial tma:serial:128 tma:serial:192 tma:serial:256:staged tma:serial:256:direct wgmma:serial wgmma:overlap mma:serial cublas:serial}; do
    IFS=: read -r impl pipe tile store <<< "$v"; tile=${tile:-auto}; store=${store:-auto}
    NMOE_GROUPED_GEMM=$impl NMOE_GG_PIPELINE=$pipe NMOE_GG_TILE_N=$tile NMOE_GG_STORE=$store .gpu/bin/nmoe_gpu_tests --gtest_also_run_disabled_tests \
      --gtest_filter='CudaGroupedGemm.DISABLED_*' 2>&1 | grep '^\[grouped-gemm' | sed "s/^\[grouped-gemm $impl/[grouped-gemm $impl-$pipe-$tile-$store/" \
      | tee -a "$OUT/grouped_gemm.txt"
  done
  python3 scripts/bench_torch_grouped_mm.py 2>&1 | tail -8 | tee -a "$OUT/grouped_gemm.txt"
fi

# Nsight Compute on the grouped GEMMs of the benchmark (launch 0: w13 forward;
# launch 55: w13 weight gradient) with NCU_IMPLS naming the implementations.
if [ -n "${NCU_IMPLS:-}" ]; then
  for impl in $NCU_IMPLS; do
    for skip in 0 55; do
      echo "== ncu $impl launch $skip"
      NMOE_GROUPED_GEMM=$impl timeout 120 ncu --clock-control none -k regex:grouped_gemm --launch-skip $skip \
        --launch-count 1 --section SpeedOfLight --section WarpStateStats --section Occupancy \
        .gpu/bin/nmoe_gpu_tests --gtest_also_run_disabled_tests --gtest_filter='CudaGroupedGemm.DISABLED_*' 2>&1 \
        | grep -E "Duration|Throughput|Warp Cycles Per Issued|Achieved Occupancy|Theoretical Occupancy|Registers|stall|Stall|grouped_gemm" \
        | grep -v "^\[grouped-gemm" | head -30
    done
  done
fi

# Where a step's time goes: each op between two synchronizations (n bench --op-times).
if [ -n "${OP_TIMES:-}" ]; then
  for cfg in $OP_TIMES; do
    echo
    timeout 150 .gpu/bin/n bench "configs/speedrun/$cfg.toml" --set device=cuda --micro-batch 16 --seq 2048 \
      --steps 2 --warmup 1 --op-times 2>&1 >/dev/null | tee "$OUT/op_times_$cfg.txt" | head -24
  done
fi

# Throughput of the speedrun models at micro-batch 16 x 2048 next to the PyTorch
# baseline (when BASELINE points at torch_moe_baseline.py), same GPU, same call.
if [ "${BENCH:-0}" = 1 ]; then
  echo
  echo "| impl | config | tokens/s | ms per micro-batch | MFU | peak memory GiB | host ms per step |"
  echo "|---|---|---|---|---|---|---|"
  for cfg in dense moe super; do
    timeout 150 .gpu/bin/n bench "configs/speedrun/$cfg.toml" --set device=cuda --micro-batch 16 --seq 2048 \
      --steps "${BENCH_STEPS:-3}" --warmup 1 > "$OUT/bench_$cfg.json" 2> "$OUT/bench_$cfg.err" || true
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"| nmoe | $cfg | {d['tokens_per_s']:.0f} | {d['ms_per_micro_batch']:.1f} | {d['mfu']:.3f} | {d['measured_mem_gib']:.2f} (plan {d['planned_mem_gib']:.2f}) | {d['host_ms_per_step']:.1f} |\")" \
      "$OUT/bench_$cfg.json" 2>/dev/null || echo "| nmoe | $cfg | failed: $(tail -c 200 "$OUT/bench_$cfg.err" | tr '\n' ' ') | | | | |"
    # BENCH_ACCUMULATE=K: also K micro-batches per optimizer step (the speedrun
    # configs' batch_size is 16 micro-batches of 16 x 2048), ms per micro-batch.
    if [ -n "${BENCH_ACCUMULATE:-}" ]; then
      timeout 150 .gpu/bin/n bench "configs/speedrun/$cfg.toml" --set device=cuda --micro-batch 16 --seq 2048 \
        --steps 2 --warmup 1 --accumulate "$BENCH_ACCUMULATE" > "$OUT/bench_${cfg}_acc.json" 2> "$OUT/bench_${cfg}_acc.err" || true
      python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"| nmoe, $BENCH_ACCUMULATE micro-batches per step | $cfg | {d['tokens_per_s']:.0f} | {d['ms_per_micro_batch']:.1f} | {d['mfu']:.3f} | {d['measured_mem_gib']:.2f} |\")" \
        "$OUT/bench_${cfg}_acc.json" 2>/dev/null || echo "| nmoe, accumulated | $cfg | failed: $(tail -c 200 "$OUT/bench_${cfg}_acc.err" | tr '\n' ' ') | | | |"
    fi
    if [ -n "${BASELINE:-}" ]; then
      for mode in ${BASELINE_MODES:-eager --compile}; do
        [ "$mode" = eager ] && mode=""
        timeout 200 python3 "$BASELINE" --config "$cfg" --micro-batch 16 --steps 10 --warmup 3 $mode \
          > "$OUT/torch_${cfg}${mode}.json" 2>/dev/null || true
        python3 -c "import json,sys; d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print(f\"| {d['impl']} | $cfg | {d['tokens_per_s']} | {d['ms_per_step']} | {d['mfu']} | {d['peak_mem_gib']} |\")" \
          "$OUT/torch_${cfg}${mode}.json" 2>/dev/null || echo "| pytorch$mode | $cfg | failed | | | |"
      done
    fi
  done
fi
