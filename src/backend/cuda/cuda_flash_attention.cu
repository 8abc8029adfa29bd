// Tensor-core causal flash attention for BF16 activations, head dims 64 and 128
// (FlashAttention-2 structure, nvcuda::wmma bf16 16x16x16 with fp32 accumulate).
//
// Forward: one block of 4 warps per (64-query tile, b, h); each warp owns 16
// query rows. K/V tiles of 64 keys are staged in shared memory; S = Q K^T goes
// through shared memory (fp32) for the online softmax (fp32, base 2), P is
// rounded to bf16 for P V; the output accumulator lives in shared memory (fp32)
// so rows can be rescaled.
// Backward (deterministic, no atomics):
//   (1) D_i = dout_i . out_i (one warp per (n, h)),
//   (2) dK/dV: one block per (64-key tile, b, h) looping over query tiles in
//       order, recomputing P^T from K Q^T and lse,
//   (3) dQ: one block per (64-query tile, b, h) looping over key tiles in order.
// Every output element is written once by one block with a fixed loop order, so
// results are bit-identical run to run.
// Routing: BF16 attention tries cuDNN's fused attention first (NMOE_ATTN=cudnn,
// the default when built with cuDNN; cuda_cudnn_attention.cpp). With
// NMOE_ATTN=flash, without cuDNN, or for a shape cuDNN rejects, these kernels
// run for Dh 64/128; NMOE_FLASH_ATTN=0 (both passes) or NMOE_FLASH_ATTN_BWD=0
// (backward only) select the fp32 CUDA-core kernels instead.
#include <mma.h>

#include <cstdlib>

#include "backend/cuda/cuda_attention_common.cuh"
#include "backend/cuda/cuda_flash_attention.h"

namespace nmoe::cuda {

namespace {

using namespace nvcuda;
using bf16 = __nv_bfloat16;

constexpr int kBr = 64;      // rows (queries or keys) per block
constexpr int kBc = 64;      // columns per streamed tile
constexpr int kWarps = 4;    // 16 rows per warp
constexpr int kThreadsFA = kWarps * 32;
constexpr int kLdS = kBc + 4;   // fp32 score tile pitch
constexpr int kLdP = kBc + 8;   // bf16 P / dS tile pitch
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragBc = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragBr = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// dst[r][0:D] = src rows t0 + r (row stride `stride` elements), rows >= T zero.
// 16-byte vector copies; D is a multiple of 8.
template <int D>
__device__ __forceinline__ void load_rows(bf16* dst, const bf16* src, int t0, int T_,
                                          int64_t stride) {
  constexpr int LD = D + 8, V = D / 8;
  for (int i = threadIdx.x; i < kBr * V; i += blockDim.x) {
    const int r = i / V, c = (i - r * V) * 8;
    const int t = t0 + r;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (t < T_) v = *reinterpret_cast<const uint4*>(src + int64_t(t) * stride + c);
    *reinterpret_cast<uint4*>(dst + r * LD + c) = v;
  }
}

// C[16 x 64] (fp32, pitch kLdS) = A[16 x D] (rows of `a`, pitch D+8) times
// B^T where B is [64 x D] (rows of `b`, pitch D+8).
template <int D>
__device__ __forceinline__ void warp_abt_frag(float* c, const FragA (&fa)[D / 16], const bf16* b) {
  constexpr int LD = D + 8;
#pragma unroll
  for (int n = 0; n < kBc / 16; ++n) {
    FragC acc;
    wmma::fill_fragment(acc, 0.f);
#pragma unroll
    for (int k = 0; k < D / 16; ++k) {
      FragBc fb;
      wmma::load_matrix_sync(fb, b + n * 16 * LD + k * 16, LD);
      wmma::mma_sync(acc, fa[k], fb, acc);
    }
    wmma::store_matrix_sync(c + n * 16, acc, kLdS, wmma::mem_row_major);
  }
}

template <int D>
__device__ __forceinline__ void warp_abt(float* c, const bf16* a, const bf16* b) {
  FragA fa[D / 16];
#pragma unroll
  for (int k = 0; k < D / 16; ++k) wmma::load_matrix_sync(fa[k], a + k * 16, D + 8);
  warp_abt_frag<D>(c, fa, b);
}

// ---- forward ---------------------------------------------------------------------
template <int D>
struct FwdSmem {
  static constexpr int LD = D + 8, LDO = D + 4;
  static constexpr size_t q = 0;
  static constexpr size_t k = q + kBr * LD * sizeof(bf16);
  static constexpr size_t v = k + kBc * LD * sizeof(bf16);
  static constexpr size_t s = v + kBc * LD * sizeof(bf16);
  static constexpr size_t p = s + kBr * kLdS * sizeof(float);
  static constexpr size_t o = p + kBr * kLdP * sizeof(bf16);
  static constexpr size_t bytes = o + kBr * LDO * sizeof(float);
};

template <int D>
__global__ void __launch_bounds__(kThreadsFA)
    flash_fwd_kernel(const bf16* qkv, bf16* out, float* lse, int T_, int H, float scale_log2) {
  using S = FwdSmem<D>;
  constexpr int LD = S::LD, LDO = S::LDO;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem + S::q);
  bf16* Ks = reinterpret_cast<bf16*>(smem + S::k);
  bf16* Vs = reinterpret_cast<bf16*>(smem + S::v);
  float* Ss = reinterpret_cast<float*>(smem + S::s);
  bf16* Ps = reinterpret_cast<bf16*>(smem + S::p);
  float* Os = reinterpret_cast<float*>(smem + S::o);

  const int qt = gridDim.x - 1 - blockIdx.x;  // longest rows first
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t stride = 3LL * H * D;
  const bf16* base = qkv + int64_t(b) * T_ * stride + int64_t(h) * D;
  const int q0 = qt * kBr;
  load_rows<D>(Qs, base, q0, T_, stride);
  for (int i = threadIdx.x; i < kBr * LDO; i += blockDim.x) Os[i] = 0.f;

  // Softmax ownership: lane pair (2r, 2r+1) owns row r of the warp's 16 rows;
  // lane parity picks the even or odd columns.
  const int r = lane >> 1, half = lane & 1;
  const int row = warp * 16 + r;
  const int qi = q0 + row;
  float m = -INFINITY, l = 0.f;
  float* Sw = Ss + warp * 16 * kLdS;
  bf16* Pw = Ps + warp * 16 * kLdP;
  float* Ow = Os + warp * 16 * LDO;
  FragA qf[D / 16];  // the warp's Q rows, loaded once

  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * kBc;
    __syncthreads();  // previous K/V consumed (and Q/O initialised on the first pass)
    load_rows<D>(Ks, base + int64_t(H) * D, k0, T_, stride);
    load_rows<D>(Vs, base + 2LL * H * D, k0, T_, stride);
    __syncthreads();
    if (kt == 0) {
#pragma unroll
      for (int k = 0; k < D / 16; ++k) wmma::load_matrix_sync(qf[k], Qs + warp * 16 * LD + k * 16, LD);
    }
    warp_abt_frag<D>(Sw, qf, Ks);
    __syncwarp();
    // online softmax for row r over this tile's 64 keys (32 per lane)
    float sv[kBc / 2];
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < kBc / 2; ++j) {
      const int c = half + 2 * j;
      const float x = (k0 + c <= qi) ? Sw[r * kLdS + c] * scale_log2 : -INFINITY;
      sv[j] = x;
      mx = fmaxf(mx, x);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m, mx);  // finite: key 0 is in the first tile
    const float corr = exp2f(m - m_new);
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < kBc / 2; ++j) {
      const float p = exp2f(sv[j] - m_new);
      const bf16 pb = __float2bfloat16(p);
      sum += p;
      Pw[r * kLdP + half + 2 * j] = pb;
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * corr + sum;
    m = m_new;
    if (corr != 1.f) {
#pragma unroll 8
      for (int d = half; d < D; d += 2) Ow[r * LDO + d] *= corr;
    }
    __syncwarp();
    // O_w += P_w V
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      FragC acc;
      wmma::load_matrix_sync(acc, Ow + n * 16, LDO, wmma::mem_row_major);
#pragma unroll
      for (int k = 0; k < kBc / 16; ++k) {
        FragA fa;
        FragBr fb;
        wmma::load_matrix_sync(fa, Pw + k * 16, kLdP);
        wmma::load_matrix_sync(fb, Vs + k * 16 * LD + n * 16, LD);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(Ow + n * 16, acc, LDO, wmma::mem_row_major);
    }
    __syncwarp();
  }
  if (qi < T_) {
    const float inv = 1.f / l;
    bf16* o = out + ((int64_t(b) * T_ + qi) * H + h) * D;
    for (int d = half * 2; d < D; d += 4) {
      __nv_bfloat162 v2;
      v2.x = __float2bfloat16(Ow[r * LDO + d] * inv);
      v2.y = __float2bfloat16(Ow[r * LDO + d + 1] * inv);
      *reinterpret_cast<__nv_bfloat162*>(o + d) = v2;
    }
    if (half == 0) lse[int64_t(bh) * T_ + qi] = (m + log2f(l)) * kLn2;
  }
}

// ---- backward ----------------------------------------------------------------------
__global__ void flash_delta_kernel(const bf16* dout, const bf16* out, float* delta, int64_t N,
                                   int H, int T_, int Dh) {
  const int lane = threadIdx.x & 31;
  NMOE_WARP_STRIDE(w, N * H) {
    const int64_t n = w / H;
    const int h = int(w % H);
    const bf16 *g = dout + w * Dh, *o = out + w * Dh;
    float acc = 0.f;
    for (int d = lane; d < Dh; d += 32) acc += __bfloat162float(g[d]) * __bfloat162float(o[d]);
    acc = warp_sum(acc);
    const int64_t b = n / T_, t = n % T_;
    if (lane == 0) delta[(b * H + h) * T_ + t] = acc;
  }
}

// Shared layout of both backward kernels: four bf16 [64 x D] tiles (the block's
// own two, then the two streamed ones), two fp32 [64 x 64] tiles (S and dP), two
// bf16 [64 x 64] tiles (P and dS), and two 64-float vectors.
template <int D>
struct BwdSmem {
  static constexpr int LD = D + 8;
  static constexpr size_t tile = kBr * LD * sizeof(bf16);
  static constexpr size_t a0 = 0, a1 = tile, s0 = 2 * tile, s1 = 3 * tile;
  static constexpr size_t sc = 4 * tile;
  static constexpr size_t dp = sc + kBr * kLdS * sizeof(float);
  static constexpr size_t p = dp + kBr * kLdS * sizeof(float);
  static constexpr size_t ds = p + kBr * kLdP * sizeof(bf16);
  static constexpr size_t vec = ds + kBr * kLdP * sizeof(bf16);
  static constexpr size_t bytes = vec + 2 * kBr * sizeof(float);
  static_assert(2 * tile >= kBr * (D + 4) * sizeof(float), "staging fits in two tiles");
};

// Writes the warp's 16 x D accumulators (times mul) as bf16 rows to global:
// staged through fp32 shared memory `stage` (pitch D+4, the warp's rows).
template <int D, int NF>
__device__ __forceinline__ void store_rows(FragC (&acc)[NF], float* stage, bf16* dst0,
                                           int64_t stride, int row0, int T_, float mul) {
  constexpr int LDO = D + 4;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int n = 0; n < NF; ++n) wmma::store_matrix_sync(stage + n * 16, acc[n], LDO, wmma::mem_row_major);
  __syncwarp();
  for (int i = lane; i < 16 * (D / 2); i += 32) {
    const int r = i / (D / 2), d = (i - r * (D / 2)) * 2;
    const int t = row0 + r;
    if (t >= T_) continue;
    __nv_bfloat162 v2;
    v2.x = __float2bfloat16(stage[r * LDO + d] * mul);
    v2.y = __float2bfloat16(stage[r * LDO + d + 1] * mul);
    *reinterpret_cast<__nv_bfloat162*>(dst0 + int64_t(t) * stride + d) = v2;
  }
  __syncwarp();
}

// dK, dV for one 64-key tile: loop over query tiles qt >= kt.
template <int D>
__global__ void __launch_bounds__(kThreadsFA)
    flash_dkdv_kernel(const bf16* qkv, const bf16* dout, const float* lse, const float* delta,
                      bf16* dqkv, int T_, int H, float scale, float scale_log2) {
  using S = BwdSmem<D>;
  constexpr int LD = S::LD;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Ks = reinterpret_cast<bf16*>(smem + S::a0);
  bf16* Vs = reinterpret_cast<bf16*>(smem + S::a1);
  bf16* Qs = reinterpret_cast<bf16*>(smem + S::s0);
  bf16* Gs = reinterpret_cast<bf16*>(smem + S::s1);
  float* Ss = reinterpret_cast<float*>(smem + S::sc);
  float* Dps = reinterpret_cast<float*>(smem + S::dp);
  bf16* Ps = reinterpret_cast<bf16*>(smem + S::p);
  bf16* Dss = reinterpret_cast<bf16*>(smem + S::ds);
  float* lse_s = reinterpret_cast<float*>(smem + S::vec);
  float* d_s = lse_s + kBr;

  const int nt = gridDim.x;
  const int kt = blockIdx.x;  // short key tiles have the most work: low blockIdx first
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t stride = 3LL * H * D, gstride = int64_t(H) * D;
  const bf16* base = qkv + int64_t(b) * T_ * stride + int64_t(h) * D;
  const bf16* gbase = dout + int64_t(b) * T_ * gstride + int64_t(h) * D;
  const int k0 = kt * kBc;
  load_rows<D>(Ks, base + int64_t(H) * D, k0, T_, stride);
  load_rows<D>(Vs, base + 2LL * H * D, k0, T_, stride);

  FragC dk[D / 16], dv[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; ++n) {
    wmma::fill_fragment(dk[n], 0.f);
    wmma::fill_fragment(dv[n], 0.f);
  }
  const int r = lane >> 1, half = lane & 1;
  const int kj = k0 + warp * 16 + r;
  float* Sw = Ss + warp * 16 * kLdS;
  float* Dpw = Dps + warp * 16 * kLdS;
  bf16* Pw = Ps + warp * 16 * kLdP;
  bf16* Dsw = Dss + warp * 16 * kLdP;

  for (int qt = kt; qt < nt; ++qt) {
    const int q0 = qt * kBr;
    __syncthreads();
    load_rows<D>(Qs, base, q0, T_, stride);
    load_rows<D>(Gs, gbase, q0, T_, gstride);
    for (int i = threadIdx.x; i < kBr; i += blockDim.x) {
      const int q = q0 + i;
      lse_s[i] = q < T_ ? lse[int64_t(bh) * T_ + q] * kLog2e : 0.f;
      d_s[i] = q < T_ ? delta[int64_t(bh) * T_ + q] : 0.f;
    }
    __syncthreads();
    warp_abt<D>(Sw, Ks + warp * 16 * LD, Qs);   // S^T (keys x queries)
    warp_abt<D>(Dpw, Vs + warp * 16 * LD, Gs);  // dP^T = V dO^T
    __syncwarp();
#pragma unroll 8
    for (int j = 0; j < kBr / 2; ++j) {
      const int c = half + 2 * j, q = q0 + c;
      float p = 0.f;
      if (q < T_ && q >= kj) p = exp2f(Sw[r * kLdS + c] * scale_log2 - lse_s[c]);
      const float ds = p * (Dpw[r * kLdS + c] - d_s[c]);
      Pw[r * kLdP + c] = __float2bfloat16(p);
      Dsw[r * kLdP + c] = __float2bfloat16(ds);
    }
    __syncwarp();
#pragma unroll
    for (int k = 0; k < kBr / 16; ++k) {
      FragA fp, fds;
      wmma::load_matrix_sync(fp, Pw + k * 16, kLdP);
      wmma::load_matrix_sync(fds, Dsw + k * 16, kLdP);
#pragma unroll
      for (int n = 0; n < D / 16; ++n) {
        FragBr fg, fq;
        wmma::load_matrix_sync(fg, Gs + k * 16 * LD + n * 16, LD);
        wmma::mma_sync(dv[n], fp, fg, dv[n]);
        wmma::load_matrix_sync(fq, Qs + k * 16 * LD + n * 16, LD);
        wmma::mma_sync(dk[n], fds, fq, dk[n]);
      }
    }
  }
  __syncthreads();  // Q/dO tiles free: reuse as fp32 staging
  float* stage = reinterpret_cast<float*>(smem + S::s0) + warp * 16 * (D + 4);
  bf16* dst = dqkv + int64_t(b) * T_ * stride + int64_t(h) * D;
  store_rows<D>(dk, stage, dst + int64_t(H) * D, stride, k0 + warp * 16, T_, scale);
  store_rows<D>(dv, stage, dst + 2LL * H * D, stride, k0 + warp * 16, T_, 1.f);
}

// dQ for one 64-query tile: loop over key tiles kt <= qt.
template <int D>
__global__ void __launch_bounds__(kThreadsFA)
    flash_dq_kernel(const bf16* qkv, const bf16* dout, const float* lse, const float* delta,
                    bf16* dqkv, int T_, int H, float scale, float scale_log2) {
  using S = BwdSmem<D>;
  constexpr int LD = S::LD;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem + S::a0);
  bf16* Gs = reinterpret_cast<bf16*>(smem + S::a1);
  bf16* Ks = reinterpret_cast<bf16*>(smem + S::s0);
  bf16* Vs = reinterpret_cast<bf16*>(smem + S::s1);
  float* Ss = reinterpret_cast<float*>(smem + S::sc);
  float* Dps = reinterpret_cast<float*>(smem + S::dp);
  bf16* Dss = reinterpret_cast<bf16*>(smem + S::ds);

  const int qt = gridDim.x - 1 - blockIdx.x;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t stride = 3LL * H * D, gstride = int64_t(H) * D;
  const bf16* base = qkv + int64_t(b) * T_ * stride + int64_t(h) * D;
  const int q0 = qt * kBr;
  load_rows<D>(Qs, base, q0, T_, stride);
  load_rows<D>(Gs, dout + int64_t(b) * T_ * gstride + int64_t(h) * D, q0, T_, gstride);

  const int r = lane >> 1, half = lane & 1;
  const int qi = q0 + warp * 16 + r;
  const float row_lse = qi < T_ ? lse[int64_t(bh) * T_ + qi] * kLog2e : 0.f;
  const float row_d = qi < T_ ? delta[int64_t(bh) * T_ + qi] : 0.f;
  FragC dq[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; ++n) wmma::fill_fragment(dq[n], 0.f);
  float* Sw = Ss + warp * 16 * kLdS;
  float* Dpw = Dps + warp * 16 * kLdS;
  bf16* Dsw = Dss + warp * 16 * kLdP;

  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * kBc;
    __syncthreads();
    load_rows<D>(Ks, base + int64_t(H) * D, k0, T_, stride);
    load_rows<D>(Vs, base + 2LL * H * D, k0, T_, stride);
    __syncthreads();
    warp_abt<D>(Sw, Qs + warp * 16 * LD, Ks);
    warp_abt<D>(Dpw, Gs + warp * 16 * LD, Vs);
    __syncwarp();
#pragma unroll 8
    for (int j = 0; j < kBc / 2; ++j) {
      const int c = half + 2 * j;
      float p = 0.f;
      if (qi < T_ && k0 + c <= qi) p = exp2f(Sw[r * kLdS + c] * scale_log2 - row_lse);
      Dsw[r * kLdP + c] = __float2bfloat16(p * (Dpw[r * kLdS + c] - row_d));
    }
    __syncwarp();
#pragma unroll
    for (int k = 0; k < kBc / 16; ++k) {
      FragA fds;
      wmma::load_matrix_sync(fds, Dsw + k * 16, kLdP);
#pragma unroll
      for (int n = 0; n < D / 16; ++n) {
        FragBr fk;
        wmma::load_matrix_sync(fk, Ks + k * 16 * LD + n * 16, LD);
        wmma::mma_sync(dq[n], fds, fk, dq[n]);
      }
    }
  }
  __syncthreads();  // K/V tiles free: reuse as fp32 staging
  float* stage = reinterpret_cast<float*>(smem + S::s0) + warp * 16 * (D + 4);
  bf16* dst = dqkv + int64_t(b) * T_ * stride + int64_t(h) * D;
  store_rows<D>(dq, stage, dst, stride, q0 + warp * 16, T_, scale);
}

template <int D>
void fwd_impl(cudaStream_t stream, const QkvLayout& L, const bf16* qkv, bf16* out, float* lse,
              float scale) {
  const char* op = "attention_fwd";
  const size_t smem = FwdSmem<D>::bytes;
  NMOE_CUDA_CHECK(op, cudaFuncSetAttribute(flash_fwd_kernel<D>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(unsigned((L.T + kBr - 1) / kBr), unsigned(L.B * L.H));
  flash_fwd_kernel<D><<<grid, kThreadsFA, smem, stream>>>(qkv, out, lse, int(L.T), int(L.H),
                                                          scale * kLog2e);
  NMOE_CUDA_LAUNCHED(op);
}

template <int D>
void bwd_impl(cudaStream_t stream, const QkvLayout& L, const bf16* dout, const bf16* qkv,
              const float* lse, const float* delta, bf16* dqkv, float scale) {
  const char* op = "attention_bwd";
  const size_t smem = BwdSmem<D>::bytes;
  const dim3 grid(unsigned((L.T + kBr - 1) / kBr), unsigned(L.B * L.H));
  NMOE_CUDA_CHECK(op, cudaFuncSetAttribute(flash_dkdv_kernel<D>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  flash_dkdv_kernel<D><<<grid, kThreadsFA, smem, stream>>>(qkv, dout, lse, delta, dqkv, int(L.T),
                                                           int(L.H), scale, scale * kLog2e);
  NMOE_CUDA_LAUNCHED(op);
  NMOE_CUDA_CHECK(op, cudaFuncSetAttribute(flash_dq_kernel<D>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  flash_dq_kernel<D><<<grid, kThreadsFA, smem, stream>>>(qkv, dout, lse, delta, dqkv, int(L.T),
                                                         int(L.H), scale, scale * kLog2e);
  NMOE_CUDA_LAUNCHED(op);
}

}  // namespace

// Read on every call (cheap next to the kernels) so tests can switch paths.
bool flash_attention_enabled(int64_t Dh) {
  const char* e = std::getenv("NMOE_FLASH_ATTN");
  return !(e && e[0] == '0') && (Dh == 64 || Dh == 128);
}

bool flash_attention_bwd_enabled(int64_t Dh) {
  const char* e = std::getenv("NMOE_FLASH_ATTN_BWD");
  return !(e && e[0] == '0') && flash_attention_enabled(Dh);
}

void flash_attention_fwd_bf16(cudaStream_t stream, const QkvLayout& L, const __nv_bfloat16* qkv,
                              __nv_bfloat16* out, float* lse, float scale) {
  if (L.Dh == 64) fwd_impl<64>(stream, L, qkv, out, lse, scale);
  else fwd_impl<128>(stream, L, qkv, out, lse, scale);
}

void flash_attention_bwd_bf16(cudaStream_t stream, const QkvLayout& L, const __nv_bfloat16* dout,
                              const __nv_bfloat16* qkv, const __nv_bfloat16* out, const float* lse,
                              float* delta, __nv_bfloat16* dqkv, float scale) {
  const char* op = "attention_bwd";
  const int64_t warps = L.N * L.H;
  flash_delta_kernel<<<grid_for(warps * 32), kThreads, 0, stream>>>(dout, out, delta, L.N,
                                                                    int(L.H), int(L.T), int(L.Dh));
  NMOE_CUDA_LAUNCHED(op);
  if (L.Dh == 64) bwd_impl<64>(stream, L, dout, qkv, lse, delta, dqkv, scale);
  else bwd_impl<128>(stream, L, dout, qkv, lse, delta, dqkv, scale);
}

}  // namespace nmoe::cuda
