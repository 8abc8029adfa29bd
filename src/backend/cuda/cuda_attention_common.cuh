// Shape logic shared by rope and attention on the packed qkv layout
// [N, 3, H, Dh]: row n holds H q heads, then H k heads, then H v heads.
#pragma once

#include "backend/cuda/cuda_common.cuh"

namespace nmoe::cuda {

// The layout and its checks are shared with every backend (ops/op_checks.h).
using ops::QkvLayout;
using ops::qkv_layout;

// ---- tiled kernels ------------------------------------------------------------------
// Attention kernels work on tiles of kTile queries and kTile keys per (b, h):
// 4 warps, each owning kTile/4 rows; a lane owns one column of the score tile.
// Tiles are staged in shared memory as fp32 with an odd row pitch (DMAX + 1)
// so lane-strided row reads are free of bank conflicts.
constexpr int kTile = 32;
constexpr int kAttnWarps = 4;
constexpr int kRowsPerWarp = kTile / kAttnWarps;

// Head-dim capacity of a kernel instantiation for a runtime head dim.
inline int attention_dmax(const char* op, int64_t Dh) {
  NMOE_CHECK(Dh >= 1 && Dh <= 128, op, ": head dim ", Dh,
             " is not supported by the CUDA attention kernels (1..128)");
  return Dh <= 32 ? 32 : Dh <= 64 ? 64 : 128;
}

// dst[r][d] = src[(t0 + r) * row_stride + d] for r < kTile, d < Dh; rows at or
// past T are zero (so masked products never meet garbage).
template <int LD, class T>
__device__ __forceinline__ void load_tile(float* dst, const T* src, int t0, int T_,
                                          int64_t row_stride, int Dh) {
  for (int i = threadIdx.x; i < kTile * Dh; i += blockDim.x) {
    const int r = i / Dh, d = i - r * Dh;
    const int t = t0 + r;
    dst[r * LD + d] = t < T_ ? to_f32(src[int64_t(t) * row_stride + d]) : 0.f;
  }
}

}  // namespace nmoe::cuda
