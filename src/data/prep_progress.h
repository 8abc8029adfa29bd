// Progress line of `n data prep`: documents and tokens, their rates, and an ETA.
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>

namespace nmoe {

class PrepProgress {
 public:
  // budget_tokens > 0: the fraction done is tokens / budget when that is larger.
  PrepProgress(std::ostream* os, int64_t budget_tokens);
  // Prints at most twice a second (every 10 s when the stream is not a terminal).
  void update(int64_t docs, int64_t tokens, double input_fraction);
  void finish(int64_t docs, int64_t tokens);

 private:
  void print(int64_t docs, int64_t tokens, double fraction, bool final);
  std::ostream* os_;
  int64_t budget_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace nmoe
