// Hand-written backward pass. dres_ holds dLoss/d(residual stream) while
// walking the layers in reverse; parameter gradients accumulate.
#include <cmath>

#include "model/model_layer.h"

namespace nmoe {

void Model::attention_backward(Layer& L, const Tensor& dres) {
  Backend& B = backend_;
  // mid = x + s * attn @ wo^T
  B.matmul(dres, false, L.wo->wc, false, dattn_, out_scale_, 0.0);
  B.matmul(dres, true, L.attn, false, L.wo->g, out_scale_, 1.0);
  B.attention_bwd(dattn_, L.qkv, L.attn, L.lse, static_cast<int>(opt_.seq_len),
                  1.0 / std::sqrt(static_cast<double>(shape_.head_dim)), dqkv_);
  B.rope(dqkv_, rope_cos_, rope_sin_, static_cast<int>(opt_.seq_len), true);
  const Tensor dqkv = dqkv_.view(Shape{n_tokens_, 3 * shape_.dim});
  B.matmul(dqkv, false, L.wqkv->wc, false, dxn_, 1.0, 0.0);
  B.matmul(dqkv, true, L.xn1, false, L.wqkv->g, 1.0, 1.0);
  B.rmsnorm_bwd(dxn_, resid_[L.index], L.attn_norm->wc, L.rstd1, dres, L.attn_norm->g);
}

void Model::dense_mlp_backward(Layer& L, const Tensor& dres) {
  Backend& B = backend_;
  // out = mid + swiglu(xn2 @ w13^T) @ w2^T
  B.matmul(dres, false, L.w2->wc, false, dmlp_a_, 1.0, 0.0);
  B.swiglu_bwd(dmlp_a_, L.h13, dmlp_h13_, L.a);  // L.a: the forward's a, written again
  B.matmul(dres, true, L.a, false, L.w2->g, 1.0, 1.0);
  B.matmul(dmlp_h13_, false, L.w13->wc, false, dxn_, 1.0, 0.0);
  B.matmul(dmlp_h13_, true, L.xn2, false, L.w13->g, 1.0, 1.0);
}

void Model::moe_backward(Layer& L, const Tensor& dres, double aux_weight) {
  Backend& B = backend_;
  const int K = static_cast<int>(shape_.top_k);
  // Shared experts write dxn_ first; the routed path and the router add to it.
  if (L.sw13) {
    B.matmul(dres, false, L.sw2->wc, false, dsh_a_, 1.0, 0.0);
    B.swiglu_bwd(dsh_a_, L.sh13, dsh_h13_, L.sa);
    B.matmul(dres, true, L.sa, false, L.sw2->g, 1.0, 1.0);
    B.matmul(dsh_h13_, false, L.sw13->wc, false, dxn_, 1.0, 0.0);
    B.matmul(dsh_h13_, true, L.xn2, false, L.sw13->g, 1.0, 1.0);
  } else {
    B.fill(dxn_, 0.0);
  }
  // Routed experts: out += sum_k gate * expert(xn2). Their input rows were
  // not kept per layer: gather them again exactly as the forward did.
  B.moe_dispatch(L.xn2, L.pos, K, L.xe);
  // Without kept expert outputs the gates' gradient comes from the SwiGLU
  // activation and its gradient (ops/backend.h, moe_gate_grad).
  const bool kept = keeps_expert_outputs();
  B.moe_combine_bwd(dres, kept ? L.ye : Tensor(), L.pos, L.gates, dye_, kept ? dgates_ : Tensor());
  if (expert_parallel()) {
    moe_backward_ep(L);  // adds the routed experts' dx to dxn_
  } else {
    B.grouped_matmul(dye_, L.ew2->wc, false, L.offsets, dae_);
    B.swiglu_bwd(dae_, L.h13e, dh13e_, L.ae);
    if (!kept) B.moe_gate_grad(L.ae, dae_, L.pos, L.gates, dgates_);
    B.grouped_matmul_wgrad(dye_, L.ae, L.offsets, L.ew2->g);
    B.grouped_matmul(dh13e_, L.ew13->wc, false, L.offsets, dxe_);
    B.grouped_matmul_wgrad(dh13e_, L.xe, L.offsets, L.ew13->g);
    B.moe_dispatch_bwd(dxe_, L.pos, K, dxn_);
    grads_final({L.ew13, L.ew2});
  }
  // Router: gates depend on the logits through the normalized sigmoid scores.
  if (aux_weight > 0)
    B.moe_aux_loss(L.gates, L.idx, static_cast<int>(shape_.n_experts), aux_weight, aux_sum_, dgates_);
  RouterParams rp;
  rp.top_k = K;
  rp.route_scale = shape_.route_scale;
  rp.routed_scaling_factor = shape_.routed_scaling_factor;
  B.router_bwd(dgates_, L.scores, L.idx, rp, dlogits_);
  B.matmul(dlogits_, false, L.router->wc, false, dxn_, 1.0, 1.0);
  B.matmul(dlogits_, true, L.xn2, false, L.router->g, 1.0, 1.0);
}

void Model::backward(double grad_scale, double aux_weight) {
  Backend& B = backend_;
  // Loss head: CE over the vocabulary in row chunks, fused with its backward.
  B.cross_entropy(xf_, lm_head_->wc, targets_, ignore_index_, grad_scale, opt_.ce_chunk_rows, loss_sum_,
                  dxf_, lm_head_->g);
  B.fill(dres_, 0.0);
  B.rmsnorm_bwd(dxf_, resid_[shape_.n_layers], final_norm_->wc, rstdf_, dres_, final_norm_->g);
  grads_final({lm_head_, final_norm_});
  for (auto it = layers_.rbegin(); it != layers_.rend(); ++it) {
    Layer& L = **it;
    // FFN: out = mid + ffn(rmsnorm(mid)); dres becomes dLoss/dmid.
    if (L.moe) moe_backward(L, dres_, aux_weight);
    else dense_mlp_backward(L, dres_);
    B.rmsnorm_bwd(dxn_, L.mid, L.ffn_norm->wc, L.rstd2, dres_, L.ffn_norm->g);
    // Attention: mid = x + s * attn(rmsnorm(x)); dres becomes dLoss/dx.
    if (opt_.recompute_attention) attention_recompute(L);
    attention_backward(L, dres_);
    grads_final({L.attn_norm, L.wqkv, L.wo, L.ffn_norm, L.w13, L.w2, L.router, L.sw13, L.sw2});
  }
  B.embedding_bwd(dres_, tokens_, embedding_->g);
  grads_final({embedding_});
}

}  // namespace nmoe
