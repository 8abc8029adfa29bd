// Our tokenizers against OpenAI's tiktoken: ids made by
// tests/reference/make_tokenizer_vectors.py (see its header) for the edge cases,
// tinyshakespeare and the enwiki_2015 validation text must be reproduced
// exactly. Skips when the fixtures (or ../shared, for Wikipedia) are absent.
// NMOE_TOKENIZER_FIXTURES=DIR reads the fixtures from another directory.
#include <gtest/gtest.h>
#include <zstd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/sha256.h"
#include "tokenizer/internal.h"
#include "tokenizer/tokenizer.h"
#include "test_tokenizer_util.h"

namespace nmoe {
namespace {

using Ids = std::vector<uint32_t>;
using nlohmann::json;

std::string source_dir() { return NMOE_SOURCE_DIR; }
std::string shared_dir() { return NMOE_SHARED_DIR; }
bool file_exists(const std::string& p) { return std::filesystem::exists(p); }

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  NMOE_CHECK(f.good(), "cannot read ", path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string fixture_dir() {
  if (const char* d = std::getenv("NMOE_TOKENIZER_FIXTURES"); d && *d) return d;
  return source_dir() + "/tests/reference/fixtures";
}

std::string hex_ids_sha256(const Ids& ids) {  // ids as uint32 little-endian (x86/ARM hosts)
  return sha256_hex(ids.data(), ids.size() * sizeof(uint32_t));
}

Ids read_ids(const std::string& file) {
  const std::string b = read_bytes(fixture_dir() + "/" + file);
  Ids ids(b.size() / 4);
  std::memcpy(ids.data(), b.data(), ids.size() * 4);
  return ids;
}

std::string zstd_decompress_file(const std::string& path) {
  const std::string in = read_bytes(path);
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> ctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  std::string out;
  std::vector<char> buf(1 << 20);
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  while (ib.pos < ib.size) {
    ZSTD_outBuffer ob{buf.data(), buf.size(), 0};
    const size_t rc = ZSTD_decompressStream(ctx.get(), &ob, &ib);
    NMOE_CHECK(!ZSTD_isError(rc), path, ": ", ZSTD_getErrorName(rc));
    out.append(buf.data(), ob.pos);
  }
  return out;
}

// The edge-case file syntax (see its header and unescape() in the script).
std::vector<std::string> edge_case_texts(const std::string& raw) {
  std::vector<std::string> texts;
  size_t line_no = 0;
  for (size_t pos = 0; pos <= raw.size();) {
    size_t nl = raw.find('\n', pos);
    if (nl == std::string::npos) nl = raw.size();
    const std::string line = raw.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    std::string out;
    for (size_t i = 0; i < line.size();) {
      if (line[i] != '\\') {
        out += line[i++];
        continue;
      }
      NMOE_CHECK(i + 1 < line.size(), "edge cases line ", line_no, ": lone backslash");
      const char e = line[i + 1];
      if (e == '\\' || e == 'n' || e == 'r' || e == 't') {
        out += e == '\\' ? '\\' : e == 'n' ? '\n' : e == 'r' ? '\r' : '\t';
        i += 2;
      } else if (e == 'x') {
        out += static_cast<char>(std::stoi(line.substr(i + 2, 2), nullptr, 16));
        i += 4;
      } else if (e == 'u') {
        const size_t close = line.find('}', i);
        NMOE_CHECK(line[i + 2] == '{' && close != std::string::npos, "edge cases line ", line_no, ": bad \\u");
        const uint32_t cp = static_cast<uint32_t>(std::stoul(line.substr(i + 3, close - i - 3), nullptr, 16));
        out += tokenizer_test::utf8(cp);
        i = close + 1;
      } else {
        fail("edge cases line ", line_no, ": unknown escape \\", e);
      }
    }
    sanitize_utf8(out);
    texts.push_back(std::move(out));
  }
  return texts;
}

std::string show_ids(const Tokenizer& t, const Ids& ids, size_t from, size_t to) {
  std::string s;
  for (size_t i = from; i < std::min(to, ids.size()); ++i)
    s += std::to_string(ids[i]) + testing::PrintToString(t.token_bytes(ids[i])) + " ";
  return s;
}

// Exact comparison with a readable report of the first difference.
void expect_same_ids(const Tokenizer& t, const Ids& want, const Ids& got, const std::string& what) {
  if (want == got) return;
  size_t i = 0;
  while (i < want.size() && i < got.size() && want[i] == got[i]) ++i;
  const size_t from = i > 5 ? i - 5 : 0;
  ADD_FAILURE() << t.name() << " " << what << ": ids differ at " << i << " (tiktoken " << want.size() << " ids, ours "
                << got.size() << ")\n  tiktoken: " << show_ids(t, want, from, i + 8)
                << "\n  ours:     " << show_ids(t, got, from, i + 8);
}

class TokenizerVectors : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string path = fixture_dir() + "/tokenizer_vectors.json";
    if (!file_exists(path))
      GTEST_SKIP() << "no tiktoken fixtures at " << path
                   << ": run tests/reference/make_tokenizer_vectors.py --out tests/reference/fixtures "
                      "--wiki <enwiki_2015_wikiextractor.val.txt.zst> where tiktoken is installed";
    index_ = json::parse(read_bytes(path));
    ASSERT_TRUE(index_["vectors"].contains(GetParam())) << "fixtures lack " << GetParam();
    tok_ = load_tokenizer(GetParam());
    vec_ = index_["vectors"][GetParam()];
  }
  json index_, vec_;
  std::shared_ptr<const Tokenizer> tok_;
};

TEST_P(TokenizerVectors, VocabularyAndSpecialTokens) {
  const json& info = index_["tokenizers"][GetParam()];
  const Tokenizer& t = *tok_;
  EXPECT_EQ(t.vocab_size(), info["n_vocab"].get<uint32_t>());
  EXPECT_EQ(t.eos_id(), info["eot_token"].get<uint32_t>());
  const auto pattern = GetParam() == "gpt2" ? tok::SplitPattern::kGpt2 : tok::SplitPattern::kO200k;
  EXPECT_EQ(info["pat_str"].get<std::string>(), tok::tiktoken_pattern(pattern));
  std::map<uint32_t, std::set<std::string>> specials;  // o200k_harmony names 200018 twice
  for (const auto& p : info["special_tokens"]) specials[p[0].get<uint32_t>()].insert(p[1].get<std::string>());
  for (const auto& [id, names] : specials) EXPECT_TRUE(names.count(t.token_bytes(id))) << id << " " << t.token_bytes(id);
  // every other id with bytes is a mergeable token, in rank order: same digest as tiktoken's ranks
  Sha256 h;
  size_t mergeable = 0;
  for (uint32_t id = 0; id < t.vocab_size(); ++id) {
    if (specials.count(id)) continue;
    const std::string b = t.token_bytes(id);
    if (b.empty()) continue;
    const uint32_t head[2] = {id, static_cast<uint32_t>(b.size())};
    h.update(head, sizeof head);
    h.update(b.data(), b.size());
    ++mergeable;
  }
  EXPECT_EQ(mergeable, info["num_mergeable"].get<size_t>());
  EXPECT_EQ(h.hex_digest(), info["mergeable_sha256"].get<std::string>());
}

// Texts encoded one by one: vectors[name][set]["counts"][k] ids for text k, in order.
void expect_chunked(const Tokenizer& t, const json& meta, const json& vec, const std::vector<std::string>& texts,
                    const std::string& what) {
  ASSERT_EQ(texts.size(), vec["counts"].size());
  const Ids all = read_ids(vec["file"]);
  ASSERT_EQ(hex_ids_sha256(all), vec["sha256"].get<std::string>());
  size_t start = 0;
  for (size_t k = 0; k < texts.size(); ++k) {
    if (meta.contains("chunks")) {
      ASSERT_EQ(sha256_hex(texts[k]), meta["chunks"][k]["sha256"].get<std::string>())
          << what << " text " << k << " is read differently from the script: " << testing::PrintToString(texts[k]);
    }
    const size_t count = vec["counts"][k];
    ASSERT_LE(start + count, all.size());
    const Ids want(all.begin() + static_cast<long>(start), all.begin() + static_cast<long>(start + count));
    start += count;
    expect_same_ids(t, want, t.encode_ordinary(texts[k]), what + " " + testing::PrintToString(texts[k]));
  }
  EXPECT_EQ(start, all.size());
}

TEST_P(TokenizerVectors, EdgeCases) {
  const json& meta = index_["texts"]["edge"];
  const std::string raw = read_bytes(source_dir() + "/" + meta["source"].get<std::string>());
  ASSERT_EQ(sha256_hex(raw), meta["source_sha256"].get<std::string>())
      << "tokenizer_edge_cases.txt changed since the fixtures were made: run the script again";
  expect_chunked(*tok_, meta, vec_["edge"], edge_case_texts(raw), "edge case");
}

TEST_P(TokenizerVectors, FuzzTexts) {
  const json& meta = index_["texts"]["fuzz"];
  const std::string raw = read_bytes(fixture_dir() + "/" + meta["source"].get<std::string>());
  ASSERT_EQ(sha256_hex(raw), meta["source_sha256"].get<std::string>());
  const auto texts = json::parse(raw).get<std::vector<std::string>>();
  expect_chunked(*tok_, meta, vec_["fuzz"], texts, "fuzz text");
}

TEST_P(TokenizerVectors, Shakespeare) {
  const json& meta = index_["texts"]["shakespeare"];
  std::string text = read_bytes(source_dir() + "/" + meta["source"].get<std::string>());
  sanitize_utf8(text);
  ASSERT_EQ(sha256_hex(text), meta["sha256"].get<std::string>());
  const Ids want = read_ids(vec_["shakespeare"]["file"]);
  ASSERT_EQ(hex_ids_sha256(want), vec_["shakespeare"]["sha256"].get<std::string>());
  expect_same_ids(*tok_, want, tok_->encode_ordinary(text), "tinyshakespeare");
}

TEST_P(TokenizerVectors, Wikipedia) {
  if (!index_["texts"].contains("wiki")) GTEST_SKIP() << "the fixtures were made without --wiki";
  const json& meta = index_["texts"]["wiki"];
  const std::string path = shared_dir() + "/data/corpus/enwiki_2015/" + meta["source"].get<std::string>();
  if (!file_exists(path)) GTEST_SKIP() << path << " is absent (../shared is not mounted)";
  const std::string raw = meta["source"].get<std::string>().ends_with(".zst") ? zstd_decompress_file(path)
                                                                               : read_bytes(path);
  ASSERT_EQ(sha256_hex(raw), meta["raw_sha256"].get<std::string>());
  std::string prefix = raw.substr(0, meta["prefix_raw_bytes"].get<size_t>());
  sanitize_utf8(prefix);
  ASSERT_EQ(sha256_hex(prefix), meta["sha256"].get<std::string>());
  const Ids want = read_ids(vec_["wiki"]["file"]);
  ASSERT_EQ(hex_ids_sha256(want), vec_["wiki"]["sha256"].get<std::string>());
  expect_same_ids(*tok_, want, tok_->encode_ordinary(prefix), "wiki prefix");

  std::string full = raw;
  sanitize_utf8(full);
  ASSERT_EQ(sha256_hex(full), meta["full_sha256"].get<std::string>());
  const Ids got = tok_->encode_ordinary(full);
  EXPECT_EQ(got.size(), vec_["wiki_full"]["count"].get<size_t>());
  EXPECT_EQ(hex_ids_sha256(got), vec_["wiki_full"]["sha256"].get<std::string>()) << "whole Wikipedia text";
}

INSTANTIATE_TEST_SUITE_P(Tiktoken, TokenizerVectors, testing::Values("gpt2", "o200k_base", "o200k_harmony"),
                         [](const testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace nmoe
