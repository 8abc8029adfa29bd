#include "data/prep_progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>

#include "train/progress.h"

namespace nmoe {

PrepProgress::PrepProgress(std::ostream* os, int64_t budget_tokens)
    : os_(os), budget_(budget_tokens), tty_(isatty(STDERR_FILENO) && isatty(STDOUT_FILENO)),
      start_(std::chrono::steady_clock::now()), last_(start_) {}

void PrepProgress::update(int64_t docs, int64_t tokens, double input_fraction) {
  if (!os_) return;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_).count();
  if (since < (tty_ ? 0.5 : 10.0)) return;
  last_ = now;
  double f = input_fraction;
  if (budget_ > 0) f = std::max(f, static_cast<double>(tokens) / static_cast<double>(budget_));
  print(docs, tokens, f, false);
}

void PrepProgress::finish(int64_t docs, int64_t tokens) {
  if (os_) print(docs, tokens, 1.0, true);
}

void PrepProgress::print(int64_t docs, int64_t tokens, double fraction, bool final) {
  double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double eta = fraction > 0 && fraction < 1 ? el * (1 - fraction) / fraction : NAN;
  char bar[24];
  int filled = static_cast<int>(std::clamp(fraction, 0.0, 1.0) * 20);
  for (int i = 0; i < 20; ++i) bar[i] = i < filled ? '#' : '.';
  bar[20] = 0;
  char line[256];
  std::snprintf(line, sizeof line, "prep [%s] %5.1f%% | %s docs (%s/s) | %s tokens (%s/s) | %s elapsed | ETA %s", bar,
                100 * std::clamp(fraction, 0.0, 1.0), format_count(docs).c_str(),
                format_count(el > 0 ? docs / el : 0).c_str(), format_count(tokens).c_str(),
                format_count(el > 0 ? tokens / el : 0).c_str(), format_duration(el).c_str(),
                final ? "0:00:00" : format_duration(eta).c_str());
  if (tty_) *os_ << "\r" << line << (final ? "\n" : "") << std::flush;
  else *os_ << line << "\n" << std::flush;
}

}  // namespace nmoe
