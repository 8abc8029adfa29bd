// Forward pass. Each layer keeps what its backward needs (model_layer.h),
// except what the backward forms again from it (the model's shared buffers,
// model.h).
#include <cmath>

#include "model/model_layer.h"

namespace nmoe {

namespace {
RouterParams router_params(const ModelShape& s, bool frozen) {
  RouterParams p;
  p.top_k = static_cast<int>(s.top_k);
  p.route_scale = s.route_scale;
  p.routed_scaling_factor = s.routed_scaling_factor;
  p.use_given_indices = frozen;
  return p;
}
}  // namespace

void Model::upload_batch(const int32_t* tokens, const int32_t* targets) {
  for (int64_t i = 0; i < n_tokens_; ++i) {
    NMOE_CHECK(tokens[i] >= 0 && tokens[i] < shape_.vocab, "token id ", tokens[i], " at position ", i,
               " is outside the vocabulary [0, ", shape_.vocab, ")");
    NMOE_CHECK(targets[i] < shape_.vocab, "target id ", targets[i], " at position ", i,
               " is outside the vocabulary [0, ", shape_.vocab, ")");
  }
  backend_.copy_from_host(tokens_, tokens);
  backend_.copy_from_host(targets_, targets);
}

void Model::attention_forward(Layer& L) {
  Backend& B = backend_;
  const Tensor& x = resid_[L.index];
  B.rmsnorm_fwd(x, L.attn_norm->wc, shape_.eps, L.xn1, L.rstd1);
  B.matmul(L.xn1, false, L.wqkv->wc, true, L.qkv.view(Shape{n_tokens_, 3 * shape_.dim}), 1.0, 0.0);
  B.rope(L.qkv, rope_cos_, rope_sin_, static_cast<int>(opt_.seq_len), false);
  B.attention_fwd(L.qkv, static_cast<int>(opt_.seq_len), 1.0 / std::sqrt(static_cast<double>(shape_.head_dim)),
                  L.attn, L.lse);
  // mid = x + out_scale * attn @ wo^T
  B.copy(L.mid, x);
  B.matmul(L.attn, false, L.wo->wc, true, L.mid, out_scale_, 1.0);
}

// The attention part of attention_forward again, for the backward pass when
// its activations were not kept (recompute_attention): the same ops, so the
// same numbers.
void Model::attention_recompute(Layer& L) {
  Backend& B = backend_;
  B.rmsnorm_fwd(resid_[L.index], L.attn_norm->wc, shape_.eps, L.xn1, L.rstd1);
  B.matmul(L.xn1, false, L.wqkv->wc, true, L.qkv.view(Shape{n_tokens_, 3 * shape_.dim}), 1.0, 0.0);
  B.rope(L.qkv, rope_cos_, rope_sin_, static_cast<int>(opt_.seq_len), false);
  B.attention_fwd(L.qkv, static_cast<int>(opt_.seq_len), 1.0 / std::sqrt(static_cast<double>(shape_.head_dim)),
                  L.attn, L.lse);
}

void Model::dense_mlp_forward(Layer& L) {
  Backend& B = backend_;
  Tensor& out = resid_[L.index + 1];
  B.matmul(L.xn2, false, L.w13->wc, true, L.h13, 1.0, 0.0);
  B.swiglu_fwd(L.h13, L.a);
  B.copy(out, L.mid);
  B.matmul(L.a, false, L.w2->wc, true, out, 1.0, 1.0);
}

void Model::moe_forward(Layer& L, bool training) {
  Backend& B = backend_;
  Tensor& out = resid_[L.index + 1];
  B.matmul(L.xn2, false, L.router->wc, true, L.logits, 1.0, 0.0);
  B.router_fwd(L.logits, L.bias, router_params(shape_, frozen_routing_), L.scores, L.idx, L.gates,
               training ? L.counts : L.counts_eval);
  // Rows sorted by global expert (so also by owner rank).
  B.moe_plan(L.idx, static_cast<int>(shape_.n_experts), L.offsets, L.pos);
  const int K = static_cast<int>(shape_.top_k);
  B.moe_dispatch(L.xn2, L.pos, K, L.xe);
  if (expert_parallel()) {
    moe_forward_ep(L);
  } else {
    B.grouped_matmul(L.xe, L.ew13->wc, true, L.offsets, L.h13e);
    B.swiglu_fwd(L.h13e, L.ae);
    B.grouped_matmul(L.ae, L.ew2->wc, true, L.offsets, L.ye);
  }
  B.copy(out, L.mid);
  B.moe_combine(L.ye, L.pos, L.gates, out);
  if (L.sw13) {
    B.matmul(L.xn2, false, L.sw13->wc, true, L.sh13, 1.0, 0.0);
    B.swiglu_fwd(L.sh13, L.sa);
    B.matmul(L.sa, false, L.sw2->wc, true, out, 1.0, 1.0);
  }
}

void Model::forward(bool training) {
  Backend& B = backend_;
  B.embedding_fwd(embedding_->wc, tokens_, resid_[0]);
  for (auto& Lp : layers_) {
    Layer& L = *Lp;
    attention_forward(L);
    B.rmsnorm_fwd(L.mid, L.ffn_norm->wc, shape_.eps, L.xn2, L.rstd2);
    if (L.moe) moe_forward(L, training);
    else dense_mlp_forward(L);
  }
  B.rmsnorm_fwd(resid_[shape_.n_layers], final_norm_->wc, shape_.eps, xf_, rstdf_);
}

void Model::forward_loss(const int32_t* tokens, const int32_t* targets) {
  upload_batch(tokens, targets);
  forward(false);
  backend_.cross_entropy(xf_, lm_head_->wc, targets_, ignore_index_, 0.0, opt_.ce_chunk_rows, loss_sum_,
                         Tensor(), Tensor());
}

void Model::forward_hidden(const int32_t* tokens) {
  // Targets are not used without a loss; the tokens stand in for them.
  upload_batch(tokens, tokens);
  forward(false);
}

const Tensor& Model::head_weight() const { return lm_head_->wc; }

void Model::forward_backward(const int32_t* tokens, const int32_t* targets, double grad_scale,
                             double aux_weight) {
  upload_batch(tokens, targets);
  forward(true);
  backward(grad_scale, aux_weight);
}

}  // namespace nmoe
