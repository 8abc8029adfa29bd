// The optimizer's parameter groups (spec 4.1) and the training-loop
// reporting around them: which tensor lands in which group, each group's
// learning rate, weight decay and beta2 as AdamW applies them, the router
// bias step's ramp, the router load statistics and the console step line.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "config/config.h"
#include "model/model.h"
#include "optim/optimizer.h"
#include "train/progress.h"
#include "train/router_stats.h"

namespace nmoe {
namespace {

const char* const kToml = R"(
tokenizer = "bytes"
vocab_size = 264
eos_token_id = 256
dim = 16
n_layers = 2
n_heads = 2
inter_dim = 24
moe_inter_dim = 8
n_dense_layers = 1
n_routed_experts = 4
n_activated_experts = 2
n_shared_experts = 1
attn = "sdpa"
seq_len = 8
batch_size = 2
lr_dense = 1e-2
lr_expert = 3e-2
lr_router = 5e-3
weight_decay = 0.3
adam_beta1 = 0.8
adam_beta2 = 0.9
adam_beta2_expert = 0.6
adam_eps = 1e-6
warmup_steps = 4
hold_tokens = 1e14
decay_floor = 1e-6
router_bias_update_rate = 1e-2
)";

// The config's model on one CPU thread, at its own micro-batch shape.
struct TinyRun {
  Config cfg;
  std::unique_ptr<Backend> be = make_cpu_backend(1);
  Model m;
  explicit TinyRun(const char* name)
      : cfg(load_config_string(kToml, name)), m(cfg, *be, options(cfg)) { m.init_weights(3); }
  static ModelOptions options(const Config& c) {
    ModelOptions o;
    o.micro_batch = c.batch_size;
    o.seq_len = c.seq_len;
    return o;
  }
};

// The group spec 4.1 gives a tensor by its name and rank.
ParamGroup expected_group(const std::string& name, int64_t ndim) {
  if (name.find(".moe.experts.") != std::string::npos) return ParamGroup::Expert;
  if (name.find("router") != std::string::npos) return ParamGroup::Router;
  bool no_decay = ndim < 2 || (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0);
  for (const char* s : {"norm", "embedding", "lm_head"}) no_decay = no_decay || name.find(s) != std::string::npos;
  return no_decay ? ParamGroup::DenseNoDecay : ParamGroup::DenseDecay;
}

TEST(OptimizerGroups, TensorsLandInTheSpecsGroups) {
  TinyRun t("groups");
  Model& m = t.m;
  int per_group[kNumParamGroups] = {};
  for (const Param& p : m.params().all()) {
    EXPECT_EQ(p.spec.group, expected_group(p.spec.name, p.spec.shape.n)) << p.spec.name;
    ++per_group[static_cast<int>(p.spec.group)];
  }
  EXPECT_EQ(per_group[static_cast<int>(ParamGroup::Expert)], 2);        // w13, w2 of the MoE layer
  EXPECT_EQ(per_group[static_cast<int>(ParamGroup::Router)], 1);        // the router weight
  EXPECT_EQ(per_group[static_cast<int>(ParamGroup::DenseNoDecay)], 7);  // 4 norms + final, embedding, head
}

// Two AdamW steps on given gradients: every element moves as decoupled AdamW
// with its group's learning rate, weight decay and beta2 (computed here in
// double from the learning rates the step reports).
TEST(OptimizerGroups, EachGroupUsesItsHyperparameters) {
  TinyRun t("groups_step");
  const Config& cfg = t.cfg;
  Backend* be = t.be.get();
  Model& m = t.m;
  Optimizer opt(cfg, m);
  ParamStore& ps = m.params();
  const int64_t n = ps.numel();
  std::vector<float> w0(n);
  be->copy_to_host(w0.data(), ps.flat_params());
  std::vector<double> want(w0.begin(), w0.end()), mm(n, 0.0), vv(n, 0.0);
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<float> u(-1, 1);
  for (int64_t step = 0; step < 2; ++step) {
    std::vector<float> g(n);
    for (float& x : g) x = u(rng);
    be->copy_from_host(ps.flat_grads(), g.data());
    const OptimizerStep s = opt.step(step, static_cast<double>(step * 16));
    // Warmup: every group at the same fraction of the way from its floor to its peak.
    const double f = cfg.decay_floor, scale = (s.lr_dense - f) / (cfg.lr_dense - f);
    EXPECT_NEAR(scale, (step + 1) / 4.0, 1e-12);
    EXPECT_NEAR((s.lr_expert - f) / (cfg.lr_expert - f), scale, 1e-12);
    EXPECT_NEAR((s.lr_router - f) / (cfg.lr_router - f), scale, 1e-12);
    const double t = static_cast<double>(step + 1);
    for (const Param& p : ps.all()) {
      double lr = s.lr_dense, wd = 0, b2 = cfg.adam_beta2;
      switch (p.spec.group) {
        case ParamGroup::Expert: lr = s.lr_expert, wd = cfg.weight_decay, b2 = cfg.adam_beta2_expert; break;
        case ParamGroup::Router: lr = s.lr_router; break;
        case ParamGroup::DenseDecay: wd = cfg.weight_decay; break;
        case ParamGroup::DenseNoDecay: break;
      }
      const double b1 = cfg.adam_beta1;
      for (int64_t i = p.offset; i < p.offset + p.spec.shape.numel(); ++i) {
        want[i] *= 1 - lr * wd;
        mm[i] = b1 * mm[i] + (1 - b1) * g[i];
        vv[i] = b2 * vv[i] + (1 - b2) * double(g[i]) * g[i];
        want[i] -= lr / (1 - std::pow(b1, t)) * mm[i] /
                   (std::sqrt(vv[i]) / std::sqrt(1 - std::pow(b2, t)) + cfg.adam_eps);
      }
    }
  }
  std::vector<float> w(n);
  be->copy_to_host(w.data(), ps.flat_params());
  for (const Param& p : ps.all()) {
    double worst = 0, moved = 0;
    for (int64_t i = p.offset; i < p.offset + p.spec.shape.numel(); ++i) {
      worst = std::max(worst, std::abs(w[i] - want[i]));
      moved = std::max(moved, std::abs(double(w[i]) - w0[i]));
    }
    EXPECT_LT(worst, 2e-6) << p.spec.name << " (" << param_group_name(p.spec.group) << ")";
    EXPECT_GT(moved, 1e-4) << p.spec.name;
  }
}

// The bias step ramps with the router's learning rate through warmup, then
// stays at router_bias_update_rate.
TEST(OptimizerGroups, RouterBiasStepRampsWithWarmup) {
  TinyRun t("groups_bias");
  const Config& cfg = t.cfg;
  Model& m = t.m;
  Optimizer opt(cfg, m);
  double last = 0;
  for (int64_t step = 0; step < 6; ++step) {
    const OptimizerStep s = opt.step(step, static_cast<double>(step * 16));
    const double floor = std::min(cfg.decay_floor, cfg.lr_router);
    EXPECT_NEAR(s.bias_gamma, cfg.router_bias_update_rate * (s.lr_router - floor) / (cfg.lr_router - floor), 1e-15)
        << "step " << step;
    EXPECT_GE(s.bias_gamma, last);
    last = s.bias_gamma;
    if (step >= cfg.warmup_steps) {
      EXPECT_DOUBLE_EQ(s.bias_gamma, cfg.router_bias_update_rate);
    }
  }
}

TEST(RouterStats, LoadsCvDeadAndBiasRange) {
  const RouterStats s = router_stats({6, 2, 0, 0}, {0.5, -0.25, 0.0, 1.0});
  ASSERT_EQ(s.load.size(), 4u);
  EXPECT_DOUBLE_EQ(s.load[0], 0.75);
  EXPECT_DOUBLE_EQ(s.load[1], 0.25);
  EXPECT_DOUBLE_EQ(s.load[2], 0.0);
  EXPECT_EQ(s.dead, 2);
  // loads 0.75, 0.25, 0, 0 around the mean 0.25: population std sqrt(0.3125 / 4).
  EXPECT_NEAR(s.cv, 100 * std::sqrt((0.25 + 0 + 0.0625 + 0.0625) / 4) / 0.25, 1e-12);
  EXPECT_DOUBLE_EQ(s.max_load, 75.0);
  EXPECT_DOUBLE_EQ(s.bias_min, -0.25);
  EXPECT_DOUBLE_EQ(s.bias_max, 1.0);
  const RouterStats even = router_stats({3, 3, 3}, {});
  EXPECT_DOUBLE_EQ(even.cv, 0.0);
  EXPECT_EQ(even.dead, 0);
  const RouterStats none = router_stats({0, 0}, {});
  EXPECT_EQ(none.dead, 2);
  EXPECT_DOUBLE_EQ(none.cv, 0.0);
}

TEST(ProgressLine, StepLineHasEveryField) {
  std::ostringstream os;
  Progress p(&os);
  const RouterStats r = router_stats({6, 2, 0, 0}, {0.5, -0.25, 0.0, 1.0});
  // Step 50 of 200 after 25 s for the 50 steps run: 75 s to go.
  p.step(50, 200, 3.14159, 3e-4, 1.25, 123456, 25.0, 50, &r);
  EXPECT_EQ(os.str(),
            "step 50/200 | loss 3.1416 | lr 3.00e-04 | gnorm 1.250 | 123.5K tok/s | 0:00:25 | ETA 0:01:15"
            " | router cv 122.5% dead 2 bias [-0.250, 1.000]\n");
  std::ostringstream dense;
  Progress q(&dense);
  q.step(1, 10, 5.0, 1e-3, 0.5, 1000, 3725, 1, nullptr);
  EXPECT_EQ(dense.str(), "step 1/10 | loss 5.0000 | lr 1.00e-03 | gnorm 0.500 | 1.0K tok/s | 1:02:05 | ETA 9:18:45\n");
}

}  // namespace
}  // namespace nmoe
