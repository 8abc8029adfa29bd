#include "dist/launch_output.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace nmoe {

namespace {
constexpr size_t kMaxLine = 1 << 16;  // a longer line is passed on in pieces
}

void write_all(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    ssize_t k = ::write(fd, s.data() + done, s.size() - done);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return;
    done += static_cast<size_t>(k);
  }
}

RankOutput::RankOutput(int rank, bool show, int out_fd, int err_fd)
    : rank_(rank), show_(show || rank == 0), fds_{out_fd, err_fd} {
  for (int fd : fds_) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

RankOutput::~RankOutput() {
  for (int s = 0; s < 2; ++s)
    if (fds_[s] >= 0) ::close(fds_[s]);
}

void RankOutput::emit(int stream, const std::string& line) {
  const std::string prefix = rank_ == 0 ? "" : "[rank " + std::to_string(rank_) + "] ";
  if (show_) {
    write_all(stream == 0 ? STDOUT_FILENO : STDERR_FILENO, prefix + line);
    return;
  }
  tail_.push_back(prefix + line);
  if (tail_.size() > kTailLines) tail_.pop_front();
}

void RankOutput::read(int fd) {
  const int s = fd == fds_[0] ? 0 : 1;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return;  // nothing more for now
    if (n == 0) {
      close_stream(s);
      return;
    }
    std::string& p = partial_[s];
    p.append(buf, static_cast<size_t>(n));
    size_t start = 0;
    for (size_t nl; (nl = p.find('\n', start)) != std::string::npos; start = nl + 1)
      emit(s, p.substr(start, nl + 1 - start));
    p.erase(0, start);
    if (p.size() > kMaxLine) {
      emit(s, p + "\n");
      p.clear();
    }
  }
}

void RankOutput::close_stream(int s) {
  if (!partial_[s].empty()) emit(s, partial_[s] + "\n");
  partial_[s].clear();
  if (fds_[s] >= 0) ::close(fds_[s]);
  fds_[s] = -1;
}

void RankOutput::drain() {
  for (int s = 0; s < 2; ++s) {
    if (fds_[s] >= 0) read(fds_[s]);
    // A process the rank started may still hold the pipe open: stop reading anyway.
    if (fds_[s] >= 0) close_stream(s);
  }
}

void RankOutput::print_tail() const {
  if (show_) return;
  for (const std::string& line : tail_) write_all(STDERR_FILENO, line);
}

}  // namespace nmoe
