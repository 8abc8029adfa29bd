// Documents of a raw dataset, in a deterministic order: local text, JSON
// lines (optionally zstd/gzip-compressed) or Parquet files, or a dataset on
// the HuggingFace hub (listed, downloaded to the cache, then read the same way).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

namespace nmoe {

struct SourceSpec {
  std::string source;               // text | jsonl | jsonl_zst | parquet | hf
  std::vector<std::string> files;   // local files, or for hf glob patterns over repo paths
  std::string text_field = "text";  // jsonl key (dots for nested keys) or parquet column
  std::string text_format = "plain";  // text files: plain (one document per file) | lines | wikiextractor
  std::string dataset;              // hf: owner/name
  std::string split = "train";      // hf: which files, when no patterns are given
  std::string revision = "main";
};

class DocSource {
 public:
  virtual ~DocSource() = default;
  // Next document's raw bytes; false at the end.
  virtual bool next(std::string& text) = 0;
  // Where the last document came from (file and line or row), for messages.
  virtual std::string where() const = 0;
  // Fraction of the input consumed in [0, 1], or -1 when unknown.
  virtual double fraction_done() const = 0;
  // Description of the input for the manifest's source_info.
  virtual std::string describe() const = 0;
  // Invalid UTF-8 sequences (and lone surrogate escapes) that the source itself
  // replaced with U+FFFD in the last document: JSON lines are repaired before
  // parsing, other sources return raw bytes for prep to repair.
  virtual int64_t invalid_utf8_replaced() const { return 0; }
};

// Validates the spec (files exist, hf files resolved) and opens the source.
// log receives notices such as downloads (may be nullptr).
std::unique_ptr<DocSource> open_doc_source(const SourceSpec& spec, std::ostream* log);

// For hf: the repo paths a spec selects from a listing (sorted). Patterns use
// shell globs; without patterns, files of the split by name ("train-*",
// "train/...", "*-train-*", ...) with a readable extension.
std::vector<std::string> select_hub_files(const std::vector<std::string>& repo_paths, const SourceSpec& spec);

}  // namespace nmoe
