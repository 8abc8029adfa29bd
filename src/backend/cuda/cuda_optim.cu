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

// Stage 1 from 16-byte chunks (x 16-byte aligned): chunk c holds elements
// [c * kVec<T>, (c + 1) * kVec<T>); the chunks past `chunks` and the tail
// elements [tail, n) go to the scalar loop. Each block's set of elements, and
// the order it adds them in, depend only on n.
template <class T>
__global__ void sumsq_partial_vec_kernel(const T* x, int64_t n, double* partial) {
  __shared__ double red[32];
  constexpr int V = kVec<T>;
  const int64_t chunks = n / V;
  double acc = 0;
  NMOE_GRID_STRIDE(c, chunks) {
    float f[V];
    unpack16<T>(reinterpret_cast<const uint4*>(x)[c], f);
#pragma unroll
    for (int k = 0; k < V; ++k) acc += double(f[k]) * f[k];
  }
  for (int64_t i = chunks * V + blockIdx.x * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
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

__device__ __forceinline__ float adamw_clip(const AdamCoef& c, const double* grad_norm_sq) {
  float clip = 1.f;
  if (c.max_norm > 0) clip = float(fmin(1.0, c.max_norm / (sqrt(grad_norm_sq[0]) + 1e-6)));
  return clip;
}

// One element: m, v updated in place, the new parameter returned. Shared by
// every AdamW kernel, and written with explicitly rounded operations (which
// the compiler never contracts into FMAs differently per kernel), so fused or
// not, from F32 or BF16 gradients, they compute the same bits.
__device__ __forceinline__ float adamw_element(float param, float grad, float& m, float& v,
                                               const AdamCoef& c, float clip) {
  const float g = __fmul_rn(grad, clip);
  const float m1 = __fadd_rn(__fmul_rn(c.b1, m), __fmul_rn(1.f - c.b1, g));
  const float v1 = __fadd_rn(__fmul_rn(c.b2, v), __fmul_rn(__fmul_rn(1.f - c.b2, g), g));
  const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(v1), c.inv_sqrt_bc2), c.eps);
  const float p = __fsub_rn(__fmul_rn(param, c.decay), __fdiv_rn(__fmul_rn(c.step_size, m1), denom));
  m = m1;
  v = v1;
  return p;
}

// Gradients may be stored in BF16 (expert_grad_dtype) while the rest is F32.
template <class T, class G>
__global__ void adamw_kernel(T* param, const G* grad, T* m, T* v, int64_t n, AdamCoef c,
                             const double* grad_norm_sq) {
  const float clip = adamw_clip(c, grad_norm_sq);
  NMOE_GRID_STRIDE(i, n) {
    float m1 = to_f32(m[i]), v1 = to_f32(v[i]);
    const float p = adamw_element(to_f32(param[i]), to_f32(grad[i]), m1, v1, c, clip);
    m[i] = from_f32<T>(m1);
    v[i] = from_f32<T>(v1);
    param[i] = from_f32<T>(p);
  }
}

// Four consecutive gradients: one 16-byte (F32) or 8-byte (BF16) load.
__device__ __forceinline__ float4 load_grad4(const float* g, int64_t i) {
  return reinterpret_cast<const float4*>(g)[i];
}
__device__ __forceinline__ float4 load_grad4(const __nv_bfloat16* g, int64_t i) {
  const uint2 u = reinterpret_cast<const uint2*>(g)[i];
  const __nv_bfloat162 lo = *reinterpret_cast<const __nv_bfloat162*>(&u.x);
  const __nv_bfloat162 hi = *reinterpret_cast<const __nv_bfloat162*>(&u.y);
  return make_float4(__low2float(lo), __high2float(lo), __low2float(hi), __high2float(hi));
}

// AdamW on fp32 weights that also writes their bf16 copy (as convert rounds).
// Element by element from `first` (any alignment) ...
template <class G>
__global__ void adamw_copy_kernel(float* param, const G* grad, float* m, float* v,
                                  __nv_bfloat16* copy, int64_t first, int64_t n, AdamCoef c,
                                  const double* grad_norm_sq) {
  const float clip = adamw_clip(c, grad_norm_sq);
  NMOE_GRID_STRIDE(j, n - first) {
    const int64_t i = first + j;
    float m1 = m[i], v1 = v[i];
    const float p = adamw_element(param[i], to_f32(grad[i]), m1, v1, c, clip);
    m[i] = m1;
    v[i] = v1;
    param[i] = p;
    copy[i] = __float2bfloat16(p);
  }
}

// ... or 4 elements per thread over the first 4 * n4: 16-byte loads and
// stores of the fp32 buffers, 8 bytes of the copy and of BF16 gradients
// (16- and 8-byte aligned).
template <class G>
__global__ void adamw_copy4_kernel(float4* param, const G* grad, float4* m, float4* v,
                                   uint2* copy, int64_t n4, AdamCoef c, const double* grad_norm_sq) {
  const float clip = adamw_clip(c, grad_norm_sq);
  NMOE_GRID_STRIDE(i, n4) {
    const float4 p4 = param[i], g4 = load_grad4(grad, i);
    float4 m4 = m[i], v4 = v[i];
    float4 o;
    o.x = adamw_element(p4.x, g4.x, m4.x, v4.x, c, clip);
    o.y = adamw_element(p4.y, g4.y, m4.y, v4.y, c, clip);
    o.z = adamw_element(p4.z, g4.z, m4.z, v4.z, c, clip);
    o.w = adamw_element(p4.w, g4.w, m4.w, v4.w, c, clip);
    m[i] = m4;
    v[i] = v4;
    param[i] = o;
    const float f[4] = {o.x, o.y, o.z, o.w};
    uint32_t w[2];
#pragma unroll
    for (int j = 0; j < 2; ++j)
      w[j] = uint32_t(__bfloat16_as_ushort(__float2bfloat16(f[2 * j]))) |
             (uint32_t(__bfloat16_as_ushort(__float2bfloat16(f[2 * j + 1]))) << 16);
    copy[i] = make_uint2(w[0], w[1]);
  }
}

AdamCoef adam_coef(const AdamWParams& p) {
  const double t = static_cast<double>(p.step);
  AdamCoef c;
  c.decay = static_cast<float>(1.0 - p.lr * p.weight_decay);
  c.b1 = static_cast<float>(p.beta1);
  c.b2 = static_cast<float>(p.beta2);
  c.eps = static_cast<float>(p.eps);
  c.step_size = static_cast<float>(p.lr / (1.0 - std::pow(p.beta1, t)));
  c.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(1.0 - std::pow(p.beta2, t)));
  c.max_norm = p.max_norm > 0 ? p.max_norm : 0.0;
  return c;
}

}  // namespace

void CudaBackend::sum_squares(const Tensor& x, const Tensor& out) {
  const char* op = "sum_squares";
  ops::check_sum_squares(x, out);
  // F32 everywhere; BF16 for gradients stored in BF16 (expert_grad_dtype).
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const int64_t n = x.numel();
    if (n == 0) return;
    const int blocks = static_cast<int>(std::min<int64_t>(
        kMaxPartials, (n + kThreads * kElemsPerThread - 1) / (kThreads * kElemsPerThread)));
    double* partial =
        static_cast<double*>(scratch(Scratch::Small, kMaxPartials * sizeof(double)));
    if (is_aligned16(x.data))
      sumsq_partial_vec_kernel<T><<<blocks, kThreads, 0, stream()>>>(x.ptr<T>(), n, partial);
    else
      sumsq_partial_kernel<T><<<blocks, kThreads, 0, stream()>>>(x.ptr<T>(), n, partial);
    NMOE_CUDA_LAUNCHED(op);
    sumsq_final_kernel<<<1, kMaxPartials, 0, stream()>>>(partial, blocks, out.ptr<double>());
    NMOE_CUDA_LAUNCHED(op);
  };
  if (x.dtype == DType::BF16) {
    check_data(op, "x", x);
    run(__nv_bfloat16{});
  } else {
    dispatch_float(op, {{"x", x}}, run);
  }
}

void CudaBackend::adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                        const AdamWParams& p, const Tensor& grad_norm_sq) {
  const char* op = "adamw";
  ops::check_adamw(param, grad, m, v, p, grad_norm_sq);
  const int64_t n = param.numel();
  const AdamCoef c = adam_coef(p);
  const double* gns = p.max_norm > 0 ? grad_norm_sq.ptr<double>() : nullptr;
  if (grad.dtype == DType::BF16) {  // BF16 gradients of F32 weights
    common_float_dtype(op, {{"param", param}, {"m", m}, {"v", v}});
    check_data(op, "grad", grad);
    if (n == 0) return;
    adamw_kernel<float, __nv_bfloat16><<<grid_for(n), kThreads, 0, stream()>>>(
        param.ptr<float>(), grad.ptr<__nv_bfloat16>(), m.ptr<float>(), v.ptr<float>(), n, c, gns);
    NMOE_CUDA_LAUNCHED(op);
    return;
  }
  dispatch_float(op, {{"param", param}, {"grad", grad}, {"m", m}, {"v", v}}, [&](auto tag) {
    using T = decltype(tag);
    if (n == 0) return;
    adamw_kernel<T, T><<<grid_for(n), kThreads, 0, stream()>>>(param.ptr<T>(), grad.ptr<T>(), m.ptr<T>(),
                                                                v.ptr<T>(), n, c, gns);
    NMOE_CUDA_LAUNCHED(op);
  });
}

void CudaBackend::adamw_copy(const Tensor& param, const Tensor& grad, const Tensor& m,
                             const Tensor& v, const AdamWParams& p, const Tensor& grad_norm_sq,
                             const Tensor& param_copy) {
  const char* op = "adamw_copy";
  const bool bf16_grad = grad.dtype == DType::BF16;
  const bool fused = param.dtype == DType::F32 && (grad.dtype == DType::F32 || bf16_grad) &&
                     m.dtype == DType::F32 && v.dtype == DType::F32 &&
                     param_copy.dtype == DType::BF16;
  if (!fused) return Backend::adamw_copy(param, grad, m, v, p, grad_norm_sq, param_copy);
  ops::check_adamw(param, grad, m, v, p, grad_norm_sq);
  const int64_t n = param.numel();
  check_data(op, "param_copy", param_copy);
  NMOE_CHECK(param_copy.numel() == n, op, ": param_copy has ", param_copy.numel(),
             " elements, param ", n);
  if (n == 0) return;
  const AdamCoef c = adam_coef(p);
  const double* gns = p.max_norm > 0 ? grad_norm_sq.ptr<double>() : nullptr;
  auto* copy = param_copy.ptr<__nv_bfloat16>();
  auto run = [&](auto grad_tag) {
    using G = decltype(grad_tag);
    const G* g = grad.ptr<G>();
    const uintptr_t grad_align = sizeof(G) == 4 ? 15u : 7u;
    int64_t done = 0;
    if (is_aligned16(param.data) && (reinterpret_cast<uintptr_t>(g) & grad_align) == 0 &&
        is_aligned16(m.data) && is_aligned16(v.data) && (reinterpret_cast<uintptr_t>(copy) & 7u) == 0 &&
        n >= 4) {
      const int64_t n4 = n / 4;
      adamw_copy4_kernel<G><<<grid_for(n4), kThreads, 0, stream()>>>(
          static_cast<float4*>(param.data), g, static_cast<float4*>(m.data), static_cast<float4*>(v.data),
          reinterpret_cast<uint2*>(copy), n4, c, gns);
      NMOE_CUDA_LAUNCHED(op);
      done = n4 * 4;
    }
    if (done < n) {
      adamw_copy_kernel<G><<<grid_for(n - done), kThreads, 0, stream()>>>(
          param.ptr<float>(), g, m.ptr<float>(), v.ptr<float>(), copy, done, n, c, gns);
      NMOE_CUDA_LAUNCHED(op);
    }
  };
  if (bf16_grad) run(__nv_bfloat16{});
  else run(float{});
}

}  // namespace nmoe
