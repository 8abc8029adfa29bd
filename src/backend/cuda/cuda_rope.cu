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

// Vector path: a warp per token; lane j over the token's (head, chunk) items,
// 2H heads (q, then k) of half / V chunks of V = kVec<T> pairs: 16 bytes of
// x[d..], 16 of x[d + half..] and V cos and sin values each. Same arithmetic
// as rope_kernel, element by element.
template <class T>
__global__ void __launch_bounds__(kThreads)
    rope_vec_kernel(T* qkv, const float* cos, const float* sin, int64_t N, int H, int half,
                    int64_t T_, float sign) {
  constexpr int V = kVec<T>;
  const int lane = threadIdx.x & 31;
  const int hc = half / V, items = 2 * H * hc;
  NMOE_WARP_STRIDE(n, N) {
    T* row = qkv + n * 3 * H * 2 * half;  // q heads, then k heads, 2 * half each
    const int64_t pos = n % T_;
    const float* cr = cos + pos * half;
    const float* sr = sin + pos * half;
    for (int j = lane; j < items; j += 32) {
      const int head = j / hc, d = (j - head * hc) * V;
      T* x = row + int64_t(head) * 2 * half + d;
      float x1[V], x2[V], c[V], s[V];
      unpack16<T>(load16(x), x1);
      unpack16<T>(load16(x + half), x2);
#pragma unroll
      for (int q = 0; q < V / 4; ++q) {
        unpack16<float>(load16(cr + d + 4 * q), c + 4 * q);
        unpack16<float>(load16(sr + d + 4 * q), s + 4 * q);
      }
      float o1[V], o2[V];
#pragma unroll
      for (int i = 0; i < V; ++i) {
        // The scalar kernel compiles to this: the difference of two products
        // (contracted, or not, alike), and x1 * s fused onto the rounded x2 * c.
        const float si = sign * s[i];
        o1[i] = x1[i] * c[i] - x2[i] * si;
        o2[i] = __fmaf_rn(x1[i], si, __fmul_rn(x2[i], c[i]));
      }
      store16(x, pack16<T>(o1));
      store16(x + half, pack16<T>(o2));
    }
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
    if (vec_ok<T>({half}, {qkv.data, cos.data, sin.data}) && 2 * L.H * half <= INT32_MAX)
      rope_vec_kernel<T><<<grid_for_warps(L.N), kThreads, 0, stream()>>>(
          qkv.ptr<T>(), cos.ptr<float>(), sin.ptr<float>(), L.N, int(L.H), int(half), L.T,
          inverse ? -1.f : 1.f);
    else
      rope_kernel<T><<<grid_for(pairs), kThreads, 0, stream()>>>(
          qkv.ptr<T>(), cos.ptr<float>(), sin.ptr<float>(), L.N, L.H, half, L.T,
          inverse ? -1.f : 1.f);
    NMOE_CUDA_LAUNCHED(op);
  });
}

}  // namespace nmoe
