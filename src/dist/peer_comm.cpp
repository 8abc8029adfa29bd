// Tensor all-reduce through peer memory, in chunks: every rank copies its
// chunk into its staging area; each rank sums one slice of the chunk over all
// ranks (tree order) into its result area; every rank then copies all slices.
#include <algorithm>

#include "core/error.h"
#include "dist/comm.h"
#include "dist/peer_memory.h"
#include "dist/shm_group.h"

namespace nmoe {

namespace {

class PeerComm final : public Comm {
 public:
  PeerComm(Rendezvous& rdv, ShmGroup& g, PeerMemory& pm, size_t offset, size_t bytes)
      : Comm(rdv), g_(g), pm_(pm), offset_(offset), half_(bytes / 2 / 256 * 256) {
    NMOE_CHECK(offset + bytes <= pm.area_bytes(), "all-reduce staging exceeds the peer memory");
    NMOE_CHECK(half_ >= 4096, "all-reduce staging area too small");
  }

  void all_reduce_sum(const Tensor& t, const std::string& what) override {
    if (world_ == 1 || t.numel() == 0) return;
    NMOE_CHECK(t.dtype == DType::F32 || t.dtype == DType::F64 || t.dtype == DType::I32, what,
               ": all_reduce_sum does not support ", dtype_name(t.dtype));
    const size_t es = dtype_size(t.dtype);
    char* data = t.ptr<char>();
    const int64_t n = t.numel();
    const int64_t chunk = static_cast<int64_t>(half_ / es);
    const int W = world_;
    std::vector<const void*> parts(W);
    auto slice = [&](int r, int64_t len) { return std::pair<int64_t, int64_t>(len * r / W, len * (r + 1) / W); };
    for (int64_t c0 = 0; c0 < n; c0 += chunk) {
      const int64_t len = std::min(chunk, n - c0);
      pm_.copy(in_area(rank_), data + c0 * es, len * es);
      pm_.sync();
      g_.barrier(what + " (all-reduce gather)");
      auto [b, e] = slice(rank_, len);
      for (int r = 0; r < W; ++r) parts[r] = in_area(r) + b * es;
      pm_.sum(parts, out_area(rank_) + b * es, e - b, t.dtype);
      pm_.sync();
      g_.barrier(what + " (all-reduce sum)");
      for (int r = 0; r < W; ++r) {
        auto [rb, re] = slice(r, len);
        pm_.copy(data + (c0 + rb) * es, out_area(r) + rb * es, (re - rb) * es);
      }
      pm_.sync();  // peers may overwrite their result areas after the next barrier
    }
  }

 private:
  char* in_area(int r) const { return pm_.area(r) + offset_; }
  char* out_area(int r) const { return pm_.area(r) + offset_ + half_; }

  ShmGroup& g_;
  PeerMemory& pm_;
  size_t offset_, half_;
};

}  // namespace

std::unique_ptr<Comm> make_peer_comm(Rendezvous& rdv, ShmGroup& group, PeerMemory& pm, size_t staging_offset,
                                     size_t staging_bytes) {
  return std::make_unique<PeerComm>(rdv, group, pm, staging_offset, staging_bytes);
}

}  // namespace nmoe
