// Entry point of nmoe_gpu_tests: without a visible CUDA device the whole
// binary reports itself skipped (exit code 77, which CTest shows as "Skipped")
// and says where the GPU tests run instead.
#include <gtest/gtest.h>

#include <cstdio>

#include "backend/cuda/cuda_backend.h"

int main(int argc, char** argv) {
  if (!nmoe::cuda_device_available()) {
    std::printf("SKIPPED: no CUDA device visible; the GPU tests run on a GPU machine through scripts/gpu-check.sh\n");
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
