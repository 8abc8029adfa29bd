// Rotary position embedding (half-split, GPT-NeoX) applied in place to q and k.
#include "backend/cpu/cpu_attention.h"
#include "backend/cpu/cpu_backend.h"

namespace nmoe {

using namespace cpu;

namespace {

// Rotates pairs (x[d], x[d + half]) by the angle whose cos/sin are c[d], s[d].
template <class T>
void rotate_head(T* x, const T* c, const T* s, int64_t half, double sign) {
  for (int64_t d = 0; d < half; ++d) {
    const double x1 = x[d], x2 = x[d + half];
    const double cs = c[d], sn = sign * s[d];
    x[d] = static_cast<T>(x1 * cs - x2 * sn);
    x[d + half] = static_cast<T>(x2 * cs + x1 * sn);
  }
}

template <class T>
void rope_impl(const QkvLayout& L, const Tensor& qkv, const Tensor& cos, const Tensor& sin,
               bool inverse) {
  const int64_t half = L.Dh / 2;
  const double sign = inverse ? -1.0 : 1.0;
  T* base = qkv.ptr<T>();
  parallel_for(L.N, 2 * L.H * L.Dh, [&](int64_t n) {
    const int64_t pos = n % L.T;
    const T* c = cos.ptr<T>() + pos * half;
    const T* s = sin.ptr<T>() + pos * half;
    for (int64_t h = 0; h < L.H; ++h) {
      rotate_head(base + L.q(n, h), c, s, half, sign);
      rotate_head(base + L.k(n, h), c, s, half, sign);
    }
  });
}

}  // namespace

void CpuBackend::rope(const Tensor& qkv, const Tensor& cos, const Tensor& sin, int seq_len,
                      bool inverse) {
  const char* op = "rope";
  const QkvLayout L = ops::check_rope(qkv, cos, sin, seq_len);
  dispatch_float(op, {{"qkv", qkv}, {"cos", cos}, {"sin", sin}}, [&](auto tag) {
    rope_impl<decltype(tag)>(L, qkv, cos, sin, inverse);
  });
}

}  // namespace nmoe
