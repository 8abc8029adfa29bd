// A Backend decorator that measures where the time goes: every op is forwarded
// unchanged to an inner backend, with inner.synchronize() before and after it,
// and the wall time between the two synchronizations (steady_clock) is added
// to that op's total. Results are those of the inner backend, bit for bit;
// only the timing changes (each op now waits for the device). Memory, copy,
// fill, convert and synchronize calls are forwarded and timed under their own
// names too. `n bench --op-times` prints the table.
//
// Not thread-safe: use it from one thread, as the model does.
#pragma once

#include <array>
#include <chrono>
#include <string>
#include <vector>

#include <cstddef>
#include <cstdint>

#include "ops/backend.h"

namespace nmoe {

class TimedBackend final : public Backend {
 public:
  // Every virtual method of Backend, in header order. The names are the keys
  // of the table (and of kOpNames below).
  enum Op : int {
    kName, kDeviceName, kDeviceMemoryInUse, kCrossEntropyScratchBytes, kAttentionScratchBytes, kAlloc, kFree, kCopyFromHost, kCopyToHost, kCopy, kFill, kConvert, kSynchronize,
    kRunsSideWorkConcurrently, kBeginSideWork, kEndSideWork, kJoinSideWork,
    kMatmul, kGroupedMatmul, kGroupedMatmulWgrad, kAdd, kEmbeddingFwd, kEmbeddingBwd, kRmsnormFwd,
    kRmsnormBwd, kRope, kAttentionFwd, kAttentionBwd, kSwigluFwd, kSwigluBwd, kRouterFwd, kRouterBwd,
    kMoeAuxLoss, kRouterBiasUpdate, kMoePlan, kMoeDispatch, kMoeDispatchBwd, kMoeCombine,
    kMoeCombineBwd, kMoeGateGrad, kCrossEntropy, kSumSquares, kAdamw, kAdamwCopy, kNumOps
  };
  // The name of each forwarded method; name, device_name, device_memory_in_use
  // and the *_scratch_bytes queries are forwarded but not timed (no device work).
  static const std::array<const char*, kNumOps>& op_names();

  struct Row {
    std::string op;
    int64_t calls = 0;
    double total_ms = 0;
    double ms_per_step = 0;  // total_ms / steps
    double share = 0;        // of the summed time of all rows, in [0, 1]
  };

  explicit TimedBackend(Backend& inner) : inner_(inner) {}

  Backend& inner() { return inner_; }
  // Forgets all counts and times (e.g. after warm-up steps).
  void reset();
  // Ops called since construction or reset(), by total time descending (ties
  // by name); steps (>= 1) divides the totals into ms_per_step.
  std::vector<Row> report(int64_t steps = 1) const;
  // The rows as an aligned text table with a total line.
  static std::string format(const std::vector<Row>& rows);

  // ---- Backend: forwarded to inner -------------------------------------------
  const char* name() const override { return inner_.name(); }
  std::string device_name() const override { return inner_.device_name(); }
  int64_t device_memory_in_use() const override { return inner_.device_memory_in_use(); }
  ScratchBytes cross_entropy_scratch_bytes(int64_t rows, int64_t chunk_rows, int64_t vocab,
                                           DType act) const override {
    return inner_.cross_entropy_scratch_bytes(rows, chunk_rows, vocab, act);
  }
  ScratchBytes attention_scratch_bytes(int64_t batch, int64_t seq_len, int64_t heads, int64_t head_dim,
                                       DType act) const override {
    return inner_.attention_scratch_bytes(batch, seq_len, heads, head_dim, act);
  }

  void* alloc(size_t bytes) override;
  void free(void* p) override;
  void copy_from_host(const Tensor& dst, const void* src) override;
  void copy_to_host(void* dst, const Tensor& src) override;
  void copy(const Tensor& dst, const Tensor& src) override;
  void fill(const Tensor& t, double value) override;
  void convert(const Tensor& dst, const Tensor& src) override;
  void synchronize() override;
  // Timing each op between two synchronizations needs every op in order, so
  // side work runs in line with the rest here (none of these is forwarded).
  bool runs_side_work_concurrently() const override { return false; }
  void begin_side_work() override {}
  void end_side_work() override {}
  void join_side_work() override {}

  void matmul(const Tensor& A, bool transA, const Tensor& B, bool transB, const Tensor& C, double alpha,
              double beta) override;
  void grouped_matmul(const Tensor& X, const Tensor& W, bool transW, const Tensor& offsets,
                      const Tensor& Y) override;
  void grouped_matmul_wgrad(const Tensor& dY, const Tensor& X, const Tensor& offsets,
                            const Tensor& dW) override;
  void add(const Tensor& out, const Tensor& a, const Tensor& b, double alpha) override;
  void embedding_fwd(const Tensor& W, const Tensor& tokens, const Tensor& out) override;
  void embedding_bwd(const Tensor& dout, const Tensor& tokens, const Tensor& dW) override;
  void rmsnorm_fwd(const Tensor& x, const Tensor& w, double eps, const Tensor& y, const Tensor& rstd) override;
  void rmsnorm_bwd(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dx,
                   const Tensor& dw) override;
  void rope(const Tensor& qkv, const Tensor& cos, const Tensor& sin, int seq_len, bool inverse) override;
  void attention_fwd(const Tensor& qkv, int seq_len, double scale, const Tensor& out, const Tensor& lse) override;
  void attention_bwd(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse, int seq_len,
                     double scale, const Tensor& dqkv) override;
  void swiglu_fwd(const Tensor& h13, const Tensor& a) override;
  void swiglu_bwd(const Tensor& da, const Tensor& h13, const Tensor& dh13, const Tensor& a) override;
  void router_fwd(const Tensor& logits, const Tensor& bias, const RouterParams& p, const Tensor& scores,
                  const Tensor& idx, const Tensor& gates, const Tensor& counts) override;
  void router_bwd(const Tensor& dgates, const Tensor& scores, const Tensor& idx, const RouterParams& p,
                  const Tensor& dlogits) override;
  void moe_aux_loss(const Tensor& gates, const Tensor& idx, int n_experts, double weight, const Tensor& loss,
                    const Tensor& dgates) override;
  void router_bias_update(const Tensor& bias, const Tensor& counts, double gamma) override;
  void moe_plan(const Tensor& idx, int n_experts, const Tensor& offsets, const Tensor& pos) override;
  void moe_dispatch(const Tensor& x, const Tensor& pos, int top_k, const Tensor& xe) override;
  void moe_dispatch_bwd(const Tensor& dxe, const Tensor& pos, int top_k, const Tensor& dx) override;
  void moe_combine(const Tensor& ye, const Tensor& pos, const Tensor& gates, const Tensor& out) override;
  void moe_combine_bwd(const Tensor& dout, const Tensor& ye, const Tensor& pos, const Tensor& gates,
                       const Tensor& dye, const Tensor& dgates) override;
  void moe_gate_grad(const Tensor& a, const Tensor& da, const Tensor& pos, const Tensor& gates,
                     const Tensor& dgates) override;
  void cross_entropy(const Tensor& h, const Tensor& W, const Tensor& targets, int64_t ignore_index,
                     double grad_scale, int64_t chunk_rows, const Tensor& loss_sum, const Tensor& dh,
                     const Tensor& dW) override;
  void sum_squares(const Tensor& x, const Tensor& out) override;
  void adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWParams& p,
             const Tensor& grad_norm_sq) override;
  void adamw_copy(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWParams& p,
                  const Tensor& grad_norm_sq, const Tensor& param_copy) override;

 private:
  using Clock = std::chrono::steady_clock;
  struct Stat {
    int64_t calls = 0;
    double seconds = 0;
  };
  // Synchronizes the inner backend, runs f, synchronizes again and adds the
  // time to op's total. If f throws, nothing is counted.
  template <typename F>
  decltype(auto) timed(Op op, F&& f);

  Backend& inner_;
  std::array<Stat, kNumOps> stats_{};
};

}  // namespace nmoe
