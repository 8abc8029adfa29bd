#!/usr/bin/env bash
# Builds the GPU binaries on this (CUDA-capable, GPU-less) machine into $BUILD
# (default build/) and packs them with the shared libraries the GPU machine's image lacks into
# .gpu/ (ignored by git), for scripts/gpu-check.sh to run there.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target n nmoe_gpu_tests
rm -rf .gpu && mkdir -p .gpu/bin .gpu/lib
cp "$BUILD"/n "$BUILD"/nmoe_gpu_tests .gpu/bin/
# Every shared library except glibc's, CUDA's (the GPU image brings its own CUDA 13)
# and cuDNN's (hundreds of MB; gpu-check.sh finds the GPU image's copy).
for b in .gpu/bin/*; do ldd "$b"; done | awk '/=>/ {print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libresolv.so*) ;;
    libcuda.so*|libcudart.so*|libcublas*.so*|libnvidia*) ;;
    libcudnn*) ;;
    *) cp -L "$lib" .gpu/lib/ ;;
  esac
done
# xz: the libraries (OpenBLAS above all) must fit the transfer with the binaries.
tar -C .gpu -cJf .gpu/deps.tar.xz lib && rm -rf .gpu/lib
strip .gpu/bin/*
tar -C .gpu -cJf .gpu/bin.tar.xz bin && rm -rf .gpu/bin
du -sh .gpu/* 
