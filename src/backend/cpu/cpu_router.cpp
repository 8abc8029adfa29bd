// Sigmoid top-k router: scores, expert choice, normalized gates, and backward.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"

namespace nmoe {

using namespace cpu;

namespace {

// Below this the gate normalizer max(sum, 1e-12) is clamped (and constant).
constexpr double kMinGateSum = 1e-12;

using ops::RouterShape;

// Every id in [0, E); with `distinct`, no id twice in one row.
void check_expert_ids(const char* op, const Tensor& idx, const RouterShape& s, bool distinct) {
  const int32_t* id = idx.ptr<int32_t>();
  std::vector<int64_t> seen_in_row(s.E, -1);
  for (int64_t n = 0; n < s.N; ++n) {
    for (int64_t k = 0; k < s.K; ++k) {
      const int32_t e = id[n * s.K + k];
      NMOE_CHECK(e >= 0 && e < s.E, op, ": idx[", n, ", ", k, "] = ", e,
                 " is outside the experts [0, ", s.E, ")");
      NMOE_CHECK(!distinct || seen_in_row[e] != n, op, ": expert ", e, " appears twice in row ",
                 n, " of idx");
      seen_in_row[e] = n;
    }
  }
}

// Top-k experts of one row by key, descending, ties to the lower id. NaN keys
// rank last so the ordering stays a strict weak order.
void select_top_k(const double* key, int64_t E, int64_t K, std::vector<int32_t>& order,
                  int32_t* out) {
  std::iota(order.begin(), order.end(), 0);
  auto rank = [&](int32_t e) {
    return std::isnan(key[e]) ? -std::numeric_limits<double>::infinity() : key[e];
  };
  std::partial_sort(order.begin(), order.begin() + K, order.end(), [&](int32_t a, int32_t b) {
    const double ka = rank(a), kb = rank(b);
    return ka > kb || (ka == kb && a < b);
  });
  std::copy_n(order.begin(), K, out);
}

template <class T>
void write_gates(const T* score_row, const int32_t* id, int64_t K, double scaling, T* gates) {
  double sum = 0;
  for (int64_t k = 0; k < K; ++k) sum += score_row[id[k]];
  const double norm = scaling / std::max(sum, kMinGateSum);
  for (int64_t k = 0; k < K; ++k) gates[k] = static_cast<T>(score_row[id[k]] * norm);
}

template <class T>
void router_fwd_impl(const RouterShape& s, const Tensor& logits, const Tensor& bias,
                     const RouterParams& p, const Tensor& scores, const Tensor& idx,
                     const Tensor& gates) {
#pragma omp parallel if (worth_parallel(s.N, 8 * s.E))
  {
    std::vector<double> key(s.E);
    std::vector<int32_t> order(s.E);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < s.N; ++n) {
      const T* logit = logits.ptr<T>() + n * s.E;
      T* score = scores.ptr<T>() + n * s.E;
      int32_t* id = idx.ptr<int32_t>() + n * s.K;
      for (int64_t e = 0; e < s.E; ++e) {
        score[e] = static_cast<T>(sigmoid(p.route_scale * logit[e]));
        key[e] = static_cast<double>(score[e]) + static_cast<double>(bias.ptr<T>()[e]);
      }
      if (!p.use_given_indices) select_top_k(key.data(), s.E, s.K, order, id);
      write_gates(score, id, s.K, p.routed_scaling_factor, gates.ptr<T>() + n * s.K);
    }
  }
}

// g_k = rsf s_k / S with S = sum_k s_k, so dL/ds_j = rsf (dg_j / S - sum_k dg_k s_k / S^2);
// with S clamped to 1e-12 the normalizer is constant. Then ds/dlogit = route_scale s (1 - s).
template <class T>
void router_bwd_impl(const RouterShape& s, const Tensor& dgates, const Tensor& scores,
                     const Tensor& idx, const RouterParams& p, const Tensor& dlogits) {
  parallel_for(s.N, s.E, [&](int64_t n) {
    const T* score = scores.ptr<T>() + n * s.E;
    const T* dg = dgates.ptr<T>() + n * s.K;
    const int32_t* id = idx.ptr<int32_t>() + n * s.K;
    T* out = dlogits.ptr<T>() + n * s.E;
    std::fill(out, out + s.E, T(0));
    double sum = 0, weighted = 0;
    for (int64_t k = 0; k < s.K; ++k) {
      sum += score[id[k]];
      weighted += static_cast<double>(dg[k]) * score[id[k]];
    }
    const bool clamped = sum < kMinGateSum;
    const double denom = clamped ? kMinGateSum : sum;
    for (int64_t k = 0; k < s.K; ++k) {
      const double sk = score[id[k]];
      double ds = p.routed_scaling_factor * dg[k] / denom;
      if (!clamped) ds -= p.routed_scaling_factor * weighted / (sum * sum);
      out[id[k]] = static_cast<T>(out[id[k]] + ds * sk * (1.0 - sk) * p.route_scale);
    }
  });
}

}  // namespace

void CpuBackend::router_fwd(const Tensor& logits, const Tensor& bias, const RouterParams& p,
                            const Tensor& scores, const Tensor& idx, const Tensor& gates,
                            const Tensor& counts) {
  const char* op = "router_fwd";
  const RouterShape s = ops::check_router_fwd(logits, bias, p, scores, idx, gates, counts);
  if (p.use_given_indices) check_expert_ids(op, idx, s, /*distinct=*/true);
  dispatch_float(op, {{"logits", logits}, {"bias", bias}, {"scores", scores}, {"gates", gates}},
                 [&](auto tag) {
                   router_fwd_impl<decltype(tag)>(s, logits, bias, p, scores, idx, gates);
                 });
  const int32_t* id = idx.ptr<int32_t>();
  int32_t* count = counts.ptr<int32_t>();
  for (int64_t i = 0; i < s.N * s.K; ++i) ++count[id[i]];
}

void CpuBackend::router_bwd(const Tensor& dgates, const Tensor& scores, const Tensor& idx,
                            const RouterParams& p, const Tensor& dlogits) {
  const char* op = "router_bwd";
  const RouterShape s = ops::check_router_bwd(dgates, scores, idx, p, dlogits);
  check_expert_ids(op, idx, s, /*distinct=*/false);
  dispatch_float(op, {{"dgates", dgates}, {"scores", scores}, {"dlogits", dlogits}},
                 [&](auto tag) {
                   router_bwd_impl<decltype(tag)>(s, dgates, scores, idx, p, dlogits);
                 });
}

}  // namespace nmoe
