// `n ... --nproc N`: the launcher starts the ranks, relays their output, maps
// devices, forwards Ctrl-C and stops every rank when one fails. The ranks run
// the hidden `n dist-selftest` modes.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cli/commands.h"
#include "core/fs.h"
#include "test_util.h"

namespace nmoe {
namespace {

using Clock = std::chrono::steady_clock;

struct Timed {
  test::CommandResult r;
  double seconds = 0;
};

Timed selftest(const std::string& args, const std::string& env = "") {
  const auto t0 = Clock::now();
  Timed t;
  t.r = test::run_command(env + " timeout -k 5 90 " + test::n_binary() + " dist-selftest " + args);
  t.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return t;
}

bool has(const std::string& out, const std::string& part) { return out.find(part) != std::string::npos; }

// Starts the launcher in the background with its output in log.
pid_t start_launcher(const std::string& log, const std::vector<std::string>& args) {
  pid_t pid = ::fork();
  if (pid == 0) {
    std::freopen(log.c_str(), "w", stdout);
    ::dup2(STDOUT_FILENO, STDERR_FILENO);
    std::vector<char*> argv{const_cast<char*>("n"), const_cast<char*>("dist-selftest")};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(test::n_binary().c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}

bool wait_for_text(const std::string& log, const std::string& text, double seconds) {
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < end) {
    if (fs::exists(log) && has(fs::read_file(log), text)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// Exit status of pid, or -1 if it is still running after `seconds` (then killed).
int wait_exit(pid_t pid, double seconds) {
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (Clock::now() > end) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Process state from /proc/PID/stat ('Z' zombie), or 0 when there is no such process.
char process_state(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size() ? 0 : stat[paren + 2];
}

std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(e.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream rest(stat.substr(paren + 2));
    char state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent) out.push_back(std::stoi(name));
  }
  return out;
}

TEST(Launch, AllRanksRunAndRankZeroSpeaks) {
  Timed t = selftest("--nproc 3 ok");
  EXPECT_EQ(t.r.exit_code, 0) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "rank 0 of 3 ok")) << t.r.output;
  EXPECT_FALSE(has(t.r.output, "rank 1")) << t.r.output;
  EXPECT_FALSE(has(t.r.output, "[rank")) << t.r.output;
}

TEST(Launch, AllRanksOutputIsPrefixed) {
  Timed t = selftest("ok --all-ranks-output --nproc=4");
  EXPECT_EQ(t.r.exit_code, 0) << t.r.output;
  for (int r = 1; r < 4; ++r)
    EXPECT_TRUE(has(t.r.output, "[rank " + std::to_string(r) + "] rank " + std::to_string(r) + " of 4 ok"))
        << t.r.output;
  EXPECT_TRUE(has(t.r.output, "\nrank 0 of 4 ok") || t.r.output.rfind("rank 0 of 4 ok", 0) == 0) << t.r.output;
}

TEST(Launch, DevicesArePassedPerRank) {
  Timed t = selftest("--nproc 3 --devices 0,0,1 --all-ranks-output ok", "env -u CUDA_VISIBLE_DEVICES");
  EXPECT_EQ(t.r.exit_code, 0) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "rank 0 of 3 ok (devices 0)")) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "[rank 1] rank 1 of 3 ok (devices 0)")) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "[rank 2] rank 2 of 3 ok (devices 1)")) << t.r.output;

  // Ids index the launcher's own visible devices.
  t = selftest("--nproc 3 --devices 1,1,0 --all-ranks-output ok", "CUDA_VISIBLE_DEVICES=5,7");
  EXPECT_EQ(t.r.exit_code, 0) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "rank 0 of 3 ok (devices 7)")) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "[rank 2] rank 2 of 3 ok (devices 5)")) << t.r.output;

  t = selftest("--nproc 2 --all-ranks-output ok", "CUDA_VISIBLE_DEVICES=5,7,9");
  EXPECT_EQ(t.r.exit_code, 0) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "[rank 1] rank 1 of 2 ok (devices 7)")) << t.r.output;

  t = selftest("--nproc 2 --devices 0,2 ok", "CUDA_VISIBLE_DEVICES=5,7");
  EXPECT_NE(t.r.exit_code, 0) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "CUDA_VISIBLE_DEVICES='5,7' makes only 2 visible")) << t.r.output;
}

TEST(Launch, FailingRankStopsTheOthers) {
  Timed t = selftest("--nproc 4 fail-rank 2");
  EXPECT_EQ(t.r.exit_code, 7) << t.r.output;
  EXPECT_LT(t.seconds, 30) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "error: rank 2 exited with code 7; stopping the other ranks")) << t.r.output;
  // The failing rank's last lines, and the others' reasons for stopping.
  EXPECT_TRUE(has(t.r.output, "[rank 2] rank 2 exits with code 7")) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "error: rank 0: stopping: rank 2 exited unexpectedly")) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "[rank 3] error: rank 3: stopping: rank 2 exited unexpectedly")) << t.r.output;
  EXPECT_FALSE(has(t.r.output, "killing")) << t.r.output;
}

TEST(Launch, RankBlockedInABarrierStops) {
  Timed t = selftest("--nproc 3 fail-in-barrier 1");
  EXPECT_EQ(t.r.exit_code, 7) << t.r.output;
  EXPECT_LT(t.seconds, 30) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "error: rank 1 exited with code 7; stopping the other ranks")) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "rank 1 exited")) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "[rank 2] error:")) << t.r.output;
  EXPECT_FALSE(has(t.r.output, "killing")) << t.r.output;
}

TEST(Launch, RankZeroFailing) {
  Timed t = selftest("--nproc 3 fail-rank 0");
  EXPECT_EQ(t.r.exit_code, 7) << t.r.output;
  EXPECT_LT(t.seconds, 30) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "rank 0 exits with code 7")) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "error: rank 0 exited with code 7; stopping the other ranks")) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "[rank 1] error: rank 1: stopping: rank 0 exited unexpectedly")) << t.r.output;
}

TEST(Launch, RanksThatDoNotStopAreKilled) {
  Timed t = selftest("--nproc 3 fail-rank-stuck 1");
  EXPECT_EQ(t.r.exit_code, 7) << t.r.output;
  EXPECT_GT(t.seconds, 9) << t.r.output;
  EXPECT_LT(t.seconds, 30) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "error: rank 0 did not stop within 10 s; killing it")) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "error: rank 2 did not stop within 10 s; killing it")) << t.r.output;
}

TEST(Launch, InterruptIsForwardedToEveryRank) {
  test::TempDir d;
  const std::string log = d / "log.txt";
  pid_t pid = start_launcher(log, {"--nproc", "3", "--all-ranks-output", "sleep"});
  ASSERT_TRUE(wait_for_text(log, "all ranks sleeping", 60)) << fs::read_file(log);
  ::kill(pid, SIGINT);
  EXPECT_EQ(wait_exit(pid, 30), 130) << fs::read_file(log);
  const std::string out = fs::read_file(log);
  EXPECT_TRUE(has(out, "rank 0 interrupted")) << out;
  EXPECT_TRUE(has(out, "[rank 1] rank 1 interrupted")) << out;
  EXPECT_TRUE(has(out, "[rank 2] rank 2 interrupted")) << out;
}

TEST(Launch, KilledLauncherTakesItsRanksAlong) {
  test::TempDir d;
  const std::string log = d / "log.txt";
  pid_t pid = start_launcher(log, {"--nproc", "3", "sleep"});
  ASSERT_TRUE(wait_for_text(log, "all ranks sleeping", 60)) << fs::read_file(log);
  std::vector<pid_t> ranks = children_of(pid);
  ASSERT_EQ(ranks.size(), 3u);
  ::kill(pid, SIGKILL);
  EXPECT_EQ(wait_exit(pid, 30), 128 + SIGKILL);
  for (pid_t r : ranks) {
    const auto end = Clock::now() + std::chrono::seconds(5);
    while (process_state(r) != 0 && process_state(r) != 'Z' && Clock::now() < end)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const char s = process_state(r);
    EXPECT_TRUE(s == 0 || s == 'Z') << "rank process " << r << " still runs (state " << s << ")";
  }
}

TEST(Launch, UsageErrors) {
  Timed t = selftest("--nproc 0 ok");
  EXPECT_EQ(t.r.exit_code, 2) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "--nproc needs a number")) << t.r.output;
  t = selftest("--nproc 3 --devices 0,1 ok");
  EXPECT_EQ(t.r.exit_code, 2) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "--devices lists 2 device(s) but --nproc is 3")) << t.r.output;
  t = selftest("--nproc 2 --devices 0,,1 ok");
  EXPECT_EQ(t.r.exit_code, 2) << t.r.output;
  t = selftest("--nproc 2 bogus");
  EXPECT_EQ(t.r.exit_code, 2) << t.r.output;
  EXPECT_TRUE(has(t.r.output, "dist-selftest needs a mode")) << t.r.output;
  auto r = test::run_command(test::n_binary() + " train --nproc two configs/tiny.toml");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(has(r.output, "--nproc needs a number")) << r.output;
  EXPECT_FALSE(has(test::run_command(test::n_binary() + " help").output, "dist-selftest"));
}

TEST(LaunchArgs, StripsLaunchOptionsAnywhere) {
  std::vector<std::string> args{"--nproc", "4", "c.toml", "--set", "--all-ranks-output", "--devices=0,0,1,1",
                                "--set", "x=1", "--all-ranks-output"};
  LaunchOptions o = cli::parse_launch_args(args);
  EXPECT_EQ(o.nproc, 4);
  EXPECT_EQ(o.devices, (std::vector<std::string>{"0", "0", "1", "1"}));
  EXPECT_TRUE(o.all_ranks_output);
  EXPECT_EQ(args, (std::vector<std::string>{"c.toml", "--set", "--all-ranks-output", "--set", "x=1"}));

  std::vector<std::string> plain{"c.toml", "--set", "steps=3"};
  LaunchOptions p = cli::parse_launch_args(plain);
  EXPECT_EQ(p.nproc, 1);
  EXPECT_TRUE(p.devices.empty());
  EXPECT_FALSE(p.all_ranks_output);
  EXPECT_EQ(plain.size(), 3u);
}

TEST(LaunchDevices, OnePerRankShareOrInherit) {
  LaunchOptions o;
  o.nproc = 4;
  using V = std::vector<std::string>;
  EXPECT_EQ(rank_devices(o, nullptr, 8), (V{"0", "1", "2", "3"}));
  EXPECT_EQ(rank_devices(o, "4,5,6,7", 0), (V{"4", "5", "6", "7"}));
  EXPECT_EQ(rank_devices(o, "GPU-a,GPU-b,GPU-c,GPU-d,GPU-e", 0), (V{"GPU-a", "GPU-b", "GPU-c", "GPU-d"}));
  // Too few known GPUs (or none: a CPU run): the ranks inherit the launcher's setting.
  EXPECT_EQ(rank_devices(o, nullptr, 0), (V{"", "", "", ""}));
  EXPECT_EQ(rank_devices(o, nullptr, 2), (V{"", "", "", ""}));
  EXPECT_EQ(rank_devices(o, "0,1", 0), (V{"", "", "", ""}));
  o.gpus_per_rank_share = 2;
  EXPECT_EQ(rank_devices(o, nullptr, 2), (V{"0", "0", "1", "1"}));
  EXPECT_EQ(rank_devices(o, "6, 3", 0), (V{"6", "6", "3", "3"}));
  o.gpus_per_rank_share = 0;
  o.devices = {"1", "1", "0", "0"};
  EXPECT_EQ(rank_devices(o, nullptr, 0), (V{"1", "1", "0", "0"}));
  EXPECT_EQ(rank_devices(o, "3,2", 0), (V{"2", "2", "3", "3"}));
  test::expect_parts(test::error_of([&] { rank_devices(o, "3", 0); }),
                     {"--devices uses device 1", "CUDA_VISIBLE_DEVICES='3'", "only 1"});
  o.devices = {"0", "x", "1", "1"};
  test::expect_parts(test::error_of([&] { rank_devices(o, nullptr, 0); }), {"--devices", "'x'"});
  o.devices = {"0"};
  test::expect_parts(test::error_of([&] { rank_devices(o, nullptr, 0); }), {"--devices lists 1", "--nproc is 4"});
}

}  // namespace
}  // namespace nmoe
