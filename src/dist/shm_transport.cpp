// ExpertTransport over shared memory. Layout of each rank's area (from offset):
//   headers [W]   per source: row_begin (i64), rows (i64), offsets[El+1] (i32)
//   recv_a  [W]   per source: up to rows_per_rank rows of D elements
//   recv_b  [W]   the same (the backward's second tensor)
//   ret           rows_per_rank rows: results written back by the owners
// rows_per_rank = N*K covers the worst case: every row of a source to one owner.
#include <cstring>

#include "core/error.h"
#include "dist/expert_transport.h"
#include "dist/shm_group.h"

namespace nmoe {

namespace {

size_t align256(size_t x) { return (x + 255) / 256 * 256; }

struct Layout {
  size_t header_bytes, headers, recv_a, recv_b, ret, total;
  Layout(int W, int64_t rows, int64_t dim, int64_t El, DType dt) {
    header_bytes = align256(16 + 4 * static_cast<size_t>(El + 1));
    const size_t block = align256(static_cast<size_t>(rows * dim) * dtype_size(dt));
    headers = 0;
    recv_a = headers + W * header_bytes;
    recv_b = recv_a + W * block;
    ret = recv_b + W * block;
    total = ret + block;
    block_bytes = block;
  }
  size_t block_bytes;
};

struct Header {
  int64_t row_begin;
  int64_t rows;
  int32_t offsets[1];  // El + 1 entries
};

class ShmTransport final : public ExpertTransport {
 public:
  ShmTransport(ShmGroup& g, size_t offset, int64_t rows, int64_t dim, int64_t El, DType dt)
      : g_(g), base_(offset), rows_(rows), dim_(dim), El_(El), dt_(dt), L_(g.world(), rows, dim, El, dt) {
    NMOE_CHECK(offset + L_.total <= g.data_bytes(), "the MoE transport does not fit the shared-memory area");
  }
  int rank() const override { return g_.rank(); }
  int world() const override { return g_.world(); }

  void send(const Tensor& a, const Tensor& b, const Tensor& offsets, const std::string& where) override {
    const int W = g_.world(), me = g_.rank();
    NMOE_CHECK(a.rows() == rows_ && a.cols() == dim_ && a.dtype == dt_, where, ": send expects [", rows_, ", ",
               dim_, "] ", dtype_name(dt_), " rows, got ", a.shape.str(), " ", dtype_name(a.dtype));
    NMOE_CHECK(offsets.dtype == DType::I32 && offsets.numel() == W * El_ + 1, where,
               ": send expects offsets [E+1] I32");
    NMOE_CHECK(!b.defined() || (b.dtype == a.dtype && b.numel() == a.numel()), where, ": b must match a");
    const int32_t* off = offsets.ptr<int32_t>();
    const size_t row_bytes = static_cast<size_t>(dim_) * dtype_size(dt_);
    for (int r = 0; r < W; ++r) {
      const int64_t begin = off[r * El_], end = off[(r + 1) * El_];
      NMOE_CHECK(begin >= 0 && begin <= end && end <= rows_, where, ": bad expert offsets");
      Header* h = header(r, me);
      h->row_begin = begin;
      h->rows = end - begin;
      for (int64_t e = 0; e <= El_; ++e) h->offsets[e] = off[r * El_ + e] - static_cast<int32_t>(begin);
      std::memcpy(area(r) + L_.recv_a + me * L_.block_bytes, a.ptr<char>() + begin * row_bytes,
                  (end - begin) * row_bytes);
      if (b.defined())
        std::memcpy(area(r) + L_.recv_b + me * L_.block_bytes, b.ptr<char>() + begin * row_bytes,
                    (end - begin) * row_bytes);
    }
    has_b_ = b.defined();
    g_.barrier(where);
  }

  ReceivedBlock received(int src) override {
    const int me = g_.rank();
    Header* h = header(me, src);
    ReceivedBlock blk;
    blk.rows = h->rows;
    blk.a = Tensor(area(me) + L_.recv_a + src * L_.block_bytes, dt_, Shape{blk.rows, dim_});
    if (has_b_) blk.b = Tensor(area(me) + L_.recv_b + src * L_.block_bytes, dt_, Shape{blk.rows, dim_});
    blk.offsets = Tensor(h->offsets, DType::I32, Shape{El_ + 1});
    return blk;
  }

  void put_back(int src, const Tensor& y) override {
    const int me = g_.rank();
    Header* h = header(me, src);
    NMOE_CHECK(y.rows() == h->rows && y.cols() == dim_ && y.dtype == dt_, "put_back: expected [", h->rows,
               ", ", dim_, "] rows, got ", y.shape.str());
    const size_t row_bytes = static_cast<size_t>(dim_) * dtype_size(dt_);
    std::memcpy(area(src) + L_.ret + h->row_begin * row_bytes, y.data, h->rows * row_bytes);
  }

  Tensor finish_return(const std::string& where) override {
    g_.barrier(where);
    return Tensor(area(g_.rank()) + L_.ret, dt_, Shape{rows_, dim_});
  }

 private:
  char* area(int r) const { return g_.data(r) + base_; }
  Header* header(int owner, int src) const {
    return reinterpret_cast<Header*>(area(owner) + L_.headers + src * L_.header_bytes);
  }

  ShmGroup& g_;
  size_t base_;
  int64_t rows_, dim_, El_;
  DType dt_;
  Layout L_;
  bool has_b_ = false;
};

}  // namespace

size_t shm_transport_bytes(int world, int64_t rows_per_rank, int64_t dim, int64_t local_experts, DType dtype) {
  return Layout(world, rows_per_rank, dim, local_experts, dtype).total;
}

std::unique_ptr<ExpertTransport> make_shm_transport(ShmGroup& group, size_t offset, int64_t rows_per_rank,
                                                    int64_t dim, int64_t local_experts, DType dtype) {
  return std::make_unique<ShmTransport>(group, offset, rows_per_rank, dim, local_experts, dtype);
}

}  // namespace nmoe
