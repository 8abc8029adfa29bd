// Whole model on the CUDA backend vs the CPU backend: same config, weights
// (init_weights with one seed), router biases and batch, F32. One
// forward_backward; loss, expert choice and every parameter's gradient agree.
#include "config/config.h"
#include "gpu_test_util.h"
#include "model_run.h"
#include "model/model.h"

namespace nmoe::gputest {
namespace {

TEST(CudaModel, ForwardBackwardMatchesCpu) {
  NMOE_SKIP_WITHOUT_CUDA();
  for (bool mask_eos : {false, true}) {
    Config cfg = load_config_string(kMoeToml, "gpu_model",
                                    {{"loss_mask_eos", mask_eos ? "true" : "false"}});
    std::vector<int32_t> tok, tgt;
    make_batch(cfg, tok, tgt);
    std::vector<Param> params;
    const ModelRun want = run_model(cpu(), cfg, /*bf16=*/false, tok, tgt, &params);
    const ModelRun got = run_model(gpu(), cfg, /*bf16=*/false, tok, tgt, nullptr);
    EXPECT_NEAR(got.loss, want.loss, 1e-5 * std::abs(want.loss)) << "mask_eos " << mask_eos;
    EXPECT_NEAR(got.aux, want.aux, 1e-5 * std::abs(want.aux) + 1e-12);
    EXPECT_EQ(got.experts, want.experts) << "expert choice differs";
    ASSERT_EQ(got.grads.size(), want.grads.size());
    for (const Param& p : params) {
      const int64_t n = p.spec.shape.numel();
      double diff = 0, norm = 0;
      bool finite = true;
      for (int64_t i = p.offset; i < p.offset + n; ++i) {
        const double a = got.grads[i], b = want.grads[i];
        finite = finite && std::isfinite(a);
        diff += (a - b) * (a - b);
        norm += b * b;
      }
      const double rel = std::sqrt(diff / std::max(norm, 1e-300));
      EXPECT_TRUE(finite) << p.spec.name;
      EXPECT_GT(norm, 0.0) << p.spec.name << " has an all-zero gradient";
      EXPECT_LE(rel, 1e-4) << p.spec.name << " gradient relative error " << rel;
    }
  }
}

}  // namespace
}  // namespace nmoe::gputest
