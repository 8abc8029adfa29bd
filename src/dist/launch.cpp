#include "dist/launch.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/error.h"
#include "dist/launch_output.h"
#include "dist/tcp.h"

extern char** environ;

namespace nmoe {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kStopGrace = std::chrono::seconds(10);

volatile sig_atomic_t g_signal = 0;
void on_signal(int sig) { g_signal = sig; }

// SIGINT/SIGTERM are recorded for forwarding; a closed stdout must not kill the launcher.
struct SignalGuard {
  struct sigaction old_int {}, old_term {}, old_pipe {};
  SignalGuard() {
    g_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, &old_pipe);
  }
  ~SignalGuard() {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
    sigaction(SIGPIPE, &old_pipe, nullptr);
  }
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t comma = s.find(',', start);
    std::string item = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

int count_gpus() {
  std::error_code ec;
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/dev", ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() > 6 && name.rfind("nvidia", 0) == 0 && name.find_first_not_of("0123456789", 6) == std::string::npos)
      ++n;
  }
  return n;
}

struct Child {
  int rank = 0;
  pid_t pid = -1;
  std::unique_ptr<RankOutput> output;
  bool running = false;
  bool killed = false;  // by the launcher, after the grace period
  int code = 0;
};

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  const int sig = WTERMSIG(status);
  return "was killed by signal " + std::to_string(sig) + " (" + ::strsignal(sig) + ")";
}

// Starts one rank with stdout and stderr on fresh pipes. Everything the child
// needs is prepared before fork: between fork and exec only system calls run.
Child spawn(int rank, const std::string& exe, const std::vector<std::string>& argv_s,
            const std::vector<std::string>& env_s, bool show) {
  int out[2], err[2];
  NMOE_CHECK(::pipe2(out, O_CLOEXEC) == 0, "cannot create a pipe: ", std::strerror(errno));
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    fail("cannot create a pipe: ", std::strerror(errno));
  }
  std::vector<char*> argv, envp;
  for (const std::string& a : argv_s) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const std::string& e : env_s) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid == 0) {
    // Die with the launcher; own process group, so a terminal's Ctrl-C reaches
    // the ranks only once, through the launcher.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(137);
    ::setpgid(0, 0);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGPIPE}) ::sigaction(sig, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, STDIN_FILENO);
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(err[1], STDERR_FILENO);
    ::execve(exe.c_str(), argv.data(), envp.data());
    const char msg[] = "error: cannot start the rank's process (execve failed)\n";
    ssize_t ignored = ::write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)ignored;
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::close(out[1]);
  ::close(err[1]);
  if (pid < 0) {
    ::close(out[0]);
    ::close(err[0]);
    fail("cannot start rank ", rank, ": fork failed: ", std::strerror(fork_errno));
  }
  Child c;
  c.rank = rank;
  c.pid = pid;
  c.running = true;
  c.output = std::make_unique<RankOutput>(rank, show, out[0], err[0]);
  return c;
}

// Kills and reaps whatever still runs when the launcher leaves early (an error).
struct ChildrenGuard {
  std::vector<Child>& children;
  ~ChildrenGuard() {
    for (Child& c : children)
      if (c.running) {
        ::kill(c.pid, SIGKILL);
        ::waitpid(c.pid, nullptr, 0);
      }
  }
};

}  // namespace

std::vector<std::string> rank_devices(const LaunchOptions& opts, const char* parent_visible, int gpu_count) {
  const int n = opts.nproc;
  std::vector<int> ids(n);
  const bool explicit_ids = !opts.devices.empty();
  if (explicit_ids) {
    NMOE_CHECK(static_cast<int>(opts.devices.size()) == n, "--devices lists ", opts.devices.size(),
               " device(s) but --nproc is ", n, ": give one device per rank (repeat an id to share a GPU)");
    for (int r = 0; r < n; ++r) {
      const std::string& d = opts.devices[r];
      NMOE_CHECK(!d.empty() && d.size() < 6 && d.find_first_not_of("0123456789") == std::string::npos,
                 "--devices: '", d, "' is not a device number");
      ids[r] = std::stoi(d);
    }
  } else {
    NMOE_CHECK(opts.gpus_per_rank_share >= 0, "the number of ranks per GPU must not be negative");
    for (int r = 0; r < n; ++r) ids[r] = opts.gpus_per_rank_share > 0 ? r / opts.gpus_per_rank_share : r;
  }
  int needed = 0;
  for (int id : ids) needed = std::max(needed, id + 1);

  std::vector<std::string> out(n);
  if (parent_visible) {
    const std::vector<std::string> visible = split_list(parent_visible);
    if (!explicit_ids && static_cast<int>(visible.size()) < needed) return out;
    NMOE_CHECK(static_cast<int>(visible.size()) >= needed, "--devices uses device ", needed - 1,
               " but CUDA_VISIBLE_DEVICES='", parent_visible, "' makes only ", visible.size(), " visible");
    for (int r = 0; r < n; ++r) out[r] = visible[ids[r]];
    return out;
  }
  if (!explicit_ids && gpu_count < needed) return out;
  for (int r = 0; r < n; ++r) out[r] = std::to_string(ids[r]);
  return out;
}

int launch_workers(const LaunchOptions& opts) {
  NMOE_CHECK(opts.nproc >= 1, "--nproc must be at least 1 (got ", opts.nproc, ")");
  const std::vector<std::string> devices = rank_devices(opts, std::getenv("CUDA_VISIBLE_DEVICES"), count_gpus());
  std::error_code ec;
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  NMOE_CHECK(!ec, "cannot find this program's path (/proc/self/exe): ", ec.message());
  const int port = tcp::free_port();
  const std::string job_id = "nmoe-" + std::to_string(::getpid()) + "-" +
                             std::to_string(std::chrono::system_clock::now().time_since_epoch().count());

  std::vector<std::string> argv{exe};
  argv.insert(argv.end(), opts.child_args.begin(), opts.child_args.end());
  const std::vector<std::string> ours{"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                                      "MASTER_ADDR", "MASTER_PORT", "NMOE_JOB_ID"};
  std::vector<std::string> base_env;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    if (std::find(ours.begin(), ours.end(), key) == ours.end()) base_env.push_back(kv);
  }

  SignalGuard signals;
  std::vector<Child> children;
  children.reserve(opts.nproc);
  ChildrenGuard guard{children};
  for (int r = 0; r < opts.nproc; ++r) {
    std::vector<std::string> env;
    for (const std::string& kv : base_env)
      if (devices[r].empty() || kv.rfind("CUDA_VISIBLE_DEVICES=", 0) != 0) env.push_back(kv);
    const std::string n = std::to_string(opts.nproc);
    for (const std::string& kv : {"RANK=" + std::to_string(r), "WORLD_SIZE=" + n, "LOCAL_RANK=" + std::to_string(r),
                                  "LOCAL_WORLD_SIZE=" + n, std::string("MASTER_ADDR=127.0.0.1"),
                                  "MASTER_PORT=" + std::to_string(port), "NMOE_JOB_ID=" + job_id})
      env.push_back(kv);
    if (!devices[r].empty()) env.push_back("CUDA_VISIBLE_DEVICES=" + devices[r]);
    children.push_back(spawn(r, exe, argv, env, opts.all_ranks_output));
  }

  bool interrupted = false;
  int first_failure = -1, result = 0, running = opts.nproc;
  Clock::time_point kill_at = Clock::time_point::max();
  while (running > 0) {
    std::vector<pollfd> fds;
    std::vector<RankOutput*> owners;
    for (Child& c : children)
      for (int fd : {c.output->out_fd(), c.output->err_fd()})
        if (fd >= 0) {
          fds.push_back({fd, POLLIN, 0});
          owners.push_back(c.output.get());
        }
    int rc = ::poll(fds.data(), fds.size(), 100);
    for (size_t i = 0; rc > 0 && i < fds.size(); ++i)
      if (fds[i].revents) owners[i]->read(fds[i].fd);

    if (const int sig = g_signal) {
      g_signal = 0;
      interrupted = true;
      for (Child& c : children)
        if (c.running) ::kill(c.pid, sig);
    }
    for (Child& c : children) {
      int status = 0;
      if (!c.running || ::waitpid(c.pid, &status, WNOHANG) != c.pid) continue;
      c.running = false;
      --running;
      c.output->drain();
      c.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      if (c.code == 0 || (interrupted && c.code == 130)) continue;
      if (c.killed) continue;
      if (first_failure < 0) {
        first_failure = c.rank;
        result = c.code;
        std::string msg = "error: rank " + std::to_string(c.rank) + " " + describe_exit(status);
        if (running > 0) {
          msg += "; stopping the other ranks";
          kill_at = Clock::now() + kStopGrace;
        }
        write_all(STDERR_FILENO, msg + "\n");
      }
      c.output->print_tail();
    }
    if (Clock::now() >= kill_at) {
      for (Child& c : children)
        if (c.running && !c.killed) {
          write_all(STDERR_FILENO, "error: rank " + std::to_string(c.rank) + " did not stop within " +
                                       std::to_string(kStopGrace.count()) + " s; killing it\n");
          ::kill(c.pid, SIGKILL);
          c.killed = true;
        }
    }
  }
  if (first_failure >= 0) return result;
  for (const Child& c : children)
    if (c.code == 130) return 130;
  return 0;
}

}  // namespace nmoe
