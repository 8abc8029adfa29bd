// Tensor: a typed, shaped, contiguous view of memory owned by a backend.
// Tensors never own memory; the Arena (memory plan) or a caller does.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/error.h"

namespace nmoe {

enum class DType : uint8_t { F32, F64, BF16, I32, I64, U8, U16, U32 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::U8: return 1;
    case DType::U16: return 2;
    case DType::U32: return 4;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::BF16: return "BF16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::U8: return "U8";
    case DType::U16: return "U16";
    case DType::U32: return "U32";
  }
  return "?";
}

inline bool is_float(DType t) { return t == DType::F32 || t == DType::F64 || t == DType::BF16; }

constexpr int kMaxDims = 4;

struct Shape {
  std::array<int64_t, kMaxDims> d{};
  int n = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) {
    NMOE_ASSERT(dims.size() <= kMaxDims);
    for (int64_t x : dims) d[n++] = x;
  }
  int64_t operator[](int i) const { return d[i < 0 ? i + n : i]; }
  int64_t numel() const {
    int64_t p = 1;
    for (int i = 0; i < n; ++i) p *= d[i];
    return p;
  }
  bool operator==(const Shape& o) const {
    if (n != o.n) return false;
    for (int i = 0; i < n; ++i)
      if (d[i] != o.d[i]) return false;
    return true;
  }
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string str() const {
    std::string s = "[";
    for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(d[i]);
    return s + "]";
  }
};

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::F32;
  Shape shape;

  Tensor() = default;
  Tensor(void* p, DType t, Shape s) : data(p), dtype(t), shape(s) {}

  bool defined() const { return data != nullptr; }
  int ndim() const { return shape.n; }
  int64_t size(int i) const { return shape[i]; }
  int64_t numel() const { return shape.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  // Number of rows when viewed as a 2-D matrix [rows, last dim].
  // (Product of the leading dims, so a zero-size last dim does not divide by zero.)
  int64_t rows() const {
    int64_t p = 1;
    for (int i = 0; i + 1 < shape.n; ++i) p *= shape[i];
    return p;
  }
  int64_t cols() const { return shape.n == 0 ? 1 : shape[-1]; }

  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }

  // Same memory, new shape with the same element count.
  Tensor view(Shape s) const {
    NMOE_CHECK(s.numel() == numel(), "view: cannot view ", shape.str(), " as ", s.str());
    return Tensor(data, dtype, s);
  }
  // Rows [begin, end) along dimension 0.
  Tensor slice(int64_t begin, int64_t end) const {
    NMOE_ASSERT(shape.n >= 1 && begin >= 0 && begin <= end && end <= shape[0]);
    Shape s = shape;
    s.d[0] = end - begin;
    int64_t inner = shape[0] == 0 ? 0 : numel() / shape[0];
    return Tensor(static_cast<char*>(data) + begin * inner * dtype_size(dtype), dtype, s);
  }
  // Element i along dimension 0, with that dimension dropped.
  Tensor operator[](int64_t i) const {
    Tensor t = slice(i, i + 1);
    Shape s;
    for (int k = 1; k < shape.n; ++k) s.d[s.n++] = shape[k];
    t.shape = s;
    return t;
  }
};

}  // namespace nmoe
