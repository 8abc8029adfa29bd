// Internal helpers of the CUDA backend's op files: error checks, the device
// error flag, element conversions (fp32 math on any storage type), launch
// sizes and deterministic warp/block reductions.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_checks.h"

namespace nmoe::cuda {

// ---- host-side error checks ---------------------------------------------------------
[[noreturn]] void cuda_fail(const char* op, const char* file, int line, const char* call,
                            cudaError_t err);
[[noreturn]] void cublas_fail(const char* op, const char* file, int line, const char* call,
                              cublasStatus_t status);

#define NMOE_CUDA_CHECK(op, call)                                                      \
  do {                                                                                 \
    const cudaError_t nmoe_err_ = (call);                                              \
    if (nmoe_err_ != cudaSuccess)                                                      \
      ::nmoe::cuda::cuda_fail(op, __FILE__, __LINE__, #call, nmoe_err_);               \
  } while (0)

#define NMOE_CUBLAS_CHECK(op, call)                                                    \
  do {                                                                                 \
    const cublasStatus_t nmoe_st_ = (call);                                            \
    if (nmoe_st_ != CUBLAS_STATUS_SUCCESS)                                             \
      ::nmoe::cuda::cublas_fail(op, __FILE__, __LINE__, #call, nmoe_st_);              \
  } while (0)

// After every kernel launch: launch-configuration errors surface here.
#define NMOE_CUDA_LAUNCHED(op) NMOE_CUDA_CHECK(op, cudaGetLastError())

// ---- device error flag ------------------------------------------------------------------
// Kernels that find a bad value skip the element and record the first error code.
enum DeviceError : int {
  kErrNone = 0,
  kErrTokenRange = 1,     // token id outside [0, V)
  kErrExpertRange = 2,    // expert id outside [0, E)
  kErrExpertRepeated = 3, // an expert twice in one row of given indices
  kErrPosRange = 4,       // permutation row outside [0, N*K)
  kErrTargetRange = 5,    // target id >= V
  kErrNegativeCount = 6,  // negative expert count
  kErrOffsets = 7,        // grouped GEMM offsets not 0 = o[0] <= ... <= o[E] = rows
};
const char* device_error_message(int code);

__device__ __forceinline__ void report_error(int* flag, int code) { atomicCAS(flag, 0, code); }

// ---- element types --------------------------------------------------------------------------
// Storage type T, math in fp32. BF16 is added by instantiating kernels on __nv_bfloat16.
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}

template <class T> struct CudaType;
template <> struct CudaType<float> { static constexpr cudaDataType_t value = CUDA_R_32F; };
template <> struct CudaType<__nv_bfloat16> { static constexpr cudaDataType_t value = CUDA_R_16BF; };

// Calls fn(float{}) for ops that are F32-only in every mode (see common_float_dtype).
template <class Fn>
void dispatch_float(const char* op, std::initializer_list<NamedTensor> tensors, Fn&& fn) {
  common_float_dtype(op, tensors);
  fn(float{});
}

// Mixed precision: calls fn(float{}) or fn(__nv_bfloat16{}) by the shared dtype
// of the activation tensors `acts`; every tensor of `f32s` must be F32 (see act_dtype).
template <class Fn>
void dispatch_act(const char* op, std::initializer_list<NamedTensor> acts,
                  std::initializer_list<NamedTensor> f32s, Fn&& fn) {
  if (act_dtype(op, acts, f32s) == DType::BF16) fn(__nv_bfloat16{});
  else fn(float{});
}

// ---- launch sizes ---------------------------------------------------------------------------------
constexpr int kThreads = 256;
constexpr int64_t kMaxGrid = 65535LL * 16;  // grid-stride loops beyond this

inline unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, kMaxGrid));
}

// ---- 16-byte vector access -------------------------------------------------------------------
// Memory-bound kernels move 16 bytes per thread per access (8 bf16 or 4 fp32),
// coalesced across the warp. Their vector path needs rows whose width is a
// multiple of kVec<T> and 16-byte aligned pointers (vec_ok); other shapes take
// the scalar kernels, which compute the same values in the same order.
template <class T>
constexpr int kVec = 16 / static_cast<int>(sizeof(T));

inline bool is_aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// True when every width is a multiple of kVec<T> and every pointer is 16-byte aligned.
template <class T>
bool vec_ok(std::initializer_list<int64_t> widths, std::initializer_list<const void*> ptrs) {
  for (int64_t w : widths)
    if (w % kVec<T> != 0) return false;
  for (const void* p : ptrs)
    if (!is_aligned16(p)) return false;
  return true;
}

// Blocks of kThreads for one warp per row over `rows` rows (grid-stride beyond kMaxGrid).
inline unsigned grid_for_warps(int64_t rows) { return grid_for(rows * 32); }

__device__ __forceinline__ uint4 load16(const void* p) { return *static_cast<const uint4*>(p); }
__device__ __forceinline__ void store16(void* p, const uint4& v) { *static_cast<uint4*>(p) = v; }

// 16 bytes of T to kVec<T> floats (exact) ...
template <class T>
__device__ __forceinline__ void unpack16(const uint4& u, float* f);
template <>
__device__ __forceinline__ void unpack16<float>(const uint4& u, float* f) {
  f[0] = __uint_as_float(u.x);
  f[1] = __uint_as_float(u.y);
  f[2] = __uint_as_float(u.z);
  f[3] = __uint_as_float(u.w);
}
// bf16 -> fp32 is the bit pattern shifted up (what __bfloat162float does);
// element 2j is the low half of word j.
template <>
__device__ __forceinline__ void unpack16<__nv_bfloat16>(const uint4& u, float* f) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    f[2 * j] = __uint_as_float(w[j] << 16);
    f[2 * j + 1] = __uint_as_float(w[j] & 0xFFFF0000u);
  }
}

// ... and kVec<T> floats to 16 bytes of T, each rounded by from_f32<T>.
template <class T>
__device__ __forceinline__ uint4 pack16(const float* f);
template <>
__device__ __forceinline__ uint4 pack16<float>(const float* f) {
  return make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]),
                    __float_as_uint(f[3]));
}
template <>
__device__ __forceinline__ uint4 pack16<__nv_bfloat16>(const float* f) {
  uint32_t w[4];
#pragma unroll
  for (int j = 0; j < 4; ++j)
    w[j] = uint32_t(__bfloat16_as_ushort(__float2bfloat16(f[2 * j]))) |
           (uint32_t(__bfloat16_as_ushort(__float2bfloat16(f[2 * j + 1]))) << 16);
  return make_uint4(w[0], w[1], w[2], w[3]);
}

#define NMOE_GRID_STRIDE(i, n)                                                               \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);    \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// A warp per item w in [0, n), grid-stride.
#define NMOE_WARP_STRIDE(w, n)                                                                      \
  for (int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; w < (n); \
       w += static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5))

inline cudaStream_t stream_of(const CudaBackend& b) { return b.stream(); }

// ---- deterministic reductions (fixed shuffle trees) ----------------------------------------
template <class A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread
// gets the result. `shared` holds 32 elements. Ends with a barrier, so it can
// be called again right away.
template <class A>
__device__ A block_sum(A v, A* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  A total = lane < warps ? shared[lane] : A(0);
  total = warp_sum(total);
  __syncthreads();
  return total;
}

__device__ __forceinline__ float block_max(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float m = lane < warps ? shared[lane] : -INFINITY;
  m = warp_max(m);
  __syncthreads();
  return m;
}

// ---- GEMM ----------------------------------------------------------------------------------------
// Row-major C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C with leading
// dims lda, ldb, ldc (elements), through cuBLAS. beta == 0 never reads C.
// A and B share dtype `ab` (F32 or BF16); C has dtype `c` (F32, or BF16 with BF16
// inputs). All-F32 GEMMs are pedantic fp32 (no TF32); BF16-input GEMMs run on
// tensor cores with fp32 accumulation (CUBLAS_COMPUTE_32F).
void gemm(CudaBackend& be, const char* op, DType ab, DType c, bool transA, bool transB, int64_t M,
          int64_t N, int64_t K, double alpha, const void* A, int64_t lda, const void* B,
          int64_t ldb, double beta, void* C, int64_t ldc);
inline void gemm(CudaBackend& be, const char* op, DType dtype, bool transA, bool transB, int64_t M,
                 int64_t N, int64_t K, double alpha, const void* A, int64_t lda, const void* B,
                 int64_t ldb, double beta, void* C, int64_t ldc) {
  gemm(be, op, dtype, dtype, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace nmoe::cuda
