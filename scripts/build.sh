#!/usr/bin/env bash
# Configures and builds nmoe into build/ (Release).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(bash scripts/cpus.sh)"
