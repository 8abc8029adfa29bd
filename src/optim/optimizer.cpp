#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "core/env_choice.h"
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
  fused_copy_ = ps.has_compute_copy() && !ps.moments_sharded();
  const std::string overlap = env_choice("NMOE_OPTIMIZER_OVERLAP", {"auto", "on", "off"});
  std::string why_not;
  if (comm) why_not = "with several ranks the dense gradients are summed over the ranks first";
  else if (cfg.grad_clip > 0) why_not = "grad_clip > 0 needs the norm of every gradient first";
  else if (model.options().exact_accumulation)
    why_not = "exact accumulation sums the micro-batch gradients after the last backward";
  NMOE_CHECK(overlap != "on" || why_not.empty(), "NMOE_OPTIMIZER_OVERLAP=on, but the update cannot overlap "
             "the backward here: ", why_not, ". Unset NMOE_OPTIMIZER_OVERLAP or set it to off.");
  overlap_ = why_not.empty() &&
             (overlap == "on" || (overlap == "auto" && model.backend().runs_side_work_concurrently()));
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

Optimizer::~Optimizer() {
  try {
    abandon_overlapped_step();
  } catch (const std::exception& e) {  // never throws from a destructor
    std::fprintf(stderr, "optimizer: %s\n", e.what());
  }
}

void Optimizer::abandon_overlapped_step() {
  if (!overlapped_) return;
  model_.set_grads_final_hook(nullptr);
  model_.backend().join_side_work();
  overlapped_ = false;
  early_.clear();
}

void Optimizer::start_update(int64_t step, double tokens_seen) {
  const double scale = schedule_.scale(step, tokens_seen);
  ++adam_steps_;
  pending_ = OptimizerStep{};
  for (const Group& g : groups_) {
    const double lr = WsdSchedule::lr(g.peak_lr, g.floor_lr, scale);
    if (g.id == ParamGroup::Expert) pending_.lr_expert = lr;
    if (g.id == ParamGroup::Router) pending_.lr_router = lr;
    if (g.id == ParamGroup::DenseDecay) pending_.lr_dense = lr;
    AdamWParams& p = adam_[static_cast<int>(g.id)];
    p.lr = lr;
    p.beta1 = cfg_.adam_beta1;
    p.beta2 = g.beta2;
    p.eps = cfg_.adam_eps;
    p.weight_decay = g.weight_decay;
    p.step = adam_steps_;
    p.max_norm = cfg_.grad_clip;
  }
}

void Optimizer::update_range(ParamGroup g, int64_t begin, int64_t end) {
  Backend& B = model_.backend();
  const ParamStore& ps = model_.params();
  const AdamWParams& p = adam_[static_cast<int>(g)];
  const Tensor w = ps.flat_params().slice(begin, end);
  if (fused_copy_)
    B.adamw_copy(w, ps.grads(begin, end), ps.m(begin, end), ps.v(begin, end), p, grad_norm_sq_,
                 ps.flat_compute().slice(begin, end));
  else
    B.adamw(w, ps.grads(begin, end), ps.m(begin, end), ps.v(begin, end), p, grad_norm_sq_);
}

void Optimizer::begin_overlapped_step(int64_t step, double tokens_seen) {
  NMOE_CHECK(overlap_, "begin_overlapped_step: this optimizer does not overlap the backward");
  NMOE_CHECK(!overlapped_, "begin_overlapped_step: the previous overlapped step was not finished by step()");
  start_update(step, tokens_seen);
  overlapped_ = true;
  overlapped_step_ = step;
  overlapped_tokens_ = tokens_seen;
  early_.clear();
  model_.set_grads_final_hook([this](std::initializer_list<Param*> params) { update_early(params); });
}

void Optimizer::update_early(std::initializer_list<Param*> params) {
  Backend& B = model_.backend();
  struct SideWork {  // ends the side work even when an op throws
    Backend& B;
    explicit SideWork(Backend& b) : B(b) { B.begin_side_work(); }
    ~SideWork() { B.end_side_work(); }
  } side(B);
  for (Param* p : params) {
    if (!p) continue;
    update_range(p->spec.group, p->offset, p->offset + p->w.numel());
    early_.push_back(p);
  }
}

OptimizerStep Optimizer::step(int64_t step, double tokens_seen) {
  Backend& B = model_.backend();
  ParamStore& ps = model_.params();

  if (overlapped_) {
    NMOE_CHECK(step == overlapped_step_ && tokens_seen == overlapped_tokens_, "optimizer step(", step, ", ",
               tokens_seen, ") finishes the overlapped step begun as (", overlapped_step_, ", ",
               overlapped_tokens_, ")");
    model_.set_grads_final_hook(nullptr);
    B.join_side_work();
    overlapped_ = false;
  } else {
    start_update(step, tokens_seen);
  }
  OptimizerStep out = pending_;

  // With the update overlapped the norm is computed after it: AdamW does not
  // read it (no clipping) and leaves the gradients as they were.
  const std::optional<double> norm_sq = grad_norm_sq();
  norm_on_device_ = !norm_sq;
  if (norm_sq) {
    B.copy_from_host(grad_norm_sq_, &*norm_sq);
    last_norm_sq_ = *norm_sq;
  }

  if (early_.empty()) {
    // This rank's part of each group: its experts and, with the moments
    // sharded (ZeRO-1), its dense shard; the rest arrives by the all-gather below.
    for (const Group& g : groups_) {
      const GroupRange own = ps.owned(g.id);
      if (own.size() > 0) update_range(g.id, own.begin, own.end);
    }
  } else {
    // The parameters the backward did not hand over (one rank: every one is owned).
    std::sort(early_.begin(), early_.end());
    for (const Param& p : ps.all())
      if (!std::binary_search(early_.begin(), early_.end(), &p))
        update_range(p.spec.group, p.offset, p.offset + p.w.numel());
    early_.clear();
  }
  if (ps.moments_sharded()) comm_->all_gather(ps.flat_params(), ps.shard_bounds(), "dense parameter all-gather");

  // Router bias step ramps with the router LR (warmup) and decays with it.
  const Group& r = groups_[static_cast<int>(ParamGroup::Router)];
  double ramp = r.peak_lr > r.floor_lr ? (out.lr_router - r.floor_lr) / (r.peak_lr - r.floor_lr) : 1.0;
  out.bias_gamma = cfg_.router_bias_update_rate * std::clamp(ramp, 0.0, 1.0);
  model_.update_router_bias(out.bias_gamma);
  // With the copy fused, the AdamW passes refreshed it: whole groups, which
  // partition the flat buffers, or every parameter (the padding between
  // parameters stays zero in both buffers).
  if (!fused_copy_) model_.sync_compute_weights();
  return out;
}

}  // namespace nmoe
