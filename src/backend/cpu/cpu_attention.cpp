// Causal softmax attention, forward and backward, one (sequence, head) pair
// per parallel task. Only one row of scores exists per thread at a time.
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_attention.h"
#include "backend/cpu/cpu_backend.h"

namespace nmoe {

using namespace cpu;

namespace {

// acc += a * x over Dh elements.
template <class T>
void axpy(double* acc, double a, const T* x, int64_t n) {
  for (int64_t d = 0; d < n; ++d) acc[d] += a * x[d];
}

// Scratch of one thread for the forward pass.
struct ForwardScratch {
  std::vector<double> scores, acc;
  explicit ForwardScratch(const QkvLayout& L) : scores(L.T), acc(L.Dh) {}
};

template <class T>
void attention_fwd_head(const QkvLayout& L, const T* qkv, double scale, int64_t b, int64_t h,
                        T* out, T* lse, ForwardScratch& s) {
  const int64_t first = b * L.T, Dh = L.Dh;
  for (int64_t i = 0; i < L.T; ++i) {
    const T* q = qkv + L.q(first + i, h);
    double max_score = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j <= i; ++j) {
      s.scores[j] = scale * dot(q, qkv + L.k(first + j, h), Dh);
      max_score = std::max(max_score, s.scores[j]);
    }
    double sum = 0;
    std::fill(s.acc.begin(), s.acc.end(), 0.0);
    for (int64_t j = 0; j <= i; ++j) {
      const double p = std::exp(s.scores[j] - max_score);
      sum += p;
      axpy(s.acc.data(), p, qkv + L.v(first + j, h), Dh);
    }
    T* o = out + L.head(first + i, h);
    for (int64_t d = 0; d < Dh; ++d) o[d] = static_cast<T>(s.acc[d] / sum);
    lse[L.lse(b, h, i)] = static_cast<T>(max_score + std::log(sum));
  }
}

// Scratch of one thread for the backward pass: dk, dv of the whole sequence of
// one head are accumulated in double, then written once.
struct BackwardScratch {
  std::vector<double> dq, dk, dv;
  explicit BackwardScratch(const QkvLayout& L) : dq(L.Dh), dk(L.T * L.Dh), dv(L.T * L.Dh) {}
};

// FlashAttention-2 backward math for one (sequence b, head h):
//   p_ij = exp(scale q_i.k_j - lse_i), dS_ij = p_ij (dout_i.v_j - dout_i.out_i),
//   dq_i = scale sum_j dS_ij k_j, dk_j = scale sum_i dS_ij q_i, dv_j = sum_i p_ij dout_i.
template <class T>
void attention_bwd_head(const QkvLayout& L, const T* qkv, const T* out, const T* dout,
                        const T* lse, double scale, int64_t b, int64_t h, T* dqkv,
                        BackwardScratch& s) {
  const int64_t first = b * L.T, Dh = L.Dh;
  std::fill(s.dk.begin(), s.dk.end(), 0.0);
  std::fill(s.dv.begin(), s.dv.end(), 0.0);
  for (int64_t i = 0; i < L.T; ++i) {
    const T* q = qkv + L.q(first + i, h);
    const T* g = dout + L.head(first + i, h);
    const double delta = dot(g, out + L.head(first + i, h), Dh);
    const double row_lse = lse[L.lse(b, h, i)];
    std::fill(s.dq.begin(), s.dq.end(), 0.0);
    for (int64_t j = 0; j <= i; ++j) {
      const T* k = qkv + L.k(first + j, h);
      const double p = std::exp(scale * dot(q, k, Dh) - row_lse);
      const double dS = p * (dot(g, qkv + L.v(first + j, h), Dh) - delta);
      axpy(s.dq.data(), scale * dS, k, Dh);
      axpy(s.dk.data() + j * Dh, scale * dS, q, Dh);
      axpy(s.dv.data() + j * Dh, p, g, Dh);
    }
    T* dq = dqkv + L.q(first + i, h);
    for (int64_t d = 0; d < Dh; ++d) dq[d] = static_cast<T>(s.dq[d]);
  }
  for (int64_t j = 0; j < L.T; ++j) {
    T* dk = dqkv + L.k(first + j, h);
    T* dv = dqkv + L.v(first + j, h);
    for (int64_t d = 0; d < Dh; ++d) {
      dk[d] = static_cast<T>(s.dk[j * Dh + d]);
      dv[d] = static_cast<T>(s.dv[j * Dh + d]);
    }
  }
}

template <class T>
void attention_fwd_impl(const QkvLayout& L, const Tensor& qkv, double scale, const Tensor& out,
                        const Tensor& lse) {
  const int64_t tasks = L.B * L.H;
#pragma omp parallel if (worth_parallel(tasks, L.T * L.T * L.Dh))
  {
    ForwardScratch scratch(L);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task)
      attention_fwd_head(L, qkv.ptr<T>(), scale, task / L.H, task % L.H, out.ptr<T>(),
                         lse.ptr<T>(), scratch);
  }
}

template <class T>
void attention_bwd_impl(const QkvLayout& L, const Tensor& dout, const Tensor& qkv,
                        const Tensor& out, const Tensor& lse, double scale, const Tensor& dqkv) {
  const int64_t tasks = L.B * L.H;
#pragma omp parallel if (worth_parallel(tasks, L.T * L.T * L.Dh))
  {
    BackwardScratch scratch(L);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task)
      attention_bwd_head(L, qkv.ptr<T>(), out.ptr<T>(), dout.ptr<T>(), lse.ptr<T>(), scale,
                         task / L.H, task % L.H, dqkv.ptr<T>(), scratch);
  }
}

}  // namespace

void CpuBackend::attention_fwd(const Tensor& qkv, int seq_len, double scale, const Tensor& out,
                               const Tensor& lse) {
  const char* op = "attention_fwd";
  const QkvLayout L = ops::check_attention_fwd(qkv, seq_len, out, lse);
  dispatch_float(op, {{"qkv", qkv}, {"out", out}, {"lse", lse}}, [&](auto tag) {
    attention_fwd_impl<decltype(tag)>(L, qkv, scale, out, lse);
  });
}

void CpuBackend::attention_bwd(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                               const Tensor& lse, int seq_len, double scale,
                               const Tensor& dqkv) {
  const char* op = "attention_bwd";
  const QkvLayout L = ops::check_attention_bwd(dout, qkv, out, lse, seq_len, dqkv);
  dispatch_float(op,
                 {{"dout", dout}, {"qkv", qkv}, {"out", out}, {"lse", lse}, {"dqkv", dqkv}},
                 [&](auto tag) {
                   attention_bwd_impl<decltype(tag)>(L, dout, qkv, out, lse, scale, dqkv);
                 });
}

}  // namespace nmoe
