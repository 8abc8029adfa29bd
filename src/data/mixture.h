// Weighted mixture of shard directories. Every sequence of the global stream
// comes from one source, chosen by smooth weighted round-robin on fixed-point
// weights (deterministic, evenly interleaved). With total_tokens set, each
// source gets a quota of sequences (largest-remainder split of
// total_tokens / seq_len by weight); a source that met its quota is skipped,
// and when all have, a new pass starts. The TOML file:
//
//   total_tokens = 100_000_000      # optional
//   [[source]]
//   name = "wiki"
//   path = "data/wiki/train"
//   weight = 3.0
//   [[source]]
//   name = "books"
//   path = "data/books/train"
//   weight = 1.0
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/loader.h"

namespace nmoe {

struct MixtureSource {
  std::string name, path;
  double weight = 1.0;
};

struct MixtureSpec {
  std::vector<MixtureSource> sources;
  int64_t total_tokens = 0;
  // Throws Error naming the file and key for unknown keys, bad weights, duplicate names.
  static MixtureSpec load(const std::string& toml_path);
};

// Sequences per source for a quota of total sequences (largest remainder).
std::vector<int64_t> mixture_quotas(const std::vector<int64_t>& fixed_weights, int64_t total_sequences);

class MixtureLoader : public DataLoader {
 public:
  MixtureLoader(const MixtureSpec& spec, int64_t seq_len, int64_t vocab_size);
  void next_batch(int64_t batch_size, int rank, int world, int32_t* out) override;
  nlohmann::json state() const override;
  void set_state(const nlohmann::json& state) override;
  std::string describe() const override;
  int64_t total_tokens() const override;
  void on_wrap(std::function<void(const std::string&)> cb) override;
  // Sequences taken from each source in the current pass.
  const std::vector<int64_t>& emitted() const { return emitted_; }

 private:
  size_t pick();
  MixtureSpec spec_;
  int64_t seq_len_;
  std::vector<std::unique_ptr<TokenLoader>> streams_;
  std::vector<int64_t> weight_, acc_, emitted_, quota_;
  int64_t passes_ = 0, sequences_ = 0;
  std::function<void(const std::string&)> on_wrap_;
};

// The loader a config asks for: mixture_toml or data_path.
std::unique_ptr<DataLoader> make_data_loader(const std::string& data_path, const std::string& mixture_toml,
                                             int64_t seq_len, int64_t vocab_size);

}  // namespace nmoe
