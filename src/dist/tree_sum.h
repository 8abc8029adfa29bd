// The fixed bracketing of every sum across ranks and micro-batches: pairwise
// with strides 1, 2, 4, ... over values in rank (or micro-batch) order. With
// power-of-two counts, the sum of 2^a values split into 2^b contiguous groups
// equals the tree over the groups' own trees, so the result does not depend on
// how many ranks computed the parts.
#pragma once

#include <cstdint>
#include <vector>

namespace nmoe {

// Sums v[0..n) in place in the tree order; returns v[0]. n >= 1.
template <class T>
T tree_sum_inplace(T* v, int64_t n) {
  for (int64_t stride = 1; stride < n; stride *= 2)
    for (int64_t k = 0; k + stride < n; k += 2 * stride) v[k] += v[k + stride];
  return v[0];
}

template <class T>
T tree_sum(std::vector<T> v) {
  return v.empty() ? T(0) : tree_sum_inplace(v.data(), static_cast<int64_t>(v.size()));
}

// dst[i] = tree sum over parts p of src[p][i], for i in [0, count).
template <class T>
void tree_sum_arrays(const std::vector<const T*>& src, T* dst, int64_t count) {
  const int64_t n = static_cast<int64_t>(src.size());
  std::vector<T> v(n);
  for (int64_t i = 0; i < count; ++i) {
    for (int64_t p = 0; p < n; ++p) v[p] = src[p][i];
    dst[i] = tree_sum_inplace(v.data(), n);
  }
}

}  // namespace nmoe
