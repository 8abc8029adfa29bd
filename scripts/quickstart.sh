#!/usr/bin/env bash
# Set-up and the main job in one go: packages, build, then the speedrun. Without
# a GPU that is `n speedrun tiny`: a small MoE trains on the shipped Wikipedia
# sample to its target loss on the CPU, is scored on CORE, and the run is
# appended to LEADERBOARD.json. Extra arguments go to `n speedrun`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
./build/n speedrun "$@"
