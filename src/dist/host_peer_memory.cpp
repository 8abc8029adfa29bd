#include <atomic>
#include <cstring>

#include "core/error.h"
#include "dist/peer_memory.h"
#include "dist/shm_group.h"
#include "dist/tree_sum.h"

namespace nmoe {

namespace {

class HostPeerMemory final : public PeerMemory {
 public:
  HostPeerMemory(ShmGroup& g, size_t offset, size_t bytes) : g_(g), offset_(offset), bytes_(bytes) {
    NMOE_CHECK(offset + bytes <= g.data_bytes(), "peer memory exceeds the shared-memory area");
  }
  char* area(int r) const override { return g_.data(r) + offset_; }
  size_t area_bytes() const override { return bytes_; }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void sum(const std::vector<const void*>& parts, void* dst, int64_t count, DType dt) override {
    switch (dt) {
      case DType::F32: run<float>(parts, dst, count); break;
      case DType::F64: run<double>(parts, dst, count); break;
      case DType::I32: run<int32_t>(parts, dst, count); break;
      default: fail("peer sum does not support ", dtype_name(dt));
    }
  }
  void sync() override {}
  void signal(uint64_t* flag, uint64_t value) override {
    std::atomic_ref<uint64_t>(*flag).store(value, std::memory_order_release);
  }
  void wait(const uint64_t* flags, int n, uint64_t value, const std::string& what) override {
    for (int i = 0; i < n; ++i) {
      std::atomic_ref<uint64_t> f(*const_cast<uint64_t*>(flags + i));
      g_.wait_until([&] { return f.load(std::memory_order_acquire) >= value; }, what, i);
    }
  }
  bool stream_waits() const override { return true; }

 private:
  template <class T>
  static void run(const std::vector<const void*>& parts, void* dst, int64_t count) {
    std::vector<const T*> p;
    for (const void* x : parts) p.push_back(static_cast<const T*>(x));
    tree_sum_arrays(p, static_cast<T*>(dst), count);
  }
  ShmGroup& g_;
  size_t offset_, bytes_;
};

}  // namespace

std::unique_ptr<PeerMemory> make_host_peer_memory(ShmGroup& group, size_t offset, size_t bytes) {
  return std::make_unique<HostPeerMemory>(group, offset, bytes);
}

}  // namespace nmoe
