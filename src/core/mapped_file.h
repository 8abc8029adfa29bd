// A whole file memory-mapped read-only (RAII): the map lives as long as the
// object. Shared by the readers of safetensors, .npy and Parquet files.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace nmoe {

class MappedFile {
 public:
  // Maps the regular file at path. Failures throw an Error that reads
  // "<what> '<path>': <reason>", the reason being "cannot open: <strerror>",
  // "not a regular file" or "mmap failed: <strerror>"; callers pass what
  // ("npy", "parquet", ...) so the message names the kind of file expected.
  // An empty file is valid: data() == nullptr and size() == 0.
  static MappedFile open(const std::string& path, std::string_view what = "file");

  MappedFile() = default;  // nothing mapped, like a moved-from object
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const unsigned char* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release() noexcept;

  std::string path_;
  const unsigned char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace nmoe
