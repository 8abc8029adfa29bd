// Deterministic resume: 2N steps in one go equal N steps, a resume, and N more
// steps — the same loss at every step and byte-identical final weights and
// optimizer state.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "checkpoint/checkpoint.h"
#include "core/fs.h"
#include "data/npy.h"
#include "test_util.h"
#include "shard_test_util.h"
#include "train/trainer.h"

namespace nmoe {
namespace {

std::string write_byte_shards(const std::string& dir) { return test::write_byte_shards(dir, 120000); }

Config resume_config(const test::TempDir& d, int64_t steps, bool resume) {
  std::string toml = R"(
tokenizer = "bytes"
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
n_shared_experts = 1
attn = "sdpa"
seq_len = 32
batch_size = 4
micro_batch_size = 2
lr_dense = 3e-3
lr_expert = 3e-3
lr_router = 3e-3
warmup_steps = 2
hold_tokens = 512
decay_tokens = 512
decay_floor = 1e-4
router_bias_update_rate = 1e-2
aux_loss_alpha = 0.01
grad_clip = 1.0
log_every = 1
checkpoint_every = 3
checkpoint_keep_last_n = 2
fsync = false
)";
  return load_config_string(toml, "resume",
                            {{"steps", std::to_string(steps)},
                             {"resume", resume ? "true" : "false"},
                             {"data_path", "\"" + d.path + "/data\""},
                             {"checkpoint_dir", "\"" + d.path + "/ckpt\""},
                             {"experiments_db", "\"" + d.path + "/exp.db\""}});
}

TEST(Resume, BitIdenticalToUninterruptedRun) {
  test::TempDir one, two;
  write_byte_shards(one.path + "/data");
  write_byte_shards(two.path + "/data");
  auto backend = make_cpu_backend(2);

  TrainResult full = train(resume_config(one, 8, false), *backend);
  ASSERT_EQ(full.status, "completed");
  ASSERT_EQ(full.losses.size(), 8u);

  TrainResult first = train(resume_config(two, 4, false), *backend);
  ASSERT_EQ(first.losses.size(), 4u);
  TrainResult second = train(resume_config(two, 8, true), *backend);
  EXPECT_EQ(second.start_step, 4);
  ASSERT_EQ(second.losses.size(), 4u);

  for (int i = 0; i < 8; ++i) {
    double resumed = i < 4 ? first.losses[i] : second.losses[i - 4];
    EXPECT_EQ(full.losses[i], resumed) << "step " << i + 1;  // bit-identical
  }
  for (const char* f : {"model.safetensors", "optimizer.safetensors"}) {
    std::string a = fs::read_file(one.path + "/ckpt/step_00000008/" + f);
    std::string b = fs::read_file(two.path + "/ckpt/step_00000008/" + f);
    EXPECT_TRUE(a == b) << f << " differs after resume";
  }
  auto sa = read_checkpoint_state(one.path + "/ckpt/step_00000008");
  auto sb = read_checkpoint_state(two.path + "/ckpt/step_00000008");
  EXPECT_EQ(sa.loader.dump(), sb.loader.dump());
  EXPECT_EQ(sa.tokens_seen, sb.tokens_seen);
  EXPECT_EQ(sa.adam_steps, 8);
  // keep_last_n = 2: steps 6 and 8 remain.
  EXPECT_FALSE(fs::exists(one.path + "/ckpt/step_00000003"));
  EXPECT_TRUE(fs::exists(one.path + "/ckpt/step_00000006"));
}

TEST(Resume, BitIdenticalInMixtureMode) {
  test::TempDir one, two;
  for (const test::TempDir* d : {&one, &two}) {
    write_byte_shards(d->path + "/data");
    write_byte_shards(d->path + "/data2");
    fs::write_file_atomic(d->path + "/mix.toml",
                          "total_tokens = 2000\n[[source]]\nname = \"a\"\npath = \"" + d->path +
                              "/data\"\nweight = 2\n[[source]]\nname = \"b\"\npath = \"" + d->path +
                              "/data2/shard_0001\"\nweight = 1\n",
                          false);
  }
  auto mix = [](const test::TempDir& d, int64_t steps, bool resume) {
    Config c = resume_config(d, steps, resume);
    c.data_path.reset();
    c.mixture_toml = d.path + "/mix.toml";
    return c;
  };
  auto backend = make_cpu_backend(2);
  TrainResult full = train(mix(one, 6, false), *backend);
  TrainResult first = train(mix(two, 3, false), *backend);
  TrainResult second = train(mix(two, 6, true), *backend);
  ASSERT_EQ(full.losses.size(), 6u);
  ASSERT_EQ(first.losses.size() + second.losses.size(), 6u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(full.losses[i], i < 3 ? first.losses[i] : second.losses[i - 3]) << i;
  EXPECT_EQ(fs::read_file(one.path + "/ckpt/step_00000006/model.safetensors"),
            fs::read_file(two.path + "/ckpt/step_00000006/model.safetensors"));
  EXPECT_EQ(read_checkpoint_state(one.path + "/ckpt/step_00000006").loader.dump(),
            read_checkpoint_state(two.path + "/ckpt/step_00000006").loader.dump());
}

TEST(Resume, ChangedConfigIsRefusedAndNamesTheKeys) {
  test::TempDir d;
  write_byte_shards(d.path + "/data");
  auto backend = make_cpu_backend(2);
  train(resume_config(d, 2, false), *backend);
  Config changed = resume_config(d, 4, true);
  changed.lr_dense = 1e-3;
  changed.seed = 7;
  try {
    train(changed, *backend);
    FAIL() << "resume with a changed config must fail";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("lr_dense"), std::string::npos) << msg;
    EXPECT_NE(msg.find("seed"), std::string::npos) << msg;
  }
}

TEST(Resume, CorruptedCheckpointIsDetected) {
  test::TempDir d;
  write_byte_shards(d.path + "/data");
  auto backend = make_cpu_backend(2);
  TrainResult r = train(resume_config(d, 2, false), *backend);
  std::string path = r.last_checkpoint + "/model.safetensors";
  std::string bytes = fs::read_file(path);
  bytes[bytes.size() - 3] ^= 0x5a;
  fs::write_file_atomic(path, bytes, false);
  try {
    train(resume_config(d, 4, true), *backend);
    FAIL() << "a corrupted checkpoint must not load";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("corrupted"), std::string::npos) << e.what();
  }
}

TEST(Resume, InterruptedTemporaryDirectoryIsIgnored) {
  test::TempDir d;
  write_byte_shards(d.path + "/data");
  auto backend = make_cpu_backend(2);
  train(resume_config(d, 3, false), *backend);
  // A checkpoint that died while being written has only a temporary name.
  fs::make_dirs(d.path + "/ckpt/step_00000009.tmp-1-0");
  auto latest = find_latest_checkpoint(d.path + "/ckpt");
  ASSERT_TRUE(latest.has_value());
  EXPECT_NE(latest->find("step_00000003"), std::string::npos);
}

}  // namespace
}  // namespace nmoe
