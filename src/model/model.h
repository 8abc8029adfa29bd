// The transformer, written once against the ops interface (ops/backend.h):
// token embedding, n_layers pre-norm blocks (RMSNorm, causal attention with
// RoPE, dense SwiGLU MLP or MoE), final RMSNorm, untied LM head, mean
// cross-entropy. Forward and hand-written backward; all memory is planned at
// construction for a fixed micro-batch shape.
#pragma once

#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/arena.h"
#include "model/params.h"
#include "ops/backend.h"

namespace nmoe {

class ExpertTransport;

struct ModelShape {
  int64_t vocab = 0, dim = 0, n_layers = 0, n_heads = 0, head_dim = 0;
  int64_t inter = 0;       // dense MLP width
  int64_t moe_inter = 0;   // expert width
  int64_t n_experts = 0;   // routed experts, global
  int64_t top_k = 0;
  int64_t n_shared = 0;    // shared-expert multiplier
  int64_t n_dense_layers = 0;
  double eps = 1e-5, rope_theta = 50000.0;
  double route_scale = 1.0, routed_scaling_factor = 1.0;

  static ModelShape from_config(const Config& c);
  bool is_moe(int64_t layer) const { return n_experts > 0 && layer >= n_dense_layers; }
  int64_t n_moe_layers() const;
};

struct ModelOptions {
  DType dtype = DType::F32;  // master weights, gradients, optimizer state, norms' statistics, router
  // Activations and the weights the GEMMs read (a copy refreshed after each
  // optimizer step when it differs from dtype, e.g. BF16 on the GPU).
  std::optional<DType> compute_dtype;
  DType act_dtype() const { return compute_dtype.value_or(dtype); }
  // The expert group's gradients (BF16 halves their memory and traffic on the
  // GPU; every other gradient stays in dtype).
  std::optional<DType> expert_grad_dtype;
  DType expert_grad_dt() const { return expert_grad_dtype.value_or(dtype); }
  int64_t micro_batch = 1;   // sequences per forward
  int64_t seq_len = 1;
  int rank = 0, world = 1;   // expert sharding: this rank holds E/world experts (see set_transport)
  int64_t ce_chunk_rows = 256;
  // Keep one set of attention activations (norm output, qkv, output, lse) for
  // all layers and recompute a layer's in its backward pass.
  bool recompute_attention = false;
  // Sum micro-batch gradients in the fixed tree order (train/grad_accumulator.h),
  // with per-source expert gradient leaves under expert parallelism; otherwise
  // accumulate in place (less memory).
  bool exact_accumulation = true;
  // ZeRO-1 (world > 1): keep the AdamW moments of this rank's shard of the
  // replicated parameters only (ParamStore::set_moment_shard); the Optimizer
  // then needs the Comm of the world ranks to share its updates.
  bool shard_optimizer_state = false;
};

struct MemoryPlan {
  size_t params = 0, compute_weights = 0, grads = 0, optimizer = 0, buffers = 0, activations = 0, workspace = 0;
  size_t backend_scratch = 0;  // kept by the backend for cross-entropy and attention
  size_t total() const {
    return params + compute_weights + grads + optimizer + buffers + activations + workspace + backend_scratch;
  }
  std::string str() const;
};

class Model {
 public:
  // Validates that the config uses only implemented features (throws Error
  // naming the key otherwise), registers parameters and plans all memory.
  Model(const Config& cfg, Backend& backend, const ModelOptions& opt);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Initial weights (spec 1.9): deterministic in (seed, tensor name, global expert id).
  void init_weights(uint64_t seed);
  // Refreshes the compute copy of the weights after the master weights changed
  // (optimizer step, checkpoint load); a no-op when there is no copy.
  void sync_compute_weights() { params_.sync_compute(backend_); }

  // One micro-batch of micro_batch x seq_len tokens (host arrays, token-major).
  // Adds grad_scale * dLoss/dparam to the gradients, loss_sum += summed CE,
  // aux_sum += aux_weight * per-layer aux losses (when aux_weight > 0).
  void forward_backward(const int32_t* tokens, const int32_t* targets, double grad_scale,
                        double aux_weight);
  // Forward only (validation): loss_sum += summed CE. Router loads are not counted.
  void forward_loss(const int32_t* tokens, const int32_t* targets);
  // Forward pass without a loss (evaluation); final_hidden() then holds the
  // final-norm output [micro_batch * seq_len, dim].
  void forward_hidden(const int32_t* tokens);
  const Tensor& final_hidden() const { return xf_; }
  const Tensor& head_weight() const;  // LM head [vocab, dim] in the compute dtype

  // Step statistics kept on the backend.
  void zero_grads();
  void reset_step_stats();  // loss/aux sums and per-layer expert counts to zero
  double read_loss_sum();
  double read_aux_sum();
  // Expert counts of MoE layer i (0-based among MoE layers) summed since reset.
  std::vector<int32_t> read_expert_counts(int64_t moe_layer);
  std::vector<double> read_router_bias(int64_t moe_layer);
  // Expert choice [tokens, top_k] of MoE layer i in the last forward.
  std::vector<int32_t> read_expert_indices(int64_t moe_layer);
  // Aux-loss-free bias update of every MoE layer from the counts since reset.
  void update_router_bias(double gamma);

  // Counted targets of a host target array (targets != ignore index).
  int64_t count_targets(const int32_t* targets, int64_t n) const;
  int64_t ignore_index() const { return ignore_index_; }

  // Expert parallelism (world > 1): the transport that carries MoE rows
  // between ranks; it must be set before the first forward. The gradients of
  // this rank's experts from source rank src's tokens accumulate in
  // expert_grad_leaf(src) (the expert group's layout), not in the flat
  // gradients: the trainer sums them in a fixed order (train/grad_accumulator.h).
  void set_transport(ExpertTransport* t) { transport_ = t; }
  bool expert_parallel() const { return opt_.world > 1 && shape_.n_moe_layers() > 0; }
  const Tensor& expert_grad_leaf(int src) const { return expert_leaves_.at(src); }
  bool has_expert_grad_leaves() const { return !expert_leaves_.empty(); }
  // Router expert counts [E] (I32) of every MoE layer, e.g. to sum them over ranks.
  std::vector<Tensor> router_counts() const;
  // Loss and aux sums to zero (expert counts kept).
  void reset_loss_sums();
  int64_t first_expert() const { return first_expert_; }
  int64_t n_local_experts() const { return n_local_experts_; }

  // Called during backward with parameters whose gradients this backward has
  // finished (the optimizer may update them while the backward goes on); null: none.
  using GradsFinalHook = std::function<void(std::initializer_list<Param*>)>;
  void set_grads_final_hook(GradsFinalHook hook) { grads_final_ = std::move(hook); }

  // Gradient checks: reuse the expert choice of the previous forward.
  void set_frozen_routing(bool frozen) { frozen_routing_ = frozen; }

  ParamStore& params() { return params_; }
  const ModelShape& shape() const { return shape_; }
  const ModelOptions& options() const { return opt_; }
  MemoryPlan memory_plan() const;
  Backend& backend() { return backend_; }
  // Router bias tensors by safetensors name (layers.{l}.moe.router.bias).
  std::vector<std::pair<std::string, Tensor>> buffers() const;
  // Active parameters per token (matmul weights touched per token, incl. head).
  int64_t active_params() const;
  // Training FLOPs per token: 6 * active matmul params + causal attention.
  double flops_per_token() const;

 private:
  struct Layer;
  Layer& moe_layer(int64_t i);  // MoE layer i (0-based among MoE layers); throws "no MoE layer i"
  void plan_layer(Layer& L, int64_t l);
  void forward(bool training);
  void backward(double grad_scale, double aux_weight);
  void attention_forward(Layer& L);
  void attention_recompute(Layer& L);
  void attention_backward(Layer& L, const Tensor& dres);
  void dense_mlp_forward(Layer& L);
  void dense_mlp_backward(Layer& L, const Tensor& dres);
  void moe_forward(Layer& L, bool training);
  void moe_backward(Layer& L, const Tensor& dres, double aux_weight);
  void moe_forward_ep(Layer& L);
  void moe_backward_ep(Layer& L);
  // Whether MoE layers keep their experts' outputs for the gates' gradient.
  // Under expert parallelism the owner's rows come back as outputs; with
  // exact accumulation one rank must compute what several would (bit for
  // bit). Otherwise moe_gate_grad forms it from the SwiGLU activations.
  bool keeps_expert_outputs() const { return opt_.world > 1 || opt_.exact_accumulation; }
  void plan_expert_parallel();
  void upload_batch(const int32_t* tokens, const int32_t* targets);

  Config cfg_;
  Backend& backend_;
  ModelOptions opt_;
  ModelShape shape_;
  int64_t n_tokens_ = 0;        // micro_batch * seq_len
  int64_t n_local_experts_ = 0;
  int64_t first_expert_ = 0;
  int64_t ignore_index_ = -1;
  double out_scale_ = 1.0;      // 1/sqrt(2 n_layers) on attention outputs
  bool frozen_routing_ = false;
  GradsFinalHook grads_final_;
  void grads_final(std::initializer_list<Param*> params) {
    if (grads_final_) grads_final_(params);
  }

  ParamStore params_;
  Param* embedding_ = nullptr;
  Param* final_norm_ = nullptr;
  Param* lm_head_ = nullptr;
  std::vector<std::unique_ptr<Layer>> layers_;

  Arena buffers_{"buffers"}, acts_{"activations"}, work_{"workspace"};
  Tensor rope_cos_, rope_sin_, tokens_, targets_, loss_sum_, aux_sum_;
  std::vector<Tensor> resid_;   // resid_[l]: residual stream entering layer l; resid_[L] final
  Tensor xf_, rstdf_;           // final norm output and its rstd
  Tensor shared_xn1_, shared_qkv_, shared_attn_, shared_lse_;  // with recompute_attention
  // Workspace shared by all layers during backward.
  Tensor dres_, dxn_, dattn_, dqkv_, dxf_;
  Tensor dmlp_a_, dmlp_h13_;                   // dense MLP
  Tensor dye_, dae_, dh13e_, dxe_, dgates_, dlogits_, dsh_a_, dsh_h13_;  // MoE
  // Buffers shared by every layer instead of kept per layer: the router
  // logits (the backward needs only the scores), the rows dispatched into
  // expert order (backward gathers them again from the kept input) and the
  // SwiGLU outputs of the dense MLP, the routed and the shared experts
  // (swiglu_bwd writes them again from the kept h13).
  Tensor router_logits_, xe_, mlp_a_, ae_, sa_;
  // Expert parallelism: the owner's work on one source's block, and the
  // per-source gradient leaves of this rank's experts.
  ExpertTransport* transport_ = nullptr;
  Tensor own_h13_, own_a_, own_y_, own_da_, own_dh13_;
  std::vector<Tensor> expert_leaves_;
  Arena leaves_{"expert-grad-leaves"};
};

}  // namespace nmoe
