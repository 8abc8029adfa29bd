// CPU backend: chunked cross-entropy, sum of squares, AdamW.
#include <cmath>
#include <vector>

#include "cpu_test_util.h"

namespace nmoe::cputest {
namespace {

struct CeRef {
  double loss = 0;
  std::vector<double> dh, dW;  // dW: the part added
};

// Full [N, V] logits at once.
CeRef cross_entropy_ref(const HostTensor& h, const HostTensor& W, const std::vector<int32_t>& tgt,
                        int64_t ignore_index, double grad_scale) {
  const int64_t N = h.t().rows(), D = h.t().cols(), V = W.t().rows();
  CeRef r;
  r.dh.assign(N * D, 0);
  r.dW.assign(V * D, 0);
  std::vector<double> logits(V);
  for (int64_t n = 0; n < N; ++n) {
    if (tgt[n] < 0 || tgt[n] == ignore_index) continue;
    double mx = -1e300, sum = 0;
    for (int64_t v = 0; v < V; ++v) {
      logits[v] = 0;
      for (int64_t d = 0; d < D; ++d) logits[v] += h.get(n * D + d) * W.get(v * D + d);
      mx = std::max(mx, logits[v]);
    }
    for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[v] - mx);
    const double lse = mx + std::log(sum);
    r.loss += lse - logits[tgt[n]];
    for (int64_t v = 0; v < V; ++v) {
      const double g = (std::exp(logits[v] - lse) - (v == tgt[n])) * grad_scale;
      for (int64_t d = 0; d < D; ++d) {
        r.dh[n * D + d] += g * W.get(v * D + d);
        r.dW[v * D + d] += g * h.get(n * D + d);
      }
    }
  }
  return r;
}

std::vector<int32_t> random_targets(int64_t N, int64_t V, std::mt19937_64& rng) {
  std::vector<int32_t> t(N);
  std::uniform_int_distribution<int> pick(0, static_cast<int>(V) - 1);
  for (auto& x : t) x = pick(rng);
  t[1] = -100;  // ignore_index
  t[4] = -1;    // negative: ignored too
  t[N - 1] = 7; // ignored when ignore_index = 7
  return t;
}

TEST(CpuCrossEntropy, MatchesFullLogitsForAnyChunking) {
  CpuBackend be(0);
  std::mt19937_64 rng(50);
  const int64_t N = 23, D = 16, V = 37;
  const double grad_scale = 0.37;
  for (DType dt : kFloatTypes)
    for (int64_t ignore : {int64_t{-100}, int64_t{7}})
      for (int64_t chunk : {1, 5, 23, 100}) {
        HostTensor h = uniform(dt, {N, D}, rng, -2, 2), W = uniform(dt, {V, D}, rng, -1, 1);
        const std::vector<int32_t> tgt = random_targets(N, V, rng);
        const CeRef want = cross_entropy_ref(h, W, tgt, ignore, grad_scale);
        HostTensor loss = scalar_f64(0.5), dh(dt, {N, D}), dW = uniform(dt, {V, D}, rng);
        const HostTensor dW0 = dW;
        dh.poison();
        be.cross_entropy(h, W, indices({N}, tgt), ignore, grad_scale, chunk, loss, dh, dW);
        const std::string what = std::string(dtype_name(dt)) + " chunk " + std::to_string(chunk);
        EXPECT_LT(std::abs(loss.get(0) - 0.5 - want.loss) / want.loss, fwd_tol(dt)) << what;
        EXPECT_LT(rel_err(dh, want.dh), fwd_tol(dt)) << what;
        EXPECT_LT(rel_err(added(dW, dW0), want.dW), dt == DType::F64 ? 1e-12 : 1e-4) << what;
        // Loss only: same loss, gradients untouched.
        HostTensor loss_only = scalar_f64(0.5);
        be.cross_entropy(h, W, indices({N}, tgt), ignore, grad_scale, chunk, loss_only, Tensor(), Tensor());
        EXPECT_EQ(loss_only.get(0), loss.get(0)) << what;
      }
}

TEST(CpuCrossEntropy, GradientsMatchFiniteDifferences) {
  CpuBackend be(0);
  std::mt19937_64 rng(51);
  const int64_t N = 7, D = 4, V = 9;
  const double grad_scale = 1.7;
  HostTensor h = uniform(DType::F64, {N, D}, rng, -2, 2), W = uniform(DType::F64, {V, D}, rng);
  const std::vector<int32_t> tgt = random_targets(N, V, rng);
  const HostTensor targets = indices({N}, tgt);
  auto loss = [&] {
    HostTensor l = scalar_f64();
    be.cross_entropy(h, W, targets, -100, grad_scale, 3, l, Tensor(), Tensor());
    return grad_scale * l.get(0);
  };
  const std::vector<double> fd_h = fd_grad(h, loss), fd_W = fd_grad(W, loss);
  HostTensor l = scalar_f64(), dh(DType::F64, {N, D}), dW = filled(DType::F64, {V, D}, 0);
  be.cross_entropy(h, W, targets, -100, grad_scale, 3, l, dh, dW);
  EXPECT_LT(rel_err(dh, fd_h), kGradTol);
  EXPECT_LT(rel_err(dW, fd_W), kGradTol);
}

TEST(CpuCrossEntropy, RejectsBadTargetsAndShapes) {
  CpuBackend be(0);
  HostTensor h(DType::F64, {3, 4}), W(DType::F64, {5, 4}), loss = scalar_f64();
  EXPECT_THROW(be.cross_entropy(h, W, indices({3}, {0, 5, 1}), -100, 1, 2, loss, Tensor(), Tensor()), Error);
  EXPECT_THROW(be.cross_entropy(h, W, indices({2}, {0, 1}), -100, 1, 2, loss, Tensor(), Tensor()), Error);
  EXPECT_THROW(be.cross_entropy(h, W, indices({3}, {0, 1, 1}), -100, 1, 0, loss, Tensor(), Tensor()), Error);
  HostTensor dh(DType::F64, {3, 4}), bad_dW(DType::F64, {4, 4});
  EXPECT_THROW(be.cross_entropy(h, W, indices({3}, {0, 1, 1}), -100, 1, 2, loss, dh, bad_dW), Error);
  EXPECT_THROW(be.cross_entropy(h, W, indices({3}, {0, 1, 1}), -100, 1, 2, loss, dh, Tensor()), Error);
  HostTensor f32_loss(DType::F32, {1});
  EXPECT_THROW(be.cross_entropy(h, W, indices({3}, {0, 1, 1}), -100, 1, 2, f32_loss, Tensor(), Tensor()), Error);
}

// ---- sum of squares ---------------------------------------------------------------------

TEST(CpuSumSquares, AccumulatesExactlyEnough) {
  CpuBackend be(0);
  std::mt19937_64 rng(52);
  for (DType dt : kFloatTypes)
    for (int64_t n : {0, 1, 1000, 100003}) {
      HostTensor x = uniform(dt, {n}, rng);
      double want = 2.0;
      for (int64_t i = 0; i < n; ++i) want += x.get(i) * x.get(i);
      HostTensor out = scalar_f64(2.0);
      be.sum_squares(x, out);
      EXPECT_NEAR(out.get(0), want, 1e-12 * want) << dtype_name(dt) << " n=" << n;
    }
}

// ---- AdamW ---------------------------------------------------------------------------------

struct AdamState {
  HostTensor p, g, m, v;
};

AdamState random_adam_state(DType dt, int64_t n, std::mt19937_64& rng) {
  return {uniform(dt, {n}, rng), uniform(dt, {n}, rng, -3, 3), uniform(dt, {n}, rng, -0.1, 0.1),
          uniform(dt, {n}, rng, 0, 0.05)};
}

// The documented formula, one element at a time.
void adamw_ref(AdamState& s, const AdamWParams& p, double grad_norm_sq, std::vector<double>& param,
               std::vector<double>& m, std::vector<double>& v) {
  const double clip = p.max_norm > 0 ? std::min(1.0, p.max_norm / (std::sqrt(grad_norm_sq) + 1e-6)) : 1;
  const double t = static_cast<double>(p.step);
  for (int64_t i = 0; i < s.p.numel(); ++i) {
    const double g = s.g.get(i) * clip;
    double x = s.p.get(i) * (1 - p.lr * p.weight_decay);
    m[i] = p.beta1 * s.m.get(i) + (1 - p.beta1) * g;
    v[i] = p.beta2 * s.v.get(i) + (1 - p.beta2) * g * g;
    x -= p.lr / (1 - std::pow(p.beta1, t)) * m[i] / (std::sqrt(v[i]) / std::sqrt(1 - std::pow(p.beta2, t)) + p.eps);
    param[i] = x;
  }
}

TEST(CpuAdamW, MatchesScalarFormulaWithAndWithoutClipping) {
  CpuBackend be(0);
  std::mt19937_64 rng(53);
  const int64_t n = 40000;
  for (DType dt : kFloatTypes)
    for (double max_norm : {0.0, 1.0}) {
      AdamState s = random_adam_state(dt, n, rng);
      AdamWParams p;
      p.lr = 3e-3;
      p.weight_decay = 0.1;
      p.step = 3;
      p.max_norm = max_norm;
      HostTensor gns = scalar_f64();
      be.sum_squares(s.g, gns);
      std::vector<double> param(n), m(n), v(n);
      adamw_ref(s, p, gns.get(0), param, m, v);
      be.adamw(s.p, s.g, s.m, s.v, p, max_norm > 0 ? gns.t() : Tensor());
      const double tol = dt == DType::F64 ? 1e-14 : 1e-6;
      EXPECT_LT(rel_err(s.p, param), tol) << dtype_name(dt) << " max_norm " << max_norm;
      EXPECT_LT(rel_err(s.m, m), tol);
      EXPECT_LT(rel_err(s.v, v), tol);
    }
}

// adamw_copy: adamw, then the updated weights converted into the copy.
TEST(CpuAdamW, CopyIsAdamWThenConvert) {
  CpuBackend be(0);
  std::mt19937_64 rng(55);
  const int64_t n = 1001;
  for (DType copy_dt : {DType::F32, DType::F64}) {
    AdamState a = random_adam_state(DType::F64, n, rng), b = a;
    AdamWParams p;
    p.lr = 3e-3;
    p.weight_decay = 0.1;
    p.step = 2;
    p.max_norm = 1.0;
    HostTensor gns = scalar_f64();
    be.sum_squares(a.g, gns);
    HostTensor copy(copy_dt, {n}), want(copy_dt, {n});
    copy.poison();
    be.adamw_copy(a.p, a.g, a.m, a.v, p, gns, copy);
    be.adamw(b.p, b.g, b.m, b.v, p, gns);
    be.convert(want, b.p);
    EXPECT_TRUE(a.p.bytes_equal(b.p));
    EXPECT_TRUE(a.m.bytes_equal(b.m));
    EXPECT_TRUE(a.v.bytes_equal(b.v));
    EXPECT_TRUE(copy.bytes_equal(want)) << dtype_name(copy_dt);
  }
  AdamState s = random_adam_state(DType::F64, 8, rng);
  HostTensor short_copy(DType::F32, {7});
  EXPECT_THROW(be.adamw_copy(s.p, s.g, s.m, s.v, AdamWParams{}, Tensor(), short_copy), Error);
}

TEST(CpuAdamW, ChecksArguments) {
  CpuBackend be(0);
  std::mt19937_64 rng(54);
  AdamState s = random_adam_state(DType::F64, 8, rng);
  AdamWParams p;
  p.max_norm = 1.0;
  EXPECT_THROW(be.adamw(s.p, s.g, s.m, s.v, p, Tensor()), Error);  // clipping needs the norm
  p.max_norm = 0;
  p.step = 0;
  EXPECT_THROW(be.adamw(s.p, s.g, s.m, s.v, p, Tensor()), Error);
  p.step = 1;
  HostTensor short_m(DType::F64, {7});
  EXPECT_THROW(be.adamw(s.p, s.g, short_m, s.v, p, Tensor()), Error);
  HostTensor m32(DType::F32, {8});
  EXPECT_THROW(be.adamw(s.p, s.g, m32, s.v, p, Tensor()), Error);
}

}  // namespace
}  // namespace nmoe::cputest
