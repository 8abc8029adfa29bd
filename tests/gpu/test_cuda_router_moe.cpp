// CUDA router, load balancing and MoE permutation vs the CPU reference.
#include "gpu_test_util.h"

namespace nmoe::gputest {
namespace {

constexpr DType F = DType::F32;

struct RouterCase {
  int64_t N, E, K;
};

TEST(CudaRouter, ForwardBackward) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(21);
  for (RouterCase c : {RouterCase{1, 1, 1}, {37, 8, 2}, {300, 64, 6}, {129, 256, 8}, {50, 40, 40}}) {
    for (bool ties : {false, true}) {
      RouterParams p;
      p.top_k = static_cast<int>(c.K);
      p.route_scale = 1.7;
      p.routed_scaling_factor = 2.5;
      HostTensor logits = uniform(F, Shape{c.N, c.E}, rng, -3, 3);
      HostTensor bias = uniform(F, Shape{c.E}, rng, -0.1, 0.1);
      if (ties) {  // equal keys everywhere: the choice is by expert id
        logits.fill(0.5);
        bias.fill(0.0);
      }
      HostTensor scores = poisoned(F, Shape{c.N, c.E}), idx = poisoned(DType::I32, Shape{c.N, c.K});
      HostTensor gates = poisoned(F, Shape{c.N, c.K}), counts = filled(DType::I32, Shape{c.E}, 3);
      DevTensor dl(logits), db(bias), ds(scores), di(idx), dg(gates), dc(counts);
      cpu().router_fwd(logits, bias, p, scores, idx, gates, counts);
      gpu().router_fwd(dl, db, p, ds, di, dg, dc);
      NMOE_EXPECT_CLOSE(ds.download(), scores, kTol);
      NMOE_EXPECT_SAME(di.download(), idx) << "N " << c.N << " E " << c.E << " K " << c.K;
      NMOE_EXPECT_CLOSE(dg.download(), gates, kTol);
      NMOE_EXPECT_SAME(dc.download(), counts);
      // Given indices: same idx back, gates from them.
      p.use_given_indices = true;
      HostTensor gates2 = poisoned(F, Shape{c.N, c.K});
      DevTensor dg2(gates2);
      cpu().router_fwd(logits, bias, p, scores, idx, gates2, counts);
      gpu().router_fwd(dl, db, p, ds, di, dg2, dc);
      NMOE_EXPECT_CLOSE(dg2.download(), gates2, kTol);
      NMOE_EXPECT_SAME(dc.download(), counts);
      // Backward.
      HostTensor dgates = uniform(F, Shape{c.N, c.K}, rng), dlogits = poisoned(F, Shape{c.N, c.E});
      DevTensor ddg(dgates), ddl(dlogits);
      cpu().router_bwd(dgates, scores, idx, p, dlogits);
      gpu().router_bwd(ddg, ds, di, p, ddl);
      NMOE_EXPECT_CLOSE(ddl.download(), dlogits, kTol);
    }
  }
}

TEST(CudaRouter, AuxLossAndBiasUpdate) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(22);
  for (RouterCase c : {RouterCase{1, 4, 1}, {37, 8, 2}, {1000, 64, 6}}) {
    HostTensor gates = uniform(F, Shape{c.N, c.K}, rng, 0, 1);
    HostTensor idx = random_ids(Shape{c.N, c.K}, 0, static_cast<int32_t>(c.E / 2), rng);
    HostTensor loss = scalar(0.25), dgates = uniform(F, Shape{c.N, c.K}, rng);
    DevTensor dgt(gates), di(idx), dloss(loss), ddg(dgates);
    cpu().moe_aux_loss(gates, idx, static_cast<int>(c.E), 0.3, loss, dgates);
    gpu().moe_aux_loss(dgt, di, static_cast<int>(c.E), 0.3, dloss, ddg);
    NMOE_EXPECT_CLOSE(dloss.download(), loss, 1e-12);
    NMOE_EXPECT_CLOSE(ddg.download(), dgates, kTol);
    gpu().moe_aux_loss(dgt, di, static_cast<int>(c.E), 0.3, dloss, Tensor());  // loss only
    cpu().moe_aux_loss(gates, idx, static_cast<int>(c.E), 0.3, loss, Tensor());
    NMOE_EXPECT_CLOSE(dloss.download(), loss, 1e-12);

    HostTensor counts = random_ids(Shape{c.E}, 0, 50, rng);
    counts.t().ptr<int32_t>()[0] = 0;
    HostTensor bias = uniform(F, Shape{c.E}, rng, -15.99, 15.99);
    DevTensor dc(counts), dbias(bias);
    for (int step = 0; step < 3; ++step) {
      cpu().router_bias_update(bias, counts, 0.01);
      gpu().router_bias_update(dbias, dc, 0.01);
    }
    NMOE_EXPECT_CLOSE(dbias.download(), bias, kTol);
  }
}

// idx with empty experts, one expert taking every slot, and a random spread.
std::vector<HostTensor> plan_cases(int64_t N, int64_t K, int64_t E, std::mt19937_64& rng) {
  std::vector<HostTensor> out;
  out.push_back(random_ids(Shape{N, K}, 0, static_cast<int32_t>(E - 1), rng));
  HostTensor sparse = random_ids(Shape{N, K}, 0, 2, rng);  // experts 0..2 only
  for (int64_t i = 0; i < N * K; ++i) sparse.t().ptr<int32_t>()[i] *= static_cast<int32_t>(E / 3);
  out.push_back(sparse);
  out.push_back(filled(DType::I32, Shape{N, K}, static_cast<double>(E - 1)));
  return out;
}

TEST(CudaMoe, PlanDispatchCombine) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(23);
  for (RouterCase c : {RouterCase{1, 1, 1}, {37, 8, 2}, {513, 64, 6}}) {
    const int64_t D = 72, M = c.N * c.K;
    for (const HostTensor& idx : plan_cases(c.N, c.K, c.E, rng)) {
      HostTensor off = poisoned(DType::I32, Shape{c.E + 1}), pos = poisoned(DType::I32, Shape{M});
      DevTensor di(idx), doff(off), dpos(pos);
      cpu().moe_plan(idx, static_cast<int>(c.E), off, pos);
      gpu().moe_plan(di, static_cast<int>(c.E), doff, dpos);
      NMOE_EXPECT_SAME(doff.download(), off);
      NMOE_EXPECT_SAME(dpos.download(), pos);
      const int K = static_cast<int>(c.K);
      HostTensor x = uniform(F, Shape{c.N, D}, rng), xe = poisoned(F, Shape{M, D});
      DevTensor dx(x), dxe(xe);
      cpu().moe_dispatch(x, pos, K, xe);
      gpu().moe_dispatch(dx, dpos, K, dxe);
      NMOE_EXPECT_SAME(dxe.download(), xe);
      HostTensor gxe = uniform(F, Shape{M, D}, rng), gx = uniform(F, Shape{c.N, D}, rng);
      DevTensor dgxe(gxe), dgx(gx);
      cpu().moe_dispatch_bwd(gxe, pos, K, gx);
      gpu().moe_dispatch_bwd(dgxe, dpos, K, dgx);
      NMOE_EXPECT_CLOSE(dgx.download(), gx, kTol);
      HostTensor ye = uniform(F, Shape{M, D}, rng), gates = uniform(F, Shape{c.N, c.K}, rng);
      HostTensor out = uniform(F, Shape{c.N, D}, rng);
      DevTensor dye(ye), dgates(gates), dout(out);
      cpu().moe_combine(ye, pos, gates, out);
      gpu().moe_combine(dye, dpos, dgates, dout);
      NMOE_EXPECT_CLOSE(dout.download(), out, kTol);
      HostTensor g = uniform(F, Shape{c.N, D}, rng);
      HostTensor gye = poisoned(F, Shape{M, D}), ggates = poisoned(F, Shape{c.N, c.K});
      DevTensor dg(g), dgye(gye), dggates(ggates);
      cpu().moe_combine_bwd(g, ye, pos, gates, gye, ggates);
      gpu().moe_combine_bwd(dg, dye, dpos, dgates, dgye, dggates);
      NMOE_EXPECT_CLOSE(dgye.download(), gye, kTol);
      NMOE_EXPECT_CLOSE(dggates.download(), ggates, kTol);
    }
  }
}

TEST(CudaMoe, DeviceErrorsSurfaceAtSynchronize) {
  NMOE_SKIP_WITHOUT_CUDA();
  HostTensor idx = indices(Shape{2, 2}, {0, 1, 9, 2});  // 9 is outside [0, 4)
  DevTensor di(idx), doff(DType::I32, Shape{5}), dpos(DType::I32, Shape{4});
  gpu().moe_plan(di, 4, doff, dpos);
  EXPECT_THROW(gpu().synchronize(), Error);
  gpu().synchronize();  // the flag is cleared once reported
  HostTensor W(F, Shape{4, 8}), tok = indices(Shape{2}, {1, 4});
  DevTensor dW(W), dtok(tok), dout(F, Shape{2, 8});
  gpu().embedding_fwd(dW, dtok, dout);
  HostTensor back(F, Shape{2, 8});
  EXPECT_THROW(gpu().copy_to_host(back.t().data, dout), Error);
  DevTensor bf(DType::BF16, Shape{2, 8});
  EXPECT_THROW(gpu().add(bf, bf, dout, 1.0), Error);  // mixed BF16 / F32 activations
  DevTensor f64(DType::F64, Shape{2, 8});
  EXPECT_THROW(gpu().add(f64, f64, f64, 1.0), Error);  // F64 is CPU-only
  EXPECT_THROW(gpu().moe_dispatch(dW, dpos, 2, dout), Error);  // shape
  gpu().synchronize();
}

}  // namespace
}  // namespace nmoe::gputest
