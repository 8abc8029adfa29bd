// Device-side grouped GEMM over ragged per-expert row segments (BF16 operands,
// fp32 accumulation on the tensor cores): the offsets stay on the GPU, so a
// grouped GEMM is one launch with no host synchronization.
//
// One kernel template covers the three products of an MoE layer:
//   rows mode   C[seg e] = A[seg e] . B_e^T   (forward and input gradient; the
//               segment runs along M, B_e is expert e's weight)
//   wgrad mode  C_e (+)= A[seg e]^T . B[seg e] (weight gradient; the segment
//               runs along K)
// This file holds the portable kernel (mma.sync, any sm_80+ GPU) and the host
// entry points; cuda_grouped_gemm_tma.cu and cuda_grouped_gemm_wgmma.cu hold the
// Hopper kernels (the defaults).
// Every block computes one 128 x 128 output tile with 4 warps (64 x 64 each,
// mma.sync m16n8k16), streaming K in steps of 32 through a 4-stage cp.async
// pipeline. Operands are "K-major" (element (i, k) at p[i * ld + k]) or
// "MN-major" (at p[k * ld + i]); the shared-memory tiles keep the global
// layout, XOR-swizzled by 16-byte chunk so ldmatrix reads are conflict-free,
// and ldmatrix.trans turns MN-major tiles into the fragments mma expects.
// Rows outside a segment are zero-filled on load, so a tile never mixes
// experts. Each output element is computed by one block in a fixed order:
// results are bit-identical run to run.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_grouped_gemm.h"
#include "backend/cuda/cuda_grouped_gemm_common.cuh"
#include "core/env_choice.h"

namespace nmoe::cuda {
namespace {

using namespace gg;
using Args = GroupedGemmArgs;

constexpr int kBM = 128, kBN = 128, kBK = 32, kStages = 4, kGemmThreads = 128;
constexpr int kTileBytes = kBM * kBK * 2;             // one operand tile, 8 KiB
constexpr int kStageBytes = 2 * kTileBytes;           // A and B
constexpr int kSmemBytes = kStages * kStageBytes;     // 64 KiB


__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Byte offsets inside one operand tile.
// K-major tile: 128 rows of 32 elements (4 chunks of 16 B), chunk ^= (row / 2) % 4.
__device__ __forceinline__ uint32_t kmajor_off(int row, int chunk) {
  return row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4);
}
// MN-major tile: 32 rows (k) of 128 elements (16 chunks), chunk ^= k % 8.
__device__ __forceinline__ uint32_t mnmajor_off(int k, int chunk) {
  return k * 256 + ((chunk ^ (k & 7)) << 4);
}

// Loads one operand tile: tile rows i0.. (valid below i_end), k0.. (valid below k_end).
template <bool KMajor>
__device__ __forceinline__ void load_tile(uint32_t tile, const __nv_bfloat16* g, int64_t ld,
                                          int64_t i0, int64_t i_end, int64_t k0, int64_t k_end,
                                          int tid) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int q = tid + j * kGemmThreads;
    if constexpr (KMajor) {
      const int r = q >> 2, c = q & 3;
      const int64_t gi = i0 + r, gk = k0 + c * 8;
      const bool ok = gi < i_end && gk < k_end;
      cp_async16(tile + kmajor_off(r, c), ok ? g + gi * ld + gk : g, ok);
    } else {
      const int k = q >> 4, c = q & 15;
      const int64_t gk = k0 + k, gi = i0 + c * 8;
      const bool ok = gk < k_end && gi < i_end;
      cp_async16(tile + mnmajor_off(k, c), ok ? g + gk * ld + gi : g, ok);
    }
  }
}

// Fragments of a 64-row slab (4 m16 tiles) of an A tile for k16 step ks.
template <bool KMajor>
__device__ __forceinline__ void load_a_frags(uint32_t (&a)[4][4], uint32_t tile, int wm, int ks,
                                             int lane) {
#pragma unroll
  for (int mi = 0; mi < 4; ++mi) {
    if constexpr (KMajor) {
      const int row = wm * 64 + mi * 16 + (lane & 15);
      ldmatrix_x4(a[mi], tile + kmajor_off(row, ks * 2 + (lane >> 4)));
    } else {
      const int j = lane >> 3;
      const int k = ks * 16 + (lane & 7) + 8 * (j >> 1);
      const int m = wm * 64 + mi * 16 + 8 * (j & 1);
      ldmatrix_x4_trans(a[mi], tile + mnmajor_off(k, m >> 3));
    }
  }
}

// Fragments of a 64-column slab (8 n8 tiles) of a B tile for k16 step ks.
template <bool KMajor>
__device__ __forceinline__ void load_b_frags(uint32_t (&b)[8][2], uint32_t tile, int wn, int ks,
                                             int lane) {
  const int j = lane >> 3;
#pragma unroll
  for (int nj = 0; nj < 4; ++nj) {
    uint32_t r[4];
    if constexpr (KMajor) {
      const int n = wn * 64 + nj * 16 + (lane & 7) + 8 * (j >> 1);
      ldmatrix_x4(r, tile + kmajor_off(n, ks * 2 + (j & 1)));
    } else {
      const int k = ks * 16 + (lane & 7) + 8 * (j & 1);
      const int n = wn * 64 + nj * 16 + 8 * (j >> 1);
      ldmatrix_x4_trans(r, tile + mnmajor_off(k, n >> 3));
    }
    b[2 * nj][0] = r[0];
    b[2 * nj][1] = r[1];
    b[2 * nj + 1][0] = r[2];
    b[2 * nj + 1][1] = r[3];
  }
}

// AK / BK: whether A / B are K-major. Wgrad: segment along K, C accumulates.
template <bool AK, bool BK, bool Wgrad, class OutT>
__global__ void __launch_bounds__(kGemmThreads, 2) grouped_gemm_kernel(const Args p) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp >> 1, wn = warp & 1;

  TileWork w;
  if (!tile_work<Wgrad, kBM, kBN, kGemmThreads>(p, w)) return;
  const int expert = w.expert;
  const int64_t m0 = w.m0, n0 = w.n0, m_end = w.m_end, k_begin = w.k_begin, k_end = w.k_end;
  const __nv_bfloat16 *A = p.A, *B = p.B;
  if constexpr (!Wgrad) B += expert * p.b_stride;

  const uint32_t base = smem_u32(smem);
  auto load_stage = [&](int stage, int64_t k0) {
    const uint32_t ta = base + stage * kStageBytes, tb = ta + kTileBytes;
    load_tile<AK>(ta, A, p.lda, m0, m_end, k0, k_end, tid);
    load_tile<BK>(tb, B, p.ldb, n0, p.N, k0, k_end, tid);
  };

  float acc[4][8][4];
#pragma unroll
  for (int mi = 0; mi < 4; ++mi)
#pragma unroll
    for (int ni = 0; ni < 8; ++ni)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[mi][ni][q] = 0.f;

  const int k_tiles = static_cast<int>((k_end - k_begin + kBK - 1) / kBK);
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s, k_begin + static_cast<int64_t>(s) * kBK);
    cp_async_commit();
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    const int next = kt + kStages - 1;
    if (next < k_tiles) load_stage(next % kStages, k_begin + static_cast<int64_t>(next) * kBK);
    cp_async_commit();
    const uint32_t ta = base + (kt % kStages) * kStageBytes, tb = ta + kTileBytes;
#pragma unroll
    for (int ks = 0; ks < kBK / 16; ++ks) {
      uint32_t a[4][4], b[8][2];
      load_a_frags<AK>(a, ta, wm, ks, lane);
      load_b_frags<BK>(b, tb, wn, ks, lane);
#pragma unroll
      for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 8; ++ni) mma_bf16(acc[mi][ni], a[mi], b[ni][0], b[ni][1]);
    }
  }
  cp_async_wait<0>();

  // Epilogue: thread holds (row g / g + 8, columns 2t, 2t + 1) of each m16n8 tile.
  const int g = lane >> 2, t4 = lane & 3;
  OutT* C = static_cast<OutT*>(p.C);
  if constexpr (Wgrad) C += w.expert * p.c_stride;
#pragma unroll
  for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t row = m0 + wm * 64 + mi * 16 + g + half * 8;
      if (row >= m_end) continue;
      OutT* crow = C + row * p.ldc;
#pragma unroll
      for (int ni = 0; ni < 8; ++ni) {
        const int64_t col = n0 + wn * 64 + ni * 8 + 2 * t4;
        if (col >= p.N) continue;
        store_pair<Wgrad>(crow + col, acc[mi][ni][2 * half], acc[mi][ni][2 * half + 1]);
      }
    }
  }
}

template <bool AK, bool BK, bool Wgrad, class OutT>
void launch(cudaStream_t stream, const Args& p, dim3 grid, const char* op) {
  launch_with_smem<grouped_gemm_kernel<AK, BK, Wgrad, OutT>>(stream, grid, kGemmThreads, kSmemBytes, op, p);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace

enum class Impl { Auto, Tma, Wgmma, Mma, Cublas };

// NMOE_GROUPED_GEMM picks the kernel: auto (default: the fastest measured per
// product, see docs/perf.md: tma for the forward and input gradients, and for
// weight gradients whose output is a multiple of 256 wide, or of 192 in BF16;
// wgmma for the other weight gradients), tma (persistent, wgmma fed by the bulk tensor
// copy engine, warp-specialized), wgmma (fed by cp.async), mma (the portable
// mma.sync kernel) or cublas (one cuBLAS call per expert after a host sync).
static Impl selected_impl() {
  static const Impl impl = [] {
    const std::string s = env_choice("NMOE_GROUPED_GEMM", {"auto", "tma", "wgmma", "mma", "cublas"});
    return s == "auto"    ? Impl::Auto
           : s == "tma"   ? Impl::Tma
           : s == "wgmma" ? Impl::Wgmma
           : s == "mma"   ? Impl::Mma
                          : Impl::Cublas;
  }();
  return impl;
}

// The TMA kernel's tile width for an output `n` columns wide: NMOE_GG_TILE_N =
// 128, 192 or 256 fixes it. auto (default), forward and input gradients: 256
// when n is a multiple of 256, else 192 when n is a multiple of 192 (the
// 384-wide products: no half-empty tile), else 128; BF16 weight gradients
// prefer 192 (526 against 492 TFLOP/s for the 768-wide w13). 192-wide tiles
// exist only with the staged store (BF16 output); elsewhere they run as 128.
static int tma_tile_n(int64_t n, bool bf16_wgrad = false) {
  static const int fixed = [] {
    const std::string s = env_choice("NMOE_GG_TILE_N", {"auto", "128", "192", "256"});
    return s == "auto" ? 0 : std::stoi(s);
  }();
  if (fixed) return fixed;
  if (bf16_wgrad && n % 192 == 0) return 192;
  return n % 256 == 0 ? 256 : n % 192 == 0 ? 192 : 128;
}

bool device_grouped_gemm_supported(int64_t R, int64_t S, const void* a, const void* b,
                                   const void* c) {
  return selected_impl() != Impl::Cublas && R % 8 == 0 && S % 8 == 0 && R > 0 && S > 0 && aligned16(a) && aligned16(b) &&
         aligned16(c);
}

void device_grouped_gemm(cudaStream_t stream, int* err, const __nv_bfloat16* X,
                         const __nv_bfloat16* W, bool transW, const int32_t* offsets, int E,
                         int64_t M, int64_t R, int64_t S, __nv_bfloat16* Y) {
  const char* op = "grouped_matmul";
  if (M == 0) return;
  Args p{};
  p.A = X;
  p.B = W;
  p.C = Y;
  p.offsets = offsets;
  p.rows = M;
  p.E = E;
  p.err = err;
  p.b_stride = R * S;
  // transW: Y [M,R] = X [M,S] . W_e^T, W_e [R,S] is K-major (N = R, K = S).
  // else:   Y [M,S] = X [M,R] . W_e,   W_e [R,S] is N-major (N = S, K = R).
  p.N = transW ? R : S;
  p.K = transW ? S : R;
  p.lda = p.K;
  p.ldb = S;
  p.ldc = p.N;
  p.tiles_n = static_cast<int>((p.N + kBN - 1) / kBN);
  const int64_t tiles_m = (M + kBM - 1) / kBM + E;  // bound on sum over experts of ceil(m_e / BM)
  const int64_t blocks = tiles_m * p.tiles_n;
  NMOE_CHECK(blocks < (1LL << 31), op, ": ", M, " rows x ", p.N, " columns is too large for one launch");
  const dim3 grid(static_cast<unsigned>(blocks));
  const Impl impl = selected_impl();
  if ((impl == Impl::Tma || impl == Impl::Auto) && tma_grouped_gemm_fits(M, E, R, S))
    launch_grouped_gemm_tma(stream, p, tma_tile_that_runs(tma_tile_n(p.N), p.N, E, transW, false, false), transW,
                            false, false, R, S, op);
  else if (selected_impl() != Impl::Mma) launch_grouped_gemm_wgmma(stream, p, grid, true, transW, false, false, op);
  else if (transW) launch<true, true, false, __nv_bfloat16>(stream, p, grid, op);
  else launch<true, false, false, __nv_bfloat16>(stream, p, grid, op);
}

void device_grouped_gemm_wgrad(cudaStream_t stream, int* err, const __nv_bfloat16* dY,
                               const __nv_bfloat16* X, const int32_t* offsets, int E, int64_t M,
                               int64_t R, int64_t S, void* dW, bool dW_f32) {
  const char* op = "grouped_matmul_wgrad";
  if (M == 0 || E == 0) return;
  NMOE_CHECK(E <= 65535, op, ": at most 65535 experts per call, got ", E);
  Args p{};
  p.A = dY;  // element (r, k) at dY[k * R + r]: MN-major
  p.B = X;   // element (s, k) at X[k * S + s]: MN-major
  p.C = dW;
  p.offsets = offsets;
  p.rows = M;
  p.E = E;
  p.err = err;
  p.M = R;
  p.N = S;
  p.lda = R;
  p.ldb = S;
  p.ldc = S;
  p.c_stride = R * S;
  p.tiles_m = static_cast<int>((R + kBM - 1) / kBM);
  p.tiles_n = static_cast<int>((S + kBN - 1) / kBN);
  const dim3 grid(static_cast<unsigned>(p.tiles_m * p.tiles_n), static_cast<unsigned>(E));
  // auto: the TMA kernel on its 192- or 256-wide tiles; as measured, the
  // cp.async kernel is faster than its 128-wide tiles on the weight gradient.
  const Impl impl = selected_impl();
  const int tile = tma_tile_that_runs(tma_tile_n(S, !dW_f32), S, E, false, true, dW_f32);
  if ((impl == Impl::Tma || (impl == Impl::Auto && tile != 128)) && tma_grouped_gemm_fits(M, E, R, S))
    launch_grouped_gemm_tma(stream, p, tile, false, true, dW_f32, R, S, op);
  else if (selected_impl() != Impl::Mma) launch_grouped_gemm_wgmma(stream, p, grid, false, false, true, dW_f32, op);
  else if (dW_f32) launch<false, false, true, float>(stream, p, grid, op);
  else launch<false, false, true, __nv_bfloat16>(stream, p, grid, op);
}

}  // namespace nmoe::cuda
