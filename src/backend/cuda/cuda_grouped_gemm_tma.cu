// Hopper grouped GEMM with the bulk tensor copy engine (TMA) and warp
// specialization: one producer warp streams the A and B tiles of each 64-deep
// k-slice into a 3-stage ring of shared memory (completion counted on an
// mbarrier per stage), and two consumer warpgroups multiply them with wgmma
// (64 rows each of a 128 x 128 output tile), keeping one k-slice of wgmma in
// flight and handing each stage back through a second mbarrier. No block-wide
// barrier in the main loop; two blocks per multiprocessor.
//
// The tiles land in the same 128-byte-swizzled layouts as in the cp.async
// kernel (cuda_grouped_gemm_wgmma.cu). TMA cannot mask a segment: rows past a
// segment's end inside the tensor are loaded like any other. Along M (rows
// mode) they are computed and not stored; along K (weight gradient, and
// MN-major weights whose K is not a multiple of 64) the consumers zero them in
// shared memory before the multiply. Past the tensor's end TMA fills zeros.
#include <cuda.h>
#include <cudaTypedefs.h>

#include <cstdint>
#include <mutex>

#include "backend/cuda/cuda_grouped_gemm.h"
#include "backend/cuda/cuda_grouped_gemm_common.cuh"
#include "backend/cuda/cuda_wgmma.cuh"

namespace nmoe::cuda {
namespace {

using namespace gg;

constexpr int kBM = 128, kBN = 128, kBK = 64, kStages = 3;
static_assert(kBK == 64, "wgmma_k64_tile issues 64-deep k-tiles");
constexpr int kConsumers = 256, kThreads = kConsumers + 32;  // two warpgroups + a producer warp
constexpr int kTileBytes = kBM * kBK * 2;                    // 16 KiB
constexpr int kStageBytes = 2 * kTileBytes;
constexpr int kSmemBytes = kStages * kStageBytes + 1024 + 2 * kStages * 8;

// ---- mbarriers and TMA -----------------------------------------------------------
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, int bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, int parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
// 2-D tile load: box element (inner, outer) from coordinates (c0, c1).
__device__ __forceinline__ void tma_load(uint32_t dst, const CUtensorMap* map, int c0, int c1,
                                         uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
      "[%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}

// Loads an operand tile of k-slice k0 (global row/col coordinates as ints).
// K-major: one box of 64 (k) x 128 rows at (k0, row0).
// MN-major: two boxes of 64 (mn) x 64 (k) at (mn0 + 64h, k0), 8 KiB apart.
template <bool KMajor>
__device__ __forceinline__ void load_operand(uint32_t tile, const CUtensorMap* map, int64_t mn0,
                                             int64_t k0, uint32_t bar) {
  if constexpr (KMajor) {
    tma_load(tile, map, static_cast<int>(k0), static_cast<int>(mn0), bar);
  } else {
    tma_load(tile, map, static_cast<int>(mn0), static_cast<int>(k0), bar);
    tma_load(tile + 8192, map, static_cast<int>(mn0 + 64), static_cast<int>(k0), bar);
  }
}

// Zeroes k-rows [valid, 64) of an MN-major tile (both 64-wide blocks).
__device__ __forceinline__ void zero_k_tail(unsigned char* tile, int valid, int tid) {
  const int rows = 64 - valid;
  for (int i = tid; i < 2 * rows * 8; i += kConsumers) {
    const int blk = i / (rows * 8), r = valid + (i / 8) % rows, c = i % 8;
    *reinterpret_cast<uint4*>(tile + blk * 8192 + r * 128 + c * 16) = make_uint4(0, 0, 0, 0);
  }
}

struct TmaArgs {
  GroupedGemmArgs p;
  int64_t b_row_stride;  // rows mode: rows of the B tensor per expert (R)
};

template <bool AK, bool BK, bool Wgrad, class OutT>
// 112 registers: two blocks of 288 threads fill the register file.
__global__ void __maxnreg__(112)
    grouped_gemm_tma_kernel(const __grid_constant__ CUtensorMap map_a,
                            const __grid_constant__ CUtensorMap map_b, const TmaArgs args) {
  extern __shared__ unsigned char smem_raw[];
  const GroupedGemmArgs& p = args.p;
  const int tid = threadIdx.x;

  TileWork w;
  if (!tile_work<Wgrad, kBM, kBN, kThreads>(p, w)) return;
  const int expert = w.expert;
  const int64_t m0 = w.m0, n0 = w.n0, k_begin = w.k_begin, k_end = w.k_end;
  const int64_t b_row0 = Wgrad ? 0 : expert * args.b_row_stride;  // rows mode: expert's rows of W
  const int k_tiles = static_cast<int>((k_end - k_begin + kBK - 1) / kBK);

  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t base = (raw + 1023) & ~1023u;
  unsigned char* base_ptr = smem_raw + (base - raw);
  const uint32_t full0 = base + kStages * kStageBytes, empty0 = full0 + kStages * 8;
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full0 + 8 * s, 1);
      mbar_init(empty0 + 8 * s, kConsumers / 32);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (tid >= kConsumers) {  // producer warp
    if (tid == kConsumers) {
      for (int kt = 0; kt < k_tiles; ++kt) {
        const int s = kt % kStages;
        mbar_wait(empty0 + 8 * s, ((kt / kStages) & 1) ^ 1);
        const uint32_t full = full0 + 8 * s, ta = base + s * kStageBytes, tb = ta + kTileBytes;
        mbar_expect_tx(full, kStageBytes);
        const int64_t k0 = k_begin + static_cast<int64_t>(kt) * kBK;
        // A: rows mode [M, K] K-major at rows m0..; wgrad [M(k), R] MN-major at cols m0...
        load_operand<AK>(ta, &map_a, m0, k0, full);
        // B: rows mode K-major [E*R, S] at rows b_row0 + n0.., or MN-major at k-rows b_row0 + k0..;
        // wgrad [M(k), S] MN-major.
        if constexpr (BK) load_operand<true>(tb, &map_b, b_row0 + n0, k0, full);
        else load_operand<false>(tb, &map_b, n0, b_row0 + k0, full);
      }
    }
    return;
  }

  // Consumers.
  const int wg = tid >> 7, lane = tid & 31, warp_in_wg = (tid >> 5) & 3;
  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.f;
  for (int kt = 0; kt < k_tiles; ++kt) {
    const int s = kt % kStages;
    mbar_wait(full0 + 8 * s, (kt / kStages) & 1);
    const uint32_t ta = base + s * kStageBytes, tb = ta + kTileBytes;
    if constexpr (!AK || !BK) {
      const int64_t rem = k_end - (k_begin + int64_t(kt) * kBK);
      const int valid = rem < kBK ? static_cast<int>(rem) : kBK;
      if (valid < kBK) {  // K rows past the segment (or past the weight) would add garbage
        unsigned char* tile = base_ptr + s * kStageBytes;
        if constexpr (!AK) zero_k_tail(tile, valid, tid);
        if constexpr (!BK) zero_k_tail(tile + kTileBytes, valid, tid);
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        asm volatile("bar.sync 1, %0;\n" ::"n"(kConsumers) : "memory");
      }
    }
    wgmma_k64_tile<AK, BK>(acc, ta, tb, wg);
    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
    // The wgmma of k-slice kt - 1 is done: hand its stage back to the producer.
    if (kt > 0 && lane == 0) mbar_arrive(empty0 + 8 * ((kt - 1) % kStages));
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");

  store_m64n128<Wgrad, OutT>(p, w, acc, wg, warp_in_wg, lane);
}

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    NMOE_CUDA_CHECK("grouped_matmul", cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000,
                                                                       cudaEnableDefault, &q));
    NMOE_CHECK(f != nullptr && q == cudaDriverEntryPointSuccess,
               "grouped_matmul: the driver has no cuTensorMapEncodeTiled");
    fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  });
  return fn;
}

// Map of a row-major BF16 matrix [rows, cols] with boxes of 64 columns x box_rows.
CUtensorMap make_map(const void* data, int64_t rows, int64_t cols, int box_rows, const char* op) {
  CUtensorMap map;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(cols) * 2};
  const cuuint32_t box[2] = {64, static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t elem[2] = {1, 1};
  const CUresult r = encode_fn()(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(data), dims,
                                 strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                 CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                 CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  NMOE_CHECK(r == CUDA_SUCCESS, op, ": cuTensorMapEncodeTiled failed (error ", static_cast<int>(r),
             ") for a ", rows, " x ", cols, " BF16 matrix");
  return map;
}

template <bool AK, bool BK, bool Wgrad, class OutT>
void launch(cudaStream_t stream, const CUtensorMap& a, const CUtensorMap& b, const TmaArgs& args,
            dim3 grid, const char* op) {
  launch_with_smem<grouped_gemm_tma_kernel<AK, BK, Wgrad, OutT>>(stream, grid, kThreads, kSmemBytes, op, a,
                                                                  b, args);
}

}  // namespace

bool tma_grouped_gemm_fits(int64_t M, int64_t E, int64_t R, int64_t S) {
  const int64_t lim = int64_t(1) << 31;
  return M < lim && E * R < lim && S < lim && R < lim;
}

void launch_grouped_gemm_tma(cudaStream_t stream, const GroupedGemmArgs& p, dim3 grid, bool transW,
                             bool wgrad, bool out_f32, int64_t R, int64_t S, const char* op) {
  TmaArgs args{p, R};
  if (wgrad) {  // A = dY [M, R], B = X [M, S], both MN-major
    const CUtensorMap a = make_map(p.A, p.rows, R, 64, op), b = make_map(p.B, p.rows, S, 64, op);
    if (out_f32) launch<false, false, true, float>(stream, a, b, args, grid, op);
    else launch<false, false, true, __nv_bfloat16>(stream, a, b, args, grid, op);
    return;
  }
  // Rows mode: A = X [M, K] K-major; B = W as [E * R, S].
  const CUtensorMap a = make_map(p.A, p.rows, p.K, 128, op);
  const CUtensorMap b = make_map(p.B, int64_t(p.E) * R, S, transW ? 128 : 64, op);
  if (transW) launch<true, true, false, __nv_bfloat16>(stream, a, b, args, grid, op);
  else launch<true, false, false, __nv_bfloat16>(stream, a, b, args, grid, op);
}

}  // namespace nmoe::cuda
