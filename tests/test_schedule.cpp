// WSD learning-rate schedule.
#include <gtest/gtest.h>

#include <cmath>

#include "optim/schedule.h"

namespace nmoe {
namespace {

TEST(Schedule, WarmupHoldCosineDecay) {
  WsdSchedule s{4, 1000.0, 500.0};
  EXPECT_DOUBLE_EQ(s.scale(0, 0), 0.25);  // warmup starts at 1/warmup, not 0
  EXPECT_DOUBLE_EQ(s.scale(3, 300), 1.0);
  EXPECT_DOUBLE_EQ(s.scale(4, 999), 1.0);  // hold
  EXPECT_DOUBLE_EQ(s.scale(9, 1000), 1.0);  // decay starts at the top
  EXPECT_NEAR(s.scale(10, 1250), 0.5, 1e-15);
  EXPECT_NEAR(s.scale(11, 1500 - 1e-9), 0.0, 1e-12);
  EXPECT_DOUBLE_EQ(s.scale(12, 1500), 0.0);
  EXPECT_DOUBLE_EQ(s.scale(13, 1e9), 0.0);
  EXPECT_DOUBLE_EQ(WsdSchedule::lr(1e-3, 1e-4, 0.0), 1e-4);
  EXPECT_DOUBLE_EQ(WsdSchedule::lr(1e-3, 1e-4, 1.0), 1e-3);
}

TEST(Schedule, NoWarmupNoDecay) {
  WsdSchedule s{0, 1e14, 0.0};
  EXPECT_DOUBLE_EQ(s.scale(0, 0), 1.0);
  EXPECT_DOUBLE_EQ(s.scale(100000, 1e13), 1.0);
}

}  // namespace
}  // namespace nmoe
