#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <set>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_peer_memory.h"
#include "core/env_choice.h"
#include "dist/abort.h"
#include "dist/rendezvous.h"

namespace nmoe {

namespace {

constexpr int kMaxParts = 64;

struct Parts {
  const void* p[kMaxParts];
};

// Tree order of dist/tree_sum.h, per element.
template <class T>
__global__ void tree_sum_kernel(Parts parts, int n, T* dst, int64_t count) {
  const int64_t stride_all = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count; i += stride_all) {
    T v[kMaxParts];
    for (int k = 0; k < n; ++k) v[k] = static_cast<const T*>(parts.p[k])[i];
    for (int s = 1; s < n; s *= 2)
      for (int k = 0; k + s < n; k += 2 * s) v[k] += v[k + s];
    dst[i] = v[0];
  }
}

__global__ void signal_kernel(uint64_t* flag, uint64_t value) {
  __threadfence_system();
  asm volatile("st.release.sys.global.u64 [%0], %1;\n" ::"l"(flag), "l"(value) : "memory");
}

__device__ __forceinline__ uint64_t load_acquire(const uint64_t* p) {
  uint64_t v;
  asm volatile("ld.acquire.sys.global.u64 %0, [%1];\n" : "=l"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ uint64_t now_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}

// Thread i waits for flags[i] >= value. On a timeout, or when the host's abort
// word (mapped) is set, it records the wait's id and the flag in the mapped
// record and returns: the host raises the error.
__global__ void wait_kernel(const uint64_t* flags, int n, uint64_t value, const volatile int* abort_word,
                            uint64_t timeout_ns, int* record, int id) {
  const int i = threadIdx.x;
  if (i >= n) return;
  const uint64_t start = now_ns();
  while (load_acquire(flags + i) < value) {
    const bool aborted = *abort_word != 0, late = now_ns() - start > timeout_ns;
    if (aborted || late) {
      if (atomicCAS(record, 0, id) == 0) {
        record[1] = i;
        record[2] = aborted;
        __threadfence_system();
      }
      return;
    }
    __nanosleep(256);
  }
}

// NMOE_RDEP_WAITS: stream, host or auto (stream waits when every rank has a GPU of its own).
bool stream_waits_selected(bool distinct_gpus) {
  const std::string s = env_choice("NMOE_RDEP_WAITS", {"auto", "stream", "host"});
  return s == "stream" || (s == "auto" && distinct_gpus);
}

// The process's abort word (dist/abort.h), registered once and mapped for the device.
int* mapped_abort_word() {
  static int* dev = [] {
    int* word = const_cast<int*>(dist_abort_word());
    NMOE_CUDA_CHECK("peer memory", cudaHostRegister(word, sizeof(int), cudaHostRegisterMapped));
    int* d = nullptr;
    NMOE_CUDA_CHECK("peer memory", cudaHostGetDevicePointer(reinterpret_cast<void**>(&d), word, 0));
    return d;
  }();
  return dev;
}

class CudaPeerMemory final : public PeerMemory {
 public:
  CudaPeerMemory(CudaBackend& backend, Rendezvous& rdv, size_t bytes)
      : backend_(backend), bytes_(bytes), timeout_s_(rdv.timeout()) {
    const int W = rdv.world(), me = rdv.rank();
    NMOE_CHECK(W <= kMaxParts, "at most ", kMaxParts, " ranks");
    stream_waits_ = stream_waits_selected(ranks_on_distinct_gpus(rdv));
    NMOE_CUDA_CHECK("peer memory", cudaHostAlloc(&record_, 4 * sizeof(int), cudaHostAllocMapped));
    std::memset(record_, 0, 4 * sizeof(int));
    NMOE_CUDA_CHECK("peer memory", cudaHostGetDevicePointer(reinterpret_cast<void**>(&record_dev_), record_, 0));
    abort_dev_ = mapped_abort_word();
    NMOE_CUDA_CHECK("peer memory", cudaMalloc(&mine_, bytes));
    NMOE_CUDA_CHECK("peer memory", cudaMemset(mine_, 0, bytes));
    cudaIpcMemHandle_t h;
    NMOE_CUDA_CHECK("peer memory", cudaIpcGetMemHandle(&h, mine_));
    std::vector<std::string> all = rdv.all_gather(std::string(reinterpret_cast<const char*>(&h), sizeof h));
    areas_.assign(W, nullptr);
    for (int r = 0; r < W; ++r) {
      if (r == me) {
        areas_[r] = static_cast<char*>(mine_);
        continue;
      }
      NMOE_CHECK(all[r].size() == sizeof h, "peer memory: malformed IPC handle from rank ", r);
      cudaIpcMemHandle_t peer;
      std::memcpy(&peer, all[r].data(), sizeof peer);
      void* p = nullptr;
      cudaError_t e = cudaIpcOpenMemHandle(&p, peer, cudaIpcMemLazyEnablePeerAccess);
      NMOE_CHECK(e == cudaSuccess, "cannot map rank ", r, "'s GPU memory through CUDA IPC (",
                 cudaGetErrorString(e), "); every rank must see the other ranks' GPUs (peer access)");
      areas_[r] = static_cast<char*>(p);
    }
    rdv.barrier();  // every rank has mapped every area
  }
  ~CudaPeerMemory() override {
    for (size_t r = 0; r < areas_.size(); ++r)
      if (areas_[r] && areas_[r] != mine_) cudaIpcCloseMemHandle(areas_[r]);
    if (mine_) cudaFree(mine_);
    if (record_) cudaFreeHost(record_);
  }
  char* area(int r) const override { return areas_[r]; }
  size_t area_bytes() const override { return bytes_; }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    NMOE_CUDA_CHECK("peer copy", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, backend_.stream()));
  }
  void sum(const std::vector<const void*>& parts, void* dst, int64_t count, DType dt) override {
    if (count == 0) return;
    Parts p{};
    for (size_t k = 0; k < parts.size(); ++k) p.p[k] = parts[k];
    const int n = static_cast<int>(parts.size());
    const int threads = 256;
    const int blocks = static_cast<int>(std::min<int64_t>((count + threads - 1) / threads, 4096));
    switch (dt) {
      case DType::F32: tree_sum_kernel<float><<<blocks, threads, 0, backend_.stream()>>>(p, n, static_cast<float*>(dst), count); break;
      case DType::F64: tree_sum_kernel<double><<<blocks, threads, 0, backend_.stream()>>>(p, n, static_cast<double*>(dst), count); break;
      case DType::I32: tree_sum_kernel<int32_t><<<blocks, threads, 0, backend_.stream()>>>(p, n, static_cast<int32_t*>(dst), count); break;
      default: fail("peer sum does not support ", dtype_name(dt));
    }
    NMOE_CUDA_LAUNCHED("peer sum");
  }
  void sync() override {
    backend_.synchronize();
    check_waits();
  }
  void signal(uint64_t* flag, uint64_t value) override {
    signal_kernel<<<1, 1, 0, backend_.stream()>>>(flag, value);
    NMOE_CUDA_LAUNCHED("peer signal");
  }
  void wait(const uint64_t* flags, int n, uint64_t value, const std::string& what) override {
    check_waits();
    if (n == 0) return;
    const int id = static_cast<int>(++waits_ % kWaitRing) + 1;
    what_[id - 1] = what;
    const auto timeout_ns = static_cast<uint64_t>(timeout_s_ * 1e9);
    wait_kernel<<<1, 64, 0, backend_.stream()>>>(flags, n, value, abort_dev_, timeout_ns, record_dev_, id);
    NMOE_CUDA_LAUNCHED("peer wait");
  }
  bool stream_waits() const override { return stream_waits_; }

 private:
  static constexpr int kWaitRing = 256;  // waits in flight whose names are kept

  // A wait kernel that gave up left its id in the record.
  void check_waits() {
    const int id = reinterpret_cast<volatile int*>(record_)[0];
    if (id == 0) return;
    const int peer = reinterpret_cast<volatile int*>(record_)[1];
    if (reinterpret_cast<volatile int*>(record_)[2] || dist_failed())
      fail(what_[id - 1], ": stopped because ", dist_failure_message());
    fail(what_[id - 1], ": the GPU waited ", static_cast<int>(timeout_s_), " s for rank ", peer,
         " (NMOE_DIST_TIMEOUT_S); the ranks have diverged or one is stuck");
  }

  CudaBackend& backend_;
  size_t bytes_;
  double timeout_s_;
  bool stream_waits_ = false;
  int* record_ = nullptr;      // mapped pinned: id of the wait that gave up, its flag, whether aborted
  int* record_dev_ = nullptr;
  int* abort_dev_ = nullptr;   // dist_abort_word(), mapped
  int64_t waits_ = 0;
  std::string what_[kWaitRing];
  void* mine_ = nullptr;
  std::vector<char*> areas_;
};

}  // namespace

bool ranks_on_distinct_gpus(Rendezvous& rdv) {
  int dev = 0;
  NMOE_CUDA_CHECK("peer memory", cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  NMOE_CUDA_CHECK("peer memory", cudaGetDeviceProperties(&prop, dev));
  const std::vector<std::string> uuids = rdv.all_gather(std::string(prop.uuid.bytes, sizeof prop.uuid.bytes));
  return std::set<std::string>(uuids.begin(), uuids.end()).size() == uuids.size();
}

std::unique_ptr<PeerMemory> make_cuda_peer_memory(Backend& backend, Rendezvous& rdv, size_t bytes) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  NMOE_CHECK(cuda != nullptr, "CUDA peer memory needs the CUDA backend");
  return std::make_unique<CudaPeerMemory>(*cuda, rdv, bytes);
}

}  // namespace nmoe
