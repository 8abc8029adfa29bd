#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>

#include <string>
#include <vector>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_peer_memory.h"
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

class CudaPeerMemory final : public PeerMemory {
 public:
  CudaPeerMemory(CudaBackend& backend, Rendezvous& rdv, size_t bytes) : backend_(backend), bytes_(bytes) {
    const int W = rdv.world(), me = rdv.rank();
    NMOE_CHECK(W <= kMaxParts, "at most ", kMaxParts, " ranks");
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
  void sync() override { backend_.synchronize(); }

 private:
  CudaBackend& backend_;
  size_t bytes_;
  void* mine_ = nullptr;
  std::vector<char*> areas_;
};

}  // namespace

std::unique_ptr<PeerMemory> make_cuda_peer_memory(Backend& backend, Rendezvous& rdv, size_t bytes) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  NMOE_CHECK(cuda != nullptr, "CUDA peer memory needs the CUDA backend");
  return std::make_unique<CudaPeerMemory>(*cuda, rdv, bytes);
}

}  // namespace nmoe
