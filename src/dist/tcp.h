// Small POSIX TCP helpers for the rendezvous and the launcher: an owning
// socket, listen/accept/connect with deadlines, and whole-buffer send/receive
// that give up at a deadline or when asked to stop.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>

namespace nmoe::tcp {

using Clock = std::chrono::steady_clock;

class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Socket& operator=(Socket&& o) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket() { close(); }
  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void close();

 private:
  int fd_ = -1;
};

// Listens on addr:port (IPv4; port 0 = any free port) with SO_REUSEADDR; throws Error.
Socket listen_on(const std::string& addr, int port, int backlog);
int local_port(const Socket& s);
// A port that was free on 127.0.0.1 a moment ago.
int free_port();
// Accepts one connection; invalid Socket at the deadline.
Socket accept_until(const Socket& listener, Clock::time_point deadline);
// Connects, retrying while nobody listens yet; invalid Socket at the deadline
// or when give_up() says so. Throws Error when addr does not resolve.
Socket connect_until(const std::string& addr, int port, Clock::time_point deadline,
                     const std::function<bool()>& give_up = {});
// True when the other end has closed the connection (or it failed).
bool peer_closed(const Socket& s);

enum class Io { ok, closed, timeout, stopped, error };
// stop (may be null) is checked several times a second while waiting.
Io send_all(int fd, const void* data, size_t n, Clock::time_point deadline, bool (*stop)() = nullptr);
Io recv_all(int fd, void* data, size_t n, Clock::time_point deadline, bool (*stop)() = nullptr);

// Deadline `seconds` from now, saturating for huge values.
Clock::time_point deadline_in(double seconds);

}  // namespace nmoe::tcp
