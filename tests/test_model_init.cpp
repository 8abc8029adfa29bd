// Initialization: the reference's scheme (std per tensor kind and depth), and
// expert weights that depend only on the global expert id, so a model is the
// same whatever number of ranks holds its experts.
#include <gtest/gtest.h>

#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "model/model.h"

namespace nmoe {
namespace {

const char* kToml = R"(tokenizer = "bytes"
vocab_size = 264
eos_token_id = 256
dim = 64
n_layers = 3
n_heads = 4
inter_dim = 128
moe_inter_dim = 64
n_dense_layers = 1
n_routed_experts = 8
n_activated_experts = 2
n_shared_experts = 1
attn = "sdpa"
seq_len = 8
batch_size = 2
)";

std::vector<float> host(Backend& b, const Tensor& t) {
  std::vector<float> v(t.numel());
  b.copy_to_host(v.data(), t);
  return v;
}

double stddev(const std::vector<float>& v) {
  double s = 0, s2 = 0;
  for (float x : v) {
    s += x;
    s2 += static_cast<double>(x) * x;
  }
  double m = s / v.size();
  return std::sqrt(s2 / v.size() - m * m);
}

TEST(ModelInit, StandardDeviationsFollowTheScheme) {
  auto b = make_cpu_backend(1);
  Config cfg = load_config_string(kToml, "init");
  ModelOptions o;
  o.micro_batch = 2;
  o.seq_len = 8;
  Model m(cfg, *b, o);
  m.init_weights(42);
  auto near = [](double got, double want) { EXPECT_NEAR(got, want, 0.06 * want) << got << " vs " << want; };
  near(stddev(host(*b, m.params().find("embedding.weight")->w)), 0.02);
  near(stddev(host(*b, m.params().find("lm_head.weight")->w)), 1.0 / 8.0);
  near(stddev(host(*b, m.params().find("layers.0.attn.wqkv.weight")->w)), 0.02);
  near(stddev(host(*b, m.params().find("layers.2.attn.wo.weight")->w)), 0.02 / std::sqrt(6.0));
  near(stddev(host(*b, m.params().find("layers.0.mlp.w2.weight")->w)), 0.02 / std::sqrt(2.0));
  near(stddev(host(*b, m.params().find("layers.1.moe.experts.w13")->w)), 0.02 / std::sqrt(4.0));
  near(stddev(host(*b, m.params().find("layers.1.moe.router.weight")->w)), 0.02 / std::sqrt(4.0));
  near(stddev(host(*b, m.params().find("layers.1.moe.shared.w13.weight")->w)), 0.02);
  for (float x : host(*b, m.params().find("layers.1.ffn_norm.weight")->w)) EXPECT_EQ(x, 1.0f);
  // Different tensors draw different numbers.
  EXPECT_NE(host(*b, m.params().find("layers.1.attn.wqkv.weight")->w)[0],
            host(*b, m.params().find("layers.2.attn.wqkv.weight")->w)[0]);
}

TEST(ModelInit, ExpertWeightsDependOnlyOnTheGlobalExpertId) {
  auto b = make_cpu_backend(1);
  Config cfg = load_config_string(kToml, "init");
  ModelOptions o;
  o.micro_batch = 2;
  o.seq_len = 8;
  Model whole(cfg, *b, o);
  whole.init_weights(7);
  auto all = host(*b, whole.params().find("layers.2.moe.experts.w2")->w);
  const size_t per = all.size() / 8;
  for (int world : {2, 4, 8})
    for (int rank = 0; rank < world; ++rank) {
      ModelOptions os = o;
      os.world = world;
      os.rank = rank;
      Config c = cfg;
      c.world_size = world;
      Model shard(c, *b, os);
      shard.init_weights(7);
      auto part = host(*b, shard.params().find("layers.2.moe.experts.w2")->w);
      ASSERT_EQ(part.size(), all.size() / world);
      for (size_t i = 0; i < part.size(); ++i)
        ASSERT_EQ(part[i], all[rank * (8 / world) * per + i]) << "world " << world << " rank " << rank;
      // Dense weights are replicated identically.
      EXPECT_EQ(host(*b, shard.params().find("embedding.weight")->w),
                host(*b, whole.params().find("embedding.weight")->w));
    }
}

}  // namespace
}  // namespace nmoe
