#include "dist/shm_group.h"

#include <sched.h>
#include <time.h>

#include <chrono>
#include <cstdlib>

#include "core/error.h"
#include "dist/abort.h"

namespace nmoe {

namespace {
constexpr size_t kControlBytes = 4096;
static_assert(sizeof(std::atomic<int64_t>) * ShmGroup::kMaxRanks <= kControlBytes);
static_assert(std::atomic<int64_t>::is_always_lock_free, "barrier flags must be lock-free across processes");

std::string region_name(const std::string& job_id, int rank) {
  return "/nmoe_" + job_id + "_r" + std::to_string(rank);
}
}  // namespace

ShmGroup::ShmGroup(const std::string& job_id, int rank, int world, size_t data_bytes,
                   const std::function<void()>& setup_barrier)
    : rank_(rank), world_(world), data_bytes_((data_bytes + 255) / 256 * 256) {
  NMOE_CHECK(world >= 1 && world <= kMaxRanks, "at most ", kMaxRanks, " ranks share memory; got ", world);
  NMOE_CHECK(rank >= 0 && rank < world, "rank ", rank, " is outside [0, ", world, ")");
  if (const char* t = std::getenv("NMOE_DIST_TIMEOUT_S"); t && *t) timeout_s_ = std::atof(t);
  const size_t bytes = kControlBytes + data_bytes_;
  regions_.resize(world);
  regions_[rank] = ShmRegion::create(region_name(job_id, rank), bytes);
  setup_barrier();
  for (int r = 0; r < world; ++r)
    if (r != rank) regions_[r] = ShmRegion::open(region_name(job_id, r), bytes);
  setup_barrier();
  regions_[rank].unlink();  // every peer has it mapped; nothing stays in /dev/shm
  data_.resize(world);
  for (int r = 0; r < world; ++r) data_[r] = static_cast<char*>(regions_[r].data()) + kControlBytes;
}

void ShmGroup::wait_until(const std::function<bool()>& done, const std::string& what, int peer) const {
  const auto start = std::chrono::steady_clock::now();
  int64_t spins = 0;
  while (!done()) {
    ++spins;
    if (spins < 256) continue;
    if (spins < 2048) {
      sched_yield();
      continue;
    }
    // Ranks may outnumber cores (tests): sleep rather than burn a peer's core.
    timespec ts{0, 50'000};
    nanosleep(&ts, nullptr);
    if ((spins & 63) == 0) {
      if (dist_failed()) fail(what, ": stopped because ", dist_failure_message());
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      NMOE_CHECK(waited < timeout_s_, what, ": rank ", rank_, " waited ", static_cast<int>(waited), " s for rank ",
                 peer, " (NMOE_DIST_TIMEOUT_S = ", timeout_s_, "); the ranks have diverged or one is stuck");
    }
  }
}

void ShmGroup::barrier(const std::string& what) {
  if (world_ == 1) return;
  const int64_t phase = ++phase_;
  for (int r = 0; r < world_; ++r) control(r)->arrived[rank_].store(phase, std::memory_order_release);
  Control* mine = control(rank_);
  for (int r = 0; r < world_; ++r)
    wait_until([&] { return mine->arrived[r].load(std::memory_order_acquire) >= phase; }, what + " (barrier)", r);
}

}  // namespace nmoe
