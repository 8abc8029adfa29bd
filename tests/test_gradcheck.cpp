// Whole-model gradient check: every parameter tensor's analytic gradient
// against central finite differences of the loss, in fp64, for a dense and an
// MoE model. The router's top-k choice is held fixed during the check.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "backend/cpu/cpu_backend.h"
#include "model/model.h"
#include "test_util.h"

namespace nmoe {
namespace {

const char* kDenseToml = R"(
vocab_size = 264
eos_token_id = 256
tokenizer = "bytes"
dim = 16
n_layers = 2
n_heads = 2
inter_dim = 24
n_dense_layers = 2
attn = "sdpa"
seq_len = 8
batch_size = 2
rope_theta = 10000.0
)";

// Three layers: one dense, two MoE; shared expert; non-unit route scales; aux loss.
const char* kMoeToml = R"(
vocab_size = 264
eos_token_id = 256
tokenizer = "bytes"
dim = 16
n_layers = 3
n_heads = 2
inter_dim = 24
moe_inter_dim = 8
n_dense_layers = 1
n_routed_experts = 6
n_activated_experts = 2
n_shared_experts = 1
route_scale = 1.7
routed_scaling_factor = 2.5
aux_loss_alpha = 0.05
attn = "sdpa"
seq_len = 8
batch_size = 2
)";

// Loss of one micro-batch including the aux term, as the trainer computes it.
double eval_loss(Model& m, const std::vector<int32_t>& tok, const std::vector<int32_t>& tgt, double aux_w) {
  const int64_t count = m.count_targets(tgt.data(), static_cast<int64_t>(tgt.size()));
  m.reset_step_stats();
  m.forward_backward(tok.data(), tgt.data(), 1.0 / static_cast<double>(count), aux_w);
  return m.read_loss_sum() / static_cast<double>(count) + m.read_aux_sum();
}

// exact: the rank-count independent accumulation (the CPU default), whose MoE
// backward takes the gates' gradient from the kept expert outputs; otherwise
// from the SwiGLU activations (moe_gate_grad), as the GPU does.
void gradcheck(const char* toml, bool mask_eos, uint64_t seed, bool exact = true) {
  // One thread: thousands of tiny forward/backward passes, where a thread team
  // only adds barriers (threaded ops are checked elsewhere).
  auto backend = make_cpu_backend(1);
  Config cfg = load_config_string(toml, "gradcheck", {{"loss_mask_eos", mask_eos ? "true" : "false"}});
  ModelOptions o;
  o.dtype = DType::F64;
  o.micro_batch = cfg.batch_size;
  o.seq_len = cfg.seq_len;
  o.ce_chunk_rows = 5;  // several chunks, last one partial
  o.exact_accumulation = exact;
  Model m(cfg, *backend, o);
  m.init_weights(seed);
  // Random router biases so the selection uses them.
  for (auto& [name, t] : m.buffers()) {
    std::mt19937_64 g(seed + 7);
    std::normal_distribution<double> d(0, 0.05);
    std::vector<double> b(t.numel());
    for (auto& x : b) x = d(g);
    backend->copy_from_host(t, b.data());
  }
  const int64_t N = cfg.batch_size * cfg.seq_len;
  auto tok = test::random_tokens(N, static_cast<int32_t>(cfg.vocab_size), seed + 1);
  auto tgt = test::random_tokens(N, static_cast<int32_t>(cfg.vocab_size), seed + 2);
  tgt[1] = static_cast<int32_t>(cfg.eos_token_id);  // exercise the EOS mask
  tgt[5] = static_cast<int32_t>(cfg.eos_token_id);
  const int64_t n_moe = m.shape().n_moe_layers();
  const double aux_w = cfg.aux_loss_alpha > 0 && n_moe > 0 ? cfg.aux_loss_alpha / static_cast<double>(n_moe) : 0.0;

  m.zero_grads();
  eval_loss(m, tok, tgt, aux_w);
  // Every later evaluation also accumulates gradients: keep the analytic ones now.
  std::vector<double> all_grads(m.params().numel());
  backend->copy_to_host(all_grads.data(), m.params().flat_grads());
  m.set_frozen_routing(true);
  std::mt19937_64 pick(seed + 3);
  const double h = 5e-4;
  for (Param& p : m.params().all()) {
    const int64_t n = p.w.numel();
    std::vector<double> grad(all_grads.begin() + p.offset, all_grads.begin() + p.offset + n), w(n);
    backend->copy_to_host(w.data(), p.w);
    std::vector<int64_t> idx;
    if (n <= 48) {
      for (int64_t i = 0; i < n; ++i) idx.push_back(i);
    } else {
      std::uniform_int_distribution<int64_t> d(0, n - 1);
      for (int i = 0; i < 48; ++i) idx.push_back(d(pick));
    }
    double num = 0, den_fd = 0, den_an = 0;
    for (int64_t i : idx) {
      const double w0 = w[i];
      auto loss_at = [&](double delta) {
        w[i] = w0 + delta;
        backend->copy_from_host(p.w, w.data());
        return eval_loss(m, tok, tgt, aux_w);
      };
      // Fourth-order central difference: truncation O(h^4) lets h be large
      // enough that rounding in the loss stays far below the tolerance.
      const double fd = (8 * (loss_at(h) - loss_at(-h)) - (loss_at(2 * h) - loss_at(-2 * h))) / (12 * h);
      w[i] = w0;
      backend->copy_from_host(p.w, w.data());
      num += (fd - grad[i]) * (fd - grad[i]);
      den_fd += fd * fd;
      den_an += grad[i] * grad[i];
    }
    const double rel = std::sqrt(num) / std::max({std::sqrt(den_fd), std::sqrt(den_an), 1e-30});
    if (std::getenv("NMOE_GRADCHECK_VERBOSE")) std::printf("%-32s rel %.3g |g| %.3g\n", p.spec.name.c_str(), rel, std::sqrt(den_an));
    EXPECT_LT(rel, 1e-6) << p.spec.name << " relative error " << rel << " (|grad| " << std::sqrt(den_an) << ")";
    EXPECT_GT(den_an, 0.0) << p.spec.name << " has an all-zero gradient";
  }
}

TEST(GradCheck, DenseModelFp64) { gradcheck(kDenseToml, false, 11); }
TEST(GradCheck, DenseModelMaskedEos) { gradcheck(kDenseToml, true, 12); }
TEST(GradCheck, MoeModelFp64) { gradcheck(kMoeToml, false, 13); }
TEST(GradCheck, MoeModelMaskedEos) { gradcheck(kMoeToml, true, 14); }
TEST(GradCheck, MoeModelGateGradientFromActivations) { gradcheck(kMoeToml, false, 15, false); }

// Gradient accumulation: micro-batches give the gradients of one full batch.
TEST(GradCheck, MicroBatchesMatchFullBatchWithoutAux) {
  auto backend = make_cpu_backend(2);
  Config cfg = load_config_string(kMoeToml, "accum", {{"batch_size", "4"}, {"aux_loss_alpha", "0.0"}});
  const int64_t T = cfg.seq_len, N = 4 * T;
  auto tok = test::random_tokens(N, static_cast<int32_t>(cfg.vocab_size), 5);
  auto tgt = test::random_tokens(N, static_cast<int32_t>(cfg.vocab_size), 6);
  auto grads_with = [&](int64_t micro, double* loss) {
    ModelOptions o;
    o.dtype = DType::F64;
    o.micro_batch = micro;
    o.seq_len = T;
    Model m(cfg, *backend, o);
    m.init_weights(3);
    m.zero_grads();
    m.reset_step_stats();
    const int64_t count = m.count_targets(tgt.data(), N);
    for (int64_t s = 0; s < 4 / micro; ++s)
      m.forward_backward(tok.data() + s * micro * T, tgt.data() + s * micro * T, 1.0 / count, 0.0);
    *loss = m.read_loss_sum() / count;
    std::vector<double> g(m.params().numel());
    backend->copy_to_host(g.data(), m.params().flat_grads());
    return g;
  };
  double la = 0, lb = 0;
  auto a = grads_with(4, &la), b = grads_with(1, &lb);
  EXPECT_NEAR(la, lb, 1e-12 * std::abs(la));
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-12 + 1e-10 * std::abs(a[i])) << i;
}

}  // namespace
}  // namespace nmoe

namespace nmoe {
namespace {

// Recomputing attention in backward gives bit-identical loss and gradients
// with fewer activation bytes.
TEST(Recompute, AttentionRecomputeIsBitIdentical) {
  auto backend = make_cpu_backend(2);
  Config cfg = load_config_string(kMoeToml, "recompute");
  const int64_t N = cfg.batch_size * cfg.seq_len;
  auto tok = test::random_tokens(N, static_cast<int32_t>(cfg.vocab_size), 21);
  auto tgt = test::random_tokens(N, static_cast<int32_t>(cfg.vocab_size), 22);
  auto run = [&](bool recompute, double* loss, size_t* act_bytes) {
    ModelOptions o;
    o.micro_batch = cfg.batch_size;
    o.seq_len = cfg.seq_len;
    o.recompute_attention = recompute;
    Model m(cfg, *backend, o);
    m.init_weights(5);
    m.zero_grads();
    m.reset_step_stats();
    m.forward_backward(tok.data(), tgt.data(), 1.0 / N, 0.01);
    *loss = m.read_loss_sum();
    *act_bytes = m.memory_plan().activations;
    std::vector<float> g(m.params().numel());
    backend->copy_to_host(g.data(), m.params().flat_grads());
    return g;
  };
  double la = 0, lb = 0;
  size_t ba = 0, bb = 0;
  auto a = run(false, &la, &ba), b = run(true, &lb, &bb);
  EXPECT_EQ(la, lb);
  EXPECT_TRUE(a == b);
  EXPECT_LT(bb, ba);
}

}  // namespace
}  // namespace nmoe
