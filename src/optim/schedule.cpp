#include "optim/schedule.h"

#include <cmath>

namespace nmoe {

double WsdSchedule::scale(int64_t step, double tokens_seen) const {
  if (step < warmup_steps) return static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  if (tokens_seen < hold_tokens) return 1.0;
  double t = tokens_seen - hold_tokens;
  if (t < decay_tokens) return 0.5 * (1.0 + std::cos(M_PI * t / decay_tokens));
  return 0.0;
}

}  // namespace nmoe
