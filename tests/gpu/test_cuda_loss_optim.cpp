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

// adamw_copy on F32 weights with a BF16 copy runs fused (4 elements per
// thread from 16-byte aligned buffers, else one): the same bytes as adamw
// followed by convert, at any length and start; an F32 copy takes the default.
TEST(CudaOptim, AdamWCopyIsAdamWThenConvert) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(34);
  struct Case { int64_t n; size_t shift; DType copy; };
  for (Case c : {Case{1, 0, DType::BF16}, {3, 0, DType::BF16}, {4, 0, DType::BF16},
                 {7, 0, DType::BF16}, {100003, 0, DType::BF16}, {100003, 4, DType::BF16},
                 {1001, 8, DType::BF16}, {1001, 0, DType::F32}}) {
    HostTensor p = uniform(F, Shape{c.n}, rng), g = uniform(F, Shape{c.n}, rng);
    HostTensor m = uniform(F, Shape{c.n}, rng, -0.1, 0.1), v = uniform(F, Shape{c.n}, rng, 0, 0.01);
    HostTensor gns = scalar(0.3);
    DevTensor dgns(gns);
    // [0]: adamw_copy, [1]: adamw then convert; buffers `shift` bytes past alignment.
    std::unique_ptr<ShiftedTensor> t[2][5];
    for (int k = 0; k < 2; ++k) {
      for (int j = 0; j < 4; ++j) t[k][j] = std::make_unique<ShiftedTensor>(F, Shape{c.n}, c.shift);
      t[k][4] = std::make_unique<ShiftedTensor>(c.copy, Shape{c.n}, c.shift / 2);
      gpu().copy_from_host(*t[k][0], p.t().data);
      gpu().copy_from_host(*t[k][1], g.t().data);
      gpu().copy_from_host(*t[k][2], m.t().data);
      gpu().copy_from_host(*t[k][3], v.t().data);
      gpu().fill(*t[k][4], std::nan(""));
    }
    AdamWParams a;
    a.lr = 3e-3;
    a.weight_decay = 0.1;
    a.max_norm = 0.5;
    for (int64_t step = 1; step <= 2; ++step) {
      a.step = step;
      gpu().adamw_copy(*t[0][0], *t[0][1], *t[0][2], *t[0][3], a, dgns, *t[0][4]);
      gpu().adamw(*t[1][0], *t[1][1], *t[1][2], *t[1][3], a, dgns);
      gpu().convert(*t[1][4], *t[1][0]);
    }
    for (int j = 0; j < 5; ++j) {
      const Tensor& x = *t[0][j];
      const Tensor& y = *t[1][j];
      HostTensor hx(x.dtype, x.shape), hy(y.dtype, y.shape);
      gpu().copy_to_host(hx.t().data, x);
      gpu().copy_to_host(hy.t().data, y);
      NMOE_EXPECT_SAME(hx, hy) << "buffer " << j << " n " << c.n << " shift " << c.shift << " copy "
                               << dtype_name(c.copy);
    }
  }
}

}  // namespace
}  // namespace nmoe::gputest
