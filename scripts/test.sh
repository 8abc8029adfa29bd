#!/usr/bin/env bash
# Set-up, build and the whole test suite (CTest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
jobs=$(bash scripts/cpus.sh)
cd build
echo "test: $jobs parallel tests"
if ! ctest --output-on-failure -j"$jobs" "$@"; then
  # Repeat the failures last so their messages end the log.
  echo "=== failed tests, run again ==="
  ctest --rerun-failed --output-on-failure || true
  exit 1
fi
