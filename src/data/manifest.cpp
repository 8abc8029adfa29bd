#include "data/manifest.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/fs.h"
#include "core/sha256.h"
#include "data/loader.h"
#include "data/npy.h"
#include "data/shard_index.h"

namespace nmoe {

using json = nlohmann::json;
namespace sfs = std::filesystem;

std::string manifest_path(const std::string& dir_or_file) {
  if (sfs::is_regular_file(dir_or_file)) return dir_or_file;
  return dir_or_file + "/manifest.json";
}

bool has_manifest(const std::string& dir) { return sfs::is_regular_file(dir + "/manifest.json"); }

json Manifest::to_json() const {
  json shards_j = json::array();
  for (const ShardEntry& s : shards)
    shards_j.push_back({{"path", s.path},
                        {"index_path", s.index_path},
                        {"num_tokens", s.num_tokens},
                        {"num_documents", s.num_documents},
                        {"checksum", s.checksum}});
  return {{"dataset", dataset},       {"version", version},
          {"tokenizer", tokenizer},   {"vocab_size", vocab_size},
          {"eos_token_id", eos_token_id}, {"dtype", dtype},
          {"created_at", created_at}, {"total_tokens", total_tokens},
          {"total_documents", total_documents}, {"num_shards", shards.size()},
          {"shards", shards_j},       {"source_info", source_info},
          {"stats", stats},           {"prep_fingerprint", prep_fingerprint}};
}

void Manifest::write(const std::string& dir, bool fsync) const {
  fs::write_file_atomic(dir + "/manifest.json", to_json().dump(2) + "\n", fsync);
}

Manifest Manifest::read(const std::string& dir_or_file) {
  const std::string path = manifest_path(dir_or_file);
  NMOE_CHECK(sfs::exists(path), "no manifest.json in '", dir_or_file, "'");
  Manifest m;
  try {
    json j = json::parse(fs::read_file(path));
    m.dataset = j.at("dataset").get<std::string>();
    m.version = j.value("version", "");
    m.tokenizer = j.at("tokenizer").get<std::string>();
    m.vocab_size = j.at("vocab_size").get<int64_t>();
    m.eos_token_id = j.at("eos_token_id").get<int64_t>();
    m.dtype = j.value("dtype", "uint32");
    m.created_at = j.value("created_at", "");
    m.total_tokens = j.at("total_tokens").get<int64_t>();
    m.total_documents = j.at("total_documents").get<int64_t>();
    for (const json& s : j.at("shards")) {
      ShardEntry e;
      e.path = s.at("path").get<std::string>();
      e.index_path = s.value("index_path", "");
      e.num_tokens = s.at("num_tokens").get<int64_t>();
      e.num_documents = s.at("num_documents").get<int64_t>();
      e.checksum = s.at("checksum").get<std::string>();
      m.shards.push_back(std::move(e));
    }
    if (j.contains("source_info")) m.source_info = j["source_info"];
    if (j.contains("stats")) m.stats = j["stats"];
    m.prep_fingerprint = j.value("prep_fingerprint", "");
  } catch (const json::exception& e) {
    fail("'", path, "' is not a valid dataset manifest: ", e.what());
  }
  NMOE_CHECK(m.dtype == "uint16" || m.dtype == "uint32", "'", path, "': dtype \"", m.dtype,
             "\" must be \"uint16\" or \"uint32\"");
  return m;
}

namespace {

void verify_shard(const std::string& dir, const ShardEntry& s, const Manifest& m, bool checksums,
                  VerifyReport& r) {
  const std::string npy = dir + "/" + s.path;
  auto problem = [&](const std::string& what) { r.problems.push_back(s.path + ": " + what); };
  if (!sfs::exists(npy)) return problem("missing");
  try {
    NpyTokenFile f = NpyTokenFile::open(npy);
    const std::string dt = f.dtype() == DType::U16 ? "uint16" : "uint32";
    if (dt != m.dtype) problem("dtype " + dt + ", manifest says " + m.dtype);
    if (static_cast<int64_t>(f.size()) != s.num_tokens)
      problem(std::to_string(f.size()) + " tokens, manifest says " + std::to_string(s.num_tokens));
    if (checksums) {
      std::string sum = sha256_file_hex(npy);
      if (sum != s.checksum) problem("checksum mismatch (SHA-256 " + sum + ", manifest " + s.checksum + ")");
    }
    for (size_t i = 0; i < f.size(); ++i)
      if (f.at(i) >= static_cast<uint64_t>(m.vocab_size)) {
        problem("token id " + std::to_string(f.at(i)) + " at position " + std::to_string(i) + " >= vocab_size " +
                std::to_string(m.vocab_size));
        break;
      }
    if (!s.index_path.empty()) {
      auto docs = read_shard_index(dir + "/" + s.index_path);
      if (static_cast<int64_t>(docs.size()) != s.num_documents)
        problem(std::to_string(docs.size()) + " documents in the index, manifest says " +
                std::to_string(s.num_documents));
      if (!docs.empty() && docs.back().second != f.size())
        problem("index covers " + std::to_string(docs.back().second) + " tokens, shard holds " +
                std::to_string(f.size()));
      for (size_t i = 0; i < docs.size(); ++i)
        if (docs[i].second <= f.size() && f.at(docs[i].second - 1) != static_cast<uint64_t>(m.eos_token_id)) {
          problem("document " + std::to_string(i) + " does not end with EOS " + std::to_string(m.eos_token_id));
          break;
        }
    }
    r.tokens += static_cast<int64_t>(f.size());
    r.documents += s.num_documents;
  } catch (const Error& e) {
    problem(e.what());
  }
}

// The .npy files in dir that m does not list (e.g. left over from an interrupted prep).
std::vector<std::string> unlisted_shards(const std::string& dir, const Manifest& m) {
  std::set<std::string> listed;
  for (const ShardEntry& s : m.shards) listed.insert(sfs::weakly_canonical(dir + "/" + s.path).string());
  std::vector<std::string> out;
  for (const std::string& f : list_shards(dir))
    if (!listed.count(sfs::weakly_canonical(f).string())) out.push_back(f);
  return out;
}

}  // namespace

VerifyReport verify_dataset(const std::string& dir, bool checksums) {
  VerifyReport r;
  Manifest m = Manifest::read(dir);
  for (const ShardEntry& s : m.shards) {
    verify_shard(dir, s, m, checksums, r);
    ++r.shards;
  }
  if (r.tokens != m.total_tokens)
    r.problems.push_back("shards hold " + std::to_string(r.tokens) + " tokens, manifest total_tokens is " +
                         std::to_string(m.total_tokens));
  if (r.documents != m.total_documents)
    r.problems.push_back("shards hold " + std::to_string(r.documents) + " documents, manifest total_documents is " +
                         std::to_string(m.total_documents));
  for (const std::string& f : unlisted_shards(dir, m))
    r.problems.push_back(sfs::relative(f, dir).string() + ": not listed in the manifest (left over from an interrupted prep?)");
  return r;
}

void check_dataset_matches(const std::string& dir, const std::string& tokenizer, int64_t vocab_size,
                           int64_t eos_token_id, const std::string& origin) {
  if (!sfs::is_directory(dir) || !has_manifest(dir)) return;
  Manifest m = Manifest::read(dir);
  const std::string what = "dataset '" + manifest_path(dir) + "' (" + origin + ")";
  NMOE_CHECK(m.tokenizer == tokenizer, what, " was tokenized with ", m.tokenizer, " but the config says tokenizer = \"",
             tokenizer, "\"; set tokenizer = \"", m.tokenizer, "\", point ", origin, " at data tokenized with ",
             tokenizer, ", or prepare the data again with --tokenizer ", tokenizer);
  NMOE_CHECK(m.vocab_size <= vocab_size, what, " has vocab_size ", m.vocab_size,
             ", larger than the config's vocab_size = ", vocab_size, "; raise vocab_size to at least ", m.vocab_size,
             " or point ", origin, " at other data");
  NMOE_CHECK(m.eos_token_id == eos_token_id, what, " uses EOS id ", m.eos_token_id,
             " but the config says eos_token_id = ", eos_token_id, "; set eos_token_id = ", m.eos_token_id,
             " or point ", origin, " at other data");
}

void check_shards_match_manifest(const std::string& dir) {
  const Manifest m = Manifest::read(dir);
  const std::string manifest = manifest_path(dir), verify = "run `n data verify " + dir + "` to check the dataset";
  for (const std::string& f : unlisted_shards(dir, m))
    fail("'", f, "' is not listed in ", manifest, " (left over from an interrupted prep, or copied in?); remove it, or ",
         verify);
  for (const ShardEntry& s : m.shards) {
    const std::string f = dir + "/" + s.path;
    NMOE_CHECK(sfs::is_regular_file(f), "shard '", f, "' listed in ", manifest, " is missing; ", verify,
               " and prepare it again");
    int64_t n = 0;
    try {
      n = static_cast<int64_t>(NpyTokenFile::open(f).size());
    } catch (const Error& e) {
      fail(e.what(), "; ", verify, " and prepare it again");
    }
    NMOE_CHECK(n == s.num_tokens, "shard '", f, "' holds ", n, " tokens but ", manifest, " says ", s.num_tokens,
               " (truncated or replaced?); ", verify, " and prepare it again");
  }
}

}  // namespace nmoe
