// Optimizer ops: fixed-shape sum of squares (for grad-norm clipping) and AdamW.
#include <cmath>

#include "backend/cuda/cuda_common.cuh"

namespace nmoe {

using namespace cuda;

namespace {

constexpr int kMaxPartials = 1024;
constexpr int64_t kElemsPerThread = 8;

// Stage 1: block b's partial sum of x^2 (fp64) over a grid-stride range. The
// grid size depends only on n, so the reduction tree is fixed.
template <class T>
__global__ void sumsq_partial_kernel(const T* x, int64_t n, double* partial) {
  __shared__ double red[32];
  double acc = 0;
  NMOE_GRID_STRIDE(i, n) {
    const double v = to_f32(x[i]);
    acc += v * v;
  }
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// Stage 2: out += sum of the partials (one block of kMaxPartials threads).
__global__ void sumsq_final_kernel(const double* partial, int blocks, double* out) {
  __shared__ double red[32];
  double acc = threadIdx.x < blocks ? partial[threadIdx.x] : 0.0;
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) out[0] += acc;
}

struct AdamCoef {
  float decay, b1, b2, eps, step_size, inv_sqrt_bc2;
  double max_norm;  // > 0: clip by grad_norm_sq read on the device
};

template <class T>
__global__ void adamw_kernel(T* param, const T* grad, T* m, T* v, int64_t n, AdamCoef c,
                             const double* grad_norm_sq) {
  float clip = 1.f;
  if (c.max_norm > 0) clip = float(fmin(1.0, c.max_norm / (sqrt(grad_norm_sq[0]) + 1e-6)));
  NMOE_GRID_STRIDE(i, n) {
    const float g = to_f32(grad[i]) * clip;
    const float m1 = c.b1 * to_f32(m[i]) + (1.f - c.b1) * g;
    const float v1 = c.b2 * to_f32(v[i]) + (1.f - c.b2) * g * g;
    float p = to_f32(param[i]) * c.decay;
    p -= c.step_size * m1 / (sqrtf(v1) * c.inv_sqrt_bc2 + c.eps);
    m[i] = from_f32<T>(m1);
    v[i] = from_f32<T>(v1);
    param[i] = from_f32<T>(p);
  }
}

}  // namespace

void CudaBackend::sum_squares(const Tensor& x, const Tensor& out) {
  const char* op = "sum_squares";
  ops::check_sum_squares(x, out);
  dispatch_float(op, {{"x", x}}, [&](auto tag) {
    using T = decltype(tag);
    const int64_t n = x.numel();
    if (n == 0) return;
    const int blocks = static_cast<int>(std::min<int64_t>(
        kMaxPartials, (n + kThreads * kElemsPerThread - 1) / (kThreads * kElemsPerThread)));
    double* partial =
        static_cast<double*>(scratch(Scratch::Small, kMaxPartials * sizeof(double)));
    sumsq_partial_kernel<T><<<blocks, kThreads, 0, stream()>>>(x.ptr<T>(), n, partial);
    NMOE_CUDA_LAUNCHED(op);
    sumsq_final_kernel<<<1, kMaxPartials, 0, stream()>>>(partial, blocks, out.ptr<double>());
    NMOE_CUDA_LAUNCHED(op);
  });
}

void CudaBackend::adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                        const AdamWParams& p, const Tensor& grad_norm_sq) {
  const char* op = "adamw";
  ops::check_adamw(param, grad, m, v, p, grad_norm_sq);
  const int64_t n = param.numel();
  const double t = static_cast<double>(p.step);
  AdamCoef c;
  c.decay = static_cast<float>(1.0 - p.lr * p.weight_decay);
  c.b1 = static_cast<float>(p.beta1);
  c.b2 = static_cast<float>(p.beta2);
  c.eps = static_cast<float>(p.eps);
  c.step_size = static_cast<float>(p.lr / (1.0 - std::pow(p.beta1, t)));
  c.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(1.0 - std::pow(p.beta2, t)));
  c.max_norm = p.max_norm > 0 ? p.max_norm : 0.0;
  dispatch_float(op, {{"param", param}, {"grad", grad}, {"m", m}, {"v", v}}, [&](auto tag) {
    using T = decltype(tag);
    if (n == 0) return;
    adamw_kernel<T><<<grid_for(n), kThreads, 0, stream()>>>(
        param.ptr<T>(), grad.ptr<T>(), m.ptr<T>(), v.ptr<T>(), n, c,
        p.max_norm > 0 ? grad_norm_sq.ptr<double>() : nullptr);
    NMOE_CUDA_LAUNCHED(op);
  });
}

}  // namespace nmoe
