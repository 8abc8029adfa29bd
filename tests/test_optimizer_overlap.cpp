// The optimizer update overlapped with the backward (Optimizer::
// begin_overlapped_step): the backward hands every parameter over once its
// gradient is final, AdamW updates it right then, and the run is bit for bit
// the one without overlap. On the CPU the side work runs in line, which checks
// the bookkeeping; tests/gpu checks the concurrent streams.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "config/config.h"
#include "model/model.h"
#include "optim/optimizer.h"
#include "test_util.h"

namespace nmoe {
namespace {

using test::ScopedEnv;

// A dense first layer, then MoE with a shared expert: every kind of parameter.
const char* const kToml = R"(
tokenizer = "bytes"
vocab_size = 264
eos_token_id = 256
dim = 16
n_layers = 3
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
weight_decay = 0.1
warmup_steps = 2
hold_tokens = 1e14
router_bias_update_rate = 1e-2
)";

ModelOptions in_place(const Config& c) {
  ModelOptions o;
  o.micro_batch = c.batch_size;
  o.seq_len = c.seq_len;
  o.exact_accumulation = false;  // the GPU's accumulation: the last backward leaves the final gradients
  return o;
}

std::vector<float> host_f32(Backend& be, const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  be.copy_to_host(out.data(), t);
  return out;
}

struct RunResult {
  std::vector<double> losses, norms;
  std::vector<float> params, m, v;
};

// Three steps of two micro-batches each, as the trainer runs them.
RunResult train(const char* overlap) {
  ScopedEnv env("NMOE_OPTIMIZER_OVERLAP", overlap);
  const Config cfg = load_config_string(kToml, "overlap");
  auto be = make_cpu_backend(1);
  Model model(cfg, *be, in_place(cfg));
  model.init_weights(5);
  Optimizer opt(cfg, model);
  EXPECT_EQ(opt.overlaps_backward(), std::string(overlap) == "on");
  const int64_t N = cfg.batch_size * cfg.seq_len;
  RunResult r;
  for (int64_t s = 0; s < 3; ++s) {
    model.zero_grads();
    model.reset_step_stats();
    for (int64_t m = 0; m < 2; ++m) {
      const auto in = test::random_tokens(N, 256, 100 + 2 * s + m);
      const auto tgt = test::random_tokens(N, 256, 200 + 2 * s + m);
      if (m == 1 && opt.overlaps_backward()) opt.begin_overlapped_step(s, static_cast<double>(s * 2 * N));
      model.forward_backward(in.data(), tgt.data(), 1.0 / static_cast<double>(2 * N), 0.0);
    }
    r.losses.push_back(model.read_loss_sum());
    opt.step(s, static_cast<double>(s * 2 * N));
    r.norms.push_back(opt.last_grad_norm());
  }
  const ParamStore& ps = model.params();
  r.params = host_f32(*be, ps.flat_params());
  r.m = host_f32(*be, ps.all_m());
  r.v = host_f32(*be, ps.all_v());
  return r;
}

// The model and an overlapping optimizer (NMOE_OPTIMIZER_OVERLAP=on) on one
// fixed micro-batch.
struct OverlapRun {
  ScopedEnv env{"NMOE_OPTIMIZER_OVERLAP", "on"};
  Config cfg = load_config_string(kToml, "overlap");
  std::unique_ptr<Backend> be = make_cpu_backend(1);
  Model model{cfg, *be, in_place(cfg)};
  Optimizer opt{cfg, model};
  int64_t N = cfg.batch_size * cfg.seq_len;
  std::vector<int32_t> in = test::random_tokens(N, 256, 1), tgt = test::random_tokens(N, 256, 2);
  OverlapRun() { model.init_weights(5); }
  void forward_backward() {
    model.zero_grads();
    model.forward_backward(in.data(), tgt.data(), 1.0 / static_cast<double>(N), 0.0);
  }
  std::vector<float> weights() { return host_f32(*be, model.params().flat_params()); }
};

TEST(OptimizerOverlap, GivesTheSameBitsAsTheUpdateAfterTheBackward) {
  const RunResult off = train("off"), on = train("on");
  EXPECT_EQ(on.losses, off.losses);
  EXPECT_EQ(on.norms, off.norms);
  ASSERT_EQ(on.params.size(), off.params.size());
  EXPECT_EQ(0, std::memcmp(on.params.data(), off.params.data(), on.params.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(on.m.data(), off.m.data(), on.m.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(on.v.data(), off.v.data(), on.v.size() * sizeof(float)));
  // The steps changed the weights at all (the comparison is not of two idle runs).
  EXPECT_NE(OverlapRun().weights(), on.params);
}

// Every parameter is handed over during the backward, exactly once: the
// weights have all moved when the backward returns and step() moves none.
TEST(OptimizerOverlap, TheBackwardHandsOverEveryParameterOnce) {
  OverlapRun r;
  Model& model = r.model;
  Backend* be = r.be.get();
  std::map<std::string, std::vector<float>> before;
  for (const Param& p : model.params().all()) before[p.spec.name] = host_f32(*be, p.w);
  r.opt.begin_overlapped_step(0, 0.0);
  r.forward_backward();
  std::map<std::string, std::vector<float>> after_backward;
  for (const Param& p : model.params().all()) {
    after_backward[p.spec.name] = host_f32(*be, p.w);
    EXPECT_NE(after_backward[p.spec.name], before[p.spec.name]) << p.spec.name << " was not updated in the backward";
  }
  r.opt.step(0, 0.0);
  for (const Param& p : model.params().all())
    EXPECT_EQ(host_f32(*be, p.w), after_backward[p.spec.name]) << p.spec.name << " was updated again by step()";
}

// A step abandoned after its backward (a non-finite loss) keeps the updates
// made, unhooks the model, and the next step begins afresh; step() must be
// called with the arguments the overlapped step began with.
TEST(OptimizerOverlap, AbandonedStepUnhooksTheModel) {
  OverlapRun r;
  r.opt.begin_overlapped_step(0, 0.0);
  r.forward_backward();
  r.opt.abandon_overlapped_step();
  const std::vector<float> after = r.weights();
  r.forward_backward();
  EXPECT_EQ(r.weights(), after) << "the abandoned step's hook still updates";
  r.opt.begin_overlapped_step(1, double(r.N));
  r.forward_backward();
  test::expect_parts(test::error_of([&] { r.opt.step(2, double(r.N)); }), {"finishes the overlapped step", "(1, "});
  r.opt.step(1, double(r.N));
  EXPECT_EQ(r.opt.adam_steps(), 2);
}

TEST(OptimizerOverlap, ModelHandsEachParameterOverOnce) {
  const Config cfg = load_config_string(kToml, "overlap");
  auto be = make_cpu_backend(1);
  Model model(cfg, *be, in_place(cfg));
  model.init_weights(5);
  std::map<const Param*, int> handed;
  model.set_grads_final_hook([&](std::initializer_list<Param*> ps) {
    for (Param* p : ps)
      if (p) ++handed[p];
  });
  const int64_t N = cfg.batch_size * cfg.seq_len;
  const auto in = test::random_tokens(N, 256, 1), tgt = test::random_tokens(N, 256, 2);
  model.forward_backward(in.data(), tgt.data(), 1.0, 0.0);
  for (const Param& p : model.params().all()) EXPECT_EQ(handed[&p], 1) << p.spec.name;
  EXPECT_EQ(handed.size(), model.params().all().size());
  model.set_grads_final_hook(nullptr);
  handed.clear();
  model.forward_backward(in.data(), tgt.data(), 1.0, 0.0);
  EXPECT_TRUE(handed.empty());
}

TEST(OptimizerOverlap, OnIsRefusedWhereTheStepNeedsEveryGradientFirst) {
  ScopedEnv env("NMOE_OPTIMIZER_OVERLAP", "on");
  auto be = make_cpu_backend(1);
  {
    const Config cfg = load_config_string(std::string(kToml) + "grad_clip = 1.0\n", "clip");
    Model model(cfg, *be, in_place(cfg));
    test::expect_parts(test::error_of([&] { Optimizer opt(cfg, model); }),
                       {"NMOE_OPTIMIZER_OVERLAP=on", "grad_clip > 0", "set it to off"});
  }
  {
    const Config cfg = load_config_string(kToml, "exact");
    ModelOptions o = in_place(cfg);
    o.exact_accumulation = true;
    Model model(cfg, *be, o);
    test::expect_parts(test::error_of([&] { Optimizer opt(cfg, model); }),
                       {"NMOE_OPTIMIZER_OVERLAP=on", "exact accumulation"});
  }
  {
    ScopedEnv bad("NMOE_OPTIMIZER_OVERLAP", "sometimes");
    const Config cfg = load_config_string(kToml, "bad");
    Model model(cfg, *be, in_place(cfg));
    test::expect_parts(test::error_of([&] { Optimizer opt(cfg, model); }),
                       {"NMOE_OPTIMIZER_OVERLAP", "auto", "sometimes"});
  }
}

// auto overlaps only on backends that run side work concurrently, not the CPU's.
TEST(OptimizerOverlap, AutoKeepsTheCpuBackendInOrder) {
  ScopedEnv env("NMOE_OPTIMIZER_OVERLAP", nullptr);
  auto be = make_cpu_backend(1);
  const Config cfg = load_config_string(kToml, "auto");
  Model model(cfg, *be, in_place(cfg));
  Optimizer opt(cfg, model);
  EXPECT_FALSE(opt.overlaps_backward());
  EXPECT_THROW(opt.begin_overlapped_step(0, 0.0), Error);
}

}  // namespace
}  // namespace nmoe
