// CPU backend: RoPE and causal attention (forward vs full-matrix reference,
// backward vs finite differences).
#include <cmath>
#include <limits>
#include <vector>

#include "cpu_test_util.h"

namespace nmoe::cputest {
namespace {

struct AttnShape {
  int64_t B, T, H, Dh;
  int64_t N() const { return B * T; }
};

// cos/sin tables [t_max, Dh/2] of the usual RoPE angles pos * 10000^(-2d/Dh).
void rope_tables(DType dt, int64_t t_max, int64_t Dh, HostTensor& cos, HostTensor& sin) {
  cos = HostTensor(dt, {t_max, Dh / 2});
  sin = HostTensor(dt, {t_max, Dh / 2});
  for (int64_t p = 0; p < t_max; ++p)
    for (int64_t d = 0; d < Dh / 2; ++d) {
      const double angle = p * std::pow(10000.0, -2.0 * d / Dh);
      cos.set(p * (Dh / 2) + d, std::cos(angle));
      sin.set(p * (Dh / 2) + d, std::sin(angle));
    }
}

std::vector<double> rope_ref(const HostTensor& qkv, const HostTensor& cos, const HostTensor& sin,
                             const AttnShape& s) {
  std::vector<double> out = qkv.values();
  const int64_t half = s.Dh / 2;
  for (int64_t n = 0; n < s.N(); ++n)
    for (int64_t part = 0; part < 2; ++part)  // q and k; v stays
      for (int64_t h = 0; h < s.H; ++h) {
        const int64_t base = ((n * 3 + part) * s.H + h) * s.Dh, pos = n % s.T;
        for (int64_t d = 0; d < half; ++d) {
          const double x1 = qkv.get(base + d), x2 = qkv.get(base + d + half);
          const double c = cos.get(pos * half + d), sn = sin.get(pos * half + d);
          out[base + d] = x1 * c - x2 * sn;
          out[base + d + half] = x2 * c + x1 * sn;
        }
      }
  return out;
}

TEST(CpuRope, ForwardMatchesReferenceAndInverseRestores) {
  CpuBackend be(0);
  std::mt19937_64 rng(20);
  for (DType dt : kFloatTypes) {
    const AttnShape s{3, 5, 2, 8};
    HostTensor cos, sin;
    rope_tables(dt, 9, s.Dh, cos, sin);  // table longer than seq_len
    HostTensor qkv = uniform(dt, {s.N(), 3, s.H, s.Dh}, rng);
    const HostTensor original = qkv;
    const std::vector<double> want = rope_ref(qkv, cos, sin, s);
    be.rope(qkv, cos, sin, static_cast<int>(s.T), false);
    EXPECT_LT(rel_err(qkv, want), fwd_tol(dt));
    be.rope(qkv, cos, sin, static_cast<int>(s.T), true);
    EXPECT_LT(rel_err(qkv, original.values()), fwd_tol(dt));
  }
}

// RoPE is linear, so the gradient of sum(w * rope(x)) is the inverse rotation of w.
TEST(CpuRope, InverseIsTheBackward) {
  CpuBackend be(0);
  std::mt19937_64 rng(21);
  const AttnShape s{2, 3, 2, 6};
  HostTensor cos, sin;
  rope_tables(DType::F64, s.T, s.Dh, cos, sin);
  HostTensor x = uniform(DType::F64, {s.N(), 3, s.H, s.Dh}, rng);
  HostTensor w = uniform(DType::F64, {s.N(), 3, s.H, s.Dh}, rng);
  const std::vector<double> fd = fd_grad(x, [&] {
    HostTensor y = x;
    be.rope(y, cos, sin, static_cast<int>(s.T), false);
    return weighted_sum(y, w);
  });
  be.rope(w, cos, sin, static_cast<int>(s.T), true);
  EXPECT_LT(rel_err(w, fd), kGradTol);
}

// Full causal score matrix per (sequence, head), softmax, times V.
void attention_ref(const HostTensor& qkv, const AttnShape& s, double scale,
                   std::vector<double>& out, std::vector<double>& lse) {
  out.assign(s.N() * s.H * s.Dh, 0);
  lse.assign(s.B * s.H * s.T, 0);
  auto at = [&](int64_t n, int64_t part, int64_t h, int64_t d) {
    return qkv.get(((n * 3 + part) * s.H + h) * s.Dh + d);
  };
  std::vector<double> S(s.T * s.T);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h) {
      for (int64_t i = 0; i < s.T; ++i)
        for (int64_t j = 0; j < s.T; ++j) {
          double dotp = 0;
          for (int64_t d = 0; d < s.Dh; ++d) dotp += at(b * s.T + i, 0, h, d) * at(b * s.T + j, 1, h, d);
          S[i * s.T + j] = j <= i ? scale * dotp : -std::numeric_limits<double>::infinity();
        }
      for (int64_t i = 0; i < s.T; ++i) {
        double mx = -std::numeric_limits<double>::infinity(), sum = 0;
        for (int64_t j = 0; j < s.T; ++j) mx = std::max(mx, S[i * s.T + j]);
        for (int64_t j = 0; j < s.T; ++j) sum += std::exp(S[i * s.T + j] - mx);
        lse[(b * s.H + h) * s.T + i] = mx + std::log(sum);
        for (int64_t d = 0; d < s.Dh; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < s.T; ++j) acc += std::exp(S[i * s.T + j] - mx) / sum * at(b * s.T + j, 2, h, d);
          out[((b * s.T + i) * s.H + h) * s.Dh + d] = acc;
        }
      }
    }
}

TEST(CpuAttention, ForwardMatchesFullMatrixReference) {
  CpuBackend be(0);
  std::mt19937_64 rng(22);
  const AttnShape shapes[] = {{2, 5, 2, 8}, {1, 17, 3, 16}, {3, 1, 1, 64}, {2, 9, 2, 33}};
  for (DType dt : kFloatTypes)
    for (const AttnShape& s : shapes) {
      const double scale = 1 / std::sqrt(static_cast<double>(s.Dh));
      HostTensor qkv = uniform(dt, {s.N(), 3, s.H, s.Dh}, rng, -2, 2);
      HostTensor out(dt, {s.N(), s.H * s.Dh}), lse(dt, {s.B, s.H, s.T});
      out.poison();
      lse.poison();
      std::vector<double> out_ref, lse_ref;
      attention_ref(qkv, s, scale, out_ref, lse_ref);
      be.attention_fwd(qkv, static_cast<int>(s.T), scale, out, lse);
      EXPECT_LT(rel_err(out, out_ref), fwd_tol(dt)) << dtype_name(dt) << " T=" << s.T;
      EXPECT_LT(rel_err(lse, lse_ref), fwd_tol(dt)) << dtype_name(dt) << " T=" << s.T;
    }
}

// dqkv from attention_bwd for upstream gradient w at the current qkv.
HostTensor attention_grad(CpuBackend& be, const HostTensor& qkv, const HostTensor& w,
                          const AttnShape& s, double scale) {
  const DType dt = qkv.dtype();
  HostTensor out(dt, {s.N(), s.H * s.Dh}), lse(dt, {s.B, s.H, s.T}), dqkv(dt, qkv.t().shape);
  be.attention_fwd(qkv, static_cast<int>(s.T), scale, out, lse);
  dqkv.poison();
  be.attention_bwd(w, qkv, out, lse, static_cast<int>(s.T), scale, dqkv);
  return dqkv;
}

TEST(CpuAttention, BackwardMatchesFiniteDifferences) {
  CpuBackend be(0);
  std::mt19937_64 rng(23);
  const AttnShape shapes[] = {{2, 4, 2, 8}, {1, 7, 1, 5}};
  for (const AttnShape& s : shapes) {
    const double scale = 0.4;
    HostTensor qkv = uniform(DType::F64, {s.N(), 3, s.H, s.Dh}, rng, -1.5, 1.5);
    HostTensor w = uniform(DType::F64, {s.N(), s.H * s.Dh}, rng);
    HostTensor out(DType::F64, {s.N(), s.H * s.Dh}), lse(DType::F64, {s.B, s.H, s.T});
    const std::vector<double> fd = fd_grad(qkv, [&] {
      be.attention_fwd(qkv, static_cast<int>(s.T), scale, out, lse);
      return weighted_sum(out, w);
    });
    EXPECT_LT(rel_err(attention_grad(be, qkv, w, s, scale), fd), kGradTol) << "T=" << s.T;
  }
}

TEST(CpuAttention, BackwardF32MatchesF64) {
  CpuBackend be(0);
  std::mt19937_64 rng(24);
  const AttnShape s{2, 11, 2, 16};
  HostTensor qkv32 = uniform(DType::F32, {s.N(), 3, s.H, s.Dh}, rng);
  HostTensor w32 = uniform(DType::F32, {s.N(), s.H * s.Dh}, rng);
  HostTensor qkv64(DType::F64, qkv32.t().shape), w64(DType::F64, w32.t().shape);
  for (int64_t i = 0; i < qkv32.numel(); ++i) qkv64.set(i, qkv32.get(i));
  for (int64_t i = 0; i < w32.numel(); ++i) w64.set(i, w32.get(i));
  const HostTensor g32 = attention_grad(be, qkv32, w32, s, 0.25);
  const HostTensor g64 = attention_grad(be, qkv64, w64, s, 0.25);
  EXPECT_LT(rel_err(g32, g64.values()), 1e-5);
}

}  // namespace
}  // namespace nmoe::cputest
