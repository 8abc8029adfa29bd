// Helpers of the GPU op tests: the CPU reference and CUDA backends, device
// tensors owned by a test, NaN poisoning and error measures. Every test skips
// when no CUDA device is present.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "cpu_test_util.h"

namespace nmoe::gputest {

using cputest::filled;
using cputest::HostTensor;
using cputest::indices;
using cputest::uniform;

#define NMOE_SKIP_WITHOUT_CUDA()                                                \
  do {                                                                          \
    if (!::nmoe::cuda_device_available()) GTEST_SKIP() << "no CUDA device";     \
  } while (0)

// One backend of each kind per process, never destroyed (the CUDA runtime may
// already be shut down when static destructors run).
inline Backend& cpu() {
  static Backend* b = make_cpu_backend(0).release();
  return *b;
}

inline Backend& gpu() {
  static Backend* b = make_cuda_backend(0).release();
  return *b;
}

// A tensor in CUDA memory owned by the test.
class DevTensor {
 public:
  DevTensor(DType dtype, Shape shape) {
    t_ = Tensor(gpu().alloc(std::max<size_t>(1, Tensor(nullptr, dtype, shape).nbytes())), dtype,
                shape);
  }
  explicit DevTensor(const HostTensor& h) : DevTensor(h.dtype(), h.t().shape) { upload(h); }
  ~DevTensor() { gpu().free(t_.data); }
  DevTensor(const DevTensor&) = delete;
  DevTensor& operator=(const DevTensor&) = delete;

  const Tensor& t() const { return t_; }
  operator const Tensor&() const { return t_; }

  void upload(const HostTensor& h) {
    EXPECT_EQ(h.t().nbytes(), t_.nbytes());
    gpu().copy_from_host(t_, h.t().data);
  }
  HostTensor download() const {
    HostTensor h(t_.dtype, t_.shape);
    gpu().copy_to_host(h.t().data, t_);
    return h;
  }
  // Write outputs start as NaN (floats) or -1 (indices), so unwritten elements fail.
  void poison() { gpu().fill(t_, t_.dtype == DType::I32 ? -1.0 : std::nan("")); }

 private:
  Tensor t_;
};

// A device tensor `shift` bytes past the start of its own allocation (which
// has 16 bytes to spare). A shift that is not a multiple of 16 makes the
// kernels with 16-byte vector paths take their scalar paths.
class ShiftedTensor {
 public:
  ShiftedTensor(DType dtype, Shape shape, size_t shift)
      : bytes_(Tensor(nullptr, dtype, shape).nbytes() + 16),
        base_(gpu().alloc(bytes_)),
        t_(static_cast<char*>(base_) + shift, dtype, shape) {}
  ~ShiftedTensor() { gpu().free(base_); }
  ShiftedTensor(const ShiftedTensor&) = delete;
  ShiftedTensor& operator=(const ShiftedTensor&) = delete;

  const Tensor& t() const { return t_; }
  operator const Tensor&() const { return t_; }
  // The whole allocation as bytes.
  Tensor whole() const { return Tensor(base_, DType::U8, Shape{static_cast<int64_t>(bytes_)}); }

 private:
  size_t bytes_;
  void* base_;
  Tensor t_;
};

inline HostTensor poisoned(DType dtype, Shape shape) {
  HostTensor h(dtype, shape);
  h.fill(dtype == DType::I32 ? -1.0 : std::nan(""));
  return h;
}

// ||got - want|| / ||want|| (L2); NaN or Inf anywhere gives +inf.
inline double rel_l2(const HostTensor& got, const HostTensor& want) {
  EXPECT_EQ(got.numel(), want.numel());
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < std::min(got.numel(), want.numel()); ++i) {
    const double g = got.get(i), w = want.get(i);
    if (!std::isfinite(g) || !std::isfinite(w)) return std::numeric_limits<double>::infinity();
    diff += (g - w) * (g - w);
    norm += w * w;
  }
  if (norm == 0) return diff == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(diff / norm);
}

constexpr double kTol = 1e-5;

inline ::testing::AssertionResult close_to(const HostTensor& got, const HostTensor& want,
                                           double tol) {
  const double rel = rel_l2(got, want);
  if (rel <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "relative L2 error " << rel << " > " << tol;
}

inline ::testing::AssertionResult same_bytes(const HostTensor& got, const HostTensor& want) {
  if (got.bytes_equal(want)) return ::testing::AssertionSuccess();
  const size_t es = dtype_size(want.dtype()), n = std::min(got.t().nbytes(), want.t().nbytes());
  size_t first = 0;
  const auto* a = static_cast<const unsigned char*>(got.t().data);
  const auto* b = static_cast<const unsigned char*>(want.t().data);
  while (first < n && a[first] == b[first]) ++first;
  return ::testing::AssertionFailure() << "bytes differ (" << got.t().nbytes() << " vs "
                                       << want.t().nbytes() << " bytes); first differing element "
                                       << first / es;
}

// Both stream extra context with <<.
#define NMOE_EXPECT_CLOSE(got, want, tol) \
  EXPECT_TRUE(::nmoe::gputest::close_to((got), (want), (tol))) << #got << " vs " << #want << " "
#define NMOE_EXPECT_SAME(got, want) \
  EXPECT_TRUE(::nmoe::gputest::same_bytes((got), (want))) << #got << " vs " << #want << " "

inline HostTensor random_ids(Shape shape, int32_t lo, int32_t hi, std::mt19937_64& rng) {
  HostTensor h(DType::I32, shape);
  std::uniform_int_distribution<int32_t> d(lo, hi);
  for (int64_t i = 0; i < h.numel(); ++i) h.t().ptr<int32_t>()[i] = d(rng);
  return h;
}

inline HostTensor scalar(double v) { return filled(DType::F64, Shape{1}, v); }

// Mean milliseconds per call of op over iters calls, after one warm-up call
// (which also builds cached plans), with the device synchronized around them.
inline double mean_ms(const std::function<void()>& op, int iters) {
  op();
  gpu().synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) op();
  gpu().synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters;
}

// Sets an environment variable (the backends' NMOE_* switches) for a scope and
// restores its previous value, or its absence, after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_) setenv(name_.c_str(), old_->c_str(), 1);
    else unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

}  // namespace nmoe::gputest
