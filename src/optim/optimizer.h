// AdamW over the four parameter groups (experts; router without decay; dense
// with and without decay) on fp32 master weights and moments, optional global
// gradient-norm clipping, the WSD schedule, and the router-bias update.
// With the moments sharded over ranks (ZeRO-1, ParamStore::set_moment_shard)
// each rank updates its experts and its shard of the replicated parameters,
// then the ranks all-gather the updated replicated parameters.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <vector>

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
  ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;
  // Applies one update from the accumulated gradients. step is 0-based and
  // tokens_seen counts tokens before this step (the schedule's inputs).
  OptimizerStep step(int64_t step, double tokens_seen);

  // Overlap of the update with the backward: AdamW is elementwise, so a
  // parameter can be updated as soon as its gradient is final, as side work
  // (ops/backend.h) while the backward goes on through the layers below. Only
  // where nothing needs every gradient first: one rank, no clipping
  // (grad_clip = 0), gradients accumulated in place. NMOE_OPTIMIZER_OVERLAP=
  // auto (on backends that overlap side work) | on (also where it runs in
  // line: the same results; an error where the step does not allow it) | off.
  bool overlaps_backward() const { return overlap_; }
  // Call before the step's last forward_backward when overlaps_backward();
  // step(), with the same arguments, then waits for those updates and does the rest.
  void begin_overlapped_step(int64_t step, double tokens_seen);
  // Ends an overlapped step without step() (e.g. the loss was not finite):
  // waits for the updates already made, which stay in the weights and moments.
  void abandon_overlapped_step();
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
  // The schedule's learning rates and the AdamW settings of each group for
  // this step (advances adam_steps_).
  void start_update(int64_t step, double tokens_seen);
  // AdamW on flat elements [begin, end) of group g (refreshing the compute copy
  // in the same pass when fused_copy_).
  void update_range(ParamGroup g, int64_t begin, int64_t end);
  void update_early(std::initializer_list<Param*> params);
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

  std::array<AdamWParams, kNumParamGroups> adam_{};  // this step's, per group
  OptimizerStep pending_;
  bool fused_copy_ = false;  // the compute copy is refreshed by the AdamW pass
  bool overlap_ = false;     // overlaps_backward()
  bool overlapped_ = false;  // this step began overlapped
  int64_t overlapped_step_ = 0;
  double overlapped_tokens_ = 0;
  std::vector<const Param*> early_;  // updated during this step's backward

  Comm* comm_ = nullptr;
  bool canonical_norm_ = false;  // per-tensor partial sums in a rank-count independent order
  Arena arena_{"optimizer-scalars"};
  Tensor grad_norm_sq_, partials_;
};

}  // namespace nmoe
