// End to end against a fake HuggingFace hub: `n data prep --source hf` lists
// the dataset, downloads its train split (one download is cut off and
// resumed), reads the Parquet text column and writes the same shards as the
// same documents prepared from a local file.
#include <gtest/gtest.h>

#include <cstdlib>

#include "core/fs.h"
#include "data/manifest.h"
#include "data/npy.h"
#include "fake_hub_server.h"
#include "parquet_test_writer.h"
#include "test_util.h"

namespace nmoe {
namespace {

std::vector<std::optional<std::string>> documents(int begin, int n) {
  std::vector<std::optional<std::string>> docs;
  for (int i = begin; i < begin + n; ++i) {
    std::string t = "Row " + std::to_string(i) + " says:";
    for (int w = 0; w < 20 + (i * 13) % 50; ++w) t += " token" + std::to_string((i + w) % 31);
    docs.push_back(i % 17 == 5 ? std::nullopt : std::optional<std::string>(t));  // some nulls
  }
  return docs;
}

std::string parquet_of(const std::vector<std::optional<std::string>>& docs, int codec) {
  test::pqw::Column text;
  text.name = "text";
  text.optional = true;
  text.strings = docs;
  test::pqw::Column id;
  id.name = "id";
  id.is_int64 = true;
  for (size_t i = 0; i < docs.size(); ++i) id.ints.push_back(static_cast<int64_t>(i));
  test::pqw::Options o;
  o.codec = codec;
  o.rows_per_group = 40;
  o.rows_per_page = 16;
  return test::pqw::write_parquet({id, text}, o);
}

std::string all_tokens(const std::string& dir) {
  Manifest m = Manifest::read(dir);
  std::string s;
  for (const ShardEntry& e : m.shards) s += fs::read_file(dir + "/" + e.path);
  return s;
}

TEST(PrepHub, DownloadsResumesAndPrepsParquet) {
  test::TempDir d;
  test::FakeHub hub;
  const std::string repo = "acme/tiny-corpus";
  auto a = documents(0, 150), b = documents(150, 120);
  hub.add_file(repo, "main", "README.md", "# tiny corpus\n");
  hub.add_file(repo, "main", "data/train-00000-of-00002.parquet", parquet_of(a, test::pqw::kSnappy), true);
  hub.add_file(repo, "main", "data/train-00001-of-00002.parquet", parquet_of(b, test::pqw::kZstd), true);
  hub.add_file(repo, "main", "data/validation-00000-of-00001.parquet", parquet_of(documents(900, 10), 0), true);
  hub.drop_after(700, 1);  // the first download breaks off after 700 bytes

  const std::string env = "HF_ENDPOINT=" + hub.endpoint() + " NMOE_HF_CACHE=" + d / "cache" + " HF_TOKEN= ";
  const std::string args = " data prep --source hf --dataset " + repo +
                           " --split train --tokenizer bytes --name tiny --min-tokens 1 --no-fsync --output ";
  auto r = test::run_command(env + test::n_binary() + args + d / "hub");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("downloading"), std::string::npos) << r.output;
  // The broken download was resumed with a range request.
  bool resumed = false;
  for (const auto& req : hub.requests())
    if (!req.header("range").empty() && req.path.find("train-00000") != std::string::npos) resumed = true;
  EXPECT_TRUE(resumed);
  EXPECT_EQ(hub.count_prefix("/datasets/" + repo + "/resolve/main/data/validation"), 0);

  // The same documents from a local JSON-lines file give the same tokens.
  std::string jsonl;
  for (const auto& v : {a, b})
    for (const auto& t : v)
      if (t) jsonl += "{\"text\": \"" + *t + "\"}\n";
  fs::write_file_atomic(d / "local.jsonl", jsonl, false);
  r = test::run_command(test::n_binary() + " data prep --source jsonl --data-files " + d / "local.jsonl" +
                        " --tokenizer bytes --name tiny --min-tokens 1 --no-fsync --output " + d / "local");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Manifest hub_m = Manifest::read(d / "hub"), local_m = Manifest::read(d / "local");
  EXPECT_EQ(hub_m.total_documents, local_m.total_documents);
  EXPECT_EQ(hub_m.stats["dropped_empty"].get<int64_t>(), 16);  // the null rows
  EXPECT_EQ(all_tokens(d / "hub"), all_tokens(d / "local"));
  EXPECT_EQ(hub_m.source_info["dataset"], repo);
  EXPECT_TRUE(verify_dataset(d / "hub").ok());

  // A second prep elsewhere is served from the cache.
  hub.clear_log();
  r = test::run_command(env + test::n_binary() + args + d / "hub2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(hub.count_prefix("/datasets/" + repo + "/resolve/"), 0);
}

TEST(PrepHub, MissingSplitListsTheFiles) {
  test::TempDir d;
  test::FakeHub hub;
  hub.add_file("acme/x", "main", "data/train-0.parquet", parquet_of(documents(0, 5), 0));
  auto r = test::run_command("HF_ENDPOINT=" + hub.endpoint() + " NMOE_HF_CACHE=" + d / "cache" + " " +
                             test::n_binary() + " data prep --source hf --dataset acme/x --split test" +
                             " --tokenizer bytes --output " + d / "out");
  EXPECT_EQ(r.exit_code, 1);
  test::expect_parts(r.output, {"acme/x", "\"test\"", "data/train-0.parquet"});
}

}  // namespace
}  // namespace nmoe
