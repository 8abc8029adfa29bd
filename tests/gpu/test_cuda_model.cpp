// Whole model on the CUDA backend vs the CPU backend: same config, weights
// (init_weights with one seed), router biases and batch, F32. One
// forward_backward; loss, expert choice and every parameter's gradient agree.
#include "config/config.h"
#include "gpu_test_util.h"
#include "model/model.h"

namespace nmoe::gputest {
namespace {

// One dense layer then two MoE layers (8 experts top-2, a shared expert), aux loss.
const char* kMoeToml = R"(
vocab_size = 264
eos_token_id = 256
tokenizer = "bytes"
dim = 64
n_layers = 3
n_heads = 2
inter_dim = 96
moe_inter_dim = 32
n_dense_layers = 1
n_routed_experts = 8
n_activated_experts = 2
n_shared_experts = 1
route_scale = 1.7
routed_scaling_factor = 2.5
aux_loss_alpha = 0.05
attn = "sdpa"
seq_len = 40
batch_size = 2
)";

struct ModelRun {
  double loss = 0, aux = 0;
  std::vector<float> grads;
  std::vector<std::vector<int32_t>> experts;
};

ModelRun run_model(Backend& be, const Config& cfg, const std::vector<int32_t>& tok,
              const std::vector<int32_t>& tgt, std::vector<Param>* params_out) {
  ModelOptions o;
  o.dtype = DType::F32;
  o.micro_batch = cfg.batch_size;
  o.seq_len = cfg.seq_len;
  o.ce_chunk_rows = 24;  // several chunks, the last one partial
  Model m(cfg, be, o);
  m.init_weights(1234);
  for (auto& [name, t] : m.buffers()) {  // random router biases so the choice uses them
    std::mt19937_64 g(99);
    std::normal_distribution<float> d(0, 0.05f);
    std::vector<float> b(t.numel());
    for (auto& x : b) x = d(g);
    be.copy_from_host(t, b.data());
  }
  const int64_t n_moe = m.shape().n_moe_layers();
  const double aux_w = cfg.aux_loss_alpha / static_cast<double>(n_moe);
  const int64_t count = m.count_targets(tgt.data(), static_cast<int64_t>(tgt.size()));
  m.zero_grads();
  m.reset_step_stats();
  m.forward_backward(tok.data(), tgt.data(), 1.0 / static_cast<double>(count), aux_w);
  ModelRun r;
  r.loss = m.read_loss_sum() / static_cast<double>(count);
  r.aux = m.read_aux_sum();
  r.grads.resize(m.params().numel());
  be.copy_to_host(r.grads.data(), m.params().flat_grads());
  for (int64_t l = 0; l < n_moe; ++l) r.experts.push_back(m.read_expert_indices(l));
  if (params_out)
    for (const Param& p : m.params().all()) params_out->push_back(p);
  return r;
}

TEST(CudaModel, ForwardBackwardMatchesCpu) {
  NMOE_SKIP_WITHOUT_CUDA();
  for (bool mask_eos : {false, true}) {
    Config cfg = load_config_string(kMoeToml, "gpu_model",
                                    {{"loss_mask_eos", mask_eos ? "true" : "false"}});
    const int64_t N = cfg.batch_size * cfg.seq_len;
    std::mt19937_64 g(7);
    std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(cfg.vocab_size) - 1);
    std::vector<int32_t> tok(N), tgt(N);
    for (auto& t : tok) t = d(g);
    for (auto& t : tgt) t = d(g);
    for (int64_t i = 3; i < N; i += 11) tgt[i] = static_cast<int32_t>(cfg.eos_token_id);
    std::vector<Param> params;
    const ModelRun want = run_model(cpu(), cfg, tok, tgt, &params);
    const ModelRun got = run_model(gpu(), cfg, tok, tgt, nullptr);
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
