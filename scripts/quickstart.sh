#!/usr/bin/env bash
# Set-up and the main job in one go: packages, build, data, then training of
# configs/tiny.toml (a ~2M-parameter MoE) on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
bash scripts/prep-tiny-data.sh
./build/n train configs/tiny.toml "$@"
