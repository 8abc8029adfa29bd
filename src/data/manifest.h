// manifest.json of a prepared dataset directory: what was tokenized, how, and
// every shard with its token/document counts and SHA-256 checksum.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace nmoe {

struct ShardEntry {
  std::string path;        // relative to the dataset directory
  std::string index_path;  // relative .idx path
  int64_t num_tokens = 0;
  int64_t num_documents = 0;
  std::string checksum;    // SHA-256 of the .npy file
};

struct Manifest {
  std::string dataset, version, tokenizer;
  int64_t vocab_size = 0, eos_token_id = 0;
  std::string dtype;  // "uint16" or "uint32"
  std::string created_at;
  int64_t total_tokens = 0, total_documents = 0;
  std::vector<ShardEntry> shards;
  nlohmann::json source_info = nlohmann::json::object();
  nlohmann::json stats = nlohmann::json::object();  // documents read, dropped, truncated, invalid UTF-8 replaced, ...
  std::string prep_fingerprint;                     // SHA-256 of the prep options that shape the output

  // Reads <dir>/manifest.json (or the file itself); throws Error naming the file on any missing or bad field.
  static Manifest read(const std::string& dir_or_file);
  void write(const std::string& dir, bool fsync) const;
  nlohmann::json to_json() const;
};

std::string manifest_path(const std::string& dir_or_file);
bool has_manifest(const std::string& dir);

struct VerifyReport {
  std::vector<std::string> problems;  // empty when the dataset is sound
  int64_t tokens = 0, documents = 0, shards = 0;
  bool ok() const { return problems.empty(); }
};

// Checks every shard against the manifest: file present, dtype, token count,
// SHA-256 (when checksums), .idx consistent with the shard (contiguous spans
// covering it, every document ending with EOS), every token id < vocab_size,
// totals, and no .npy files that the manifest does not list.
VerifyReport verify_dataset(const std::string& dir, bool checksums = true);

// Checks that a dataset made for (tokenizer, vocab, eos) can feed a model;
// throws Error naming the manifest and origin, the config key that names dir.
void check_dataset_matches(const std::string& dir, const std::string& tokenizer, int64_t vocab_size,
                           int64_t eos_token_id, const std::string& origin = "data_path");

// Checks that the .npy files under dir are exactly the shards its manifest
// lists, each holding the listed number of tokens (from the .npy header; the
// checksums are left to `n data verify`); throws Error naming the file.
void check_shards_match_manifest(const std::string& dir);

}  // namespace nmoe
