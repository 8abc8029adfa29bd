// Token shards stored as 1-D NumPy .npy arrays of uint16 or uint32.
// Reading memory-maps the file; writing replaces the file atomically.
// Files are interchangeable with numpy.save / numpy.load.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/mapped_file.h"
#include "core/tensor.h"

namespace nmoe {

// Read-only memory map of a 1-D .npy array of '<u2' or '<u4' tokens.
// Accepts header versions 1.0, 2.0 and 3.0; anything else is an Error
// naming the file and the problem.
class NpyTokenFile {
 public:
  static NpyTokenFile open(const std::string& path);

  NpyTokenFile(NpyTokenFile&& other) noexcept = default;
  NpyTokenFile& operator=(NpyTokenFile&& other) noexcept = default;
  NpyTokenFile(const NpyTokenFile&) = delete;
  NpyTokenFile& operator=(const NpyTokenFile&) = delete;
  ~NpyTokenFile() = default;

  // Number of tokens; open() checked that the data section holds exactly that
  // many. Derived from the map, so a moved-from file has size 0.
  size_t size() const {
    return map_.size() > data_offset_ ? (map_.size() - data_offset_) / dtype_size(dtype_) : 0;
  }
  DType dtype() const { return dtype_; }  // DType::U16 or DType::U32
  uint32_t at(size_t i) const;            // bounds-checked
  // Copies tokens [begin, begin + count) into out, widened to int32.
  // Bounds-checked; a uint32 token above INT32_MAX is an Error.
  void read(size_t begin, size_t count, int32_t* out) const;
  const std::string& path() const { return map_.path(); }

 private:
  NpyTokenFile() = default;
  // Start of the data section (maybe unaligned); only valid while size() > 0.
  const unsigned char* tokens() const { return map_.data() + data_offset_; }

  MappedFile map_;
  size_t data_offset_ = 0;  // where the data section starts
  DType dtype_ = DType::U16;
};

// Writes tokens as a 1-D .npy (version 1.0 header, numpy's exact layout) of
// dtype U16 or U32, atomically. Throws if a token does not fit the dtype.
void write_npy_tokens(const std::string& path, const uint32_t* tokens, size_t n, DType dtype,
                      bool fsync = true);

}  // namespace nmoe
