// BF16 test tensors for the CUDA op tests: inputs made as fp32 on the host and
// rounded to bf16 (so the F32 CPU reference sees exactly the device's values),
// poisoned outputs, and a closeness check on the converted device result.
#pragma once

#include <cmath>
#include <cstring>
#include <memory>
#include <random>

#include "gpu_test_util.h"

namespace nmoe::gputest {

constexpr DType F = DType::F32;
constexpr DType BF = DType::BF16;
constexpr double kTolBf16 = 1e-2;  // BF16 output
constexpr double kTolMixed = 1e-3; // F32 output from BF16 inputs

inline float round_bf16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if (std::isnan(v)) return v;
  bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000u;
  float r;
  std::memcpy(&r, &bits, 4);
  return r;
}

// Rounds an F32 host tensor's values to bf16 (in place) and returns it.
inline HostTensor rounded(HostTensor h) {
  for (int64_t i = 0; i < h.numel(); ++i) h.t().ptr<float>()[i] = round_bf16(h.t().ptr<float>()[i]);
  return h;
}

// A test tensor: the host F32 reference values (bf16-exact when dt is BF16)
// and the device tensor in dtype dt.
struct Arg {
  HostTensor h;
  std::unique_ptr<DevTensor> d;
  operator const Tensor&() const { return d->t(); }
};

inline Arg make(HostTensor h, DType dt) {
  Arg a;
  if (dt == BF) h = rounded(std::move(h));
  a.h = h;
  a.d = std::make_unique<DevTensor>(dt, h.t().shape);
  if (dt == F) {
    a.d->upload(h);
  } else if (dt == BF) {
    DevTensor tmp(h);
    gpu().convert(*a.d, tmp);  // exact: the values are bf16 already
  } else {
    a.d->upload(h);
  }
  return a;
}

inline Arg rnd(DType dt, Shape s, std::mt19937_64& rng, double lo = -1, double hi = 1) {
  return make(uniform(F, s, rng, lo, hi), dt);
}
// A write output: poisoned on host and device.
inline Arg out(DType dt, Shape s) {
  Arg a;
  a.h = poisoned(F, s);
  a.d = std::make_unique<DevTensor>(dt, s);
  a.d->poison();
  return a;
}

inline HostTensor down(const DevTensor& d) {
  if (d.t().dtype != BF) return d.download();
  DevTensor f(F, d.t().shape);
  gpu().convert(f, d);
  return f.download();
}
inline HostTensor down(const Arg& a) { return down(*a.d); }

// BF16 device copy of an F32 host tensor whose values are bf16-exact.
inline std::unique_ptr<DevTensor> to_bf16(const HostTensor& h) {
  auto d = std::make_unique<DevTensor>(BF, h.t().shape);
  DevTensor tmp(h);
  gpu().convert(*d, tmp);
  return d;
}

#define EXPECT_ARG(arg, tol) NMOE_EXPECT_CLOSE(down(arg), (arg).h, (tol)) << #arg << " "

}  // namespace nmoe::gputest
