// Causal softmax attention backward. BF16 runs on cuDNN's fused attention by
// default (cuda_cudnn_attention.cpp), else on the tensor-core flash kernels
// (cuda_flash_attention.cu); the kernels below are the fp32 CUDA-core fallback
// (FlashAttention-2 math), deterministic:
//   D_i = dout_i . out_i,  p_ij = exp(scale q_i.k_j - lse_i),  dS_ij = p_ij (dout_i.v_j - D_i)
//   dq_i = scale sum_{j<=i} dS_ij k_j        (one block per query tile, keys in order)
//   dk_j = scale sum_{i>=j} dS_ij q_i,  dv_j = sum_{i>=j} p_ij dout_i
//                                            (one block per key tile, queries in order)
// Each dqkv element is written once; no atomics.
#include <type_traits>

#include "backend/cuda/cuda_attention_common.cuh"
#include "backend/cuda/cuda_cudnn_attention.h"
#include "backend/cuda/cuda_flash_attention.h"

namespace nmoe {

using namespace cuda;

namespace {

// D[(b*H + h)*T + t] = dout[n, h] . out[n, h]; one warp per (n, h) (grid-stride).
template <class T>
__global__ void attn_delta_kernel(const T* dout, const T* out, float* delta, int64_t N, int H,
                                  int T_, int Dh) {
  const int lane = threadIdx.x & 31;
  NMOE_WARP_STRIDE(w, N * H) {
    const int64_t n = w / H;
    const int h = int(w % H);
    const T *g = dout + w * Dh, *o = out + w * Dh;
    float acc = 0.f;
    for (int d = lane; d < Dh; d += 32) acc += to_f32(g[d]) * to_f32(o[d]);
    acc = warp_sum(acc);
    const int64_t b = n / T_, t = n % T_;
    if (lane == 0) delta[(b * H + h) * T_ + t] = acc;
  }
}

template <class T, int DMAX>
__global__ void __launch_bounds__(kAttnWarps * 32)
    attn_dq_kernel(const T* qkv, const T* dout, const float* lse, const float* delta, T* dqkv, int T_,
                   int H, int Dh, float scale) {
  constexpr int LD = DMAX + 1, C = DMAX / 32, R = kRowsPerWarp;
  extern __shared__ float smem[];
  float* Qs = smem;
  float* Gs = Qs + kTile * LD;  // dout rows of the query tile
  float* Ks = Gs + kTile * LD;
  float* Vs = Ks + kTile * LD;
  const int qt = gridDim.x - 1 - blockIdx.x;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row_stride = 3LL * H * Dh;
  const T* q_base = qkv + int64_t(b) * T_ * row_stride + int64_t(h) * Dh;
  const int q0 = qt * kTile;
  load_tile<LD>(Qs, q_base, q0, T_, row_stride, Dh);
  load_tile<LD>(Gs, dout + int64_t(b) * T_ * H * Dh + int64_t(h) * Dh, q0, T_, int64_t(H) * Dh, Dh);
  float row_lse[R], row_d[R], dq[R][C];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int qi = q0 + warp * R + r;
    row_lse[r] = qi < T_ ? lse[int64_t(bh) * T_ + qi] : 0.f;
    row_d[r] = qi < T_ ? delta[int64_t(bh) * T_ + qi] : 0.f;
#pragma unroll
    for (int c = 0; c < C; ++c) dq[r][c] = 0.f;
  }
  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * kTile;
    __syncthreads();
    load_tile<LD>(Ks, q_base + int64_t(H) * Dh, k0, T_, row_stride, Dh);
    load_tile<LD>(Vs, q_base + 2LL * H * Dh, k0, T_, row_stride, Dh);
    __syncthreads();
    float s[R], dp[R];
#pragma unroll
    for (int r = 0; r < R; ++r) s[r] = dp[r] = 0.f;
    for (int d = 0; d < Dh; ++d) {
      const float kv = Ks[lane * LD + d], vv = Vs[lane * LD + d];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        s[r] += Qs[(warp * R + r) * LD + d] * kv;
        dp[r] += Gs[(warp * R + r) * LD + d] * vv;
      }
    }
    const int key = k0 + lane;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int qi = q0 + warp * R + r;
      const float p = (key <= qi && qi < T_) ? expf(s[r] * scale - row_lse[r]) : 0.f;
      const float ds = p * (dp[r] - row_d[r]);
#pragma unroll 8
      for (int j = 0; j < kTile; ++j) {
        const float dsj = __shfl_sync(0xffffffffu, ds, j);
#pragma unroll
        for (int c = 0; c < C; ++c) dq[r][c] += dsj * Ks[j * LD + lane + 32 * c];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int qi = q0 + warp * R + r;
    if (qi >= T_) continue;
    T* o = dqkv + (int64_t(b) * T_ + qi) * row_stride + int64_t(h) * Dh;
#pragma unroll
    for (int c = 0; c < C; ++c)
      if (lane + 32 * c < Dh) o[lane + 32 * c] = from_f32<T>(dq[r][c] * scale);
  }
}

template <class T, int DMAX>
__global__ void __launch_bounds__(kAttnWarps * 32)
    attn_dkdv_kernel(const T* qkv, const T* dout, const float* lse, const float* delta, T* dqkv,
                     int T_, int H, int Dh, float scale) {
  constexpr int LD = DMAX + 1, C = DMAX / 32, R = kRowsPerWarp;
  extern __shared__ float smem[];
  float* Ks = smem;
  float* Vs = Ks + kTile * LD;
  float* Qs = Vs + kTile * LD;
  float* Gs = Qs + kTile * LD;
  float* lse_s = Gs + kTile * LD;
  float* d_s = lse_s + kTile;
  const int kt = blockIdx.x, n_qt = gridDim.x;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row_stride = 3LL * H * Dh;
  const T* q_base = qkv + int64_t(b) * T_ * row_stride + int64_t(h) * Dh;
  const T* g_base = dout + int64_t(b) * T_ * H * Dh + int64_t(h) * Dh;
  const int k0 = kt * kTile;
  load_tile<LD>(Ks, q_base + int64_t(H) * Dh, k0, T_, row_stride, Dh);
  load_tile<LD>(Vs, q_base + 2LL * H * Dh, k0, T_, row_stride, Dh);
  float dk[R][C], dv[R][C];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int c = 0; c < C; ++c) dk[r][c] = dv[r][c] = 0.f;
  for (int qt = kt; qt < n_qt; ++qt) {
    const int q0 = qt * kTile;
    __syncthreads();
    load_tile<LD>(Qs, q_base, q0, T_, row_stride, Dh);
    load_tile<LD>(Gs, g_base, q0, T_, int64_t(H) * Dh, Dh);
    if (threadIdx.x < kTile) {
      const int qi = q0 + threadIdx.x;
      lse_s[threadIdx.x] = qi < T_ ? lse[int64_t(bh) * T_ + qi] : 0.f;
      d_s[threadIdx.x] = qi < T_ ? delta[int64_t(bh) * T_ + qi] : 0.f;
    }
    __syncthreads();
    float s[R], dp[R];
#pragma unroll
    for (int r = 0; r < R; ++r) s[r] = dp[r] = 0.f;
    for (int d = 0; d < Dh; ++d) {
      const float qv = Qs[lane * LD + d], gv = Gs[lane * LD + d];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        s[r] += Ks[(warp * R + r) * LD + d] * qv;
        dp[r] += Vs[(warp * R + r) * LD + d] * gv;
      }
    }
    const int qi = q0 + lane;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int kj = k0 + warp * R + r;
      const float p = (qi < T_ && qi >= kj) ? expf(s[r] * scale - lse_s[lane]) : 0.f;
      const float ds = p * (dp[r] - d_s[lane]);
#pragma unroll 4
      for (int i = 0; i < kTile; ++i) {
        const float pi = __shfl_sync(0xffffffffu, p, i);
        const float dsi = __shfl_sync(0xffffffffu, ds, i);
#pragma unroll
        for (int c = 0; c < C; ++c) {
          dv[r][c] += pi * Gs[i * LD + lane + 32 * c];
          dk[r][c] += dsi * Qs[i * LD + lane + 32 * c];
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int kj = k0 + warp * R + r;
    if (kj >= T_) continue;
    T* o = dqkv + (int64_t(b) * T_ + kj) * row_stride + int64_t(h) * Dh;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int d = lane + 32 * c;
      if (d >= Dh) continue;
      o[int64_t(H) * Dh + d] = from_f32<T>(dk[r][c] * scale);
      o[2LL * H * Dh + d] = from_f32<T>(dv[r][c]);
    }
  }
}

template <class T, int DMAX>
void launch_bwd(const char* op, cudaStream_t stream, const QkvLayout& L, const T* qkv,
                const T* dout, const float* lse, const float* delta, T* dqkv, float scale) {
  const size_t smem = 4 * kTile * (DMAX + 1) * sizeof(float);
  const dim3 grid(unsigned((L.T + kTile - 1) / kTile), unsigned(L.B * L.H));
  NMOE_CUDA_CHECK(op, cudaFuncSetAttribute(attn_dq_kernel<T, DMAX>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  attn_dq_kernel<T, DMAX><<<grid, kAttnWarps * 32, smem, stream>>>(
      qkv, dout, lse, delta, dqkv, int(L.T), int(L.H), int(L.Dh), scale);
  NMOE_CUDA_LAUNCHED(op);
  const size_t smem_kv = smem + 2 * kTile * sizeof(float);
  NMOE_CUDA_CHECK(op, cudaFuncSetAttribute(attn_dkdv_kernel<T, DMAX>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           int(smem_kv)));
  attn_dkdv_kernel<T, DMAX><<<grid, kAttnWarps * 32, smem_kv, stream>>>(
      qkv, dout, lse, delta, dqkv, int(L.T), int(L.H), int(L.Dh), scale);
  NMOE_CUDA_LAUNCHED(op);
}

}  // namespace

// BF16 on cuDNN: its deterministic backward's workspace, slice*H*T*T BF16
// values for the batch slices it runs (cuda_cudnn_attention.cpp); otherwise
// the kernels' delta (one float per row and head). Both in the Transient buffer.
ScratchBytes CudaBackend::attention_scratch_bytes(int64_t batch, int64_t seq_len, int64_t heads,
                                                  int64_t head_dim, DType act) const {
  if (act == DType::BF16 && cudnn_attention_selected("attention_bwd", head_dim))
    return {cudnn_attention_bwd_batch_slice(batch, seq_len, heads) * heads * seq_len * seq_len * 2, 0};
  return {batch * seq_len * heads * 4, 0};
}

void CudaBackend::attention_bwd(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                                const Tensor& lse, int seq_len, double scale,
                                const Tensor& dqkv) {
  const char* op = "attention_bwd";
  const QkvLayout L = ops::check_attention_bwd(dout, qkv, out, lse, seq_len, dqkv);
  dispatch_act(op, {{"dout", dout}, {"qkv", qkv}, {"out", out}, {"dqkv", dqkv}}, {{"lse", lse}},
               [&](auto tag) {
    using T = decltype(tag);
    if (L.N == 0 || L.H == 0) return;
    const int dmax = attention_dmax(op, L.Dh);
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      // cuDNN fused attention first (NMOE_ATTN, cuda_cudnn_attention.h); false: not this shape.
      if (cudnn_attention_selected(op, L.Dh) &&
          cudnn_attention_bwd(*this, L, dout.ptr<T>(), qkv.ptr<T>(), out.ptr<T>(),
                              lse.ptr<float>(), dqkv.ptr<T>(), static_cast<float>(scale)))
        return;
    }
    NMOE_CHECK(L.B * L.H <= 65535, op, ": B*H = ", L.B * L.H, " exceeds the grid limit 65535");
    float* delta = static_cast<float*>(
        scratch(Scratch::Transient, static_cast<size_t>(L.N * L.H) * sizeof(float)));
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      // Tensor-core flash kernels: 16-byte vector loads need aligned rows.
      const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
      if (flash_attention_bwd_enabled(L.Dh) && aligned(qkv.data) && aligned(dout.data) &&
          aligned(dqkv.data)) {
        flash_attention_bwd_bf16(stream(), L, dout.ptr<T>(), qkv.ptr<T>(), out.ptr<T>(),
                                 lse.ptr<float>(), delta, dqkv.ptr<T>(), static_cast<float>(scale));
        return;
      }
    }
    const int64_t warps = L.N * L.H;
    attn_delta_kernel<T><<<grid_for(warps * 32), kThreads, 0, stream()>>>(
        dout.ptr<T>(), out.ptr<T>(), delta, L.N, int(L.H), int(L.T), int(L.Dh));
    NMOE_CUDA_LAUNCHED(op);
    const float s = static_cast<float>(scale);
    const T *in = qkv.ptr<T>(), *g = dout.ptr<T>();
    const float* ls = lse.ptr<float>();
    if (dmax == 32) launch_bwd<T, 32>(op, stream(), L, in, g, ls, delta, dqkv.ptr<T>(), s);
    else if (dmax == 64) launch_bwd<T, 64>(op, stream(), L, in, g, ls, delta, dqkv.ptr<T>(), s);
    else launch_bwd<T, 128>(op, stream(), L, in, g, ls, delta, dqkv.ptr<T>(), s);
  });
}

}  // namespace nmoe
