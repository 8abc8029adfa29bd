// Pieces shared by the grouped GEMM kernels (cuda_grouped_gemm.cu, the
// mma.sync version; cuda_grouped_gemm_wgmma.cu, the Hopper wgmma version): the
// launch arguments, cp.async with zero fill, the map from a block's linear M
// tile to its expert, and the epilogue's store of two adjacent outputs.
#pragma once

#include <cstdint>

#include "backend/cuda/cuda_common.cuh"

namespace nmoe::cuda::gg {

struct GroupedGemmArgs {
  const __nv_bfloat16* A;
  const __nv_bfloat16* B;
  void* C;
  const int32_t* offsets;  // [E + 1]
  int64_t rows;            // offsets[E] must equal this
  int E;
  int tiles_m, tiles_n;    // wgrad: output tiles; rows mode: tiles_n only
  int64_t M, N, K;         // rows mode: N, K; wgrad: M = R, N = S (K ragged)
  int64_t lda, ldb, ldc;
  int64_t b_stride;        // rows mode: elements between experts' B
  int64_t c_stride;        // wgrad: elements between experts' C
  int* err;
};

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;  // 0: fill the 16 bytes with zeros, read nothing
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// The block's pass over the offsets: thread tid owns experts [e0, e1);
// `before` counts the kBM-row tiles of the experts before e0 (an exclusive
// scan over the block); `bad`, the same on every thread, says the offsets are
// not 0 = o[0] <= ... <= o[E] = rows. Every thread of the block must call it.
struct ExpertScan {
  int e0, e1, before;
  bool bad;
};
template <int kBM, int kThreads>
__device__ ExpertScan scan_expert_tiles(const GroupedGemmArgs& p) {
  __shared__ int s_bad;
  __shared__ int s_warp_tiles[kThreads / 32];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  if (tid == 0) s_bad = p.offsets[0] != 0 || p.offsets[p.E] != p.rows;
  __syncthreads();
  const int per = (p.E + kThreads - 1) / kThreads;
  ExpertScan r;
  r.e0 = min(p.E, tid * per);
  r.e1 = min(p.E, r.e0 + per);
  int tiles = 0;
  bool bad = false;
  for (int e = r.e0; e < r.e1; ++e) {
    const int32_t m = p.offsets[e + 1] - p.offsets[e];
    bad |= m < 0;
    tiles += (max(m, 0) + kBM - 1) / kBM;
  }
  if (bad) s_bad = 1;
  int incl = tiles;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  if (lane == 31) s_warp_tiles[warp] = incl;
  __syncthreads();
  r.before = incl - tiles;
  for (int w = 0; w < warp; ++w) r.before += s_warp_tiles[w];
  r.bad = s_bad;
  return r;
}

// Checks the offsets and, in rows mode, maps the block's linear M tile `t` to
// (expert, first row of the tile). Returns false when the block has no work.
// Every block validates the whole array; a bad array is reported and skipped.
template <int kBM, int kThreads>
__device__ bool locate_tile(const GroupedGemmArgs& p, int t, int& expert, int64_t& row0) {
  __shared__ int s_expert;
  __shared__ int64_t s_row0;
  if (threadIdx.x == 0) s_expert = -1;
  const ExpertScan sc = scan_expert_tiles<kBM, kThreads>(p);  // its barriers publish s_expert = -1
  if (!sc.bad) {
    int before = sc.before;
    for (int e = sc.e0; e < sc.e1; ++e) {
      const int n = (p.offsets[e + 1] - p.offsets[e] + kBM - 1) / kBM;
      if (t >= before && t < before + n) {
        s_expert = e;
        s_row0 = p.offsets[e] + static_cast<int64_t>(t - before) * kBM;
      }
      before += n;
    }
  }
  __syncthreads();
  if (sc.bad) {
    if (threadIdx.x == 0) report_error(p.err, kErrOffsets);
    return false;
  }
  expert = s_expert;
  row0 = s_row0;
  return expert >= 0;
}

// The output tile a block computes and the range of K it streams.
struct TileWork {
  int expert;
  int64_t m0, n0, m_end;  // first row and column; rows below m_end are stored
  int64_t k_begin, k_end;
};

// Rows mode: the block's linear M tile (blockIdx.x / tiles_n) mapped to its
// expert and rows. Wgrad: expert blockIdx.y, K over its segment; block (0, 0)
// validates the whole offset array. False: no work (past the last tile, an
// empty or bad segment: the output stays unchanged).
template <bool Wgrad, int kBM, int kBN, int kThreads>
__device__ bool tile_work(const GroupedGemmArgs& p, TileWork& w) {
  const int t = blockIdx.x / p.tiles_n, tn = blockIdx.x % p.tiles_n;
  w.n0 = static_cast<int64_t>(tn) * kBN;
  if constexpr (Wgrad) {
    w.expert = blockIdx.y;
    int e_unused;
    int64_t r_unused;
    if (blockIdx.x == 0 && blockIdx.y == 0) locate_tile<kBM, kThreads>(p, -1, e_unused, r_unused);
    w.k_begin = p.offsets[w.expert];
    w.k_end = p.offsets[w.expert + 1];
    if (w.k_begin < 0 || w.k_end > p.rows || w.k_end <= w.k_begin) return false;
    w.m0 = static_cast<int64_t>(t) * kBM;
    w.m_end = p.M;
  } else {
    if (!locate_tile<kBM, kThreads>(p, t, w.expert, w.m0)) return false;
    w.m_end = p.offsets[w.expert + 1];
    w.k_begin = 0;
    w.k_end = p.K;
  }
  return true;
}

// Writes (or, for the weight gradient, adds to) two adjacent outputs. F32
// accumulation is a fire-and-forget vector reduction in L2 (red.add): the
// epilogue never waits for the old values. Each element receives exactly one
// add per launch, so the result does not depend on timing (fp32 round to
// nearest; subnormal results flush to zero). BF16 outputs take a bf16x2
// reduction the same way.
template <bool Accumulate, class OutT>
__device__ __forceinline__ void store_pair(OutT* c, float v0, float v1) {
  if constexpr (sizeof(OutT) == 4) {
    if constexpr (Accumulate)
      asm volatile("red.add.global.v2.f32 [%0], {%1, %2};\n" ::"l"(c), "f"(v0), "f"(v1) : "memory");
    else
      *reinterpret_cast<float2*>(c) = make_float2(v0, v1);
  } else {
    const __nv_bfloat162 v = __floats2bfloat162_rn(v0, v1);
    if constexpr (Accumulate)  // BF16 gradients: the pair is rounded, then added and rounded again
      asm volatile("red.global.add.noftz.bf16x2 [%0], %1;\n" ::"l"(c),
                   "r"(*reinterpret_cast<const uint32_t*>(&v))
                   : "memory");
    else
      *reinterpret_cast<__nv_bfloat162*>(c) = v;
  }
}

// Launches Kernel with `smem` bytes of dynamic shared memory, raising that
// kernel's limit once first.
template <auto Kernel, class... KArgs>
void launch_with_smem(cudaStream_t stream, dim3 grid, int threads, int smem, const char* op,
                      const KArgs&... args) {
  static const bool configured = [&] {
    NMOE_CUDA_CHECK(op, cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    return true;
  }();
  (void)configured;
  Kernel<<<grid, threads, smem, stream>>>(args...);
  NMOE_CUDA_LAUNCHED(op);
}

}  // namespace nmoe::cuda::gg

namespace nmoe::cuda {
// The Hopper kernel (cuda_grouped_gemm_wgmma.cu): the same 128 x 128 tiles and
// grid as the mma.sync kernel. Layouts: rows mode A K-major with B K-major or
// MN-major; wgrad with both MN-major.
void launch_grouped_gemm_wgmma(cudaStream_t stream, const gg::GroupedGemmArgs& p, dim3 grid,
                               bool a_kmajor, bool b_kmajor, bool wgrad, bool out_f32, const char* op);
// The persistent TMA + warp-specialized kernel (cuda_grouped_gemm_tma.cu):
// 128 x tile_n output tiles (tile_n = 128, 192 or 256), its own grid. R, S:
// the widths of W [E, R, S] (rows mode) or of dY / X (wgrad).
bool tma_grouped_gemm_fits(int64_t M, int64_t E, int64_t R, int64_t S);
// The width that runs for a wanted tile_n and an output n wide: 192-wide tiles
// need the staged store (BF16 output, NMOE_GG_STORE not direct, room for the E
// experts' prefix); without it 256 when n is a multiple of 256, else 128.
int tma_tile_that_runs(int tile_n, int64_t n, int E, bool transW, bool wgrad, bool out_f32);
void launch_grouped_gemm_tma(cudaStream_t stream, const gg::GroupedGemmArgs& p, int tile_n, bool transW, bool wgrad,
                             bool out_f32, int64_t R, int64_t S, const char* op);
}  // namespace nmoe::cuda
