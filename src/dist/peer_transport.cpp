// ExpertTransport over a ShmGroup (host headers and barriers) and PeerMemory
// (bulk rows and flags, in backend memory).
// Host area of each rank (headers), two sets used by alternate exchanges: per
//   source, row_begin (i64), rows (i64), offsets[El+1] (i32): what that source
//   sent this rank.
// Bulk area of each rank:
//   flags   [2][W] u64      per source: the last exchange whose rows (0) or
//                           results (1) it has delivered to this rank
//   offsets [W][El+1] I32   the headers' offsets in backend memory (grouped GEMMs read them)
//   recv_a  [W]             per source: up to rows_per_rank rows of D elements
//   recv_b  [W]             the same (the backward's second tensor)
//   ret                     rows_per_rank rows: results written back by the owners
// rows_per_rank = N*K covers the worst case: every row of a source to one owner.
//
// An exchange (numbered e = 1, 2, ... alike on every rank):
//   send     the source reads its expert offsets to the host (the owners size
//            their ops by them), writes the headers, copies each owner its rows
//            and raises flags[0][src] = e at each owner; a host barrier
//            publishes the headers; each owner's stream waits for every
//            source's rows flag.
//   return   each owner copies its results back (put_back), then raises
//            flags[1][owner] = e at every source; each source's stream waits
//            for every owner's flag. No host wait: the host runs ahead.
// A source's next send (e + 1) is ordered after its wait for every owner's
// results of e, which the owners raise after they are done reading e's rows;
// an owner writes a source's return area for e + 1 only after that source's
// rows flag e + 1, raised after it used e's results. The barrier of each send
// keeps the hosts within one exchange of each other, so two header sets do.
// Ranks sharing one GPU (PeerMemory::stream_waits false) wait on the host
// instead: the stream is synchronized and a barrier ends each phase.
#include <chrono>
#include <vector>

#include "core/error.h"
#include "dist/expert_transport.h"
#include "dist/peer_memory.h"
#include "dist/shm_group.h"
#include "ops/backend.h"

namespace nmoe {

namespace {

size_t align256(size_t x) { return (x + 255) / 256 * 256; }

struct HostLayout {
  size_t header_bytes, total;
  HostLayout(int W, int64_t El) {
    header_bytes = align256(16 + 4 * static_cast<size_t>(El + 1));
    total = 2 * W * header_bytes;
  }
};

struct BulkLayout {
  size_t flags, offsets, recv_a, recv_b, ret, total, block;
  BulkLayout(int W, int64_t rows, int64_t dim, int64_t El, DType dt) {
    block = align256(static_cast<size_t>(rows * dim) * dtype_size(dt));
    flags = 0;
    offsets = align256(2 * W * sizeof(uint64_t));
    recv_a = offsets + align256(W * 4 * static_cast<size_t>(El + 1));
    recv_b = recv_a + W * block;
    ret = recv_b + W * block;
    total = ret + block;
  }
};

struct Timer {
  double& total;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  explicit Timer(double& t) : total(t) {}
  ~Timer() { total += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); }
};

struct Header {
  int64_t row_begin;
  int64_t rows;
  int32_t offsets[1];  // El + 1 entries
};

class PeerTransport final : public ExpertTransport {
 public:
  PeerTransport(Backend& backend, ShmGroup& g, size_t host_offset, PeerMemory& pm, size_t bulk_offset,
                int64_t rows, int64_t dim, int64_t El, DType dt)
      : B_(backend), g_(g), pm_(pm), host_(host_offset), bulk_(bulk_offset), rows_(rows), dim_(dim), El_(El),
        dt_(dt), H_(g.world(), El), L_(g.world(), rows, dim, El, dt) {
    NMOE_CHECK(host_offset + H_.total <= g.data_bytes(), "MoE transport headers exceed the shared-memory area");
    NMOE_CHECK(bulk_offset + L_.total <= pm.area_bytes(), "the MoE transport does not fit the peer memory");
  }
  int rank() const override { return g_.rank(); }
  double seconds() const override { return seconds_; }
  int world() const override { return g_.world(); }

  void send(const Tensor& a, const Tensor& b, const Tensor& offsets, const std::string& where) override {
    Timer timer(seconds_);
    const int W = g_.world(), me = g_.rank();
    NMOE_CHECK(a.rows() == rows_ && a.cols() == dim_ && a.dtype == dt_, where, ": send expects [", rows_, ", ",
               dim_, "] ", dtype_name(dt_), " rows, got ", a.shape.str(), " ", dtype_name(a.dtype));
    NMOE_CHECK(offsets.dtype == DType::I32 && offsets.numel() == W * El_ + 1, where,
               ": send expects offsets [E+1] I32");
    NMOE_CHECK(!b.defined() || (b.dtype == a.dtype && b.numel() == a.numel()), where, ": b must match a");
    ++exchange_;
    off_.resize(offsets.numel());
    B_.copy_to_host(off_.data(), offsets);  // waits: the owners size their ops by these counts
    const size_t row_bytes = static_cast<size_t>(dim_) * dtype_size(dt_);
    for (int r = 0; r < W; ++r) {
      const int64_t begin = off_[r * El_], end = off_[(r + 1) * El_];
      NMOE_CHECK(begin >= 0 && begin <= end && end <= rows_, where, ": bad expert offsets");
      Header* h = header(r, me);
      h->row_begin = begin;
      h->rows = end - begin;
      for (int64_t e = 0; e <= El_; ++e) h->offsets[e] = off_[r * El_ + e] - static_cast<int32_t>(begin);
      pm_.copy(bulk(r) + L_.recv_a + me * L_.block, a.ptr<char>() + begin * row_bytes, (end - begin) * row_bytes);
      if (b.defined())
        pm_.copy(bulk(r) + L_.recv_b + me * L_.block, b.ptr<char>() + begin * row_bytes, (end - begin) * row_bytes);
    }
    has_b_ = b.defined();
    if (!pm_.stream_waits()) {
      pm_.sync();
      g_.barrier(where);
      return;
    }
    for (int r = 0; r < W; ++r) pm_.signal(flag(r, 0, me), exchange_);
    g_.barrier(where + " (headers)");
    pm_.wait(flag(me, 0, 0), W, exchange_, where + " (rows)");
  }

  ReceivedBlock received(int src) override {
    const int me = g_.rank();
    Header* h = header(me, src);
    ReceivedBlock blk;
    blk.rows = h->rows;
    blk.a = Tensor(bulk(me) + L_.recv_a + src * L_.block, dt_, Shape{blk.rows, dim_});
    if (has_b_) blk.b = Tensor(bulk(me) + L_.recv_b + src * L_.block, dt_, Shape{blk.rows, dim_});
    char* dev_off = bulk(me) + L_.offsets + src * 4 * static_cast<size_t>(El_ + 1);
    if (dev_off != reinterpret_cast<char*>(h->offsets)) pm_.copy(dev_off, h->offsets, 4 * (El_ + 1));
    blk.offsets = Tensor(dev_off, DType::I32, Shape{El_ + 1});
    return blk;
  }

  void put_back(int src, const Tensor& y) override {
    const int me = g_.rank();
    Header* h = header(me, src);
    NMOE_CHECK(y.rows() == h->rows && y.cols() == dim_ && y.dtype == dt_, "put_back: expected [", h->rows,
               ", ", dim_, "] rows, got ", y.shape.str());
    const size_t row_bytes = static_cast<size_t>(dim_) * dtype_size(dt_);
    pm_.copy(bulk(src) + L_.ret + h->row_begin * row_bytes, y.data, h->rows * row_bytes);
  }

  Tensor finish_return(const std::string& where) override {
    Timer timer(seconds_);
    const int W = g_.world(), me = g_.rank();
    if (pm_.stream_waits()) {
      for (int r = 0; r < W; ++r) pm_.signal(flag(r, 1, me), exchange_);
      pm_.wait(flag(me, 1, 0), W, exchange_, where);
    } else {
      pm_.sync();
      g_.barrier(where);
    }
    return Tensor(bulk(g_.rank()) + L_.ret, dt_, Shape{rows_, dim_});
  }

 private:
  char* bulk(int r) const { return pm_.area(r) + bulk_; }
  // This exchange's header of what src sent owner.
  Header* header(int owner, int src) const {
    const size_t set = static_cast<size_t>(exchange_ % 2) * g_.world();
    return reinterpret_cast<Header*>(g_.data(owner) + host_ + (set + src) * H_.header_bytes);
  }
  // Rank r's flag `kind` (0 rows, 1 results) of peer p.
  uint64_t* flag(int r, int kind, int p) const {
    return reinterpret_cast<uint64_t*>(bulk(r) + L_.flags) + kind * g_.world() + p;
  }

  Backend& B_;
  ShmGroup& g_;
  PeerMemory& pm_;
  size_t host_, bulk_;
  int64_t rows_, dim_, El_;
  DType dt_;
  HostLayout H_;
  BulkLayout L_;
  bool has_b_ = false;
  uint64_t exchange_ = 0;
  std::vector<int32_t> off_;
  double seconds_ = 0;
};

}  // namespace

TransportSizes transport_sizes(int world, int64_t rows_per_rank, int64_t dim, int64_t local_experts, DType dtype) {
  return {HostLayout(world, local_experts).total, BulkLayout(world, rows_per_rank, dim, local_experts, dtype).total};
}

std::unique_ptr<ExpertTransport> make_peer_transport(Backend& backend, ShmGroup& group, size_t host_offset,
                                                     PeerMemory& pm, size_t bulk_offset, int64_t rows_per_rank,
                                                     int64_t dim, int64_t local_experts, DType dtype) {
  return std::make_unique<PeerTransport>(backend, group, host_offset, pm, bulk_offset, rows_per_rank, dim,
                                         local_experts, dtype);
}

}  // namespace nmoe
