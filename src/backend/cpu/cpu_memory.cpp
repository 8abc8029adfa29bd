// CpuBackend construction and memory ops: allocation, copies, fill.
#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <limits>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"

namespace nmoe {

using namespace cpu;

namespace {

constexpr size_t kAlignment = 256;
constexpr int64_t kFillGrain = 1 << 16;

// Round-to-nearest-even float -> bfloat16 bits.
uint16_t to_bf16_bits(double value) {
  const float f = static_cast<float>(value);
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if (std::isnan(f)) return 0x7FC0;
  bits += 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

// Integer fills cast (truncate) the value; it must be in range, since an
// out-of-range float-to-int conversion is undefined behaviour.
template <class I>
I to_integer(double value) {
  const double lo = static_cast<double>(std::numeric_limits<I>::min()) - 1.0;
  const double hi = static_cast<double>(std::numeric_limits<I>::max()) + 1.0;
  NMOE_CHECK(std::isfinite(value) && value > lo && value < hi, "fill: ", value,
             " is out of range for the integer dtype");
  return static_cast<I>(value);
}

template <class T>
void fill_as(const Tensor& t, T value) {
  T* p = t.ptr<T>();
  parallel_blocks(t.numel(), kFillGrain, [&](int64_t begin, int64_t end) {
    std::fill(p + begin, p + end, value);
  });
}

}  // namespace

CpuBackend::CpuBackend(int threads) {
  omp_set_num_threads(threads > 0 ? threads : omp_get_num_procs());
}

CpuBackend::~CpuBackend() { std::free(scratch_); }

const char* CpuBackend::name() const { return "cpu"; }

void* CpuBackend::alloc(size_t bytes) {
  NMOE_CHECK(bytes <= SIZE_MAX - kAlignment, "cpu alloc: size ", bytes, " is too large");
  const size_t rounded = (std::max<size_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, rounded);
  NMOE_CHECK(p != nullptr, "cpu alloc: out of host memory allocating ", bytes, " bytes");
  return p;
}

void CpuBackend::free(void* p) { std::free(p); }

void* CpuBackend::scratch(size_t bytes) {
  if (bytes > scratch_bytes_) {
    std::free(scratch_);
    scratch_ = nullptr;
    scratch_bytes_ = 0;
    scratch_ = alloc(bytes);
    scratch_bytes_ = bytes;
  }
  return scratch_;
}

void CpuBackend::copy_from_host(const Tensor& dst, const void* src) {
  check_data("copy_from_host", "dst", dst);
  NMOE_CHECK(src != nullptr || dst.nbytes() == 0, "copy_from_host: source pointer is null");
  if (dst.nbytes() > 0) std::memcpy(dst.data, src, dst.nbytes());
}

void CpuBackend::copy_to_host(void* dst, const Tensor& src) {
  check_data("copy_to_host", "src", src);
  NMOE_CHECK(dst != nullptr || src.nbytes() == 0, "copy_to_host: destination pointer is null");
  if (src.nbytes() > 0) std::memcpy(dst, src.data, src.nbytes());
}

void CpuBackend::copy(const Tensor& dst, const Tensor& src) {
  NMOE_CHECK(dst.dtype == src.dtype, "copy: dtypes differ (dst ", dtype_name(dst.dtype), ", src ",
             dtype_name(src.dtype), ")");
  NMOE_CHECK(dst.numel() == src.numel(), "copy: element counts differ (dst ", dst.shape.str(),
             ", src ", src.shape.str(), ")");
  check_data("copy", "dst", dst);
  check_data("copy", "src", src);
  if (dst.nbytes() > 0) std::memmove(dst.data, src.data, dst.nbytes());
}

void CpuBackend::convert(const Tensor& dst, const Tensor& src) {
  if (dst.dtype == src.dtype) return copy(dst, src);
  NMOE_CHECK(dst.numel() == src.numel(), "convert: element counts differ (dst ", dst.shape.str(), ", src ",
             src.shape.str(), ")");
  check_data("convert", "dst", dst);
  check_data("convert", "src", src);
  const int64_t n = dst.numel();
  if (dst.dtype == DType::F32 && src.dtype == DType::F64) {
    for (int64_t i = 0; i < n; ++i) dst.ptr<float>()[i] = static_cast<float>(src.ptr<double>()[i]);
  } else if (dst.dtype == DType::F64 && src.dtype == DType::F32) {
    for (int64_t i = 0; i < n; ++i) dst.ptr<double>()[i] = src.ptr<float>()[i];
  } else {
    fail("convert: the CPU backend converts between F32 and F64 only, not ", dtype_name(src.dtype), " to ",
         dtype_name(dst.dtype));
  }
}

void CpuBackend::fill(const Tensor& t, double value) {
  check_data("fill", "t", t);
  switch (t.dtype) {
    case DType::F32: return fill_as<float>(t, static_cast<float>(value));
    case DType::F64: return fill_as<double>(t, value);
    case DType::BF16: return fill_as<uint16_t>(t, to_bf16_bits(value));
    case DType::I32: return fill_as<int32_t>(t, to_integer<int32_t>(value));
    case DType::I64: return fill_as<int64_t>(t, to_integer<int64_t>(value));
    case DType::U8: return fill_as<uint8_t>(t, to_integer<uint8_t>(value));
    case DType::U16: return fill_as<uint16_t>(t, to_integer<uint16_t>(value));
    case DType::U32: return fill_as<uint32_t>(t, to_integer<uint32_t>(value));
  }
}

void CpuBackend::synchronize() {}

std::unique_ptr<Backend> make_cpu_backend(int threads) {
  return std::make_unique<CpuBackend>(threads);
}

}  // namespace nmoe
