// Rotary position embedding (half-split, GPT-NeoX) applied in place to q and k.
#include "backend/cuda/cuda_attention_common.cuh"

namespace nmoe {

using namespace cuda;

namespace {

// One thread per rotated pair: index = ((n * 2 + which) * H + h) * half + d,
// which = 0 for q, 1 for k. Pairs are (x[d], x[d + half]).
template <class T>
__global__ void rope_kernel(T* qkv, const float* cos, const float* sin, int64_t N, int64_t H,
                            int64_t half, int64_t T_, float sign) {
  const int64_t pairs = N * 2 * H * half;
  NMOE_GRID_STRIDE(i, pairs) {
    const int64_t d = i % half;
    const int64_t h = (i / half) % H;
    const int64_t which = (i / (half * H)) % 2;
    const int64_t n = i / (half * H * 2);
    T* x = qkv + n * 3 * H * 2 * half + which * H * 2 * half + h * 2 * half;
    const int64_t pos = n % T_;
    const float c = cos[pos * half + d], s = sign * sin[pos * half + d];
    const float x1 = to_f32(x[d]), x2 = to_f32(x[d + half]);
    x[d] = from_f32<T>(x1 * c - x2 * s);
    x[d + half] = from_f32<T>(x2 * c + x1 * s);
  }
}

}  // namespace

void CudaBackend::rope(const Tensor& qkv, const Tensor& cos, const Tensor& sin, int seq_len,
                       bool inverse) {
  const char* op = "rope";
  const QkvLayout L = ops::check_rope(qkv, cos, sin, seq_len);
  const int64_t half = L.Dh / 2;
  dispatch_act(op, {{"qkv", qkv}}, {{"cos", cos}, {"sin", sin}}, [&](auto tag) {
    using T = decltype(tag);
    const int64_t pairs = L.N * 2 * L.H * half;
    if (pairs == 0) return;
    rope_kernel<T><<<grid_for(pairs), kThreads, 0, stream()>>>(
        qkv.ptr<T>(), cos.ptr<float>(), sin.ptr<float>(), L.N, L.H, half, L.T, inverse ? -1.f : 1.f);
    NMOE_CUDA_LAUNCHED(op);
  });
}

}  // namespace nmoe
