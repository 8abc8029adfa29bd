// CPU backend: memory ops, dense and grouped GEMM, add, embedding, RMSNorm, SwiGLU.
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_test_util.h"

namespace nmoe::cputest {
namespace {

// ---- memory ---------------------------------------------------------------------

TEST(CpuMemory, AllocIsAlignedAndWritable) {
  CpuBackend be(1);
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{255}, size_t{256}, size_t{1000}}) {
    void* p = be.alloc(bytes);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 256, 0u) << bytes;
    std::memset(p, 0xAB, bytes);
    be.free(p);
  }
  be.free(nullptr);
}

TEST(CpuMemory, FillEveryDtype) {
  CpuBackend be(1);
  HostTensor f32(DType::F32, {5}), f64(DType::F64, {5}), i32(DType::I32, {5});
  HostTensor i64(DType::I64, {3}), u8(DType::U8, {3}), bf16(DType::BF16, {3});
  be.fill(f32, 1.25);
  be.fill(f64, -2.5);
  be.fill(i32, 7);
  be.fill(i64, -9);
  be.fill(u8, 200);
  be.fill(bf16, 1.5);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(f32.get(i), 1.25);
    EXPECT_EQ(f64.get(i), -2.5);
    EXPECT_EQ(i32.get(i), 7);
  }
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(i64.t().ptr<int64_t>()[i], -9);
    EXPECT_EQ(u8.t().ptr<uint8_t>()[i], 200);
    EXPECT_EQ(bf16.t().ptr<uint16_t>()[i], 0x3FC0);  // 1.5 in bfloat16
  }
  be.fill(i32, 2.75);  // cast, like static_cast
  EXPECT_EQ(i32.get(0), 2);
  EXPECT_THROW(be.fill(i32, std::nan("")), Error);
  EXPECT_THROW(be.fill(u8, 300), Error);
}

TEST(CpuMemory, CopiesRoundTripAndCheckSizes) {
  CpuBackend be(1);
  std::vector<float> src = {1, 2, 3, 4, 5, 6};
  HostTensor a(DType::F32, {2, 3}), b(DType::F32, {6});
  be.copy_from_host(a, src.data());
  be.copy(b, a);
  std::vector<float> back(6, 0);
  be.copy_to_host(back.data(), b);
  EXPECT_EQ(back, src);
  HostTensor wrong_dtype(DType::F64, {6}), wrong_size(DType::F32, {5});
  EXPECT_THROW(be.copy(wrong_dtype, a), Error);
  EXPECT_THROW(be.copy(wrong_size, a), Error);
  be.synchronize();
  EXPECT_STREQ(be.name(), "cpu");
}

// ---- matmul -----------------------------------------------------------------------------

// Reference C = alpha op(A) op(B) + beta C over 2-D views.
std::vector<double> matmul_ref(const HostTensor& A, bool ta, const HostTensor& B, bool tb,
                               const HostTensor& C, double alpha, double beta) {
  const int64_t M = C.t().rows(), N = C.t().cols();
  const int64_t K = ta ? A.t().rows() : A.t().cols();
  const int64_t lda = A.t().cols(), ldb = B.t().cols();
  std::vector<double> out(M * N);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k)
        s += A.get(ta ? k * lda + i : i * lda + k) * B.get(tb ? j * ldb + k : k * ldb + j);
      out[i * N + j] = alpha * s + (beta == 0 ? 0 : beta * C.get(i * N + j));
    }
  return out;
}

TEST(CpuMatmul, MatchesTripleLoopForAllTransposes) {
  CpuBackend be(0);
  std::mt19937_64 rng(1);
  const int64_t shapes[][3] = {{1, 1, 1}, {5, 7, 3}, {33, 17, 65}, {64, 1, 9}, {2, 40, 128}};
  for (DType dt : kFloatTypes)
    for (auto& s : shapes)
      for (int trans = 0; trans < 4; ++trans)
        for (double beta : {0.0, 0.7}) {
          const int64_t M = s[0], N = s[1], K = s[2];
          const bool ta = trans & 1, tb = trans & 2;
          HostTensor A = uniform(dt, ta ? Shape{K, M} : Shape{M, K}, rng);
          HostTensor B = uniform(dt, tb ? Shape{N, K} : Shape{K, N}, rng);
          HostTensor C = uniform(dt, {M, N}, rng);
          if (beta == 0) C.poison();
          const std::vector<double> want = matmul_ref(A, ta, B, tb, C, 1.3, beta);
          be.matmul(A, ta, B, tb, C, 1.3, beta);
          EXPECT_LT(rel_err(C, want), fwd_tol(dt))
              << dtype_name(dt) << " M" << M << " N" << N << " K" << K << " ta" << ta << " tb" << tb;
        }
}

TEST(CpuMatmul, FlattensLeadingDims) {
  CpuBackend be(0);
  std::mt19937_64 rng(2);
  HostTensor A = uniform(DType::F64, {2, 3, 4}, rng), B = uniform(DType::F64, {4, 5}, rng);
  HostTensor C(DType::F64, {6, 5});
  const std::vector<double> want = matmul_ref(A, false, B, false, C, 1, 0);
  be.matmul(A, false, B, false, C, 1, 0);
  EXPECT_LT(rel_err(C, want), 1e-14);
}

TEST(CpuMatmul, ZeroSizedDims) {
  CpuBackend be(0);
  std::mt19937_64 rng(3);
  HostTensor A(DType::F32, {4, 0}), B(DType::F32, {0, 3});
  HostTensor C = filled(DType::F32, {4, 3}, std::nan(""));
  be.matmul(A, false, B, false, C, 1, 0);  // K = 0, beta = 0: C = 0
  for (double v : C.values()) EXPECT_EQ(v, 0);
  C.fill(2);
  be.matmul(A, false, B, false, C, 1, 0.5);  // K = 0: C = beta C
  for (double v : C.values()) EXPECT_EQ(v, 1);
  HostTensor A0(DType::F32, {0, 5}), B0 = uniform(DType::F32, {5, 3}, rng), C0(DType::F32, {0, 3});
  be.matmul(A0, false, B0, false, C0, 1, 0);  // M = 0: nothing to do
}

// ---- grouped matmul ----------------------------------------------------------------------

int expert_of_row(const std::vector<int32_t>& off, int64_t row) {
  int e = 0;
  while (off[e + 1] <= row) ++e;
  return e;
}

std::vector<double> grouped_ref(const HostTensor& X, const HostTensor& W, bool transW,
                                const std::vector<int32_t>& off) {
  const int64_t R = W.t().size(1), S = W.t().size(2), M = X.t().rows();
  const int64_t in = transW ? S : R, outc = transW ? R : S;
  std::vector<double> Y(M * outc);
  for (int64_t r = 0; r < M; ++r) {
    const int64_t e = expert_of_row(off, r);
    for (int64_t j = 0; j < outc; ++j) {
      double s = 0;
      for (int64_t k = 0; k < in; ++k)
        s += X.get(r * in + k) * W.get(e * R * S + (transW ? j * S + k : k * S + j));
      Y[r * outc + j] = s;
    }
  }
  return Y;
}

const std::vector<std::vector<int32_t>> kRaggedOffsets = {
    {0, 3, 3, 10, 17},    // expert 1 empty
    {0, 0, 17, 17, 17},   // one expert takes every row
    {0, 1, 2, 3, 17},     // singletons
    {0, 0, 0, 0, 0},      // no rows at all
};

TEST(CpuGroupedMatmul, RaggedSegmentsMatchReference) {
  CpuBackend be(0);
  std::mt19937_64 rng(4);
  const int64_t E = 4, R = 6, S = 5;
  for (DType dt : kFloatTypes)
    for (const auto& off : kRaggedOffsets)
      for (bool transW : {false, true}) {
        const int64_t M = off.back();
        HostTensor W = uniform(dt, {E, R, S}, rng);
        HostTensor X = uniform(dt, {M, transW ? S : R}, rng);
        HostTensor Y(dt, {M, transW ? R : S});
        Y.poison();
        be.grouped_matmul(X, W, transW, indices({E + 1}, off), Y);
        EXPECT_LT(rel_err(Y, grouped_ref(X, W, transW, off)), fwd_tol(dt))
            << dtype_name(dt) << " M=" << M << " transW=" << transW;
      }
}

TEST(CpuGroupedMatmul, WgradAccumulatesAndLeavesEmptyExperts) {
  CpuBackend be(0);
  std::mt19937_64 rng(5);
  const int64_t E = 4, R = 6, S = 5;
  for (DType dt : kFloatTypes)
    for (const auto& off : kRaggedOffsets) {
      const int64_t M = off.back();
      HostTensor dY = uniform(dt, {M, R}, rng), X = uniform(dt, {M, S}, rng);
      HostTensor dW = uniform(dt, {E, R, S}, rng);
      const HostTensor before = dW;
      std::vector<double> want = before.values();
      for (int64_t r = 0; r < M; ++r) {
        const int64_t e = expert_of_row(off, r);
        for (int64_t i = 0; i < R; ++i)
          for (int64_t j = 0; j < S; ++j) want[e * R * S + i * S + j] += dY.get(r * R + i) * X.get(r * S + j);
      }
      be.grouped_matmul_wgrad(dY, X, indices({E + 1}, off), dW);
      EXPECT_LT(rel_err(dW, want), fwd_tol(dt)) << dtype_name(dt) << " M=" << M;
      for (int64_t e = 0; e < E; ++e)
        if (off[e] == off[e + 1]) {
          for (int64_t i = 0; i < R * S; ++i) EXPECT_EQ(dW.get(e * R * S + i), before.get(e * R * S + i));
        }
    }
}

TEST(CpuGroupedMatmul, RejectsBadOffsets) {
  CpuBackend be(0);
  HostTensor W(DType::F64, {2, 3, 4}), X(DType::F64, {5, 4}), Y(DType::F64, {5, 3});
  EXPECT_THROW(be.grouped_matmul(X, W, true, indices({3}, {1, 2, 5}), Y), Error);  // [0] != 0
  EXPECT_THROW(be.grouped_matmul(X, W, true, indices({3}, {0, 4, 2}), Y), Error);  // decreasing
  EXPECT_THROW(be.grouped_matmul(X, W, true, indices({3}, {0, 2, 4}), Y), Error);  // [E] != rows
  EXPECT_THROW(be.grouped_matmul(X, W, true, indices({2}, {0, 5}), Y), Error);     // wrong length
  EXPECT_THROW(be.grouped_matmul(X, W, false, indices({3}, {0, 2, 5}), Y), Error);  // X is [M,S]
}

// ---- add ------------------------------------------------------------------------------------

TEST(CpuAdd, ComputesAndAllowsAliasing) {
  CpuBackend be(0);
  std::mt19937_64 rng(6);
  for (DType dt : kFloatTypes) {
    HostTensor a = uniform(dt, {7, 9}, rng), b = uniform(dt, {7, 9}, rng), out(dt, {7, 9});
    std::vector<double> want(63);
    for (int i = 0; i < 63; ++i) want[i] = a.get(i) - 0.5 * b.get(i);
    out.poison();
    be.add(out, a, b, -0.5);
    EXPECT_LT(rel_err(out, want), fwd_tol(dt));
    be.add(a, a, b, -0.5);
    EXPECT_LT(rel_err(a, want), fwd_tol(dt));
  }
}

// ---- embedding ----------------------------------------------------------------------------

TEST(CpuEmbedding, ForwardGathersRows) {
  CpuBackend be(0);
  std::mt19937_64 rng(7);
  for (DType dt : kFloatTypes) {
    HostTensor W = uniform(dt, {11, 6}, rng), out(dt, {5, 6});
    const std::vector<int32_t> tok = {3, 0, 10, 3, 7};
    out.poison();
    be.embedding_fwd(W, indices({5}, tok), out);
    for (int n = 0; n < 5; ++n)
      for (int d = 0; d < 6; ++d) EXPECT_EQ(out.get(n * 6 + d), W.get(tok[n] * 6 + d));
  }
}

TEST(CpuEmbedding, BackwardMatchesFiniteDifferences) {
  CpuBackend be(0);
  std::mt19937_64 rng(8);
  const std::vector<int32_t> tok = {3, 0, 9, 3, 7, 3, 0, 1, 2, 9, 4, 4, 4};
  const int64_t V = 10, D = 5, N = static_cast<int64_t>(tok.size());
  HostTensor tokens = indices({N}, tok);
  HostTensor W = uniform(DType::F64, {V, D}, rng), w = uniform(DType::F64, {N, D}, rng);
  HostTensor out(DType::F64, {N, D});
  auto loss = [&] {
    be.embedding_fwd(W, tokens, out);
    return weighted_sum(out, w);
  };
  const std::vector<double> fd = fd_grad(W, loss);
  HostTensor dW = uniform(DType::F64, {V, D}, rng);
  const HostTensor before = dW;
  be.embedding_bwd(w, tokens, dW);
  EXPECT_LT(rel_err(added(dW, before), fd), kGradTol);
}

// ---- RMSNorm ---------------------------------------------------------------------------------

void rmsnorm_ref(const HostTensor& x, const HostTensor& w, double eps, std::vector<double>& y,
                 std::vector<double>& rstd) {
  const int64_t N = x.t().rows(), D = x.t().cols();
  y.assign(N * D, 0);
  rstd.assign(N, 0);
  for (int64_t n = 0; n < N; ++n) {
    double ss = 0;
    for (int64_t d = 0; d < D; ++d) ss += x.get(n * D + d) * x.get(n * D + d);
    rstd[n] = 1 / std::sqrt(ss / D + eps);
    for (int64_t d = 0; d < D; ++d) y[n * D + d] = x.get(n * D + d) * rstd[n] * w.get(d);
  }
}

TEST(CpuRmsNorm, ForwardMatchesReference) {
  CpuBackend be(0);
  std::mt19937_64 rng(9);
  for (DType dt : kFloatTypes)
    for (auto [N, D] : {std::pair<int64_t, int64_t>{1, 1}, {7, 13}, {130, 64}}) {
      HostTensor x = uniform(dt, {N, D}, rng), w = uniform(dt, {D}, rng, 0.5, 1.5);
      HostTensor y(dt, {N, D}), rstd(dt, {N});
      y.poison();
      rstd.poison();
      std::vector<double> y_ref, rstd_ref;
      rmsnorm_ref(x, w, 1e-5, y_ref, rstd_ref);
      be.rmsnorm_fwd(x, w, 1e-5, y, rstd);
      EXPECT_LT(rel_err(y, y_ref), fwd_tol(dt));
      EXPECT_LT(rel_err(rstd, rstd_ref), fwd_tol(dt));
    }
}

TEST(CpuRmsNorm, BackwardMatchesFiniteDifferences) {
  CpuBackend be(0);
  std::mt19937_64 rng(10);
  for (auto [N, D] : {std::pair<int64_t, int64_t>{3, 5}, {70, 4}}) {
    const DType dt = DType::F64;
    HostTensor x = uniform(dt, {N, D}, rng), w = uniform(dt, {D}, rng, 0.5, 1.5);
    HostTensor up = uniform(dt, {N, D}, rng), y(dt, {N, D}), rstd(dt, {N});
    auto loss = [&] {
      be.rmsnorm_fwd(x, w, 1e-5, y, rstd);
      return weighted_sum(y, up);
    };
    const std::vector<double> fd_x = fd_grad(x, loss), fd_w = fd_grad(w, loss);
    loss();
    HostTensor dx = uniform(dt, {N, D}, rng), dw = uniform(dt, {D}, rng);
    const HostTensor dx0 = dx, dw0 = dw;
    be.rmsnorm_bwd(up, x, w, rstd, dx, dw);
    EXPECT_LT(rel_err(added(dx, dx0), fd_x), kGradTol) << N << "x" << D;
    EXPECT_LT(rel_err(added(dw, dw0), fd_w), kGradTol) << N << "x" << D;
  }
}

TEST(CpuRmsNorm, BackwardF32MatchesF64) {
  CpuBackend be(0);
  std::mt19937_64 rng(11);
  const int64_t N = 67, D = 24;
  HostTensor x = uniform(DType::F32, {N, D}, rng), w = uniform(DType::F32, {D}, rng);
  HostTensor up = uniform(DType::F32, {N, D}, rng);
  auto run = [&](DType dt, std::vector<double>& dx_out, std::vector<double>& dw_out) {
    HostTensor xd(dt, {N, D}), wd(dt, {D}), ud(dt, {N, D}), y(dt, {N, D}), rstd(dt, {N});
    for (int64_t i = 0; i < N * D; ++i) xd.set(i, x.get(i)), ud.set(i, up.get(i));
    for (int64_t i = 0; i < D; ++i) wd.set(i, w.get(i));
    HostTensor dx = filled(dt, {N, D}, 0), dw = filled(dt, {D}, 0);
    be.rmsnorm_fwd(xd, wd, 1e-6, y, rstd);
    be.rmsnorm_bwd(ud, xd, wd, rstd, dx, dw);
    dx_out = dx.values();
    dw_out = dw.values();
  };
  std::vector<double> dx32, dw32, dx64, dw64;
  run(DType::F32, dx32, dw32);
  run(DType::F64, dx64, dw64);
  EXPECT_LT(rel_err(dx32, dx64), 1e-5);
  EXPECT_LT(rel_err(dw32, dw64), 1e-5);
}

// ---- SwiGLU -----------------------------------------------------------------------------------

TEST(CpuSwiglu, ForwardMatchesReference) {
  CpuBackend be(0);
  std::mt19937_64 rng(12);
  for (DType dt : kFloatTypes) {
    const int64_t N = 9, F = 13;
    HostTensor h13 = uniform(dt, {N, 2 * F}, rng, -4, 4), a(dt, {N, F});
    std::vector<double> want(N * F);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t f = 0; f < F; ++f) {
        const double h1 = h13.get(n * 2 * F + f), h3 = h13.get(n * 2 * F + F + f);
        want[n * F + f] = h1 / (1 + std::exp(-h1)) * h3;
      }
    a.poison();
    be.swiglu_fwd(h13, a);
    EXPECT_LT(rel_err(a, want), fwd_tol(dt));
  }
}

TEST(CpuSwiglu, BackwardMatchesFiniteDifferences) {
  CpuBackend be(0);
  std::mt19937_64 rng(13);
  const int64_t N = 6, F = 7;
  HostTensor h13 = uniform(DType::F64, {N, 2 * F}, rng, -4, 4), a(DType::F64, {N, F});
  HostTensor w = uniform(DType::F64, {N, F}, rng);
  const std::vector<double> fd = fd_grad(h13, [&] {
    be.swiglu_fwd(h13, a);
    return weighted_sum(a, w);
  });
  HostTensor dh13(DType::F64, {N, 2 * F});
  dh13.poison();
  be.swiglu_bwd(w, h13, dh13, Tensor());
  EXPECT_LT(rel_err(dh13, fd), kGradTol);
}

// swiglu_bwd can write the forward's activation again: the same bits as
// swiglu_fwd, and the same gradient as without it.
TEST(CpuSwiglu, BackwardWritesTheForwardActivationAgain) {
  CpuBackend be(0);
  std::mt19937_64 rng(14);
  for (DType dt : {DType::F32, DType::F64}) {
    const int64_t N = 5, F = 9;
    HostTensor h13 = uniform(dt, {N, 2 * F}, rng, -4, 4), g = uniform(dt, {N, F}, rng);
    HostTensor a(dt, {N, F}), again(dt, {N, F}), dh13(dt, {N, 2 * F}), dh13_again(dt, {N, 2 * F});
    again.poison();
    be.swiglu_fwd(h13, a);
    be.swiglu_bwd(g, h13, dh13, Tensor());
    be.swiglu_bwd(g, h13, dh13_again, again);
    EXPECT_EQ(std::memcmp(a.t().data, again.t().data, a.t().nbytes()), 0) << dtype_name(dt);
    EXPECT_EQ(std::memcmp(dh13.t().data, dh13_again.t().data, dh13.t().nbytes()), 0) << dtype_name(dt);
  }
  HostTensor h13(DType::F32, {2, 6}), g(DType::F32, {2, 3}), dh13(DType::F32, {2, 6});
  EXPECT_THROW(be.swiglu_bwd(g, h13, dh13, HostTensor(DType::F32, {2, 4})), Error);
  EXPECT_THROW(be.swiglu_bwd(g, h13, dh13, HostTensor(DType::F64, {2, 3})), Error);
  EXPECT_THROW(be.swiglu_bwd(g, h13, dh13, Tensor(dh13.t().data, DType::F32, Shape{2, 3})), Error);  // overlaps
}

}  // namespace
}  // namespace nmoe::cputest
