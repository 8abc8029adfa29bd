// ModelScorer: span NLLs equal the model's own cross-entropy, greedy matches
// agree with the most likely token, and a sequence scores the same whatever
// else shares its batch.
#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"
#include "eval/model_scorer.h"
#include "model/model.h"
#include "test_util.h"

namespace nmoe {
namespace {

const char* kToml = R"(
vocab_size = 264
eos_token_id = 256
tokenizer = "bytes"
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
seq_len = 12
batch_size = 3
)";

struct Fixture {
  std::unique_ptr<Backend> backend = make_cpu_backend(1);
  Config cfg = load_config_string(kToml, "scorer");
  std::unique_ptr<Model> model;
  explicit Fixture(DType dtype) {
    ModelOptions o;
    o.dtype = dtype;
    o.micro_batch = cfg.batch_size;
    o.seq_len = cfg.seq_len;
    model = std::make_unique<Model>(cfg, *backend, o);
    model->init_weights(7);
  }
};

TEST(ModelScorer, SpanNllIsTheModelsCrossEntropy) {
  Fixture f(DType::F64);
  const int64_t T = f.cfg.seq_len, B = f.cfg.batch_size;
  ScoredSequence s;
  s.tokens = test::random_tokens(T, 256, 3);
  s.start = 1;
  s.end = T;
  ModelScorer scorer(*f.model, 256, /*chunk_rows=*/4);  // several chunks
  const SequenceScore got = scorer.score({&s})[0];

  // The same sequence through forward_loss: row 0 predicts its next tokens; padding rows count nothing.
  std::vector<int32_t> tok(B * T, 256), tgt(B * T, -1);
  for (int64_t t = 0; t < T; ++t) tok[t] = s.tokens[t];
  for (int64_t t = 0; t + 1 < T; ++t) tgt[t] = s.tokens[t + 1];
  f.model->reset_step_stats();
  f.model->forward_loss(tok.data(), tgt.data());
  const double expect = f.model->read_loss_sum() / static_cast<double>(T - 1);
  EXPECT_NEAR(got.mean_nll, expect, 1e-12 * expect);
}

TEST(ModelScorer, GreedyMatchIsTheMostLikelyToken) {
  Fixture f(DType::F64);
  ModelScorer scorer(*f.model, 256);
  const std::vector<int32_t> prefix = test::random_tokens(6, 256, 11);
  // Score every possible last token; only the one with the lowest NLL is the greedy choice.
  std::vector<ScoredSequence> seqs(264);
  for (int v = 0; v < 264; ++v) {
    seqs[v].tokens = prefix;
    seqs[v].tokens.push_back(v);
    seqs[v].start = 6;
    seqs[v].end = 7;
  }
  std::vector<SequenceScore> scores;
  for (size_t i = 0; i < seqs.size(); i += 3) {
    std::vector<const ScoredSequence*> batch;
    for (size_t j = i; j < std::min(seqs.size(), i + 3); ++j) batch.push_back(&seqs[j]);
    for (const SequenceScore& s : scorer.score(batch)) scores.push_back(s);
  }
  int best = 0, matches = 0;
  double total_p = 0;
  for (int v = 0; v < 264; ++v) {
    if (scores[v].mean_nll < scores[best].mean_nll) best = v;
    matches += scores[v].greedy_match ? 1 : 0;
    total_p += std::exp(-scores[v].mean_nll);
  }
  EXPECT_EQ(matches, 1);
  EXPECT_TRUE(scores[best].greedy_match);
  EXPECT_NEAR(total_p, 1.0, 1e-9);  // the NLLs are a normalized distribution
}

TEST(ModelScorer, ScoresDoNotDependOnTheRestOfTheBatch) {
  Fixture f(DType::F32);
  ModelScorer scorer(*f.model, 256);
  auto make = [](uint64_t seed, int64_t n, int64_t start) {
    ScoredSequence s;
    s.tokens = test::random_tokens(n, 256, seed);
    s.start = start;
    s.end = n;
    return s;
  };
  const ScoredSequence a = make(1, 9, 4), b = make(2, 12, 1), c = make(3, 5, 2);
  const SequenceScore alone = scorer.score({&a})[0];
  const auto together = scorer.score({&b, &c, &a});
  EXPECT_EQ(alone.mean_nll, together[2].mean_nll);
  EXPECT_EQ(alone.greedy_match, together[2].greedy_match);
  ScoredSequence too_long = make(4, 13, 1);
  test::expect_parts(test::error_of([&] { scorer.score({&too_long}); }), {"bad sequence", "13 tokens"});
  test::expect_parts(test::error_of([&] { scorer.score({&a, &a, &a, &a}); }), {"4 sequences exceed the batch of 3"});
}

}  // namespace
}  // namespace nmoe
