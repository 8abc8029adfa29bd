// RDEP: moves MoE rows between ranks. Rank r owns experts [r*El, (r+1)*El).
// A source sorts its (token, slot) rows by global expert, which also groups
// them by owner, and sends each owner its block straight into the owner's
// receive area; the owner runs its experts on each source's block and writes
// the results straight back into the source's return area, at the rows the
// source sent them from. Slots are assigned by the source (its own prefix sum
// over experts), so no remote atomics are needed and the row order is the same
// run after run. Arrival is signalled by flags raised on the stream
// (peer_transport.cpp); the host takes part only to size the owners' ops.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace nmoe {

class Backend;
class PeerMemory;
class ShmGroup;

struct ReceivedBlock {
  int64_t rows = 0;   // rows this source sent me
  Tensor a, b;        // [rows, D] each; b is undefined when the send had none
  Tensor offsets;     // [El+1] I32, offsets[0] = 0: my experts' row segments
};

class ExpertTransport {
 public:
  virtual ~ExpertTransport() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  // Source side. a (and b, if defined) [N*K, D] sorted by global expert;
  // offsets [E+1] I32 their segments. Owner r receives rows
  // [offsets[r*El], offsets[(r+1)*El]). Returns after every rank has sent.
  virtual void send(const Tensor& a, const Tensor& b, const Tensor& offsets, const std::string& where) = 0;
  // Owner side, after send: the block that source src sent me.
  virtual ReceivedBlock received(int src) = 0;
  // Owner side: rows y [received(src).rows, D] go back to src.
  virtual void put_back(int src, const Tensor& y) = 0;
  // Source side: waits for every owner's put_back and returns the rows
  // [N*K, D] in the order of the a it sent. Valid until the next send.
  virtual Tensor finish_return(const std::string& where) = 0;
  // Host wall time spent in send() and finish_return() so far: the
  // communication share of a step when the waits are on the host (ranks
  // sharing a GPU); with stream waits only the host's part (reading the
  // offsets, the header barrier).
  virtual double seconds() const = 0;
};

// Bytes the transport needs in each rank's host (shared-memory) area and bulk (peer memory) area.
struct TransportSizes {
  size_t host = 0, bulk = 0;
};
TransportSizes transport_sizes(int world, int64_t rows_per_rank, int64_t dim, int64_t local_experts, DType dtype);
// The transport: headers and barriers through the shared-memory group (from
// host_offset), rows through the peer memory (from bulk_offset).
std::unique_ptr<ExpertTransport> make_peer_transport(Backend& backend, ShmGroup& group, size_t host_offset,
                                                     PeerMemory& pm, size_t bulk_offset, int64_t rows_per_rank,
                                                     int64_t dim, int64_t local_experts, DType dtype);

}  // namespace nmoe
