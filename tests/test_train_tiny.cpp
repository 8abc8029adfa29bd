// End to end on the CPU: `n data prep` the shipped tinyshakespeare text, then
// `n train configs/tiny.toml` lowers the validation loss from ln(vocab) to well
// below it, and the run is recorded in the metrics database.
#include <gtest/gtest.h>

#include <cmath>

#include "core/fs.h"
#include "metrics/metrics_db.h"
#include "test_util.h"

namespace nmoe {
namespace {

TEST(TrainTiny, ValidationLossFallsWellBelowUniform) {
  test::TempDir d;
  const std::string text = fs::read_file(test::source_dir() + "/data/corpus/tinyshakespeare.txt");
  const size_t cut = text.size() * 9 / 10;
  fs::write_file_atomic(d / "train.txt", text.substr(0, cut), false);
  fs::write_file_atomic(d / "val.txt", text.substr(cut), false);
  const std::string n = test::n_binary();
  for (const char* split : {"train", "val"}) {
    auto r = test::run_command(n + " data prep --source text --tokenizer bytes --data-files " + d / split + ".txt" +
                               " --output " + d / split + " --name shakespeare");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  const std::string cmd = n + " train " + test::source_dir() + "/configs/tiny.toml --set steps=150" +
                          " --set validation_every=150 --set data_path=" + d / "train" +
                          " --set validation_data_path=" + d / "val" + " --set checkpoint_dir=" + d / "ckpt" +
                          " --set experiments_db=" + d / "exp.db" + " --set fsync=false";
  auto r = test::run_command("NMOE_RUN=tiny_test " + cmd);
  ASSERT_EQ(r.exit_code, 0) << r.output;

  auto db = MetricsDB::open(d / "exp.db");
  auto run = db.run("tiny_test");
  ASSERT_TRUE(run.has_value());
  EXPECT_EQ(run->status, "completed");
  auto val = db.metrics("tiny_test", "valid/loss");
  ASSERT_EQ(val.size(), 1u) << r.output;
  // Uniform guessing over 264 ids costs ln(264) = 5.58 nats; byte unigram
  // statistics alone give about 3.3. 150 steps reach about 2.3.
  EXPECT_LT(val[0].value, 2.6) << r.output;
  auto loss = db.metrics("tiny_test", "train/loss");
  ASSERT_GE(loss.size(), 2u);
  EXPECT_GT(loss.front().value, std::log(264.0) - 0.5);
  for (const char* tag : {"train/grad_norm", "optimizer/lr_dense", "optimizer/lr_expert", "optimizer/lr_router",
                          "throughput/tokens_per_s", "router/layer_00/cv", "router/layer_02/dead_experts",
                          "router/layer_01/bias_range", "router/layer_00/load/e007"})
    EXPECT_FALSE(db.metrics("tiny_test", tag).empty()) << tag;
  EXPECT_TRUE(fs::exists(d / "ckpt/step_00000150/model.safetensors"));
}

}  // namespace
}  // namespace nmoe
