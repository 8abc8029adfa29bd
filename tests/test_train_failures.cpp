// Runs that go wrong: a diverging loss stops with a clear message and exit
// code 3; Ctrl-C stops cleanly with a checkpoint that resumes.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "core/fs.h"
#include "data/npy.h"
#include "metrics/metrics_db.h"
#include "test_util.h"

namespace nmoe {
namespace {

const char* kToml = R"(tokenizer = "bytes"
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
seq_len = 32
batch_size = 4
warmup_steps = 0
log_every = 1
fsync = false
)";

void setup(const test::TempDir& d) {
  std::string text = fs::read_file(test::source_dir() + "/data/corpus/tinyshakespeare.txt").substr(0, 50000);
  std::vector<uint32_t> t(text.begin(), text.end());
  for (auto& x : t) x &= 0xff;
  write_npy_tokens(d / "data/s.npy", t.data(), t.size(), DType::U16, false);
  fs::write_file_atomic(d / "c.toml",
                        std::string(kToml) + "data_path = \"" + d / "data" + "\"\ncheckpoint_dir = \"" + d / "ckpt" +
                            "\"\nexperiments_db = \"" + d / "exp.db" + "\"\n",
                        false);
}

TEST(TrainFailures, NonFiniteLossStopsWithExitCode3) {
  test::TempDir d;
  setup(d);
  auto r = test::run_command("NMOE_RUN=nan_run " + test::n_binary() + " train " + d / "c.toml" +
                             " --set steps=20 --set lr_dense=1e30 --set lr_expert=1e30 --set lr_router=1e30");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("not finite"), std::string::npos) << r.output;
  auto db = MetricsDB::open(d / "exp.db");
  ASSERT_TRUE(db.run("nan_run").has_value());
  EXPECT_EQ(db.run("nan_run")->status, "failed_nan");
}

TEST(TrainFailures, InterruptSavesACheckpointThatResumes) {
  test::TempDir d;
  setup(d);
  const std::string log = d / "log.txt";
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    freopen(log.c_str(), "w", stdout);
    execl(test::n_binary().c_str(), "n", "train", (d / "c.toml").c_str(), "--set", "steps=100000", nullptr);
    _exit(127);
  }
  // Wait until a few steps have run, then send Ctrl-C.
  for (int i = 0; i < 600; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (fs::exists(log) && fs::read_file(log).find("step 3/") != std::string::npos) break;
  }
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130) << fs::read_file(log);
  EXPECT_NE(fs::read_file(log).find("interrupted"), std::string::npos);
  ASSERT_TRUE(fs::exists(d / "ckpt/latest")) << fs::read_file(log);

  auto r = test::run_command(test::n_binary() + " train " + d / "c.toml" + " --set resume=true --set steps=100000" +
                             " --set steps=1");
  // steps=1 is already behind the checkpoint: the run resumes and ends at once.
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace nmoe
