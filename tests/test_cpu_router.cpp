// CPU backend: router forward/backward, aux loss, bias update.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <vector>

#include "cpu_test_util.h"

namespace nmoe::cputest {
namespace {

struct RouterOut {
  HostTensor scores, idx, gates, counts;
  RouterOut(DType dt, int64_t N, int64_t E, int64_t K)
      : scores(dt, {N, E}), idx(DType::I32, {N, K}), gates(dt, {N, K}),
        counts(filled(DType::I32, {E}, 0)) {
    scores.poison();
    gates.poison();
    idx.fill(-1);
  }
};

double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

// Brute-force top-k: repeatedly the largest key not yet taken, lowest id on ties.
std::vector<int32_t> top_k_ref(const std::vector<double>& key, int64_t K) {
  std::vector<int32_t> chosen;
  std::vector<bool> taken(key.size(), false);
  for (int64_t k = 0; k < K; ++k) {
    int32_t best = -1;
    for (int32_t e = 0; e < static_cast<int32_t>(key.size()); ++e)
      if (!taken[e] && (best < 0 || key[e] > key[best])) best = e;
    taken[best] = true;
    chosen.push_back(best);
  }
  return chosen;
}

TEST(CpuRouter, ForwardInvariants) {
  CpuBackend be(0);
  std::mt19937_64 rng(30);
  const int64_t N = 37, E = 8, K = 3;
  RouterParams p;
  p.top_k = K;
  p.route_scale = 1.5;
  p.routed_scaling_factor = 2.5;
  for (DType dt : kFloatTypes) {
    HostTensor logits = uniform(dt, {N, E}, rng, -3, 3), bias = uniform(dt, {E}, rng, -0.2, 0.2);
    RouterOut r(dt, N, E, K);
    r.counts.set(2, 5);  // counts accumulate
    be.router_fwd(logits, bias, p, r.scores, r.idx, r.gates, r.counts);
    std::vector<double> score_ref(N * E), counts_ref(E, 0);
    counts_ref[2] = 5;
    for (int64_t i = 0; i < N * E; ++i) score_ref[i] = sigmoid(1.5 * logits.get(i));
    EXPECT_LT(rel_err(r.scores, score_ref), fwd_tol(dt));
    for (int64_t n = 0; n < N; ++n) {
      std::vector<double> key(E);
      for (int64_t e = 0; e < E; ++e) key[e] = r.scores.get(n * E + e) + bias.get(e);
      const std::vector<int32_t> want = top_k_ref(key, K);
      double gate_sum = 0, score_sum = 0;
      for (int64_t k = 0; k < K; ++k) {
        const int32_t e = static_cast<int32_t>(r.idx.get(n * K + k));
        EXPECT_EQ(e, want[k]) << "row " << n << " slot " << k;
        gate_sum += r.gates.get(n * K + k);
        score_sum += r.scores.get(n * E + e);
        counts_ref[e] += 1;
      }
      EXPECT_NEAR(gate_sum, 2.5, 2.5 * fwd_tol(dt));
      for (int64_t k = 0; k < K; ++k) {
        const double s = r.scores.get(n * E + static_cast<int64_t>(r.idx.get(n * K + k)));
        EXPECT_NEAR(r.gates.get(n * K + k), s / score_sum * 2.5, 3 * fwd_tol(dt));
      }
    }
    EXPECT_EQ(r.counts.values(), counts_ref);
  }
}

TEST(CpuRouter, TiesGoToTheLowerExpertId) {
  CpuBackend be(0);
  const int64_t E = 6, K = 3;
  RouterParams p;
  p.top_k = K;
  // Row 0: all equal. Row 1: experts 4 and 1 tie for first, 5 and 2 for second.
  HostTensor logits = filled(DType::F64, {2, E}, 0.0);
  for (int e : {4, 1}) logits.set(E + e, 2.0);
  for (int e : {5, 2}) logits.set(E + e, 1.0);
  HostTensor bias = filled(DType::F64, {E}, 0.0);
  RouterOut r(DType::F64, 2, E, K);
  be.router_fwd(logits, bias, p, r.scores, r.idx, r.gates, r.counts);
  EXPECT_EQ(r.idx.values(), (std::vector<double>{0, 1, 2, 1, 4, 2}));
  for (int k = 0; k < K; ++k) EXPECT_NEAR(r.gates.get(k), 1.0 / 3, 1e-15);
}

TEST(CpuRouter, BiasChangesChoiceButNotGates) {
  CpuBackend be(0);
  const int64_t E = 4;
  RouterParams p;
  p.top_k = 1;
  HostTensor lg(DType::F64, {1, E});
  for (int e = 0; e < E; ++e) lg.set(e, std::vector<double>{1.0, 0.5, 0.0, -0.5}[e]);
  HostTensor bias(DType::F64, {E});
  for (int e = 0; e < E; ++e) bias.set(e, std::vector<double>{0, 0, 0, 1.0}[e]);
  RouterOut r(DType::F64, 1, E, 1);
  be.router_fwd(lg, bias, p, r.scores, r.idx, r.gates, r.counts);
  EXPECT_EQ(r.idx.get(0), 3);           // sigmoid(-0.5) + 1 beats sigmoid(1)
  EXPECT_DOUBLE_EQ(r.gates.get(0), 1);  // gate = score / score, bias not included
}

TEST(CpuRouter, UseGivenIndices) {
  CpuBackend be(0);
  std::mt19937_64 rng(31);
  const int64_t N = 4, E = 6, K = 2;
  RouterParams p;
  p.top_k = K;
  p.use_given_indices = true;
  p.routed_scaling_factor = 1.7;
  HostTensor logits = uniform(DType::F64, {N, E}, rng), bias = uniform(DType::F64, {E}, rng);
  RouterOut r(DType::F64, N, E, K);
  const std::vector<int32_t> given = {5, 0, 0, 5, 3, 2, 1, 4};
  r.idx = indices({N, K}, given);
  be.router_fwd(logits, bias, p, r.scores, r.idx, r.gates, r.counts);
  for (int64_t n = 0; n < N; ++n) {
    const double s0 = r.scores.get(n * E + given[n * K]), s1 = r.scores.get(n * E + given[n * K + 1]);
    EXPECT_NEAR(r.gates.get(n * K), 1.7 * s0 / (s0 + s1), 1e-14);
    EXPECT_NEAR(r.gates.get(n * K + 1), 1.7 * s1 / (s0 + s1), 1e-14);
  }
  for (int64_t i = 0; i < N * K; ++i) EXPECT_EQ(r.idx.get(i), given[i]);
  EXPECT_EQ(r.counts.values(), (std::vector<double>{2, 1, 1, 1, 1, 2}));
  r.idx = indices({N, K}, {5, 5, 0, 5, 3, 2, 1, 4});
  EXPECT_THROW(be.router_fwd(logits, bias, p, r.scores, r.idx, r.gates, r.counts), Error);
  r.idx = indices({N, K}, {6, 0, 0, 5, 3, 2, 1, 4});
  EXPECT_THROW(be.router_fwd(logits, bias, p, r.scores, r.idx, r.gates, r.counts), Error);
}

TEST(CpuRouter, BackwardMatchesFiniteDifferences) {
  CpuBackend be(0);
  std::mt19937_64 rng(32);
  const int64_t N = 5, E = 7, K = 3;
  RouterParams p;
  p.top_k = K;
  p.route_scale = 1.3;
  p.routed_scaling_factor = 2.0;
  HostTensor logits = uniform(DType::F64, {N, E}, rng, -2, 2), bias = filled(DType::F64, {E}, 0);
  RouterOut r(DType::F64, N, E, K);
  be.router_fwd(logits, bias, p, r.scores, r.idx, r.gates, r.counts);
  p.use_given_indices = true;  // hold the selection fixed under perturbation
  HostTensor w = uniform(DType::F64, {N, K}, rng);
  const std::vector<double> fd = fd_grad(logits, [&] {
    be.router_fwd(logits, bias, p, r.scores, r.idx, r.gates, r.counts);
    return weighted_sum(r.gates, w);
  });
  be.router_fwd(logits, bias, p, r.scores, r.idx, r.gates, r.counts);
  HostTensor dlogits(DType::F64, {N, E});
  dlogits.poison();
  be.router_bwd(w, r.scores, r.idx, p, dlogits);
  EXPECT_LT(rel_err(dlogits, fd), kGradTol);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t e = 0; e < E; ++e) {
      bool selected = false;
      for (int64_t k = 0; k < K; ++k) selected |= r.idx.get(n * K + k) == e;
      if (!selected) {
        EXPECT_EQ(dlogits.get(n * E + e), 0.0);
      }
    }
}

// ---- aux loss ------------------------------------------------------------------------

double aux_ref(const HostTensor& gates, const HostTensor& idx, int64_t E) {
  std::vector<double> imp(E, 0), load(E, 0);
  for (int64_t i = 0; i < gates.numel(); ++i) {
    imp[static_cast<int64_t>(idx.get(i))] += gates.get(i);
    load[static_cast<int64_t>(idx.get(i))] += 1;
  }
  const double I = std::accumulate(imp.begin(), imp.end(), 0.0);
  const double L = std::accumulate(load.begin(), load.end(), 0.0);
  double aux = 0;
  for (int64_t e = 0; e < E; ++e) aux += imp[e] / I * load[e] / L;
  return E * aux;
}

HostTensor random_distinct_idx(int64_t N, int64_t E, int64_t K, std::mt19937_64& rng) {
  HostTensor idx(DType::I32, {N, K});
  std::vector<int32_t> ids(E);
  for (int64_t n = 0; n < N; ++n) {
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    for (int64_t k = 0; k < K; ++k) idx.set(n * K + k, ids[k]);
  }
  return idx;
}

TEST(CpuAuxLoss, ForwardAndFiniteDifferences) {
  CpuBackend be(0);
  std::mt19937_64 rng(33);
  const int64_t N = 71, E = 5, K = 2;
  const double weight = 0.3;
  HostTensor gates = uniform(DType::F64, {N, K}, rng, 0.1, 1);
  const HostTensor idx = random_distinct_idx(N, E, K, rng);
  HostTensor loss = scalar_f64(1.0);
  HostTensor dgates = uniform(DType::F64, {N, K}, rng);
  const HostTensor dgates0 = dgates;
  be.moe_aux_loss(gates, idx, E, weight, loss, dgates);
  EXPECT_NEAR(loss.get(0), 1.0 + weight * aux_ref(gates, idx, E), 1e-12);
  const std::vector<double> fd = fd_grad(gates, [&] { return weight * aux_ref(gates, idx, E); });
  EXPECT_LT(rel_err(added(dgates, dgates0), fd), kGradTol);
  // F32 agrees with the reference too.
  HostTensor g32(DType::F32, {N, K}), d32 = filled(DType::F32, {N, K}, 0), l32 = scalar_f64();
  for (int64_t i = 0; i < N * K; ++i) g32.set(i, gates.get(i));
  be.moe_aux_loss(g32, idx, E, weight, l32, d32);
  EXPECT_NEAR(l32.get(0), weight * aux_ref(g32, idx, E), 1e-6);
}

TEST(CpuAuxLoss, ZeroImportanceContributesNothing) {
  CpuBackend be(0);
  HostTensor gates = filled(DType::F64, {3, 2}, 0.0), loss = scalar_f64(0.5);
  HostTensor dgates = filled(DType::F64, {3, 2}, 0.25);
  be.moe_aux_loss(gates, indices({3, 2}, {0, 1, 1, 2, 2, 0}), 3, 1.0, loss, dgates);
  EXPECT_EQ(loss.get(0), 0.5);
  for (double v : dgates.values()) EXPECT_EQ(v, 0.25);
  HostTensor none(DType::F64, {0, 2}), none_idx(DType::I32, {0, 2});
  be.moe_aux_loss(none, none_idx, 3, 1.0, loss, Tensor());
  EXPECT_EQ(loss.get(0), 0.5);
}

// ---- bias update -------------------------------------------------------------------------

TEST(CpuRouterBias, MovesTowardBalanceAndClamps) {
  CpuBackend be(0);
  for (DType dt : kFloatTypes) {
    // E = 4, total 40: expert 0 overloaded, 1 exactly balanced (sign 0), 2 and 3 under.
    HostTensor bias = filled(dt, {4}, 0.0);
    const HostTensor counts = indices({4}, {20, 10, 6, 4});
    be.router_bias_update(bias, counts, 0.5);
    // s = {1, 0, -1, -1}, mean -0.25: bias -= 0.5 * (s + 0.25).
    EXPECT_EQ(bias.values(), (std::vector<double>{-0.625, -0.125, 0.375, 0.375}));
    HostTensor edge = filled(dt, {4}, 0.0);
    edge.set(0, -15.9);
    edge.set(2, 15.9);
    be.router_bias_update(edge, counts, 1.0);
    EXPECT_EQ(edge.get(0), -16.0);
    EXPECT_EQ(edge.get(2), 16.0);
    HostTensor balanced = filled(dt, {4}, 0.5);
    be.router_bias_update(balanced, indices({4}, {3, 3, 3, 3}), 1.0);
    EXPECT_EQ(balanced.values(), (std::vector<double>{0.5, 0.5, 0.5, 0.5}));
    HostTensor empty = filled(dt, {4}, 0.5);
    be.router_bias_update(empty, indices({4}, {0, 0, 0, 0}), 1.0);
    EXPECT_EQ(empty.values(), (std::vector<double>{0.5, 0.5, 0.5, 0.5}));
  }
}

}  // namespace
}  // namespace nmoe::cputest
