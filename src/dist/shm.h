// POSIX shared memory: one named region per rank, mapped by every peer.
#pragma once

#include <cstddef>
#include <string>

namespace nmoe {

class ShmRegion {
 public:
  ShmRegion() = default;
  // Creates (exclusively) and maps a zeroed region of `bytes` under `name`
  // ("/nmoe_..."). A stale region of the same name from a dead run is replaced.
  static ShmRegion create(const std::string& name, size_t bytes);
  // Maps an existing region created by another process.
  static ShmRegion open(const std::string& name, size_t bytes);
  ShmRegion(ShmRegion&& o) noexcept;
  ShmRegion& operator=(ShmRegion&& o) noexcept;
  ShmRegion(const ShmRegion&) = delete;
  ShmRegion& operator=(const ShmRegion&) = delete;
  ~ShmRegion();

  // Removes the name; the mappings stay valid until unmapped. Called once every
  // peer has mapped the region, so nothing is left in /dev/shm if a rank dies.
  void unlink();
  void* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  void* data_ = nullptr;
  size_t size_ = 0;
  bool owner_ = false;
  bool linked_ = false;
};

}  // namespace nmoe
