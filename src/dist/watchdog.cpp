#include "dist/watchdog.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "dist/abort.h"

namespace nmoe {

namespace {

// Messages: one type byte, a 4-byte length, the payload.
constexpr char kBye = 'B';
constexpr char kFailure = 'F';
constexpr size_t kHeader = 5;
constexpr int kPollMs = 100;

}  // namespace

Watchdog::Watchdog(std::vector<Link> links) {
  for (Link& l : links) links_.push_back(State{std::move(l), {}, false});
}

void Watchdog::start() {
  if (thread_.joinable() || shut_) return;
  thread_ = std::thread([this] { loop(); });
}

void Watchdog::loop() {
  while (!stop_.load()) {
    std::vector<pollfd> fds;
    std::vector<State*> owners;
    for (State& s : links_) {
      if (!s.link.socket.valid()) continue;
      fds.push_back({s.link.socket.fd(), POLLIN, 0});
      owners.push_back(&s);
    }
    if (!fds.empty()) {
      int rc = ::poll(fds.data(), fds.size(), kPollMs);
      for (size_t i = 0; rc > 0 && i < fds.size(); ++i)
        if (fds[i].revents) read_from(*owners[i]);
    } else {
      ::poll(nullptr, 0, kPollMs);
    }
    if (dist_failed()) pass_on_failure();
  }
}

void Watchdog::read_from(State& s) {
  char buf[4096];
  ssize_t n = ::recv(s.link.socket.fd(), buf, sizeof buf, MSG_DONTWAIT);
  if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) return;
  if (n <= 0) {
    if (!s.said_bye) set_dist_failure("rank " + std::to_string(s.link.rank) + " exited unexpectedly");
    s.link.socket.close();
    return;
  }
  s.inbox.append(buf, static_cast<size_t>(n));
  while (s.inbox.size() >= kHeader) {
    uint32_t len = 0;
    std::memcpy(&len, s.inbox.data() + 1, 4);
    if (s.inbox.size() < kHeader + len) break;
    if (s.inbox[0] == kBye) s.said_bye = true;
    if (s.inbox[0] == kFailure) set_dist_failure(s.inbox.substr(kHeader, len));
    s.inbox.erase(0, kHeader + len);
  }
}

void Watchdog::send(State& s, char type, const std::string& payload) {
  if (!s.link.socket.valid()) return;
  std::string msg(kHeader, '\0');
  msg[0] = type;
  uint32_t len = static_cast<uint32_t>(payload.size());
  std::memcpy(msg.data() + 1, &len, 4);
  msg += payload;
  // Best effort: a peer that is gone needs no news.
  tcp::send_all(s.link.socket.fd(), msg.data(), msg.size(), tcp::deadline_in(1.0));
}

void Watchdog::pass_on_failure() {
  if (reported_) return;
  reported_ = true;
  const std::string msg = dist_failure_message();
  for (State& s : links_) send(s, kFailure, msg);
}

void Watchdog::shutdown(bool clean) {
  if (shut_) return;
  shut_ = true;
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  if (dist_failed()) {
    pass_on_failure();
  } else if (clean) {
    for (State& s : links_) send(s, kBye, "");
  }
  for (State& s : links_) s.link.socket.close();
}

}  // namespace nmoe
