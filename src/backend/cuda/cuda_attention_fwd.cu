// Causal softmax attention forward. BF16 runs on cuDNN's fused attention by
// default (cuda_cudnn_attention.cpp), else on the tensor-core flash kernels
// (cuda_flash_attention.cu); the kernel below is the fp32 CUDA-core fallback:
// one block per (query tile, sequence, head),
// online softmax over key tiles; only one [kTile, kTile] score tile exists at a
// time (in registers). Deterministic: fixed loop order, shuffle-tree reductions.
#include <type_traits>

#include "backend/cuda/cuda_attention_common.cuh"
#include "backend/cuda/cuda_cudnn_attention.h"
#include "backend/cuda/cuda_flash_attention.h"

namespace nmoe {

using namespace cuda;

namespace {

template <class T, int DMAX>
__global__ void __launch_bounds__(kAttnWarps * 32)
    attn_fwd_kernel(const T* qkv, T* out, float* lse, int T_, int H, int Dh, float scale) {
  constexpr int LD = DMAX + 1, C = DMAX / 32, R = kRowsPerWarp;
  extern __shared__ float smem[];
  float* Qs = smem;
  float* Ks = Qs + kTile * LD;
  float* Vs = Ks + kTile * LD;
  const int qt = gridDim.x - 1 - blockIdx.x;  // longest rows first
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row_stride = 3LL * H * Dh;
  const T* q_base = qkv + int64_t(b) * T_ * row_stride + int64_t(h) * Dh;
  const int q0 = qt * kTile;
  load_tile<LD>(Qs, q_base, q0, T_, row_stride, Dh);

  float m[R], l[R], acc[R][C];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int c = 0; c < C; ++c) acc[r][c] = 0.f;
  }
  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * kTile;
    __syncthreads();  // the previous K/V tile is consumed
    load_tile<LD>(Ks, q_base + int64_t(H) * Dh, k0, T_, row_stride, Dh);
    load_tile<LD>(Vs, q_base + 2LL * H * Dh, k0, T_, row_stride, Dh);
    __syncthreads();
    float s[R];
#pragma unroll
    for (int r = 0; r < R; ++r) s[r] = 0.f;
    for (int d = 0; d < Dh; ++d) {
      const float kv = Ks[lane * LD + d];
#pragma unroll
      for (int r = 0; r < R; ++r) s[r] += Qs[(warp * R + r) * LD + d] * kv;
    }
    const int key = k0 + lane;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int qi = q0 + warp * R + r;
      const float sc = key <= qi ? s[r] * scale : -INFINITY;
      const float m_new = fmaxf(m[r], warp_max(sc));  // finite: key 0 is in the first tile
      const float p = expf(sc - m_new);
      const float corr = expf(m[r] - m_new);
      l[r] = l[r] * corr + warp_sum(p);
      m[r] = m_new;
#pragma unroll
      for (int c = 0; c < C; ++c) acc[r][c] *= corr;
#pragma unroll 8
      for (int j = 0; j < kTile; ++j) {
        const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
        for (int c = 0; c < C; ++c) acc[r][c] += pj * Vs[j * LD + lane + 32 * c];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int qi = q0 + warp * R + r;
    if (qi >= T_) continue;
    const float inv = 1.f / l[r];
    T* o = out + ((int64_t(b) * T_ + qi) * H + h) * Dh;
#pragma unroll
    for (int c = 0; c < C; ++c)
      if (lane + 32 * c < Dh) o[lane + 32 * c] = from_f32<T>(acc[r][c] * inv);
    if (lane == 0) lse[int64_t(bh) * T_ + qi] = m[r] + logf(l[r]);
  }
}

template <class T, int DMAX>
void launch_fwd(const char* op, cudaStream_t stream, const QkvLayout& L, const T* qkv, T* out,
                float* lse, float scale) {
  const size_t smem = 3 * kTile * (DMAX + 1) * sizeof(float);
  NMOE_CUDA_CHECK(op, cudaFuncSetAttribute(attn_fwd_kernel<T, DMAX>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(unsigned((L.T + kTile - 1) / kTile), unsigned(L.B * L.H));
  attn_fwd_kernel<T, DMAX><<<grid, kAttnWarps * 32, smem, stream>>>(
      qkv, out, lse, int(L.T), int(L.H), int(L.Dh), scale);
  NMOE_CUDA_LAUNCHED(op);
}

}  // namespace

void CudaBackend::attention_fwd(const Tensor& qkv, int seq_len, double scale, const Tensor& out,
                                const Tensor& lse) {
  const char* op = "attention_fwd";
  const QkvLayout L = ops::check_attention_fwd(qkv, seq_len, out, lse);
  dispatch_act(op, {{"qkv", qkv}, {"out", out}}, {{"lse", lse}}, [&](auto tag) {
    using T = decltype(tag);
    if (L.N == 0 || L.H == 0) return;
    const int dmax = attention_dmax(op, L.Dh);
    const float s = static_cast<float>(scale);
    const T* in = qkv.ptr<T>();
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      // cuDNN fused attention first (NMOE_ATTN, cuda_cudnn_attention.h); false: not this shape.
      if (cudnn_attention_selected(op, L.Dh) &&
          cudnn_attention_fwd(*this, L, in, out.ptr<T>(), lse.ptr<float>(), s))
        return;
    }
    NMOE_CHECK(L.B * L.H <= 65535, op, ": B*H = ", L.B * L.H, " exceeds the grid limit 65535");
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      // Tensor-core flash kernels: 16-byte vector loads need aligned rows.
      if (flash_attention_enabled(L.Dh) && reinterpret_cast<uintptr_t>(in) % 16 == 0 &&
          reinterpret_cast<uintptr_t>(out.ptr<T>()) % 4 == 0) {
        flash_attention_fwd_bf16(stream(), L, in, out.ptr<T>(), lse.ptr<float>(), s);
        return;
      }
    }
    if (dmax == 32) launch_fwd<T, 32>(op, stream(), L, in, out.ptr<T>(), lse.ptr<float>(), s);
    else if (dmax == 64) launch_fwd<T, 64>(op, stream(), L, in, out.ptr<T>(), lse.ptr<float>(), s);
    else launch_fwd<T, 128>(op, stream(), L, in, out.ptr<T>(), lse.ptr<float>(), s);
  });
}

}  // namespace nmoe
