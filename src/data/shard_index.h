// Document index of a token shard: <shard>.idx beside <shard>.npy.
// Layout (little-endian): 32-byte header {char magic[8] = "NMOEIDX\0", u64 version = 1,
// u64 num_docs, u64 reserved = 0}, then num_docs pairs of u64 (start, end) token
// offsets, end exclusive. Documents are contiguous and each ends with EOS.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace nmoe {

using DocSpan = std::pair<uint64_t, uint64_t>;

std::string index_path_for(const std::string& npy_path);  // a/b.npy -> a/b.idx
void write_shard_index(const std::string& path, const std::vector<DocSpan>& docs, bool fsync);
// Throws Error naming the file for a bad magic, version, size, or non-contiguous spans.
std::vector<DocSpan> read_shard_index(const std::string& path);

}  // namespace nmoe
