#include "ops/op_checks.h"

namespace nmoe::ops {

namespace {

// out-like tensors are [N, H*Dh] (an [N, H, Dh] view is accepted too).
void check_head_outputs(const char* op, const char* name, const Tensor& t, const QkvLayout& L) {
  NMOE_CHECK(t.ndim() >= 1 && t.size(0) == L.N && t.numel() == L.N * L.H * L.Dh, op, ": ", name,
             " must be [N, H*Dh] = [", L.N, ", ", L.H * L.Dh, "], got ", t.shape.str());
  check_data(op, name, t);
}

void check_lse(const char* op, const Tensor& lse, const QkvLayout& L) {
  NMOE_CHECK(lse.numel() == L.B * L.H * L.T, op, ": lse must be [B, H, T] = [", L.B, ", ", L.H, ", ", L.T,
             "], got ", lse.shape.str());
  check_data(op, "lse", lse);
}

void check_rope_table(const char* name, const Tensor& table, int seq_len, int64_t half) {
  NMOE_CHECK(table.ndim() == 2 && table.size(0) >= seq_len && table.size(1) == half, "rope: ", name,
             " must be [T_max >= seq_len = ", seq_len, ", Dh/2 = ", half, "], got ", table.shape.str());
  check_data("rope", name, table);
}

int64_t checked_top_k(const char* op, int top_k, int64_t tokens) {
  NMOE_CHECK(top_k >= 1, op, ": top_k must be >= 1, got ", top_k);
  check_fits_i32(op, "slots N*K", tokens * top_k);
  return top_k;
}

// x [N, D] and its dispatched rows xe [N*K, D] with their positions pos [N*K].
RowsDims check_dispatch_like(const char* op, const char* x_name, const Tensor& x, const char* xe_name,
                             const Tensor& xe, const Tensor& pos, int top_k) {
  NMOE_CHECK(x.ndim() >= 1, op, ": ", x_name, " must be [N, D], got ", x.shape.str());
  const int64_t N = x.rows(), D = x.cols(), K = checked_top_k(op, top_k, x.rows());
  check_matrix(op, x_name, x, N, D);
  check_matrix(op, xe_name, xe, N * K, D);
  check_index_tensor(op, "pos", pos, N * K);
  return {N, D, K};
}

}  // namespace

QkvLayout qkv_layout(const char* op, const Tensor& qkv, int seq_len) {
  NMOE_CHECK(qkv.ndim() == 4 && qkv.size(1) == 3, op, ": qkv must be [N, 3, H, Dh], got ", qkv.shape.str());
  check_data(op, "qkv", qkv);
  QkvLayout L;
  L.N = qkv.size(0);
  L.H = qkv.size(2);
  L.Dh = qkv.size(3);
  L.T = seq_len;
  NMOE_CHECK(seq_len > 0 && L.N % seq_len == 0, op, ": seq_len ", seq_len,
             " must be positive and divide the token count N = ", L.N);
  L.B = L.N / seq_len;
  return L;
}

RouterShape router_shape(const char* op, const Tensor& scores_like, int64_t K) {
  NMOE_CHECK(scores_like.ndim() >= 1, op, ": expected [N, E], got ", scores_like.shape.str());
  RouterShape s{scores_like.rows(), scores_like.cols(), K};
  NMOE_CHECK(s.K >= 1 && s.K <= s.E, op, ": top_k = ", s.K, " must be in [1, E = ", s.E, "]");
  return s;
}

void check_offset_values(const char* op, const int32_t* off, int64_t experts, int64_t rows) {
  NMOE_CHECK(off[0] == 0, op, ": offsets[0] must be 0, got ", off[0]);
  for (int64_t e = 0; e < experts; ++e)
    NMOE_CHECK(off[e + 1] >= off[e], op, ": offsets must be non-decreasing, offsets[", e, "] = ", off[e],
               " > offsets[", e + 1, "] = ", off[e + 1]);
  NMOE_CHECK(off[experts] == rows, op, ": offsets[E] = ", off[experts], " must equal the number of rows ", rows);
}

MatmulDims check_matmul(const Tensor& A, bool transA, const Tensor& B, bool transB, const Tensor& C) {
  const char* op = "matmul";
  NMOE_CHECK(A.ndim() >= 1 && B.ndim() >= 1 && C.ndim() >= 1, op, ": A, B, C need at least one dim, got ",
             A.shape.str(), ", ", B.shape.str(), ", ", C.shape.str());
  MatmulDims d;
  d.M = transA ? A.cols() : A.rows();
  d.K = transA ? A.rows() : A.cols();
  const int64_t Kb = transB ? B.cols() : B.rows();
  d.N = transB ? B.rows() : B.cols();
  NMOE_CHECK(d.K == Kb, op, ": inner dims differ: op(A) is [", d.M, ", ", d.K, "] (A ", A.shape.str(),
             transA ? " transposed" : "", "), op(B) is [", Kb, ", ", d.N, "] (B ", B.shape.str(),
             transB ? " transposed" : "", ")");
  check_matrix(op, "C", C, d.M, d.N);
  check_data(op, "A", A);
  check_data(op, "B", B);
  return d;
}

GroupedDims check_grouped_matmul(const Tensor& X, const Tensor& W, bool transW, const Tensor& offsets,
                                 const Tensor& Y) {
  const char* op = "grouped_matmul";
  NMOE_CHECK(W.ndim() == 3, op, ": W must be [E, R, S], got ", W.shape.str());
  check_data(op, "W", W);
  GroupedDims d{W.size(0), W.size(1), W.size(2), X.rows()};
  check_matrix(op, "X", X, d.M, transW ? d.S : d.R);
  check_matrix(op, "Y", Y, d.M, transW ? d.R : d.S);
  check_index_tensor(op, "offsets", offsets, d.E + 1);
  return d;
}

GroupedDims check_grouped_matmul_wgrad(const Tensor& dY, const Tensor& X, const Tensor& offsets,
                                       const Tensor& dW) {
  const char* op = "grouped_matmul_wgrad";
  NMOE_CHECK(dW.ndim() == 3, op, ": dW must be [E, R, S], got ", dW.shape.str());
  check_data(op, "dW", dW);
  GroupedDims d{dW.size(0), dW.size(1), dW.size(2), dY.rows()};
  check_matrix(op, "dY", dY, d.M, d.R);
  check_matrix(op, "X", X, d.M, d.S);
  check_index_tensor(op, "offsets", offsets, d.E + 1);
  return d;
}

void check_add(const Tensor& out, const Tensor& a, const Tensor& b) {
  const char* op = "add";
  NMOE_CHECK(a.numel() == b.numel() && out.numel() == a.numel(), op, ": element counts differ: out ",
             out.shape.str(), ", a ", a.shape.str(), ", b ", b.shape.str());
  check_data(op, "out", out);
  check_data(op, "a", a);
  check_data(op, "b", b);
}

EmbedDims check_embedding_fwd(const Tensor& W, const Tensor& tokens, const Tensor& out) {
  const char* op = "embedding_fwd";
  NMOE_CHECK(W.ndim() == 2, op, ": W must be [V, D], got ", W.shape.str());
  check_data(op, "W", W);
  EmbedDims d{out.rows(), W.size(0), W.size(1)};
  check_matrix(op, "out", out, d.N, d.D);
  check_index_tensor(op, "tokens", tokens, d.N);
  return d;
}

EmbedDims check_embedding_bwd(const Tensor& dout, const Tensor& tokens, const Tensor& dW) {
  const char* op = "embedding_bwd";
  NMOE_CHECK(dW.ndim() == 2, op, ": dW must be [V, D], got ", dW.shape.str());
  check_data(op, "dW", dW);
  EmbedDims d{dout.rows(), dW.size(0), dW.size(1)};
  check_matrix(op, "dout", dout, d.N, d.D);
  check_index_tensor(op, "tokens", tokens, d.N);
  return d;
}

RowsDims check_rmsnorm_fwd(const Tensor& x, const Tensor& w, double eps, const Tensor& y, const Tensor& rstd) {
  const char* op = "rmsnorm_fwd";
  NMOE_CHECK(x.ndim() >= 1, op, ": x must be [N, D], got ", x.shape.str());
  const int64_t N = x.rows(), D = x.cols();
  check_matrix(op, "x", x, N, D);
  check_numel(op, "w", w, D);
  check_matrix(op, "y", y, N, D);
  check_numel(op, "rstd", rstd, N);
  NMOE_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);
  return {N, D, 0};
}

RowsDims check_rmsnorm_bwd(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                           const Tensor& dx, const Tensor& dw) {
  const char* op = "rmsnorm_bwd";
  NMOE_CHECK(x.ndim() >= 1, op, ": x must be [N, D], got ", x.shape.str());
  const int64_t N = x.rows(), D = x.cols();
  check_matrix(op, "x", x, N, D);
  check_matrix(op, "dy", dy, N, D);
  check_numel(op, "w", w, D);
  check_numel(op, "rstd", rstd, N);
  check_matrix(op, "dx", dx, N, D);
  check_numel(op, "dw", dw, D);
  return {N, D, 0};
}

QkvLayout check_rope(const Tensor& qkv, const Tensor& cos, const Tensor& sin, int seq_len) {
  const char* op = "rope";
  const QkvLayout L = qkv_layout(op, qkv, seq_len);
  NMOE_CHECK(L.Dh % 2 == 0, op, ": head dim must be even, got qkv ", qkv.shape.str());
  check_rope_table("cos", cos, seq_len, L.Dh / 2);
  check_rope_table("sin", sin, seq_len, L.Dh / 2);
  return L;
}

QkvLayout check_attention_fwd(const Tensor& qkv, int seq_len, const Tensor& out, const Tensor& lse) {
  const char* op = "attention_fwd";
  const QkvLayout L = qkv_layout(op, qkv, seq_len);
  check_head_outputs(op, "out", out, L);
  check_lse(op, lse, L);
  return L;
}

QkvLayout check_attention_bwd(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                              int seq_len, const Tensor& dqkv) {
  const char* op = "attention_bwd";
  const QkvLayout L = qkv_layout(op, qkv, seq_len);
  check_head_outputs(op, "dout", dout, L);
  check_head_outputs(op, "out", out, L);
  check_lse(op, lse, L);
  NMOE_CHECK(dqkv.shape == qkv.shape, op, ": dqkv must have qkv's shape ", qkv.shape.str(), ", got ",
             dqkv.shape.str());
  check_data(op, "dqkv", dqkv);
  return L;
}

RouterShape check_router_fwd(const Tensor& logits, const Tensor& bias, const RouterParams& p,
                             const Tensor& scores, const Tensor& idx, const Tensor& gates, const Tensor& counts) {
  const char* op = "router_fwd";
  const RouterShape s = router_shape(op, logits, p.top_k);
  check_matrix(op, "logits", logits, s.N, s.E);
  check_numel(op, "bias", bias, s.E);
  check_matrix(op, "scores", scores, s.N, s.E);
  check_dtype(op, "idx", idx, DType::I32);
  check_matrix(op, "idx", idx, s.N, s.K);
  check_matrix(op, "gates", gates, s.N, s.K);
  check_index_tensor(op, "counts", counts, s.E);
  return s;
}

RouterShape check_router_bwd(const Tensor& dgates, const Tensor& scores, const Tensor& idx, const RouterParams& p,
                             const Tensor& dlogits) {
  const char* op = "router_bwd";
  const RouterShape s = router_shape(op, scores, idx.ndim() >= 1 ? idx.cols() : 0);
  NMOE_CHECK(s.K == p.top_k, op, ": idx has ", s.K, " columns but top_k = ", p.top_k);
  check_matrix(op, "scores", scores, s.N, s.E);
  check_dtype(op, "idx", idx, DType::I32);
  check_matrix(op, "idx", idx, s.N, s.K);
  check_matrix(op, "dgates", dgates, s.N, s.K);
  check_matrix(op, "dlogits", dlogits, s.N, s.E);
  return s;
}

RowsDims check_moe_aux_loss(const Tensor& gates, const Tensor& idx, int n_experts, const Tensor& loss,
                            const Tensor& dgates) {
  const char* op = "moe_aux_loss";
  NMOE_CHECK(n_experts > 0, op, ": n_experts must be positive, got ", n_experts);
  NMOE_CHECK(gates.ndim() >= 1, op, ": gates must be [N, K], got ", gates.shape.str());
  const int64_t N = gates.rows(), K = gates.cols();
  check_matrix(op, "gates", gates, N, K);
  check_dtype(op, "idx", idx, DType::I32);
  check_matrix(op, "idx", idx, N, K);
  check_scalar_f64(op, "loss", loss);
  if (dgates.defined()) check_matrix(op, "dgates", dgates, N, K);
  return {N, 0, K};
}

void check_router_bias_update(const Tensor& bias, const Tensor& counts) {
  const char* op = "router_bias_update";
  NMOE_CHECK(bias.numel() > 0, op, ": bias must be [E] with E > 0, got ", bias.shape.str());
  check_data(op, "bias", bias);
  check_index_tensor(op, "counts", counts, bias.numel());
}

int64_t check_moe_plan(const Tensor& idx, int n_experts, const Tensor& offsets, const Tensor& pos) {
  const char* op = "moe_plan";
  NMOE_CHECK(n_experts > 0, op, ": n_experts must be positive, got ", n_experts);
  check_dtype(op, "idx", idx, DType::I32);
  check_data(op, "idx", idx);
  const int64_t slots = idx.numel();
  check_fits_i32(op, "slots N*K", slots);
  check_index_tensor(op, "offsets", offsets, int64_t{n_experts} + 1);
  check_index_tensor(op, "pos", pos, slots);
  return slots;
}

RowsDims check_moe_dispatch(const Tensor& x, const Tensor& pos, int top_k, const Tensor& xe) {
  return check_dispatch_like("moe_dispatch", "x", x, "xe", xe, pos, top_k);
}

RowsDims check_moe_dispatch_bwd(const Tensor& dxe, const Tensor& pos, int top_k, const Tensor& dx) {
  return check_dispatch_like("moe_dispatch_bwd", "dx", dx, "dxe", dxe, pos, top_k);
}

RowsDims check_moe_combine(const Tensor& ye, const Tensor& pos, const Tensor& gates, const Tensor& out) {
  const char* op = "moe_combine";
  NMOE_CHECK(out.ndim() >= 1 && gates.ndim() >= 1, op, ": out must be [N, D] and gates [N, K], got ",
             out.shape.str(), " and ", gates.shape.str());
  const int64_t N = out.rows(), D = out.cols(), K = gates.cols();
  checked_top_k(op, static_cast<int>(K), N);
  check_matrix(op, "out", out, N, D);
  check_matrix(op, "gates", gates, N, K);
  check_matrix(op, "ye", ye, N * K, D);
  check_index_tensor(op, "pos", pos, N * K);
  return {N, D, K};
}

RowsDims check_moe_combine_bwd(const Tensor& dout, const Tensor& ye, const Tensor& pos, const Tensor& gates,
                               const Tensor& dye, const Tensor& dgates) {
  const char* op = "moe_combine_bwd";
  NMOE_CHECK(dout.ndim() >= 1 && gates.ndim() >= 1, op, ": dout must be [N, D] and gates [N, K], got ",
             dout.shape.str(), " and ", gates.shape.str());
  const int64_t N = dout.rows(), D = dout.cols(), K = gates.cols();
  checked_top_k(op, static_cast<int>(K), N);
  check_matrix(op, "dout", dout, N, D);
  check_matrix(op, "gates", gates, N, K);
  NMOE_CHECK(ye.defined() == dgates.defined(), op, ": ye and dgates go together (both, or neither for dye only)");
  if (ye.defined()) {
    check_matrix(op, "ye", ye, N * K, D);
    check_matrix(op, "dgates", dgates, N, K);
  }
  check_matrix(op, "dye", dye, N * K, D);
  check_index_tensor(op, "pos", pos, N * K);
  return {N, D, K};
}

RowsDims check_moe_gate_grad(const Tensor& a, const Tensor& da, const Tensor& pos, const Tensor& gates,
                             const Tensor& dgates) {
  const char* op = "moe_gate_grad";
  NMOE_CHECK(a.ndim() >= 1 && gates.ndim() >= 1, op, ": a must be [N*K, F] and gates [N, K], got ",
             a.shape.str(), " and ", gates.shape.str());
  const int64_t N = gates.rows(), K = gates.cols(), F = a.cols();
  checked_top_k(op, static_cast<int>(K), N);
  check_matrix(op, "gates", gates, N, K);
  check_matrix(op, "a", a, N * K, F);
  check_matrix(op, "da", da, N * K, F);
  check_matrix(op, "dgates", dgates, N, K);
  check_index_tensor(op, "pos", pos, N * K);
  return {N, F, K};
}

EmbedDims check_cross_entropy(const Tensor& h, const Tensor& W, const Tensor& targets, int64_t chunk_rows,
                              const Tensor& loss_sum, const Tensor& dh, const Tensor& dW) {
  const char* op = "cross_entropy";
  NMOE_CHECK(W.ndim() == 2, op, ": W must be [V, D], got ", W.shape.str());
  NMOE_CHECK(h.ndim() >= 1, op, ": h must be [N, D], got ", h.shape.str());
  NMOE_CHECK(chunk_rows > 0, op, ": chunk_rows must be positive, got ", chunk_rows);
  EmbedDims d{h.rows(), W.size(0), W.size(1)};
  check_data(op, "W", W);
  check_matrix(op, "h", h, d.N, d.D);
  check_scalar_f64(op, "loss_sum", loss_sum);
  check_index_tensor(op, "targets", targets, d.N);
  if (dh.defined()) {
    check_matrix(op, "dh", dh, d.N, d.D);
    NMOE_CHECK(dW.defined(), op, ": dW must be defined when dh is");
    check_matrix(op, "dW", dW, d.V, d.D);
  }
  return d;
}

void check_sum_squares(const Tensor& x, const Tensor& out) {
  check_data("sum_squares", "x", x);
  check_scalar_f64("sum_squares", "out", out);
}

void check_adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWParams& p,
                 const Tensor& grad_norm_sq) {
  const char* op = "adamw";
  const int64_t n = param.numel();
  check_data(op, "param", param);
  check_numel(op, "grad", grad, n);
  check_numel(op, "m", m, n);
  check_numel(op, "v", v, n);
  NMOE_CHECK(p.step >= 1, op, ": step is 1-based, got ", p.step);
  if (p.max_norm > 0) check_scalar_f64(op, "grad_norm_sq", grad_norm_sq);
}

namespace {
int64_t gate_width(const char* op, const Tensor& h13) {
  NMOE_CHECK(h13.ndim() >= 1 && h13.cols() % 2 == 0, op,
             ": h13 must be [N, 2F] with an even last dim, got ", h13.shape.str());
  check_matrix(op, "h13", h13, h13.rows(), h13.cols());
  return h13.cols() / 2;
}
}  // namespace

int64_t check_swiglu_fwd(const Tensor& h13, const Tensor& a) {
  const int64_t F = gate_width("swiglu_fwd", h13);
  check_matrix("swiglu_fwd", "a", a, h13.rows(), F);
  return F;
}

int64_t check_swiglu_bwd(const Tensor& da, const Tensor& h13, const Tensor& dh13, const Tensor& a) {
  const char* op = "swiglu_bwd";
  const int64_t F = gate_width(op, h13), N = h13.rows();
  check_matrix(op, "da", da, N, F);
  check_matrix(op, "dh13", dh13, N, 2 * F);
  if (a.defined()) {
    check_matrix(op, "a", a, N, F);
    check_dtype(op, "a", a, da.dtype);
    const auto overlaps = [&](const Tensor& t) {
      const char *p = static_cast<const char*>(a.data), *q = static_cast<const char*>(t.data);
      return p < q + t.nbytes() && q < p + a.nbytes();
    };
    NMOE_CHECK(!overlaps(h13) && !overlaps(dh13), op, ": a must not overlap h13 or dh13");
  }
  return F;
}

}  // namespace nmoe::ops
