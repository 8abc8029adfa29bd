// The rendezvous of a multi-process run over TCP: rank 0 listens on
// MASTER_PORT, the other ranks connect to it (a star), and small collectives
// run through rank 0. Used to agree on setup data (shared-memory names, sizes)
// and on per-step scalars, not for bulk tensor traffic.
//
// Every rank must call the collectives in the same order, from one thread.
// A lost peer, a timeout or a mismatched call order throws an Error naming the
// operation and the rank, and records the failure (dist/abort.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dist/dist_env.h"
#include "dist/tcp.h"
#include "dist/watchdog.h"

namespace nmoe {

class Rendezvous {
 public:
  // Connects all ranks; peers retry until rank 0 listens, for up to connect_timeout_s.
  explicit Rendezvous(const DistEnv& env, double connect_timeout_s = 120);
  // Says goodbye on the watch connections unless an exception is unwinding or a
  // failure is recorded, so the other ranks do not report this exit as a failure.
  ~Rendezvous();
  Rendezvous(const Rendezvous&) = delete;
  Rendezvous& operator=(const Rendezvous&) = delete;

  int rank() const { return env_.rank; }
  int world() const { return env_.world; }

  std::vector<std::string> all_gather(const std::string& mine);  // every rank's bytes, in rank order
  std::string broadcast(const std::string& value_on_rank0);
  void barrier();
  int64_t all_reduce_max(int64_t x);
  int64_t all_reduce_sum(int64_t x);

  // Starts watching the other ranks: when one dies, every surviving rank sees
  // dist_failed() within about a second.
  void start_watchdog();
  // Limit for one collective; default NMOE_DIST_TIMEOUT_S or 600 s.
  void set_timeout(double seconds) { timeout_s_ = seconds; }
  double timeout() const { return timeout_s_; }

 private:
  enum class Op : uint32_t { all_gather = 1, broadcast, barrier, max, sum, error };
  using Combine = std::string (*)(const std::vector<std::string>&);

  void accept_peers(double timeout_s);
  void connect_to_rank0(double timeout_s);
  std::string collective(Op op, const std::string& mine, Combine combine);
  std::string gather_on_rank0(Op op, const std::string& mine, Combine combine, tcp::Clock::time_point deadline);
  std::string exchange_with_rank0(Op op, const std::string& mine, tcp::Clock::time_point deadline);
  [[noreturn]] void io_failure(tcp::Io io, int other, Op op, bool gathering);
  [[noreturn]] void broken(const std::string& msg, bool tell_peers);
  static const char* op_name(Op op);

  DistEnv env_;
  double timeout_s_;
  std::vector<tcp::Socket> data_;  // rank 0: indexed by peer rank; other ranks: [0] is rank 0
  std::unique_ptr<Watchdog> watchdog_;
  uint64_t seq_ = 0;
  std::string broken_;  // why the rendezvous can no longer be used
};

}  // namespace nmoe
