// Timings of the memory-bound ops of the CUDA backend at the "super" shapes
// (16 x 2048 tokens, dim 768, 12 heads of 64, 256 experts top-7 of width 384,
// BF16 activations), each with the bandwidth it reaches: the bytes it must
// read and write at least, over its time. A device-to-device copy of 1 GiB
// gives the ceiling. Disabled by default; run with
//   nmoe_gpu_tests --gtest_also_run_disabled_tests --gtest_filter='CudaMemoryBoundBench.*'
#include <cstdio>
#include <functional>
#include <utility>
#include <vector>

#include "gpu_test_util.h"

namespace nmoe::gputest {
namespace {

constexpr DType F = DType::F32;
constexpr DType BF = DType::BF16;


// bytes: the least an op must read plus write; ceiling: the copy's GB/s.
double report(const char* name, double ms, double bytes, double ceiling = 0) {
  const double gbs = bytes / ms * 1e-6;
  std::printf("  %-34s %9.3f ms  %8.1f MB  %7.0f GB/s", name, ms, bytes * 1e-6, gbs);
  if (ceiling > 0) std::printf("  %5.1f%% of copy", 100 * gbs / ceiling);
  std::printf("\n");
  return gbs;
}

TEST(CudaMemoryBoundBench, DISABLED_SuperShapes) {
  NMOE_SKIP_WITHOUT_CUDA();
  const int64_t B = 16, T = 2048, N = B * T, D = 768, H = 12, Dh = 64, E = 256, K = 7, Fe = 384;
  const int64_t M = N * K;
  const double b2 = 2, b4 = 4;  // bytes per bf16 / fp32 element
  std::printf("[bench] memory-bound ops: N=%ld D=%ld H=%ld Dh=%ld E=%ld K=%ld Fe=%ld (BF16)\n",
              long(N), long(D), long(H), long(Dh), long(E), long(K), long(Fe));

  // Ceiling: device-to-device copy of 1 GiB (cudaMemcpyAsync), read + write.
  const int64_t copy_bytes = int64_t(1) << 30;
  double ceiling = 0;
  {
    DevTensor a(DType::U8, Shape{copy_bytes}), b(DType::U8, Shape{copy_bytes});
    gpu().fill(a, 1);
    ceiling = report("copy 1 GiB (D2D memcpy)", mean_ms([&] { gpu().copy(b, a); }, 10),
                     2.0 * copy_bytes);
  }

  // Routing of random tokens: K distinct experts per token, the stable plan.
  std::mt19937_64 rng(7);
  HostTensor idx(DType::I32, Shape{N, K});
  std::vector<int32_t> perm(E);
  for (int64_t t = 0; t < N; ++t) {
    for (int32_t e = 0; e < E; ++e) perm[e] = e;
    for (int64_t k = 0; k < K; ++k) {
      std::uniform_int_distribution<int64_t> pick(k, E - 1);
      std::swap(perm[k], perm[pick(rng)]);
      idx.t().ptr<int32_t>()[t * K + k] = perm[k];
    }
  }
  HostTensor off(DType::I32, Shape{E + 1}), pos(DType::I32, Shape{M});
  cpu().moe_plan(idx, int(E), off, pos);
  DevTensor dpos(pos), gates(F, Shape{N, K}), dgates(F, Shape{N, K});
  gpu().fill(gates, 1.0 / K);

  DevTensor x(BF, Shape{N, D}), y(BF, Shape{N, D}), g(BF, Shape{N, D}), w(BF, Shape{D});
  DevTensor rstd(F, Shape{N}), dw(F, Shape{D});
  DevTensor xe(BF, Shape{M, D}), ye(BF, Shape{M, D});
  for (const DevTensor* t : {&x, &y, &g, &w, &xe, &ye}) gpu().fill(*t, 0.01);
  gpu().fill(dw, 0);
  const double act = N * D * b2, rows = M * D * b2, pos_b = M * 4.0, gate_b = M * b4;

  std::printf(" MoE permutation\n");
  report("moe_dispatch", mean_ms([&] { gpu().moe_dispatch(x, dpos, int(K), xe); }, 20),
         act + rows + pos_b, ceiling);
  report("moe_dispatch_bwd", mean_ms([&] { gpu().moe_dispatch_bwd(xe, dpos, int(K), y); }, 20),
         rows + 2 * act + pos_b, ceiling);
  report("moe_combine", mean_ms([&] { gpu().moe_combine(ye, dpos, gates, y); }, 20),
         rows + 2 * act + pos_b + gate_b, ceiling);
  report("moe_combine_bwd",
         mean_ms([&] { gpu().moe_combine_bwd(g, ye, dpos, gates, xe, dgates); }, 20),
         act + 2 * rows + pos_b + 2 * gate_b, ceiling);

  std::printf(" SwiGLU (M = N*K rows)\n");
  {
    DevTensor h13(BF, Shape{M, 2 * Fe}), a(BF, Shape{M, Fe}), dh13(BF, Shape{M, 2 * Fe});
    DevTensor again(BF, Shape{M, Fe});
    for (const DevTensor* t : {&h13, &a}) gpu().fill(*t, 0.01);
    report("swiglu_fwd", mean_ms([&] { gpu().swiglu_fwd(h13, a); }, 20), M * 3 * Fe * b2, ceiling);
    report("swiglu_bwd", mean_ms([&] { gpu().swiglu_bwd(a, h13, dh13, Tensor()); }, 20), M * 5 * Fe * b2,
           ceiling);
    report("swiglu_bwd writing a", mean_ms([&] { gpu().swiglu_bwd(a, h13, dh13, again); }, 20),
           M * 6 * Fe * b2, ceiling);
  }

  std::printf(" RMSNorm, RoPE\n");
  report("rmsnorm_fwd", mean_ms([&] { gpu().rmsnorm_fwd(x, w, 1e-6, y, rstd); }, 20),
         2 * act + D * b2 + N * b4, ceiling);
  gpu().fill(rstd, 1.0);
  report("rmsnorm_bwd", mean_ms([&] { gpu().rmsnorm_bwd(g, x, w, rstd, y, dw); }, 20),
         4 * act + D * b2 + N * b4 + 2 * D * b4, ceiling);
  {
    DevTensor qkv(BF, Shape{N, 3, H, Dh}), cs(F, Shape{T, Dh / 2}), sn(F, Shape{T, Dh / 2});
    for (const DevTensor* t : {&qkv, &cs, &sn}) gpu().fill(*t, 0.5);
    report("rope (q and k in place)", mean_ms([&] { gpu().rope(qkv, cs, sn, int(T), false); }, 20),
           2.0 * N * 2 * H * Dh * b2 + 2.0 * T * (Dh / 2) * b4, ceiling);
  }

  // Parameter-sized buffers: 512M elements (2 GiB in fp32).
  std::printf(" fill, convert, optimizer (P = 512M)\n");
  const int64_t P = int64_t(512) << 20;
  {
    DevTensor p32(F, Shape{P}), p16(BF, Shape{P});
    report("fill F32 zero (memset)", mean_ms([&] { gpu().fill(p32, 0); }, 5), P * b4, ceiling);
    report("fill F32 value", mean_ms([&] { gpu().fill(p32, 0.25); }, 5), P * b4, ceiling);
    report("fill BF16 value", mean_ms([&] { gpu().fill(p16, 0.25); }, 5), P * b2, ceiling);
    report("convert F32 -> BF16", mean_ms([&] { gpu().convert(p16, p32); }, 5), P * (b4 + b2),
           ceiling);
    report("convert BF16 -> F32", mean_ms([&] { gpu().convert(p32, p16); }, 5), P * (b4 + b2),
           ceiling);
  }
  {
    DevTensor pw(F, Shape{P}), pg(F, Shape{P}), pm(F, Shape{P}), pv(F, Shape{P}), pc(BF, Shape{P});
    DevTensor nsq(DType::F64, Shape{1});
    for (const DevTensor* t : {&pw, &pg, &pm, &pv}) gpu().fill(*t, 0.01);
    gpu().fill(nsq, 0);
    report("sum_squares", mean_ms([&] { gpu().sum_squares(pg, nsq); }, 5), P * b4, ceiling);
    AdamWParams ap;
    ap.lr = 1e-3;
    ap.max_norm = 1;
    report("adamw", mean_ms([&] { gpu().adamw(pw, pg, pm, pv, ap, nsq); }, 5), P * 28.0, ceiling);
    // With the bf16 compute copy written in the same pass (in place of adamw + convert).
    report("adamw_copy (+ BF16 copy)",
           mean_ms([&] { gpu().adamw_copy(pw, pg, pm, pv, ap, nsq, pc); }, 5), P * 30.0, ceiling);
  }
}

}  // namespace
}  // namespace nmoe::gputest
