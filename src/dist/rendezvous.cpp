#include "dist/rendezvous.h"

#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <sstream>

#include "core/error.h"
#include "dist/abort.h"

namespace nmoe {

namespace {

using tcp::Clock;
using tcp::Io;

constexpr uint32_t kMagic = 0x454f4d4e;  // "NMOE"
constexpr uint32_t kData = 1, kWatch = 2;
constexpr uint32_t kAccepted = 0, kRejected = 1, kReady = 2;

struct Hello {
  uint32_t magic, kind;
  int32_t rank, world;
  uint32_t job_len;
};
struct Reply {
  uint32_t magic, status, msg_len;
};
struct Frame {
  uint32_t op, reserved;
  uint64_t seq, len;
};

template <typename T>
void put(std::string& out, const T& x) {
  out.append(reinterpret_cast<const char*>(&x), sizeof x);
}

std::string encode(const std::vector<std::string>& parts) {
  std::string out;
  put<uint64_t>(out, parts.size());
  for (const std::string& p : parts) {
    put<uint64_t>(out, p.size());
    out += p;
  }
  return out;
}

std::vector<std::string> decode(const std::string& in) {
  size_t pos = 0;
  auto get = [&]() {
    uint64_t x = 0;
    NMOE_ASSERT(pos + 8 <= in.size());
    std::memcpy(&x, in.data() + pos, 8);
    pos += 8;
    return x;
  };
  std::vector<std::string> parts(get());
  for (std::string& p : parts) {
    uint64_t n = get();
    NMOE_ASSERT(pos + n <= in.size());
    p = in.substr(pos, n);
    pos += n;
  }
  return parts;
}

std::string encode_i64(int64_t x) {
  std::string s;
  put(s, x);
  return s;
}
int64_t decode_i64(const std::string& s) {
  int64_t x = 0;
  NMOE_ASSERT(s.size() == 8);
  std::memcpy(&x, s.data(), 8);
  return x;
}

double timeout_from_environment() {
  const char* v = std::getenv("NMOE_DIST_TIMEOUT_S");
  if (!v) return 600;
  char* end = nullptr;
  double t = std::strtod(v, &end);
  NMOE_CHECK(*v && *end == '\0' && std::isfinite(t) && t > 0, "environment variable NMOE_DIST_TIMEOUT_S='", v,
             "' is not a positive number of seconds");
  return t;
}

// Sends a frame header and payload; the payload may be empty.
Io send_frame(int fd, uint32_t op, uint64_t seq, const std::string& payload, Clock::time_point deadline,
              bool (*stop)() = dist_failed) {
  Frame f{op, 0, seq, payload.size()};
  Io io = tcp::send_all(fd, &f, sizeof f, deadline, stop);
  if (io == Io::ok && !payload.empty()) io = tcp::send_all(fd, payload.data(), payload.size(), deadline, stop);
  return io;
}

Io recv_frame(int fd, Frame& f, std::string& payload, Clock::time_point deadline) {
  Io io = tcp::recv_all(fd, &f, sizeof f, deadline, dist_failed);
  if (io != Io::ok) return io;
  payload.assign(f.len, '\0');
  return f.len ? tcp::recv_all(fd, payload.data(), f.len, deadline, dist_failed) : Io::ok;
}

std::string seconds(double s) {
  std::ostringstream os;
  os << s << " s";
  return os.str();
}

}  // namespace

Rendezvous::Rendezvous(const DistEnv& env, double connect_timeout_s)
    : env_(env), timeout_s_(timeout_from_environment()) {
  if (env_.world == 1) return;
  if (env_.rank == 0) accept_peers(connect_timeout_s);
  else connect_to_rank0(connect_timeout_s);
}

Rendezvous::~Rendezvous() {
  if (watchdog_) watchdog_->shutdown(std::uncaught_exceptions() == 0 && broken_.empty());
}

void Rendezvous::accept_peers(double timeout_s) {
  const std::string where = env_.master_addr + ":" + std::to_string(env_.master_port);
  tcp::Socket listener = tcp::listen_on(env_.master_addr, env_.master_port, 2 * env_.world);
  const auto deadline = tcp::deadline_in(timeout_s);
  data_.resize(env_.world);
  std::vector<Watchdog::Link> watch(env_.world - 1);
  std::vector<bool> has_watch(env_.world, false);
  std::string rejected;
  for (int connected = 0; connected < 2 * (env_.world - 1);) {
    tcp::Socket s = tcp::accept_until(listener, deadline);
    if (!s.valid()) {
      std::string missing;
      for (int r = 1; r < env_.world; ++r)
        if (!data_[r].valid() || !has_watch[r]) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      fail("rank 0: waited ", seconds(timeout_s), " on ", where, " for rank(s) ", missing,
           " to connect; did they start, with the same MASTER_ADDR and MASTER_PORT?", rejected);
    }
    Hello h{};
    if (tcp::recv_all(s.fd(), &h, sizeof h, std::min(deadline, tcp::deadline_in(10))) != Io::ok ||
        h.magic != kMagic || (h.kind != kData && h.kind != kWatch) || h.job_len > 64)
      continue;  // not one of ours
    std::string job(h.job_len, '\0');
    if (tcp::recv_all(s.fd(), job.data(), job.size(), tcp::deadline_in(10)) != Io::ok) continue;
    auto reject = [&](const std::string& why) {
      std::string reply;
      put(reply, Reply{kMagic, kRejected, static_cast<uint32_t>(why.size())});
      reply += why;
      tcp::send_all(s.fd(), reply.data(), reply.size(), tcp::deadline_in(1));
    };
    if (job != env_.job_id) {
      // Another job's process found our port: refuse it and keep waiting for ours.
      reject("rank 0 at " + where + " belongs to another job (job id '" + env_.job_id + "', this process has '" +
             job + "'); give each job its own MASTER_PORT");
      rejected = " (refused a connection from another job, job id '" + job + "')";
      continue;
    }
    std::string bad;
    if (h.world != env_.world)
      bad = "rank " + std::to_string(h.rank) + " has WORLD_SIZE=" + std::to_string(h.world) + " but rank 0 has " +
            std::to_string(env_.world);
    else if (h.rank < 1 || h.rank >= env_.world)
      bad = "a process connected as rank " + std::to_string(h.rank) + ", outside 1.." + std::to_string(env_.world - 1);
    else if (h.kind == kData ? data_[h.rank].valid() : has_watch[h.rank])
      bad = "two processes claim rank " + std::to_string(h.rank) + "; every process needs its own RANK";
    if (!bad.empty()) {
      reject("rank 0: " + bad);
      fail("rank 0: ", bad);
    }
    std::string ack;
    put(ack, Reply{kMagic, kAccepted, 0});
    if (tcp::send_all(s.fd(), ack.data(), ack.size(), tcp::deadline_in(10)) != Io::ok) continue;
    if (h.kind == kData) {
      data_[h.rank] = std::move(s);
    } else {
      watch[h.rank - 1] = {h.rank, std::move(s)};
      has_watch[h.rank] = true;
    }
    ++connected;
  }
  std::string ready;
  put(ready, Reply{kMagic, kReady, 0});
  for (int r = 1; r < env_.world; ++r)
    NMOE_CHECK(tcp::send_all(data_[r].fd(), ready.data(), ready.size(), tcp::deadline_in(10)) == Io::ok,
               "rank 0: rank ", r, " exited or lost connection during the rendezvous");
  watchdog_ = std::make_unique<Watchdog>(std::move(watch));
}

void Rendezvous::connect_to_rank0(double timeout_s) {
  const std::string where = env_.master_addr + ":" + std::to_string(env_.master_port);
  const std::string me = "rank " + std::to_string(env_.rank);
  const auto deadline = tcp::deadline_in(timeout_s);
  // Rank 0 answers each hello at once (accepted or refused, with the reason),
  // and on the data connection once more when every rank has connected.
  auto await_reply = [&](const tcp::Socket& s, uint32_t expected, tcp::Clock::time_point until) {
    Reply r{};
    Io io = tcp::recv_all(s.fd(), &r, sizeof r, until);
    NMOE_CHECK(io != Io::timeout, me, ": rank 0 at ", where, " accepted the connection but did not complete the ",
               "rendezvous within ", seconds(timeout_s), "; is another program listening on that port?");
    NMOE_CHECK(io == Io::ok && r.magic == kMagic, me, ": rank 0 at ", where,
               " exited or lost connection during the rendezvous (its output says why)");
    if (r.status != expected) {
      std::string why(std::min<uint32_t>(r.msg_len, 4096), '\0');
      tcp::recv_all(s.fd(), why.data(), why.size(), tcp::deadline_in(5));
      fail(me, ": refused by the rendezvous: ", why);
    }
  };
  auto connect = [&](uint32_t kind) {
    // Once the data connection is up, rank 0 giving up closes it: stop retrying then.
    auto rank0_gone = [&] { return !data_.empty() && tcp::peer_closed(data_[0]); };
    tcp::Socket s = tcp::connect_until(env_.master_addr, env_.master_port, deadline, rank0_gone);
    NMOE_CHECK(!rank0_gone(), me, ": rank 0 at ", where, " exited or lost connection during the rendezvous (its ",
               "output says why)");
    NMOE_CHECK(s.valid(), me, ": could not connect to rank 0 at ", where, " within ", seconds(timeout_s),
               "; is rank 0 running, with the same MASTER_ADDR and MASTER_PORT?");
    std::string hello;
    put(hello, Hello{kMagic, kind, env_.rank, env_.world, static_cast<uint32_t>(env_.job_id.size())});
    hello += env_.job_id;
    NMOE_CHECK(tcp::send_all(s.fd(), hello.data(), hello.size(), deadline) == Io::ok, me,
               ": rank 0 at ", where, " exited or lost connection during the rendezvous");
    await_reply(s, kAccepted, std::max(deadline, tcp::deadline_in(10)));
    return s;
  };
  data_.push_back(connect(kData));
  tcp::Socket watch = connect(kWatch);
  // Rank 0 may wait for the last rank a little longer than we do: let it report first.
  await_reply(data_[0], kReady, tcp::deadline_in(timeout_s + 15));
  std::vector<Watchdog::Link> links;
  links.push_back({0, std::move(watch)});
  watchdog_ = std::make_unique<Watchdog>(std::move(links));
}

void Rendezvous::start_watchdog() {
  if (watchdog_) watchdog_->start();
}

const char* Rendezvous::op_name(Op op) {
  switch (op) {
    case Op::all_gather: return "all_gather";
    case Op::broadcast: return "broadcast";
    case Op::barrier: return "barrier";
    case Op::max: return "all_reduce_max";
    case Op::sum: return "all_reduce_sum";
    case Op::error: return "error";
  }
  return "?";
}

void Rendezvous::broken(const std::string& msg, bool tell_peers) {
  broken_ = msg;
  set_dist_failure(msg);
  for (tcp::Socket& s : data_) {
    if (!s.valid()) continue;
    // Peers waiting for rank 0's answer get the reason instead of a bare disconnect.
    if (tell_peers) send_frame(s.fd(), static_cast<uint32_t>(Op::error), seq_, msg, tcp::deadline_in(1), nullptr);
    ::shutdown(s.fd(), SHUT_RDWR);
  }
  throw Error(msg);
}

void Rendezvous::io_failure(Io io, int other, Op op, bool gathering) {
  const std::string me = "rank " + std::to_string(env_.rank) + ": ";
  const std::string peer = "rank " + std::to_string(other);
  switch (io) {
    case Io::timeout:
      broken(me + op_name(op) + " timed out after " + seconds(timeout_s_) + " waiting for " + peer +
                 "; did every rank reach the same collective? (NMOE_DIST_TIMEOUT_S sets the limit)",
             gathering);
    case Io::stopped:
      broken(me + op_name(op) + " stopped because a rank failed: " + dist_failure_message(), gathering);
    default: {
      std::string msg = me + peer + " exited or lost connection during " + op_name(op);
      if (dist_failed()) msg += " (" + dist_failure_message() + ")";
      broken(msg, gathering);
    }
  }
}

std::string Rendezvous::collective(Op op, const std::string& mine, Combine combine) {
  if (env_.world == 1) return combine({mine});
  NMOE_CHECK(broken_.empty(), "rank ", env_.rank, ": ", op_name(op), " called after the rendezvous failed: ",
             broken_);
  ++seq_;
  const auto deadline = tcp::deadline_in(timeout_s_);
  if (dist_failed()) io_failure(Io::stopped, 0, op, env_.rank == 0);
  return env_.rank == 0 ? gather_on_rank0(op, mine, combine, deadline) : exchange_with_rank0(op, mine, deadline);
}

std::string Rendezvous::gather_on_rank0(Op op, const std::string& mine, Combine combine,
                                        Clock::time_point deadline) {
  std::vector<std::string> parts(env_.world);
  parts[0] = mine;
  for (int r = 1; r < env_.world; ++r) {
    Frame f{};
    Io io = recv_frame(data_[r].fd(), f, parts[r], deadline);
    if (io != Io::ok) io_failure(io, r, op, true);
    if (f.op != static_cast<uint32_t>(op) || f.seq != seq_)
      broken("rank 0: rank " + std::to_string(r) + " called " + op_name(static_cast<Op>(f.op)) +
                 " (collective #" + std::to_string(f.seq) + ") while rank 0 called " + op_name(op) +
                 " (collective #" + std::to_string(seq_) + "); every rank must call the collectives in the same order",
             true);
  }
  std::string result = combine(parts);
  for (int r = 1; r < env_.world; ++r) {
    Io io = send_frame(data_[r].fd(), static_cast<uint32_t>(op), seq_, result, deadline);
    if (io != Io::ok) io_failure(io, r, op, false);
  }
  return result;
}

std::string Rendezvous::exchange_with_rank0(Op op, const std::string& mine, Clock::time_point deadline) {
  Io io = send_frame(data_[0].fd(), static_cast<uint32_t>(op), seq_, mine, deadline);
  if (io != Io::ok) io_failure(io, 0, op, false);
  Frame f{};
  std::string result;
  io = recv_frame(data_[0].fd(), f, result, deadline);
  if (io != Io::ok) io_failure(io, 0, op, false);
  if (f.op == static_cast<uint32_t>(Op::error)) broken(result, false);
  NMOE_ASSERT(f.op == static_cast<uint32_t>(op) && f.seq == seq_);
  return result;
}

std::vector<std::string> Rendezvous::all_gather(const std::string& mine) {
  return decode(collective(Op::all_gather, mine, encode));
}

std::string Rendezvous::broadcast(const std::string& value_on_rank0) {
  return collective(Op::broadcast, env_.rank == 0 ? value_on_rank0 : std::string(),
                    [](const std::vector<std::string>& parts) { return parts[0]; });
}

void Rendezvous::barrier() {
  collective(Op::barrier, "", [](const std::vector<std::string>&) { return std::string(); });
}

int64_t Rendezvous::all_reduce_max(int64_t x) {
  return decode_i64(collective(Op::max, encode_i64(x), [](const std::vector<std::string>& parts) {
    int64_t m = decode_i64(parts[0]);
    for (const std::string& p : parts) m = std::max(m, decode_i64(p));
    return encode_i64(m);
  }));
}

int64_t Rendezvous::all_reduce_sum(int64_t x) {
  return decode_i64(collective(Op::sum, encode_i64(x), [](const std::vector<std::string>& parts) {
    uint64_t s = 0;  // wraps instead of overflowing
    for (const std::string& p : parts) s += static_cast<uint64_t>(decode_i64(p));
    return encode_i64(static_cast<int64_t>(s));
  }));
}

}  // namespace nmoe
