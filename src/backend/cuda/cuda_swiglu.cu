// SwiGLU: a = silu(h1) * h3 with h13 = [h1 | h3] along the last dim.
#include "backend/cuda/cuda_common.cuh"

namespace nmoe {

using namespace cuda;

namespace {

__device__ __forceinline__ float sigmoidf(float x) { return 1.f / (1.f + expf(-x)); }

template <class T>
__global__ void swiglu_fwd_kernel(const T* h13, T* a, int64_t N, int64_t F) {
  NMOE_GRID_STRIDE(i, N * F) {
    const int64_t n = i / F, f = i % F;
    const float x = to_f32(h13[n * 2 * F + f]), up = to_f32(h13[n * 2 * F + F + f]);
    a[i] = from_f32<T>(x * sigmoidf(x) * up);
  }
}

// With s = sigmoid(h1): dh3 = da h1 s, dh1 = da h3 s (1 + h1 (1 - s)).
template <class T>
__global__ void swiglu_bwd_kernel(const T* da, const T* h13, T* dh13, int64_t N, int64_t F) {
  NMOE_GRID_STRIDE(i, N * F) {
    const int64_t n = i / F, f = i % F;
    const float x = to_f32(h13[n * 2 * F + f]), up = to_f32(h13[n * 2 * F + F + f]);
    const float s = sigmoidf(x), g = to_f32(da[i]);
    dh13[n * 2 * F + F + f] = from_f32<T>(g * x * s);
    dh13[n * 2 * F + f] = from_f32<T>(g * up * s * (1.f + x * (1.f - s)));
  }
}

int64_t gate_width(const char* op, const Tensor& h13) {
  NMOE_CHECK(h13.ndim() >= 1 && h13.cols() % 2 == 0, op,
             ": h13 must be [N, 2F] with an even last dim, got ", h13.shape.str());
  return h13.cols() / 2;
}

}  // namespace

void CudaBackend::swiglu_fwd(const Tensor& h13, const Tensor& a) {
  const char* op = "swiglu_fwd";
  const int64_t F = gate_width(op, h13), N = h13.rows();
  check_matrix(op, "h13", h13, N, 2 * F);
  check_matrix(op, "a", a, N, F);
  dispatch_act(op, {{"h13", h13}, {"a", a}}, {}, [&](auto tag) {
    using T = decltype(tag);
    if (N * F == 0) return;
    swiglu_fwd_kernel<T><<<grid_for(N * F), kThreads, 0, stream()>>>(h13.ptr<T>(), a.ptr<T>(), N, F);
    NMOE_CUDA_LAUNCHED(op);
  });
}

void CudaBackend::swiglu_bwd(const Tensor& da, const Tensor& h13, const Tensor& dh13) {
  const char* op = "swiglu_bwd";
  const int64_t F = gate_width(op, h13), N = h13.rows();
  check_matrix(op, "h13", h13, N, 2 * F);
  check_matrix(op, "da", da, N, F);
  check_matrix(op, "dh13", dh13, N, 2 * F);
  dispatch_act(op, {{"da", da}, {"h13", h13}, {"dh13", dh13}}, {}, [&](auto tag) {
    using T = decltype(tag);
    if (N * F == 0) return;
    swiglu_bwd_kernel<T><<<grid_for(N * F), kThreads, 0, stream()>>>(da.ptr<T>(), h13.ptr<T>(),
                                                                    dh13.ptr<T>(), N, F);
    NMOE_CUDA_LAUNCHED(op);
  });
}

}  // namespace nmoe
