// Expert load balancing: the Switch aux loss and the aux-loss-free bias update.
#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"

namespace nmoe {

using namespace cpu;

namespace {

constexpr double kBiasLimit = 16.0;

// aux = E * A / (I * L) with importance_e (sum of gates on e), load_e (count on e),
// I = sum importance, L = sum load, A = sum_e importance_e load_e. Loads fixed:
//   d aux / d g_{t,k} = E / (I L) * (load_e - A / I),  e = idx[t,k].
template <class T>
void aux_loss_impl(const Tensor& gates, const int32_t* id, int64_t N, int64_t K, int64_t E,
                   double weight, const Tensor& loss, const Tensor& dgates) {
  const T* g = gates.ptr<T>();
  const std::vector<double> importance =
      deterministic_sum_vec(N, kReduceRows, E, [&](int64_t begin, int64_t end, double* acc) {
        for (int64_t i = begin * K; i < end * K; ++i) acc[id[i]] += g[i];
      });
  std::vector<int64_t> load(E, 0);
  for (int64_t i = 0; i < N * K; ++i) ++load[id[i]];

  double total_importance = 0, weighted = 0;
  for (int64_t e = 0; e < E; ++e) {
    total_importance += importance[e];
    weighted += importance[e] * static_cast<double>(load[e]);
  }
  const double total_load = static_cast<double>(N * K);
  if (total_importance == 0 || total_load == 0) return;

  const double scale = static_cast<double>(E) / (total_importance * total_load);
  loss.ptr<double>()[0] += weight * scale * weighted;
  if (!dgates.defined()) return;
  const double mean_load = weighted / total_importance;
  T* dg = dgates.ptr<T>();
  parallel_blocks(N * K, kReduceElems, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      dg[i] = static_cast<T>(dg[i] + weight * scale * (static_cast<double>(load[id[i]]) - mean_load));
  });
}

// sign(frac_e - 1/E) with frac_e = count_e / max(total, 1), compared exactly in integers.
int sign_of_excess(int64_t count, int64_t total, int64_t E) {
  const int64_t lhs = count * E, rhs = std::max<int64_t>(total, 1);
  return (lhs > rhs) - (lhs < rhs);
}

template <class T>
void bias_update_impl(const Tensor& bias, const int32_t* counts, int64_t E, double gamma) {
  int64_t total = 0;
  for (int64_t e = 0; e < E; ++e) total += counts[e];
  std::vector<int> sign(E);
  double mean = 0;
  for (int64_t e = 0; e < E; ++e) {
    sign[e] = sign_of_excess(counts[e], total, E);
    mean += sign[e];
  }
  mean /= static_cast<double>(E);
  T* b = bias.ptr<T>();
  for (int64_t e = 0; e < E; ++e) {
    const double updated = static_cast<double>(b[e]) - gamma * (sign[e] - mean);
    b[e] = static_cast<T>(std::clamp(updated, -kBiasLimit, kBiasLimit));
  }
}

}  // namespace

void CpuBackend::moe_aux_loss(const Tensor& gates, const Tensor& idx, int n_experts,
                              double weight, const Tensor& loss, const Tensor& dgates) {
  const char* op = "moe_aux_loss";
  const ops::RowsDims d = ops::check_moe_aux_loss(gates, idx, n_experts, loss, dgates);
  const int64_t N = d.N, K = d.K;
  const int32_t* id = idx.ptr<int32_t>();
  for (int64_t i = 0; i < N * K; ++i)
    NMOE_CHECK(id[i] >= 0 && id[i] < n_experts, op, ": idx[", i / K, ", ", i % K, "] = ", id[i],
               " is outside the experts [0, ", n_experts, ")");
  auto run = [&](auto tag) {
    aux_loss_impl<decltype(tag)>(gates, id, N, K, n_experts, weight, loss, dgates);
  };
  if (dgates.defined()) {
    dispatch_float(op, {{"gates", gates}, {"dgates", dgates}}, run);
  } else {
    dispatch_float(op, {{"gates", gates}}, run);
  }
}

void CpuBackend::router_bias_update(const Tensor& bias, const Tensor& counts, double gamma) {
  const char* op = "router_bias_update";
  ops::check_router_bias_update(bias, counts);
  const int32_t* c = counts.ptr<int32_t>();
  for (int64_t e = 0; e < bias.numel(); ++e)
    NMOE_CHECK(c[e] >= 0, op, ": counts[", e, "] = ", c[e], " is negative");
  dispatch_float(op, {{"bias", bias}}, [&](auto tag) {
    bias_update_impl<decltype(tag)>(bias, c, bias.numel(), gamma);
  });
}

}  // namespace nmoe
