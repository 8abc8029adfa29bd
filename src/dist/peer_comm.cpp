// Tensor collectives through peer memory, in chunks. All-reduce: every rank
// copies its chunk into its staging area; each rank sums one slice of the
// chunk over all ranks (tree order) into its result area; every rank then
// copies all slices. All-gather: every rank copies a chunk of its own slice
// into its staging area; every rank then copies the other ranks' chunks out.
//
// Between collectives a peer may still be reading this rank's result area
// (the all-reduce returns without a final barrier), never its staging area:
// a collective writes only the staging area before its first barrier.
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

  using Comm::all_gather;

  void all_gather(const Tensor& t, const std::vector<int64_t>& bounds, const std::string& what) override {
    const int W = world_;
    const int64_t longest = check_gather_bounds(t, bounds, what);
    if (W == 1 || longest == 0) return;
    const size_t es = dtype_size(t.dtype);
    char* data = t.ptr<char>();
    const int64_t chunk = static_cast<int64_t>(half_ / es);
    // Rank r's part of the round starting at c0: [first, first + len).
    auto part = [&](int r, int64_t c0) {
      const int64_t first = bounds[r] + c0;
      return std::pair<int64_t, int64_t>(first, std::clamp<int64_t>(bounds[r + 1] - first, 0, chunk));
    };
    for (int64_t c0 = 0; c0 < longest; c0 += chunk) {
      if (auto [first, len] = part(rank_, c0); len > 0) pm_.copy(in_area(rank_), data + first * es, len * es);
      pm_.sync();
      g_.barrier(what + " (all-gather publish)");
      for (int r = 0; r < W; ++r) {
        if (r == rank_) continue;
        if (auto [first, len] = part(r, c0); len > 0) pm_.copy(data + first * es, in_area(r), len * es);
      }
      pm_.sync();
      g_.barrier(what + " (all-gather read)");  // peers may overwrite their staging areas from here on
    }
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
