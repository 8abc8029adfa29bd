// Optimizer ops: fixed-order sum of squares (for grad-norm clipping) and AdamW.
#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"

namespace nmoe {

using namespace cpu;

namespace {

constexpr int64_t kAdamGrain = 1 << 14;

template <class T>
double sum_squares_impl(const Tensor& x) {
  const T* p = x.ptr<T>();
  return deterministic_sum(x.numel(), kReduceElems, [&](int64_t begin, int64_t end) {
    double s = 0;
    for (int64_t i = begin; i < end; ++i) s += static_cast<double>(p[i]) * p[i];
    return s;
  });
}

// Coefficients of one AdamW step that do not depend on the element.
struct AdamStep {
  double clip, decay, b1, b2, eps, step_size, sqrt_bc2;
};

AdamStep adam_step(const AdamWParams& p, const Tensor& grad_norm_sq) {
  AdamStep s;
  s.clip = 1.0;
  if (p.max_norm > 0)
    s.clip = std::min(1.0, p.max_norm / (std::sqrt(grad_norm_sq.ptr<double>()[0]) + 1e-6));
  s.decay = 1.0 - p.lr * p.weight_decay;
  s.b1 = p.beta1;
  s.b2 = p.beta2;
  s.eps = p.eps;
  const double t = static_cast<double>(p.step);
  s.step_size = p.lr / (1.0 - std::pow(p.beta1, t));
  s.sqrt_bc2 = std::sqrt(1.0 - std::pow(p.beta2, t));
  return s;
}

template <class T>
void adamw_impl(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                const AdamStep& s) {
  T* pp = param.ptr<T>();
  T* pm = m.ptr<T>();
  T* pv = v.ptr<T>();
  const T* pg = grad.ptr<T>();
  parallel_blocks(param.numel(), kAdamGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const double g = static_cast<double>(pg[i]) * s.clip;
      const double m1 = s.b1 * pm[i] + (1.0 - s.b1) * g;
      const double v1 = s.b2 * pv[i] + (1.0 - s.b2) * g * g;
      double p = static_cast<double>(pp[i]) * s.decay;
      p -= s.step_size * m1 / (std::sqrt(v1) / s.sqrt_bc2 + s.eps);
      pm[i] = static_cast<T>(m1);
      pv[i] = static_cast<T>(v1);
      pp[i] = static_cast<T>(p);
    }
  });
}

}  // namespace

void CpuBackend::sum_squares(const Tensor& x, const Tensor& out) {
  const char* op = "sum_squares";
  ops::check_sum_squares(x, out);
  dispatch_float(op, {{"x", x}}, [&](auto tag) {
    out.ptr<double>()[0] += sum_squares_impl<decltype(tag)>(x);
  });
}

void CpuBackend::adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                       const AdamWParams& p, const Tensor& grad_norm_sq) {
  const char* op = "adamw";
  ops::check_adamw(param, grad, m, v, p, grad_norm_sq);
  const AdamStep step = adam_step(p, grad_norm_sq);
  dispatch_float(op, {{"param", param}, {"grad", grad}, {"m", m}, {"v", v}}, [&](auto tag) {
    adamw_impl<decltype(tag)>(param, grad, m, v, step);
  });
}

}  // namespace nmoe
