// CUDA chunked cross-entropy, sum of squares and AdamW vs the CPU reference.
#include "gpu_test_util.h"

namespace nmoe::gputest {
namespace {

constexpr DType F = DType::F32;

struct CeCase {
  int64_t N, D, V, chunk;
};

TEST(CudaLoss, CrossEntropyChunked) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(31);
  // V % 4 == 0 (1000, 50304) runs the register-resident row kernel, the others the general one.
  for (CeCase c : {CeCase{1, 8, 5, 1}, {37, 64, 1000, 16}, {300, 96, 5003, 128}, {64, 32, 50, 1000},
                   {40, 32, 50304, 16}}) {
    HostTensor h = uniform(F, Shape{c.N, c.D}, rng), W = uniform(F, Shape{c.V, c.D}, rng);
    HostTensor tgt = random_ids(Shape{c.N}, 0, static_cast<int32_t>(c.V - 1), rng);
    const int64_t ignore = c.V > 3 ? 3 : -1;
    for (int64_t i = 0; i < c.N; i += 5) tgt.t().ptr<int32_t>()[i] = static_cast<int32_t>(ignore);
    if (c.N > 2) tgt.t().ptr<int32_t>()[2] = -5;  // negative: ignored too
    DevTensor dh_(h), dW_(W), dtgt(tgt);
    // Loss only.
    HostTensor loss = scalar(1.5);
    DevTensor dloss(loss);
    cpu().cross_entropy(h, W, tgt, ignore, 0.0, c.chunk, loss, Tensor(), Tensor());
    gpu().cross_entropy(dh_, dW_, dtgt, ignore, 0.0, c.chunk, dloss, Tensor(), Tensor());
    NMOE_EXPECT_CLOSE(dloss.download(), loss, kTol);
    // With gradients.
    HostTensor gh = poisoned(F, Shape{c.N, c.D}), gW = uniform(F, Shape{c.V, c.D}, rng);
    DevTensor dgh(gh), dgW(gW);
    cpu().cross_entropy(h, W, tgt, ignore, 0.01, c.chunk, loss, gh, gW);
    gpu().cross_entropy(dh_, dW_, dtgt, ignore, 0.01, c.chunk, dloss, dgh, dgW);
    NMOE_EXPECT_CLOSE(dloss.download(), loss, kTol) << "N " << c.N << " V " << c.V;
    NMOE_EXPECT_CLOSE(dgh.download(), gh, kTol) << "N " << c.N << " V " << c.V;
    NMOE_EXPECT_CLOSE(dgW.download(), gW, kTol) << "N " << c.N << " V " << c.V;
  }
}

TEST(CudaOptim, SumSquares) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(32);
  for (int64_t n : {1, 1000, 1000003, 20000000}) {
    HostTensor x = uniform(F, Shape{n}, rng), out = scalar(2.0);
    DevTensor dx(x), dout(out);
    cpu().sum_squares(x, out);
    gpu().sum_squares(dx, dout);
    NMOE_EXPECT_CLOSE(dout.download(), out, 1e-10) << "n " << n;
  }
}

TEST(CudaOptim, AdamW) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(33);
  for (double max_norm : {0.0, 0.5, 1e9}) {
    const int64_t n = 100003;
    HostTensor p = uniform(F, Shape{n}, rng), g = uniform(F, Shape{n}, rng);
    HostTensor m = uniform(F, Shape{n}, rng, -0.1, 0.1), v = uniform(F, Shape{n}, rng, 0, 0.01);
    HostTensor gns = scalar(123.0);
    DevTensor dp(p), dg(g), dm(m), dv(v), dgns(gns);
    AdamWParams a;
    a.lr = 3e-3;
    a.weight_decay = 0.1;
    a.max_norm = max_norm;
    for (int64_t step = 1; step <= 3; ++step) {
      a.step = step;
      cpu().adamw(p, g, m, v, a, gns);
      gpu().adamw(dp, dg, dm, dv, a, dgns);
    }
    NMOE_EXPECT_CLOSE(dp.download(), p, kTol) << "max_norm " << max_norm;
    NMOE_EXPECT_CLOSE(dm.download(), m, kTol) << "max_norm " << max_norm;
    NMOE_EXPECT_CLOSE(dv.download(), v, kTol) << "max_norm " << max_norm;
  }
}

}  // namespace
}  // namespace nmoe::gputest
