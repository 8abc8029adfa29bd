// Token shards for training tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/fs.h"
#include "data/npy.h"
#include "test_util.h"

namespace nmoe::test {

// Byte-tokenized shards of the first `chars` characters of tinyshakespeare:
// two shards of half each, both ending in EOS (256). Returns dir.
inline std::string write_byte_shards(const std::string& dir, size_t chars = 200000) {
  const std::string text = fs::read_file(source_dir() + "/data/corpus/tinyshakespeare.txt").substr(0, chars);
  std::vector<uint32_t> a, b;
  for (size_t i = 0; i < text.size(); ++i) (i < chars / 2 ? a : b).push_back(static_cast<unsigned char>(text[i]));
  a.push_back(256);
  b.push_back(256);
  write_npy_tokens(dir + "/shard_0000/a.npy", a.data(), a.size(), DType::U16, false);
  write_npy_tokens(dir + "/shard_0001/b.npy", b.data(), b.size(), DType::U16, false);
  return dir;
}

}  // namespace nmoe::test
