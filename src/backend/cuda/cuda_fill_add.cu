// fill (every dtype), dtype conversion and the elementwise add.
#include <cmath>
#include <cstring>
#include <limits>

#include "backend/cuda/cuda_common.cuh"

namespace nmoe {

using namespace cuda;

namespace {

// Round-to-nearest-even float -> bfloat16 bits (same as the CPU backend).
uint16_t to_bf16_bits(double value) {
  const float f = static_cast<float>(value);
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if (std::isnan(f)) return 0x7FC0;
  bits += 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

template <class I>
I to_integer(double value) {
  const double lo = static_cast<double>(std::numeric_limits<I>::min()) - 1.0;
  const double hi = static_cast<double>(std::numeric_limits<I>::max()) + 1.0;
  NMOE_CHECK(std::isfinite(value) && value > lo && value < hi, "fill: ", value,
             " is out of range for the integer dtype");
  return static_cast<I>(value);
}

template <class U>
__global__ void fill_kernel(U* p, int64_t n, U value) {
  NMOE_GRID_STRIDE(i, n) p[i] = value;
}

// 16 bytes per thread: the element pattern repeated.
__global__ void fill16_kernel(uint4* p, int64_t n, uint4 value) {
  NMOE_GRID_STRIDE(i, n) p[i] = value;
}

// Writes the bit pattern `value` (of the element's width) into every element.
// From a 16-byte aligned start: whole 16-byte vectors, then the elements left.
template <class U, class V>
void fill_bits(CudaBackend& be, const Tensor& t, V value) {
  U bits;
  static_assert(sizeof(U) == sizeof(V));
  std::memcpy(&bits, &value, sizeof(U));
  const int64_t n = t.numel();
  if (n == 0) return;
  if (bits == U(0)) {
    NMOE_CUDA_CHECK("fill", cudaMemsetAsync(t.data, 0, t.nbytes(), be.stream()));
    return;
  }
  constexpr int64_t per = 16 / sizeof(U);
  int64_t done = 0;
  if (is_aligned16(t.data) && n >= per) {
    unsigned char rep[16];
    for (int64_t i = 0; i < per; ++i) std::memcpy(rep + i * sizeof(U), &bits, sizeof(U));
    uint4 v;
    std::memcpy(&v, rep, 16);
    const int64_t vecs = n / per;
    fill16_kernel<<<grid_for(vecs), kThreads, 0, be.stream()>>>(static_cast<uint4*>(t.data), vecs, v);
    NMOE_CUDA_LAUNCHED("fill");
    done = vecs * per;
  }
  if (done < n) {
    fill_kernel<U><<<grid_for(n - done), kThreads, 0, be.stream()>>>(static_cast<U*>(t.data) + done,
                                                                     n - done, bits);
    NMOE_CUDA_LAUNCHED("fill");
  }
}

// Round to nearest even in every narrowing direction.
__device__ __forceinline__ void convert_one(float& d, double s) { d = static_cast<float>(s); }
__device__ __forceinline__ void convert_one(double& d, float s) { d = s; }
__device__ __forceinline__ void convert_one(__nv_bfloat16& d, float s) { d = __float2bfloat16(s); }
__device__ __forceinline__ void convert_one(__nv_bfloat16& d, double s) { d = __double2bfloat16(s); }
__device__ __forceinline__ void convert_one(float& d, __nv_bfloat16 s) { d = __bfloat162float(s); }
__device__ __forceinline__ void convert_one(double& d, __nv_bfloat16 s) { d = __bfloat162float(s); }

template <class D, class S>
__global__ void convert_kernel(D* dst, const S* src, int64_t n) {
  NMOE_GRID_STRIDE(i, n) convert_one(dst[i], src[i]);
}

// 8 elements per thread (16 to 64 bytes each side, in 16-byte vectors);
// the same convert_one per element.
template <class D, class S>
__global__ void convert8_kernel(D* dst, const S* src, int64_t n8) {
  constexpr int kSrc = 8 * sizeof(S) / 16, kDst = 8 * sizeof(D) / 16;
  NMOE_GRID_STRIDE(i, n8) {
    uint4 sv[kSrc], dv[kDst];
    const uint4* sp = reinterpret_cast<const uint4*>(src + i * 8);
#pragma unroll
    for (int j = 0; j < kSrc; ++j) sv[j] = sp[j];
    S s[8];
    D d[8];
    memcpy(s, sv, sizeof(s));
#pragma unroll
    for (int k = 0; k < 8; ++k) convert_one(d[k], s[k]);
    memcpy(dv, d, sizeof(d));
    uint4* dp = reinterpret_cast<uint4*>(dst + i * 8);
#pragma unroll
    for (int j = 0; j < kDst; ++j) dp[j] = dv[j];
  }
}

// Vectors of 8 elements when both sides start 16-byte aligned, the rest (or
// all of it, otherwise) element by element.
template <class D, class S>
void launch_convert(cudaStream_t stream, const Tensor& dst, const Tensor& src) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  int64_t done = 0;
  if (is_aligned16(dst.data) && is_aligned16(src.data) && n >= 8) {
    const int64_t n8 = n / 8;
    convert8_kernel<D, S><<<grid_for(n8), kThreads, 0, stream>>>(
        static_cast<D*>(dst.data), static_cast<const S*>(src.data), n8);
    NMOE_CUDA_LAUNCHED("convert");
    done = n8 * 8;
  }
  if (done < n) {
    convert_kernel<D, S><<<grid_for(n - done), kThreads, 0, stream>>>(
        static_cast<D*>(dst.data) + done, static_cast<const S*>(src.data) + done, n - done);
    NMOE_CUDA_LAUNCHED("convert");
  }
}

template <class T>
__global__ void add_kernel(T* out, const T* a, const T* b, float alpha, int64_t n) {
  NMOE_GRID_STRIDE(i, n) out[i] = from_f32<T>(fmaf(alpha, to_f32(b[i]), to_f32(a[i])));
}

}  // namespace

void CudaBackend::fill(const Tensor& t, double value) {
  check_data("fill", "t", t);
  switch (t.dtype) {
    case DType::F32: return fill_bits<uint32_t>(*this, t, static_cast<float>(value));
    case DType::F64: return fill_bits<uint64_t>(*this, t, value);
    case DType::BF16: return fill_bits<uint16_t>(*this, t, to_bf16_bits(value));
    case DType::I32: return fill_bits<uint32_t>(*this, t, to_integer<int32_t>(value));
    case DType::I64: return fill_bits<uint64_t>(*this, t, to_integer<int64_t>(value));
    case DType::U8: return fill_bits<uint8_t>(*this, t, to_integer<uint8_t>(value));
    case DType::U16: return fill_bits<uint16_t>(*this, t, to_integer<uint16_t>(value));
    case DType::U32: return fill_bits<uint32_t>(*this, t, to_integer<uint32_t>(value));
  }
}

void CudaBackend::convert(const Tensor& dst, const Tensor& src) {
  if (dst.dtype == src.dtype) return copy(dst, src);
  NMOE_CHECK(dst.numel() == src.numel(), "convert: element counts differ (dst ", dst.shape.str(),
             ", src ", src.shape.str(), ")");
  check_data("convert", "dst", dst);
  check_data("convert", "src", src);
  using B16 = __nv_bfloat16;
  const DType d = dst.dtype, s = src.dtype;
  if (d == DType::F32 && s == DType::F64) return launch_convert<float, double>(stream(), dst, src);
  if (d == DType::F64 && s == DType::F32) return launch_convert<double, float>(stream(), dst, src);
  if (d == DType::BF16 && s == DType::F32) return launch_convert<B16, float>(stream(), dst, src);
  if (d == DType::BF16 && s == DType::F64) return launch_convert<B16, double>(stream(), dst, src);
  if (d == DType::F32 && s == DType::BF16) return launch_convert<float, B16>(stream(), dst, src);
  if (d == DType::F64 && s == DType::BF16) return launch_convert<double, B16>(stream(), dst, src);
  fail("convert: the CUDA backend converts among F32, F64 and BF16, not ", dtype_name(s), " to ",
       dtype_name(d));
}

void CudaBackend::add(const Tensor& out, const Tensor& a, const Tensor& b, double alpha) {
  const char* op = "add";
  ops::check_add(out, a, b);
  dispatch_act(op, {{"out", out}, {"a", a}, {"b", b}}, {}, [&](auto tag) {
    using T = decltype(tag);
    const int64_t n = out.numel();
    if (n == 0) return;
    add_kernel<T><<<grid_for(n), kThreads, 0, stream()>>>(
        out.ptr<T>(), a.ptr<T>(), b.ptr<T>(), static_cast<float>(alpha), n);
    NMOE_CUDA_LAUNCHED(op);
  });
}

}  // namespace nmoe
