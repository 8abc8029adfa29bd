// Expert parallelism on the CPU transport, end to end through `n train
// --nproc W`: one, two and four ranks train bit-identically; a checkpoint
// written by four ranks resumes on two and on one; worst-case routing (every
// token to one expert) runs; a killed rank stops the others with an error.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "checkpoint/safetensors.h"
#include "core/fs.h"
#include "core/sha256.h"
#include "data/npy.h"
#include "dist/tcp.h"
#include "metrics/metrics_db.h"
#include "test_util.h"
#include "shard_test_util.h"

namespace nmoe {
namespace {

namespace sfs = std::filesystem;
using test::write_byte_shards;

// "moe": one dense layer then MoE layers with a shared expert, like the
// speedrun moe config; "super": more, narrower experts and a larger top-k.
const char* kMoe = R"(
tokenizer = "bytes"
vocab_size = 264
eos_token_id = 256
dim = 32
n_layers = 3
n_heads = 2
inter_dim = 64
moe_inter_dim = 16
n_dense_layers = 1
n_routed_experts = 8
n_activated_experts = 2
n_shared_experts = 1
aux_loss_alpha = 0.01
)";
const char* kSuper = R"(
tokenizer = "bytes"
vocab_size = 264
eos_token_id = 256
dim = 32
n_layers = 3
n_heads = 4
inter_dim = 64
moe_inter_dim = 8
n_dense_layers = 1
n_routed_experts = 16
n_activated_experts = 4
n_shared_experts = 1
route_scale = 2.0
routed_scaling_factor = 2.5
)";
const char* kTraining = R"(
attn = "sdpa"
seq_len = 32
batch_size = 8
micro_batch_size = 1
threads = 1
device = "cpu"
lr_dense = 3e-3
lr_expert = 3e-3
lr_router = 3e-3
warmup_steps = 2
hold_tokens = 1024
decay_tokens = 1024
decay_floor = 1e-4
router_bias_update_rate = 1e-2
grad_clip = 1.0
log_every = 1
checkpoint_keep_last_n = 5
fsync = false
)";

struct TrainRun {
  int exit_code = -1;
  std::string output;
  std::vector<double> losses;  // by step
};

// Trains `arch` on W ranks in dir (data in dir/data, checkpoints in dir/ckpt).
TrainRun train(const std::string& dir, const char* arch, int world, int steps, const std::string& extra = "",
          const std::string& run_id = "r") {
  fs::write_file_atomic(dir + "/cfg.toml", std::string(arch) + kTraining, false);
  // Relative paths: a copied directory has the same config fingerprint.
  std::string cmd = "cd " + dir + " && NMOE_RUN=" + run_id + " " + test::n_binary() + " train cfg.toml --nproc " +
                    std::to_string(world) + " --set steps=" + std::to_string(steps) +
                    " --set data_path='\"data\"' --set checkpoint_dir='\"ckpt\"' --set experiments_db='\"exp.db\"'"
                    " --set checkpoint_every=2 " + extra;
  auto r = test::run_command(cmd);
  TrainRun out;
  out.exit_code = r.exit_code;
  out.output = r.output;
  if (sfs::exists(dir + "/exp.db"))
    for (const auto& m : MetricsDB::open(dir + "/exp.db").metrics(run_id, "train/loss")) out.losses.push_back(m.value);
  return out;
}

std::string file_hash(const std::string& path) { return sha256_file_hex(path); }

std::string read_or_empty(const std::string& path) { return sfs::exists(path) ? fs::read_file(path) : ""; }

const char* const kArchs[] = {kMoe, kSuper};
class ExpertParallel : public ::testing::TestWithParam<int> {};

TEST_P(ExpertParallel, OneTwoAndFourRanksTrainBitIdentically) {
  std::vector<TrainRun> runs;
  std::vector<std::string> weights;
  std::vector<std::vector<MetricRow>> val;
  std::vector<std::unique_ptr<test::TempDir>> dirs;
  for (int W : {1, 2, 4}) {
    dirs.push_back(std::make_unique<test::TempDir>());
    const std::string d = dirs.back()->path;
    write_byte_shards(d + "/data");
    runs.push_back(train(d, kArchs[GetParam()], W, 4,
                         "--set validation_enabled=true --set validation_data_path='\"data\"' "
                         "--set validation_every=2 --set validation_steps=2"));
    ASSERT_EQ(runs.back().exit_code, 0) << runs.back().output;
    ASSERT_EQ(runs.back().losses.size(), 4u) << runs.back().output;
    weights.push_back(file_hash(d + "/ckpt/step_00000004/model.safetensors"));
    val.push_back(MetricsDB::open(d + "/exp.db").metrics("r", "valid/loss"));
    ASSERT_EQ(val.back().size(), 2u);
  }
  for (size_t i = 1; i < runs.size(); ++i) {
    for (size_t s = 0; s < 4; ++s)
      EXPECT_EQ(runs[i].losses[s], runs[0].losses[s]) << "world " << (1 << i) << " step " << s + 1;
    EXPECT_EQ(weights[i], weights[0]) << "final weights differ at world " << (1 << i);
    for (size_t k = 0; k < 2; ++k) EXPECT_EQ(val[i][k].value, val[0][k].value) << "validation at world " << (1 << i);
  }
  EXPECT_LT(runs[0].losses[3], runs[0].losses[0]);
}

INSTANTIATE_TEST_SUITE_P(Archs, ExpertParallel, ::testing::Values(0, 1),
                         [](const auto& info) { return info.index == 0 ? std::string("moe") : std::string("super"); });

TEST(ExpertParallelResume, CheckpointOfFourRanksResumesOnTwoAndOne) {
  test::TempDir full;
  write_byte_shards(full.path + "/data");
  TrainRun ref = train(full.path, kMoe, 1, 4);
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  ASSERT_EQ(ref.losses.size(), 4u);

  test::TempDir first;
  write_byte_shards(first.path + "/data");
  TrainRun a = train(first.path, kMoe, 4, 2);
  ASSERT_EQ(a.exit_code, 0) << a.output;
  for (int W : {2, 1}) {
    test::TempDir d;
    sfs::copy(first.path, d.path, sfs::copy_options::recursive | sfs::copy_options::overwrite_existing);
    sfs::remove(d.path + "/exp.db");
    TrainRun b = train(d.path, kMoe, W, 4, "--set resume=true", "resumed");
    ASSERT_EQ(b.exit_code, 0) << b.output;
    EXPECT_NE(b.output.find("written by 4 ranks, resharded to " + std::to_string(W)), std::string::npos) << b.output;
    ASSERT_EQ(b.losses.size(), 2u) << b.output;
    EXPECT_EQ(b.losses[0], ref.losses[2]) << "world " << W;
    EXPECT_EQ(b.losses[1], ref.losses[3]) << "world " << W;
  }
}

// Rewrites every router bias of a checkpoint so expert 0 wins every token.
void force_expert_zero(const std::string& ckpt) {
  const std::string path = ckpt + "/model.safetensors";
  auto r = safetensors::Reader::open(path);
  safetensors::Writer w;
  std::vector<std::vector<char>> keep;
  for (const std::string& name : r.names()) {
    const auto& info = r.info(name);
    keep.emplace_back(info.nbytes);
    r.read_into(name, info.dtype, info.shape, keep.back().data());
    if (name.find("router.bias") != std::string::npos) {
      float* b = reinterpret_cast<float*>(keep.back().data());
      for (int64_t e = 0; e < info.shape[0]; ++e) b[e] = e == 0 ? 16.0f : -16.0f;
    }
    w.add(name, info.dtype, info.shape, keep.back().data());
  }
  w.write(path, false);
  auto state = nlohmann::json::parse(fs::read_file(ckpt + "/state.json"));
  state["files"]["model.safetensors"] = sha256_file_hex(path);
  fs::write_file_atomic(ckpt + "/state.json", state.dump(2), false);
}

TEST(ExpertParallelRouting, EveryTokenToOneExpertRunsAndMatchesOneRank) {
  test::TempDir base;
  write_byte_shards(base.path + "/data");
  TrainRun a = train(base.path, kMoe, 1, 2);
  ASSERT_EQ(a.exit_code, 0) << a.output;
  force_expert_zero(base.path + "/ckpt/step_00000002");
  std::vector<TrainRun> runs;
  for (int W : {1, 4}) {
    test::TempDir d;
    sfs::copy(base.path, d.path, sfs::copy_options::recursive | sfs::copy_options::overwrite_existing);
    sfs::remove(d.path + "/exp.db");
    runs.push_back(train(d.path, kMoe, W, 4, "--set resume=true", "forced"));
    ASSERT_EQ(runs.back().exit_code, 0) << runs.back().output;
    ASSERT_EQ(runs.back().losses.size(), 2u);
    auto load = MetricsDB::open(d.path + "/exp.db").metrics("forced", "router/layer_00/max_load");
    ASSERT_FALSE(load.empty());
    for (const auto& m : load) EXPECT_GT(m.value, 49.0) << "expert 0 should take every first choice (max_load is a percentage of slots)";
  }
  EXPECT_EQ(runs[0].losses, runs[1].losses);
}

// Workers started without the launcher, from torchrun-style variables, train
// as under `--nproc`.
TEST(ExpertParallelLaunch, TorchrunStyleEnvironment) {
  test::TempDir ref, d;
  write_byte_shards(ref.path + "/data");
  write_byte_shards(d.path + "/data");
  TrainRun a = train(ref.path, kMoe, 2, 2);
  ASSERT_EQ(a.exit_code, 0) << a.output;
  fs::write_file_atomic(d.path + "/cfg.toml", std::string(kMoe) + kTraining, false);
  const int port = tcp::free_port();
  std::string cmd = "cd " + d.path + " && { ";
  for (int r = 0; r < 2; ++r)
    cmd += "(RANK=" + std::to_string(r) + " WORLD_SIZE=2 LOCAL_RANK=" + std::to_string(r) +
           " LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " NMOE_RUN=r " +
           test::n_binary() + " train cfg.toml --set steps=2 --set data_path='\"data\"' --set "
           "checkpoint_dir='\"ckpt\"' --set experiments_db='\"exp.db\"' --set checkpoint_every=2 > rank" +
           std::to_string(r) + ".log 2>&1; echo $? > rank" + std::to_string(r) + ".rc) & ";
  cmd += "wait; }";
  test::run_command(cmd);
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(fs::read_file(d.path + "/rank" + std::to_string(r) + ".rc"), "0\n")
        << fs::read_file(d.path + "/rank" + std::to_string(r) + ".log");
  EXPECT_EQ(fs::read_file(d.path + "/rank1.log"), "") << "only rank 0 prints";
  auto losses = MetricsDB::open(d.path + "/exp.db").metrics("r", "train/loss");
  ASSERT_EQ(losses.size(), 2u);
  EXPECT_EQ(losses[0].value, a.losses[0]);
  EXPECT_EQ(losses[1].value, a.losses[1]);
}

// Starts `n train cfg.toml --nproc nproc` in dir for a long run, as a child in
// its own process group, output to dir/out.log; returns its pid.
pid_t start_long_run(const std::string& dir, int nproc) {
  write_byte_shards(dir + "/data");
  fs::write_file_atomic(dir + "/cfg.toml", std::string(kMoe) + kTraining, false);
  const std::string log = dir + "/out.log", ranks = std::to_string(nproc);
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    if (chdir(dir.c_str()) != 0) _exit(126);
    if (!freopen(log.c_str(), "w", stdout)) _exit(126);
    dup2(fileno(stdout), 2);
    execl(test::n_binary().c_str(), "n", "train", "cfg.toml", "--nproc", ranks.c_str(), "--set", "steps=100000",
          "--set", "data_path=\"data\"", "--set", "checkpoint_dir=\"ckpt\"", "--set", "checkpoint_every=100000",
          "--set", "experiments_db=\"exp.db\"", static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// Ctrl-C on the launcher: every rank stops at the same step, saves one
// checkpoint together and exits 130.
TEST(ExpertParallelLaunch, InterruptStopsAllRanksWithACheckpoint) {
  test::TempDir d;
  const std::string log = d.path + "/out.log";
  const pid_t launcher = start_long_run(d.path, 2);
  ASSERT_GE(launcher, 0);
  auto t0 = std::chrono::steady_clock::now();
  while (read_or_empty(log).find("step 3/") == std::string::npos &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  kill(launcher, SIGINT);
  int status = 0;
  waitpid(launcher, &status, 0);
  const std::string out = fs::read_file(log);
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 130) << out;
  EXPECT_NE(out.find("interrupted: saving a checkpoint"), std::string::npos) << out;
  EXPECT_TRUE(sfs::exists(d.path + "/ckpt/latest")) << out;
}

TEST(ExpertParallelFailure, KilledRankStopsTheOthersWithAnError) {
  test::TempDir d;
  const std::string log = d.path + "/out.log";
  const pid_t launcher = start_long_run(d.path, 4);
  ASSERT_GE(launcher, 0);
  // Wait until training runs, then kill -9 one worker.
  auto t0 = std::chrono::steady_clock::now();
  pid_t victim = -1;
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (read_or_empty(log).find("step 2/") == std::string::npos) continue;
    auto r = test::run_command("pgrep -P " + std::to_string(launcher));
    std::vector<pid_t> kids;
    std::istringstream is(r.output);
    for (pid_t p; is >> p;) kids.push_back(p);
    if (kids.size() == 4) {
      victim = kids[2];
      break;
    }
  }
  ASSERT_GT(victim, 0) << fs::read_file(log);
  kill(victim, SIGKILL);
  auto t_kill = std::chrono::steady_clock::now();
  int status = 0;
  pid_t done = 0;
  while ((done = waitpid(launcher, &status, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() - t_kill < std::chrono::seconds(40))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (done == 0) {
    kill(-launcher, SIGKILL);
    waitpid(launcher, &status, 0);
    FAIL() << "the run did not stop within 40 s of a rank being killed:\n" << fs::read_file(log);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_kill).count();
  EXPECT_LT(secs, 30.0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
  const std::string out = fs::read_file(log);
  EXPECT_NE(out.find("rank"), std::string::npos) << out;
  EXPECT_NE(out.find("exited"), std::string::npos) << out;
  EXPECT_EQ(test::run_command("pgrep -P " + std::to_string(launcher)).output, "") << "workers left running";
}

}  // namespace
}  // namespace nmoe
