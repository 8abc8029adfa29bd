// SHA-256 (FIPS 180-4), used for config fingerprints and checkpoint checksums.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace nmoe {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  // Digest of everything passed to update() so far. Does not reset or finalize
  // the running state: update() may be called again afterwards.
  std::array<uint8_t, 32> digest() const;
  std::string hex_digest() const;

 private:
  void compress(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;      // bytes waiting in buffer_
  uint64_t total_bytes_ = 0;
};

std::string sha256_hex(const void* data, size_t n);
std::string sha256_hex(std::string_view s);
// Streams the file in 1 MiB blocks; throws Error if it cannot be opened or read.
std::string sha256_file_hex(const std::string& path);

}  // namespace nmoe
