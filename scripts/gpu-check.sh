#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, after scripts/gpu-pack.sh
# packed .gpu/ here: unpacks the libraries, runs every GPU test, trains the tiny
# config on the GPU, and prints a short table last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/nmoe-gpu-out}
mkdir -p "$OUT" /tmp/nmoe-libs
tar -I zstd -xf .gpu/deps.tar.zst -C /tmp/nmoe-libs
export LD_LIBRARY_PATH=/tmp/nmoe-libs/lib:${LD_LIBRARY_PATH:-}
export NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

status_tests=FAIL
if .gpu/bin/nmoe_gpu_tests --gtest_brief=1 2>&1 | tee "$OUT/gpu_tests.log" | tail -30; then status_tests=ok; fi

status_train=FAIL
N=.gpu/bin/n bash scripts/prep-tiny-data.sh > "$OUT/prep.log" 2>&1
if .gpu/bin/n train configs/tiny.toml --set device=cuda --set steps=100 --set validation_every=100 \
     --set checkpoint_dir=/tmp/nmoe-ckpt --set experiments_db=/tmp/nmoe-exp.db 2>&1 | tee "$OUT/train_tiny.log" | tail -8; then
  status_train=ok
fi

echo
echo "| check | result |"
echo "|---|---|"
echo "| GPU op and model tests | $status_tests ($(grep -E '^\[  PASSED|^\[  FAILED' "$OUT/gpu_tests.log" | head -2 | tr '\n' ' ')) |"
echo "| tiny config, 100 steps on cuda | $status_train ($(grep -E 'validation at step' "$OUT/train_tiny.log" | tail -1)) |"
