// Output of one launched rank: its stdout and stderr arrive through pipes and
// leave as whole lines on the launcher's stdout and stderr. Rank 0's lines are
// printed unchanged; another rank's are printed with a "[rank R] " prefix when
// every rank is shown, otherwise only its last lines are kept, for the report
// when it fails.
#pragma once

#include <deque>
#include <string>

namespace nmoe {

class RankOutput {
 public:
  static constexpr size_t kTailLines = 40;

  // Takes ownership of the read ends of the rank's stdout and stderr pipes.
  RankOutput(int rank, bool show, int out_fd, int err_fd);
  ~RankOutput();
  RankOutput(const RankOutput&) = delete;
  RankOutput& operator=(const RankOutput&) = delete;

  int out_fd() const { return fds_[0]; }  // -1 once closed
  int err_fd() const { return fds_[1]; }
  // Reads what is available on fd (one of the two above); closes it at EOF.
  void read(int fd);
  // Reads what is left without waiting and closes both pipes (the rank has exited).
  void drain();
  // Writes the kept lines to stderr, prefixed; nothing when they were shown.
  void print_tail() const;

 private:
  void emit(int stream, const std::string& line);
  void close_stream(int stream);

  int rank_;
  bool show_;
  int fds_[2];
  std::string partial_[2];
  std::deque<std::string> tail_;
};

// Writes all of s to fd, ignoring errors (a closed terminal must not stop the run).
void write_all(int fd, const std::string& s);

}  // namespace nmoe
