// Argument checks of the ops interface (ops/backend.h), shared by every
// backend: each op's shapes, dtypes and sizes are validated here before any
// work, with messages that name the op and the argument. A backend adds only
// what is its own: the CPU backend validates index values on the host (token,
// expert and target ids, permutations), the CUDA backend lets its kernels flag
// them on the device.
#pragma once

#include <climits>
#include <cstdint>

#include "core/error.h"
#include "core/tensor.h"
#include "ops/backend.h"

namespace nmoe::ops {

// ---- primitives -------------------------------------------------------------------

struct NamedTensor {
  const char* name;
  Tensor t;
};

// A tensor that will be read or written must have memory unless it is empty.
inline void check_data(const char* op, const char* name, const Tensor& t) {
  NMOE_CHECK(t.data != nullptr || t.numel() == 0, op, ": ", name, " ", t.shape.str(), " has no data");
}

inline void check_dtype(const char* op, const char* name, const Tensor& t, DType want) {
  NMOE_CHECK(t.dtype == want, op, ": ", name, " must be ", dtype_name(want), ", got ", dtype_name(t.dtype));
}

// t viewed as a 2-D matrix [rows, cols] (leading dims flattened).
inline void check_matrix(const char* op, const char* name, const Tensor& t, int64_t rows, int64_t cols) {
  NMOE_CHECK(t.ndim() >= 1 && t.rows() == rows && t.cols() == cols, op, ": ", name, " must be [", rows, ", ",
             cols, "] (leading dims flattened), got ", t.shape.str());
  check_data(op, name, t);
}

inline void check_numel(const char* op, const char* name, const Tensor& t, int64_t n) {
  NMOE_CHECK(t.numel() == n, op, ": ", name, " must have ", n, " elements, got ", t.shape.str());
  check_data(op, name, t);
}

inline void check_index_tensor(const char* op, const char* name, const Tensor& t, int64_t n) {
  check_dtype(op, name, t, DType::I32);
  check_numel(op, name, t, n);
}

// Scalar results: F64 with one element.
inline void check_scalar_f64(const char* op, const char* name, const Tensor& t) {
  NMOE_CHECK(t.defined(), op, ": ", name, " (F64 [1]) is undefined");
  check_dtype(op, name, t, DType::F64);
  check_numel(op, name, t, 1);
}

inline void check_fits_i32(const char* op, const char* what, int64_t n) {
  NMOE_CHECK(n >= 0 && n <= INT32_MAX, op, ": ", what, " = ", n, " does not fit in I32");
}

// ---- shapes shared by several ops -----------------------------------------------------

// The packed qkv layout [N, 3, H, Dh]: row n holds H q heads, then H k heads, then H v heads.
struct QkvLayout {
  int64_t N = 0, H = 0, Dh = 0, T = 0, B = 0;

  int64_t row_stride() const { return 3 * H * Dh; }
  // Element offsets of token n's q / k / v for head h inside qkv.
  int64_t q(int64_t n, int64_t h) const { return n * row_stride() + h * Dh; }
  int64_t k(int64_t n, int64_t h) const { return q(n, h) + H * Dh; }
  int64_t v(int64_t n, int64_t h) const { return q(n, h) + 2 * H * Dh; }
  // Offset of token n, head h in an [N, H*Dh] tensor (out, dout).
  int64_t head(int64_t n, int64_t h) const { return (n * H + h) * Dh; }
  // Offset of (sequence b, head h, position t) in lse [B, H, T].
  int64_t lse(int64_t b, int64_t h, int64_t t) const { return (b * H + h) * T + t; }
};
QkvLayout qkv_layout(const char* op, const Tensor& qkv, int seq_len);

struct RouterShape {
  int64_t N = 0, E = 0, K = 0;
};
RouterShape router_shape(const char* op, const Tensor& scores_like, int64_t K);

struct MatmulDims {
  int64_t M = 0, N = 0, K = 0;
};
struct GroupedDims {
  int64_t E = 0, R = 0, S = 0, M = 0;
};
struct RowsDims {
  int64_t N = 0, D = 0, K = 0;  // K: top-k where the op has one
};
struct EmbedDims {
  int64_t N = 0, V = 0, D = 0;
};

// Host values of grouped-GEMM offsets [E+1]: offsets[0] = 0, non-decreasing, offsets[E] = rows.
void check_offset_values(const char* op, const int32_t* off, int64_t experts, int64_t rows);

// ---- per op (argument names as in ops/backend.h) ---------------------------------------

MatmulDims check_matmul(const Tensor& A, bool transA, const Tensor& B, bool transB, const Tensor& C);
// Shapes only; offsets' values are checked where they are read (check_offset_values).
GroupedDims check_grouped_matmul(const Tensor& X, const Tensor& W, bool transW, const Tensor& offsets,
                                 const Tensor& Y);
GroupedDims check_grouped_matmul_wgrad(const Tensor& dY, const Tensor& X, const Tensor& offsets,
                                       const Tensor& dW);
void check_add(const Tensor& out, const Tensor& a, const Tensor& b);
EmbedDims check_embedding_fwd(const Tensor& W, const Tensor& tokens, const Tensor& out);
EmbedDims check_embedding_bwd(const Tensor& dout, const Tensor& tokens, const Tensor& dW);
RowsDims check_rmsnorm_fwd(const Tensor& x, const Tensor& w, double eps, const Tensor& y, const Tensor& rstd);
RowsDims check_rmsnorm_bwd(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                           const Tensor& dx, const Tensor& dw);
QkvLayout check_rope(const Tensor& qkv, const Tensor& cos, const Tensor& sin, int seq_len);
QkvLayout check_attention_fwd(const Tensor& qkv, int seq_len, const Tensor& out, const Tensor& lse);
QkvLayout check_attention_bwd(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                              int seq_len, const Tensor& dqkv);
RouterShape check_router_fwd(const Tensor& logits, const Tensor& bias, const RouterParams& p,
                             const Tensor& scores, const Tensor& idx, const Tensor& gates, const Tensor& counts);
RouterShape check_router_bwd(const Tensor& dgates, const Tensor& scores, const Tensor& idx, const RouterParams& p,
                             const Tensor& dlogits);
RowsDims check_moe_aux_loss(const Tensor& gates, const Tensor& idx, int n_experts, const Tensor& loss,
                            const Tensor& dgates);
void check_router_bias_update(const Tensor& bias, const Tensor& counts);
int64_t check_moe_plan(const Tensor& idx, int n_experts, const Tensor& offsets, const Tensor& pos);
RowsDims check_moe_dispatch(const Tensor& x, const Tensor& pos, int top_k, const Tensor& xe);
RowsDims check_moe_dispatch_bwd(const Tensor& dxe, const Tensor& pos, int top_k, const Tensor& dx);
RowsDims check_moe_combine(const Tensor& ye, const Tensor& pos, const Tensor& gates, const Tensor& out);
RowsDims check_moe_combine_bwd(const Tensor& dout, const Tensor& ye, const Tensor& pos, const Tensor& gates,
                               const Tensor& dye, const Tensor& dgates);
// The gates' gradient from the expert activations: returns {N, F, K}.
RowsDims check_moe_gate_grad(const Tensor& a, const Tensor& da, const Tensor& pos, const Tensor& gates,
                             const Tensor& dgates);
// swiglu_fwd: h13 [N, 2F] (an even last dim) and a [N, F]. Returns F.
int64_t check_swiglu_fwd(const Tensor& h13, const Tensor& a);
// swiglu_bwd: h13 [N, 2F], da [N, F], dh13 [N, 2F] and, when defined, a [N, F]
// of da's dtype, not overlapping h13 or dh13. Returns F.
int64_t check_swiglu_bwd(const Tensor& da, const Tensor& h13, const Tensor& dh13, const Tensor& a);

EmbedDims check_cross_entropy(const Tensor& h, const Tensor& W, const Tensor& targets, int64_t chunk_rows,
                              const Tensor& loss_sum, const Tensor& dh, const Tensor& dW);
void check_sum_squares(const Tensor& x, const Tensor& out);
void check_adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWParams& p,
                 const Tensor& grad_norm_sq);

}  // namespace nmoe::ops
