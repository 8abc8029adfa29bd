// `n dist-selftest [--nproc N ...] MODE`: exercises the rendezvous, the
// watchdog and the launcher in real processes (used by tests/test_launch.cpp).
//   ok                 every collective once; prints "rank R of W ok"
//   fail-rank K        rank K dies with code 7; the others wait for the watchdog
//   fail-in-barrier K  rank K dies with code 7; the others are blocked in a barrier
//   fail-rank-stuck K  rank K dies with code 7; the others ignore it (the launcher kills them)
//   sleep              all wait for Ctrl-C, then exit 130
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "cli/commands.h"
#include "core/error.h"
#include "dist/abort.h"
#include "dist/dist_env.h"
#include "dist/rendezvous.h"

namespace nmoe::cli {

namespace {

std::atomic<bool> g_stop{false};
void on_stop(int) { g_stop = true; }

void die_abruptly(int rank) {
  std::cout << "rank " << rank << " exits with code 7" << std::endl;
  std::_Exit(7);  // no destructors: like a crash, the others get no goodbye
}

// Waits up to 60 s for pred; false on timeout.
template <typename F>
bool wait_for(F pred) {
  for (int i = 0; i < 6000; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

int run_ok(Rendezvous& rv) {
  const int r = rv.rank(), w = rv.world();
  std::vector<std::string> all = rv.all_gather("r" + std::to_string(r));
  NMOE_CHECK(static_cast<int>(all.size()) == w, "all_gather returned ", all.size(), " values");
  for (int i = 0; i < w; ++i) NMOE_CHECK(all[i] == "r" + std::to_string(i), "all_gather: rank ", i, " sent ", all[i]);
  NMOE_CHECK(rv.all_reduce_sum(r + 1) == int64_t{w} * (w + 1) / 2, "all_reduce_sum is wrong");
  NMOE_CHECK(rv.all_reduce_max(r) == w - 1, "all_reduce_max is wrong");
  NMOE_CHECK(rv.broadcast(r == 0 ? "hello" : "") == "hello", "broadcast is wrong");
  rv.barrier();
  const char* dev = std::getenv("CUDA_VISIBLE_DEVICES");
  std::cout << "rank " << r << " of " << w << " ok (devices " << (dev ? dev : "unset") << ")" << std::endl;
  return 0;
}

enum class Survivors { watch, barrier, stuck };

[[noreturn]] void run_fail(Rendezvous& rv, int victim, Survivors survivors) {
  NMOE_CHECK(victim >= 0 && victim < rv.world(), "dist-selftest: rank ", victim, " does not exist");
  rv.barrier();
  // The victim lets the others leave the barrier first: a rank whose release
  // had not arrived yet would see the death there instead of in the mode
  // tested (one that has it completes the barrier: tcp::wait_for).
  if (rv.rank() == victim) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    die_abruptly(victim);
  }
  if (survivors == Survivors::stuck) {
    std::this_thread::sleep_for(std::chrono::seconds(60));
    fail("rank ", rv.rank(), ": was not stopped within 60 s");
  }
  if (survivors == Survivors::barrier) {
    rv.barrier();
    fail("rank ", rv.rank(), ": the barrier passed although rank ", victim, " died");
  }
  NMOE_CHECK(wait_for(dist_failed), "rank ", rv.rank(), ": no failure detected within 60 s");
  fail("rank ", rv.rank(), ": stopping: ", dist_failure_message());
}

int run_sleep(Rendezvous& rv) {
  struct sigaction sa {};
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  rv.barrier();  // every rank handles Ctrl-C from here on
  if (rv.rank() == 0) std::cout << "all ranks sleeping" << std::endl;
  NMOE_CHECK(wait_for([] { return g_stop.load() || dist_failed(); }), "rank ", rv.rank(),
             ": no interrupt within 60 s");
  NMOE_CHECK(!dist_failed(), "rank ", rv.rank(), ": stopping: ", dist_failure_message());
  rv.barrier();
  std::cout << "rank " << rv.rank() << " interrupted" << std::endl;
  return 130;
}

}  // namespace

int cmd_dist_selftest(const std::vector<std::string>& args) {
  std::vector<std::string> rest = args;
  LaunchOptions launch = parse_launch_args(rest);
  const std::string mode = rest.empty() ? "" : rest[0];
  const bool with_rank = mode == "fail-rank" || mode == "fail-in-barrier" || mode == "fail-rank-stuck";
  if (!(rest.size() == 1 && (mode == "ok" || mode == "sleep")) && !(rest.size() == 2 && with_rank))
    throw UsageError("dist-selftest needs a mode: ok, sleep, fail-rank K, fail-in-barrier K or fail-rank-stuck K");
  if (launch.nproc > 1 || !launch.devices.empty()) {
    launch.child_args = {"dist-selftest"};
    launch.child_args.insert(launch.child_args.end(), rest.begin(), rest.end());
    return launch_workers(launch);
  }
  Rendezvous rv(dist_env_from_environment(), 60);
  rv.start_watchdog();
  if (mode == "ok") return run_ok(rv);
  if (mode == "sleep") return run_sleep(rv);
  const int victim = std::atoi(rest[1].c_str());
  if (mode == "fail-rank") run_fail(rv, victim, Survivors::watch);
  if (mode == "fail-in-barrier") run_fail(rv, victim, Survivors::barrier);
  run_fail(rv, victim, Survivors::stuck);
}

}  // namespace nmoe::cli
