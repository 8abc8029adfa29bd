#include "ops/timed_backend.h"

#include <algorithm>
#include <cstdio>
#include <type_traits>

#include "core/error.h"

namespace nmoe {

const std::array<const char*, TimedBackend::kNumOps>& TimedBackend::op_names() {
  static const std::array<const char*, kNumOps> names = {
      "name", "device_name", "device_memory_in_use", "cross_entropy_scratch_bytes",
      "attention_scratch_bytes", "alloc", "free", "copy_from_host", "copy_to_host", "copy", "fill", "convert",
      "synchronize", "runs_side_work_concurrently", "begin_side_work", "end_side_work", "join_side_work",
      "matmul", "grouped_matmul", "grouped_matmul_wgrad", "add", "embedding_fwd",
      "embedding_bwd", "rmsnorm_fwd", "rmsnorm_bwd", "rope", "attention_fwd", "attention_bwd", "swiglu_fwd",
      "swiglu_bwd", "router_fwd", "router_bwd", "moe_aux_loss", "router_bias_update", "moe_plan",
      "moe_dispatch", "moe_dispatch_bwd", "moe_combine", "moe_combine_bwd", "moe_gate_grad", "cross_entropy",
      "sum_squares", "adamw", "adamw_copy"};
  return names;
}

template <typename F>
decltype(auto) TimedBackend::timed(Op op, F&& f) {
  inner_.synchronize();
  const Clock::time_point t0 = Clock::now();
  auto record = [&] {
    inner_.synchronize();
    Stat& s = stats_[op];
    s.seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    ++s.calls;
  };
  if constexpr (std::is_void_v<std::invoke_result_t<F>>) {
    f();
    record();
  } else {
    auto r = f();
    record();
    return r;
  }
}

void TimedBackend::reset() { stats_ = {}; }

std::vector<TimedBackend::Row> TimedBackend::report(int64_t steps) const {
  NMOE_CHECK(steps >= 1, "TimedBackend::report: steps must be at least 1, got ", steps);
  double sum = 0;
  for (const Stat& s : stats_) sum += s.seconds;
  std::vector<Row> rows;
  for (int i = 0; i < kNumOps; ++i) {
    const Stat& s = stats_[i];
    if (s.calls == 0) continue;
    Row r;
    r.op = op_names()[i];
    r.calls = s.calls;
    r.total_ms = s.seconds * 1e3;
    r.ms_per_step = r.total_ms / static_cast<double>(steps);
    r.share = sum > 0 ? s.seconds / sum : 0;
    rows.push_back(r);
  }
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return a.total_ms != b.total_ms ? a.total_ms > b.total_ms : a.op < b.op;
  });
  return rows;
}

std::string TimedBackend::format(const std::vector<Row>& rows) {
  std::string out;
  char line[160];
  std::snprintf(line, sizeof line, "%-22s %8s %12s %12s %7s\n", "op", "calls", "total ms", "ms/step", "share");
  out += line;
  int64_t calls = 0;
  double total = 0, per_step = 0, share = 0;
  for (const Row& r : rows) {
    std::snprintf(line, sizeof line, "%-22s %8lld %12.3f %12.3f %6.1f%%\n", r.op.c_str(),
                  static_cast<long long>(r.calls), r.total_ms, r.ms_per_step, r.share * 100);
    out += line;
    calls += r.calls;
    total += r.total_ms;
    per_step += r.ms_per_step;
    share += r.share;
  }
  std::snprintf(line, sizeof line, "%-22s %8lld %12.3f %12.3f %6.1f%%\n", "total", static_cast<long long>(calls),
                total, per_step, share * 100);
  out += line;
  return out;
}

// ---- memory -------------------------------------------------------------------

void* TimedBackend::alloc(size_t bytes) {
  return timed(kAlloc, [&] { return inner_.alloc(bytes); });
}
void TimedBackend::free(void* p) {
  timed(kFree, [&] { inner_.free(p); });
}
void TimedBackend::copy_from_host(const Tensor& dst, const void* src) {
  timed(kCopyFromHost, [&] { inner_.copy_from_host(dst, src); });
}
void TimedBackend::copy_to_host(void* dst, const Tensor& src) {
  timed(kCopyToHost, [&] { inner_.copy_to_host(dst, src); });
}
void TimedBackend::copy(const Tensor& dst, const Tensor& src) {
  timed(kCopy, [&] { inner_.copy(dst, src); });
}
void TimedBackend::fill(const Tensor& t, double value) {
  timed(kFill, [&] { inner_.fill(t, value); });
}
void TimedBackend::convert(const Tensor& dst, const Tensor& src) {
  timed(kConvert, [&] { inner_.convert(dst, src); });
}
void TimedBackend::synchronize() {
  // The synchronization itself is the op: no extra ones around it.
  const Clock::time_point t0 = Clock::now();
  inner_.synchronize();
  Stat& s = stats_[kSynchronize];
  s.seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  ++s.calls;
}

// ---- compute ------------------------------------------------------------------

void TimedBackend::matmul(const Tensor& A, bool transA, const Tensor& B, bool transB, const Tensor& C,
                          double alpha, double beta) {
  timed(kMatmul, [&] { inner_.matmul(A, transA, B, transB, C, alpha, beta); });
}
void TimedBackend::grouped_matmul(const Tensor& X, const Tensor& W, bool transW, const Tensor& offsets,
                                  const Tensor& Y) {
  timed(kGroupedMatmul, [&] { inner_.grouped_matmul(X, W, transW, offsets, Y); });
}
void TimedBackend::grouped_matmul_wgrad(const Tensor& dY, const Tensor& X, const Tensor& offsets,
                                        const Tensor& dW) {
  timed(kGroupedMatmulWgrad, [&] { inner_.grouped_matmul_wgrad(dY, X, offsets, dW); });
}
void TimedBackend::add(const Tensor& out, const Tensor& a, const Tensor& b, double alpha) {
  timed(kAdd, [&] { inner_.add(out, a, b, alpha); });
}
void TimedBackend::embedding_fwd(const Tensor& W, const Tensor& tokens, const Tensor& out) {
  timed(kEmbeddingFwd, [&] { inner_.embedding_fwd(W, tokens, out); });
}
void TimedBackend::embedding_bwd(const Tensor& dout, const Tensor& tokens, const Tensor& dW) {
  timed(kEmbeddingBwd, [&] { inner_.embedding_bwd(dout, tokens, dW); });
}
void TimedBackend::rmsnorm_fwd(const Tensor& x, const Tensor& w, double eps, const Tensor& y,
                               const Tensor& rstd) {
  timed(kRmsnormFwd, [&] { inner_.rmsnorm_fwd(x, w, eps, y, rstd); });
}
void TimedBackend::rmsnorm_bwd(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                               const Tensor& dx, const Tensor& dw) {
  timed(kRmsnormBwd, [&] { inner_.rmsnorm_bwd(dy, x, w, rstd, dx, dw); });
}
void TimedBackend::rope(const Tensor& qkv, const Tensor& cos, const Tensor& sin, int seq_len, bool inverse) {
  timed(kRope, [&] { inner_.rope(qkv, cos, sin, seq_len, inverse); });
}
void TimedBackend::attention_fwd(const Tensor& qkv, int seq_len, double scale, const Tensor& out,
                                 const Tensor& lse) {
  timed(kAttentionFwd, [&] { inner_.attention_fwd(qkv, seq_len, scale, out, lse); });
}
void TimedBackend::attention_bwd(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                                 int seq_len, double scale, const Tensor& dqkv) {
  timed(kAttentionBwd, [&] { inner_.attention_bwd(dout, qkv, out, lse, seq_len, scale, dqkv); });
}
void TimedBackend::swiglu_fwd(const Tensor& h13, const Tensor& a) {
  timed(kSwigluFwd, [&] { inner_.swiglu_fwd(h13, a); });
}
void TimedBackend::swiglu_bwd(const Tensor& da, const Tensor& h13, const Tensor& dh13, const Tensor& a) {
  timed(kSwigluBwd, [&] { inner_.swiglu_bwd(da, h13, dh13, a); });
}
void TimedBackend::router_fwd(const Tensor& logits, const Tensor& bias, const RouterParams& p,
                              const Tensor& scores, const Tensor& idx, const Tensor& gates,
                              const Tensor& counts) {
  timed(kRouterFwd, [&] { inner_.router_fwd(logits, bias, p, scores, idx, gates, counts); });
}
void TimedBackend::router_bwd(const Tensor& dgates, const Tensor& scores, const Tensor& idx,
                              const RouterParams& p, const Tensor& dlogits) {
  timed(kRouterBwd, [&] { inner_.router_bwd(dgates, scores, idx, p, dlogits); });
}
void TimedBackend::moe_aux_loss(const Tensor& gates, const Tensor& idx, int n_experts, double weight,
                                const Tensor& loss, const Tensor& dgates) {
  timed(kMoeAuxLoss, [&] { inner_.moe_aux_loss(gates, idx, n_experts, weight, loss, dgates); });
}
void TimedBackend::router_bias_update(const Tensor& bias, const Tensor& counts, double gamma) {
  timed(kRouterBiasUpdate, [&] { inner_.router_bias_update(bias, counts, gamma); });
}
void TimedBackend::moe_plan(const Tensor& idx, int n_experts, const Tensor& offsets, const Tensor& pos) {
  timed(kMoePlan, [&] { inner_.moe_plan(idx, n_experts, offsets, pos); });
}
void TimedBackend::moe_dispatch(const Tensor& x, const Tensor& pos, int top_k, const Tensor& xe) {
  timed(kMoeDispatch, [&] { inner_.moe_dispatch(x, pos, top_k, xe); });
}
void TimedBackend::moe_dispatch_bwd(const Tensor& dxe, const Tensor& pos, int top_k, const Tensor& dx) {
  timed(kMoeDispatchBwd, [&] { inner_.moe_dispatch_bwd(dxe, pos, top_k, dx); });
}
void TimedBackend::moe_combine(const Tensor& ye, const Tensor& pos, const Tensor& gates, const Tensor& out) {
  timed(kMoeCombine, [&] { inner_.moe_combine(ye, pos, gates, out); });
}
void TimedBackend::moe_combine_bwd(const Tensor& dout, const Tensor& ye, const Tensor& pos, const Tensor& gates,
                                   const Tensor& dye, const Tensor& dgates) {
  timed(kMoeCombineBwd, [&] { inner_.moe_combine_bwd(dout, ye, pos, gates, dye, dgates); });
}

void TimedBackend::moe_gate_grad(const Tensor& a, const Tensor& da, const Tensor& pos, const Tensor& gates,
                                 const Tensor& dgates) {
  timed(kMoeGateGrad, [&] { inner_.moe_gate_grad(a, da, pos, gates, dgates); });
}
void TimedBackend::cross_entropy(const Tensor& h, const Tensor& W, const Tensor& targets, int64_t ignore_index,
                                 double grad_scale, int64_t chunk_rows, const Tensor& loss_sum, const Tensor& dh,
                                 const Tensor& dW) {
  timed(kCrossEntropy,
        [&] { inner_.cross_entropy(h, W, targets, ignore_index, grad_scale, chunk_rows, loss_sum, dh, dW); });
}
void TimedBackend::sum_squares(const Tensor& x, const Tensor& out) {
  timed(kSumSquares, [&] { inner_.sum_squares(x, out); });
}
void TimedBackend::adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                         const AdamWParams& p, const Tensor& grad_norm_sq) {
  timed(kAdamw, [&] { inner_.adamw(param, grad, m, v, p, grad_norm_sq); });
}
void TimedBackend::adamw_copy(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                              const AdamWParams& p, const Tensor& grad_norm_sq, const Tensor& param_copy) {
  timed(kAdamwCopy, [&] { inner_.adamw_copy(param, grad, m, v, p, grad_norm_sq, param_copy); });
}

}  // namespace nmoe
