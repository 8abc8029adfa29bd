#!/usr/bin/env bash
# Installs the Debian packages nmoe needs to build and test (run as root or with sudo).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
PKGS=(build-essential cmake pkg-config libopenblas-openmp-dev libtomlplusplus-dev libsqlite3-dev
      nlohmann-json3-dev libgtest-dev libgmock-dev git libpcre2-dev libcurl4-openssl-dev libzstd-dev libsnappy-dev
      zlib1g-dev libutf8proc-dev procps)
missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi
