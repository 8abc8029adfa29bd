// Op timings of the CUDA backend at speedrun-MoE sizes (dim 768, 12 heads of
// 64, 64 experts top-6 of width 384, vocab 50304, 8 x 2048 tokens), F32, and
// one whole-model forward_backward. Disabled by default; run with
//   nmoe_gpu_tests --gtest_also_run_disabled_tests --gtest_filter='CudaBench.*'
#include <cstdio>
#include <functional>

#include "config/config.h"
#include "gpu_test_util.h"
#include "model/model.h"

namespace nmoe::gputest {
namespace {

constexpr DType F = DType::F32;

double time_ms(const std::function<void()>& op, int iters = 5) { return mean_ms(op, iters); }

// gb: gigabytes moved, gflop: billions of floating-point operations per call.
void report(const char* name, double ms, double gb = 0, double gflop = 0) {
  std::printf("  %-28s %9.3f ms", name, ms);
  if (gb > 0) std::printf("  %7.0f GB/s", gb * 1000 / ms);
  if (gflop > 0) std::printf("  %7.1f TFLOP/s", gflop / ms);
  std::printf("\n");
}

TEST(CudaBench, DISABLED_OpTimes) {
  NMOE_SKIP_WITHOUT_CUDA();
  const int64_t B = 8, T = 2048, N = B * T, D = 768, H = 12, Dh = 64, E = 64, K = 6, Fe = 384;
  const int64_t V = 50304, M = N * K;
  std::mt19937_64 rng(1);
  DevTensor x(F, Shape{N, D}), y(F, Shape{N, D}), g(F, Shape{N, D}), w(F, Shape{D}), r(F, Shape{N});
  DevTensor wqkv(F, Shape{3 * D, D}), qkv(F, Shape{N, 3, H, Dh}), dqkv(F, Shape{N, 3, H, Dh});
  DevTensor att(F, Shape{N, D}), lse(F, Shape{B, H, T}), cs(F, Shape{T, Dh / 2});
  for (const DevTensor* t : {&x, &y, &g, &w, &r, &wqkv, &qkv, &att, &cs}) gpu().fill(*t, 0.01);
  std::printf("[bench] N=%ld D=%ld H=%ld Dh=%ld E=%ld K=%ld Fe=%ld V=%ld (F32)\n", long(N), long(D),
              long(H), long(Dh), long(E), long(K), long(Fe), long(V));
  const double act = N * D * 4e-9;
  report("matmul qkv (fwd)", time_ms([&] { gpu().matmul(x, false, wqkv, true, qkv.t().view(Shape{N, 3 * D}), 1, 0); }),
         0, 2.0 * N * D * 3 * D * 1e-9);
  report("rmsnorm_fwd", time_ms([&] { gpu().rmsnorm_fwd(x, w, 1e-5, y, r); }), 2 * act);
  report("rmsnorm_bwd", time_ms([&] { gpu().rmsnorm_bwd(g, x, w, r, y, w); }), 4 * act);
  report("rope", time_ms([&] { gpu().rope(qkv, cs, cs, int(T), false); }), 4 * act);
  const double attn_flop = 4.0 * B * H * T * T / 2 * Dh * 1e-9;
  report("attention_fwd", time_ms([&] { gpu().attention_fwd(qkv, int(T), 0.125, att, lse); }), 0, attn_flop);
  report("attention_bwd", time_ms([&] { gpu().attention_bwd(g, qkv, att, lse, int(T), 0.125, dqkv); }),
         0, 2.5 * attn_flop);

  HostTensor logits_h = uniform(F, Shape{N, E}, rng);
  DevTensor logits(logits_h), bias(F, Shape{E}), scores(F, Shape{N, E}), idx(DType::I32, Shape{N, K});
  DevTensor gates(F, Shape{N, K}), counts(DType::I32, Shape{E}), dgates(F, Shape{N, K});
  DevTensor off(DType::I32, Shape{E + 1}), pos(DType::I32, Shape{M});
  gpu().fill(bias, 0);
  gpu().fill(counts, 0);
  RouterParams p;
  p.top_k = int(K);
  report("router_fwd", time_ms([&] { gpu().router_fwd(logits, bias, p, scores, idx, gates, counts); }));
  report("router_bwd", time_ms([&] { gpu().router_bwd(gates, scores, idx, p, logits); }));
  gpu().router_fwd(logits, bias, p, scores, idx, gates, counts);
  report("moe_plan", time_ms([&] { gpu().moe_plan(idx, int(E), off, pos); }));
  DevTensor xe(F, Shape{M, D}), h13(F, Shape{M, 2 * Fe}), ae(F, Shape{M, Fe});
  DevTensor w13(F, Shape{E, 2 * Fe, D}), w2(F, Shape{E, D, Fe});
  for (const DevTensor* t : {&xe, &h13, &ae, &w13, &w2}) gpu().fill(*t, 0.01);
  const double xe_gb = M * D * 4e-9;
  report("moe_dispatch", time_ms([&] { gpu().moe_dispatch(x, pos, int(K), xe); }), 2 * xe_gb);
  report("moe_dispatch_bwd", time_ms([&] { gpu().moe_dispatch_bwd(xe, pos, int(K), y); }), xe_gb + 2 * act);
  report("moe_combine", time_ms([&] { gpu().moe_combine(xe, pos, gates, y); }), xe_gb + 2 * act);
  report("moe_combine_bwd", time_ms([&] { gpu().moe_combine_bwd(g, xe, pos, gates, xe, dgates); }), 3 * xe_gb);
  const double gw13 = 2.0 * M * D * 2 * Fe * 1e-9;
  report("grouped_matmul w13", time_ms([&] { gpu().grouped_matmul(xe, w13, true, off, h13); }), 0, gw13);
  report("grouped_matmul_wgrad w13", time_ms([&] { gpu().grouped_matmul_wgrad(h13, xe, off, w13); }), 0, gw13);
  report("swiglu_fwd", time_ms([&] { gpu().swiglu_fwd(h13, ae); }), M * 3 * Fe * 4e-9);
  report("swiglu_bwd", time_ms([&] { gpu().swiglu_bwd(ae, h13, h13, Tensor()); }), M * 5 * Fe * 4e-9);

  HostTensor tok_h = random_ids(Shape{N}, 0, int32_t(V - 1), rng);
  DevTensor tok(tok_h), emb(F, Shape{V, D}), loss(DType::F64, Shape{1});
  gpu().fill(emb, 0.01);
  gpu().fill(loss, 0);
  report("embedding_fwd", time_ms([&] { gpu().embedding_fwd(emb, tok, x); }), 2 * act);
  report("embedding_bwd", time_ms([&] { gpu().embedding_bwd(g, tok, emb); }), 3 * act);
  const double ce_flop = 3 * 2.0 * N * V * D * 1e-9;
  for (int64_t chunk : {256, 4096})
    report(chunk == 256 ? "cross_entropy chunk 256" : "cross_entropy chunk 4096",
           time_ms([&] { gpu().cross_entropy(x, emb, tok, -1, 1e-4, chunk, loss, y, emb); }, 2), 0, ce_flop);
  const int64_t P = 100'000'000;
  DevTensor pw(F, Shape{P}), pg(F, Shape{P}), pm(F, Shape{P}), pv(F, Shape{P});
  for (const DevTensor* t : {&pw, &pg, &pm, &pv}) gpu().fill(*t, 0.01);
  report("sum_squares 100M", time_ms([&] { gpu().sum_squares(pg, loss); }), P * 4e-9);
  AdamWParams a;
  a.lr = 1e-3;
  a.max_norm = 1;
  report("adamw 100M", time_ms([&] { gpu().adamw(pw, pg, pm, pv, a, loss); }), P * 28e-9);
}

// The dense GEMMs of the speedrun models (BF16, 16 x 2048 tokens) on cuBLAS
// and on the grouped GEMM kernel with one expert, forward (y = x W^T), input
// gradient (dx = dy W) and weight gradient (dW += dy^T x, F32).
TEST(CudaBench, DISABLED_DenseGemms) {
  NMOE_SKIP_WITHOUT_CUDA();
  constexpr DType H = DType::BF16;
  const int64_t N = 16 * 2048;
  struct Shape2 {
    const char* name;
    int64_t out, in;
  };
  for (const Shape2& sh : {Shape2{"qkv 768->2304", 2304, 768}, Shape2{"wo 768->768", 768, 768},
                           Shape2{"mlp w13 768->6144", 6144, 768}, Shape2{"mlp w2 3072->768", 768, 3072},
                           Shape2{"shared w13 768->768", 768, 768}, Shape2{"shared w2 384->768", 768, 384}}) {
    DevTensor x(H, Shape{N, sh.in}), dy(H, Shape{N, sh.out}), y(H, Shape{N, sh.out}), dx(H, Shape{N, sh.in});
    DevTensor w(H, Shape{1, sh.out, sh.in}), dw(F, Shape{1, sh.out, sh.in});
    HostTensor off_h = indices(Shape{2}, {0, int32_t(N)});
    DevTensor off(off_h);
    for (const DevTensor* t : {&x, &dy, &w, &dw}) gpu().fill(*t, 0.01);
    const Tensor w2d = w.t().view(Shape{sh.out, sh.in}), dw2d = dw.t().view(Shape{sh.out, sh.in});
    const double gf = 2.0 * N * sh.out * sh.in * 1e-9;
    std::printf("[dense-gemm] %s\n", sh.name);
    report("  fwd cublas", time_ms([&] { gpu().matmul(x, false, w2d, true, y, 1, 0); }), 0, gf);
    report("  fwd grouped", time_ms([&] { gpu().grouped_matmul(x, w, true, off, y); }), 0, gf);
    report("  dgrad cublas", time_ms([&] { gpu().matmul(dy, false, w2d, false, dx, 1, 0); }), 0, gf);
    report("  dgrad grouped", time_ms([&] { gpu().grouped_matmul(dy, w, false, off, dx); }), 0, gf);
    report("  wgrad cublas", time_ms([&] { gpu().matmul(dy, true, x, false, dw2d, 1, 1); }), 0, gf);
    report("  wgrad grouped", time_ms([&] { gpu().grouped_matmul_wgrad(dy, x, off, dw); }), 0, gf);
  }
}

TEST(CudaBench, DISABLED_ModelStep) {
  NMOE_SKIP_WITHOUT_CUDA();
  Config cfg = load_config_string(R"(
vocab_size = 50304
eos_token_id = 50256
tokenizer = "bytes"
dim = 768
n_layers = 4
n_heads = 12
inter_dim = 3072
n_dense_layers = 1
n_routed_experts = 64
n_shared_experts = 2
n_activated_experts = 6
moe_inter_dim = 384
attn = "sdpa"
seq_len = 2048
batch_size = 8
)", "bench", {});
  ModelOptions o;
  o.micro_batch = 8;
  o.seq_len = 2048;
  Model m(cfg, gpu(), o);
  m.init_weights(1);
  const int64_t N = o.micro_batch * o.seq_len;
  std::mt19937_64 rng(2);
  std::uniform_int_distribution<int32_t> d(0, 50303);
  std::vector<int32_t> tok(N), tgt(N);
  for (auto& t : tok) t = d(rng);
  for (auto& t : tgt) t = d(rng);
  const double ms = time_ms([&] { m.forward_backward(tok.data(), tgt.data(), 1.0 / N, 0.0); }, 3);
  std::printf("[bench] 4-layer speedrun-MoE model, 8 x 2048 tokens, F32: forward_backward %.1f ms "
              "(%.0f tokens/s)\n", ms, N / ms * 1000);
}

}  // namespace
}  // namespace nmoe::gputest
