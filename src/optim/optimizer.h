// AdamW over the four parameter groups (experts; router without decay; dense
// with and without decay) on fp32 master weights and moments, optional global
// gradient-norm clipping, the WSD schedule, and the router-bias update.
// With the moments sharded over ranks (ZeRO-1, ParamStore::set_moment_shard)
// each rank updates its experts and its shard of the replicated parameters,
// then the ranks all-gather the updated replicated parameters.
#pragma once

#include <array>
#include <cstdint>
#include <optional>

#include "config/config.h"
#include "core/arena.h"
#include "model/model.h"
#include "optim/schedule.h"

namespace nmoe {

class Comm;

struct OptimizerStep {
  double lr_dense = 0, lr_expert = 0, lr_router = 0;
  double bias_gamma = 0;    // router-bias step size used
};

class Optimizer {
 public:
  // comm: the other ranks (expert parallelism, sharded moments), or null.
  Optimizer(const Config& cfg, Model& model, Comm* comm = nullptr);
  // Applies one update from the accumulated gradients. step is 0-based and
  // tokens_seen counts tokens before this step (the schedule's inputs).
  OptimizerStep step(int64_t step, double tokens_seen);
  // The global gradient norm (before clipping) of the last step. On one
  // device the step leaves it on the device (AdamW reads it there for
  // clipping), so the first call after a step waits for it: read it only
  // when it is logged.
  double last_grad_norm();
  int64_t adam_steps() const { return adam_steps_; }
  void set_adam_steps(int64_t n) { adam_steps_ = n; }

 private:
  struct Group {
    ParamGroup id;
    double peak_lr, floor_lr, beta2, weight_decay;
  };
  const Config cfg_;
  Model& model_;
  WsdSchedule schedule_;
  std::array<Group, kNumParamGroups> groups_;
  int64_t adam_steps_ = 0;
  // The squared norm into grad_norm_sq_ (device); returns it when it had to
  // come to the host anyway (several ranks, or the canonical order), else nothing.
  std::optional<double> grad_norm_sq();
  double last_norm_sq_ = 0;
  bool norm_on_device_ = false;  // last_norm_sq_ not read yet

  Comm* comm_ = nullptr;
  bool canonical_norm_ = false;  // per-tensor partial sums in a rank-count independent order
  Arena arena_{"optimizer-scalars"};
  Tensor grad_norm_sq_, partials_;
};

}  // namespace nmoe
