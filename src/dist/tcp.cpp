#include "dist/tcp.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "core/error.h"

namespace nmoe::tcp {

namespace {

constexpr int kSliceMs = 100;  // how often waits look at the deadline and the stop flag

sockaddr_in resolve(const std::string& addr, int port) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(addr.c_str(), nullptr, &hints, &res);
  NMOE_CHECK(rc == 0 && res, "cannot resolve address '", addr, "': ", ::gai_strerror(rc),
             " (set MASTER_ADDR to an IPv4 address or host name of rank 0)");
  sockaddr_in sa{};
  std::memcpy(&sa, res->ai_addr, sizeof sa);
  ::freeaddrinfo(res);
  sa.sin_port = htons(static_cast<uint16_t>(port));
  return sa;
}

int ms_until(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, kSliceMs));
}

// Waits until fd has `events`, the deadline passes or stop() says so. What
// has already arrived is taken even after stop(): a collective whose result
// came in before another rank failed completes.
Io wait_for(int fd, short events, Clock::time_point deadline, bool (*stop)()) {
  for (int wait_ms = 0;; wait_ms = ms_until(deadline)) {
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, wait_ms);
    if (rc < 0 && errno != EINTR) return Io::error;
    if (rc > 0) return Io::ok;
    if (stop && stop()) return Io::stopped;
    if (Clock::now() >= deadline) return Io::timeout;
  }
}

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

}  // namespace

Socket& Socket::operator=(Socket&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

void Socket::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Clock::time_point deadline_in(double seconds) {
  seconds = std::clamp(seconds, 0.0, 1e9);
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

Socket listen_on(const std::string& addr, int port, int backlog) {
  sockaddr_in sa = resolve(addr, port);
  Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  NMOE_CHECK(s.valid(), "cannot create a socket: ", std::strerror(errno));
  int one = 1;
  ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(s.fd(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    int err = errno;
    fail("cannot listen on ", addr, ":", port, ": ", std::strerror(err),
         err == EADDRINUSE ? " (another process uses this port: choose another MASTER_PORT)" : "");
  }
  NMOE_CHECK(::listen(s.fd(), backlog) == 0, "cannot listen on ", addr, ":", port, ": ", std::strerror(errno));
  return s;
}

int local_port(const Socket& s) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  NMOE_CHECK(::getsockname(s.fd(), reinterpret_cast<sockaddr*>(&sa), &len) == 0,
             "getsockname failed: ", std::strerror(errno));
  return ntohs(sa.sin_port);
}

int free_port() { return local_port(listen_on("127.0.0.1", 0, 1)); }

Socket accept_until(const Socket& listener, Clock::time_point deadline) {
  for (;;) {
    Io w = wait_for(listener.fd(), POLLIN, deadline, nullptr);
    if (w != Io::ok) return Socket();
    int fd = ::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      set_nodelay(fd);
      return Socket(fd);
    }
    if (errno != EINTR && errno != ECONNABORTED && errno != EAGAIN)
      fail("accept failed: ", std::strerror(errno));
  }
}

Socket connect_until(const std::string& addr, int port, Clock::time_point deadline,
                     const std::function<bool()>& give_up) {
  sockaddr_in sa = resolve(addr, port);
  while (Clock::now() < deadline && !(give_up && give_up())) {
    Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    NMOE_CHECK(s.valid(), "cannot create a socket: ", std::strerror(errno));
    int rc = ::connect(s.fd(), reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    if (rc != 0 && errno == EINPROGRESS && wait_for(s.fd(), POLLOUT, deadline, nullptr) == Io::ok) {
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &err, &len);
      rc = err == 0 ? 0 : -1;
    }
    if (rc == 0) {
      ::fcntl(s.fd(), F_SETFL, ::fcntl(s.fd(), F_GETFL) & ~O_NONBLOCK);
      set_nodelay(s.fd());
      return s;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return Socket();
}

bool peer_closed(const Socket& s) {
  pollfd p{s.fd(), POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

Io send_all(int fd, const void* data, size_t n, Clock::time_point deadline, bool (*stop)()) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    Io w = wait_for(fd, POLLOUT, deadline, stop);
    if (w != Io::ok) return w;
    ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return errno == EPIPE || errno == ECONNRESET ? Io::closed : Io::error;
    }
    p += k;
    n -= static_cast<size_t>(k);
  }
  return Io::ok;
}

Io recv_all(int fd, void* data, size_t n, Clock::time_point deadline, bool (*stop)()) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    Io w = wait_for(fd, POLLIN, deadline, stop);
    if (w != Io::ok) return w;
    ssize_t k = ::recv(fd, p, n, MSG_DONTWAIT);
    if (k == 0) return Io::closed;
    if (k < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return errno == ECONNRESET ? Io::closed : Io::error;
    }
    p += k;
    n -= static_cast<size_t>(k);
  }
  return Io::ok;
}

}  // namespace nmoe::tcp
