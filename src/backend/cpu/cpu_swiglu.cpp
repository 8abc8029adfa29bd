// SwiGLU: a = silu(h1) * h3 with h13 = [h1 | h3] along the last dim.
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"

namespace nmoe {

using namespace cpu;

namespace {

template <class T>
void swiglu_fwd_impl(const Tensor& h13, const Tensor& a, int64_t F) {
  parallel_for(a.rows(), 8 * F, [&](int64_t n) {
    const T* h1 = h13.ptr<T>() + n * 2 * F;
    const T* h3 = h1 + F;
    T* out = a.ptr<T>() + n * F;
    for (int64_t f = 0; f < F; ++f) {
      const double x = h1[f];
      out[f] = static_cast<T>(x * sigmoid(x) * h3[f]);
    }
  });
}

// With s = sigmoid(h1): dh3 = da h1 s, dh1 = da h3 s (1 + h1 (1 - s));
// optionally a = h1 s h3 again, as swiglu_fwd_impl forms it.
template <class T>
void swiglu_bwd_impl(const Tensor& da, const Tensor& h13, const Tensor& dh13, const Tensor& a, int64_t F) {
  parallel_for(da.rows(), 8 * F, [&](int64_t n) {
    const T* h1 = h13.ptr<T>() + n * 2 * F;
    const T* h3 = h1 + F;
    const T* g = da.ptr<T>() + n * F;
    T* dh1 = dh13.ptr<T>() + n * 2 * F;
    T* dh3 = dh1 + F;
    T* out = a.defined() ? a.ptr<T>() + n * F : nullptr;
    for (int64_t f = 0; f < F; ++f) {
      const double x = h1[f], s = sigmoid(x), up = h3[f], grad = g[f];
      if (out) out[f] = static_cast<T>(x * s * up);
      dh3[f] = static_cast<T>(grad * x * s);
      dh1[f] = static_cast<T>(grad * up * s * (1.0 + x * (1.0 - s)));
    }
  });
}

}  // namespace

void CpuBackend::swiglu_fwd(const Tensor& h13, const Tensor& a) {
  const char* op = "swiglu_fwd";
  const int64_t F = ops::check_swiglu_fwd(h13, a);
  dispatch_float(op, {{"h13", h13}, {"a", a}}, [&](auto tag) {
    swiglu_fwd_impl<decltype(tag)>(h13, a, F);
  });
}

void CpuBackend::swiglu_bwd(const Tensor& da, const Tensor& h13, const Tensor& dh13, const Tensor& a) {
  const char* op = "swiglu_bwd";
  const int64_t F = ops::check_swiglu_bwd(da, h13, dh13, a);
  dispatch_float(op, {{"da", da}, {"h13", h13}, {"dh13", dh13}}, [&](auto tag) {
    swiglu_bwd_impl<decltype(tag)>(da, h13, dh13, a, F);
  });
}

}  // namespace nmoe
