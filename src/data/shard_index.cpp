#include "data/shard_index.h"

#include <cstring>

#include "core/error.h"
#include "core/fs.h"

namespace nmoe {

namespace {
constexpr char kMagic[8] = {'N', 'M', 'O', 'E', 'I', 'D', 'X', '\0'};
constexpr uint64_t kVersion = 1;

void put_u64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t get_u64(const std::string& s, size_t off) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(s[off + i])) << (8 * i);
  return v;
}
}  // namespace

std::string index_path_for(const std::string& npy_path) {
  NMOE_CHECK(npy_path.size() > 4 && npy_path.compare(npy_path.size() - 4, 4, ".npy") == 0,
             "'", npy_path, "' is not a .npy path");
  return npy_path.substr(0, npy_path.size() - 4) + ".idx";
}

void write_shard_index(const std::string& path, const std::vector<DocSpan>& docs, bool fsync) {
  std::string s(kMagic, 8);
  put_u64(s, kVersion);
  put_u64(s, docs.size());
  put_u64(s, 0);
  for (const DocSpan& d : docs) {
    put_u64(s, d.first);
    put_u64(s, d.second);
  }
  fs::write_file_atomic(path, s, fsync);
}

std::vector<DocSpan> read_shard_index(const std::string& path) {
  std::string s = fs::read_file(path);
  NMOE_CHECK(s.size() >= 32 && std::memcmp(s.data(), kMagic, 8) == 0, "'", path,
             "' is not an nmoe document index (bad magic or shorter than its 32-byte header)");
  NMOE_CHECK(get_u64(s, 8) == kVersion, "'", path, "': index version ", get_u64(s, 8), ", expected ", kVersion);
  const uint64_t n = get_u64(s, 16);
  NMOE_CHECK(n <= (s.size() - 32) / 16 && s.size() == 32 + 16 * n, "'", path, "' is truncated or has trailing bytes: header says ",
             n, " documents, file holds ", s.size(), " bytes");
  std::vector<DocSpan> docs(n);
  uint64_t expect = 0;
  for (uint64_t i = 0; i < n; ++i) {
    docs[i] = {get_u64(s, 32 + 16 * i), get_u64(s, 40 + 16 * i)};
    NMOE_CHECK(docs[i].first == expect && docs[i].second > docs[i].first, "'", path, "': document ", i, " spans [",
               docs[i].first, ", ", docs[i].second, "), expected it to start at ", expect, " and be non-empty");
    expect = docs[i].second;
  }
  return docs;
}

}  // namespace nmoe
