// Row-major GEMM on raw pointers through OpenBLAS:
//   C[M,N] = alpha * op(A) @ op(B) + beta * C, op(A) [M,K], op(B) [K,N].
// Zero-size problems never reach BLAS (its leading-dim rules reject them).
//
// Determinism: OpenBLAS's own threading gives results that change with the
// thread count. So C is cut into a fixed grid of tiles (independent of the
// thread count) and each tile is one single-threaded BLAS call made from our
// OpenMP team; the OpenMP build of OpenBLAS runs serially inside an active
// parallel region.
#pragma once

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <initializer_list>
#include <cstdint>

#include "core/error.h"

namespace nmoe::cpu {

namespace detail {

inline blasint blas_dim(int64_t n) {
  NMOE_CHECK(n >= 0 && n <= INT_MAX, "gemm: dimension ", n, " exceeds the BLAS int range");
  return static_cast<blasint>(n);
}

inline blasint leading_dim(int64_t n) { return blas_dim(n < 1 ? 1 : n); }

// C = beta * C without reading C when beta == 0 (so NaN garbage is overwritten).
template <class T>
void scale_matrix(int64_t M, int64_t N, double beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j)
      C[i * ldc + j] = beta == 0 ? T(0) : static_cast<T>(beta * C[i * ldc + j]);
}

inline void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, blasint M, blasint N, blasint K,
                      double alpha, const float* A, blasint lda, const float* B, blasint ldb,
                      double beta, float* C, blasint ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, static_cast<float>(alpha), A, lda, B, ldb,
              static_cast<float>(beta), C, ldc);
}

inline void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, blasint M, blasint N, blasint K,
                      double alpha, const double* A, blasint lda, const double* B, blasint ldb,
                      double beta, double* C, blasint ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

constexpr int64_t kTileRows = 128;
constexpr int64_t kTileCols = 512;

}  // namespace detail

template <class T>
void gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, double alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, double beta, T* C, int64_t ldc) {
  using namespace detail;
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0) {
    scale_matrix(M, N, beta, C, ldc);
    return;
  }
  for (int64_t dim : {M, N, K, lda, ldb, ldc}) blas_dim(dim);
  const int64_t tile_rows = (M + kTileRows - 1) / kTileRows;
  const int64_t tiles = tile_rows * ((N + kTileCols - 1) / kTileCols);
  const CBLAS_TRANSPOSE ta = transA ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = transB ? CblasTrans : CblasNoTrans;
  // A single tile needs no team: starting one costs a barrier per call, and
  // barriers dominate small models (and crawl when cores are oversubscribed).
#pragma omp parallel if (tiles > 1)
  {
    // A team of one is not an active region: keep OpenBLAS from threading anyway.
    if (!omp_in_parallel()) omp_set_num_threads(1);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t i0 = (t % tile_rows) * kTileRows, j0 = (t / tile_rows) * kTileCols;
      const int64_t m = std::min(kTileRows, M - i0), n = std::min(kTileCols, N - j0);
      const T* a = transA ? A + i0 : A + i0 * lda;
      const T* b = transB ? B + j0 * ldb : B + j0;
      blas_gemm(ta, tb, blas_dim(m), blas_dim(n), blas_dim(K), alpha, a, leading_dim(lda), b,
                leading_dim(ldb), beta, C + i0 * ldc + j0, leading_dim(ldc));
    }
  }
}

}  // namespace nmoe::cpu
