// CudaBackend: the class behind make_cuda_backend (internal to the backend's
// files). Plain C++: CUDA handle types are forward-declared.
//
// Execution model
// - One non-blocking stream owned by the backend; every op is enqueued on it
//   and returns without waiting. synchronize() and copy_to_host() wait.
//   Side work (ops/backend.h) goes to a second stream of lower priority,
//   forked from and joined into the main one with events.
// - Documented host syncs: copy_to_host; grouped_matmul / grouped_matmul_wgrad
//   in F32 or with widths that are not multiples of 8 (they read the E+1
//   offsets to issue one GEMM per expert; the BF16 model shapes run the
//   device-side kernel of cuda_grouped_gemm.cu instead); the first call of an
//   op that must grow a scratch buffer (cudaFree/cudaMalloc).
// - Errors: CUDA/cuBLAS failures throw nmoe::Error naming the op, file:line and
//   the CUDA error. Bad values found on the device (token or expert id out of
//   range, ...) set a device error flag; the next synchronize() or
//   copy_to_host() throws the first one.
// - Determinism: no order-dependent floating-point atomics (the grouped GEMM's
//   weight gradient adds each element once per launch with red.add); reductions
//   have a fixed shape;
//   cuBLAS runs with a fixed workspace, atomics off, and pedantic fp32 (no TF32)
//   for F32 GEMMs; BF16 GEMMs use tensor cores with fp32 accumulation.
// - Mixed precision (ops/backend.h): activations and their workspace gradients
//   F32 or BF16 per call; rstd, lse, RoPE tables, router tensors, gates,
//   dgates and parameter gradients F32. Kernels do fp32 math on either.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "ops/backend.h"

struct CUstream_st;
struct CUevent_st;
struct cublasContext;

namespace nmoe {

// cuDNN attention state of one backend: handle and built graphs
// (cuda_cudnn_attention.cpp); made at first use.
struct CudnnAttention;
struct CudnnAttentionDeleter {
  void operator()(CudnnAttention* p) const;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  const char* name() const override;
  std::string device_name() const override;
  int64_t device_memory_in_use() const override;
  ScratchBytes cross_entropy_scratch_bytes(int64_t rows, int64_t chunk_rows, int64_t vocab,
                                           DType act) const override;
  ScratchBytes attention_scratch_bytes(int64_t batch, int64_t seq_len, int64_t heads, int64_t head_dim,
                                       DType act) const override;

  void* alloc(size_t bytes) override;
  void free(void* p) override;
  void copy_from_host(const Tensor& dst, const void* src) override;
  void copy_to_host(void* dst, const Tensor& src) override;
  void copy(const Tensor& dst, const Tensor& src) override;
  void convert(const Tensor& dst, const Tensor& src) override;  // among F32, F64, BF16
  void fill(const Tensor& t, double value) override;
  void synchronize() override;
  bool runs_side_work_concurrently() const override { return true; }
  void begin_side_work() override;
  void end_side_work() override;
  void join_side_work() override;

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
  // Fused for F32 weights with a BF16 copy; other dtypes: adamw, then convert.
  void adamw_copy(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                  const AdamWParams& p, const Tensor& grad_norm_sq, const Tensor& param_copy) override;

  // ---- internals shared by the op files -------------------------------------
  // Grow-only device scratch buffers, one per purpose so one op can hold several.
  // Transient: the largest ones, which are never live at once: the
  // cross-entropy logits chunk and the attention backward's workspace.
  enum class Scratch { Sort, Partials, Transient, LogitsGrad, RowLoss, Small, Count };
  void* scratch(Scratch slot, size_t bytes);
  CUstream_st* stream() const { return stream_; }
  // Throws when called in side work (ops that use the cuBLAS handle or scratch).
  void main_stream_only(const char* what) const;
  cublasContext* cublas() const {  // bound to the main stream
    main_stream_only("an op that uses cuBLAS");
    return cublas_;
  }
  std::unique_ptr<CudnnAttention, CudnnAttentionDeleter>& cudnn_attention() {
    return cudnn_attention_;
  }
  int* device_error_flag() const { return err_dev_; }
  // Copies the I32 offsets [n] to pinned host memory and waits (grouped GEMMs).
  const int32_t* offsets_to_host(const Tensor& offsets, const char* op);
  // Waits for the stream, then throws the first error a kernel reported.
  void check_device_errors(const char* op);

 private:
  struct Buffer {
    void* p = nullptr;
    size_t bytes = 0;
  };
  int device_ = 0;
  CUstream_st* stream_ = nullptr;  // where ops go now: main_stream_, or side_stream_ in side work
  CUstream_st* main_stream_ = nullptr;
  CUstream_st* side_stream_ = nullptr;  // made at the first side work
  CUevent_st* fork_event_ = nullptr;
  CUevent_st* join_event_ = nullptr;
  bool in_side_work_ = false;
  bool side_pending_ = false;  // side work not joined yet
  cublasContext* cublas_ = nullptr;
  void* cublas_workspace_ = nullptr;
  int* err_dev_ = nullptr;      // device error flag (0 = none)
  int* err_host_ = nullptr;     // pinned copy of the flag
  int32_t* offsets_host_ = nullptr;  // pinned, offsets_host_cap_ elements
  size_t offsets_host_cap_ = 0;
  Buffer scratch_[static_cast<int>(Scratch::Count)];
  std::unique_ptr<CudnnAttention, CudnnAttentionDeleter> cudnn_attention_;
};

}  // namespace nmoe
