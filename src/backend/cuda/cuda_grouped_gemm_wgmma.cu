// Hopper (sm_90a) grouped GEMM: the same tiles, segments and operand layouts
// as the mma.sync kernel of cuda_grouped_gemm.cu, computed by wgmma. A block of
// two warpgroups owns a 128 x 128 output tile (64 rows per warpgroup, one
// m64n128k16 instruction per 16 of K), streaming K in steps of 64 through a
// multi-stage cp.async pipeline (see Pipe). Tiles sit in
// shared memory in the 128-byte-swizzled layouts wgmma reads directly:
//   K-major tile   128 rows x 64 k, 128 B per row, 16-byte chunk ^= row % 8
//   MN-major tile  64 k-rows x 128, as two 64-wide blocks of 64 rows x 128 B,
//                  chunk ^= k % 8 (read with the transpose bit set)
// cp.async writes through the generic proxy and wgmma reads through the async
// proxy, so each thread fences the proxies before the barrier that publishes
// a stage. Rows outside a segment are zero-filled; each output element is
// computed by one block in a fixed order (bit-identical reruns).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "backend/cuda/cuda_grouped_gemm.h"
#include "backend/cuda/cuda_grouped_gemm_common.cuh"
#include "backend/cuda/cuda_wgmma.cuh"
#include "core/env_choice.h"

namespace nmoe::cuda {
namespace {

using namespace gg;

constexpr int kBM = 128, kBN = 128, kBK = 64, kThreads = 256;
static_assert(kBK == 64, "wgmma_k64_tile issues 64-deep k-tiles");
constexpr int kTileBytes = kBM * kBK * 2;                // one operand tile, 16 KiB
constexpr int kStageBytes = 2 * kTileBytes;              // A and B

// Two pipelines (NMOE_GG_PIPELINE): "serial" (3 stages, two blocks per
// multiprocessor, each k-tile's wgmma finished before the next barrier) and
// "overlap" (6 stages, one block per multiprocessor, one k-tile's wgmma kept in
// flight across the barrier and the next loads, four tiles loaded ahead).
template <bool Overlap>
struct Pipe {
  static constexpr int kStages = Overlap ? 6 : 3;
  static constexpr int kBlocksPerSm = Overlap ? 1 : 2;
  static constexpr int kSmemBytes = kStages * kStageBytes + 1024;  // + slack to align to 1 KiB
};

__device__ __forceinline__ uint32_t kmajor_off(int row, int chunk) {
  return row * 128 + ((chunk ^ (row & 7)) << 4);
}
__device__ __forceinline__ uint32_t mnmajor_off(int k, int chunk) {  // chunk 0..15 along MN
  return (chunk >> 3) * 8192 + k * 128 + (((chunk & 7) ^ (k & 7)) << 4);
}

template <bool KMajor>
__device__ __forceinline__ void load_tile(uint32_t tile, const __nv_bfloat16* g, int64_t ld,
                                          int64_t i0, int64_t i_end, int64_t k0, int64_t k_end,
                                          int tid) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int q = tid + j * kThreads;
    if constexpr (KMajor) {
      const int r = q >> 3, c = q & 7;
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

template <bool AK, bool BK, bool Wgrad, class OutT, bool Overlap>
__global__ void __launch_bounds__(kThreads, Pipe<Overlap>::kBlocksPerSm)
    grouped_gemm_wgmma_kernel(const GroupedGemmArgs p) {
  constexpr int kStages = Pipe<Overlap>::kStages;
  // Tiles loaded ahead of the one being multiplied.
  constexpr int kAhead = Overlap ? kStages - 2 : kStages - 1;
  extern __shared__ unsigned char smem_raw[];
  const int tid = threadIdx.x, wg = tid >> 7, lane = tid & 31, warp_in_wg = (tid >> 5) & 3;

  TileWork w;
  if (!tile_work<Wgrad, kBM, kBN, kThreads>(p, w)) return;
  const int expert = w.expert;
  const int64_t m0 = w.m0, n0 = w.n0, m_end = w.m_end, k_begin = w.k_begin, k_end = w.k_end;
  const __nv_bfloat16 *A = p.A, *B = p.B;
  if constexpr (!Wgrad) B += expert * p.b_stride;

  const uint32_t base = (smem_u32(smem_raw) + 1023) & ~1023u;
  auto load_stage = [&](int stage, int64_t k0) {
    const uint32_t ta = base + stage * kStageBytes, tb = ta + kTileBytes;
    load_tile<AK>(ta, A, p.lda, m0, m_end, k0, k_end, tid);
    load_tile<BK>(tb, B, p.ldb, n0, p.N, k0, k_end, tid);
  };

  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.f;

  const int k_tiles = static_cast<int>((k_end - k_begin + kBK - 1) / kBK);
#pragma unroll
  for (int s = 0; s < kAhead; ++s) {
    if (s < k_tiles) load_stage(s, k_begin + static_cast<int64_t>(s) * kBK);
    cp_async_commit();
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kAhead - 1>();  // tile kt has landed
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    // After this barrier every warpgroup is past its wait for the wgmma of
    // tile kt - 2 (overlap) or kt - 1 (serial), so that stage can be refilled.
    __syncthreads();
    const int next = kt + kAhead;
    if (next < k_tiles) load_stage(next % kStages, k_begin + static_cast<int64_t>(next) * kBK);
    cp_async_commit();
    const uint32_t ta = base + (kt % kStages) * kStageBytes, tb = ta + kTileBytes;
    wgmma_k64_tile<AK, BK>(acc, ta, tb, wg);
    if constexpr (Overlap) asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
    else asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  cp_async_wait<0>();

  store_m64n<Wgrad, OutT>(p, w, acc, wg, warp_in_wg, lane);
}

template <bool AK, bool BK, bool Wgrad, class OutT, bool Overlap>
void launch_pipe(cudaStream_t stream, const GroupedGemmArgs& p, dim3 grid, const char* op) {
  launch_with_smem<grouped_gemm_wgmma_kernel<AK, BK, Wgrad, OutT, Overlap>>(
      stream, grid, kThreads, Pipe<Overlap>::kSmemBytes, op, p);
}

bool overlap_selected() {
  static const bool overlap = [] {
    return env_choice("NMOE_GG_PIPELINE", {"serial", "overlap"}) == "overlap";
  }();
  return overlap;
}

template <bool AK, bool BK, bool Wgrad, class OutT>
void launch(cudaStream_t stream, const GroupedGemmArgs& p, dim3 grid, const char* op) {
  if (overlap_selected()) launch_pipe<AK, BK, Wgrad, OutT, true>(stream, p, grid, op);
  else launch_pipe<AK, BK, Wgrad, OutT, false>(stream, p, grid, op);
}

}  // namespace

void launch_grouped_gemm_wgmma(cudaStream_t stream, const GroupedGemmArgs& p, dim3 grid, bool a_kmajor,
                               bool b_kmajor, bool wgrad, bool out_f32, const char* op) {
  if (!wgrad && a_kmajor && b_kmajor) launch<true, true, false, __nv_bfloat16>(stream, p, grid, op);
  else if (!wgrad && a_kmajor && !b_kmajor) launch<true, false, false, __nv_bfloat16>(stream, p, grid, op);
  else if (wgrad && !a_kmajor && !b_kmajor && out_f32) launch<false, false, true, float>(stream, p, grid, op);
  else if (wgrad && !a_kmajor && !b_kmajor) launch<false, false, true, __nv_bfloat16>(stream, p, grid, op);
  else NMOE_CHECK(false, op, ": no wgmma grouped GEMM for this operand layout");
}

}  // namespace nmoe::cuda
