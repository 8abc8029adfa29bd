// Collectives across the ranks of one job. Small host values travel through
// the rendezvous; tensors in backend memory through the backend's transport
// (shared memory for the CPU backend). Every rank calls every collective in
// the same order.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace nmoe {

class PeerMemory;
class Rendezvous;
class ShmGroup;

class Comm {
 public:
  explicit Comm(Rendezvous& rdv);
  virtual ~Comm() = default;
  int rank() const { return rank_; }
  int world() const { return world_; }

  // t = elementwise sum over ranks (F32, F64 or I32 in backend memory); every
  // rank gets the same bits. Through peer memory the bracketing is that of
  // tree_sum.h, so the result does not depend on the rank count for
  // power-of-two counts; through NCCL it is NCCL's.
  virtual void all_reduce_sum(const Tensor& t, const std::string& what) = 0;

  // Every rank contributes elements [bounds[r], bounds[r+1]) of flat (rank r's
  // slice, any dtype, in backend memory); afterwards every rank holds every
  // slice. bounds: world() + 1 non-decreasing element offsets into flat.
  virtual void all_gather(const Tensor& flat, const std::vector<int64_t>& bounds, const std::string& what) = 0;

  // Host values: every rank's vector, concatenated in rank order.
  std::vector<double> all_gather(const std::vector<double>& mine);
  std::vector<std::string> all_gather_bytes(const std::string& mine);
  int64_t sum(int64_t v);
  bool any(bool v);  // true on every rank if any rank passed true
  void barrier();

 protected:
  // Checks all_gather's bounds for t (world() + 1 non-decreasing offsets
  // within t); returns the longest slice.
  int64_t check_gather_bounds(const Tensor& t, const std::vector<int64_t>& bounds, const std::string& what) const;

  Rendezvous& rdv_;
  int rank_ = 0, world_ = 1;
};

// Tensor collectives through peer memory (barriers through the shared-memory
// group); staging_offset/staging_bytes: the part of each bulk area it may use.
std::unique_ptr<Comm> make_peer_comm(Rendezvous& rdv, ShmGroup& group, PeerMemory& pm, size_t staging_offset,
                                     size_t staging_bytes);

}  // namespace nmoe
