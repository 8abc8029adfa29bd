// The ops interface. The model is written once against this class; each
// backend (CPU reference, CUDA) implements every op. Ops are coarse and fused:
// one call does one whole step of the model (a norm, an attention, a router).
//
// Conventions
// - All tensors are contiguous and live in the backend's memory.
// - "float tensors" of one call share one dtype: F32 or F64 on the CPU backend
//   (F64 exists for gradient checks); the CUDA backend adds BF16 activations.
//   Index tensors are I32. Scalar results are F64 tensors of one element.
// - Mixed precision (GPU): when the model's compute dtype (BF16) differs from
//   its master dtype (F32), activations and the weights GEMMs read are in the
//   compute dtype, while norm statistics (rstd), attention lse, router logits,
//   scores and gates, RoPE tables, parameter gradients and scalars stay F32; an
//   op then takes the mixed dtypes its arguments have. The CPU backend uses one
//   dtype throughout.
// - Token-major layout: a micro-batch of B sequences of T tokens is N = B*T
//   rows; row n is position n % T of sequence n / T.
// - "write" outputs are overwritten; "accumulate" outputs are added to (+=).
//   Every op documents which. Gradients of parameters always accumulate.
// - Reductions are deterministic: the same inputs give bit-identical outputs.
#pragma once

#include <string>

#include <cstddef>
#include <cstdint>

#include "core/tensor.h"

namespace nmoe {

struct RouterParams {
  int top_k = 1;
  double route_scale = 1.0;            // multiplies logits before the sigmoid
  double routed_scaling_factor = 1.0;  // multiplies the normalized gates
  bool use_given_indices = false;      // take idx as input instead of choosing top-k
};

struct AdamWParams {
  double lr = 0;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0;
  int64_t step = 1;       // 1-based step used for bias correction
  double max_norm = 0;    // > 0: scale grads by min(1, max_norm / ||g||) using grad_norm_sq
};

// Bytes of device scratch an op keeps (Backend::*_scratch_bytes).
struct ScratchBytes {
  int64_t shared = 0;  // in the buffer the loss and attention share
  int64_t own = 0;     // in buffers of its own
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // The hardware it runs on, e.g. "CPU" or "NVIDIA H200".
  virtual std::string device_name() const { return name(); }
  // Bytes of device memory in use now (everything on the device, the runtime
  // context and libraries' own allocations included), or -1 where the
  // backend cannot tell (CPU). Differences measure what a run allocated.
  virtual int64_t device_memory_in_use() const { return -1; }
  // Device scratch the backend grows to and keeps for these ops at these sizes
  // (for the memory plan); none where it holds none. Cross-entropy with
  // gradients over `rows` rows; attention forward and backward. The two never
  // run at once: `shared` is what they may keep in one buffer (the plan counts
  // the larger), `own` what each keeps apart.
  virtual ScratchBytes cross_entropy_scratch_bytes(int64_t rows, int64_t chunk_rows, int64_t vocab,
                                                   DType act) const {
    return {};
  }
  virtual ScratchBytes attention_scratch_bytes(int64_t batch, int64_t seq_len, int64_t heads,
                                               int64_t head_dim, DType act) const {
    return {};
  }

  // ---- memory -------------------------------------------------------------
  virtual void* alloc(size_t bytes) = 0;  // 256-byte aligned
  virtual void free(void* p) = 0;
  virtual void copy_from_host(const Tensor& dst, const void* src) = 0;
  virtual void copy_to_host(void* dst, const Tensor& src) = 0;
  virtual void copy(const Tensor& dst, const Tensor& src) = 0;  // same dtype, same numel
  virtual void fill(const Tensor& t, double value) = 0;        // any dtype
  // dst = src converted elementwise (e.g. fp32 master weights to a bf16 compute
  // copy; round to nearest even). Same numel. The default handles equal dtypes.
  virtual void convert(const Tensor& dst, const Tensor& src) {
    NMOE_CHECK(dst.dtype == src.dtype, name(), " backend cannot convert ", dtype_name(src.dtype), " to ",
               dtype_name(dst.dtype));
    copy(dst, src);
  }
  virtual void synchronize() = 0;

  // ---- side work ----------------------------------------------------------------
  // Ops issued between begin_side_work() and end_side_work() start after every
  // op issued before them and may run concurrently with the ops issued after
  // them (on the GPU: a lower-priority stream, so memory-bound work fills the
  // gaps of the compute-bound work); join_side_work() orders every later op
  // after them. Side work must use no scratch memory (AdamW, fill, convert).
  // runs_side_work_concurrently() says whether a backend overlaps it at all; the
  // default runs it in order, which gives the same results.
  virtual bool runs_side_work_concurrently() const { return false; }
  virtual void begin_side_work() {}
  virtual void end_side_work() {}
  virtual void join_side_work() {}

  // ---- dense linear algebra -------------------------------------------------
  // C = alpha * op(A) @ op(B) + beta * C, with A, B, C viewed as 2-D
  // (leading dims flattened). op(A) is [M,K], op(B) is [K,N], C is [M,N].
  // beta == 0 overwrites C (its old contents are never read).
  virtual void matmul(const Tensor& A, bool transA, const Tensor& B, bool transB, const Tensor& C,
                      double alpha, double beta) = 0;

  // Grouped GEMM over ragged row segments. offsets [E+1] (I32, non-decreasing,
  // offsets[0] = 0, offsets[E] = rows of X) splits the rows of X and Y by expert.
  // W is [E, R, S]. For each e with rows r in [offsets[e], offsets[e+1]):
  //   transW:  Y[r] = X[r] @ W[e]^T   (X [M,S], Y [M,R])
  //   !transW: Y[r] = X[r] @ W[e]     (X [M,R], Y [M,S])
  // Y is written; rows of empty experts need no work.
  virtual void grouped_matmul(const Tensor& X, const Tensor& W, bool transW, const Tensor& offsets,
                              const Tensor& Y) = 0;
  // Weight gradient of the grouped GEMM: dW[e] += dY[seg e]^T @ X[seg e],
  // dY [M,R], X [M,S], dW [E,R,S]. Experts with no rows are left unchanged.
  virtual void grouped_matmul_wgrad(const Tensor& dY, const Tensor& X, const Tensor& offsets,
                                    const Tensor& dW) = 0;

  // ---- elementwise --------------------------------------------------------
  // out = a + alpha * b (write; out may alias a).
  virtual void add(const Tensor& out, const Tensor& a, const Tensor& b, double alpha) = 0;

  // ---- embedding ------------------------------------------------------------
  // out[n] = W[tokens[n]] (write). W [V,D], tokens [N] I32, out [N,D].
  virtual void embedding_fwd(const Tensor& W, const Tensor& tokens, const Tensor& out) = 0;
  // dW[tokens[n]] += dout[n] (accumulate, deterministic order).
  virtual void embedding_bwd(const Tensor& dout, const Tensor& tokens, const Tensor& dW) = 0;

  // ---- RMSNorm --------------------------------------------------------------
  // y = x * rstd * w with rstd = 1/sqrt(mean(x^2) + eps). x,y [N,D], w [D], rstd [N] (write).
  virtual void rmsnorm_fwd(const Tensor& x, const Tensor& w, double eps, const Tensor& y,
                           const Tensor& rstd) = 0;
  // dx += dL/dx (accumulate), dw += dL/dw (accumulate), given dy, x, w, rstd.
  virtual void rmsnorm_bwd(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                           const Tensor& dx, const Tensor& dw) = 0;

  // ---- attention -------------------------------------------------------------
  // qkv [N, 3, H, Dh]: q, k, v of each token. RoPE, half-split (GPT-NeoX), on
  // the full head of q and k in place; v untouched. cos/sin are [T_max, Dh/2]
  // tables; row n uses position n % seq_len. inverse = rotate by -angle (the
  // backward of the forward rotation).
  virtual void rope(const Tensor& qkv, const Tensor& cos, const Tensor& sin, int seq_len,
                    bool inverse) = 0;
  // Causal softmax attention per sequence and head. out [N, H*Dh] (write),
  // lse [B, H, T] log-sum-exp of the scaled scores (write, float dtype).
  virtual void attention_fwd(const Tensor& qkv, int seq_len, double scale, const Tensor& out,
                             const Tensor& lse) = 0;
  // dqkv [N, 3, H, Dh] (write) from dout [N, H*Dh] and the forward's qkv, out, lse.
  virtual void attention_bwd(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                             const Tensor& lse, int seq_len, double scale, const Tensor& dqkv) = 0;

  // ---- SwiGLU ---------------------------------------------------------------
  // h13 [N, 2F] holds h1 = h13[:, :F] (gate) and h3 = h13[:, F:] (up).
  // a = silu(h1) * h3, a [N,F] (write).
  virtual void swiglu_fwd(const Tensor& h13, const Tensor& a) = 0;
  // dh13 [N, 2F] (write) from da [N,F]. When a is defined, the same pass also
  // writes a = silu(h1) * h3 [N,F], bit-identical to swiglu_fwd's (so the
  // forward need not keep it for the backward); a must not overlap h13 or dh13.
  virtual void swiglu_bwd(const Tensor& da, const Tensor& h13, const Tensor& dh13, const Tensor& a) = 0;

  // ---- router ---------------------------------------------------------------
  // logits [N,E]; scores = sigmoid(route_scale * logits) [N,E] (write);
  // idx [N,K] = top-k of (scores + bias), ties to the lower expert id, sorted
  // by decreasing (score + bias) (write, or read if use_given_indices);
  // gates [N,K] = scores[idx] / max(sum_k scores[idx], 1e-12) * routed_scaling_factor
  // (write); counts [E] I32 += tokens routed to each expert (accumulate).
  virtual void router_fwd(const Tensor& logits, const Tensor& bias, const RouterParams& p,
                          const Tensor& scores, const Tensor& idx, const Tensor& gates,
                          const Tensor& counts) = 0;
  // dlogits [N,E] (write) from dgates [N,K] through the normalization, the
  // sigmoid and route_scale; unselected experts get zero.
  virtual void router_bwd(const Tensor& dgates, const Tensor& scores, const Tensor& idx,
                          const RouterParams& p, const Tensor& dlogits) = 0;
  // Switch aux loss of one micro-batch, forward and backward fused:
  //   importance_e = sum of gates routed to e, load_e = count of (t,k) routed to e,
  //   aux = E * sum_e (importance_e / sum importance) * (load_e / sum load).
  // loss [1] F64 += weight * aux (accumulate); dgates += weight * d aux / d gates
  // (accumulate; loads are held fixed).
  virtual void moe_aux_loss(const Tensor& gates, const Tensor& idx, int n_experts, double weight,
                            const Tensor& loss, const Tensor& dgates) = 0;
  // Aux-loss-free balancing: frac = counts / max(sum counts, 1); s = sign(frac - 1/E);
  // bias -= gamma * (s - mean(s)); bias clamped to [-16, 16]. counts [E] I32, bias [E].
  virtual void router_bias_update(const Tensor& bias, const Tensor& counts, double gamma) = 0;

  // ---- MoE permutation ---------------------------------------------------------
  // From idx [N,K] (global expert ids minus expert_offset; ids outside
  // [0, E) are an error): offsets [E+1] I32 (write) and pos [N*K] I32 (write),
  // the row of (t,k) in expert-contiguous order; within an expert rows keep
  // token order (stable), so the layout is deterministic.
  virtual void moe_plan(const Tensor& idx, int n_experts, const Tensor& offsets,
                        const Tensor& pos) = 0;
  // xe[pos[t*K+k]] = x[t] (write). x [N,D], xe [N*K, D].
  virtual void moe_dispatch(const Tensor& x, const Tensor& pos, int top_k, const Tensor& xe) = 0;
  // dx[t] += sum_k dxe[pos[t*K+k]], in slot order (accumulate).
  virtual void moe_dispatch_bwd(const Tensor& dxe, const Tensor& pos, int top_k,
                                const Tensor& dx) = 0;
  // out[t] += sum_k gates[t,k] * ye[pos[t*K+k]], in slot order (accumulate).
  virtual void moe_combine(const Tensor& ye, const Tensor& pos, const Tensor& gates,
                           const Tensor& out) = 0;
  // dye[pos[t*K+k]] = gates[t,k] * dout[t] (write), dgates[t,k] = <ye[pos], dout[t]> (write).
  // ye and dgates may both be undefined: dye only (moe_gate_grad then gives
  // dgates without the expert outputs).
  virtual void moe_combine_bwd(const Tensor& dout, const Tensor& ye, const Tensor& pos,
                               const Tensor& gates, const Tensor& dye, const Tensor& dgates) = 0;
  // The gates' gradient from the experts' SwiGLU backward, so their outputs
  // ye = a @ W2^T need not be kept: with dye = gate * dout (moe_combine_bwd)
  // and da = dye @ W2, <ye, dout> = <a, da> / gate. For r = pos[t*K+k]:
  // dgates[t,k] = <a[r], da[r]> / gates[t,k] (write; 0 where the gate is 0:
  // the identity cannot recover it there, and router_bwd multiplies it by
  // d gate / d logit, which is 0 too). a, da [N*K, F]; gates, dgates [N, K].
  virtual void moe_gate_grad(const Tensor& a, const Tensor& da, const Tensor& pos, const Tensor& gates,
                             const Tensor& dgates) = 0;

  // ---- loss -------------------------------------------------------------------
  // Cross-entropy of logits = h @ W^T over the full vocabulary, computed in row
  // chunks so at most [chunk_rows, V] logits exist at a time. h [N,D], W [V,D],
  // targets [N] I32. Targets equal to ignore_index (or < 0) count nothing.
  // loss_sum [1] F64 += sum of -log p(target) (accumulate). If dh is defined:
  // dh = grad_scale * dL/dh (write) and dW += grad_scale * dL/dW (accumulate).
  virtual void cross_entropy(const Tensor& h, const Tensor& W, const Tensor& targets,
                             int64_t ignore_index, double grad_scale, int64_t chunk_rows,
                             const Tensor& loss_sum, const Tensor& dh, const Tensor& dW) = 0;

  // ---- optimizer --------------------------------------------------------------
  // out [1] F64 += sum of x^2 (accumulate; fixed-order reduction).
  virtual void sum_squares(const Tensor& x, const Tensor& out) = 0;
  // Decoupled AdamW on flat buffers of equal numel (param, m, v: write; grad: read):
  //   g = grad * clip;  p *= 1 - lr*wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
  //   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
  // clip = min(1, max_norm / (sqrt(grad_norm_sq) + 1e-6)) if max_norm > 0, else 1.
  virtual void adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                     const AdamWParams& p, const Tensor& grad_norm_sq) = 0;
  // adamw, then param_copy = param converted to param_copy's dtype (write, same
  // numel): the compute copy of the updated weights (bf16 of fp32 master
  // weights), in the same pass where a backend fuses the two. The same values
  // as adamw followed by convert, which the default does.
  virtual void adamw_copy(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                          const AdamWParams& p, const Tensor& grad_norm_sq, const Tensor& param_copy) {
    adamw(param, grad, m, v, p, grad_norm_sq);
    convert(param_copy, param);
  }
};

}  // namespace nmoe
