// Shape logic shared by rope and attention on the packed qkv layout
// [N, 3, H, Dh]: row n holds H q heads, then H k heads, then H v heads.
#pragma once

#include "backend/cuda/cuda_common.cuh"

namespace nmoe::cuda {

struct QkvLayout {
  int64_t N = 0, H = 0, Dh = 0, T = 0, B = 0;
};

inline QkvLayout qkv_layout(const char* op, const Tensor& qkv, int seq_len) {
  NMOE_CHECK(qkv.ndim() == 4 && qkv.size(1) == 3, op, ": qkv must be [N, 3, H, Dh], got ",
             qkv.shape.str());
  check_data(op, "qkv", qkv);
  QkvLayout L;
  L.N = qkv.size(0);
  L.H = qkv.size(2);
  L.Dh = qkv.size(3);
  L.T = seq_len;
  NMOE_CHECK(seq_len > 0 && L.N % seq_len == 0, op, ": seq_len ", seq_len,
             " must be positive and divide the token count N = ", L.N);
  L.B = L.N / seq_len;
  return L;
}

// out-like tensors are [N, H*Dh] (an [N, H, Dh] view is accepted too).
inline void check_head_outputs(const char* op, const char* name, const Tensor& t,
                               const QkvLayout& L) {
  NMOE_CHECK(t.ndim() >= 1 && t.size(0) == L.N && t.numel() == L.N * L.H * L.Dh, op, ": ", name,
             " must be [N, H*Dh] = [", L.N, ", ", L.H * L.Dh, "], got ", t.shape.str());
  check_data(op, name, t);
}

inline void check_lse(const char* op, const Tensor& lse, const QkvLayout& L) {
  NMOE_CHECK(lse.numel() == L.B * L.H * L.T, op, ": lse must be [B, H, T] = [", L.B, ", ", L.H,
             ", ", L.T, "], got ", lse.shape.str());
  check_data(op, "lse", lse);
}

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
