// CUDA causal attention vs the CPU reference: T not a multiple of the tile,
// head dims 8..128, up to T = 2048.
#include <cmath>
#include <tuple>

#include "gpu_test_util.h"

namespace nmoe::gputest {
namespace {

constexpr DType F = DType::F32;

struct AttnCase {
  int64_t B;
  int T;
  int64_t H, Dh;
};

const AttnCase kCases[] = {{1, 1, 1, 16}, {3, 33, 2, 8}, {2, 65, 2, 32},
                           {2, 100, 3, 64}, {1, 300, 4, 128}, {1, 2048, 2, 64}};

TEST(CudaAttention, ForwardMatchesCpu) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(11);
  for (const AttnCase& c : kCases) {
    const int64_t N = c.B * c.T;
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.Dh));
    HostTensor qkv = uniform(F, Shape{N, 3, c.H, c.Dh}, rng, -2, 2);
    HostTensor out = poisoned(F, Shape{N, c.H * c.Dh}), lse = poisoned(F, Shape{c.B, c.H, c.T});
    DevTensor dqkv(qkv), dout(out), dlse(lse);
    cpu().attention_fwd(qkv, c.T, scale, out, lse);
    gpu().attention_fwd(dqkv, c.T, scale, dout, dlse);
    NMOE_EXPECT_CLOSE(dout.download(), out, kTol) << "B" << c.B << " T" << c.T << " Dh" << c.Dh;
    NMOE_EXPECT_CLOSE(dlse.download(), lse, kTol) << "B" << c.B << " T" << c.T << " Dh" << c.Dh;
  }
}

TEST(CudaAttention, BackwardMatchesCpu) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(12);
  for (const AttnCase& c : kCases) {
    const int64_t N = c.B * c.T;
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.Dh));
    HostTensor qkv = uniform(F, Shape{N, 3, c.H, c.Dh}, rng, -2, 2);
    HostTensor out(F, Shape{N, c.H * c.Dh}), lse(F, Shape{c.B, c.H, c.T});
    cpu().attention_fwd(qkv, c.T, scale, out, lse);
    HostTensor g = uniform(F, Shape{N, c.H * c.Dh}, rng);
    HostTensor dqkv = poisoned(F, Shape{N, 3, c.H, c.Dh});
    DevTensor d_qkv(qkv), d_out(out), d_lse(lse), d_g(g), d_dqkv(dqkv);
    cpu().attention_bwd(g, qkv, out, lse, c.T, scale, dqkv);
    gpu().attention_bwd(d_g, d_qkv, d_out, d_lse, c.T, scale, d_dqkv);
    NMOE_EXPECT_CLOSE(d_dqkv.download(), dqkv, kTol) << "B" << c.B << " T" << c.T << " Dh" << c.Dh;
  }
}

TEST(CudaAttention, RejectsUnsupportedShapes) {
  NMOE_SKIP_WITHOUT_CUDA();
  DevTensor qkv(F, Shape{8, 3, 1, 256}), out(F, Shape{8, 256}), lse(F, Shape{1, 1, 8});
  EXPECT_THROW(gpu().attention_fwd(qkv, 8, 1.0, out, lse), Error);  // head dim > 128
  DevTensor qkv2(F, Shape{8, 3, 1, 16}), out2(F, Shape{8, 16});
  EXPECT_THROW(gpu().attention_fwd(qkv2, 3, 1.0, out2, lse), Error);  // T does not divide N
}

}  // namespace
}  // namespace nmoe::gputest
