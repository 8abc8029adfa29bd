// CPU reference backend: every op of ops/backend.h on host memory, F32 and
// F64, GEMMs through OpenBLAS, loops parallelized with OpenMP. Results are
// bit-identical for any number of OpenMP threads.
#pragma once

#include <cstddef>
#include <memory>

#include "ops/backend.h"

namespace nmoe {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads);
  ~CpuBackend() override;
  CpuBackend(const CpuBackend&) = delete;
  CpuBackend& operator=(const CpuBackend&) = delete;

  const char* name() const override;
  std::string device_name() const override { return "CPU"; }

  void* alloc(size_t bytes) override;
  void free(void* p) override;
  void copy_from_host(const Tensor& dst, const void* src) override;
  void copy_to_host(void* dst, const Tensor& src) override;
  void copy(const Tensor& dst, const Tensor& src) override;
  void convert(const Tensor& dst, const Tensor& src) override;  // between F32 and F64
  void fill(const Tensor& t, double value) override;
  void synchronize() override;

  void matmul(const Tensor& A, bool transA, const Tensor& B, bool transB, const Tensor& C,
              double alpha, double beta) override;
  void grouped_matmul(const Tensor& X, const Tensor& W, bool transW, const Tensor& offsets,
                      const Tensor& Y) override;
  void grouped_matmul_wgrad(const Tensor& dY, const Tensor& X, const Tensor& offsets,
                            const Tensor& dW) override;

  void add(const Tensor& out, const Tensor& a, const Tensor& b, double alpha) override;

  void embedding_fwd(const Tensor& W, const Tensor& tokens, const Tensor& out) override;
  void embedding_bwd(const Tensor& dout, const Tensor& tokens, const Tensor& dW) override;

  void rmsnorm_fwd(const Tensor& x, const Tensor& w, double eps, const Tensor& y,
                   const Tensor& rstd) override;
  void rmsnorm_bwd(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                   const Tensor& dx, const Tensor& dw) override;

  void rope(const Tensor& qkv, const Tensor& cos, const Tensor& sin, int seq_len,
            bool inverse) override;
  void attention_fwd(const Tensor& qkv, int seq_len, double scale, const Tensor& out,
                     const Tensor& lse) override;
  void attention_bwd(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                     int seq_len, double scale, const Tensor& dqkv) override;

  void swiglu_fwd(const Tensor& h13, const Tensor& a) override;
  void swiglu_bwd(const Tensor& da, const Tensor& h13, const Tensor& dh13, const Tensor& a) override;

  void router_fwd(const Tensor& logits, const Tensor& bias, const RouterParams& p,
                  const Tensor& scores, const Tensor& idx, const Tensor& gates,
                  const Tensor& counts) override;
  void router_bwd(const Tensor& dgates, const Tensor& scores, const Tensor& idx,
                  const RouterParams& p, const Tensor& dlogits) override;
  void moe_aux_loss(const Tensor& gates, const Tensor& idx, int n_experts, double weight,
                    const Tensor& loss, const Tensor& dgates) override;
  void router_bias_update(const Tensor& bias, const Tensor& counts, double gamma) override;

  void moe_plan(const Tensor& idx, int n_experts, const Tensor& offsets,
                const Tensor& pos) override;
  void moe_dispatch(const Tensor& x, const Tensor& pos, int top_k, const Tensor& xe) override;
  void moe_dispatch_bwd(const Tensor& dxe, const Tensor& pos, int top_k,
                        const Tensor& dx) override;
  void moe_combine(const Tensor& ye, const Tensor& pos, const Tensor& gates,
                   const Tensor& out) override;
  void moe_combine_bwd(const Tensor& dout, const Tensor& ye, const Tensor& pos,
                       const Tensor& gates, const Tensor& dye, const Tensor& dgates) override;
  void moe_gate_grad(const Tensor& a, const Tensor& da, const Tensor& pos, const Tensor& gates,
                     const Tensor& dgates) override;

  void cross_entropy(const Tensor& h, const Tensor& W, const Tensor& targets,
                     int64_t ignore_index, double grad_scale, int64_t chunk_rows,
                     const Tensor& loss_sum, const Tensor& dh, const Tensor& dW) override;

  void sum_squares(const Tensor& x, const Tensor& out) override;
  void adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
             const AdamWParams& p, const Tensor& grad_norm_sq) override;

 private:
  // Grow-only scratch buffer (cross_entropy's logits chunk): allocated on the
  // first call that needs more than it holds, then reused.
  void* scratch(size_t bytes);

  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
};

// threads <= 0 uses every core. Sets the OpenMP thread count (shared by OpenBLAS).
std::unique_ptr<Backend> make_cpu_backend(int threads);

}  // namespace nmoe
