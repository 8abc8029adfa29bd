// Embedding lookup and RMSNorm, forward and backward.
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"

namespace nmoe {

using namespace cpu;

namespace {

void check_token_values(const char* op, const Tensor& tokens, int64_t n, int64_t vocab) {
  const int32_t* tok = tokens.ptr<int32_t>();
  for (int64_t i = 0; i < n; ++i)
    NMOE_CHECK(tok[i] >= 0 && tok[i] < vocab, op, ": tokens[", i, "] = ", tok[i],
               " is outside the vocabulary [0, ", vocab, ")");
}

template <class T>
void embedding_fwd_impl(const Tensor& W, const int32_t* tok, const Tensor& out) {
  const int64_t D = W.cols();
  parallel_for(out.rows(), D, [&](int64_t n) {
    std::copy_n(W.ptr<T>() + tok[n] * D, D, out.ptr<T>() + n * D);
  });
}

// Tokens grouped by id (counting sort, stable), so each vocabulary row is
// updated by one thread adding its tokens' rows in token order.
struct TokensById {
  std::vector<int64_t> start;  // [V+1]
  std::vector<int64_t> rows;   // token positions, grouped by id
  std::vector<int64_t> used;   // ids with at least one token
};

TokensById group_tokens(const int32_t* tok, int64_t n, int64_t vocab) {
  TokensById g;
  g.start.assign(vocab + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++g.start[tok[i] + 1];
  for (int64_t v = 0; v < vocab; ++v) {
    if (g.start[v + 1] > 0) g.used.push_back(v);
    g.start[v + 1] += g.start[v];
  }
  g.rows.resize(n);
  std::vector<int64_t> next(g.start.begin(), g.start.end() - 1);
  for (int64_t i = 0; i < n; ++i) g.rows[next[tok[i]]++] = i;
  return g;
}

template <class T>
void embedding_bwd_impl(const Tensor& dout, const TokensById& g, const Tensor& dW) {
  const int64_t D = dW.cols();
  const T* dy = dout.ptr<T>();
  const int64_t ids = static_cast<int64_t>(g.used.size());
  const int64_t work_per_id = D * dout.rows() / std::max<int64_t>(ids, 1);
#pragma omp parallel if (worth_parallel(ids, work_per_id))
  {
    std::vector<double> acc(D);
#pragma omp for schedule(static)
    for (int64_t u = 0; u < ids; ++u) {
      const int64_t v = g.used[u];
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t r = g.start[v]; r < g.start[v + 1]; ++r) {
        const T* row = dy + g.rows[r] * D;
        for (int64_t d = 0; d < D; ++d) acc[d] += row[d];
      }
      T* out = dW.ptr<T>() + v * D;
      for (int64_t d = 0; d < D; ++d) out[d] = static_cast<T>(out[d] + acc[d]);
    }
  }
}

template <class T>
void rmsnorm_fwd_impl(const Tensor& x, const Tensor& w, double eps, const Tensor& y,
                      const Tensor& rstd) {
  const int64_t D = x.cols();
  const T* pw = w.ptr<T>();
  parallel_for(x.rows(), 2 * D, [&](int64_t n) {
    const T* xr = x.ptr<T>() + n * D;
    const double r = 1.0 / std::sqrt(dot(xr, xr, D) / static_cast<double>(D) + eps);
    T* yr = y.ptr<T>() + n * D;
    for (int64_t d = 0; d < D; ++d) yr[d] = static_cast<T>(xr[d] * r * pw[d]);
    rstd.ptr<T>()[n] = static_cast<T>(r);
  });
}

// y_d = x_d r w_d with r = (mean(x^2) + eps)^-1/2, so
// dx_d = r (dy_d w_d - x_d r^2 mean_j(dy_j w_j x_j)),  dw_d = sum_n dy_d x_d r.
template <class T>
void rmsnorm_bwd_impl(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      const Tensor& dx, const Tensor& dw) {
  const int64_t N = x.rows(), D = x.cols();
  const T* pw = w.ptr<T>();
  const T* pr = rstd.ptr<T>();
  parallel_for(N, 3 * D, [&](int64_t n) {
    const T* xr = x.ptr<T>() + n * D;
    const T* gr = dy.ptr<T>() + n * D;
    const double r = pr[n];
    double proj = 0;
    for (int64_t d = 0; d < D; ++d) proj += static_cast<double>(gr[d]) * pw[d] * xr[d];
    const double coef = r * r * proj / static_cast<double>(D);
    T* out = dx.ptr<T>() + n * D;
    for (int64_t d = 0; d < D; ++d)
      out[d] = static_cast<T>(out[d] + r * (static_cast<double>(gr[d]) * pw[d] - xr[d] * coef));
  });
  const std::vector<double> dw_sum =
      deterministic_sum_vec(N, kReduceRows, D, [&](int64_t begin, int64_t end, double* acc) {
        for (int64_t n = begin; n < end; ++n) {
          const T* xr = x.ptr<T>() + n * D;
          const T* gr = dy.ptr<T>() + n * D;
          const double r = pr[n];
          for (int64_t d = 0; d < D; ++d) acc[d] += static_cast<double>(gr[d]) * xr[d] * r;
        }
      });
  T* pdw = dw.ptr<T>();
  for (int64_t d = 0; d < D; ++d) pdw[d] = static_cast<T>(pdw[d] + dw_sum[d]);
}

}  // namespace

void CpuBackend::embedding_fwd(const Tensor& W, const Tensor& tokens, const Tensor& out) {
  const char* op = "embedding_fwd";
  const ops::EmbedDims d = ops::check_embedding_fwd(W, tokens, out);
  check_token_values(op, tokens, d.N, d.V);
  dispatch_float(op, {{"W", W}, {"out", out}}, [&](auto tag) {
    embedding_fwd_impl<decltype(tag)>(W, tokens.ptr<int32_t>(), out);
  });
}

void CpuBackend::embedding_bwd(const Tensor& dout, const Tensor& tokens, const Tensor& dW) {
  const char* op = "embedding_bwd";
  const ops::EmbedDims d = ops::check_embedding_bwd(dout, tokens, dW);
  check_token_values(op, tokens, d.N, d.V);
  dispatch_float(op, {{"dout", dout}, {"dW", dW}}, [&](auto tag) {
    const TokensById groups = group_tokens(tokens.ptr<int32_t>(), d.N, d.V);
    embedding_bwd_impl<decltype(tag)>(dout, groups, dW);
  });
}

void CpuBackend::rmsnorm_fwd(const Tensor& x, const Tensor& w, double eps, const Tensor& y,
                             const Tensor& rstd) {
  const char* op = "rmsnorm_fwd";
  ops::check_rmsnorm_fwd(x, w, eps, y, rstd);
  dispatch_float(op, {{"x", x}, {"w", w}, {"y", y}, {"rstd", rstd}}, [&](auto tag) {
    rmsnorm_fwd_impl<decltype(tag)>(x, w, eps, y, rstd);
  });
}

void CpuBackend::rmsnorm_bwd(const Tensor& dy, const Tensor& x, const Tensor& w,
                             const Tensor& rstd, const Tensor& dx, const Tensor& dw) {
  const char* op = "rmsnorm_bwd";
  ops::check_rmsnorm_bwd(dy, x, w, rstd, dx, dw);
  dispatch_float(op, {{"dy", dy}, {"x", x}, {"w", w}, {"rstd", rstd}, {"dx", dx}, {"dw", dw}},
                 [&](auto tag) { rmsnorm_bwd_impl<decltype(tag)>(dy, x, w, rstd, dx, dw); });
}

}  // namespace nmoe
