// Parity with an independent PyTorch implementation (tests/reference/torch_parity.py):
// the same weights and batch give the same loss, gradients and expert choice.
// The fixture is committed; regenerate it with
//   ./build/nmoe_tests --gtest_also_run_disabled_tests --gtest_filter=Parity.DISABLED_WriteInputs
//   python3 tests/reference/torch_parity.py tests/reference/fixtures
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backend/cpu/cpu_backend.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/safetensors.h"
#include "core/fs.h"
#include "model/model.h"
#include "test_util.h"

namespace nmoe {
namespace {

const char* kParityToml = R"(tokenizer = "bytes"
vocab_size = 264
eos_token_id = 256
loss_mask_eos = true
dim = 32
n_layers = 3
n_heads = 4
inter_dim = 48
moe_inter_dim = 16
n_dense_layers = 1
n_routed_experts = 8
n_activated_experts = 3
n_shared_experts = 2
route_scale = 1.3
routed_scaling_factor = 2.0
aux_loss_alpha = 0.02
rope_theta = 10000.0
rms_norm_eps = 1e-5
attn = "sdpa"
seq_len = 16
batch_size = 2
)";

std::string fixture(const std::string& name) { return test::source_dir() + "/tests/reference/fixtures/" + name; }

std::vector<int64_t> dims(const Shape& s) { return std::vector<int64_t>(s.d.begin(), s.d.begin() + s.n); }

TEST(Parity, DISABLED_WriteInputs) {
  auto backend = make_cpu_backend(1);
  Config cfg = load_config_string(kParityToml, "parity");
  ModelOptions o;
  o.dtype = DType::F64;
  o.micro_batch = cfg.batch_size;
  o.seq_len = cfg.seq_len;
  Model m(cfg, *backend, o);
  m.init_weights(2024);
  std::mt19937_64 g(99);
  std::normal_distribution<double> nd(0, 0.02);
  std::vector<std::vector<double>> host;
  safetensors::Writer w;
  for (const Param& p : m.params().all()) {
    host.emplace_back(p.w.numel());
    backend->copy_to_host(host.back().data(), p.w);
    w.add(p.spec.name, DType::F64, dims(p.w.shape), host.back().data());
  }
  for (const auto& [name, t] : m.buffers()) {
    host.emplace_back(t.numel());
    for (auto& x : host.back()) x = nd(g);
    w.add(name, DType::F64, dims(t.shape), host.back().data());
  }
  const int64_t N = cfg.batch_size * cfg.seq_len;
  static auto tok = test::random_tokens(N, 257, 7), tgt = test::random_tokens(N, 257, 8);
  for (int i = 0; i < 4; ++i) tgt[5 * i + 2] = static_cast<int32_t>(cfg.eos_token_id);
  w.add("batch.tokens", DType::I32, {cfg.batch_size, cfg.seq_len}, tok.data());
  w.add("batch.targets", DType::I32, {cfg.batch_size, cfg.seq_len}, tgt.data());
  w.set_metadata("config_toml", kParityToml);
  fs::make_dirs(test::source_dir() + "/tests/reference/fixtures");
  w.write(fixture("parity_inputs.safetensors"), true);
}

void check_parity(DType dtype, double loss_tol, double grad_tol) {
  auto in = safetensors::Reader::open(fixture("parity_inputs.safetensors"));
  auto ex = safetensors::Reader::open(fixture("parity_expected.safetensors"));
  Config cfg = load_config_string(in.metadata().at("config_toml"), "parity");
  auto backend = make_cpu_backend(2);
  ModelOptions o;
  o.dtype = dtype;
  o.micro_batch = cfg.batch_size;
  o.seq_len = cfg.seq_len;
  Model m(cfg, *backend, o);
  load_weights(fixture("parity_inputs.safetensors"), m);

  const int64_t N = cfg.batch_size * cfg.seq_len;
  std::vector<int32_t> tok(N), tgt(N);
  in.read_into("batch.tokens", DType::I32, {cfg.batch_size, cfg.seq_len}, tok.data());
  in.read_into("batch.targets", DType::I32, {cfg.batch_size, cfg.seq_len}, tgt.data());
  const int64_t count = m.count_targets(tgt.data(), N);
  ASSERT_LT(count, N) << "the fixture should mask some EOS targets";
  const double aux_w = cfg.aux_loss_alpha / static_cast<double>(m.shape().n_moe_layers());
  m.zero_grads();
  m.reset_step_stats();
  m.forward_backward(tok.data(), tgt.data(), 1.0 / static_cast<double>(count), aux_w);
  const double loss = m.read_loss_sum() / static_cast<double>(count) + m.read_aux_sum();

  double expected = 0;
  ex.read_into("loss", DType::F64, {1}, &expected);
  EXPECT_LT(std::abs(loss - expected) / std::abs(expected), loss_tol) << loss << " vs " << expected;

  for (int64_t i = 0; i < m.shape().n_moe_layers(); ++i) {
    const int64_t layer = m.shape().n_dense_layers + i;
    std::vector<int32_t> want(N * m.shape().top_k);
    ex.read_into("idx/layers." + std::to_string(layer), DType::I32, {N, m.shape().top_k}, want.data());
    EXPECT_EQ(m.read_expert_indices(i), want) << "expert choice of layer " << layer;
  }

  std::vector<double> all(m.params().numel());
  if (dtype == DType::F64) {
    backend->copy_to_host(all.data(), m.params().flat_grads());
  } else {
    std::vector<float> f(all.size());
    backend->copy_to_host(f.data(), m.params().flat_grads());
    all.assign(f.begin(), f.end());
  }
  for (const Param& p : m.params().all()) {
    const int64_t n = p.w.numel();
    std::vector<double> want(n);
    ex.read_into("grad/" + p.spec.name, DType::F64, dims(p.w.shape), want.data());
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; ++i) {
      num += (all[p.offset + i] - want[i]) * (all[p.offset + i] - want[i]);
      den += want[i] * want[i];
    }
    const double rel = std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
    EXPECT_LT(rel, grad_tol) << p.spec.name << " gradient relative error " << rel;
    EXPECT_GT(den, 0.0) << p.spec.name;
  }
}

TEST(Parity, TorchFloat64MatchesInFloat64) { check_parity(DType::F64, 1e-11, 1e-9); }
// The issue's tolerances for the fp32 reference backend: loss 1e-5, gradients 1e-4.
TEST(Parity, TorchFloat64MatchesInFloat32) { check_parity(DType::F32, 1e-5, 1e-4); }

}  // namespace
}  // namespace nmoe
