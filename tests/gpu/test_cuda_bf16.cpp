// Mixed precision (BF16 compute, F32 statistics and parameter gradients) on the
// CUDA backend. Each op takes exactly the dtype combination the model passes
// in BF16 mode (see model_plan.cpp). Inputs are made as fp32 on the host and
// rounded to bf16; the reference is the CPU backend in F32 on the rounded
// inputs. Tolerances (relative L2): 1e-2 for BF16 outputs, 1e-3 for F32
// outputs computed from BF16 inputs. Outputs start poisoned (NaN), and NaN
// never passes (rel_l2 gives +inf). Then the whole model, BF16 vs the CPU in
// F32, and its determinism.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "bf16_test_util.h"
#include "config/config.h"
#include "gpu_test_util.h"
#include "model_run.h"
#include "model/model.h"
#include "optim/optimizer.h"

namespace nmoe::gputest {
namespace {

TEST(CudaBf16, MatmulBf16AndF32Output) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(101);
  const int64_t M = 67, K = 130, N = 45;
  for (bool tA : {false, true})
    for (bool tB : {false, true})
      for (DType cdt : {BF, F})
        for (double beta : {0.0, 1.0}) {
          Arg A = rnd(BF, tA ? Shape{K, M} : Shape{M, K}, rng);
          Arg B = rnd(BF, tB ? Shape{N, K} : Shape{K, N}, rng);
          Arg C = beta == 0 ? out(cdt, Shape{M, N}) : rnd(cdt, Shape{M, N}, rng);
          cpu().matmul(A.h, tA, B.h, tB, C.h, 0.7, beta);
          gpu().matmul(A, tA, B, tB, C, 0.7, beta);
          EXPECT_ARG(C, cdt == BF ? kTolBf16 : kTolMixed)
              << "tA " << tA << " tB " << tB << " C " << dtype_name(cdt) << " beta " << beta;
        }
  // Mixed A/B dtypes are refused.
  Arg A = rnd(BF, Shape{4, 8}, rng), B = rnd(F, Shape{8, 3}, rng), C = out(F, Shape{4, 3});
  EXPECT_THROW(gpu().matmul(A, false, B, false, C, 1.0, 0.0), Error);
  Arg Af = rnd(F, Shape{4, 8}, rng), Cb = out(BF, Shape{4, 3});
  EXPECT_THROW(gpu().matmul(Af, false, B, false, Cb, 1.0, 0.0), Error);
}

TEST(CudaBf16, GroupedMatmul) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(102);
  const int64_t E = 5, R = 48, S = 40;
  const std::vector<int32_t> off = {0, 13, 13, 40, 41, 77};
  const int64_t M = off.back();
  HostTensor offsets = indices(Shape{E + 1}, off);
  DevTensor doff(offsets);
  Arg W = rnd(BF, Shape{E, R, S}, rng);
  for (bool tW : {true, false}) {
    Arg X = rnd(BF, Shape{M, tW ? S : R}, rng);
    Arg Y = out(BF, Shape{M, tW ? R : S});
    cpu().grouped_matmul(X.h, W.h, tW, offsets, Y.h);
    gpu().grouped_matmul(X, W, tW, doff, Y);
    EXPECT_ARG(Y, kTolBf16) << "transW " << tW;
  }
  Arg dY = rnd(BF, Shape{M, R}, rng), X = rnd(BF, Shape{M, S}, rng);
  Arg dW = rnd(F, Shape{E, R, S}, rng);  // accumulates
  cpu().grouped_matmul_wgrad(dY.h, X.h, offsets, dW.h);
  gpu().grouped_matmul_wgrad(dY, X, doff, dW);
  EXPECT_ARG(dW, kTolMixed);
}

TEST(CudaBf16, AddEmbeddingRmsnorm) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(103);
  const int64_t N = 150, D = 200, V = 37;
  {
    Arg a = rnd(BF, Shape{N, D}, rng), b = rnd(BF, Shape{N, D}, rng), o = out(BF, Shape{N, D});
    cpu().add(o.h, a.h, b.h, -0.3);
    gpu().add(o, a, b, -0.3);
    EXPECT_ARG(o, kTolBf16);
  }
  HostTensor tok = random_ids(Shape{N}, 0, V - 1, rng);
  DevTensor dtok(tok);
  Arg W = rnd(BF, Shape{V, D}, rng), e = out(BF, Shape{N, D});
  cpu().embedding_fwd(W.h, tok, e.h);
  gpu().embedding_fwd(W, dtok, e);
  NMOE_EXPECT_SAME(down(e), e.h) << "embedding_fwd is a copy";
  Arg dout = rnd(BF, Shape{N, D}, rng), dW = rnd(F, Shape{V, D}, rng);
  cpu().embedding_bwd(dout.h, tok, dW.h);
  gpu().embedding_bwd(dout, dtok, dW);
  EXPECT_ARG(dW, kTolMixed);

  Arg x = rnd(BF, Shape{N, D}, rng, -2, 2), w = rnd(BF, Shape{D}, rng, 0.5, 1.5);
  Arg y = out(BF, Shape{N, D}), rstd = out(F, Shape{N});
  cpu().rmsnorm_fwd(x.h, w.h, 1e-6, y.h, rstd.h);
  gpu().rmsnorm_fwd(x, w, 1e-6, y, rstd);
  EXPECT_ARG(y, kTolBf16);
  EXPECT_ARG(rstd, kTolMixed);
  Arg dy = rnd(BF, Shape{N, D}, rng);
  Arg rs = make(rstd.h, F);
  Arg dx = rnd(BF, Shape{N, D}, rng), dw = rnd(F, Shape{D}, rng);  // both accumulate
  cpu().rmsnorm_bwd(dy.h, x.h, w.h, rs.h, dx.h, dw.h);
  gpu().rmsnorm_bwd(dy, x, w, rs, dx, dw);
  EXPECT_ARG(dx, kTolBf16);
  EXPECT_ARG(dw, kTolMixed);
}

TEST(CudaBf16, RopeSwiglu) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(104);
  const int64_t B = 2, T = 17, H = 3, Dh = 16, N = B * T;
  HostTensor c(F, Shape{T, Dh / 2}), s(F, Shape{T, Dh / 2});
  for (int64_t p = 0; p < T; ++p)
    for (int64_t i = 0; i < Dh / 2; ++i) {
      const double ang = p * std::pow(10000.0, -2.0 * i / Dh);
      c.set(p * Dh / 2 + i, std::cos(ang));
      s.set(p * Dh / 2 + i, std::sin(ang));
    }
  DevTensor dc(c), ds(s);
  for (bool inv : {false, true}) {
    Arg qkv = rnd(BF, Shape{N, 3, H, Dh}, rng);
    cpu().rope(qkv.h, c, s, static_cast<int>(T), inv);
    gpu().rope(qkv, dc, ds, static_cast<int>(T), inv);
    EXPECT_ARG(qkv, kTolBf16) << "inverse " << inv;
  }
  const int64_t Fw = 75;
  Arg h13 = rnd(BF, Shape{N, 2 * Fw}, rng, -3, 3), a = out(BF, Shape{N, Fw});
  cpu().swiglu_fwd(h13.h, a.h);
  gpu().swiglu_fwd(h13, a);
  EXPECT_ARG(a, kTolBf16);
  Arg da = rnd(BF, Shape{N, Fw}, rng), dh13 = out(BF, Shape{N, 2 * Fw});
  cpu().swiglu_bwd(da.h, h13.h, dh13.h, Tensor());
  gpu().swiglu_bwd(da, h13, dh13, Tensor());
  EXPECT_ARG(dh13, kTolBf16);
}

TEST(CudaBf16, Attention) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(105);
  struct Case { int64_t B; int T; int64_t H, Dh; };
  for (Case c : {Case{2, 33, 2, 8}, Case{1, 100, 2, 64}, Case{1, 70, 1, 128}}) {
    const int64_t N = c.B * c.T;
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.Dh));
    Arg qkv = rnd(BF, Shape{N, 3, c.H, c.Dh}, rng, -2, 2);
    Arg o = out(BF, Shape{N, c.H * c.Dh}), lse = out(F, Shape{c.B, c.H, c.T});
    cpu().attention_fwd(qkv.h, c.T, scale, o.h, lse.h);
    gpu().attention_fwd(qkv, c.T, scale, o, lse);
    EXPECT_ARG(o, kTolBf16) << "T " << c.T << " Dh " << c.Dh;
    EXPECT_ARG(lse, kTolMixed) << "T " << c.T << " Dh " << c.Dh;
    // Backward from the reference forward's out (rounded) and lse, as both sides see them.
    Arg o_in = make(o.h, BF), lse_in = make(lse.h, F);
    Arg dout = rnd(BF, Shape{N, c.H * c.Dh}, rng), dqkv = out(BF, Shape{N, 3, c.H, c.Dh});
    cpu().attention_bwd(dout.h, qkv.h, o_in.h, lse_in.h, c.T, scale, dqkv.h);
    gpu().attention_bwd(dout, qkv, o_in, lse_in, c.T, scale, dqkv);
    EXPECT_ARG(dqkv, kTolBf16) << "T " << c.T << " Dh " << c.Dh;
  }
}

TEST(CudaBf16, RouterBwdAndMoePermutation) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(106);
  const int64_t N = 90, E = 8, K = 2, D = 72;
  RouterParams p;
  p.top_k = static_cast<int>(K);
  p.route_scale = 1.7;
  p.routed_scaling_factor = 2.5;
  // Router forward stays F32 (logits F32 from a BF16 GEMM); its backward writes BF16 dlogits.
  HostTensor logits = uniform(F, Shape{N, E}, rng, -3, 3), bias = filled(F, Shape{E}, 0.0);
  HostTensor scores = poisoned(F, Shape{N, E}), idx = poisoned(DType::I32, Shape{N, K});
  HostTensor gates = poisoned(F, Shape{N, K}), counts = filled(DType::I32, Shape{E}, 0);
  cpu().router_fwd(logits, bias, p, scores, idx, gates, counts);
  DevTensor dscores(scores), didx(idx), dgates_in(gates);
  Arg dg = rnd(F, Shape{N, K}, rng), dlogits = out(BF, Shape{N, E});
  cpu().router_bwd(dg.h, scores, idx, p, dlogits.h);
  gpu().router_bwd(dg, dscores, didx, p, dlogits);
  EXPECT_ARG(dlogits, kTolBf16);

  HostTensor offsets = poisoned(DType::I32, Shape{E + 1}), pos = poisoned(DType::I32, Shape{N * K});
  cpu().moe_plan(idx, static_cast<int>(E), offsets, pos);
  DevTensor dpos(pos);
  Arg x = rnd(BF, Shape{N, D}, rng), xe = out(BF, Shape{N * K, D});
  cpu().moe_dispatch(x.h, pos, static_cast<int>(K), xe.h);
  gpu().moe_dispatch(x, dpos, static_cast<int>(K), xe);
  NMOE_EXPECT_SAME(down(xe), xe.h) << "moe_dispatch is a copy";
  Arg dxe = rnd(BF, Shape{N * K, D}, rng), dx = rnd(BF, Shape{N, D}, rng);  // dx accumulates
  cpu().moe_dispatch_bwd(dxe.h, pos, static_cast<int>(K), dx.h);
  gpu().moe_dispatch_bwd(dxe, dpos, static_cast<int>(K), dx);
  EXPECT_ARG(dx, kTolBf16);
  Arg ye = rnd(BF, Shape{N * K, D}, rng), g = make(gates, F), o = rnd(BF, Shape{N, D}, rng);
  cpu().moe_combine(ye.h, pos, g.h, o.h);
  gpu().moe_combine(ye, dpos, g, o);
  EXPECT_ARG(o, kTolBf16);
  Arg dout = rnd(BF, Shape{N, D}, rng), dye = out(BF, Shape{N * K, D}), dgt = out(F, Shape{N, K});
  cpu().moe_combine_bwd(dout.h, ye.h, pos, g.h, dye.h, dgt.h);
  gpu().moe_combine_bwd(dout, ye, dpos, g, dye, dgt);
  EXPECT_ARG(dye, kTolBf16);
  EXPECT_ARG(dgt, kTolMixed);
}

TEST(CudaBf16, CrossEntropy) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(107);
  // V = 300: rows in registers, the BF16 logit gradient written over the F32
  // logits; V = 301: the general row kernel with a gradient buffer of its own.
  for (const int64_t V : {300, 301}) {
    const int64_t N = 77, D = 64;
    Arg h = rnd(BF, Shape{N, D}, rng, -2, 2), W = rnd(BF, Shape{V, D}, rng, -0.5, 0.5);
    HostTensor tgt = random_ids(Shape{N}, 0, V - 1, rng);
    for (int64_t i = 0; i < N; i += 9) tgt.t().ptr<int32_t>()[i] = 5;  // ignored below
    DevTensor dtgt(tgt);
    for (bool grad : {false, true}) {
      HostTensor loss = scalar(0.25);
      DevTensor dloss(loss);
      Arg dh = grad ? out(BF, Shape{N, D}) : Arg{};
      Arg dW = grad ? rnd(F, Shape{V, D}, rng, -1e-3, 1e-3) : Arg{};  // accumulates
      const HostTensor dW0 = grad ? dW.h : HostTensor();
      const double gs = 1.0 / N;
      cpu().cross_entropy(h.h, W.h, tgt, 5, gs, 20, loss, grad ? dh.h.t() : Tensor(),
                          grad ? dW.h.t() : Tensor());
      gpu().cross_entropy(h, W, dtgt, 5, gs, 20, dloss, grad ? dh.d->t() : Tensor(),
                          grad ? dW.d->t() : Tensor());
      NMOE_EXPECT_CLOSE(dloss.download(), loss, kTolMixed) << "grad " << grad << " V " << V;
      if (!grad) continue;
      EXPECT_ARG(dh, kTolBf16);
      // dW is F32, but the logit gradient it is formed from is BF16 (for the
      // tensor-core GEMMs), so it is held to the BF16 tolerance.
      // Compared on the increments, so the initial values cannot hide the error.
      HostTensor got_inc = down(dW), want_inc = dW.h;
      for (int64_t i = 0; i < got_inc.numel(); ++i) {
        got_inc.set(i, got_inc.get(i) - dW0.get(i));
        want_inc.set(i, want_inc.get(i) - dW0.get(i));
      }
      const double rel = rel_l2(got_inc, want_inc);
      std::printf("[bf16] cross_entropy dW (F32 from a BF16 logit gradient): rel L2 %.3g\n", rel);
      EXPECT_LE(rel, kTolBf16) << "V " << V;
    }
  }
}

// ---- vector and scalar paths ------------------------------------------------------------------
// The memory-bound kernels (MoE dispatch and combine and their backward,
// RMSNorm, RoPE, SwiGLU) move 16-byte vectors when rows are a multiple of 8
// bf16 / 4 fp32 elements wide and the pointers are 16-byte aligned, and run
// their scalar kernels otherwise. Each case runs an op on aligned tensors and
// again on the same values one element past alignment (the scalar kernels):
// both must give the same bytes, a rerun the same bytes again, and the
// aligned run must match the CPU (F32 on the same values). Widths include
// multiples of the vector width and others; BF16 and F32.

// One argument of an op, on both layouts: [0] 16-byte aligned, [1] one
// element past it. init: F32 values (bf16-exact for BF16) it starts from
// (NaN for write outputs); out: the op writes it.
struct Twin {
  DType dt;
  HostTensor init;
  bool out = false;
  std::unique_ptr<ShiftedTensor> d[2];
  const Tensor& operator[](int v) const { return d[v]->t(); }
  void reset(int v) const {
    if (dt == F) {
      gpu().copy_from_host(d[v]->t(), init.t().data);
    } else {
      DevTensor tmp(init);
      gpu().convert(d[v]->t(), tmp);
    }
  }
};

Twin twin(DType dt, HostTensor h, bool out) {
  Twin t;
  t.dt = dt;
  t.init = dt == BF ? rounded(std::move(h)) : std::move(h);
  t.out = out;
  for (int v = 0; v < 2; ++v)
    t.d[v] = std::make_unique<ShiftedTensor>(dt, t.init.t().shape, v * dtype_size(dt));
  return t;
}
Twin input(DType dt, HostTensor h) { return twin(dt, std::move(h), false); }
Twin accum(DType dt, HostTensor h) { return twin(dt, std::move(h), true); }
Twin write(DType dt, Shape s) { return twin(dt, poisoned(F, s), true); }

HostTensor raw(const Tensor& t) {
  HostTensor h(t.dtype, t.shape);
  gpu().copy_to_host(h.t().data, t);
  return h;
}
HostTensor as_f32(const Tensor& t) {
  if (t.dtype == F) return raw(t);
  DevTensor f(F, t.shape);
  gpu().convert(f, t);
  return f.download();
}

// Runs op(0) and op(1) from the initial values; outputs must match byte for
// byte, and a rerun of op(0) must reproduce them.
void expect_paths(const std::string& what, std::initializer_list<const Twin*> args,
                  const std::function<void(int)>& op) {
  for (int v = 0; v < 2; ++v) {
    for (const Twin* a : args) a->reset(v);
    op(v);
  }
  std::vector<HostTensor> first;
  for (const Twin* a : args) {
    if (!a->out) continue;
    first.push_back(raw((*a)[0]));
    NMOE_EXPECT_SAME(raw((*a)[1]), first.back()) << what << ": scalar vs vector path";
  }
  for (const Twin* a : args) a->reset(0);
  op(0);
  size_t i = 0;
  for (const Twin* a : args) {
    if (a->out) {
      NMOE_EXPECT_SAME(raw((*a)[0]), first[i++]) << what << ": rerun";
    }
  }
}

double tol_of(DType out, DType in) {
  return out == BF ? kTolBf16 : in == BF ? kTolMixed : kTol;
}

std::string name_of(const char* op, DType dt, std::initializer_list<int64_t> dims) {
  std::string s = std::string(op) + " " + dtype_name(dt);
  for (int64_t d : dims) s += " " + std::to_string(d);
  return s;
}

TEST(CudaVectorPaths, MoePermutation) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(111);
  struct Case { int64_t N, E, K, D; };
  // D: 768 (the model), multiples of 8, of 4 only (100), neither (6), longer
  // than one 1024-element pass (1032); N*K not a multiple of any block.
  for (DType dt : {BF, F})
    for (Case c : {Case{37, 16, 7, 768}, {29, 8, 3, 72}, {29, 8, 3, 100}, {13, 5, 2, 6},
                   {11, 4, 2, 1032}, {1, 1, 1, 8}}) {
      const int64_t M = c.N * c.K;
      const int K = static_cast<int>(c.K);
      HostTensor idx = random_ids(Shape{c.N, c.K}, 0, static_cast<int32_t>(c.E - 1), rng);
      HostTensor off = poisoned(DType::I32, Shape{c.E + 1}), pos = poisoned(DType::I32, Shape{M});
      cpu().moe_plan(idx, static_cast<int>(c.E), off, pos);
      DevTensor dpos(pos);
      HostTensor g = uniform(F, Shape{c.N, c.K}, rng);
      DevTensor dg(g);

      Twin x = input(dt, uniform(F, Shape{c.N, c.D}, rng)), xe = write(dt, Shape{M, c.D});
      expect_paths(name_of("moe_dispatch", dt, {c.N, c.K, c.D}), {&x, &xe},
                   [&](int v) { gpu().moe_dispatch(x[v], dpos, K, xe[v]); });
      HostTensor xe_ref = xe.init;
      cpu().moe_dispatch(x.init, pos, K, xe_ref);
      NMOE_EXPECT_SAME(as_f32(xe[0]), xe_ref) << "moe_dispatch is a copy";

      Twin dxe = input(dt, uniform(F, Shape{M, c.D}, rng));
      Twin dx = accum(dt, uniform(F, Shape{c.N, c.D}, rng));
      expect_paths(name_of("moe_dispatch_bwd", dt, {c.N, c.K, c.D}), {&dxe, &dx},
                   [&](int v) { gpu().moe_dispatch_bwd(dxe[v], dpos, K, dx[v]); });
      HostTensor dx_ref = dx.init;
      cpu().moe_dispatch_bwd(dxe.init, pos, K, dx_ref);
      NMOE_EXPECT_CLOSE(as_f32(dx[0]), dx_ref, tol_of(dt, dt)) << "moe_dispatch_bwd";

      Twin ye = input(dt, uniform(F, Shape{M, c.D}, rng));
      Twin out = accum(dt, uniform(F, Shape{c.N, c.D}, rng));
      expect_paths(name_of("moe_combine", dt, {c.N, c.K, c.D}), {&ye, &out},
                   [&](int v) { gpu().moe_combine(ye[v], dpos, dg, out[v]); });
      HostTensor out_ref = out.init;
      cpu().moe_combine(ye.init, pos, g, out_ref);
      NMOE_EXPECT_CLOSE(as_f32(out[0]), out_ref, tol_of(dt, dt)) << "moe_combine";

      Twin dout = input(dt, uniform(F, Shape{c.N, c.D}, rng));
      Twin dye = write(dt, Shape{M, c.D}), dgates = write(F, Shape{c.N, c.K});
      expect_paths(name_of("moe_combine_bwd", dt, {c.N, c.K, c.D}), {&dout, &ye, &dye, &dgates},
                   [&](int v) { gpu().moe_combine_bwd(dout[v], ye[v], dpos, dg, dye[v], dgates[v]); });
      HostTensor dye_ref = dye.init, dg_ref = dgates.init;
      cpu().moe_combine_bwd(dout.init, ye.init, pos, g, dye_ref, dg_ref);
      NMOE_EXPECT_CLOSE(as_f32(dye[0]), dye_ref, tol_of(dt, dt)) << "moe_combine_bwd dye";
      NMOE_EXPECT_CLOSE(as_f32(dgates[0]), dg_ref, tol_of(F, dt)) << "moe_combine_bwd dgates";

      // Without the expert outputs: dye only, the same bytes as with them.
      Twin dye_only = write(dt, Shape{M, c.D});
      expect_paths(name_of("moe_combine_bwd without ye", dt, {c.N, c.K, c.D}), {&dout, &dye_only},
                   [&](int v) { gpu().moe_combine_bwd(dout[v], Tensor(), dpos, dg, dye_only[v], Tensor()); });
      NMOE_EXPECT_SAME(raw(dye_only[0]), raw(dye[0])) << "moe_combine_bwd without ye";

      // The gates' gradient from the activations (F = D here; a zero gate gives 0).
      HostTensor gz = g;
      gz.t().ptr<float>()[0] = 0.f;
      DevTensor dgz(gz);
      Twin a = input(dt, uniform(F, Shape{M, c.D}, rng)), da = input(dt, uniform(F, Shape{M, c.D}, rng));
      Twin dgg = write(F, Shape{c.N, c.K});
      expect_paths(name_of("moe_gate_grad", dt, {c.N, c.K, c.D}), {&a, &da, &dgg},
                   [&](int v) { gpu().moe_gate_grad(a[v], da[v], dpos, dgz, dgg[v]); });
      HostTensor dgg_ref = dgg.init;
      cpu().moe_gate_grad(a.init, da.init, pos, gz, dgg_ref);
      NMOE_EXPECT_CLOSE(as_f32(dgg[0]), dgg_ref, tol_of(F, dt)) << "moe_gate_grad";
    }
}

// A row of pos outside [0, N*K): the slot is skipped on both paths alike
// (its rows keep their old bytes) and synchronize reports the error.
TEST(CudaVectorPaths, MoeBadPosition) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(112);
  const int64_t N = 9, K = 3, M = N * K;
  for (DType dt : {BF, F})
    for (int64_t D : {int64_t{72}, int64_t{20}}) {
      HostTensor idx = random_ids(Shape{N, K}, 0, 3, rng);
      HostTensor off = poisoned(DType::I32, Shape{5}), pos = poisoned(DType::I32, Shape{M});
      cpu().moe_plan(idx, 4, off, pos);
      pos.t().ptr<int32_t>()[4] = -1;
      pos.t().ptr<int32_t>()[10] = static_cast<int32_t>(M);
      DevTensor dpos(pos), dg(uniform(F, Shape{N, K}, rng));
      Twin x = input(dt, uniform(F, Shape{N, D}, rng)), xe = write(dt, Shape{M, D});
      Twin ye = input(dt, uniform(F, Shape{M, D}, rng)), o = accum(dt, uniform(F, Shape{N, D}, rng));
      Twin dye = write(dt, Shape{M, D}), dgt = write(F, Shape{N, K});
      const std::vector<std::pair<const char*, std::function<void(int)>>> ops = {
          {"moe_dispatch", [&](int v) { gpu().moe_dispatch(x[v], dpos, int(K), xe[v]); }},
          {"moe_dispatch_bwd", [&](int v) { gpu().moe_dispatch_bwd(ye[v], dpos, int(K), o[v]); }},
          {"moe_combine", [&](int v) { gpu().moe_combine(ye[v], dpos, dg, o[v]); }},
          {"moe_combine_bwd",
           [&](int v) { gpu().moe_combine_bwd(x[v], ye[v], dpos, dg, dye[v], dgt[v]); }}};
      for (const auto& [name, op] : ops) {
        for (int v = 0; v < 2; ++v) {
          for (const Twin* a : {&x, &xe, &ye, &o, &dye, &dgt}) a->reset(v);
          op(v);
          EXPECT_THROW(gpu().synchronize(), Error) << name << " path " << v;
        }
        for (const Twin* a : {&xe, &o, &dye, &dgt})
          NMOE_EXPECT_SAME(raw((*a)[1]), raw((*a)[0])) << name << " " << dtype_name(dt) << " D " << D;
      }
      gpu().synchronize();
    }
}

TEST(CudaVectorPaths, RmsNorm) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(113);
  // D: 768; 8 (one chunk); 200, 1024, 2048 (1..8 chunks per lane); 100
  // (bf16: scalar); 2056 (past the register row: scalar); N = 130 spans
  // three row chunks of the dw reduction.
  for (DType dt : {BF, F})
    for (auto [N, D] : {std::pair<int64_t, int64_t>{130, 768}, {37, 8}, {37, 200}, {70, 1024},
                        {9, 2048}, {37, 100}, {5, 2056}}) {
      Twin x = input(dt, uniform(F, Shape{N, D}, rng, -2, 2));
      Twin w = input(dt, uniform(F, Shape{D}, rng, 0.5, 1.5));
      Twin y = write(dt, Shape{N, D}), rstd = write(F, Shape{N});
      expect_paths(name_of("rmsnorm_fwd", dt, {N, D}), {&x, &w, &y, &rstd},
                   [&](int v) { gpu().rmsnorm_fwd(x[v], w[v], 1e-6, y[v], rstd[v]); });
      HostTensor y_ref = y.init, r_ref = rstd.init;
      cpu().rmsnorm_fwd(x.init, w.init, 1e-6, y_ref, r_ref);
      NMOE_EXPECT_CLOSE(as_f32(y[0]), y_ref, tol_of(dt, dt)) << "rmsnorm_fwd y";
      NMOE_EXPECT_CLOSE(as_f32(rstd[0]), r_ref, tol_of(F, dt)) << "rmsnorm_fwd rstd";

      Twin dy = input(dt, uniform(F, Shape{N, D}, rng)), rs = input(F, r_ref);
      Twin dx = accum(dt, uniform(F, Shape{N, D}, rng)), dw = accum(F, uniform(F, Shape{D}, rng));
      expect_paths(name_of("rmsnorm_bwd", dt, {N, D}), {&dy, &x, &w, &rs, &dx, &dw},
                   [&](int v) { gpu().rmsnorm_bwd(dy[v], x[v], w[v], rs[v], dx[v], dw[v]); });
      HostTensor dx_ref = dx.init, dw_ref = dw.init;
      cpu().rmsnorm_bwd(dy.init, x.init, w.init, rs.init, dx_ref, dw_ref);
      NMOE_EXPECT_CLOSE(as_f32(dx[0]), dx_ref, tol_of(dt, dt)) << "rmsnorm_bwd dx";
      NMOE_EXPECT_CLOSE(as_f32(dw[0]), dw_ref, tol_of(F, dt)) << "rmsnorm_bwd dw";
    }
}

TEST(CudaVectorPaths, Rope) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(114);
  struct Case { int64_t B; int T; int64_t H, Dh; };
  // Dh/2: 32 (the model), 8, 64, 4 (fp32 only), 6 (scalar).
  for (DType dt : {BF, F})
    for (Case c : {Case{2, 17, 12, 64}, {2, 9, 3, 16}, {1, 33, 2, 128}, {1, 7, 1, 8},
                   {1, 5, 2, 12}}) {
      const int64_t N = c.B * c.T, half = c.Dh / 2;
      Twin cs = input(F, uniform(F, Shape{c.T + 3, half}, rng));
      Twin sn = input(F, uniform(F, Shape{c.T + 3, half}, rng));
      for (bool inverse : {false, true}) {
        Twin qkv = accum(dt, uniform(F, Shape{N, 3, c.H, c.Dh}, rng));
        expect_paths(name_of(inverse ? "rope inverse" : "rope", dt, {N, c.H, c.Dh}),
                     {&qkv, &cs, &sn},
                     [&](int v) { gpu().rope(qkv[v], cs[v], sn[v], c.T, inverse); });
        HostTensor ref = qkv.init;
        cpu().rope(ref, cs.init, sn.init, c.T, inverse);
        NMOE_EXPECT_CLOSE(as_f32(qkv[0]), ref, tol_of(dt, dt)) << "rope";
      }
    }
}

TEST(CudaVectorPaths, Swiglu) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(115);
  // F: 384 (the model's expert width), 8, 4 (fp32 only), 75 (scalar), 1032.
  for (DType dt : {BF, F})
    for (auto [N, Fw] : {std::pair<int64_t, int64_t>{37, 384}, {5, 8}, {3, 4}, {37, 75},
                         {130, 1032}}) {
      Twin h = input(dt, uniform(F, Shape{N, 2 * Fw}, rng, -4, 4)), a = write(dt, Shape{N, Fw});
      expect_paths(name_of("swiglu_fwd", dt, {N, Fw}), {&h, &a},
                   [&](int v) { gpu().swiglu_fwd(h[v], a[v]); });
      HostTensor a_ref = a.init;
      cpu().swiglu_fwd(h.init, a_ref);
      NMOE_EXPECT_CLOSE(as_f32(a[0]), a_ref, tol_of(dt, dt)) << "swiglu_fwd";
      // The backward also writes the forward's activation again (again): the
      // same bits as swiglu_fwd's a on both paths.
      Twin da = input(dt, uniform(F, Shape{N, Fw}, rng)), dh = write(dt, Shape{N, 2 * Fw});
      Twin again = write(dt, Shape{N, Fw});
      expect_paths(name_of("swiglu_bwd", dt, {N, Fw}), {&da, &h, &dh, &again},
                   [&](int v) { gpu().swiglu_bwd(da[v], h[v], dh[v], again[v]); });
      HostTensor dh_ref = dh.init;
      cpu().swiglu_bwd(da.init, h.init, dh_ref, Tensor());
      NMOE_EXPECT_CLOSE(as_f32(dh[0]), dh_ref, tol_of(dt, dt)) << "swiglu_bwd";
      NMOE_EXPECT_SAME(as_f32(again[0]), as_f32(a[0])) << "swiglu_bwd's a";
    }
}

// ---- optimizer on BF16 gradients (expert_grad_dtype = "bf16") ---------------------------------
TEST(CudaBf16, SumSquaresOfBf16) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(35);
  for (int64_t n : {1, 1001, 3000017}) {
    Arg x = rnd(BF, Shape{n}, rng);
    HostTensor want = scalar(0.25);
    DevTensor got(want);
    cpu().sum_squares(x.h, want);
    gpu().sum_squares(x, got);
    NMOE_EXPECT_CLOSE(got.download(), want, 1e-10) << "n " << n;
    // One element past 16-byte alignment: the scalar kernel, the same sum.
    ShiftedTensor shifted(BF, Shape{n}, 2);
    gpu().copy(shifted, x);
    DevTensor got2(scalar(0.25));
    gpu().sum_squares(shifted, got2);
    NMOE_EXPECT_CLOSE(got2.download(), want, 1e-10) << "n " << n << " unaligned";
  }
}

// AdamW of F32 weights and moments from BF16 gradients: the CPU reference on
// the same (bf16-exact) gradient values; adamw_copy (fused, any alignment)
// gives the same bytes as adamw followed by convert.
TEST(CudaBf16, AdamWFromBf16Gradients) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(36);
  for (int64_t n : {1, 7, 100003}) {
    for (double max_norm : {0.0, 0.5}) {
      Arg g = rnd(BF, Shape{n}, rng);
      HostTensor p = uniform(F, Shape{n}, rng), m = uniform(F, Shape{n}, rng, -0.1, 0.1);
      HostTensor v = uniform(F, Shape{n}, rng, 0, 0.01), gns = scalar(0.7);
      DevTensor dp(p), dm(m), dv(v), dgns(gns), p2(p), m2(m), v2(v);
      DevTensor c1(BF, Shape{n}), c2(BF, Shape{n});
      c1.poison();
      c2.poison();
      // adamw_copy also from gradients one element past alignment (its scalar kernel).
      ShiftedTensor g3(BF, Shape{n}, 2);
      gpu().copy(g3, g);
      DevTensor p3(p), m3(m), v3(v), c3(BF, Shape{n});
      AdamWParams a;
      a.lr = 3e-3;
      a.weight_decay = 0.1;
      a.max_norm = max_norm;
      for (int64_t step = 1; step <= 2; ++step) {
        a.step = step;
        cpu().adamw(p, g.h, m, v, a, gns);
        gpu().adamw(dp, g, dm, dv, a, dgns);
        gpu().adamw_copy(p2, g, m2, v2, a, dgns, c2);
        gpu().adamw_copy(p3, g3, m3, v3, a, dgns, c3);
      }
      gpu().convert(c1, dp);
      NMOE_EXPECT_CLOSE(dp.download(), p, kTol) << "n " << n << " max_norm " << max_norm;
      NMOE_EXPECT_CLOSE(dm.download(), m, kTol) << "n " << n;
      NMOE_EXPECT_CLOSE(dv.download(), v, kTol) << "n " << n;
      EXPECT_TRUE(p2.download().bytes_equal(dp.download())) << "adamw_copy weights, n " << n;
      EXPECT_TRUE(m2.download().bytes_equal(dm.download())) << "adamw_copy m, n " << n;
      EXPECT_TRUE(v2.download().bytes_equal(dv.download())) << "adamw_copy v, n " << n;
      EXPECT_TRUE(down(c2).bytes_equal(down(c1))) << "adamw_copy's copy, n " << n;
      EXPECT_TRUE(p3.download().bytes_equal(dp.download())) << "adamw_copy, unaligned gradients, n " << n;
      EXPECT_TRUE(down(c3).bytes_equal(down(c1))) << "adamw_copy's copy, unaligned gradients, n " << n;
    }
  }
}

// ---- whole model ----------------------------------------------------------------------------
TEST(CudaBf16Model, ForwardBackwardNearCpuF32) {
  NMOE_SKIP_WITHOUT_CUDA();
  Config cfg = load_config_string(kMoeToml, "gpu_model_bf16", {{"loss_mask_eos", "true"}});
  std::vector<int32_t> tok, tgt;
  make_batch(cfg, tok, tgt);
  std::vector<Param> params;
  const ModelRun want = run_model(cpu(), cfg, false, tok, tgt, &params);
  const ModelRun got = run_model(gpu(), cfg, true, tok, tgt, nullptr);
  const double loss_rel = std::abs(got.loss - want.loss) / std::abs(want.loss);
  std::printf("[bf16 model] loss gpu %.6f cpu %.6f rel %.3g; aux gpu %.6g cpu %.6g\n", got.loss,
              want.loss, loss_rel, got.aux, want.aux);
  EXPECT_LE(loss_rel, 1e-2);
  EXPECT_NEAR(got.aux, want.aux, 5e-2 * std::abs(want.aux) + 1e-12);
  int64_t same = 0, total = 0;
  for (size_t l = 0; l < want.experts.size(); ++l)
    for (size_t i = 0; i < want.experts[l].size(); ++i) {
      same += got.experts[l][i] == want.experts[l][i];
      ++total;
    }
  std::printf("[bf16 model] expert choice matches in %lld of %lld slots (%.4f)\n",
              static_cast<long long>(same), static_cast<long long>(total),
              total ? double(same) / double(total) : 1.0);
  ASSERT_EQ(got.grads.size(), want.grads.size());
  double worst = 0;
  for (const Param& p : params) {
    const int64_t n = p.spec.shape.numel();
    double diff = 0, norm = 0;
    bool finite = true;
    for (int64_t i = p.offset; i < p.offset + n; ++i) {
      const double a = got.grads[i], b = want.grads[i];
      finite = finite && std::isfinite(a);
      diff += (a - b) * (a - b);
      norm += b * b;
    }
    const double rel = std::sqrt(diff / std::max(norm, 1e-300));
    worst = std::max(worst, rel);
    std::printf("[bf16 model] grad %-32s rel %.3g\n", p.spec.name.c_str(), rel);
    EXPECT_TRUE(finite) << p.spec.name;
    EXPECT_GT(norm, 0.0) << p.spec.name;
    EXPECT_LE(rel, 5e-2) << p.spec.name << " gradient relative error " << rel;
  }
  std::printf("[bf16 model] worst per-tensor gradient rel error %.3g\n", worst);
}

// F32 master weights with a BF16 compute copy, micro-batches of cfg's batch
// size; expert gradients in expert_grads.
ModelOptions bf16_options(const Config& cfg, DType expert_grads = DType::F32) {
  ModelOptions o;
  o.dtype = F;
  o.compute_dtype = BF;
  o.expert_grad_dtype = expert_grads;
  o.micro_batch = cfg.batch_size;
  o.seq_len = cfg.seq_len;
  return o;
}

// The optimizer refreshes the BF16 compute copy of the weights in its AdamW
// pass (adamw_copy): after each step the copy is the master weights rounded.
TEST(CudaBf16Model, OptimizerStepRefreshesComputeCopy) {
  NMOE_SKIP_WITHOUT_CUDA();
  Config cfg = load_config_string(kMoeToml, "gpu_model_bf16_opt", {});
  std::vector<int32_t> tok, tgt;
  make_batch(cfg, tok, tgt);
  Model m(cfg, gpu(), bf16_options(cfg));
  m.init_weights(77);
  Optimizer opt(cfg, m);
  const ParamStore& ps = m.params();
  ASSERT_TRUE(ps.has_compute_copy());
  const int64_t n = ps.numel();
  for (int64_t step = 0; step < 2; ++step) {
    m.zero_grads();
    m.reset_step_stats();
    m.forward_backward(tok.data(), tgt.data(), 1.0 / static_cast<double>(tok.size()), 0.01);
    std::vector<float> before(n);
    gpu().copy_to_host(before.data(), ps.flat_params());
    opt.step(step, static_cast<double>(step * tok.size()));
    std::vector<float> w(n);
    std::vector<uint16_t> c(n);
    gpu().copy_to_host(w.data(), ps.flat_params());
    gpu().copy_to_host(c.data(), ps.flat_compute());
    int64_t changed = 0, wrong = 0;
    for (int64_t i = 0; i < n; ++i) {
      changed += w[i] != before[i];
      uint32_t bits;
      std::memcpy(&bits, &w[i], 4);
      wrong += c[i] != static_cast<uint16_t>((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    }
    EXPECT_GT(changed, 0) << "step " << step;
    EXPECT_EQ(wrong, 0) << "step " << step << ": compute copy elements that are not the rounded weights";
  }
}

// BF16 expert gradients (expert_grad_dtype = "bf16"): each weight-gradient
// GEMM adds its fp32 sum once into zeroed gradients, so every expert gradient
// is the fp32 run's value rounded to BF16 and every other number is unchanged.
TEST(CudaBf16Model, Bf16ExpertGradientsAreTheF32OnesRounded) {
  NMOE_SKIP_WITHOUT_CUDA();
  Config cfg = load_config_string(kMoeToml, "gpu_model_bf16_eg", {});
  std::vector<int32_t> tok, tgt;
  make_batch(cfg, tok, tgt);
  std::vector<Param> params;
  const ModelRun f32 = run_model(gpu(), cfg, true, tok, tgt, &params);
  const ModelRun b16 = run_model(gpu(), cfg, true, tok, tgt, nullptr, BF);
  EXPECT_EQ(std::memcmp(&f32.loss, &b16.loss, sizeof(double)), 0);
  EXPECT_EQ(f32.experts, b16.experts);
  ASSERT_EQ(f32.grads.size(), b16.grads.size());
  int64_t experts = 0;
  for (const Param& p : params) {
    const bool expert = p.spec.group == ParamGroup::Expert;
    experts += expert;
    int64_t wrong = 0, nonzero = 0;
    for (int64_t i = p.offset; i < p.offset + p.spec.shape.numel(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, &f32.grads[i], 4);
      if (expert) bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16;  // round to nearest even
      float want;
      std::memcpy(&want, &bits, 4);
      wrong += std::memcmp(&want, &b16.grads[i], 4) != 0;
      nonzero += b16.grads[i] != 0;
    }
    EXPECT_EQ(wrong, 0) << p.spec.name;
    EXPECT_GT(nonzero, 0) << p.spec.name;
  }
  EXPECT_GT(experts, 0);
}

// Eight micro-batches accumulate into BF16 expert gradients (each adds its
// fp32 sum rounded to BF16): within 1e-2 of the fp32 accumulation per tensor,
// and every other gradient bit-identical.
TEST(CudaBf16Model, Bf16ExpertGradientsAccumulateMicroBatches) {
  NMOE_SKIP_WITHOUT_CUDA();
  Config cfg = load_config_string(kMoeToml, "gpu_model_bf16_eg_acc", {});
  const int64_t N = cfg.batch_size * cfg.seq_len;
  std::vector<std::vector<float>> grads;
  std::vector<Param> params;
  for (DType eg : {F, BF}) {
    ModelOptions o = bf16_options(cfg, eg);
    o.exact_accumulation = false;
    Model m(cfg, gpu(), o);
    m.init_weights(8);
    m.zero_grads();
    m.reset_step_stats();
    std::mt19937_64 g(17);
    std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(cfg.vocab_size) - 1);
    for (int micro = 0; micro < 8; ++micro) {
      std::vector<int32_t> tok(N), tgt(N);
      for (auto& t : tok) t = d(g);
      for (auto& t : tgt) t = d(g);
      m.forward_backward(tok.data(), tgt.data(), 1.0 / static_cast<double>(8 * N), 0.01);
    }
    grads.push_back(read_grads(gpu(), m.params()));
    if (params.empty())
      for (const Param& p : m.params().all()) params.push_back(p);
  }
  for (const Param& p : params) {
    double diff = 0, norm = 0;
    int64_t differ = 0;
    for (int64_t i = p.offset; i < p.offset + p.spec.shape.numel(); ++i) {
      const double a = grads[1][i], b = grads[0][i];
      diff += (a - b) * (a - b);
      norm += b * b;
      differ += std::memcmp(&grads[1][i], &grads[0][i], 4) != 0;
    }
    const double rel = std::sqrt(diff / std::max(norm, 1e-300));
    if (p.spec.group == ParamGroup::Expert) {
      std::printf("[bf16 expert grads, 8 micro-batches] %-28s rel %.3g\n", p.spec.name.c_str(), rel);
      EXPECT_GT(norm, 0.0) << p.spec.name;
      EXPECT_LT(rel, 1e-2) << p.spec.name;
      EXPECT_GT(differ, 0) << p.spec.name << ": no rounding at all is not BF16 storage";
    } else {
      EXPECT_EQ(differ, 0) << p.spec.name;
    }
  }
}

// Training steps with BF16 expert gradients: the optimizer reads them from
// their own buffer (norm, clipping, fused AdamW with the compute copy), and
// the losses follow the fp32-gradient run's closely.
TEST(CudaBf16Model, Bf16ExpertGradientsTrain) {
  NMOE_SKIP_WITHOUT_CUDA();
  Config cfg = load_config_string(kMoeToml, "gpu_model_bf16_eg_train",
                                  {{"grad_clip", "0.5"}, {"lr_expert", "3e-3"}, {"lr_dense", "3e-3"}});
  std::vector<int32_t> tok, tgt;
  make_batch(cfg, tok, tgt);
  std::vector<double> losses[2];
  double norms[2] = {0, 0};
  for (int run = 0; run < 2; ++run) {
    Model m(cfg, gpu(), bf16_options(cfg, run == 1 ? BF : F));
    m.init_weights(5);
    ASSERT_EQ(m.params().split_grads(), run == 1);
    Optimizer opt(cfg, m);
    for (int64_t step = 0; step < 6; ++step) {
      m.zero_grads();
      m.reset_step_stats();
      m.forward_backward(tok.data(), tgt.data(), 1.0 / static_cast<double>(tok.size()), 0.0);
      losses[run].push_back(m.read_loss_sum() / static_cast<double>(tok.size()));
      opt.step(step, static_cast<double>(step * tok.size()));
      if (step == 0) norms[run] = opt.last_grad_norm();
    }
  }
  std::printf("[bf16 expert grads] first grad norm %.6f vs %.6f; losses", norms[1], norms[0]);
  for (size_t i = 0; i < losses[0].size(); ++i) std::printf(" %.5f/%.5f", losses[1][i], losses[0][i]);
  std::printf("\n");
  EXPECT_NEAR(norms[1], norms[0], 1e-2 * norms[0]);
  EXPECT_EQ(losses[0][0], losses[1][0]);  // the first forward precedes any update
  for (size_t i = 1; i < losses[0].size(); ++i) {
    EXPECT_TRUE(std::isfinite(losses[1][i]));
    EXPECT_NEAR(losses[1][i], losses[0][i], 1e-2 * losses[0][i]) << "step " << i;
  }
  EXPECT_LT(losses[1].back(), losses[1].front() - 0.05) << "training did not lower the loss";
}

TEST(CudaBf16Model, Deterministic) {
  NMOE_SKIP_WITHOUT_CUDA();
  Config cfg = load_config_string(kMoeToml, "gpu_model_bf16_det", {});
  std::vector<int32_t> tok, tgt;
  make_batch(cfg, tok, tgt);
  const ModelRun a = run_model(gpu(), cfg, true, tok, tgt, nullptr);
  const ModelRun b = run_model(gpu(), cfg, true, tok, tgt, nullptr);
  EXPECT_EQ(std::memcmp(&a.loss, &b.loss, sizeof(double)), 0) << a.loss << " vs " << b.loss;
  EXPECT_EQ(std::memcmp(&a.aux, &b.aux, sizeof(double)), 0);
  EXPECT_EQ(a.experts, b.experts);
  ASSERT_EQ(a.grads.size(), b.grads.size());
  EXPECT_EQ(std::memcmp(a.grads.data(), b.grads.data(), a.grads.size() * sizeof(float)), 0)
      << "gradients differ between two identical BF16 runs";
}

// The optimizer update overlapped with the last backward (side work on a
// second stream): the same losses, weights, compute copy and moments, bit for
// bit, as the update after the backward. Three steps of two micro-batches,
// BF16 expert gradients, as the trainer runs the speedrun configs.
TEST(CudaBf16Model, OptimizerOverlapGivesTheSameBits) {
  NMOE_SKIP_WITHOUT_CUDA();
  Config cfg = load_config_string(kMoeToml, "gpu_model_bf16_overlap", {{"lr_expert", "3e-3"}});
  const int64_t N = cfg.batch_size * cfg.seq_len;
  struct Result {
    std::vector<double> losses;
    std::vector<float> w, m, v;
    std::vector<uint16_t> c;
  } res[2];
  for (int run = 0; run < 2; ++run) {
    struct OverlapEnv {  // NMOE_OPTIMIZER_OVERLAP for this run; the caller's value afterwards
      std::optional<std::string> old;
      explicit OverlapEnv(const char* v) {
        if (const char* o = std::getenv("NMOE_OPTIMIZER_OVERLAP")) old = o;
        setenv("NMOE_OPTIMIZER_OVERLAP", v, 1);
      }
      ~OverlapEnv() { old ? setenv("NMOE_OPTIMIZER_OVERLAP", old->c_str(), 1) : unsetenv("NMOE_OPTIMIZER_OVERLAP"); }
    } env(run == 0 ? "off" : "auto");
    ModelOptions o = bf16_options(cfg, BF);
    o.exact_accumulation = false;
    Model m(cfg, gpu(), o);
    m.init_weights(5);
    Optimizer opt(cfg, m);
    ASSERT_EQ(opt.overlaps_backward(), run == 1);
    std::mt19937_64 g(3);
    std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(cfg.vocab_size) - 1);
    for (int64_t step = 0; step < 3; ++step) {
      m.zero_grads();
      m.reset_step_stats();
      for (int micro = 0; micro < 2; ++micro) {
        std::vector<int32_t> tok(N), tgt(N);
        for (auto& t : tok) t = d(g);
        for (auto& t : tgt) t = d(g);
        if (micro == 1 && opt.overlaps_backward()) opt.begin_overlapped_step(step, double(step * 2 * N));
        m.forward_backward(tok.data(), tgt.data(), 1.0 / static_cast<double>(2 * N), 0.01);
      }
      res[run].losses.push_back(m.read_loss_sum());
      opt.step(step, double(step * 2 * N));
    }
    const ParamStore& ps = m.params();
    Result& r = res[run];
    r.w.resize(ps.numel());
    r.c.resize(ps.numel());
    r.m.resize(ps.all_m().numel());
    r.v.resize(ps.all_v().numel());
    gpu().copy_to_host(r.w.data(), ps.flat_params());
    gpu().copy_to_host(r.c.data(), ps.flat_compute());
    gpu().copy_to_host(r.m.data(), ps.all_m());
    gpu().copy_to_host(r.v.data(), ps.all_v());
  }
  EXPECT_EQ(res[1].losses, res[0].losses);
  EXPECT_NE(res[1].losses[0], res[1].losses[2]);
  EXPECT_EQ(std::memcmp(res[1].w.data(), res[0].w.data(), res[0].w.size() * 4), 0) << "master weights differ";
  EXPECT_EQ(std::memcmp(res[1].c.data(), res[0].c.data(), res[0].c.size() * 2), 0) << "compute copies differ";
  EXPECT_EQ(std::memcmp(res[1].m.data(), res[0].m.data(), res[0].m.size() * 4), 0) << "first moments differ";
  EXPECT_EQ(std::memcmp(res[1].v.data(), res[0].v.data(), res[0].v.size() * 4), 0) << "second moments differ";
}

}  // namespace
}  // namespace nmoe::gputest
