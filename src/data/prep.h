// `n data prep`: raw documents -> token shards (.npy + .idx) and manifest.json.
//
// Documents are read in a fixed order, tokenized in parallel batches and
// written in order, so the output bytes do not depend on the worker count.
// Each document goes to shard directory hash(doc number) % num_shards, where
// shards roll over at tokens_per_shard tokens. The stream is cut into rounds of
// tokens_per_shard tokens: at the end of a round every open shard is written
// (temp file + rename) and the progress is saved to .prep_state.json, so a
// killed prep resumes at the last round and repeats at most one round of work.
// manifest.json is written last; a directory without it is not a dataset.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>

#include "data/doc_source.h"
#include "data/manifest.h"

namespace nmoe {

struct PrepOptions {
  SourceSpec source;
  std::string output;
  std::string name = "data";
  std::string version = "v1";
  std::string tokenizer = "o200k_harmony";
  int64_t num_shards = 1;                    // shard directories
  int64_t tokens_per_shard = 100'000'000;    // shard size, and the size of a round
  int64_t min_tokens = 10;                   // documents shorter than this (before EOS) are dropped
  int64_t max_tokens = 1'000'000;            // longer documents are truncated (before EOS)
  int64_t max_tokens_total = 0;              // stop after the document that reaches this many tokens; 0 = all
  int workers = 0;                           // tokenizer threads; 0 = all cores
  bool normalize_nfc = true;                 // Unicode NFC before tokenizing
  bool fsync = true;
  std::ostream* log = nullptr;               // progress and notices
};

struct PrepResult {
  Manifest manifest;
  bool already_prepared = false;  // the output was complete; nothing was done
  int64_t resumed_at_document = 0;
};

PrepResult prep_dataset(const PrepOptions& opt);

// SHA-256 of the options that determine the output bytes.
std::string prep_fingerprint(const PrepOptions& opt);

}  // namespace nmoe
