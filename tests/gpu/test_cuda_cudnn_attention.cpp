// cuDNN fused attention (NMOE_ATTN=cudnn, BF16) vs the CPU F32 reference on
// bf16-rounded inputs: relative L2 1e-2 for out and dqkv, 1e-3 for lse; T not a
// multiple of any tile; the calls must run on cuDNN (not a fallback) except at
// T = 1; bit-identical reruns; and a disabled timing of cuDNN and the flash
// kernels at B=16, T=2048, H=12, Dh=64:
//   nmoe_gpu_tests --gtest_also_run_disabled_tests --gtest_filter='CudaCudnnAttention.*'
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>

#include "backend/cuda/cuda_cudnn_attention.h"
#include "core/error.h"
#include "bf16_test_util.h"
#include "gpu_test_util.h"

namespace nmoe::gputest {
namespace {


#define NMOE_SKIP_WITHOUT_CUDNN()                                                          \
  do {                                                                                     \
    NMOE_SKIP_WITHOUT_CUDA();                                                              \
    if (!::nmoe::cuda::cudnn_attention_built()) GTEST_SKIP() << "built without cuDNN";     \
  } while (0)



struct Case {
  int64_t B;
  int T;
  int64_t H, Dh;
};

std::string name(const Case& c) {
  return "B" + std::to_string(c.B) + " T" + std::to_string(c.T) + " H" + std::to_string(c.H) +
         " Dh" + std::to_string(c.Dh);
}

TEST(CudaCudnnAttention, MatchesCpu) {
  NMOE_SKIP_WITHOUT_CUDNN();
  ScopedEnv cudnn("NMOE_ATTN", "cudnn");
  std::mt19937_64 rng(2025);
  for (const int64_t Dh : {64, 128}) {
    for (const int T : {1, 17, 128, 300, 2048}) {
      for (const int64_t B : {1, 2}) {
        const Case c{B, T, T >= 2048 ? 2 : 3, Dh};
        const int64_t N = c.B * c.T;
        const double scale = 1.0 / std::sqrt(static_cast<double>(c.Dh));
        HostTensor qkv = rounded(uniform(F, Shape{N, 3, c.H, c.Dh}, rng, -2, 2));
        HostTensor o(F, Shape{N, c.H * c.Dh}), lse(F, Shape{c.B, c.H, c.T});
        cpu().attention_fwd(qkv, c.T, scale, o, lse);
        auto d_qkv = to_bf16(qkv);
        DevTensor d_o(BF, Shape{N, c.H * c.Dh}), d_lse(F, Shape{c.B, c.H, c.T});
        d_o.poison();
        d_lse.poison();
        const int64_t fwd_runs = cuda::cudnn_attention_runs(false);
        gpu().attention_fwd(*d_qkv, c.T, scale, d_o, d_lse);
        const bool fwd_cudnn = cuda::cudnn_attention_runs(false) == fwd_runs + 1;
        if (c.T > 1) {
          EXPECT_TRUE(fwd_cudnn) << "forward did not run on cuDNN: " << name(c);
        }
        NMOE_EXPECT_CLOSE(down(d_o), o, 1e-2) << name(c);
        NMOE_EXPECT_CLOSE(d_lse.download(), lse, 1e-3) << name(c);

        // Backward from the reference out (rounded to bf16) and lse, as both sides see them.
        HostTensor o_in = rounded(o);
        HostTensor g = rounded(uniform(F, Shape{N, c.H * c.Dh}, rng));
        HostTensor dqkv(F, Shape{N, 3, c.H, c.Dh});
        cpu().attention_bwd(g, qkv, o_in, lse, c.T, scale, dqkv);
        auto d_oin = to_bf16(o_in), d_g = to_bf16(g);
        DevTensor d_lse_in(lse), d_dqkv(BF, Shape{N, 3, c.H, c.Dh});
        d_dqkv.poison();
        const int64_t bwd_runs = cuda::cudnn_attention_runs(true);
        gpu().attention_bwd(*d_g, *d_qkv, *d_oin, d_lse_in, c.T, scale, d_dqkv);
        const bool bwd_cudnn = cuda::cudnn_attention_runs(true) == bwd_runs + 1;
        if (c.T > 1) {
          EXPECT_TRUE(bwd_cudnn) << "backward did not run on cuDNN: " << name(c);
        }
        NMOE_EXPECT_CLOSE(down(d_dqkv), dqkv, 1e-2) << name(c);
        if (c.T == 1)
          std::printf("[info] %s: forward on %s, backward on %s\n", name(c).c_str(),
                      fwd_cudnn ? "cuDNN" : "the fallback", bwd_cudnn ? "cuDNN" : "the fallback");
      }
    }
  }
}

// The forward lse of cuDNN feeds the backward; both sides are bit-identical
// when run again on the same inputs.
TEST(CudaCudnnAttention, Deterministic) {
  NMOE_SKIP_WITHOUT_CUDNN();
  ScopedEnv cudnn("NMOE_ATTN", "cudnn");
  std::mt19937_64 rng(8);
  for (const Case& c : {Case{2, 300, 3, 64}, Case{1, 2048, 2, 128}, Case{4, 1024, 4, 64}}) {
    const int64_t N = c.B * c.T;
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.Dh));
    auto qkv = to_bf16(rounded(uniform(F, Shape{N, 3, c.H, c.Dh}, rng, -2, 2)));
    auto g = to_bf16(rounded(uniform(F, Shape{N, c.H * c.Dh}, rng)));
    HostTensor first[3];
    for (int run = 0; run < 3; ++run) {
      DevTensor o(BF, Shape{N, c.H * c.Dh}), lse(F, Shape{c.B, c.H, c.T});
      DevTensor dqkv(BF, Shape{N, 3, c.H, c.Dh});
      o.poison();
      lse.poison();
      dqkv.poison();
      const int64_t runs = cuda::cudnn_attention_runs(false) + cuda::cudnn_attention_runs(true);
      gpu().attention_fwd(*qkv, c.T, scale, o, lse);
      gpu().attention_bwd(*g, *qkv, o, lse, c.T, scale, dqkv);
      EXPECT_EQ(cuda::cudnn_attention_runs(false) + cuda::cudnn_attention_runs(true), runs + 2)
          << "not run on cuDNN: " << name(c);
      HostTensor got[3] = {o.download(), lse.download(), dqkv.download()};
      if (run == 0) {
        for (int i = 0; i < 3; ++i) first[i] = got[i];
      } else {
        for (int i = 0; i < 3; ++i) NMOE_EXPECT_SAME(got[i], first[i]) << "output " << i << " " << name(c);
      }
    }
  }
}

// Many heads of long sequences: the backward runs over slices of the batch to
// bound cuDNN's deterministic workspace (B=6, T=2048, H=48: 384 MiB per
// sequence, two slices of 3). The result must match the flash kernels
// (themselves checked against the CPU).
TEST(CudaCudnnAttention, BackwardInBatchSlicesMatchesFlash) {
  NMOE_SKIP_WITHOUT_CUDNN();
  EXPECT_EQ(cuda::cudnn_attention_bwd_batch_slice(16, 2048, 12), 16);
  EXPECT_EQ(cuda::cudnn_attention_bwd_batch_slice(32, 2048, 12), 16);
  EXPECT_EQ(cuda::cudnn_attention_bwd_batch_slice(6, 2048, 48), 3);
  EXPECT_EQ(cuda::cudnn_attention_bwd_batch_slice(7, 2048, 48), 1);
  EXPECT_EQ(cuda::cudnn_attention_bwd_batch_slice(8, 256, 4), 8);
  const int64_t B = 6, T = 2048, H = 48, Dh = 64, N = B * T;
  std::mt19937_64 rng(11);
  const double scale = 0.125;
  auto qkv = to_bf16(rounded(uniform(F, Shape{N, 3, H, Dh}, rng, -2, 2)));
  auto g = to_bf16(rounded(uniform(F, Shape{N, H * Dh}, rng)));
  DevTensor o(BF, Shape{N, H * Dh}), lse(F, Shape{B, H, T});
  {
    ScopedEnv flash("NMOE_ATTN", "flash");
    gpu().attention_fwd(*qkv, int(T), scale, o, lse);
  }
  HostTensor want, got;
  for (const char* impl : {"flash", "cudnn"}) {
    ScopedEnv use("NMOE_ATTN", impl);
    DevTensor dqkv(BF, Shape{N, 3, H, Dh});
    dqkv.poison();
    const int64_t runs = cuda::cudnn_attention_runs(true);
    gpu().attention_bwd(*g, *qkv, o, lse, int(T), scale, dqkv);
    EXPECT_EQ(cuda::cudnn_attention_runs(true) - runs, std::string(impl) == "cudnn" ? 1 : 0) << impl;
    (std::string(impl) == "flash" ? want : got) = down(dqkv);
  }
  NMOE_EXPECT_CLOSE(got, want, 1e-2);
}

TEST(CudaCudnnAttention, RejectsUnknownImplementation) {
  NMOE_SKIP_WITHOUT_CUDA();
  ScopedEnv bogus("NMOE_ATTN", "fastest");
  const int64_t T = 4, H = 1, Dh = 64;
  DevTensor qkv(BF, Shape{T, 3, H, Dh}), o(BF, Shape{T, H * Dh}), lse(F, Shape{1, H, T});
  gpu().fill(qkv, 0.5);
  EXPECT_THROW(gpu().attention_fwd(qkv, int(T), 0.125, o, lse), Error);
}

TEST(CudaCudnnAttention, DISABLED_Bench) {
  NMOE_SKIP_WITHOUT_CUDA();
  const int64_t B = 16, T = 2048, H = 12, Dh = 64, N = B * T;
  std::mt19937_64 rng(3);
  auto qkv = to_bf16(rounded(uniform(F, Shape{N, 3, H, Dh}, rng, -2, 2)));
  auto g = to_bf16(rounded(uniform(F, Shape{N, H * Dh}, rng)));
  DevTensor o(BF, Shape{N, H * Dh}), lse(F, Shape{B, H, T}), dqkv(BF, Shape{N, 3, H, Dh});
  const double scale = 0.125;
  auto time_ms = [](const std::function<void()>& op) { return mean_ms(op, 20); };
  const double fwd_gflop = 4.0 * B * H * T * T / 2 * Dh * 1e-9;
  for (const char* impl : {"cudnn", "flash"}) {
    ScopedEnv use("NMOE_ATTN", impl);
    const int64_t runs = cuda::cudnn_attention_runs(false) + cuda::cudnn_attention_runs(true);
    const double fwd = time_ms([&] { gpu().attention_fwd(*qkv, int(T), scale, o, lse); });
    const double bwd = time_ms([&] { gpu().attention_bwd(*g, *qkv, o, lse, int(T), scale, dqkv); });
    const int64_t on_cudnn =
        cuda::cudnn_attention_runs(false) + cuda::cudnn_attention_runs(true) - runs;
    std::printf("[bench] attention %s BF16 B=%ld T=%ld H=%ld Dh=%ld: fwd %.3f ms %.1f TFLOP/s, "
                "bwd %.3f ms %.1f TFLOP/s (%ld of %d calls on cuDNN)\n",
                impl, long(B), long(T), long(H), long(Dh), fwd, fwd_gflop / fwd, bwd,
                2.5 * fwd_gflop / bwd, long(on_cudnn), 2 * 21);
  }
}

}  // namespace
}  // namespace nmoe::gputest
