// Dense and grouped (per-expert) GEMMs, and the elementwise add.
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"
#include "backend/cpu/cpu_gemm.h"

namespace nmoe {

using namespace cpu;

namespace {

constexpr int64_t kElementwiseGrain = 1 << 14;

template <class T>
void grouped_matmul_impl(const Tensor& X, const Tensor& W, bool transW, const int32_t* off,
                         const Tensor& Y) {
  const int64_t E = W.size(0), R = W.size(1), S = W.size(2);
  const int64_t in_cols = X.cols(), out_cols = Y.cols();
  const int64_t K = transW ? S : R;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t begin = off[e], rows = off[e + 1] - off[e];
    if (rows == 0) continue;
    gemm<T>(false, transW, rows, out_cols, K, 1.0, X.ptr<T>() + begin * in_cols, in_cols,
            W.ptr<T>() + e * R * S, S, 0.0, Y.ptr<T>() + begin * out_cols, out_cols);
  }
}

template <class T>
void grouped_wgrad_impl(const Tensor& dY, const Tensor& X, const int32_t* off, const Tensor& dW) {
  const int64_t E = dW.size(0), R = dW.size(1), S = dW.size(2);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t begin = off[e], rows = off[e + 1] - off[e];
    if (rows == 0) continue;
    gemm<T>(true, false, R, S, rows, 1.0, dY.ptr<T>() + begin * R, R, X.ptr<T>() + begin * S, S,
            1.0, dW.ptr<T>() + e * R * S, S);
  }
}

template <class T>
void add_impl(const Tensor& out, const Tensor& a, const Tensor& b, double alpha) {
  T* o = out.ptr<T>();
  const T* pa = a.ptr<T>();
  const T* pb = b.ptr<T>();
  parallel_blocks(out.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      o[i] = static_cast<T>(static_cast<double>(pa[i]) + alpha * static_cast<double>(pb[i]));
  });
}

}  // namespace

void CpuBackend::matmul(const Tensor& A, bool transA, const Tensor& B, bool transB,
                        const Tensor& C, double alpha, double beta) {
  const char* op = "matmul";
  const ops::MatmulDims d = ops::check_matmul(A, transA, B, transB, C);
  dispatch_float(op, {{"A", A}, {"B", B}, {"C", C}}, [&](auto tag) {
    using T = decltype(tag);
    gemm<T>(transA, transB, d.M, d.N, d.K, alpha, A.ptr<T>(), A.cols(), B.ptr<T>(), B.cols(), beta,
            C.ptr<T>(), C.cols());
  });
}

void CpuBackend::grouped_matmul(const Tensor& X, const Tensor& W, bool transW,
                                const Tensor& offsets, const Tensor& Y) {
  const char* op = "grouped_matmul";
  const ops::GroupedDims d = ops::check_grouped_matmul(X, W, transW, offsets, Y);
  const int32_t* off = offsets.ptr<int32_t>();
  ops::check_offset_values(op, off, d.E, d.M);
  dispatch_float(op, {{"X", X}, {"W", W}, {"Y", Y}}, [&](auto tag) {
    grouped_matmul_impl<decltype(tag)>(X, W, transW, off, Y);
  });
}

void CpuBackend::grouped_matmul_wgrad(const Tensor& dY, const Tensor& X, const Tensor& offsets,
                                      const Tensor& dW) {
  const char* op = "grouped_matmul_wgrad";
  const ops::GroupedDims d = ops::check_grouped_matmul_wgrad(dY, X, offsets, dW);
  const int32_t* off = offsets.ptr<int32_t>();
  ops::check_offset_values(op, off, d.E, d.M);
  dispatch_float(op, {{"dY", dY}, {"X", X}, {"dW", dW}}, [&](auto tag) {
    grouped_wgrad_impl<decltype(tag)>(dY, X, off, dW);
  });
}

void CpuBackend::add(const Tensor& out, const Tensor& a, const Tensor& b, double alpha) {
  const char* op = "add";
  ops::check_add(out, a, b);
  dispatch_float(op, {{"out", out}, {"a", a}, {"b", b}}, [&](auto tag) {
    add_impl<decltype(tag)>(out, a, b, alpha);
  });
}

}  // namespace nmoe
