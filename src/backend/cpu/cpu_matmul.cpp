// Dense and grouped (per-expert) GEMMs, and the elementwise add.
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"
#include "backend/cpu/cpu_gemm.h"

namespace nmoe {

using namespace cpu;

namespace {

constexpr int64_t kElementwiseGrain = 1 << 14;

// offsets [E+1] I32: offsets[0] = 0, non-decreasing, offsets[E] = rows.
const int32_t* checked_offsets(const char* op, const Tensor& offsets, int64_t experts,
                               int64_t rows) {
  check_index_tensor(op, "offsets", offsets, experts + 1);
  const int32_t* off = offsets.ptr<int32_t>();
  NMOE_CHECK(off[0] == 0, op, ": offsets[0] must be 0, got ", off[0]);
  for (int64_t e = 0; e < experts; ++e)
    NMOE_CHECK(off[e + 1] >= off[e], op, ": offsets must be non-decreasing, offsets[", e,
               "] = ", off[e], " > offsets[", e + 1, "] = ", off[e + 1]);
  NMOE_CHECK(off[experts] == rows, op, ": offsets[E] = ", off[experts],
             " must equal the number of rows ", rows);
  return off;
}

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
  dispatch_float(op, {{"A", A}, {"B", B}, {"C", C}}, [&](auto tag) {
    using T = decltype(tag);
    gemm<T>(transA, transB, M, N, K, alpha, A.ptr<T>(), A.cols(), B.ptr<T>(), B.cols(), beta,
            C.ptr<T>(), C.cols());
  });
}

void CpuBackend::grouped_matmul(const Tensor& X, const Tensor& W, bool transW,
                                const Tensor& offsets, const Tensor& Y) {
  const char* op = "grouped_matmul";
  NMOE_CHECK(W.ndim() == 3, op, ": W must be [E, R, S], got ", W.shape.str());
  check_data(op, "W", W);
  const int64_t E = W.size(0), R = W.size(1), S = W.size(2);
  const int64_t M = X.rows();
  check_matrix(op, "X", X, M, transW ? S : R);
  check_matrix(op, "Y", Y, M, transW ? R : S);
  const int32_t* off = checked_offsets(op, offsets, E, M);
  dispatch_float(op, {{"X", X}, {"W", W}, {"Y", Y}}, [&](auto tag) {
    grouped_matmul_impl<decltype(tag)>(X, W, transW, off, Y);
  });
}

void CpuBackend::grouped_matmul_wgrad(const Tensor& dY, const Tensor& X, const Tensor& offsets,
                                      const Tensor& dW) {
  const char* op = "grouped_matmul_wgrad";
  NMOE_CHECK(dW.ndim() == 3, op, ": dW must be [E, R, S], got ", dW.shape.str());
  check_data(op, "dW", dW);
  const int64_t E = dW.size(0), R = dW.size(1), S = dW.size(2);
  const int64_t M = dY.rows();
  check_matrix(op, "dY", dY, M, R);
  check_matrix(op, "X", X, M, S);
  const int32_t* off = checked_offsets(op, offsets, E, M);
  dispatch_float(op, {{"dY", dY}, {"X", X}, {"dW", dW}}, [&](auto tag) {
    grouped_wgrad_impl<decltype(tag)>(dY, X, off, dW);
  });
}

void CpuBackend::add(const Tensor& out, const Tensor& a, const Tensor& b, double alpha) {
  const char* op = "add";
  NMOE_CHECK(a.numel() == b.numel() && out.numel() == a.numel(), op,
             ": element counts differ: out ", out.shape.str(), ", a ", a.shape.str(), ", b ",
             b.shape.str());
  check_data(op, "out", out);
  check_data(op, "a", a);
  check_data(op, "b", b);
  dispatch_float(op, {{"out", out}, {"a", a}, {"b", b}}, [&](auto tag) {
    add_impl<decltype(tag)>(out, a, b, alpha);
  });
}

}  // namespace nmoe
