// Hopper grouped GEMM with the bulk tensor copy engine (TMA) and warp
// specialization, persistent: each block walks output tiles t = blockIdx.x,
// + gridDim.x, ... One producer warp streams the A and B tiles of every
// 64-deep k-slice into a ring of shared-memory stages (completion counted on an
// mbarrier per stage), running ahead into the next output tile while the
// consumers store the last one; two consumer warpgroups multiply with wgmma
// (64 rows each of a 128 x BN output tile, BN = 128, 192 or 256), keeping one
// k-slice in flight and handing each stage back through a second mbarrier. No
// block-wide barrier in the main loop. 128 x 256 tiles read 25% fewer operand
// bytes per FLOP than 128 x 128 (the 128 x 128 kernel is bound by L2
// bandwidth); they run one block per multiprocessor, 128 x 128 tiles two.
// With one block nothing hides a tile's epilogue, so on 128 x 256 and
// 128 x 192 tiles with BF16 output the consumers put the output tile into
// shared memory and bulk copies (one per half row, so rows past the expert's
// end are skipped; weight gradients: bulk adds) write it out while they
// multiply the next tile (NMOE_GG_STORE=direct: from registers, 256-wide only).
//
// Each block first turns the offsets into a prefix of M tiles per expert in
// shared memory (checking them), so a tile finds its expert by binary search.
// The tiles land in the same 128-byte-swizzled layouts as in the cp.async
// kernel (cuda_grouped_gemm_wgmma.cu). TMA cannot mask a segment: rows past a
// segment's end inside the tensor are loaded like any other. Along M (rows
// mode) they are computed and not stored; along K (weight gradient, and
// MN-major weights whose K is not a multiple of 64) the consumers zero them in
// shared memory before the multiply. Past the tensor's end TMA fills zeros.
#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <string>

#include "backend/cuda/cuda_grouped_gemm.h"
#include "backend/cuda/cuda_grouped_gemm_common.cuh"
#include "backend/cuda/cuda_wgmma.cuh"
#include "core/env_choice.h"

namespace nmoe::cuda {
namespace {

using namespace gg;

constexpr int kBM = 128, kBK = 64;
static_assert(kBK == 64, "wgmma_k64_tile issues 64-deep k-tiles");
constexpr int kConsumers = 256, kThreads = kConsumers + 32;  // two warpgroups + a producer warp
constexpr int kATileBytes = kBM * kBK * 2;                   // 16 KiB
// Experts the tile prefix in shared memory holds; more take the other kernels.
constexpr int kMaxExperts = 4096;

// BN = 128: 3 stages of 32 KiB, two blocks per multiprocessor, 112 registers.
// BN = 256: 4 stages of 48 KiB, one block, 168 registers (128 accumulators per
// thread; a block of 288 threads is allocated registers as 12 warps).
// Staged (BN = 256 or 192, BF16 output): an output tile in shared memory that
// bulk copies write out while the consumers go on to the next tile (at one
// block per multiprocessor nothing else hides the epilogue); rows padded by 16
// bytes so that the accumulators go in without bank conflicts. 3 stages at
// BN = 256, 4 of 40 KiB at BN = 192 (384-wide outputs without a half-empty tile).
template <int BN, bool Staged = false>
struct TileShape {
  static_assert(BN == 128 || BN == 256 || (BN == 192 && Staged), "TMA tiles are 128 or 256 wide, or 192 staged");
  static_assert(!Staged || BN >= 192, "the staged epilogue is for 128 x 192 and 128 x 256 tiles");
  static constexpr int kStages = BN == 256 ? (Staged ? 3 : 4) : BN == 192 ? 4 : 3;
  static constexpr int kBlocksPerSm = BN == 128 ? 2 : 1;
  static constexpr int kRegisters = BN == 128 ? 112 : 168;
  static constexpr int kStageBytes = kATileBytes + BN * kBK * 2;
  static constexpr int kOutRowBytes = BN * 2 + 16;
  static constexpr int kOutOffset = kStages * kStageBytes;  // from the 1 KiB-aligned base
  static constexpr int kBarrierOffset = kOutOffset + (Staged ? 2 * 64 * kOutRowBytes : 0);
  static constexpr int kPrefixOffset = kBarrierOffset + 2 * kStages * 8;
  static int smem_bytes(int E) { return 1024 + kPrefixOffset + 4 * (E + 1); }
};

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

// Loads an operand tile of `cols` (128, 192 or 256) rows or columns at k-slice k0.
// K-major: one box of 64 (k) x cols rows at (k0, mn0).
// MN-major: cols / 64 boxes of 64 (mn) x 64 (k) at (mn0 + 64h, k0), 8 KiB apart.
template <bool KMajor, int Cols>
__device__ __forceinline__ void load_operand(uint32_t tile, const CUtensorMap* map, int64_t mn0,
                                             int64_t k0, uint32_t bar) {
  if constexpr (KMajor) {
    tma_load(tile, map, static_cast<int>(k0), static_cast<int>(mn0), bar);
  } else {
#pragma unroll
    for (int h = 0; h < Cols / 64; ++h)
      tma_load(tile + 8192 * h, map, static_cast<int>(mn0 + 64 * h), static_cast<int>(k0), bar);
  }
}

// Zeroes k-rows [valid, 64) of an MN-major tile of `Cols` columns.
template <int Cols>
__device__ __forceinline__ void zero_k_tail(unsigned char* tile, int valid, int tid) {
  const int rows = 64 - valid;
  for (int i = tid; i < (Cols / 64) * rows * 8; i += kConsumers) {
    const int blk = i / (rows * 8), r = valid + (i / 8) % rows, c = i % 8;
    *reinterpret_cast<uint4*>(tile + blk * 8192 + r * 128 + c * 16) = make_uint4(0, 0, 0, 0);
  }
}

// Staged epilogue of one consumer warpgroup (wtid 0..127): its 64 x BN
// accumulators go to its rows of the output tile in shared memory as BF16 (the
// rounding of store_m64n), then one bulk copy per half row writes them out
// (weight gradient: adds them, one BF16 add per element as red.add does);
// rows past the expert's end and columns past N are not copied. The copies of
// the previous tile must have read the buffer first.
template <bool Wgrad, int BN, int RowBytes>
__device__ __forceinline__ void store_staged(const GroupedGemmArgs& p, const TileWork& w, const float (&acc)[BN / 2],
                                             int wg, int warp_in_wg, int lane, unsigned char* out, uint32_t out_s) {
  const int wtid = warp_in_wg * 32 + lane;
  asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
  asm volatile("bar.sync %0, 128;\n" ::"r"(2 + wg) : "memory");
  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    uint32_t* row = reinterpret_cast<uint32_t*>(out + (warp_in_wg * 16 + g + half * 8) * RowBytes);
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
      const __nv_bfloat162 v = __floats2bfloat162_rn(acc[4 * j + 2 * half], acc[4 * j + 2 * half + 1]);
      row[4 * j + t4] = *reinterpret_cast<const uint32_t*>(&v);
    }
  }
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // visible to the bulk copies
  asm volatile("bar.sync %0, 128;\n" ::"r"(2 + wg) : "memory");
  const int r = wtid >> 1, part = wtid & 1;
  const int64_t row = w.m0 + wg * 64 + r, col0 = w.n0 + part * (BN / 2);
  if (row < w.m_end && col0 < p.N) {
    const int64_t cols = p.N - col0 < BN / 2 ? p.N - col0 : BN / 2;
    const __nv_bfloat16* dst =
        static_cast<const __nv_bfloat16*>(p.C) + (Wgrad ? w.expert * p.c_stride : 0) + row * p.ldc + col0;
    const uint32_t src = out_s + r * RowBytes + part * BN;
    const int bytes = static_cast<int>(cols * 2);
    if constexpr (Wgrad)
      asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.noftz.bf16 [%0], [%1], %2;\n" ::"l"(dst),
                   "r"(src), "r"(bytes)
                   : "memory");
    else
      asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;\n" ::"l"(dst), "r"(src), "r"(bytes)
                   : "memory");
  }
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}

struct TmaArgs {
  GroupedGemmArgs p;
  int64_t b_row_stride;  // rows mode: rows of the B tensor per expert (R)
  int64_t tiles;         // wgrad: output tiles (E * tiles_m * tiles_n); rows mode: from the prefix
};

// Rows mode: prefix[e] = M tiles of experts before e (prefix[E] = all), built
// by the whole block; false (and the error flag set) when the offsets are not
// 0 = o[0] <= ... <= o[E] = rows. Wgrad: the same check only.
template <bool Wgrad>
__device__ bool build_tile_prefix(const GroupedGemmArgs& p, int* prefix) {
  const ExpertScan sc = scan_expert_tiles<kBM, kThreads>(p);
  if (!Wgrad && !sc.bad) {
    int before = sc.before;
    for (int e = sc.e0; e < sc.e1; ++e) {
      prefix[e] = before;
      before += (p.offsets[e + 1] - p.offsets[e] + kBM - 1) / kBM;
    }
    if (threadIdx.x == kThreads - 1) prefix[p.E] = before;  // its e1 is E
  }
  __syncthreads();
  if (sc.bad && threadIdx.x == 0) report_error(p.err, kErrOffsets);
  return !sc.bad;
}

// Output tile t: its expert, rows, columns and K range. False: nothing to do
// (a weight-gradient tile of an expert without rows).
template <bool Wgrad, int BN>
__device__ __forceinline__ bool tile_at(const GroupedGemmArgs& p, const int* prefix, int64_t t, TileWork& w) {
  const int tn = static_cast<int>(t % p.tiles_n);
  const int64_t tm = t / p.tiles_n;
  w.n0 = static_cast<int64_t>(tn) * BN;
  if constexpr (Wgrad) {
    w.expert = static_cast<int>(tm / p.tiles_m);
    w.m0 = (tm % p.tiles_m) * kBM;
    w.m_end = p.M;
    w.k_begin = p.offsets[w.expert];
    w.k_end = p.offsets[w.expert + 1];
    return w.k_end > w.k_begin;
  } else {
    int lo = 0, hi = p.E;  // the expert e with prefix[e] <= tm < prefix[e + 1]
    while (hi - lo > 1) {
      const int mid = (lo + hi) / 2;
      if (prefix[mid] <= tm) lo = mid;
      else hi = mid;
    }
    w.expert = lo;
    w.m0 = p.offsets[lo] + (tm - prefix[lo]) * kBM;
    w.m_end = p.offsets[lo + 1];
    w.k_begin = 0;
    w.k_end = p.K;
    return true;
  }
}

template <bool AK, bool BK, bool Wgrad, class OutT, int BN, bool Staged>
__global__ void __maxnreg__((TileShape<BN, Staged>::kRegisters))
    grouped_gemm_tma_kernel(const __grid_constant__ CUtensorMap map_a,
                            const __grid_constant__ CUtensorMap map_b, const TmaArgs args) {
  static_assert(!Staged || sizeof(OutT) == 2, "the staged epilogue writes BF16 rows");
  using S = TileShape<BN, Staged>;
  constexpr int kStages = S::kStages, kStageBytes = S::kStageBytes;
  extern __shared__ unsigned char smem_raw[];
  const GroupedGemmArgs& p = args.p;
  const int tid = threadIdx.x;

  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t base = (raw + 1023) & ~1023u;
  unsigned char* base_ptr = smem_raw + (base - raw);
  int* prefix = reinterpret_cast<int*>(base_ptr + S::kPrefixOffset);
  const uint32_t full0 = base + S::kBarrierOffset, empty0 = full0 + kStages * 8;
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full0 + 8 * s, 1);
      mbar_init(empty0 + 8 * s, kConsumers / 32);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  if (!build_tile_prefix<Wgrad>(p, prefix)) return;  // ends with a block barrier
  const int64_t tiles = Wgrad ? args.tiles : static_cast<int64_t>(prefix[p.E]) * p.tiles_n;

  if (tid >= kConsumers) {  // producer warp
    if (tid != kConsumers) return;
    int slice = 0;  // k-slices issued by this block so far: ring position and phase
    for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
      TileWork w;
      if (!tile_at<Wgrad, BN>(p, prefix, t, w)) continue;
      const int64_t b_row0 = Wgrad ? 0 : w.expert * args.b_row_stride;  // rows mode: the expert's rows of W
      for (int64_t k0 = w.k_begin; k0 < w.k_end; k0 += kBK, ++slice) {
        const int s = slice % kStages;
        mbar_wait(empty0 + 8 * s, ((slice / kStages) & 1) ^ 1);
        const uint32_t full = full0 + 8 * s, ta = base + s * kStageBytes, tb = ta + kATileBytes;
        mbar_expect_tx(full, kStageBytes);
        // A: rows mode [M, K] K-major at rows m0..; wgrad [M(k), R] MN-major at cols m0...
        load_operand<AK, kBM>(ta, &map_a, w.m0, k0, full);
        // B: rows mode K-major [E*R, S] at rows b_row0 + n0.., or MN-major at k-rows b_row0 + k0..;
        // wgrad [M(k), S] MN-major.
        if constexpr (BK) load_operand<true, BN>(tb, &map_b, b_row0 + w.n0, k0, full);
        else load_operand<false, BN>(tb, &map_b, w.n0, b_row0 + k0, full);
      }
    }
    return;
  }

  // Consumers.
  const int wg = tid >> 7, lane = tid & 31, warp_in_wg = (tid >> 5) & 3;
  int slice = 0;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    TileWork w;
    if (!tile_at<Wgrad, BN>(p, prefix, t, w)) continue;
    float acc[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
    int prev = -1;  // stage of the k-slice whose wgmma may still be in flight
    for (int64_t k0 = w.k_begin; k0 < w.k_end; k0 += kBK, ++slice) {
      const int s = slice % kStages;
      mbar_wait(full0 + 8 * s, (slice / kStages) & 1);
      const uint32_t ta = base + s * kStageBytes, tb = ta + kATileBytes;
      if constexpr (!AK || !BK) {
        const int64_t rem = w.k_end - k0;
        const int valid = rem < kBK ? static_cast<int>(rem) : kBK;
        if (valid < kBK) {  // K rows past the segment (or past the weight) would add garbage
          unsigned char* tile = base_ptr + s * kStageBytes;
          if constexpr (!AK) zero_k_tail<kBM>(tile, valid, tid);
          if constexpr (!BK) zero_k_tail<BN>(tile + kATileBytes, valid, tid);
          asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
          asm volatile("bar.sync 1, %0;\n" ::"n"(kConsumers) : "memory");
        }
      }
      wgmma_k64_tile<AK, BK, BN>(acc, ta, tb, wg);
      asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
      // The wgmma of the previous k-slice is done: hand its stage back to the producer.
      if (prev >= 0 && lane == 0) mbar_arrive(empty0 + 8 * prev);
      prev = s;
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    if (prev >= 0 && lane == 0) mbar_arrive(empty0 + 8 * prev);
    // The producer is already loading the next tile's first stages.
    if constexpr (Staged)
      store_staged<Wgrad, BN, S::kOutRowBytes>(p, w, acc, wg, warp_in_wg, lane,
                                        base_ptr + S::kOutOffset + wg * 64 * S::kOutRowBytes,
                                        base + S::kOutOffset + wg * 64 * S::kOutRowBytes);
    else
      store_m64n<Wgrad, OutT, BN>(p, w, acc, wg, warp_in_wg, lane);
  }
  if constexpr (Staged) asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
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

int device_attribute(cudaDeviceAttr a) {
  int dev = 0, v = 0;
  NMOE_CUDA_CHECK("grouped_matmul", cudaGetDevice(&dev));
  NMOE_CUDA_CHECK("grouped_matmul", cudaDeviceGetAttribute(&v, a, dev));
  return v;
}

int max_smem_per_block() {
  static const int n = device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin);
  return n;
}

// NMOE_GG_STORE: how 128 x 256 tiles with BF16 output are written: auto
// (default) or staged (through shared memory and bulk copies, where the expert
// count leaves room), direct (from registers; 192-wide tiles, which exist only
// staged, then do not run).
bool staged_store_selected() {
  static const bool staged = [] {
    return env_choice("NMOE_GG_STORE", {"auto", "staged", "direct"}) != "direct";
  }();
  return staged;
}

int multiprocessors() {
  static const int n = device_attribute(cudaDevAttrMultiProcessorCount);
  return n;
}

// The dynamic shared memory a kernel may have: the device's limit per block
// less the kernel's static shared memory (the offsets scan).
template <bool AK, bool BK, bool Wgrad, class OutT, int BN, bool Staged>
int dynamic_smem_limit() {
  static const int n = [] {
    cudaFuncAttributes a{};
    NMOE_CUDA_CHECK("grouped_matmul",
                    cudaFuncGetAttributes(&a, grouped_gemm_tma_kernel<AK, BK, Wgrad, OutT, BN, Staged>));
    return max_smem_per_block() - static_cast<int>(a.sharedSizeBytes);
  }();
  return n;
}

template <bool AK, bool BK, bool Wgrad, class OutT, int BN, bool Staged = false>
void launch(cudaStream_t stream, const CUtensorMap& a, const CUtensorMap& b, const TmaArgs& args,
            int64_t tile_bound, const char* op) {
  using S = TileShape<BN, Staged>;
  constexpr auto kernel = grouped_gemm_tma_kernel<AK, BK, Wgrad, OutT, BN, Staged>;
  const int limit = dynamic_smem_limit<AK, BK, Wgrad, OutT, BN, Staged>();
  static const bool configured = [&] {
    const int bytes = std::min(S::smem_bytes(kMaxExperts), limit);
    NMOE_CUDA_CHECK(op, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    return true;
  }();
  NMOE_CHECK(S::smem_bytes(args.p.E) <= limit, op, ": ", args.p.E,
             " experts need more shared memory than the TMA kernel has");
  (void)configured;
  const int64_t blocks = std::min<int64_t>(tile_bound, int64_t(multiprocessors()) * S::kBlocksPerSm);
  if (blocks <= 0) return;
  kernel<<<static_cast<unsigned>(blocks), kThreads, S::smem_bytes(args.p.E), stream>>>(a, b, args);
  NMOE_CUDA_LAUNCHED(op);
}

template <int BN>
void launch_tile(cudaStream_t stream, const GroupedGemmArgs& p, bool transW, bool wgrad, bool out_f32, int64_t R,
                 int64_t S, const char* op);

// Whether 192-wide tiles can run (they exist only with the staged store).
bool staged_192_fits(int E, bool transW, bool wgrad, bool out_f32) {
  if (!staged_store_selected() || out_f32) return false;
  const int limit = wgrad    ? dynamic_smem_limit<false, false, true, __nv_bfloat16, 192, true>()
                    : transW ? dynamic_smem_limit<true, true, false, __nv_bfloat16, 192, true>()
                             : dynamic_smem_limit<true, false, false, __nv_bfloat16, 192, true>();
  return TileShape<192, true>::smem_bytes(E) <= limit;
}

template <int BN>
void launch_tile(cudaStream_t stream, const GroupedGemmArgs& p, bool transW, bool wgrad, bool out_f32, int64_t R,
                 int64_t S, const char* op) {
  if constexpr (BN == 192) {
    NMOE_ASSERT(staged_192_fits(p.E, transW, wgrad, out_f32));  // callers ask tma_tile_that_runs
  }
  TmaArgs args{p, R, 0};
  args.p.tiles_n = static_cast<int>((p.N + BN - 1) / BN);
  if (wgrad) {  // A = dY [M, R], B = X [M, S], both MN-major
    args.p.tiles_m = static_cast<int>((p.M + kBM - 1) / kBM);
    args.tiles = int64_t(p.E) * args.p.tiles_m * args.p.tiles_n;
    const CUtensorMap a = make_map(p.A, p.rows, R, 64, op), b = make_map(p.B, p.rows, S, 64, op);
    if constexpr (BN == 192) {
      launch<false, false, true, __nv_bfloat16, BN, true>(stream, a, b, args, args.tiles, op);
      return;
    } else if constexpr (BN == 256) {
      if (!out_f32 && staged_store_selected() &&
          TileShape<BN, true>::smem_bytes(p.E) <= dynamic_smem_limit<false, false, true, __nv_bfloat16, BN, true>()) {
        launch<false, false, true, __nv_bfloat16, BN, true>(stream, a, b, args, args.tiles, op);
        return;
      }
    }
    if constexpr (BN != 192) {
      if (out_f32) launch<false, false, true, float, BN>(stream, a, b, args, args.tiles, op);
      else launch<false, false, true, __nv_bfloat16, BN>(stream, a, b, args, args.tiles, op);
    }
    return;
  }
  // Rows mode: A = X [M, K] K-major; B = W as [E * R, S].
  const int64_t bound = ((p.rows + kBM - 1) / kBM + p.E) * args.p.tiles_n;  // >= the prefix's tiles
  const CUtensorMap a = make_map(p.A, p.rows, p.K, kBM, op);
  const CUtensorMap b = make_map(p.B, int64_t(p.E) * R, S, transW ? BN : 64, op);
  if constexpr (BN == 192) {
    if (transW) launch<true, true, false, __nv_bfloat16, BN, true>(stream, a, b, args, bound, op);
    else launch<true, false, false, __nv_bfloat16, BN, true>(stream, a, b, args, bound, op);
    return;
  } else if constexpr (BN == 256) {
    const int limit = transW ? dynamic_smem_limit<true, true, false, __nv_bfloat16, BN, true>()
                             : dynamic_smem_limit<true, false, false, __nv_bfloat16, BN, true>();
    if (staged_store_selected() && TileShape<BN, true>::smem_bytes(p.E) <= limit) {
      if (transW) launch<true, true, false, __nv_bfloat16, BN, true>(stream, a, b, args, bound, op);
      else launch<true, false, false, __nv_bfloat16, BN, true>(stream, a, b, args, bound, op);
      return;
    }
  }
  if constexpr (BN != 192) {
    if (transW) launch<true, true, false, __nv_bfloat16, BN>(stream, a, b, args, bound, op);
    else launch<true, false, false, __nv_bfloat16, BN>(stream, a, b, args, bound, op);
  }
}

}  // namespace

int tma_tile_that_runs(int tile_n, int64_t n, int E, bool transW, bool wgrad, bool out_f32) {
  if (tile_n != 192 || staged_192_fits(E, transW, wgrad, out_f32)) return tile_n;
  return n % 256 == 0 ? 256 : 128;
}

bool tma_grouped_gemm_fits(int64_t M, int64_t E, int64_t R, int64_t S) {
  const int64_t lim = int64_t(1) << 31;
  return M < lim && E * R < lim && S < lim && R < lim && E <= kMaxExperts;
}

void launch_grouped_gemm_tma(cudaStream_t stream, const GroupedGemmArgs& p, int tile_n, bool transW, bool wgrad,
                             bool out_f32, int64_t R, int64_t S, const char* op) {
  NMOE_CHECK(tile_n == 128 || tile_n == 192 || tile_n == 256, op, ": TMA tiles are 128, 192 or 256 columns wide, got ",
             tile_n);
  if (tile_n == 256) launch_tile<256>(stream, p, transW, wgrad, out_f32, R, S, op);
  else if (tile_n == 192) launch_tile<192>(stream, p, transW, wgrad, out_f32, R, S, op);
  else launch_tile<128>(stream, p, transW, wgrad, out_f32, R, S, op);
}

}  // namespace nmoe::cuda
