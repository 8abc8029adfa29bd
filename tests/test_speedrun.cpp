// `n speedrun` and `n eval core` end to end on the CPU: the tiny speedrun
// reaches its target and is recorded; runs that miss the target or whose eval
// fails are not; the leaderboard file keeps its rules and stays sorted.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "metrics/metrics_db.h"
#include "speedrun/leaderboard.h"
#include "test_util.h"

namespace nmoe {
namespace {

using test::expect_parts;

std::string n_in(const test::TempDir& dir, const std::string& args) {
  return "cd " + dir.path + " && " + test::n_binary() + " " + args;
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(fs::read_file(path)); }

TEST(SpeedrunTiny, ReachesTheTargetScoresCoreAndIsRecorded) {
  test::TempDir dir;
  auto r = test::run_command(n_in(dir, "speedrun tiny"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_parts(r.output, {"preparing the shipped Wikipedia sample", "target reached at step",
                          "CORE over 18 of 22 tasks", "missing task files (not scored): hellaswag_zeroshot",
                          "recorded in LEADERBOARD.json"});
  const nlohmann::json board = read_json(dir / "LEADERBOARD.json");
  EXPECT_EQ(board["schema_version"], 1);
  ASSERT_EQ(board["runs"].size(), 1u);
  const nlohmann::json& e = board["runs"][0];
  EXPECT_EQ(e["config"], "tiny");
  EXPECT_EQ(e["hardware"], "CPU");
  EXPECT_EQ(e["dtype"], "fp32");
  EXPECT_EQ(e["target_reached"], true);
  EXPECT_LE(e["final_loss"].get<double>(), e["target_loss"].get<double>());
  EXPECT_EQ(e["core_tasks"], 18);
  EXPECT_EQ(e["core_tasks_total"], 22);
  EXPECT_GT(e["tokens"].get<double>(), 0);
  EXPECT_EQ(static_cast<int64_t>(e["tokens"].get<double>()), e["steps"].get<int64_t>() * 16 * 256);
  EXPECT_GT(e["wall_time_s"].get<double>(), 0);
  EXPECT_LT(e["wall_time_s"].get<double>(), 600);

  // The results are in the metrics database under the run.
  MetricsDB db = MetricsDB::open(dir / "runs/experiments.db");
  const auto core = db.metrics(e["run_id"].get<std::string>(), "eval/CORE");
  ASSERT_FALSE(core.empty());
  EXPECT_NEAR(core[0].value, e["core_score"].get<double>(), 1e-12);
  EXPECT_FALSE(db.metrics(e["run_id"].get<std::string>(), "eval/core/arc_easy/accuracy").empty());

  auto shown = test::run_command(n_in(dir, "speedrun --leaderboard"));
  EXPECT_EQ(shown.exit_code, 0) << shown.output;
  expect_parts(shown.output, {"config", "tiny", "CPU", "18/22"});
}

TEST(Speedrun, MissingTheTargetIsNotRecorded) {
  test::TempDir dir;
  auto r = test::run_command(n_in(dir, "speedrun tiny --steps 2 --set validation_every=1"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  expect_parts(r.output, {"not added to LEADERBOARD.json", "did not reach the target 2.5", "in 2 steps"});
  EXPECT_FALSE(fs::exists(dir / "LEADERBOARD.json"));
}

TEST(Speedrun, AFailedEvalIsNotRecordedAndCheckpointsEvaluateOnTheirOwn) {
  test::TempDir dir;
  // A bundle whose arc_easy file is broken: training reaches the (generous) target, the eval fails.
  const std::string bundle = dir / "bundle";
  std::filesystem::create_directories(bundle + "/eval_data/world_knowledge");
  const std::string shipped = test::source_dir() + "/assets/eval/core";
  std::filesystem::copy_file(shipped + "/core.yaml", bundle + "/core.yaml");
  std::filesystem::copy_file(shipped + "/eval_meta_data.csv", bundle + "/eval_meta_data.csv");
  std::ofstream(bundle + "/eval_data/world_knowledge/arc_easy.jsonl") << "{\"query\": \"q\"}\n";
  auto r = test::run_command(n_in(dir, "speedrun tiny --steps 2 --set validation_every=1 --set target_loss=100 --bundle " + bundle));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  expect_parts(r.output, {"target reached at step 1", "not added to LEADERBOARD.json: the CORE eval failed",
                          "arc_easy.jsonl:1", "choices"});
  EXPECT_FALSE(fs::exists(dir / "LEADERBOARD.json"));

  // The checkpoint written at the target, evaluated on two tasks of the shipped bundle.
  const std::string ckpts = dir / "runs/speedrun/tiny";
  std::string run_dir;
  for (const auto& e : std::filesystem::directory_iterator(ckpts))
    if (e.path().filename().string().rfind("speedrun_tiny_", 0) == 0) run_dir = e.path().string();
  ASSERT_FALSE(run_dir.empty());
  auto ev = test::run_command(n_in(dir, "eval core --checkpoint " + run_dir + "/checkpoints --tasks copa,winograd --max-examples 6 --db " + (dir / "eval.db")));
  ASSERT_EQ(ev.exit_code, 0) << ev.output;
  expect_parts(ev.output, {"copa", "winograd", "6 examples", "CORE over 2 of 22 tasks"});
  EXPECT_FALSE(MetricsDB::open(dir / "eval.db").runs().empty());

  // Bad input: clear errors.
  auto bad = test::run_command(n_in(dir, "eval core --checkpoint " + run_dir + "/checkpoints --tasks nope --no-db"));
  EXPECT_EQ(bad.exit_code, 1);
  expect_parts(bad.output, {"unknown CORE task 'nope'", "arc_easy"});
  bad = test::run_command(n_in(dir, "eval core --checkpoint " + run_dir + "/checkpoints --bundle " + (dir / "none") + " --no-db"));
  EXPECT_EQ(bad.exit_code, 1);
  expect_parts(bad.output, {"core.yaml", "not found"});
  bad = test::run_command(n_in(dir, "eval core --checkpoint " + run_dir + "/checkpoints --set tokenizer=gpt2 --no-db"));
  EXPECT_EQ(bad.exit_code, 1);
  expect_parts(bad.output, {"vocab"});
  bad = test::run_command(n_in(dir, "eval core --checkpoint " + (dir / "nowhere") + " --no-db"));
  EXPECT_EQ(bad.exit_code, 1);
  expect_parts(bad.output, {"does not exist"});
  bad = test::run_command(n_in(dir, "eval core --max-examples 5"));
  EXPECT_EQ(bad.exit_code, 2);
  expect_parts(bad.output, {"--checkpoint DIR is required"});
}

TEST(Speedrun, UsageErrors) {
  test::TempDir dir;
  auto r = test::run_command(n_in(dir, "speedrun huge"));
  EXPECT_EQ(r.exit_code, 1);
  expect_parts(r.output, {"unknown speedrun 'huge'", "tiny, wiki, dense, moe, super, ultra"});
  r = test::run_command(n_in(dir, "speedrun tiny --steps x"));
  EXPECT_EQ(r.exit_code, 2);
  expect_parts(r.output, {"--steps needs a positive integer"});
  r = test::run_command(n_in(dir, "speedrun --leaderboard"));
  EXPECT_EQ(r.exit_code, 1);
  expect_parts(r.output, {"no leaderboard at LEADERBOARD.json yet"});
  std::ofstream(dir / "LEADERBOARD.json") << "[1, 2]";
  r = test::run_command(n_in(dir, "speedrun --leaderboard"));
  EXPECT_EQ(r.exit_code, 1);
  expect_parts(r.output, {"no \"runs\" list"});
  // Offline, a GPU speedrun explains how to supply local shards.
  r = test::run_command(n_in(dir, "speedrun moe --work-dir " + (dir / "w") + " --set device=cpu"));
  EXPECT_EQ(r.exit_code, 1);
  expect_parts(r.output, {"could not be prepared", "--data DIR"});
}

// The wiki speedrun prepares a local WikiExtractor corpus (here the shipped
// sample under the corpus's file names), trains, scores CORE and records the
// run; without a usable corpus it says what to pass.
TEST(SpeedrunWiki, PreparesALocalCorpusAndExplainsWhatIsMissing) {
  test::TempDir dir;
  const std::string small =
      " --set device=cpu --set dim=64 --set n_heads=2 --set n_layers=2 --set n_routed_experts=8"
      " --set n_activated_experts=2 --set moe_inter_dim=32 --set seq_len=64 --set batch_size=4"
      " --set validation_steps=1 --set validation_every=1 --set target_loss=100"
      " --set eval_budget_max_examples=2 --work-dir " + (dir / "w");
  auto r = test::run_command(n_in(dir, "speedrun wiki" + small));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  expect_parts(r.output, {"no Wikipedia corpus given", "n speedrun wiki --corpus DIR", "--data DIR"});

  const std::string corpus = dir / "enwiki";
  std::filesystem::create_directories(corpus);
  const std::string sample = test::source_dir() + "/assets/corpus/enwiki_sample";
  std::filesystem::copy_file(sample + "/train.txt.zst", corpus + "/enwiki.train.txt.zst");
  r = test::run_command(n_in(dir, "speedrun wiki --corpus " + corpus + small));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  expect_parts(r.output, {"holds no validation text", "*.val.txt"});
  r = test::run_command(n_in(dir, "speedrun wiki --corpus " + (dir / "nowhere") + small));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  expect_parts(r.output, {"nowhere does not exist"});

  std::filesystem::copy_file(sample + "/val.txt.zst", corpus + "/enwiki.val.txt.zst");
  r = test::run_command(n_in(dir, "speedrun wiki --corpus " + corpus + small));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_parts(r.output,
               {"preparing the Wikipedia corpus", "target reached at step 1", "recorded in LEADERBOARD.json"});
  const nlohmann::json board = read_json(dir / "LEADERBOARD.json");
  ASSERT_EQ(board["runs"].size(), 1u);
  EXPECT_EQ(board["runs"][0]["config"], "wiki");
  EXPECT_EQ(static_cast<int64_t>(board["runs"][0]["tokens"].get<double>()), 4 * 64);
  // The prepared shards are GPT-2 tokens of the sample and are reused by the next run.
  EXPECT_TRUE(fs::exists(dir / "w/wiki/data/train/manifest.json"));
  r = test::run_command(n_in(dir, "speedrun wiki --corpus " + corpus + small));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_parts(r.output, {"train and val ready; --corpus not read"});
  r = test::run_command(n_in(dir, "speedrun tiny --corpus " + corpus));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  expect_parts(r.output, {"--corpus is for the wiki speedrun"});
}

TEST(Leaderboard, AppendsSortedAndKeepsOtherKeys) {
  test::TempDir dir;
  const std::string path = dir / "board.json";
  std::ofstream(path) << R"({"schema_version": 1, "rules": {"target_loss": 3.28, "note": "kept"}, "runs": []})";
  LeaderboardEntry a;
  a.config = "super";
  a.wall_time_s = 100.04;
  a.steps = 10;
  LeaderboardEntry b = a;
  b.wall_time_s = 50;
  LeaderboardEntry c = a;
  c.steps = 5;
  append_to_leaderboard(path, a);
  append_to_leaderboard(path, b);
  append_to_leaderboard(path, c);
  const nlohmann::json j = read_json(path);
  EXPECT_EQ(j["rules"]["note"], "kept");
  ASSERT_EQ(j["runs"].size(), 3u);
  EXPECT_DOUBLE_EQ(j["runs"][0]["wall_time_s"].get<double>(), 50);
  EXPECT_EQ(j["runs"][1]["steps"], 5);  // same time: fewer steps first
  EXPECT_DOUBLE_EQ(j["runs"][2]["wall_time_s"].get<double>(), 100.0);  // rounded to 0.1 s
  EXPECT_EQ(short_hardware_name("NVIDIA H200"), "H200");
  EXPECT_EQ(short_hardware_name("NVIDIA H100 80GB HBM3"), "H100");
  EXPECT_EQ(short_hardware_name("Some GPU"), "Some GPU");
}

}  // namespace
}  // namespace nmoe
