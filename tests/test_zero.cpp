// ZeRO-1 for the replicated ("dense") parameters: each rank holds the AdamW
// moments of its experts and of one contiguous shard of the dense range,
// updates only those, and the ranks all-gather the updated dense parameters
// through peer memory. Checkpoints still hold whole tensors, so they are the
// same bytes at any rank count (the bit-identity and resume tests of
// test_expert_parallel.cpp cover the MoE models).
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <regex>
#include <thread>

#include "backend/cpu/cpu_backend.h"
#include "core/fs.h"
#include "core/sha256.h"
#include "data/npy.h"
#include "dist/abort.h"
#include "dist/comm.h"
#include "dist/peer_memory.h"
#include "dist/rendezvous.h"
#include "dist/shm_group.h"
#include "dist/tcp.h"
#include "metrics/metrics_db.h"
#include "model/params.h"
#include "test_util.h"
#include "dist_test_util.h"
#include "shard_test_util.h"

namespace nmoe {
namespace {

using test::on_threads;
using test::write_byte_shards;

DistEnv env_for(int rank, int world, int port) { return test::rank_env(rank, world, port, "zero-test-" + std::to_string(port)); }

namespace sfs = std::filesystem;

// ---------------------------------------------------------------- ParamStore

void build_store(Backend& be, ParamStore& ps, int rank, int world) {
  ParamSpec ex{"experts.w", Shape{4, 10, 3}, ParamGroup::Expert};
  ex.per_expert = true;
  ps.add(ex);
  ps.add({"router.w", Shape{4, 10}, ParamGroup::Router});
  ps.add({"a.weight", Shape{100, 7}, ParamGroup::DenseDecay});
  ps.add({"b.weight", Shape{33}, ParamGroup::DenseNoDecay});
  ps.add({"c.weight", Shape{300, 5}, ParamGroup::DenseNoDecay});
  if (world > 1) ps.set_moment_shard(rank, world);
  ps.allocate(be, DType::F32, DType::F32);
}

TEST(ZeroParamStore, OneRankHoldsEveryMoment) {
  auto be = make_cpu_backend(1);
  ParamStore ps;
  build_store(*be, ps, 0, 1);
  EXPECT_FALSE(ps.moments_sharded());
  EXPECT_EQ(ps.optimizer_bytes(), 2 * ps.numel() * sizeof(float));
  EXPECT_EQ(ps.shard_bounds(), (std::vector<int64_t>{ps.group(ParamGroup::Expert).end, ps.numel()}));
  for (int g = 0; g < kNumParamGroups; ++g) {
    const GroupRange own = ps.owned(static_cast<ParamGroup>(g)), all = ps.group(static_cast<ParamGroup>(g));
    EXPECT_EQ(own.begin, all.begin);
    EXPECT_EQ(own.end, all.end);
  }
  for (const Param& p : ps.all()) {
    EXPECT_EQ(ps.m(p.offset, p.offset + 1).data, ps.all_m().ptr<float>() + p.offset) << p.spec.name;
    EXPECT_EQ(ps.v(p.offset, p.offset + 1).data, ps.all_v().ptr<float>() + p.offset) << p.spec.name;
  }
}

TEST(ZeroParamStore, RanksShareTheDenseMoments) {
  auto be = make_cpu_backend(1);
  for (int W : {2, 3, 4}) {
    std::vector<std::unique_ptr<ParamStore>> stores;
    for (int r = 0; r < W; ++r) {
      stores.push_back(std::make_unique<ParamStore>());
      build_store(*be, *stores.back(), r, W);
    }
    const ParamStore& first = *stores[0];
    const GroupRange dense = first.dense_range(), ex = first.group(ParamGroup::Expert);
    const std::vector<int64_t>& b = first.shard_bounds();
    ASSERT_EQ(b.size(), size_t(W + 1));
    EXPECT_EQ(b.front(), dense.begin);
    EXPECT_EQ(b.back(), first.numel());
    int64_t dense_moments = 0;
    for (int r = 0; r < W; ++r) {
      const ParamStore& ps = *stores[r];
      SCOPED_TRACE("rank " + std::to_string(r) + " of " + std::to_string(W));
      EXPECT_TRUE(ps.moments_sharded());
      EXPECT_EQ(ps.shard_bounds(), b);
      EXPECT_EQ(b[r] % 64, 0);
      EXPECT_LE(b[r], b[r + 1]);
      EXPECT_LE(b[r + 1] - b[r], dense.size() / W + 64);  // as even as the 64-element blocks allow
      EXPECT_EQ(ps.shard().begin, b[r]);
      EXPECT_EQ(ps.shard().end, b[r + 1]);
      EXPECT_EQ(ps.optimizer_bytes(), 2 * (ex.size() + b[r + 1] - b[r]) * sizeof(float));
      dense_moments += b[r + 1] - b[r];
      // Experts first, then the shard, in the moment buffers.
      EXPECT_EQ(ps.m(0, ex.size()).data, ps.all_m().data);
      if (b[r] < b[r + 1]) {
        EXPECT_EQ(ps.m(b[r], b[r + 1]).data, ps.all_m().ptr<float>() + ex.size());
        EXPECT_EQ(ps.v(b[r + 1] - 1, b[r + 1]).data, ps.all_v().ptr<float>() + ex.size() + (b[r + 1] - b[r]) - 1);
      }
      // Moments outside the shard are not held.
      if (r > 0) {
        EXPECT_FALSE(ps.holds_moments(b[r] - 1, b[r]));
        EXPECT_THROW(ps.m(b[r] - 1, b[r]), Error);
      }
      if (r + 1 < W) {
        EXPECT_THROW(ps.v(b[r + 1], b[r + 1] + 1), Error);
      }
      for (ParamGroup g : {ParamGroup::Router, ParamGroup::DenseDecay, ParamGroup::DenseNoDecay}) {
        const GroupRange own = ps.owned(g);
        EXPECT_TRUE(own.size() == 0 || (own.begin >= b[r] && own.end <= b[r + 1]));
        EXPECT_TRUE(own.size() == 0 || (own.begin >= ps.group(g).begin && own.end <= ps.group(g).end));
      }
      EXPECT_EQ(ps.owned(ParamGroup::Expert).size(), ex.size());
    }
    EXPECT_EQ(dense_moments, dense.size());
    // Every dense group is updated exactly once over the ranks.
    for (ParamGroup g : {ParamGroup::Router, ParamGroup::DenseDecay, ParamGroup::DenseNoDecay}) {
      int64_t n = 0;
      for (const auto& ps : stores) n += ps->owned(g).size();
      EXPECT_EQ(n, first.group(g).size()) << param_group_name(g) << " at " << W << " ranks";
    }
  }
}

// ---------------------------------------------------------- peer all-gather

TEST(ZeroAllGather, EveryRankGetsEverySliceThroughSmallStaging) {
  reset_dist_failure();
  const int W = 3, port = tcp::free_port();
  const size_t staging = 8192;  // 4 KiB per round: 1024 floats, 512 doubles
  const int64_t n = 7100;
  // Uneven slices, one empty; elements outside every slice stay untouched.
  const std::vector<int64_t> bounds = {64, 2564, 2564, 7000};
  const std::vector<int64_t> dbounds = {0, 1000, 1001, 1700};
  auto value = [](int64_t i) { return static_cast<float>(i) * 0.5f + 1.0f; };
  std::vector<std::vector<float>> got(W);
  std::vector<std::vector<double>> got_d(W), sums(W);
  auto errors = on_threads(W, [&](int r) {
    Rendezvous rv(env_for(r, W, port), 30);
    ShmGroup g(env_for(r, W, port).job_id, r, W, staging, [&rv] { rv.barrier(); });
    auto pm = make_host_peer_memory(g, 0, staging);
    auto comm = make_peer_comm(rv, g, *pm, 0, staging);
    std::vector<float>& x = got[r];
    x.assign(n, -1.0f);
    for (int64_t i = bounds[r]; i < bounds[r + 1]; ++i) x[i] = value(i);
    comm->all_gather(Tensor(x.data(), DType::F32, Shape{n}), bounds, "test floats");
    // A reduction in between uses the same staging areas.
    sums[r].assign(3000, r + 1.0);
    comm->all_reduce_sum(Tensor(sums[r].data(), DType::F64, Shape{3000}), "test sum");
    std::vector<double>& d = got_d[r];
    d.assign(1700, 0.0);
    for (int64_t i = dbounds[r]; i < dbounds[r + 1]; ++i) d[i] = 1.0 / (1.0 + static_cast<double>(i));
    comm->all_gather(Tensor(d.data(), DType::F64, Shape{1700}), dbounds, "test doubles");
  });
  for (int r = 0; r < W; ++r) {
    ASSERT_EQ(errors[r], "") << "rank " << r;
    for (int64_t i = 0; i < n; ++i) {
      const float want = i >= bounds.front() && i < bounds.back() ? value(i) : -1.0f;
      ASSERT_EQ(got[r][i], want) << "rank " << r << " element " << i;
    }
    for (int64_t i = 0; i < 1700; ++i) ASSERT_EQ(got_d[r][i], 1.0 / (1.0 + static_cast<double>(i))) << i;
    for (double s : sums[r]) ASSERT_EQ(s, 6.0);
  }
  EXPECT_FALSE(dist_failed()) << dist_failure_message();
}

// ------------------------------------------------------------ training runs

// No experts: every parameter is replicated, so every moment is sharded.
const char* kDense = R"(
tokenizer = "bytes"
vocab_size = 264
eos_token_id = 256
dim = 32
n_layers = 2
n_heads = 2
inter_dim = 64
attn = "sdpa"
seq_len = 32
batch_size = 8
micro_batch_size = 1
threads = 1
device = "cpu"
lr_dense = 3e-3
warmup_steps = 2
hold_tokens = 1024
decay_tokens = 1024
decay_floor = 1e-4
grad_clip = 1.0
log_every = 1
checkpoint_every = 2
checkpoint_keep_last_n = 5
fsync = false
)";

struct TrainRun {
  int exit_code = -1;
  std::string output;
  std::vector<double> losses;
};

TrainRun train(const std::string& dir, int world, int steps, const std::string& extra = "",
          const std::string& run_id = "r") {
  fs::write_file_atomic(dir + "/cfg.toml", kDense, false);
  std::string cmd = "cd " + dir + " && NMOE_RUN=" + run_id + " " + test::n_binary() + " train cfg.toml --nproc " +
                    std::to_string(world) + " --set steps=" + std::to_string(steps) +
                    " --set data_path='\"data\"' --set checkpoint_dir='\"ckpt\"' --set experiments_db='\"exp.db\"' " +
                    extra;
  auto r = test::run_command(cmd);
  TrainRun out{r.exit_code, r.output, {}};
  if (sfs::exists(dir + "/exp.db"))
    for (const auto& m : MetricsDB::open(dir + "/exp.db").metrics(run_id, "train/loss")) out.losses.push_back(m.value);
  return out;
}

// The "optimizer" line of the memory plan rank 0 prints, in bytes.
double optimizer_bytes(const std::string& output) {
  std::smatch m;
  if (!std::regex_search(output, m, std::regex(R"(optimizer\s*:\s*([0-9.]+) (B|KiB|MiB|GiB))"))) return -1;
  const double x = std::stod(m[1]);
  const std::string unit = m[2];
  return unit == "B" ? x : unit == "KiB" ? x * 1024 : unit == "MiB" ? x * 1024 * 1024 : x * 1024 * 1024 * 1024;
}

TEST(ZeroTrain, DenseOptimizerStateIsShardedAndTrainingIsBitIdentical) {
  std::vector<TrainRun> runs;
  std::vector<std::string> model, optim;
  std::vector<std::unique_ptr<test::TempDir>> dirs;
  for (int W : {1, 2, 4}) {
    dirs.push_back(std::make_unique<test::TempDir>());
    const std::string d = dirs.back()->path;
    write_byte_shards(d + "/data");
    runs.push_back(train(d, W, 4));
    ASSERT_EQ(runs.back().exit_code, 0) << runs.back().output;
    ASSERT_EQ(runs.back().losses.size(), 4u) << runs.back().output;
    model.push_back(sha256_file_hex(d + "/ckpt/step_00000004/model.safetensors"));
    optim.push_back(sha256_file_hex(d + "/ckpt/step_00000004/optimizer.safetensors"));
  }
  const double one = optimizer_bytes(runs[0].output);
  ASSERT_GT(one, 0) << runs[0].output;
  // Rank 0 holds its shard: half and a quarter of the moments, up to a 64-element block.
  EXPECT_LT(optimizer_bytes(runs[1].output), 0.51 * one) << runs[1].output;
  EXPECT_LT(optimizer_bytes(runs[2].output), 0.26 * one) << runs[2].output;
  for (size_t i = 1; i < runs.size(); ++i) {
    for (size_t s = 0; s < 4; ++s)
      EXPECT_EQ(runs[i].losses[s], runs[0].losses[s]) << "world " << (1 << i) << " step " << s + 1;
    EXPECT_EQ(model[i], model[0]) << "weights differ at world " << (1 << i);
    EXPECT_EQ(optim[i], optim[0]) << "optimizer state differs at world " << (1 << i);
  }
  EXPECT_LT(runs[0].losses[3], runs[0].losses[0]);
}

TEST(ZeroTrain, ShardedMomentsResumeOnAnotherRankCount) {
  test::TempDir full;
  write_byte_shards(full.path + "/data");
  TrainRun ref = train(full.path, 1, 4);
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  ASSERT_EQ(ref.losses.size(), 4u);

  for (auto [from, to] : {std::pair<int, int>{4, 2}, {1, 4}}) {
    SCOPED_TRACE("written by " + std::to_string(from) + ", resumed on " + std::to_string(to));
    test::TempDir d;
    write_byte_shards(d.path + "/data");
    TrainRun a = train(d.path, from, 2);
    ASSERT_EQ(a.exit_code, 0) << a.output;
    sfs::remove(d.path + "/exp.db");
    TrainRun b = train(d.path, to, 4, "--set resume=true", "resumed");
    ASSERT_EQ(b.exit_code, 0) << b.output;
    ASSERT_EQ(b.losses.size(), 2u) << b.output;
    EXPECT_EQ(b.losses[0], ref.losses[2]);
    EXPECT_EQ(b.losses[1], ref.losses[3]);
    EXPECT_EQ(sha256_file_hex(d.path + "/ckpt/step_00000004/optimizer.safetensors"),
              sha256_file_hex(full.path + "/ckpt/step_00000004/optimizer.safetensors"));
  }
}

}  // namespace
}  // namespace nmoe
