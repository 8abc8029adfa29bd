#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>

namespace nmoe {

Optimizer::Optimizer(const Config& cfg, Model& model)
    : cfg_(cfg), model_(model), schedule_(WsdSchedule::from_config(cfg)) {
  const double router_floor = std::min(cfg.decay_floor, cfg.lr_router);
  groups_ = {{
      {ParamGroup::Expert, cfg.lr_expert, cfg.decay_floor, cfg.adam_beta2_expert, cfg.weight_decay},
      {ParamGroup::Router, cfg.lr_router, router_floor, cfg.adam_beta2, 0.0},
      {ParamGroup::DenseDecay, cfg.lr_dense, cfg.decay_floor, cfg.adam_beta2, cfg.weight_decay},
      {ParamGroup::DenseNoDecay, cfg.lr_dense, cfg.decay_floor, cfg.adam_beta2, 0.0},
  }};
  arena_.reserve(&grad_norm_sq_, DType::F64, Shape{1});
  arena_.allocate(model.backend());
}

OptimizerStep Optimizer::step(int64_t step, double tokens_seen) {
  Backend& B = model_.backend();
  ParamStore& ps = model_.params();
  OptimizerStep out;

  B.fill(grad_norm_sq_, 0.0);
  B.sum_squares(ps.flat_grads(), grad_norm_sq_);
  double norm_sq = 0;
  B.copy_to_host(&norm_sq, grad_norm_sq_);
  out.grad_norm = std::sqrt(norm_sq);

  const double scale = schedule_.scale(step, tokens_seen);
  ++adam_steps_;
  for (const Group& g : groups_) {
    const double lr = WsdSchedule::lr(g.peak_lr, g.floor_lr, scale);
    if (g.id == ParamGroup::Expert) out.lr_expert = lr;
    if (g.id == ParamGroup::Router) out.lr_router = lr;
    if (g.id == ParamGroup::DenseDecay) out.lr_dense = lr;
    if (ps.group(g.id).size() == 0) continue;
    AdamWParams p;
    p.lr = lr;
    p.beta1 = cfg_.adam_beta1;
    p.beta2 = g.beta2;
    p.eps = cfg_.adam_eps;
    p.weight_decay = g.weight_decay;
    p.step = adam_steps_;
    p.max_norm = cfg_.grad_clip;
    B.adamw(ps.group_slice(ps.flat_params(), g.id), ps.group_slice(ps.flat_grads(), g.id),
            ps.group_slice(ps.flat_m(), g.id), ps.group_slice(ps.flat_v(), g.id), p, grad_norm_sq_);
  }

  // Router bias step ramps with the router LR (warmup) and decays with it.
  const Group& r = groups_[static_cast<int>(ParamGroup::Router)];
  double ramp = r.peak_lr > r.floor_lr ? (out.lr_router - r.floor_lr) / (r.peak_lr - r.floor_lr) : 1.0;
  out.bias_gamma = cfg_.router_bias_update_rate * std::clamp(ramp, 0.0, 1.0);
  model_.update_router_bias(out.bias_gamma);
  model_.sync_compute_weights();
  return out;
}

}  // namespace nmoe
