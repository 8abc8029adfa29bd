// Chunked cross-entropy over the full vocabulary: logits = h @ W^T are formed
// chunk_rows rows at a time in a reused scratch buffer.
#include <cmath>
#include <limits>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"
#include "backend/cpu/cpu_gemm.h"

namespace nmoe {

using namespace cpu;

namespace {

struct CeShape {
  int64_t N = 0, D = 0, V = 0, chunk = 0;
};

struct CeArgs {
  const Tensor& h;
  const Tensor& W;
  const int32_t* targets;
  int64_t ignore_index;
  double grad_scale;
  const Tensor& dh;  // undefined: loss only
  const Tensor& dW;
};

bool counted(int32_t target, int64_t ignore_index) {
  return target >= 0 && target != ignore_index;
}

// One row of logits: returns lse - logit[target] (0 for ignored rows); with
// `grad`, overwrites the row with (softmax - onehot) * grad_scale (zeros when ignored).
template <class T>
double row_loss(T* logits, int64_t V, int32_t target, const CeArgs& a, bool grad) {
  if (!counted(target, a.ignore_index)) {
    if (grad) std::fill(logits, logits + V, T(0));
    return 0;
  }
  double max_logit = -std::numeric_limits<double>::infinity();
  for (int64_t v = 0; v < V; ++v) max_logit = std::max(max_logit, static_cast<double>(logits[v]));
  double sum = 0;
  for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[v] - max_logit);
  const double lse = max_logit + std::log(sum);
  const double loss = lse - static_cast<double>(logits[target]);
  if (grad) {
    for (int64_t v = 0; v < V; ++v) {
      const double p = std::exp(logits[v] - lse);
      logits[v] = static_cast<T>((p - (v == target ? 1.0 : 0.0)) * a.grad_scale);
    }
  }
  return loss;
}

// Scratch layout: [chunk, V] logits of T, then (64-byte aligned) [chunk] row losses.
template <class T>
size_t logits_bytes(const CeShape& s) {
  return (static_cast<size_t>(s.chunk * s.V) * sizeof(T) + 63) / 64 * 64;
}

// Returns the loss sum; row losses are added in row order, independent of the chunking.
template <class T>
double cross_entropy_impl(const CeShape& s, const CeArgs& a, void* scratch) {
  T* logits = static_cast<T*>(scratch);
  double* losses = reinterpret_cast<double*>(static_cast<char*>(scratch) + logits_bytes<T>(s));
  const bool grad = a.dh.defined();
  const T* h = a.h.ptr<T>();
  const T* W = a.W.ptr<T>();
  double total = 0;
  for (int64_t begin = 0; begin < s.N; begin += s.chunk) {
    const int64_t rows = std::min(s.chunk, s.N - begin);
    gemm<T>(false, true, rows, s.V, s.D, 1.0, h + begin * s.D, s.D, W, s.D, 0.0, logits, s.V);
    parallel_for(rows, s.V, [&](int64_t r) {
      losses[r] = row_loss(logits + r * s.V, s.V, a.targets[begin + r], a, grad);
    });
    for (int64_t r = 0; r < rows; ++r) total += losses[r];
    if (!grad) continue;
    // G = logits buffer now: dh_chunk = G @ W (write), dW += G^T @ h_chunk.
    gemm<T>(false, false, rows, s.D, s.V, 1.0, logits, s.V, W, s.D, 0.0,
            a.dh.ptr<T>() + begin * s.D, s.D);
    gemm<T>(true, false, s.V, s.D, rows, 1.0, logits, s.V, h + begin * s.D, s.D, 1.0,
            a.dW.ptr<T>(), s.D);
  }
  return total;
}

void check_target_values(const char* op, const Tensor& targets, int64_t N, int64_t V) {
  const int32_t* t = targets.ptr<int32_t>();
  for (int64_t i = 0; i < N; ++i)
    NMOE_CHECK(t[i] < V, op, ": targets[", i, "] = ", t[i], " is not below the vocab size ", V);
}

}  // namespace

void CpuBackend::cross_entropy(const Tensor& h, const Tensor& W, const Tensor& targets,
                               int64_t ignore_index, double grad_scale, int64_t chunk_rows,
                               const Tensor& loss_sum, const Tensor& dh, const Tensor& dW) {
  const char* op = "cross_entropy";
  const ops::EmbedDims d = ops::check_cross_entropy(h, W, targets, chunk_rows, loss_sum, dh, dW);
  CeShape s{d.N, d.D, d.V, 0};
  check_target_values(op, targets, s.N, s.V);
  s.chunk = std::max<int64_t>(1, std::min(chunk_rows, s.N));
  const CeArgs args{h, W, targets.ptr<int32_t>(), ignore_index, grad_scale, dh, dW};
  auto run = [&](auto tag) {
    using T = decltype(tag);
    void* buf = scratch(logits_bytes<T>(s) + static_cast<size_t>(s.chunk) * sizeof(double));
    loss_sum.ptr<double>()[0] += cross_entropy_impl<T>(s, args, buf);
  };
  if (dh.defined()) {
    dispatch_float(op, {{"h", h}, {"W", W}, {"dh", dh}, {"dW", dW}}, run);
  } else {
    dispatch_float(op, {{"h", h}, {"W", W}}, run);
  }
}

}  // namespace nmoe
