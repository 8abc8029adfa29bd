// Side work on the CUDA backend (ops/backend.h): ops issued between
// begin_side_work() and end_side_work() go to a second, lower-priority stream
// that starts after everything issued before, and join_side_work() orders
// every later op after them. Ops that need scratch memory or the cuBLAS
// handle are refused there.
#include <cstdlib>
#include <vector>

#include "gpu_test_util.h"

namespace nmoe::gputest {
namespace {

TEST(CudaSideWork, StartsAfterEarlierOpsAndLaterOpsWaitAfterTheJoin) {
  NMOE_SKIP_WITHOUT_CUDA();
  Backend& be = gpu();
  ASSERT_TRUE(be.runs_side_work_concurrently());
  // Large enough that a missing fork or join would likely show as stale
  // values (likely, not certainly: it depends on how the streams interleave).
  const int64_t n = int64_t(1) << 26;
  const DevTensor a(DType::F32, Shape{n}), b(DType::F32, Shape{n}), c(DType::F32, Shape{n});
  for (int round = 1; round <= 3; ++round) {
    be.fill(b, -1.0);
    be.fill(a, round);   // main stream
    be.begin_side_work();
    be.copy(b, a);       // side: must see the fill before it
    be.end_side_work();
    be.join_side_work();
    be.copy(c, b);       // main: must see the side copy
    std::vector<float> host(n);
    be.copy_to_host(host.data(), c);
    int64_t wrong = 0;
    for (float x : host) wrong += x != static_cast<float>(round);
    EXPECT_EQ(wrong, 0) << "round " << round;
  }
}

TEST(CudaSideWork, RefusesOpsThatNeedScratchOrCublas) {
  NMOE_SKIP_WITHOUT_CUDA();
  Backend& be = gpu();
  const DevTensor x(DType::F32, Shape{64, 64}), y(DType::F32, Shape{64, 64}), s(DType::F64, Shape{1});
  be.fill(x, 1.0);
  be.fill(s, 0.0);
  be.begin_side_work();
  EXPECT_THROW(be.sum_squares(x, s), Error);
  EXPECT_THROW(be.matmul(x, false, x, false, y, 1.0, 0.0), Error);
  EXPECT_THROW(be.begin_side_work(), Error);
  be.end_side_work();
  EXPECT_THROW(be.end_side_work(), Error);
  be.join_side_work();
  be.sum_squares(x, s);  // back on the main stream: allowed
  double got = 0;
  be.copy_to_host(&got, s);
  EXPECT_EQ(got, 4096.0);
}

}  // namespace
}  // namespace nmoe::gputest
