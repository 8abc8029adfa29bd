// `n data prep`: sources, shard layout, determinism across worker counts,
// restart after a crash, verify/info, and bad input.
#include <gtest/gtest.h>

#include <zstd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/fs.h"
#include "data/doc_source.h"
#include "data/manifest.h"
#include "data/npy.h"
#include "data/prep.h"
#include "data/shard_index.h"
#include "test_util.h"

namespace nmoe {
namespace {

namespace sfs = std::filesystem;

// A JSON-lines corpus of n documents with varied lengths (some too short to keep).
std::string write_jsonl(const test::TempDir& d, int n, const std::string& name = "docs.jsonl") {
  std::string s;
  for (int i = 0; i < n; ++i) {
    std::string text = "Document " + std::to_string(i) + ":";
    for (int w = 0; w < (i * 37) % 200; ++w) text += " word" + std::to_string((i * w) % 97);
    s += "{\"id\": " + std::to_string(i) + ", \"text\": \"" + text + "\"}\n";
  }
  fs::write_file_atomic(d / name, s, false);
  return d / name;
}

std::string zstd_compress(const std::string& s) {
  std::string out(ZSTD_compressBound(s.size()), '\0');
  size_t n = ZSTD_compress(out.data(), out.size(), s.data(), s.size(), 3);
  out.resize(n);
  return out;
}

PrepOptions options(const std::string& input, const std::string& out, int workers) {
  PrepOptions o;
  o.source.source = "jsonl";
  o.source.files = {input};
  o.output = out;
  o.name = "test";
  o.tokenizer = "bytes";
  o.num_shards = 3;
  o.tokens_per_shard = 20000;
  o.min_tokens = 20;
  o.workers = workers;
  o.fsync = false;
  return o;
}

// Every file under dir (relative path -> bytes), except the manifest's timestamp.
std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : sfs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) {
      std::string rel = sfs::relative(e.path(), dir).string();
      std::string bytes = fs::read_file(e.path().string());
      if (rel == "manifest.json") {
        auto j = nlohmann::json::parse(bytes);
        j.erase("created_at");
        bytes = j.dump();
      }
      out[rel] = bytes;
    }
  return out;
}

TEST(Prep, JsonlToShardsWithIndexAndManifest) {
  test::TempDir d;
  auto in = write_jsonl(d, 300);
  PrepResult r = prep_dataset(options(in, d / "out", 2));
  const Manifest& m = r.manifest;
  EXPECT_FALSE(r.already_prepared);
  EXPECT_EQ(m.tokenizer, "bytes");
  EXPECT_EQ(m.dtype, "uint16");
  EXPECT_EQ(m.eos_token_id, 256);
  EXPECT_GT(m.shards.size(), 3u);  // several rounds
  EXPECT_EQ(m.stats["documents_read"], 300);
  EXPECT_GT(m.stats["dropped_short"].get<int64_t>(), 0);
  EXPECT_EQ(m.total_documents, m.stats["documents_kept"].get<int64_t>());
  int64_t tokens = 0, docs = 0;
  for (const ShardEntry& s : m.shards) {
    EXPECT_EQ(s.path.rfind("shard_000", 0), 0u) << s.path;
    EXPECT_NE(s.path.find("test-v1-shard-"), std::string::npos);
    auto idx = read_shard_index(d / "out/" + s.index_path);
    EXPECT_EQ(static_cast<int64_t>(idx.size()), s.num_documents);
    NpyTokenFile f = NpyTokenFile::open(d / "out/" + s.path);
    for (auto [b, e] : idx) EXPECT_EQ(f.at(e - 1), 256u);
    tokens += s.num_tokens;
    docs += s.num_documents;
  }
  EXPECT_EQ(tokens, m.total_tokens);
  EXPECT_EQ(docs, m.total_documents);
  VerifyReport v = verify_dataset(d / "out");
  EXPECT_TRUE(v.ok()) << (v.problems.empty() ? "" : v.problems[0]);
  // Running again with the same options is a no-op.
  EXPECT_TRUE(prep_dataset(options(in, d / "out", 2)).already_prepared);
  // Other options into the same directory are refused.
  PrepOptions other = options(in, d / "out", 2);
  other.min_tokens = 5;
  EXPECT_THROW(prep_dataset(other), Error);
}

TEST(Prep, DocumentTextIsTheFieldStrippedPlusEos) {
  test::TempDir d;
  fs::write_file_atomic(d / "a.jsonl", "{\"text\": \"  hello world\\n\"}\n\n{\"text\": \"second doc here\"}\n", false);
  PrepOptions o = options(d / "a.jsonl", d / "out", 1);
  o.min_tokens = 1;
  o.num_shards = 1;
  Manifest m = prep_dataset(o).manifest;
  ASSERT_EQ(m.shards.size(), 1u);
  NpyTokenFile f = NpyTokenFile::open(d / "out/" + m.shards[0].path);
  std::string got;
  for (size_t i = 0; i < f.size(); ++i) got += f.at(i) == 256 ? '|' : static_cast<char>(f.at(i));
  EXPECT_EQ(got, "hello world|second doc here|");
}

TEST(Prep, OutputDoesNotDependOnWorkers) {
  test::TempDir d;
  auto in = write_jsonl(d, 400);
  prep_dataset(options(in, d / "w1", 1));
  prep_dataset(options(in, d / "w2", 2));
  prep_dataset(options(in, d / "w3", 3));
  EXPECT_EQ(snapshot(d / "w1"), snapshot(d / "w2"));
  EXPECT_EQ(snapshot(d / "w1"), snapshot(d / "w3"));
}

TEST(Prep, KilledPrepResumesToIdenticalOutput) {
  test::TempDir d;
  auto in = write_jsonl(d, 500);
  const std::string n = test::n_binary();
  const std::string args = " data prep --source jsonl --data-files " + in +
                           " --tokenizer bytes --name test --num-shards 3 --tokens-per-shard 20000 --min-tokens 20"
                           " --no-fsync --workers 2 --output ";
  auto full = test::run_command(n + args + d / "full");
  ASSERT_EQ(full.exit_code, 0) << full.output;
  // Crash right after the third round is saved, then run the same command again.
  auto crashed = test::run_command("NMOE_PREP_CRASH_AFTER_SAVE=3 " + n + args + d / "part");
  ASSERT_EQ(crashed.exit_code, 86) << crashed.output;
  EXPECT_TRUE(fs::exists(d / "part/.prep_state.json"));
  EXPECT_FALSE(fs::exists(d / "part/manifest.json"));
  auto resumed = test::run_command(n + args + d / "part");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resuming after"), std::string::npos) << resumed.output;
  EXPECT_EQ(snapshot(d / "full"), snapshot(d / "part"));
  EXPECT_FALSE(fs::exists(d / "part/.prep_state.json"));
}

TEST(Prep, CompressedJsonlAndTextFormats) {
  test::TempDir d;
  auto in = write_jsonl(d, 50);
  fs::write_file_atomic(d / "docs.jsonl.zst", zstd_compress(fs::read_file(in)), false);
  PrepOptions plain = options(in, d / "plain", 2), zst = options(d / "docs.jsonl.zst", d / "zst", 2);
  zst.source.source = "jsonl_zst";
  prep_dataset(plain);
  prep_dataset(zst);
  auto a = snapshot(d / "plain"), b = snapshot(d / "zst");
  a.erase("manifest.json");  // names its own input files
  b.erase("manifest.json");
  EXPECT_EQ(a, b);

  fs::write_file_atomic(d / "wiki.txt",
                        "<doc id=\"1\" url=\"u\" title=\"A\">\nA\n\nFirst article text is here.\n</doc>\n"
                        "<doc id=\"2\" url=\"u\" title=\"B\">\nB\n\nSecond article, longer text.\n</doc>\n",
                        false);
  PrepOptions w = options(d / "wiki.txt", d / "wiki", 1);
  w.source.source = "text";
  w.source.text_format = "wikiextractor";
  w.min_tokens = 1;
  w.num_shards = 1;
  Manifest m = prep_dataset(w).manifest;
  EXPECT_EQ(m.total_documents, 2);
  NpyTokenFile f = NpyTokenFile::open(d / "wiki/" + m.shards[0].path);
  std::string got;
  for (size_t i = 0; i < f.size(); ++i) got += f.at(i) == 256 ? '|' : static_cast<char>(f.at(i));
  EXPECT_EQ(got, "A\n\nFirst article text is here.|B\n\nSecond article, longer text.|");
}

TEST(Prep, TokenBudgetStopsAfterTheCrossingDocument) {
  test::TempDir d;
  auto in = write_jsonl(d, 300);
  PrepOptions o = options(in, d / "out", 2);
  o.max_tokens_total = 5000;
  Manifest m = prep_dataset(o).manifest;
  EXPECT_GE(m.total_tokens, 5000);
  EXPECT_LT(m.total_tokens, 5000 + 1500);
}

TEST(Prep, InvalidUtf8IsReplacedCountedAndReported) {
  test::TempDir d;
  std::string bad = "good text then \xff\xfe bad bytes and more words to pass the minimum";
  fs::write_file_atomic(d / "bad.txt", bad, false);
  PrepOptions o = options(d / "bad.txt", d / "out", 1);
  o.source.source = "text";
  std::ostringstream log;
  o.log = &log;
  Manifest m = prep_dataset(o).manifest;
  EXPECT_EQ(m.stats["invalid_utf8_replaced"], 2);
  EXPECT_EQ(m.stats["documents_with_invalid_utf8"], 1);
  EXPECT_NE(log.str().find("bad.txt"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("invalid UTF-8"), std::string::npos) << log.str();
}

// The text of the prepared tokens of the bytes tokenizer, EOS written as '|'.
std::string shard_text(const std::string& dir, const Manifest& m) {
  std::string got;
  for (const ShardEntry& s : m.shards) {
    NpyTokenFile f = NpyTokenFile::open(dir + "/" + s.path);
    for (size_t i = 0; i < f.size(); ++i) got += f.at(i) == 256 ? '|' : static_cast<char>(f.at(i));
  }
  return got;
}

TEST(Prep, InvalidUtf8InJsonLinesIsReplacedCountedAndReported) {
  test::TempDir d;
  // Line 1: a raw invalid byte. Line 2: a lone surrogate escape; the pair, the
  // escaped backslash before "udc00" and the other field stay as they are.
  const std::string jsonl =
      "{\"text\": \"raw \xff byte\"}\n"
      "{\"id\": \"\\\"\", \"text\": \"lone \\ud800 surrogate, pair \\ud83d\\ude00, text \\\\udc00\"}\n";
  fs::write_file_atomic(d / "bad.jsonl", jsonl, false);
  fs::write_file_atomic(d / "bad.jsonl.zst", zstd_compress(jsonl), false);
  for (const std::string source : {"jsonl", "jsonl_zst"}) {
    PrepOptions o = options(d / (source == "jsonl" ? "bad.jsonl" : "bad.jsonl.zst"), d / source, 1);
    o.source.source = source;
    o.min_tokens = 1;
    o.num_shards = 1;
    std::ostringstream log;
    o.log = &log;
    Manifest m = prep_dataset(o).manifest;
    EXPECT_EQ(shard_text(d / source, m),
              "raw \xEF\xBF\xBD byte|lone \xEF\xBF\xBD surrogate, pair \xF0\x9F\x98\x80, text \\udc00|");
    EXPECT_EQ(m.stats["invalid_utf8_replaced"], 2);
    EXPECT_EQ(m.stats["documents_with_invalid_utf8"], 2);
    test::expect_parts(log.str(), {"invalid UTF-8 in " + o.source.files[0] + ":1",
                                   "invalid UTF-8 in " + o.source.files[0] + ":2", "replaced 2 invalid UTF-8"});
  }
}

TEST(Prep, BadInputsGiveClearErrors) {
  test::TempDir d;
  fs::write_file_atomic(d / "nofield.jsonl", "{\"text\": \"fine\"}\n{\"body\": \"oops\"}\n", false);
  std::string msg = test::error_of([&] { prep_dataset(options(d / "nofield.jsonl", d / "o1", 1)); });
  test::expect_parts(msg, {"nofield.jsonl:2", "\"text\"", "body", "--text-field"});

  fs::write_file_atomic(d / "broken.jsonl", "{\"text\": \"fine\"}\n{not json\n", false);
  msg = test::error_of([&] { prep_dataset(options(d / "broken.jsonl", d / "o2", 1)); });
  test::expect_parts(msg, {"broken.jsonl:2", "JSON"});

  fs::write_file_atomic(d / "empty.jsonl", "", false);
  msg = test::error_of([&] { prep_dataset(options(d / "empty.jsonl", d / "o3", 1)); });
  test::expect_parts(msg, {"no tokens", "empty.jsonl", "0 documents read", "no documents"});

  fs::write_file_atomic(d / "short.jsonl", "{\"text\": \"hi\"}\n", false);
  msg = test::error_of([&] { prep_dataset(options(d / "short.jsonl", d / "o6", 1)); });
  test::expect_parts(msg, {"no tokens", "short.jsonl", "1 documents read", "--min-tokens 20"});

  msg = test::error_of([&] { prep_dataset(options(d / "missing.jsonl", d / "o4", 1)); });
  test::expect_parts(msg, {"missing.jsonl", "does not exist"});

  PrepOptions o = options(d / "nofield.jsonl", d / "o5", 1);
  o.tokenizer = "gpt5";
  msg = test::error_of([&] { prep_dataset(o); });
  test::expect_parts(msg, {"gpt5"});
}

TEST(Verify, DetectsCorruptionTruncationAndStrayFiles) {
  test::TempDir d;
  auto in = write_jsonl(d, 200);
  Manifest m = prep_dataset(options(in, d / "out", 2)).manifest;
  ASSERT_TRUE(verify_dataset(d / "out").ok());
  const std::string shard = d / "out/" + m.shards[0].path;
  std::string bytes = fs::read_file(shard);

  std::string flipped = bytes;
  flipped[flipped.size() - 2] ^= 0x01;
  fs::write_file_atomic(shard, flipped, false);
  VerifyReport r = verify_dataset(d / "out");
  ASSERT_FALSE(r.ok());
  test::expect_parts(r.problems[0], {m.shards[0].path, "checksum"});

  fs::write_file_atomic(shard, bytes.substr(0, bytes.size() - 10), false);
  r = verify_dataset(d / "out");
  ASSERT_FALSE(r.ok());
  test::expect_parts(r.problems[0], {m.shards[0].path, "truncated"});

  fs::write_file_atomic(shard, bytes, false);
  std::vector<uint32_t> junk = {1, 2, 3};
  write_npy_tokens(d / "out/shard_0000/stray.npy", junk.data(), junk.size(), DType::U16, false);
  r = verify_dataset(d / "out");
  ASSERT_EQ(r.problems.size(), 1u);
  test::expect_parts(r.problems[0], {"stray.npy", "not listed"});

  auto cli = test::run_command(test::n_binary() + " data verify " + d / "out");
  EXPECT_EQ(cli.exit_code, 1) << cli.output;
  sfs::remove(d / "out/shard_0000/stray.npy");
  cli = test::run_command(test::n_binary() + " data verify " + d / "out");
  EXPECT_EQ(cli.exit_code, 0) << cli.output;
  cli = test::run_command(test::n_binary() + " data info " + d / "out");
  EXPECT_EQ(cli.exit_code, 0) << cli.output;
  EXPECT_NE(cli.output.find("bytes"), std::string::npos);
}

TEST(Verify, TokenIdOutsideTheVocabulary) {
  test::TempDir d;
  auto in = write_jsonl(d, 50);
  Manifest m = prep_dataset(options(in, d / "out", 1)).manifest;
  m.vocab_size = 100;  // the shards hold bytes >= 100
  m.write(d / "out", false);
  VerifyReport r = verify_dataset(d / "out", false);
  ASSERT_FALSE(r.ok());
  test::expect_parts(r.problems[0], {"token id", ">= vocab_size 100"});
}

TEST(Verify, ManifestMismatchWithConfigIsRefused) {
  test::TempDir d;
  auto in = write_jsonl(d, 50);
  prep_dataset(options(in, d / "out", 1));
  EXPECT_NO_THROW(check_dataset_matches(d / "out", "bytes", 264, 256));
  std::string msg = test::error_of([&] { check_dataset_matches(d / "out", "gpt2", 50304, 50256); });
  test::expect_parts(msg, {"manifest.json", "bytes", "gpt2"});
  msg = test::error_of([&] { check_dataset_matches(d / "out", "bytes", 200, 256); });
  test::expect_parts(msg, {"vocab_size"});
}

TEST(Verify, TrainStartCheckFindsStrayMissingAndTruncatedShards) {
  test::TempDir d;
  auto in = write_jsonl(d, 200);
  Manifest m = prep_dataset(options(in, d / "out", 2)).manifest;
  const std::string dir = d / "out", shard = dir + "/" + m.shards[0].path;
  EXPECT_NO_THROW(check_shards_match_manifest(dir));

  std::vector<uint32_t> junk = {1, 2, 3};
  write_npy_tokens(dir + "/shard_0001/stray.npy", junk.data(), junk.size(), DType::U16, false);
  std::string msg = test::error_of([&] { check_shards_match_manifest(dir); });
  test::expect_parts(msg, {dir + "/shard_0001/stray.npy", "not listed", "manifest.json", "n data verify " + dir});
  sfs::remove(dir + "/shard_0001/stray.npy");

  const std::string bytes = fs::read_file(shard);
  NpyTokenFile f = NpyTokenFile::open(shard);
  std::vector<uint32_t> fewer;
  for (size_t i = 0; i + 5 < f.size(); ++i) fewer.push_back(f.at(i));
  write_npy_tokens(shard, fewer.data(), fewer.size(), DType::U16, false);  // a valid .npy, 5 tokens short
  msg = test::error_of([&] { check_shards_match_manifest(dir); });
  test::expect_parts(msg, {shard, std::to_string(fewer.size()) + " tokens", std::to_string(m.shards[0].num_tokens),
                           "n data verify " + dir});

  fs::write_file_atomic(shard, bytes.substr(0, bytes.size() - 10), false);  // cut inside the data
  msg = test::error_of([&] { check_shards_match_manifest(dir); });
  test::expect_parts(msg, {shard, "truncated", "n data verify " + dir});

  sfs::remove(shard);
  msg = test::error_of([&] { check_shards_match_manifest(dir); });
  test::expect_parts(msg, {shard, "missing", "n data verify " + dir});
}

TEST(HubFiles, SplitSelection) {
  std::vector<std::string> paths = {"README.md", "data/train-00000-of-00002.parquet",
                                    "data/train-00001-of-00002.parquet", "data/validation-00000.parquet",
                                    "train/part-0.jsonl.zst", "sample/x.parquet"};
  SourceSpec s;
  s.split = "train";
  EXPECT_EQ(select_hub_files(paths, s),
            (std::vector<std::string>{"data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet",
                                      "train/part-0.jsonl.zst"}));
  s.split = "validation";
  EXPECT_EQ(select_hub_files(paths, s), std::vector<std::string>{"data/validation-00000.parquet"});
  s.files = {"sample/*"};
  EXPECT_EQ(select_hub_files(paths, s), std::vector<std::string>{"sample/x.parquet"});
}

}  // namespace
}  // namespace nmoe
