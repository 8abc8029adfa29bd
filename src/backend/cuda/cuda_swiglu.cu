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

// With s = sigmoid(h1): dh3 = da h1 s, dh1 = da h3 s (1 + h1 (1 - s)); with a
// non-null a, also a = h1 s h3 (the forward's value: the same two products).
template <class T>
__global__ void swiglu_bwd_kernel(const T* da, const T* h13, T* dh13, T* a, int64_t N, int64_t F) {
  NMOE_GRID_STRIDE(i, N * F) {
    const int64_t n = i / F, f = i % F;
    const float x = to_f32(h13[n * 2 * F + f]), up = to_f32(h13[n * 2 * F + F + f]);
    const float s = sigmoidf(x), g = to_f32(da[i]);
    if (a) a[i] = from_f32<T>(x * s * up);
    dh13[n * 2 * F + F + f] = from_f32<T>(g * x * s);
    dh13[n * 2 * F + f] = from_f32<T>(g * up * s * (1.f + x * (1.f - s)));
  }
}

// Vector path: a thread per 16-byte chunk of a (kVec<T> elements; cf chunks
// per row, i < total = N * cf < 2^31), reading the matching chunks of h1 and
// h3. Same arithmetic as the scalar kernels, element by element. In-place use
// (dh13 aliasing h13) stays safe: a thread reads its chunks before writing them.
template <class T>
__global__ void swiglu_fwd_vec_kernel(const T* h13, T* a, uint32_t cf, uint32_t total) {
  constexpr int V = kVec<T>;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const uint32_t n = i / cf, c = i - n * cf;
    const uint4* row = reinterpret_cast<const uint4*>(h13) + uint64_t(n) * 2 * cf;
    float x[V], up[V], o[V];
    unpack16<T>(row[c], x);
    unpack16<T>(row[cf + c], up);
#pragma unroll
    for (int k = 0; k < V; ++k) o[k] = x[k] * sigmoidf(x[k]) * up[k];
    reinterpret_cast<uint4*>(a)[i] = pack16<T>(o);
  }
}

template <class T>
__global__ void swiglu_bwd_vec_kernel(const T* da, const T* h13, T* dh13, T* a, uint32_t cf,
                                      uint32_t total) {
  constexpr int V = kVec<T>;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const uint32_t n = i / cf, c = i - n * cf;
    const uint64_t r1 = uint64_t(n) * 2 * cf + c, r3 = r1 + cf;  // chunks of h1 and h3
    float x[V], up[V], g[V], d1[V], d3[V], o[V];
    unpack16<T>(reinterpret_cast<const uint4*>(h13)[r1], x);
    unpack16<T>(reinterpret_cast<const uint4*>(h13)[r3], up);
    unpack16<T>(reinterpret_cast<const uint4*>(da)[i], g);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float s = sigmoidf(x[k]);
      o[k] = x[k] * s * up[k];
      d3[k] = g[k] * x[k] * s;
      d1[k] = g[k] * up[k] * s * (1.f + x[k] * (1.f - s));
    }
    if (a) reinterpret_cast<uint4*>(a)[i] = pack16<T>(o);
    reinterpret_cast<uint4*>(dh13)[r3] = pack16<T>(d3);
    reinterpret_cast<uint4*>(dh13)[r1] = pack16<T>(d1);
  }
}

// Whether the vector kernels take [N, F] activations of element type T.
template <class T>
bool swiglu_vec(int64_t N, int64_t F, std::initializer_list<const void*> ptrs) {
  return vec_ok<T>({F}, ptrs) && N * (F / kVec<T>) <= INT32_MAX;
}

}  // namespace

void CudaBackend::swiglu_fwd(const Tensor& h13, const Tensor& a) {
  const char* op = "swiglu_fwd";
  const int64_t F = ops::check_swiglu_fwd(h13, a), N = h13.rows();
  dispatch_act(op, {{"h13", h13}, {"a", a}}, {}, [&](auto tag) {
    using T = decltype(tag);
    if (N * F == 0) return;
    if (swiglu_vec<T>(N, F, {h13.data, a.data})) {
      const int64_t total = N * (F / kVec<T>);
      swiglu_fwd_vec_kernel<T><<<grid_for(total), kThreads, 0, stream()>>>(
          h13.ptr<T>(), a.ptr<T>(), uint32_t(F / kVec<T>), uint32_t(total));
    } else {
      swiglu_fwd_kernel<T><<<grid_for(N * F), kThreads, 0, stream()>>>(h13.ptr<T>(), a.ptr<T>(),
                                                                      N, F);
    }
    NMOE_CUDA_LAUNCHED(op);
  });
}

void CudaBackend::swiglu_bwd(const Tensor& da, const Tensor& h13, const Tensor& dh13, const Tensor& a) {
  const char* op = "swiglu_bwd";
  const int64_t F = ops::check_swiglu_bwd(da, h13, dh13, a), N = h13.rows();
  dispatch_act(op, {{"da", da}, {"h13", h13}, {"dh13", dh13}}, {}, [&](auto tag) {
    using T = decltype(tag);
    if (N * F == 0) return;
    T* ap = a.defined() ? a.ptr<T>() : nullptr;
    if (swiglu_vec<T>(N, F, {da.data, h13.data, dh13.data, ap})) {
      const int64_t total = N * (F / kVec<T>);
      swiglu_bwd_vec_kernel<T><<<grid_for(total), kThreads, 0, stream()>>>(
          da.ptr<T>(), h13.ptr<T>(), dh13.ptr<T>(), ap, uint32_t(F / kVec<T>), uint32_t(total));
    } else {
      swiglu_bwd_kernel<T><<<grid_for(N * F), kThreads, 0, stream()>>>(da.ptr<T>(), h13.ptr<T>(),
                                                                      dh13.ptr<T>(), ap, N, F);
    }
    NMOE_CUDA_LAUNCHED(op);
  });
}

}  // namespace nmoe
