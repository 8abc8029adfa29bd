// Warmup-stable-decay learning-rate schedule (the reference's update_lr).
#pragma once

#include <cstdint>

#include "config/config.h"

namespace nmoe {

struct WsdSchedule {
  int64_t warmup_steps = 0;
  double hold_tokens = 0, decay_tokens = 0;

  static WsdSchedule from_config(const Config& c) {
    return WsdSchedule{c.warmup_steps, c.hold_tokens, c.decay_tokens};
  }
  // Scale in [0, 1] for 0-based step with tokens_seen tokens consumed before it:
  // linear warmup (step+1)/warmup, then 1 until hold_tokens, then a cosine to 0
  // over decay_tokens.
  double scale(int64_t step, double tokens_seen) const;
  // floor + (peak - floor) * scale
  static double lr(double peak, double floor, double scale) { return floor + (peak - floor) * scale; }
};

}  // namespace nmoe
