#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "dist/comm.h"

namespace nmoe {

Optimizer::Optimizer(const Config& cfg, Model& model, Comm* comm)
    : cfg_(cfg), model_(model), schedule_(WsdSchedule::from_config(cfg)), comm_(comm) {
  const double router_floor = std::min(cfg.decay_floor, cfg.lr_router);
  groups_ = {{
      {ParamGroup::Expert, cfg.lr_expert, cfg.decay_floor, cfg.adam_beta2_expert, cfg.weight_decay},
      {ParamGroup::Router, cfg.lr_router, router_floor, cfg.adam_beta2, 0.0},
      {ParamGroup::DenseDecay, cfg.lr_dense, cfg.decay_floor, cfg.adam_beta2, cfg.weight_decay},
      {ParamGroup::DenseNoDecay, cfg.lr_dense, cfg.decay_floor, cfg.adam_beta2, 0.0},
  }};
  const ParamStore& ps = model.params();
  NMOE_CHECK(!ps.moments_sharded() ||
                 (comm && comm->world() == ps.shard_world() && comm->rank() == ps.shard_rank()),
             "the optimizer state is sharded over ", ps.shard_world(), " ranks (ZeRO-1) but the optimizer has ",
             comm ? "a different set of ranks" : "no ranks to share its updates with");
  canonical_norm_ = comm != nullptr || std::string(model.backend().name()) == "cpu";
  int64_t n_partials = 0;
  for (const Param& p : model.params().all()) n_partials += p.spec.per_expert ? p.w.size(0) : 1;
  arena_.reserve(&grad_norm_sq_, DType::F64, Shape{1});
  arena_.reserve(&partials_, DType::F64, Shape{std::max<int64_t>(n_partials, 1)});
  arena_.allocate(model.backend());
}

// Squared global gradient norm. Canonically: one partial sum per tensor (per
// expert for expert tensors), added in parameter order and, within an expert
// tensor, in global expert order, so the value is the same for any rank count.
std::optional<double> Optimizer::grad_norm_sq() {
  Backend& B = model_.backend();
  ParamStore& ps = model_.params();
  B.fill(grad_norm_sq_, 0.0);
  if (!canonical_norm_) {  // stays on the device: no host sync in the step
    for (const Tensor& g : ps.grad_buffers()) B.sum_squares(g, grad_norm_sq_);
    return std::nullopt;
  }
  B.fill(partials_, 0.0);
  int64_t i = 0;
  for (const Param& p : ps.all()) {
    if (p.spec.per_expert)
      for (int64_t e = 0; e < p.g.size(0); ++e) B.sum_squares(p.g[e], partials_.slice(i, i + 1)), ++i;
    else
      B.sum_squares(p.g, partials_.slice(i, i + 1)), ++i;
  }
  std::vector<double> host(partials_.numel());
  B.copy_to_host(host.data(), partials_);
  std::vector<double> mine;  // this rank's expert partials, parameter-major
  i = 0;
  for (const Param& p : ps.all()) {
    const int64_t n = p.spec.per_expert ? p.g.size(0) : 1;
    if (p.spec.per_expert) mine.insert(mine.end(), host.begin() + i, host.begin() + i + n);
    i += n;
  }
  const std::vector<double> experts = comm_ ? comm_->all_gather(mine) : mine;
  const int W = comm_ ? comm_->world() : 1;
  const int64_t per_rank = static_cast<int64_t>(mine.size());
  double total = 0;
  i = 0;
  int64_t j = 0;  // position of this expert tensor's partials inside a rank's list
  for (const Param& p : ps.all()) {
    if (!p.spec.per_expert) {
      total += host[i++];
      continue;
    }
    const int64_t El = p.g.size(0);
    for (int r = 0; r < W; ++r)
      for (int64_t e = 0; e < El; ++e) total += experts[r * per_rank + j + e];
    j += El;
    i += El;
  }
  return total;
}

double Optimizer::last_grad_norm() {
  if (norm_on_device_) {
    model_.backend().copy_to_host(&last_norm_sq_, grad_norm_sq_);
    norm_on_device_ = false;
  }
  return std::sqrt(last_norm_sq_);
}

OptimizerStep Optimizer::step(int64_t step, double tokens_seen) {
  Backend& B = model_.backend();
  ParamStore& ps = model_.params();
  OptimizerStep out;

  const std::optional<double> norm_sq = grad_norm_sq();
  norm_on_device_ = !norm_sq;
  if (norm_sq) {
    B.copy_from_host(grad_norm_sq_, &*norm_sq);
    last_norm_sq_ = *norm_sq;
  }

  const double scale = schedule_.scale(step, tokens_seen);
  ++adam_steps_;
  // With a compute copy and every element updated here (moments not sharded),
  // adamw_copy refreshes the copy in the same pass; otherwise it is converted
  // after the step.
  const bool fused_copy = ps.has_compute_copy() && !ps.moments_sharded();
  int64_t copied = 0;
  for (const Group& g : groups_) {
    const double lr = WsdSchedule::lr(g.peak_lr, g.floor_lr, scale);
    if (g.id == ParamGroup::Expert) out.lr_expert = lr;
    if (g.id == ParamGroup::Router) out.lr_router = lr;
    if (g.id == ParamGroup::DenseDecay) out.lr_dense = lr;
    // This rank's part of the group: its experts and, with the moments
    // sharded (ZeRO-1), its dense shard; the rest arrives by the all-gather below.
    const GroupRange own = ps.owned(g.id);
    if (own.size() == 0) continue;
    AdamWParams p;
    p.lr = lr;
    p.beta1 = cfg_.adam_beta1;
    p.beta2 = g.beta2;
    p.eps = cfg_.adam_eps;
    p.weight_decay = g.weight_decay;
    p.step = adam_steps_;
    p.max_norm = cfg_.grad_clip;
    if (fused_copy) {
      B.adamw_copy(ps.flat_params().slice(own.begin, own.end), ps.grads(own.begin, own.end),
                   ps.m(own.begin, own.end), ps.v(own.begin, own.end), p, grad_norm_sq_,
                   ps.flat_compute().slice(own.begin, own.end));
      copied += own.size();
    } else {
      B.adamw(ps.flat_params().slice(own.begin, own.end), ps.grads(own.begin, own.end),
              ps.m(own.begin, own.end), ps.v(own.begin, own.end), p, grad_norm_sq_);
    }
  }
  if (ps.moments_sharded()) comm_->all_gather(ps.flat_params(), ps.shard_bounds(), "dense parameter all-gather");

  // Router bias step ramps with the router LR (warmup) and decays with it.
  const Group& r = groups_[static_cast<int>(ParamGroup::Router)];
  double ramp = r.peak_lr > r.floor_lr ? (out.lr_router - r.floor_lr) / (r.peak_lr - r.floor_lr) : 1.0;
  out.bias_gamma = cfg_.router_bias_update_rate * std::clamp(ramp, 0.0, 1.0);
  model_.update_router_bias(out.bias_gamma);
  // The groups partition the flat buffers, so the fused steps covered the
  // copy when they updated numel() elements.
  if (!fused_copy || copied != ps.numel()) model_.sync_compute_weights();
  return out;
}

}  // namespace nmoe
