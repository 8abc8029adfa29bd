// Dense and grouped (per-expert) GEMMs through cuBLAS.
//
// Row-major C = op(A) @ op(B) is the column-major product C^T = op(B)^T op(A)^T,
// so cuBLAS gets B as its first operand and A as its second, with the same
// transpose flags and the row-major leading dims.
#include <climits>
#include <type_traits>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_grouped_gemm.h"

namespace nmoe {

using namespace cuda;

namespace {

template <class T>
__global__ void scale_kernel(T* C, int64_t M, int64_t N, int64_t ldc, float beta) {
  NMOE_GRID_STRIDE(i, M * N) {
    T* c = C + (i / N) * ldc + i % N;
    *c = beta == 0.f ? from_f32<T>(0.f) : from_f32<T>(beta * to_f32(*c));
  }
}

int gemm_dim(const char* op, int64_t n) {
  NMOE_CHECK(n >= 0 && n <= INT_MAX, op, ": GEMM dimension ", n, " exceeds the cuBLAS int range");
  return static_cast<int>(n);
}

}  // namespace

namespace cuda {

void gemm(CudaBackend& be, const char* op, DType ab, DType c, bool transA, bool transB, int64_t M,
          int64_t N, int64_t K, double alpha, const void* A, int64_t lda, const void* B,
          int64_t ldb, double beta, void* C, int64_t ldc) {
  const bool f32 = ab == DType::F32 && c == DType::F32;
  const bool bf16 = ab == DType::BF16 && (c == DType::BF16 || c == DType::F32);
  NMOE_CHECK(f32 || bf16, op, ": GEMM with A, B ", dtype_name(ab), " and C ", dtype_name(c),
             " not implemented (F32 x F32 -> F32 or BF16 x BF16 -> BF16/F32)");
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0) {  // C = beta * C, never reading C when beta == 0
    if (c == DType::F32)
      scale_kernel<float><<<grid_for(M * N), kThreads, 0, be.stream()>>>(
          static_cast<float*>(C), M, N, ldc, static_cast<float>(beta));
    else
      scale_kernel<__nv_bfloat16><<<grid_for(M * N), kThreads, 0, be.stream()>>>(
          static_cast<__nv_bfloat16*>(C), M, N, ldc, static_cast<float>(beta));
    NMOE_CUDA_LAUNCHED(op);
    return;
  }
  const float a = static_cast<float>(alpha), b = static_cast<float>(beta);
  const cudaDataType_t tab = f32 ? CUDA_R_32F : CUDA_R_16BF;
  const cudaDataType_t tc = c == DType::F32 ? CUDA_R_32F : CUDA_R_16BF;
  NMOE_CUBLAS_CHECK(
      op, cublasGemmEx(be.cublas(), transB ? CUBLAS_OP_T : CUBLAS_OP_N,
                       transA ? CUBLAS_OP_T : CUBLAS_OP_N, gemm_dim(op, N), gemm_dim(op, M),
                       gemm_dim(op, K), &a, B, tab, gemm_dim(op, ldb), A, tab, gemm_dim(op, lda),
                       &b, C, tc, gemm_dim(op, ldc),
                       f32 ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT));
}

}  // namespace cuda

namespace {

// Host copy of offsets [E+1] (one documented sync), checked like the CPU backend.
const int32_t* checked_offsets(CudaBackend& be, const char* op, const Tensor& offsets,
                               int64_t experts, int64_t rows) {
  const int32_t* off = be.offsets_to_host(offsets, op);
  ops::check_offset_values(op, off, experts, rows);
  return off;
}

}  // namespace

void CudaBackend::matmul(const Tensor& A, bool transA, const Tensor& B, bool transB,
                         const Tensor& C, double alpha, double beta) {
  const char* op = "matmul";
  const ops::MatmulDims d = ops::check_matmul(A, transA, B, transB, C);
  // F32 x F32 -> F32, or BF16 x BF16 -> BF16 or F32 (e.g. router logits, weight gradients).
  const bool mixed_out = A.dtype == DType::BF16 && C.dtype == DType::F32;
  const DType ab = mixed_out ? act_dtype(op, {{"A", A}, {"B", B}}, {{"C", C}})
                             : act_dtype(op, {{"A", A}, {"B", B}, {"C", C}}, {});
  gemm(*this, op, ab, C.dtype, transA, transB, d.M, d.N, d.K, alpha, A.data, A.cols(), B.data, B.cols(),
       beta, C.data, C.cols());
}

// BF16 with R and S multiples of 8 (every model shape): the device-side
// grouped GEMM kernel, offsets read on the GPU, no host sync. Otherwise (F32,
// odd widths) the offsets come to the host (one sync per call) and each
// non-empty expert is one cuBLAS GEMM.
void CudaBackend::grouped_matmul(const Tensor& X, const Tensor& W, bool transW,
                                 const Tensor& offsets, const Tensor& Y) {
  const char* op = "grouped_matmul";
  const ops::GroupedDims g = ops::check_grouped_matmul(X, W, transW, offsets, Y);
  const int64_t E = g.E, R = g.R, S = g.S, M = g.M;
  dispatch_act(op, {{"X", X}, {"W", W}, {"Y", Y}}, {}, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      if (device_grouped_gemm_supported(R, S, X.data, W.data, Y.data)) {
        device_grouped_gemm(stream(), device_error_flag(), X.ptr<T>(), W.ptr<T>(), transW,
                            offsets.ptr<int32_t>(), static_cast<int>(E), M, R, S, Y.ptr<T>());
        return;
      }
    }
    const int32_t* off = checked_offsets(*this, op, offsets, E, M);
    const int64_t in_cols = X.cols(), out_cols = Y.cols(), K = transW ? S : R;
    for (int64_t e = 0; e < E; ++e) {
      const int64_t begin = off[e], rows = off[e + 1] - off[e];
      if (rows == 0) continue;
      gemm(*this, op, Y.dtype, false, transW, rows, out_cols, K, 1.0,
           X.ptr<T>() + begin * in_cols, in_cols, W.ptr<T>() + e * R * S, S, 0.0,
           Y.ptr<T>() + begin * out_cols, out_cols);
    }
  });
}

void CudaBackend::grouped_matmul_wgrad(const Tensor& dY, const Tensor& X, const Tensor& offsets,
                                       const Tensor& dW) {
  const char* op = "grouped_matmul_wgrad";
  const ops::GroupedDims g = ops::check_grouped_matmul_wgrad(dY, X, offsets, dW);
  const int64_t E = g.E, R = g.R, S = g.S, M = g.M;
  // dW is F32 (parameter gradient) or the inputs' dtype.
  const bool mixed_out = dY.dtype == DType::BF16 && dW.dtype == DType::F32;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      if (device_grouped_gemm_supported(R, S, dY.data, X.data, dW.data)) {
        device_grouped_gemm_wgrad(stream(), device_error_flag(), dY.ptr<T>(), X.ptr<T>(),
                                  offsets.ptr<int32_t>(), static_cast<int>(E), M, R, S, dW.data,
                                  dW.dtype == DType::F32);
        return;
      }
    }
    const int32_t* off = checked_offsets(*this, op, offsets, E, M);
    for (int64_t e = 0; e < E; ++e) {
      const int64_t begin = off[e], rows = off[e + 1] - off[e];
      if (rows == 0) continue;
      gemm(*this, op, dY.dtype, dW.dtype, true, false, R, S, rows, 1.0, dY.ptr<T>() + begin * R,
           R, X.ptr<T>() + begin * S, S, 1.0,
           static_cast<char*>(dW.data) + (e * R * S) * dtype_size(dW.dtype), S);
    }
  };
  if (mixed_out) dispatch_act(op, {{"dY", dY}, {"X", X}}, {{"dW", dW}}, run);
  else dispatch_act(op, {{"dY", dY}, {"X", X}, {"dW", dW}}, {}, run);
}

}  // namespace nmoe
