// CPU backend: results are bit-identical for any number of OpenMP threads.
#include <omp.h>

#include <functional>
#include <vector>

#include "cpu_test_util.h"

namespace nmoe::cputest {
namespace {

// Runs `op` (which returns its outputs) with 1 thread and with 2..4 threads
// and requires every output to be byte-for-byte equal.
void expect_thread_count_invariant(const char* what,
                                   const std::function<std::vector<HostTensor>()>& op) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<HostTensor> serial = op();
  for (int threads : {2, 3, 4}) {
    omp_set_num_threads(threads);
    const std::vector<HostTensor> parallel = op();
    ASSERT_EQ(parallel.size(), serial.size());
    for (size_t i = 0; i < serial.size(); ++i)
      EXPECT_TRUE(parallel[i].bytes_equal(serial[i])) << what << " output " << i << " with "
                                                      << threads << " threads";
  }
  omp_set_num_threads(saved);
}

TEST(CpuDeterminism, RmsNormBackward) {
  CpuBackend be(0);
  std::mt19937_64 rng(60);
  const int64_t N = 1000, D = 96;
  for (DType dt : kFloatTypes) {
    HostTensor x = uniform(dt, {N, D}, rng), w = uniform(dt, {D}, rng), dy = uniform(dt, {N, D}, rng);
    HostTensor y(dt, {N, D}), rstd(dt, {N});
    be.rmsnorm_fwd(x, w, 1e-5, y, rstd);
    expect_thread_count_invariant("rmsnorm_bwd", [&] {
      HostTensor dx = filled(dt, {N, D}, 0.5), dw = filled(dt, {D}, 0.5);
      be.rmsnorm_bwd(dy, x, w, rstd, dx, dw);
      return std::vector<HostTensor>{dx, dw};
    });
  }
}

TEST(CpuDeterminism, SumSquaresAndEmbeddingBackward) {
  CpuBackend be(0);
  std::mt19937_64 rng(61);
  for (DType dt : kFloatTypes) {
    HostTensor x = uniform(dt, {300001}, rng);
    expect_thread_count_invariant("sum_squares", [&] {
      HostTensor out = scalar_f64(0.1);
      be.sum_squares(x, out);
      return std::vector<HostTensor>{out};
    });
    const int64_t N = 2000, V = 50, D = 24;
    HostTensor tokens(DType::I32, {N});
    for (int64_t i = 0; i < N; ++i) tokens.set(i, static_cast<double>(rng() % V));
    HostTensor dout = uniform(dt, {N, D}, rng);
    expect_thread_count_invariant("embedding_bwd", [&] {
      HostTensor dW = filled(dt, {V, D}, 0.25);
      be.embedding_bwd(dout, tokens, dW);
      return std::vector<HostTensor>{dW};
    });
  }
}

TEST(CpuDeterminism, DenseAndGroupedGemms) {
  CpuBackend be(0);
  std::mt19937_64 rng(65);
  for (DType dt : kFloatTypes) {
    const int64_t M = 300, K = 700, N = 600, E = 3;
    HostTensor A = uniform(dt, {K, M}, rng), B = uniform(dt, {N, K}, rng);
    expect_thread_count_invariant("matmul", [&] {
      HostTensor C = filled(dt, {M, N}, 1.0);
      be.matmul(A, true, B, true, C, 0.5, 1.0);
      return std::vector<HostTensor>{C};
    });
    const HostTensor offsets = indices({E + 1}, {0, 250, 250, M});
    HostTensor X = uniform(dt, {M, K}, rng), W = uniform(dt, {E, N, K}, rng), dY = uniform(dt, {M, N}, rng);
    expect_thread_count_invariant("grouped_matmul + wgrad", [&] {
      HostTensor Y(dt, {M, N}), dW = filled(dt, {E, N, K}, 0);
      be.grouped_matmul(X, W, true, offsets, Y);
      be.grouped_matmul_wgrad(dY, X, offsets, dW);
      return std::vector<HostTensor>{Y, dW};
    });
  }
}

TEST(CpuDeterminism, CrossEntropy) {
  CpuBackend be(0);
  std::mt19937_64 rng(62);
  const int64_t N = 300, D = 64, V = 515;
  for (DType dt : kFloatTypes) {
    HostTensor h = uniform(dt, {N, D}, rng), W = uniform(dt, {V, D}, rng);
    HostTensor targets(DType::I32, {N});
    for (int64_t i = 0; i < N; ++i) targets.set(i, i % 17 == 0 ? -100.0 : static_cast<double>(rng() % V));
    expect_thread_count_invariant("cross_entropy", [&] {
      HostTensor loss = scalar_f64(), dh(dt, {N, D}), dW = filled(dt, {V, D}, 0);
      be.cross_entropy(h, W, targets, -100, 1.0 / N, 128, loss, dh, dW);
      return std::vector<HostTensor>{loss, dh, dW};
    });
  }
}

TEST(CpuDeterminism, Attention) {
  CpuBackend be(0);
  std::mt19937_64 rng(63);
  const int64_t B = 2, T = 48, H = 3, Dh = 32, N = B * T;
  for (DType dt : kFloatTypes) {
    HostTensor qkv = uniform(dt, {N, 3, H, Dh}, rng), dout = uniform(dt, {N, H * Dh}, rng);
    expect_thread_count_invariant("attention", [&] {
      HostTensor out(dt, {N, H * Dh}), lse(dt, {B, H, T}), dqkv(dt, {N, 3, H, Dh});
      be.attention_fwd(qkv, static_cast<int>(T), 0.17, out, lse);
      be.attention_bwd(dout, qkv, out, lse, static_cast<int>(T), 0.17, dqkv);
      return std::vector<HostTensor>{out, lse, dqkv};
    });
  }
}

TEST(CpuDeterminism, RouterAndAuxLoss) {
  CpuBackend be(0);
  std::mt19937_64 rng(64);
  const int64_t N = 500, E = 16, K = 4;
  HostTensor logits = uniform(DType::F32, {N, E}, rng), bias = uniform(DType::F32, {E}, rng, -0.1, 0.1);
  RouterParams p;
  p.top_k = K;
  expect_thread_count_invariant("router + aux loss", [&] {
    HostTensor scores(DType::F32, {N, E}), idx(DType::I32, {N, K}), gates(DType::F32, {N, K});
    HostTensor counts = filled(DType::I32, {E}, 0), loss = scalar_f64();
    HostTensor dgates = filled(DType::F32, {N, K}, 0), dlogits(DType::F32, {N, E});
    be.router_fwd(logits, bias, p, scores, idx, gates, counts);
    be.moe_aux_loss(gates, idx, static_cast<int>(E), 0.01, loss, dgates);
    be.router_bwd(dgates, scores, idx, p, dlogits);
    return std::vector<HostTensor>{scores, idx, gates, counts, loss, dgates, dlogits};
  });
}

}  // namespace
}  // namespace nmoe::cputest
