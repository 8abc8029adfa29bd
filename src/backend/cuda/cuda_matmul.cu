// Dense and grouped (per-expert) GEMMs through cuBLAS.
//
// Row-major C = op(A) @ op(B) is the column-major product C^T = op(B)^T op(A)^T,
// so cuBLAS gets B as its first operand and A as its second, with the same
// transpose flags and the row-major leading dims.
#include <climits>

#include "backend/cuda/cuda_common.cuh"

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
  check_index_tensor(op, "offsets", offsets, experts + 1);
  const int32_t* off = be.offsets_to_host(offsets, op);
  NMOE_CHECK(off[0] == 0, op, ": offsets[0] must be 0, got ", off[0]);
  for (int64_t e = 0; e < experts; ++e)
    NMOE_CHECK(off[e + 1] >= off[e], op, ": offsets must be non-decreasing, offsets[", e,
               "] = ", off[e], " > offsets[", e + 1, "] = ", off[e + 1]);
  NMOE_CHECK(off[experts] == rows, op, ": offsets[E] = ", off[experts],
             " must equal the number of rows ", rows);
  return off;
}

}  // namespace

void CudaBackend::matmul(const Tensor& A, bool transA, const Tensor& B, bool transB,
                         const Tensor& C, double alpha, double beta) {
  const char* op = "matmul";
  NMOE_CHECK(A.ndim() >= 1 && B.ndim() >= 1 && C.ndim() >= 1, op,
             ": A, B, C need at least one dim, got ", A.shape.str(), ", ", B.shape.str(), ", ",
             C.shape.str());
  const int64_t M = transA ? A.cols() : A.rows();
  const int64_t K = transA ? A.rows() : A.cols();
  const int64_t Kb = transB ? B.cols() : B.rows();
  const int64_t N = transB ? B.rows() : B.cols();
  NMOE_CHECK(K == Kb, op, ": inner dims differ: op(A) is [", M, ", ", K, "] (A ", A.shape.str(),
             transA ? " transposed" : "", "), op(B) is [", Kb, ", ", N, "] (B ", B.shape.str(),
             transB ? " transposed" : "", ")");
  check_matrix(op, "C", C, M, N);
  check_data(op, "A", A);
  check_data(op, "B", B);
  // F32 x F32 -> F32, or BF16 x BF16 -> BF16 or F32 (e.g. router logits, weight gradients).
  const bool mixed_out = A.dtype == DType::BF16 && C.dtype == DType::F32;
  const DType ab = mixed_out ? act_dtype(op, {{"A", A}, {"B", B}}, {{"C", C}})
                             : act_dtype(op, {{"A", A}, {"B", B}, {"C", C}}, {});
  gemm(*this, op, ab, C.dtype, transA, transB, M, N, K, alpha, A.data, A.cols(), B.data, B.cols(),
       beta, C.data, C.cols());
}

// Correct-first version: the offsets come to the host (one sync per call) and
// each non-empty expert is one cuBLAS GEMM. A device-side grouped GEMM kernel
// (offsets read on the device, no sync) replaces this later.
void CudaBackend::grouped_matmul(const Tensor& X, const Tensor& W, bool transW,
                                 const Tensor& offsets, const Tensor& Y) {
  const char* op = "grouped_matmul";
  NMOE_CHECK(W.ndim() == 3, op, ": W must be [E, R, S], got ", W.shape.str());
  check_data(op, "W", W);
  const int64_t E = W.size(0), R = W.size(1), S = W.size(2);
  const int64_t M = X.rows();
  check_matrix(op, "X", X, M, transW ? S : R);
  check_matrix(op, "Y", Y, M, transW ? R : S);
  dispatch_act(op, {{"X", X}, {"W", W}, {"Y", Y}}, {}, [&](auto tag) {
    using T = decltype(tag);
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
  NMOE_CHECK(dW.ndim() == 3, op, ": dW must be [E, R, S], got ", dW.shape.str());
  check_data(op, "dW", dW);
  const int64_t E = dW.size(0), R = dW.size(1), S = dW.size(2);
  const int64_t M = dY.rows();
  check_matrix(op, "dY", dY, M, R);
  check_matrix(op, "X", X, M, S);
  // dW is F32 (parameter gradient) or the inputs' dtype.
  const bool mixed_out = dY.dtype == DType::BF16 && dW.dtype == DType::F32;
  auto run = [&](auto tag) {
    using T = decltype(tag);
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
