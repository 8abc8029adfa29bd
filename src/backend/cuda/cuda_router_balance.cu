// Expert load balancing: the Switch aux loss and the aux-loss-free bias update.
#include "backend/cuda/cuda_common.cuh"

namespace nmoe {

using namespace cuda;

namespace {

constexpr double kBiasLimit = 16.0;
constexpr int64_t kAuxRowsPerChunk = 256;

// Per chunk c of rows and expert e: partial importance (sum of gates routed to
// e, in slot order) and load. Grid: chunks; threads stride over experts.
template <class T>
__global__ void aux_partial_kernel(const T* gates, const int32_t* idx, int64_t N, int K, int E,
                                   double* imp_partial, int* load_partial, int* err) {
  const int64_t c = blockIdx.x;
  const int64_t begin = c * kAuxRowsPerChunk * K, end = min(N, (c + 1) * kAuxRowsPerChunk) * K;
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    double imp = 0;
    int load = 0;
    for (int64_t i = begin; i < end; ++i) {
      const int32_t id = idx[i];
      if (id == e) {
        imp += to_f32(gates[i]);
        ++load;
      }
    }
    imp_partial[c * E + e] = imp;
    load_partial[c * E + e] = load;
  }
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
    if (idx[i] < 0 || idx[i] >= E) report_error(err, kErrExpertRange);
}

// One thread: totals in expert order, loss += weight * aux; coef = {scale, mean_load}
// for the gradient (scale = 0: nothing to add).
__global__ void aux_total_kernel(const double* imp_partial, const int* load_partial,
                                 int64_t chunks, int E, int64_t total_load, double weight,
                                 double* loss, double* load_out, double* coef) {
  if (threadIdx.x != 0) return;
  double total_importance = 0, weighted = 0;
  for (int e = 0; e < E; ++e) {
    double imp = 0;
    int64_t load = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      imp += imp_partial[c * E + e];
      load += load_partial[c * E + e];
    }
    load_out[e] = double(load);
    total_importance += imp;
    weighted += imp * double(load);
  }
  coef[0] = 0;
  coef[1] = 0;
  if (total_importance == 0 || total_load == 0) return;
  const double scale = double(E) / (total_importance * double(total_load));
  loss[0] += weight * scale * weighted;
  coef[0] = weight * scale;
  coef[1] = weighted / total_importance;
}

template <class T>
__global__ void aux_grad_kernel(const int32_t* idx, const double* load, const double* coef,
                                int64_t n, int E, T* dgates) {
  const double c = coef[0], mean_load = coef[1];
  if (c == 0) return;
  NMOE_GRID_STRIDE(i, n) {
    const int32_t id = idx[i];
    if (id < 0 || id >= E) continue;
    dgates[i] = from_f32<T>(float(double(to_f32(dgates[i])) + c * (load[id] - mean_load)));
  }
}

// sign(frac_e - 1/E) with frac_e = count_e / max(total, 1), compared in integers.
template <class T>
__global__ void bias_update_kernel(T* bias, const int32_t* counts, int E, double gamma, int* err) {
  __shared__ long long total_s;
  __shared__ double mean_s;
  if (threadIdx.x == 0) {
    long long total = 0, sign_sum = 0;
    for (int e = 0; e < E; ++e) total += counts[e] > 0 ? counts[e] : 0;
    const long long rhs = total > 1 ? total : 1;
    for (int e = 0; e < E; ++e) {
      if (counts[e] < 0) report_error(err, kErrNegativeCount);
      const long long lhs = (long long)counts[e] * E;
      sign_sum += (lhs > rhs) - (lhs < rhs);
    }
    total_s = rhs;
    mean_s = double(sign_sum) / double(E);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    const long long lhs = (long long)counts[e] * E;
    const int sign = (lhs > total_s) - (lhs < total_s);
    const double updated = double(to_f32(bias[e])) - gamma * (sign - mean_s);
    bias[e] = from_f32<T>(float(fmin(fmax(updated, -kBiasLimit), kBiasLimit)));
  }
}

}  // namespace

void CudaBackend::moe_aux_loss(const Tensor& gates, const Tensor& idx, int n_experts,
                               double weight, const Tensor& loss, const Tensor& dgates) {
  const char* op = "moe_aux_loss";
  const ops::RowsDims d = ops::check_moe_aux_loss(gates, idx, n_experts, loss, dgates);
  const int64_t N = d.N, K = d.K;
  check_fits_i32(op, "K", K);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const int E = n_experts;
    const int64_t chunks = std::max<int64_t>(1, (N + kAuxRowsPerChunk - 1) / kAuxRowsPerChunk);
    NMOE_CHECK(chunks <= kMaxGrid, op, ": too many rows ", N);
    const size_t pe = static_cast<size_t>(chunks) * E;
    char* base = static_cast<char*>(scratch(Scratch::Partials, pe * (sizeof(double) + sizeof(int)) +
                                                                   (E + 2) * sizeof(double) + 256));
    double* imp_partial = reinterpret_cast<double*>(base);
    double* load = imp_partial + pe;
    double* coef = load + E;
    int* load_partial = reinterpret_cast<int*>(coef + 2);
    aux_partial_kernel<T><<<unsigned(chunks), kThreads, 0, stream()>>>(
        gates.ptr<T>(), idx.ptr<int32_t>(), N, int(K), E, imp_partial, load_partial,
        device_error_flag());
    NMOE_CUDA_LAUNCHED(op);
    aux_total_kernel<<<1, 32, 0, stream()>>>(imp_partial, load_partial, chunks, E, N * K, weight,
                                             loss.ptr<double>(), load, coef);
    NMOE_CUDA_LAUNCHED(op);
    if (!dgates.defined() || N * K == 0) return;
    aux_grad_kernel<T><<<grid_for(N * K), kThreads, 0, stream()>>>(idx.ptr<int32_t>(), load, coef,
                                                                   N * K, E, dgates.ptr<T>());
    NMOE_CUDA_LAUNCHED(op);
  };
  if (dgates.defined())
    dispatch_float(op, {{"gates", gates}, {"dgates", dgates}}, run);
  else
    dispatch_float(op, {{"gates", gates}}, run);
}

void CudaBackend::router_bias_update(const Tensor& bias, const Tensor& counts, double gamma) {
  const char* op = "router_bias_update";
  ops::check_router_bias_update(bias, counts);
  check_fits_i32(op, "E", bias.numel());
  dispatch_float(op, {{"bias", bias}}, [&](auto tag) {
    using T = decltype(tag);
    bias_update_kernel<T><<<1, kThreads, 0, stream()>>>(bias.ptr<T>(), counts.ptr<int32_t>(),
                                                        int(bias.numel()), gamma,
                                                        device_error_flag());
    NMOE_CUDA_LAUNCHED(op);
  });
}

}  // namespace nmoe
