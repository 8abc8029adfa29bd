// Plain-text to token shards with the byte tokenizer (ids 0-255 are bytes,
// 256 is EOS): the simplest path from raw text to `n train`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace nmoe {

struct TextPrepResult {
  int64_t documents = 0;
  int64_t tokens = 0;
  std::vector<std::string> shards;
};

// Each input file is one document; EOS (256) is appended to every document.
// Writes <output>/<name>-<version>-shard-000000.npy (uint16) and manifest.json.
TextPrepResult prep_text_bytes(const std::vector<std::string>& files, const std::string& output,
                               const std::string& name, const std::string& version, bool fsync = true);

}  // namespace nmoe
