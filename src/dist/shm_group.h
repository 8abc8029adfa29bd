// The ranks of one job on one machine, joined through POSIX shared memory:
// each rank creates one region (a control block plus a data area of the same
// size on every rank) and maps every peer's. Data is written straight into a
// peer's area with plain stores and published by the barrier's release/acquire
// flags. Used by the CPU transport and CPU collectives; the CUDA path uses
// CUDA IPC with the same protocol.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dist/shm.h"

namespace nmoe {

class ShmGroup {
 public:
  static constexpr int kMaxRanks = 64;
  // setup_barrier: a barrier over every rank (the rendezvous), used while the
  // regions are created and mapped.
  ShmGroup(const std::string& job_id, int rank, int world, size_t data_bytes,
           const std::function<void()>& setup_barrier);
  ShmGroup(const ShmGroup&) = delete;
  ShmGroup& operator=(const ShmGroup&) = delete;

  int rank() const { return rank_; }
  int world() const { return world_; }
  size_t data_bytes() const { return data_bytes_; }
  // Rank r's data area, mapped in this process.
  char* data(int r) const { return data_[r]; }
  // Every rank waits until all have arrived. Writes made before it by any rank
  // are visible to every rank after it. `what` names the call site (layer and
  // phase) in the error raised when a peer fails or the wait times out.
  void barrier(const std::string& what);
  void set_timeout(double seconds) { timeout_s_ = seconds; }
  double timeout() const { return timeout_s_; }
  // Waits until done() holds (spinning, then yielding, then sleeping); an
  // error naming `what` and `peer` when a rank has failed or after timeout().
  void wait_until(const std::function<bool()>& done, const std::string& what, int peer) const;

 private:
  struct Control {
    std::atomic<int64_t> arrived[kMaxRanks];  // arrived[k]: the last barrier rank k reached
  };
  Control* control(int r) const { return reinterpret_cast<Control*>(regions_[r].data()); }

  int rank_ = 0, world_ = 1;
  size_t data_bytes_ = 0;
  std::vector<ShmRegion> regions_;
  std::vector<char*> data_;
  int64_t phase_ = 0;
  double timeout_s_ = 600;
};

}  // namespace nmoe
