// Sigmoid top-k router: scores, expert choice, normalized gates, and backward.
// One warp per token row. The sigmoid is evaluated in fp64 (as on the CPU) so
// the expert choice, which compares scores exactly, matches the reference.
#include <cfloat>
#include <climits>

#include "backend/cuda/cuda_common.cuh"

namespace nmoe {

using namespace cuda;

namespace {

constexpr double kMinGateSum = 1e-12;
constexpr int kRowsPerBlock = 8;  // warps per block

// Ranking key of an expert: NaN ranks last.
__device__ __forceinline__ double rank_key(double k) { return isnan(k) ? -DBL_MAX * 2 : k; }

// True if (ka, a) comes before (kb, b): larger key first, ties to the lower id.
__device__ __forceinline__ bool before(double ka, int a, double kb, int b) {
  return ka > kb || (ka == kb && a < b);
}

template <class T>
__global__ void router_fwd_kernel(const T* logits, const T* bias, T* scores, int32_t* idx,
                                  T* gates, int32_t* counts, int64_t N, int E, int K,
                                  double route_scale, double scaling, bool given, int* err) {
  const int64_t n = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (n >= N) return;
  T* score = scores + n * E;
  for (int e = lane; e < E; e += 32) {
    const double x = route_scale * double(to_f32(logits[n * E + e]));
    score[e] = from_f32<T>(float(1.0 / (1.0 + exp(-x))));
  }
  int32_t* id = idx + n * K;
  if (!given) {
    // k-th pick: the first expert, in (key desc, id asc) order, after the (k-1)-th.
    double prev_key = INFINITY;
    int prev_id = -1;
    for (int k = 0; k < K; ++k) {
      double best_key = -INFINITY;
      int best = INT_MAX;
      for (int e = lane; e < E; e += 32) {  // each lane reads back its own scores
        const double key = rank_key(double(to_f32(score[e])) + double(to_f32(bias[e])));
        if (before(prev_key, prev_id, key, e) && before(key, e, best_key, best)) {
          best_key = key;
          best = e;
        }
      }
      for (int o = 16; o > 0; o >>= 1) {
        const double ok = __shfl_xor_sync(0xffffffffu, best_key, o);
        const int oi = __shfl_xor_sync(0xffffffffu, best, o);
        if (before(ok, oi, best_key, best)) {
          best_key = ok;
          best = oi;
        }
      }
      if (lane == 0) id[k] = best;
      prev_key = best_key;
      prev_id = best;
    }
  }
  __syncwarp();
  if (lane != 0) return;
  bool ok = true;
  for (int k = 0; k < K; ++k) {
    const int e = id[k];
    if (e < 0 || e >= E) {
      report_error(err, kErrExpertRange);
      ok = false;
      continue;
    }
    for (int j = 0; j < k; ++j)
      if (id[j] == e) {
        report_error(err, kErrExpertRepeated);
        ok = false;
      }
  }
  if (!ok) return;
  double sum = 0;
  for (int k = 0; k < K; ++k) sum += double(to_f32(score[id[k]]));
  const double norm = scaling / fmax(sum, kMinGateSum);
  for (int k = 0; k < K; ++k) {
    gates[n * K + k] = from_f32<T>(float(double(to_f32(score[id[k]])) * norm));
    atomicAdd(&counts[id[k]], 1);  // integer: order-independent
  }
}

// g_k = rsf s_k / S, S = sum_k s_k: dL/ds_j = rsf (dg_j / S - sum_k dg_k s_k / S^2),
// constant normalizer when S is clamped; ds/dlogit = route_scale s (1 - s).
template <class T>
__global__ void router_bwd_kernel(const float* dgates, const float* scores, const int32_t* idx,
                                  T* dlogits, int64_t N, int E, int K, double route_scale,
                                  double scaling, int* err) {
  const int64_t n = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (n >= N) return;
  T* out = dlogits + n * E;
  for (int e = lane; e < E; e += 32) out[e] = from_f32<T>(0.f);
  __syncwarp();
  if (lane != 0) return;
  const float* score = scores + n * E;
  const int32_t* id = idx + n * K;
  double sum = 0, weighted = 0;
  for (int k = 0; k < K; ++k) {
    if (id[k] < 0 || id[k] >= E) {
      report_error(err, kErrExpertRange);
      return;
    }
    const double s = to_f32(score[id[k]]);
    sum += s;
    weighted += double(to_f32(dgates[n * K + k])) * s;
  }
  const bool clamped = sum < kMinGateSum;
  const double denom = clamped ? kMinGateSum : sum;
  for (int k = 0; k < K; ++k) {
    const double sk = to_f32(score[id[k]]);
    double ds = scaling * double(to_f32(dgates[n * K + k])) / denom;
    if (!clamped) ds -= scaling * weighted / (sum * sum);
    out[id[k]] = from_f32<T>(float(double(to_f32(out[id[k]])) + ds * sk * (1.0 - sk) * route_scale));
  }
}

using ops::RouterShape;

unsigned row_blocks(int64_t N) { return unsigned((N + kRowsPerBlock - 1) / kRowsPerBlock); }

}  // namespace

void CudaBackend::router_fwd(const Tensor& logits, const Tensor& bias, const RouterParams& p,
                             const Tensor& scores, const Tensor& idx, const Tensor& gates,
                             const Tensor& counts) {
  const char* op = "router_fwd";
  const RouterShape s = ops::check_router_fwd(logits, bias, p, scores, idx, gates, counts);
  check_fits_i32(op, "E", s.E);
  dispatch_float(op, {{"logits", logits}, {"bias", bias}, {"scores", scores}, {"gates", gates}},
                 [&](auto tag) {
    using T = decltype(tag);
    if (s.N == 0) return;
    router_fwd_kernel<T><<<row_blocks(s.N), kRowsPerBlock * 32, 0, stream()>>>(
        logits.ptr<T>(), bias.ptr<T>(), scores.ptr<T>(), idx.ptr<int32_t>(), gates.ptr<T>(),
        counts.ptr<int32_t>(), s.N, int(s.E), int(s.K), p.route_scale, p.routed_scaling_factor,
        p.use_given_indices, device_error_flag());
    NMOE_CUDA_LAUNCHED(op);
  });
}

void CudaBackend::router_bwd(const Tensor& dgates, const Tensor& scores, const Tensor& idx,
                             const RouterParams& p, const Tensor& dlogits) {
  const char* op = "router_bwd";
  const RouterShape s = ops::check_router_bwd(dgates, scores, idx, p, dlogits);
  check_fits_i32(op, "E", s.E);
  // dlogits is an activation gradient (F32 or BF16); dgates and scores are F32.
  dispatch_act(op, {{"dlogits", dlogits}}, {{"dgates", dgates}, {"scores", scores}},
               [&](auto tag) {
    using T = decltype(tag);
    if (s.N == 0) return;
    router_bwd_kernel<T><<<row_blocks(s.N), kRowsPerBlock * 32, 0, stream()>>>(
        dgates.ptr<float>(), scores.ptr<float>(), idx.ptr<int32_t>(), dlogits.ptr<T>(), s.N, int(s.E),
        int(s.K), p.route_scale, p.routed_scaling_factor, device_error_flag());
    NMOE_CUDA_LAUNCHED(op);
  });
}

}  // namespace nmoe
