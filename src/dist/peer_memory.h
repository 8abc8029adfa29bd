// The bulk memory ranks exchange MoE rows and gradient chunks through: one
// area per rank in backend memory, mapped into every rank's address space
// (POSIX shared memory for the CPU backend, CUDA IPC for the GPU), and the
// operations on it. Copies and sums are enqueued in order on the backend's
// stream; sync() makes them complete and visible to every peer, after which a
// ShmGroup barrier publishes them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace nmoe {

class ShmGroup;

class PeerMemory {
 public:
  virtual ~PeerMemory() = default;
  virtual char* area(int rank) const = 0;
  virtual size_t area_bytes() const = 0;
  // bytes from src to dst; either may be any rank's area or this rank's backend memory.
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  // dst[i] = sum over parts p of parts[p][i] in the tree order of tree_sum.h (F32, F64, I32).
  virtual void sum(const std::vector<const void*>& parts, void* dst, int64_t count, DType dtype) = 0;
  virtual void sync() = 0;

  // Stream-ordered flags: 8-byte words in any rank's area, only ever raised.
  // signal: once the work enqueued before it is complete, sets *flag = value
  // with system-scope release. wait: the work enqueued after it starts only
  // once every flags[i] >= value (acquire). A wait that passes the timeout
  // (NMOE_DIST_TIMEOUT_S) or outlives a failed rank is an error naming `what`
  // (on the GPU, raised by the next wait or sync on the host).
  virtual void signal(uint64_t* flag, uint64_t value) = 0;
  virtual void wait(const uint64_t* flags, int n, uint64_t value, const std::string& what) = 0;
  // Whether waits belong on the stream (flags) rather than on the host (sync,
  // then a ShmGroup barrier): true for host memory and for ranks on distinct
  // GPUs; ranks sharing one GPU would spin kernels against each other.
  virtual bool stream_waits() const = 0;
};

// Host memory: the areas are group.data(r) + offset, of `bytes` each.
std::unique_ptr<PeerMemory> make_host_peer_memory(ShmGroup& group, size_t offset, size_t bytes);

}  // namespace nmoe
