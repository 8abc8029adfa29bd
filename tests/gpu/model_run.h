// The whole-model GPU checks' shared pieces: a small MoE config (one dense
// layer, two MoE layers with 8 experts top-2, a shared expert, aux loss), a
// batch with masked EOS targets, and one forward_backward on a backend with
// fixed weights and random router biases.
#pragma once

#include <cstring>
#include <random>
#include <vector>

#include "config/config.h"
#include "gpu_test_util.h"
#include "model/model.h"

namespace nmoe::gputest {

inline const char* const kMoeToml = R"(
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

// Every gradient as F32 in flat order (BF16 expert gradients widened).
inline std::vector<float> read_grads(Backend& be, const ParamStore& ps) {
  std::vector<float> out(ps.numel());
  int64_t at = 0;
  for (const Tensor& buf : ps.grad_buffers()) {
    if (buf.dtype == DType::F32) {
      be.copy_to_host(out.data() + at, buf);
    } else {
      std::vector<uint16_t> bits(buf.numel());
      be.copy_to_host(bits.data(), buf);
      for (size_t i = 0; i < bits.size(); ++i) {
        const uint32_t w = uint32_t(bits[i]) << 16;
        std::memcpy(&out[at + i], &w, 4);
      }
    }
    at += buf.numel();
  }
  return out;
}

inline ModelRun run_model(Backend& be, const Config& cfg, bool bf16, const std::vector<int32_t>& tok,
                   const std::vector<int32_t>& tgt, std::vector<Param>* params_out,
                   DType expert_grads = DType::F32) {
  ModelOptions o;
  o.dtype = DType::F32;
  if (bf16) o.compute_dtype = DType::BF16;
  o.expert_grad_dtype = expert_grads;
  o.exact_accumulation = false;  // as the trainer on a GPU: the gates' gradient from the activations
  o.micro_batch = cfg.batch_size;
  o.seq_len = cfg.seq_len;
  o.ce_chunk_rows = 24;
  Model m(cfg, be, o);
  m.init_weights(1234);
  for (auto& [name, t] : m.buffers()) {
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
  r.grads = read_grads(be, m.params());
  for (int64_t l = 0; l < n_moe; ++l) r.experts.push_back(m.read_expert_indices(l));
  if (params_out)
    for (const Param& p : m.params().all()) params_out->push_back(p);
  return r;
}

inline void make_batch(const Config& cfg, std::vector<int32_t>& tok, std::vector<int32_t>& tgt) {
  const int64_t N = cfg.batch_size * cfg.seq_len;
  std::mt19937_64 g(7);
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(cfg.vocab_size) - 1);
  tok.resize(N);
  tgt.resize(N);
  for (auto& t : tok) t = d(g);
  for (auto& t : tgt) t = d(g);
  for (int64_t i = 3; i < N; i += 11) tgt[i] = static_cast<int32_t>(cfg.eos_token_id);
}

}  // namespace nmoe::gputest
