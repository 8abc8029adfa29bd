// Tensor all-reduce through shared memory, in chunks: every rank copies its
// chunk into its staging area; each rank sums one slice of the chunk over all
// ranks (tree order) into its result area; every rank then copies all slices.
#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "dist/comm.h"
#include "dist/shm_group.h"
#include "dist/tree_sum.h"

namespace nmoe {

namespace {

class ShmComm final : public Comm {
 public:
  ShmComm(Rendezvous& rdv, ShmGroup& g, size_t offset, size_t bytes)
      : Comm(rdv), g_(g), offset_(offset), half_(bytes / 2 / 256 * 256) {
    NMOE_CHECK(offset + bytes <= g.data_bytes(), "shared-memory staging exceeds the group's area");
    NMOE_CHECK(half_ >= 4096, "shared-memory staging area too small");
  }

  void all_reduce_sum(const Tensor& t, const std::string& what) override {
    if (world_ == 1 || t.numel() == 0) return;
    switch (t.dtype) {
      case DType::F32: run<float>(t, what); break;
      case DType::F64: run<double>(t, what); break;
      case DType::I32: run<int32_t>(t, what); break;
      default: fail(what, ": all_reduce_sum does not support ", dtype_name(t.dtype));
    }
  }

 private:
  char* in_area(int r) const { return g_.data(r) + offset_; }
  char* out_area(int r) const { return g_.data(r) + offset_ + half_; }

  template <class T>
  void run(const Tensor& t, const std::string& what) {
    T* data = t.ptr<T>();
    const int64_t n = t.numel();
    const int64_t chunk = static_cast<int64_t>(half_ / sizeof(T));
    const int W = world_;
    std::vector<const T*> parts(W);
    for (int64_t c0 = 0; c0 < n; c0 += chunk) {
      const int64_t len = std::min(chunk, n - c0);
      std::memcpy(in_area(rank_), data + c0, len * sizeof(T));
      g_.barrier(what + " (all-reduce gather)");
      auto slice = [&](int r) { return std::pair<int64_t, int64_t>(len * r / W, len * (r + 1) / W); };
      auto [b, e] = slice(rank_);
      for (int r = 0; r < W; ++r) parts[r] = reinterpret_cast<const T*>(in_area(r)) + b;
      tree_sum_arrays(parts, reinterpret_cast<T*>(out_area(rank_)) + b, e - b);
      g_.barrier(what + " (all-reduce sum)");
      for (int r = 0; r < W; ++r) {
        auto [rb, re] = slice(r);
        std::memcpy(data + c0 + rb, reinterpret_cast<const T*>(out_area(r)) + rb, (re - rb) * sizeof(T));
      }
    }
  }

  ShmGroup& g_;
  size_t offset_, half_;
};

}  // namespace

std::unique_ptr<Comm> make_shm_comm(Rendezvous& rdv, ShmGroup& group, size_t staging_offset,
                                    size_t staging_bytes) {
  return std::make_unique<ShmComm>(rdv, group, staging_offset, staging_bytes);
}

}  // namespace nmoe
