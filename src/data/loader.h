// Deterministic token-stream loader. The shards of a directory (every *.npy
// below it, sorted by path) form one stream; a sequence is seq_len + 1
// consecutive tokens (inputs = seq[:-1], targets = seq[1:]) and sequences do
// not overlap. Each optimizer step takes the next batch_size sequences of the
// global stream; rank r of W keeps a contiguous slice, so the data order does
// not depend on W. At the end of the stream the cursor wraps to the start.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/npy.h"

namespace nmoe {

// What the trainer reads batches from: one shard directory (TokenLoader) or a
// weighted mixture of several (MixtureLoader). The state is what a checkpoint
// stores to resume exactly.
class DataLoader {
 public:
  virtual ~DataLoader() = default;
  // Reads the next global batch of batch_size sequences of seq_len + 1 tokens
  // and keeps this rank's contiguous slice (see TokenLoader::slice_begin).
  virtual void next_batch(int64_t batch_size, int rank, int world, int32_t* out) = 0;
  virtual nlohmann::json state() const = 0;
  virtual void set_state(const nlohmann::json& state) = 0;
  virtual std::string describe() const = 0;
  virtual int64_t total_tokens() const = 0;
  // Called with a message whenever a stream wraps around.
  virtual void on_wrap(std::function<void(const std::string&)> cb) = 0;
};

struct LoaderCursor {
  int64_t file = 0;       // index into the sorted shard list
  int64_t pos = 0;        // token offset in that shard
  int64_t wraps = 0;      // completed passes over the whole stream
  int64_t sequences = 0;  // sequences emitted (global stream)
  bool operator==(const LoaderCursor&) const = default;
};

class TokenLoader : public DataLoader {
 public:
  // Opens every shard below path (or path itself if it is a .npy file) and
  // checks it; throws Error naming the directory if there is nothing to read.
  TokenLoader(const std::string& path, int64_t seq_len, int64_t vocab_size);

  // Reads the next global batch and keeps this rank's slice: out must hold
  // slice_size(batch, rank, world) * (seq_len + 1) tokens.
  void next_batch(int64_t batch_size, int rank, int world, int32_t* out) override;
  // One sequence of seq_len + 1 tokens (out) or, with out == nullptr, skip it.
  void next_sequence(int32_t* out);
  static int64_t slice_begin(int64_t batch, int rank, int world);
  static int64_t slice_size(int64_t batch, int rank, int world);

  const LoaderCursor& cursor() const { return cursor_; }
  void set_cursor(const LoaderCursor& c);
  int64_t total_tokens() const override { return total_tokens_; }
  nlohmann::json state() const override;
  void set_state(const nlohmann::json& state) override;
  std::string describe() const override;
  size_t num_files() const { return files_.size(); }
  const std::string& path() const { return path_; }
  // Called with a message whenever the stream wraps around.
  void on_wrap(std::function<void(const std::string&)> cb) override { on_wrap_ = std::move(cb); }

 private:
  void read_tokens(int64_t n, int32_t* out);  // n tokens from the cursor, advancing it
  void skip_tokens(int64_t n);
  void advance_file();

  std::string path_;
  int64_t seq_len_, vocab_size_;
  std::vector<NpyTokenFile> files_;
  int64_t total_tokens_ = 0;
  LoaderCursor cursor_;
  std::function<void(const std::string&)> on_wrap_;
};

// Sorted list of *.npy files below path (or {path} if it is one file).
std::vector<std::string> list_shards(const std::string& path);

}  // namespace nmoe
