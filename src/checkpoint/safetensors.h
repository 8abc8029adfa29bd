// safetensors files: an 8-byte little-endian header size N, N bytes of JSON
// header, then the tensor data. Offsets in the header are relative to the
// first byte after the header. Compatible with the reference implementation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "core/tensor.h"

namespace nmoe::safetensors {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  size_t offset = 0;  // from the start of the data section
  size_t nbytes = 0;
};

class Writer {
 public:
  // Registers a tensor; data must stay valid until write(). Duplicate names throw.
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data);
  void set_metadata(const std::string& key, const std::string& value);
  // Lays tensors out in name order (same content -> same bytes), pads the
  // header with spaces to a multiple of 8, and streams to a temporary sibling
  // that is fsynced and renamed over path (then the directory is fsynced).
  void write(const std::string& path, bool fsync = true) const;

 private:
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    const void* data;
    size_t nbytes;
  };
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Memory-maps a file and validates the whole header on open: known dtypes,
// non-negative integer shapes, sizes matching shapes, and tensors that tile
// the data section exactly (no overlap, no gap, nothing past the end).
class Reader {
 public:
  static Reader open(const std::string& path);

  Reader(Reader&& other) noexcept = default;
  Reader& operator=(Reader&& other) noexcept = default;
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;
  ~Reader() = default;

  std::vector<std::string> names() const;  // sorted
  bool has(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  // throws naming the missing tensor
  // Start of the tensor's bytes inside the map. Not necessarily aligned for
  // files written by other tools; read_into() is always safe.
  const void* data(const std::string& name) const;
  // Copies into dst after checking that dtype and shape match exactly.
  void read_into(const std::string& name, DType dtype, const std::vector<int64_t>& shape, void* dst) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return map_.path(); }

 private:
  Reader() = default;
  const unsigned char* data_section() const { return map_.data() + data_offset_; }

  MappedFile map_;
  size_t data_offset_ = 0;  // 8 + header size
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace nmoe::safetensors
