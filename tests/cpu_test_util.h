// Helpers for the CPU backend tests: host-owned tensors, random fills,
// error measures and central finite differences.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/tensor.h"

namespace nmoe::cputest {

// A tensor that owns its (host) memory; copies get their own memory.
class HostTensor {
 public:
  HostTensor() = default;
  HostTensor(DType dtype, Shape shape)
      : storage_((static_cast<size_t>(shape.numel()) * dtype_size(dtype) + 7) / 8 + 1),
        t_(storage_.data(), dtype, shape) {}
  HostTensor(const HostTensor& o) : storage_(o.storage_), t_(storage_.data(), o.t_.dtype, o.t_.shape) {}
  HostTensor& operator=(const HostTensor& o) {
    storage_ = o.storage_;
    t_ = Tensor(storage_.data(), o.t_.dtype, o.t_.shape);
    return *this;
  }
  HostTensor(HostTensor&&) = default;
  HostTensor& operator=(HostTensor&&) = default;

  const Tensor& t() const { return t_; }
  operator const Tensor&() const { return t_; }
  int64_t numel() const { return t_.numel(); }
  DType dtype() const { return t_.dtype; }

  double get(int64_t i) const {
    switch (t_.dtype) {
      case DType::F32: return t_.ptr<float>()[i];
      case DType::F64: return t_.ptr<double>()[i];
      case DType::I32: return t_.ptr<int32_t>()[i];
      default: ADD_FAILURE() << "HostTensor::get: unsupported dtype"; return 0;
    }
  }
  void set(int64_t i, double v) {
    switch (t_.dtype) {
      case DType::F32: t_.ptr<float>()[i] = static_cast<float>(v); break;
      case DType::F64: t_.ptr<double>()[i] = v; break;
      case DType::I32: t_.ptr<int32_t>()[i] = static_cast<int32_t>(v); break;
      default: ADD_FAILURE() << "HostTensor::set: unsupported dtype";
    }
  }
  std::vector<double> values() const {
    std::vector<double> out(numel());
    for (int64_t i = 0; i < numel(); ++i) out[i] = get(i);
    return out;
  }
  void fill(double v) {
    for (int64_t i = 0; i < numel(); ++i) set(i, v);
  }
  void poison() { fill(std::numeric_limits<double>::quiet_NaN()); }
  bool bytes_equal(const HostTensor& o) const {
    return t_.nbytes() == o.t_.nbytes() && std::memcmp(t_.data, o.t_.data, t_.nbytes()) == 0;
  }

 private:
  std::vector<uint64_t> storage_;
  Tensor t_;
};

inline HostTensor uniform(DType dtype, Shape shape, std::mt19937_64& rng, double lo = -1,
                          double hi = 1) {
  HostTensor h(dtype, shape);
  std::uniform_real_distribution<double> dist(lo, hi);
  for (int64_t i = 0; i < h.numel(); ++i) h.set(i, dist(rng));
  return h;
}

inline HostTensor filled(DType dtype, Shape shape, double value) {
  HostTensor h(dtype, shape);
  h.fill(value);
  return h;
}

inline HostTensor indices(Shape shape, const std::vector<int32_t>& values) {
  HostTensor h(DType::I32, shape);
  EXPECT_EQ(static_cast<int64_t>(values.size()), h.numel());
  for (int64_t i = 0; i < h.numel(); ++i) h.t().ptr<int32_t>()[i] = values[i];
  return h;
}

inline HostTensor scalar_f64(double v = 0) { return filled(DType::F64, Shape{1}, v); }

// Normwise relative error max|a - e| / max|e| (NaN in a counts as infinite error).
inline double rel_err(const std::vector<double>& actual, const std::vector<double>& expected) {
  EXPECT_EQ(actual.size(), expected.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < std::min(actual.size(), expected.size()); ++i) {
    const double d = std::abs(actual[i] - expected[i]);
    diff = std::isnan(d) ? std::numeric_limits<double>::infinity() : std::max(diff, d);
    scale = std::max(scale, std::abs(expected[i]));
  }
  return diff / std::max(scale, 1e-300);
}

inline double rel_err(const HostTensor& actual, const std::vector<double>& expected) {
  return rel_err(actual.values(), expected);
}

// Tolerance of a forward op against a double reference, per dtype.
inline double fwd_tol(DType dtype) { return dtype == DType::F64 ? 1e-12 : 1e-5; }
constexpr double kGradTol = 1e-6;

// Sum of w * out: the scalar whose gradient a backward op computes given dout = w.
inline double weighted_sum(const HostTensor& out, const HostTensor& w) {
  double s = 0;
  for (int64_t i = 0; i < out.numel(); ++i) s += out.get(i) * w.get(i);
  return s;
}

// Central finite differences of loss() with respect to every element of x.
inline std::vector<double> fd_grad(HostTensor& x, const std::function<double()>& loss,
                                   double h = 1e-6) {
  std::vector<double> g(x.numel());
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double x0 = x.get(i);
    x.set(i, x0 + h);
    const double up = loss();
    x.set(i, x0 - h);
    const double down = loss();
    x.set(i, x0);
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

// Element-wise difference (after - before): the part an accumulating op added.
inline std::vector<double> added(const HostTensor& after, const HostTensor& before) {
  std::vector<double> d(after.numel());
  for (int64_t i = 0; i < after.numel(); ++i) d[i] = after.get(i) - before.get(i);
  return d;
}

const DType kFloatTypes[] = {DType::F64, DType::F32};

inline const char* dtype_label(DType t) { return dtype_name(t); }

}  // namespace nmoe::cputest
