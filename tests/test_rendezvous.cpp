// The TCP rendezvous: collectives across ranks (threads, or processes where a
// rank must die), failure detection by the watchdog, and the errors of a
// rendezvous that cannot form.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <thread>

#include "dist/abort.h"
#include "dist/rendezvous.h"
#include "dist/tcp.h"
#include "test_util.h"
#include "dist_test_util.h"

namespace nmoe {
namespace {

using Clock = std::chrono::steady_clock;
using test::on_threads;

DistEnv env_for(int rank, int world, int port, const std::string& job = "test-job") {
  return test::rank_env(rank, world, port, job);
}

// Runs fn(rank) in `world` forked processes; returns their exit codes (-1 when
// one had to be killed after 30 s). An exception in fn exits with 99.
std::vector<int> on_processes(int world, const std::function<int(int)>& fn) {
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    pid_t pid = ::fork();
    if (pid == 0) {
      int code = 99;
      try {
        code = fn(r);
      } catch (const std::exception& e) {
        fprintf(stderr, "rank %d: %s\n", r, e.what());
      }
      ::_exit(code);
    }
    pids.push_back(pid);
  }
  std::vector<int> codes(world, -1);
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  for (int r = 0; r < world; ++r) {
    int status = 0;
    while (::waitpid(pids[r], &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        ::kill(pids[r], SIGKILL);
        ::waitpid(pids[r], &status, 0);
        status = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (status != -1) codes[r] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  return codes;
}

// Polls dist_failed() for up to `seconds`.
bool failure_within(double seconds) {
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < end) {
    if (dist_failed()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return dist_failed();
}

class RendezvousTest : public ::testing::Test {
 protected:
  void SetUp() override { reset_dist_failure(); }
  void TearDown() override { reset_dist_failure(); }
};

TEST_F(RendezvousTest, CollectivesAcrossFourRanks) {
  const int port = tcp::free_port(), W = 4;
  std::vector<std::vector<std::string>> gathered(W);
  std::vector<std::string> bcast(W);
  std::vector<int64_t> maxes(W), sums(W);
  auto errors = on_threads(W, [&](int r) {
    Rendezvous rv(env_for(r, W, port), 30);
    rv.start_watchdog();
    EXPECT_EQ(rv.rank(), r);
    EXPECT_EQ(rv.world(), W);
    // Sizes differ per rank, including empty and large contributions.
    gathered[r] = rv.all_gather(std::string(r == 2 ? 0 : 100000 * r + 1, static_cast<char>('a' + r)));
    rv.barrier();
    bcast[r] = rv.broadcast(r == 0 ? "from rank 0" : "ignored");
    maxes[r] = rv.all_reduce_max(r == 1 ? -5 : r * 10 - 100);
    sums[r] = rv.all_reduce_sum(int64_t{1} << (40 + r));
    for (int i = 0; i < 50; ++i) EXPECT_EQ(rv.all_reduce_sum(i), 4 * i);
  });
  for (int r = 0; r < W; ++r) {
    EXPECT_EQ(errors[r], "") << "rank " << r;
    ASSERT_EQ(gathered[r].size(), size_t(W));
    for (int i = 0; i < W; ++i)
      EXPECT_EQ(gathered[r][i], std::string(i == 2 ? 0 : 100000 * i + 1, static_cast<char>('a' + i)));
    EXPECT_EQ(bcast[r], "from rank 0");
    EXPECT_EQ(maxes[r], -5);
    EXPECT_EQ(sums[r], (int64_t{1} << 40) + (int64_t{1} << 41) + (int64_t{1} << 42) + (int64_t{1} << 43));
  }
  EXPECT_FALSE(dist_failed()) << dist_failure_message();
}

TEST_F(RendezvousTest, OneProcessNeedsNoNetwork) {
  Rendezvous rv(env_for(0, 1, 0));
  rv.start_watchdog();
  EXPECT_EQ(rv.all_gather("x"), std::vector<std::string>{"x"});
  EXPECT_EQ(rv.broadcast("y"), "y");
  rv.barrier();
  EXPECT_EQ(rv.all_reduce_max(7), 7);
  EXPECT_EQ(rv.all_reduce_sum(7), 7);
}

TEST_F(RendezvousTest, CleanShutdownIsNotAFailure) {
  const int port = tcp::free_port();
  auto errors = on_threads(3, [&](int r) {
    Rendezvous rv(env_for(r, 3, port), 30);
    rv.start_watchdog();
    rv.barrier();
    // Rank 2 leaves first; the others keep watching for a while.
    if (r != 2) std::this_thread::sleep_for(std::chrono::milliseconds(800));
  });
  for (const std::string& e : errors) EXPECT_EQ(e, "");
  EXPECT_FALSE(dist_failed()) << dist_failure_message();
}

TEST_F(RendezvousTest, MismatchedCallOrderIsAnError) {
  const int port = tcp::free_port();
  auto errors = on_threads(2, [&](int r) {
    Rendezvous rv(env_for(r, 2, port), 30);
    if (r == 0) rv.barrier();
    else rv.all_gather("x");
  });
  for (const std::string& e : errors) test::expect_parts(e, {"rank 1 called all_gather", "rank 0 called barrier", "same order"});
  EXPECT_TRUE(dist_failed());
}

TEST_F(RendezvousTest, CollectiveTimesOut) {
  const int port = tcp::free_port();
  auto errors = on_threads(2, [&](int r) {
    Rendezvous rv(env_for(r, 2, port), 30);
    rv.set_timeout(0.5);
    if (r == 0) rv.all_reduce_max(1);
    else std::this_thread::sleep_for(std::chrono::seconds(1));
  });
  test::expect_parts(errors[0], {"rank 0: all_reduce_max timed out after 0.5 s", "rank 1", "NMOE_DIST_TIMEOUT_S"});
  EXPECT_EQ(errors[1], "");
}

TEST_F(RendezvousTest, TimeoutComesFromTheEnvironment) {
  ::setenv("NMOE_DIST_TIMEOUT_S", "soon", 1);
  std::string err = test::error_of([] { Rendezvous rv(env_for(0, 1, 0)); });
  ::unsetenv("NMOE_DIST_TIMEOUT_S");
  test::expect_parts(err, {"NMOE_DIST_TIMEOUT_S", "'soon'"});

  const int port = tcp::free_port();
  ::setenv("NMOE_DIST_TIMEOUT_S", "0.3", 1);
  auto errors = on_threads(2, [&](int r) {
    Rendezvous rv(env_for(r, 2, port), 30);
    if (r == 1) rv.barrier();
    else std::this_thread::sleep_for(std::chrono::seconds(1));
  });
  ::unsetenv("NMOE_DIST_TIMEOUT_S");
  test::expect_parts(errors[1], {"rank 1: barrier timed out after 0.3 s", "rank 0"});
}

TEST_F(RendezvousTest, ConnectTimeoutNamesAddressPortAndRank) {
  const int port = tcp::free_port();
  const auto t0 = Clock::now();
  std::string err = test::error_of([&] { Rendezvous rv(env_for(2, 3, port), 0.5); });
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 5);
  test::expect_parts(err, {"rank 2", "127.0.0.1:" + std::to_string(port), "0.5 s", "MASTER_PORT"});
}

TEST_F(RendezvousTest, RankZeroNamesTheMissingRanks) {
  const int port = tcp::free_port();
  auto errors = on_threads(2, [&](int r) {
    // World of 4 but only ranks 0 and 2 start.
    Rendezvous rv(env_for(r * 2, 4, port), r == 0 ? 1.0 : 30);
  });
  test::expect_parts(errors[0], {"rank 0: waited 1 s", "rank(s) 1, 3"});
  test::expect_parts(errors[1], {"rank 2", "rank 0", "exited or lost connection"});
}

TEST_F(RendezvousTest, AnotherJobIsRefused) {
  const int port = tcp::free_port();
  auto errors = on_threads(2, [&](int r) {
    Rendezvous rv(env_for(r, 2, port, r == 0 ? "job-a" : "job-b"), r == 0 ? 1.5 : 30);
  });
  test::expect_parts(errors[1], {"rank 1", "refused", "another job", "'job-a'", "'job-b'", "MASTER_PORT"});
  test::expect_parts(errors[0], {"rank 0: waited", "rank(s) 1", "refused a connection from another job"});
}

TEST_F(RendezvousTest, DuplicateRankIsAnError) {
  const int port = tcp::free_port();
  auto errors = on_threads(3, [&](int r) { Rendezvous rv(env_for(r == 2 ? 1 : r, 3, port), 5); });
  test::expect_parts(errors[0], {"two processes claim rank 1"});
  // One of the two rank-1 processes is refused with that reason, the other loses rank 0.
  std::string both = errors[1] + " | " + errors[2];
  test::expect_parts(both, {"two processes claim rank 1", "exited or lost connection"});
}

TEST_F(RendezvousTest, WorldSizeMismatchIsAnError) {
  const int port = tcp::free_port();
  auto errors = on_threads(2, [&](int r) { Rendezvous rv(env_for(r, r == 0 ? 2 : 3, port), 5); });
  test::expect_parts(errors[0], {"rank 1 has WORLD_SIZE=3 but rank 0 has 2"});
  test::expect_parts(errors[1], {"WORLD_SIZE=3"});
}

// A rank that dies without cleaning up (like kill -9) is noticed by all the
// others through the watchdog within a few seconds, and their next collective throws.
class PeerDeath : public RendezvousTest, public ::testing::WithParamInterface<int> {};

TEST_P(PeerDeath, EveryOtherRankSeesTheFailure) {
  const int port = tcp::free_port(), W = 4, victim = GetParam();
  auto codes = on_processes(W, [&](int r) {
    Rendezvous rv(env_for(r, W, port), 30);
    rv.start_watchdog();
    rv.barrier();
    if (r == victim) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      ::_exit(7);
    }
    if (!failure_within(5)) return 1;
    const std::string expected = "rank " + std::to_string(victim) + " exited unexpectedly";
    if (dist_failure_message() != expected) {
      fprintf(stderr, "rank %d: '%s'\n", r, dist_failure_message().c_str());
      return 2;
    }
    std::string err = test::error_of([&] { rv.barrier(); });
    return err.find(expected) != std::string::npos ? 0 : 3;
  });
  for (int r = 0; r < W; ++r) EXPECT_EQ(codes[r], r == victim ? 7 : 0) << "rank " << r;
}

INSTANTIATE_TEST_SUITE_P(Rendezvous, PeerDeath, ::testing::Values(0, 2));

TEST_F(RendezvousTest, PendingCollectiveThrowsWhenAPeerDies) {
  const int port = tcp::free_port(), W = 3;
  for (bool watchdog : {false, true}) {
    auto codes = on_processes(W, [&](int r) {
      Rendezvous rv(env_for(r, W, port), 30);
      if (watchdog) rv.start_watchdog();
      rv.barrier();
      if (r == 2) {
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        ::_exit(7);
      }
      const auto t0 = Clock::now();
      std::string err = test::error_of([&] { rv.all_gather("x"); });
      const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
      if (err.find("exited") == std::string::npos || err.find("rank 2") == std::string::npos) {
        fprintf(stderr, "rank %d: '%s'\n", r, err.c_str());
        return 1;
      }
      if (!dist_failed()) return 2;
      return waited < 5 ? 0 : 3;
    });
    EXPECT_EQ(codes, (std::vector<int>{0, 0, 7})) << "watchdog " << watchdog;
  }
}

TEST_F(RendezvousTest, FailureOnOneRankReachesTheOthers) {
  // Code that gives up (an error on one rank) records the failure; the
  // watchdog passes it on, so ranks blocked elsewhere can stop too.
  const int port = tcp::free_port(), W = 3;
  auto codes = on_processes(W, [&](int r) {
    Rendezvous rv(env_for(r, W, port), 30);
    rv.start_watchdog();
    rv.barrier();
    if (r == 1) set_dist_failure("rank 1: out of memory");
    if (!failure_within(5)) return 1;
    return dist_failure_message() == "rank 1: out of memory" ? 0 : 2;
  });
  EXPECT_EQ(codes, (std::vector<int>{0, 0, 0}));
}

TEST(DistAbort, FirstMessageWins) {
  reset_dist_failure();
  EXPECT_FALSE(dist_failed());
  EXPECT_EQ(*dist_abort_word(), 0);
  EXPECT_EQ(dist_failure_message(), "");
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) threads.emplace_back([] { set_dist_failure("boom"); });
  for (auto& t : threads) t.join();
  set_dist_failure("later");
  EXPECT_TRUE(dist_failed());
  EXPECT_NE(*dist_abort_word(), 0);
  EXPECT_EQ(dist_failure_message(), "boom");
  reset_dist_failure();
  EXPECT_FALSE(dist_failed());
  EXPECT_EQ(*dist_abort_word(), 0);
}

}  // namespace
}  // namespace nmoe
