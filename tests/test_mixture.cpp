// Mixture loader: smooth weighted round-robin, quotas and passes, world-size
// invariance, exact resume, bad mixture files, and the checks of every source
// at the start of training.
#include <gtest/gtest.h>

#include <sstream>

#include "backend/cpu/cpu_backend.h"
#include "core/fs.h"
#include "data/manifest.h"
#include "data/mixture.h"
#include "data/prep.h"
#include "test_util.h"
#include "train/trainer.h"

namespace nmoe {
namespace {

// Source k holds tokens k*1000 + (0, 1, 2, ...), so every token names its source.
std::string make_mixture(const test::TempDir& d, const std::vector<double>& weights, int64_t total_tokens = 0) {
  std::string toml = total_tokens ? "total_tokens = " + std::to_string(total_tokens) + "\n" : "";
  for (size_t k = 0; k < weights.size(); ++k) {
    std::vector<uint32_t> t(997);
    for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<uint32_t>(k * 1000 + i);
    std::string dir = d / ("src" + std::to_string(k));
    write_npy_tokens(dir + "/s.npy", t.data(), t.size(), DType::U32, false);
    toml += "[[source]]\nname = \"s" + std::to_string(k) + "\"\npath = \"" + dir + "\"\nweight = " +
            std::to_string(weights[k]) + "\n";
  }
  fs::write_file_atomic(d / "mix.toml", toml, false);
  return d / "mix.toml";
}

std::vector<int> sources_of(MixtureLoader& l, int64_t batch, int64_t seq, int steps) {
  std::vector<int> out;
  std::vector<int32_t> buf(batch * (seq + 1));
  for (int s = 0; s < steps; ++s) {
    l.next_batch(batch, 0, 1, buf.data());
    for (int64_t i = 0; i < batch; ++i) out.push_back(buf[i * (seq + 1)] / 1000);
  }
  return out;
}

TEST(Mixture, LargestRemainderQuotas) {
  EXPECT_EQ(mixture_quotas({500000, 500000}, 7), (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(mixture_quotas({750000, 250000}, 10), (std::vector<int64_t>{8, 2}));
  EXPECT_EQ(mixture_quotas({1, 1, 1}, 10), (std::vector<int64_t>{4, 3, 3}));
}

TEST(Mixture, SmoothWeightedRoundRobinInterleaves) {
  test::TempDir d;
  MixtureLoader l(MixtureSpec::load(make_mixture(d, {3, 1})), 4, 5000);
  auto src = sources_of(l, 8, 4, 50);
  EXPECT_EQ(std::vector<int>(src.begin(), src.begin() + 8), (std::vector<int>{0, 0, 1, 0, 0, 0, 1, 0}));
  int ones = 0;
  for (int s : src) ones += s;
  EXPECT_EQ(ones, 100);  // exactly a quarter of 400
}

TEST(Mixture, QuotasAndPasses) {
  test::TempDir d;
  // 40 tokens / seq_len 4 = 10 sequences per pass: quotas 8 and 2.
  MixtureLoader l(MixtureSpec::load(make_mixture(d, {3, 1}, 40)), 4, 5000);
  int wraps = 0;
  l.on_wrap([&](const std::string&) { ++wraps; });
  auto src = sources_of(l, 10, 4, 3);
  for (int p = 0; p < 3; ++p) {
    int ones = 0;
    for (int i = 0; i < 10; ++i) ones += src[p * 10 + i];
    EXPECT_EQ(ones, 2) << "pass " << p;
  }
  EXPECT_EQ(wraps, 2);
}

TEST(Mixture, RankSlicesAndResume) {
  test::TempDir d;
  auto path = make_mixture(d, {2, 1, 1});
  const int64_t seq = 6, batch = 7;
  MixtureLoader whole(MixtureSpec::load(path), seq, 5000);
  std::vector<int32_t> all(batch * (seq + 1));
  whole.next_batch(batch, 0, 1, all.data());
  for (int world : {2, 3}) {
    std::vector<int32_t> joined;
    for (int r = 0; r < world; ++r) {
      MixtureLoader l(MixtureSpec::load(path), seq, 5000);
      std::vector<int32_t> part(TokenLoader::slice_size(batch, r, world) * (seq + 1));
      l.next_batch(batch, r, world, part.data());
      joined.insert(joined.end(), part.begin(), part.end());
      EXPECT_EQ(l.state().dump(), whole.state().dump());
    }
    EXPECT_EQ(joined, all);
  }
  MixtureLoader resumed(MixtureSpec::load(path), seq, 5000);
  resumed.set_state(whole.state());
  std::vector<int32_t> a(all.size()), b(all.size());
  for (int i = 0; i < 40; ++i) {  // long enough to wrap the sources
    whole.next_batch(batch, 0, 1, a.data());
    resumed.next_batch(batch, 0, 1, b.data());
    ASSERT_EQ(a, b) << "batch " << i;
  }
}

TEST(Mixture, BadFilesAreRefused) {
  test::TempDir d;
  auto path = make_mixture(d, {1, 1});
  std::string good = fs::read_file(path);
  auto expect = [&](const std::string& toml, std::initializer_list<std::string> parts) {
    fs::write_file_atomic(d / "bad.toml", toml, false);
    test::expect_parts(test::error_of([&] { MixtureSpec::load(d / "bad.toml"); }), parts);
  };
  expect(good + "seed = 3\n", {"bad.toml", "seed"});
  expect("[[source]]\nname = \"a\"\npath = \"x\"\nweight = 0\n", {"weight > 0"});
  expect("[[source]]\nname = \"a\"\npath = \"x\"\n[[source]]\nname = \"a\"\npath = \"y\"\n", {"duplicate"});
  expect("total_tokens = 5\n", {"no [[source]]"});
  expect("[[source]]\nname = 3\n", {"name"});
  test::expect_parts(test::error_of([&] { MixtureSpec::load(d / "missing.toml"); }),
                     {"mixture_toml", "missing.toml", "does not exist"});
}

// A prepared dataset of byte tokens in dir.
void prep_bytes(const test::TempDir& d, const std::string& dir) {
  std::string jsonl;
  for (int i = 0; i < 20; ++i) jsonl += "{\"text\": \"document " + std::to_string(i) + " of " + dir + "\"}\n";
  fs::write_file_atomic(d / (dir + ".jsonl"), jsonl, false);
  PrepOptions o;
  o.source.source = "jsonl";
  o.source.files = {d / (dir + ".jsonl")};
  o.output = d / dir;
  o.tokenizer = "bytes";
  o.min_tokens = 1;
  o.fsync = false;
  prep_dataset(o);
}

Config mixture_config(const test::TempDir& d, const std::string& mixture) {
  return load_config_string(R"(tokenizer = "bytes"
vocab_size = 264
eos_token_id = 256
dim = 32
n_layers = 2
n_heads = 2
inter_dim = 64
moe_inter_dim = 16
n_dense_layers = 1
n_routed_experts = 4
n_activated_experts = 2
attn = "sdpa"
seq_len = 16
batch_size = 2
steps = 1
warmup_steps = 0
resume = false
fsync = false
)",
                            "mix", {{"mixture_toml", "\"" + mixture + "\""},
                                    {"checkpoint_dir", "\"" + d / "ckpt" + "\""},
                                    {"experiments_db", "\"" + d / "exp.db" + "\""}});
}

TEST(Mixture, TrainingChecksEverySourceAgainstItsManifest) {
  test::TempDir d;
  prep_bytes(d, "a");
  prep_bytes(d, "b");
  std::vector<uint32_t> raw(100, 65);
  write_npy_tokens(d / "raw/s.npy", raw.data(), raw.size(), DType::U16, false);  // no manifest
  fs::write_file_atomic(d / "mix.toml",
                        "[[source]]\nname = \"a\"\npath = \"" + d / "a" + "\"\n[[source]]\nname = \"b\"\npath = \"" +
                            d / "b" + "\"\n[[source]]\nname = \"raw\"\npath = \"" + d / "raw" + "\"\n",
                        false);
  auto backend = make_cpu_backend(1);
  std::ostringstream out;
  TrainOptions opts;
  opts.out = &out;
  opts.metrics = false;
  EXPECT_EQ(train(mixture_config(d, d / "mix.toml"), *backend, opts).steps_done, 1);
  test::expect_parts(out.str(), {"warning: '" + d / "raw" + "'", "no manifest.json", "cannot be checked"});
  EXPECT_EQ(out.str().find("warning: '" + d / "a'"), std::string::npos) << out.str();

  Manifest m = Manifest::read(d / "b");
  m.tokenizer = "gpt2";
  m.write(d / "b", false);
  std::string msg = test::error_of([&] { train(mixture_config(d, d / "mix.toml"), *backend, opts); });
  test::expect_parts(msg, {d / "b/manifest.json", "source 'b'", d / "mix.toml", "gpt2", "tokenizer = \"bytes\""});

  m.tokenizer = "bytes";
  m.write(d / "b", false);
  write_npy_tokens(d / "a/shard_0000/stray.npy", raw.data(), raw.size(), DType::U16, false);
  msg = test::error_of([&] { train(mixture_config(d, d / "mix.toml"), *backend, opts); });
  test::expect_parts(msg, {d / "a/shard_0000/stray.npy", "not listed", "n data verify " + d / "a"});
}

}  // namespace
}  // namespace nmoe
