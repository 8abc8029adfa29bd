// Internal helpers shared by the CPU backend's op files: argument checks,
// float dtype dispatch, parallel loops and deterministic reductions.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "ops/op_checks.h"

namespace nmoe::cpu {

// ---- argument checks (shared with every backend: ops/op_checks.h) -------------
using ops::check_data;
using ops::check_dtype;
using ops::check_fits_i32;
using ops::check_index_tensor;
using ops::check_matrix;
using ops::check_numel;
using ops::check_scalar_f64;
using ops::NamedTensor;

// ---- float dtype dispatch -------------------------------------------------------
// All float tensors of one call share one dtype, F32 or F64. Calls fn(float{})
// or fn(double{}); the callee recovers the scalar type with decltype.
template <class Fn>
void dispatch_float(const char* op, std::initializer_list<NamedTensor> tensors, Fn&& fn) {
  NMOE_ASSERT(tensors.size() > 0);
  const DType dtype = tensors.begin()->t.dtype;
  bool same = true;
  for (const NamedTensor& a : tensors) same = same && a.t.dtype == dtype;
  if (!same || (dtype != DType::F32 && dtype != DType::F64)) {
    std::string got;
    for (const NamedTensor& a : tensors)
      got += std::string(got.empty() ? "" : ", ") + a.name + "=" + dtype_name(a.t.dtype);
    fail(op, ": the CPU backend needs every float tensor of one call to be F32, or every one to "
             "be F64; got ", got);
  }
  if (dtype == DType::F32)
    fn(float{});
  else
    fn(double{});
}

// ---- parallel loops ------------------------------------------------------------------
// Each index is handled by exactly one thread, so any per-index computation is
// independent of the thread count.

// Below this much work (roughly, inner-loop iterations) a loop runs serially:
// starting a parallel region would cost more than it saves.
constexpr int64_t kMinParallelWork = 1 << 14;

inline bool worth_parallel(int64_t items, int64_t work_per_item) {
  return items > 1 && items * std::max<int64_t>(work_per_item, 1) >= kMinParallelWork;
}

template <class Fn>
void parallel_for(int64_t n, int64_t work_per_item, Fn&& fn) {
#pragma omp parallel for schedule(static) if (worth_parallel(n, work_per_item))
  for (int64_t i = 0; i < n; ++i) fn(i);
}

// fn(begin, end) over consecutive blocks of `grain` indices.
template <class Fn>
void parallel_blocks(int64_t n, int64_t grain, Fn&& fn) {
  const int64_t blocks = (n + grain - 1) / grain;
#pragma omp parallel for schedule(static) if (worth_parallel(blocks, grain))
  for (int64_t b = 0; b < blocks; ++b) fn(b * grain, std::min(n, (b + 1) * grain));
}

// ---- deterministic reductions -------------------------------------------------------
// Rows per block of a reduction. Partials are formed per fixed block and added
// in block order, so the result never depends on how many threads ran.
constexpr int64_t kReduceRows = 64;
constexpr int64_t kReduceElems = 16384;

// Sum over [0, n) where block_sum(begin, end) returns the (double) sum of a block.
template <class BlockSum>
double deterministic_sum(int64_t n, int64_t block, BlockSum&& block_sum) {
  const int64_t blocks = (n + block - 1) / block;
  std::vector<double> partial(static_cast<size_t>(blocks));
  parallel_for(blocks, block, [&](int64_t b) {
    partial[b] = block_sum(b * block, std::min(n, (b + 1) * block));
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

// Vector-valued variant: block_sum(begin, end, acc) adds a block's contribution
// into acc[width] (zeroed). Returns the width sums.
template <class BlockSum>
std::vector<double> deterministic_sum_vec(int64_t n, int64_t block, int64_t width,
                                          BlockSum&& block_sum) {
  const int64_t blocks = (n + block - 1) / block;
  std::vector<double> partial(static_cast<size_t>(blocks * width), 0.0);
  parallel_for(blocks, block * width, [&](int64_t b) {
    block_sum(b * block, std::min(n, (b + 1) * block), partial.data() + b * width);
  });
  std::vector<double> total(static_cast<size_t>(width), 0.0);
  parallel_blocks(width, 256, [&](int64_t begin, int64_t end) {
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t j = begin; j < end; ++j) total[j] += partial[b * width + j];
  });
  return total;
}

// ---- math -------------------------------------------------------------------------------
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

template <class T>
double dot(const T* a, const T* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}

}  // namespace nmoe::cpu
