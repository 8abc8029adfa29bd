// Host-side argument checks of the CUDA backend's ops (plain C++); the checks
// every backend shares are in ops/op_checks.h. They run
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
#include "ops/op_checks.h"

namespace nmoe::cuda {

using ops::check_data;
using ops::check_dtype;
using ops::check_fits_i32;
using ops::check_index_tensor;
using ops::check_matrix;
using ops::check_numel;
using ops::check_scalar_f64;
using ops::NamedTensor;

// Ops whose float tensors are all F32 in either precision mode (router forward,
// aux loss, bias update, sum_squares, adamw: statistics, master weights and
// moments). Ops on activations use act_dtype / dispatch_act below.
inline DType common_float_dtype(const char* op, std::initializer_list<NamedTensor> tensors) {
  NMOE_CHECK(tensors.size() > 0, op, ": no float tensors");
  const DType dtype = tensors.begin()->t.dtype;
  bool same = true;
  for (const NamedTensor& a : tensors) same = same && a.t.dtype == dtype;
  if (!same || dtype != DType::F32) {
    std::string got;
    for (const NamedTensor& a : tensors)
      got += std::string(got.empty() ? "" : ", ") + a.name + "=" + dtype_name(a.t.dtype);
    fail(op, ": the CUDA backend needs every float tensor of this op to be F32 (statistics, "
             "master weights and moments stay F32 in BF16 mode); got ", got);
  }
  return dtype;
}

// Mixed precision (see ops/backend.h): the activation tensors of one call share
// one dtype, F32 or BF16; the statistics / parameter-gradient tensors of the
// call (rstd, lse, RoPE tables, gates, dW, ...) are F32 in either mode.
// Undefined tensors in `f32s` are skipped (optional outputs).
inline DType act_dtype(const char* op, std::initializer_list<NamedTensor> acts,
                       std::initializer_list<NamedTensor> f32s) {
  NMOE_CHECK(acts.size() > 0, op, ": no activation tensors");
  const DType dtype = acts.begin()->t.dtype;
  bool ok = dtype == DType::F32 || dtype == DType::BF16;
  for (const NamedTensor& a : acts) ok = ok && a.t.dtype == dtype;
  for (const NamedTensor& a : f32s) ok = ok && (!a.t.defined() || a.t.dtype == DType::F32);
  if (!ok) {
    std::string got;
    for (const NamedTensor& a : acts)
      got += std::string(got.empty() ? "" : ", ") + a.name + "=" + dtype_name(a.t.dtype);
    for (const NamedTensor& a : f32s)
      got += std::string(got.empty() ? "" : ", ") + a.name + "=" +
             (a.t.defined() ? dtype_name(a.t.dtype) : "undefined");
    std::string act_names, f32_names;
    for (const NamedTensor& a : acts) act_names += std::string(act_names.empty() ? "" : ", ") + a.name;
    for (const NamedTensor& a : f32s) f32_names += std::string(f32_names.empty() ? "" : ", ") + a.name;
    fail(op, ": the CUDA backend needs ", act_names, " to share one dtype (F32 or BF16)",
         f32_names.empty() ? std::string() : " and " + f32_names + " to be F32", "; got ", got);
  }
  return dtype;
}

}  // namespace nmoe::cuda
