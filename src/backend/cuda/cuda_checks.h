// Host-side argument checks of the CUDA backend's ops (plain C++). They run
// before any launch, so a shape error throws with nothing enqueued. Values that
// live on the device (token ids, expert ids, offsets) are checked by the
// kernels themselves, which raise the backend's device error flag instead
// (reported by the next synchronize() or copy_to_host(); see cuda_common.cuh).
#pragma once

#include <climits>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/error.h"
#include "core/tensor.h"

namespace nmoe::cuda {

struct NamedTensor {
  const char* name;
  Tensor t;
};

inline void check_data(const char* op, const char* name, const Tensor& t) {
  NMOE_CHECK(t.data != nullptr || t.numel() == 0, op, ": ", name, " ", t.shape.str(),
             " has no data");
}

inline void check_dtype(const char* op, const char* name, const Tensor& t, DType want) {
  NMOE_CHECK(t.dtype == want, op, ": ", name, " must be ", dtype_name(want), ", got ",
             dtype_name(t.dtype));
}

// t viewed as a 2-D matrix [rows, cols] (leading dims flattened).
inline void check_matrix(const char* op, const char* name, const Tensor& t, int64_t rows,
                         int64_t cols) {
  NMOE_CHECK(t.ndim() >= 1 && t.rows() == rows && t.cols() == cols, op, ": ", name,
             " must be [", rows, ", ", cols, "] (leading dims flattened), got ", t.shape.str());
  check_data(op, name, t);
}

inline void check_numel(const char* op, const char* name, const Tensor& t, int64_t n) {
  NMOE_CHECK(t.numel() == n, op, ": ", name, " must have ", n, " elements, got ",
             t.shape.str());
  check_data(op, name, t);
}

inline void check_index_tensor(const char* op, const char* name, const Tensor& t, int64_t n) {
  check_dtype(op, name, t, DType::I32);
  check_numel(op, name, t, n);
}

inline void check_scalar_f64(const char* op, const char* name, const Tensor& t) {
  NMOE_CHECK(t.defined(), op, ": ", name, " (F64 [1]) is undefined");
  check_dtype(op, name, t, DType::F64);
  check_numel(op, name, t, 1);
}

inline void check_fits_i32(const char* op, const char* what, int64_t n) {
  NMOE_CHECK(n >= 0 && n <= INT32_MAX, op, ": ", what, " = ", n, " does not fit in I32");
}

// Float tensors of one call share one dtype. The CUDA backend runs F32 now;
// kernels are templates on the element type with fp32 math, so BF16 is added
// by instantiating them for __nv_bfloat16 (see dispatch_float in cuda_common.cuh).
inline DType common_float_dtype(const char* op, std::initializer_list<NamedTensor> tensors) {
  NMOE_CHECK(tensors.size() > 0, op, ": no float tensors");
  const DType dtype = tensors.begin()->t.dtype;
  bool same = true;
  for (const NamedTensor& a : tensors) same = same && a.t.dtype == dtype;
  if (!same || dtype != DType::F32) {
    std::string got;
    for (const NamedTensor& a : tensors)
      got += std::string(got.empty() ? "" : ", ") + a.name + "=" + dtype_name(a.t.dtype);
    fail(op, ": the CUDA backend needs every float tensor of one call to be F32 (BF16 is not "
             "implemented yet); got ", got);
  }
  return dtype;
}

}  // namespace nmoe::cuda
