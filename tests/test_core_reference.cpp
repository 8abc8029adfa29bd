// CORE scoring against an independent implementation: a small checkpoint
// (the tiny speedrun model after 200 steps on the shipped Wikipedia sample,
// tests/reference/fixtures/core_ckpt) scored by tests/reference/core_reference.py
// with PyTorch in float64 (fixture core_reference.json, made on a GPU machine)
// and by `n eval core` on the CPU: per-task accuracies on 200 examples of each
// task type (multiple choice, schema, language modeling) agree within 0.5 points.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <set>

#include "eval/checkpoint_eval.h"
#include "test_util.h"

namespace nmoe {
namespace {

TEST(CoreReference, AccuraciesMatchPyTorchWithinHalfAPoint) {
  const std::string dir = test::source_dir() + "/tests/reference/fixtures";
  std::ifstream f(dir + "/core_reference.json");
  ASSERT_TRUE(f) << "missing fixture core_reference.json";
  const nlohmann::json ref = nlohmann::json::parse(f);
  const int64_t max_examples = ref.at("max_examples").get<int64_t>();
  ASSERT_GE(max_examples, 200);

  CheckpointEvalOptions opt;
  opt.core.max_examples = max_examples;
  std::set<std::string> types;
  for (const auto& [label, t] : ref.at("tasks").items()) {
    opt.core.tasks.push_back(label);
    types.insert(t.at("type").get<std::string>());
  }
  EXPECT_EQ(types.size(), 3u) << "the fixture covers every task type";
  opt.overrides.push_back({"device", "cpu"});
  opt.write_db = false;
  const CheckpointEval ev = eval_checkpoint_core(dir + "/core_ckpt", opt);

  int compared = 0;
  for (const CoreTaskResult& r : ev.result.tasks) {
    if (!ref.at("tasks").contains(r.label)) continue;
    const nlohmann::json& t = ref.at("tasks").at(r.label);
    EXPECT_EQ(r.examples, t.at("examples").get<int64_t>()) << r.label;
    EXPECT_GE(r.examples, 200) << r.label;
    const double ours = static_cast<double>(r.correct) / static_cast<double>(r.examples);
    EXPECT_NEAR(ours, t.at("accuracy").get<double>(), 0.005) << r.label;
    ++compared;
  }
  EXPECT_EQ(compared, static_cast<int>(ref.at("tasks").size()));
}

// A checkpoint trained with BF16 expert gradients (a GPU-only storage choice)
// still evaluates on the CPU: evaluation keeps no gradients.
TEST(CoreReference, GpuGradientOptionsDoNotKeepACheckpointOffTheCpu) {
  const std::string dir = test::source_dir() + "/tests/reference/fixtures";
  CheckpointEvalOptions opt;
  opt.core.max_examples = 4;
  opt.core.tasks = {"openbook_qa"};
  opt.overrides = {{"device", "cpu"}, {"expert_grad_dtype", "bf16"}};
  opt.write_db = false;
  const CheckpointEval ev = eval_checkpoint_core(dir + "/core_ckpt", opt);
  ASSERT_EQ(ev.result.tasks.size(), 1u);
  EXPECT_EQ(ev.result.tasks[0].examples, 4);
}

}  // namespace
}  // namespace nmoe
