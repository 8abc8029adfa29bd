// CPU backend: MoE plan, dispatch, combine and their backward.
#include <vector>

#include "cpu_test_util.h"

namespace nmoe::cputest {
namespace {

struct Plan {
  HostTensor offsets, pos;
};

Plan make_plan(CpuBackend& be, const HostTensor& idx, int E) {
  Plan p{HostTensor(DType::I32, {E + 1}), HostTensor(DType::I32, {idx.numel()})};
  p.offsets.fill(-7);
  p.pos.fill(-7);
  be.moe_plan(idx, E, p.offsets, p.pos);
  return p;
}

TEST(CpuMoePlan, CountingSortIsStableInTokenOrder) {
  CpuBackend be(0);
  // N = 5 tokens, K = 2; expert 1 gets nothing, expert 3 is popular.
  const std::vector<int32_t> ids = {3, 0, 2, 3, 3, 0, 0, 2, 3, 4};
  const Plan p = make_plan(be, indices({5, 2}, ids), 5);
  EXPECT_EQ(p.offsets.values(), (std::vector<double>{0, 3, 3, 5, 9, 10}));
  // Expert-contiguous order lists slots in (t, k) order within each expert.
  std::vector<int> slot_at_row(10, -1);
  for (int s = 0; s < 10; ++s) slot_at_row[static_cast<int>(p.pos.get(s))] = s;
  EXPECT_EQ(slot_at_row, (std::vector<int>{1, 5, 6, 2, 7, 0, 3, 4, 8, 9}));
}

TEST(CpuMoePlan, RejectsOutOfRangeIds) {
  CpuBackend be(0);
  HostTensor offsets(DType::I32, {4}), pos(DType::I32, {4});
  EXPECT_THROW(be.moe_plan(indices({2, 2}, {0, 3, 1, 2}), 3, offsets, pos), Error);
  EXPECT_THROW(be.moe_plan(indices({2, 2}, {0, -1, 1, 2}), 3, offsets, pos), Error);
  EXPECT_THROW(be.moe_plan(indices({2, 2}, {0, 1, 1, 2}), 3, offsets, HostTensor(DType::I32, {3})),
               Error);
}

TEST(CpuMoe, DispatchCombineRoundTrip) {
  CpuBackend be(0);
  std::mt19937_64 rng(40);
  const int64_t N = 23, K = 3, E = 6, D = 7;
  for (DType dt : kFloatTypes) {
    HostTensor x = uniform(dt, {N, D}, rng), gates = uniform(dt, {N, K}, rng, 0, 1);
    HostTensor idx(DType::I32, {N, K});
    std::uniform_int_distribution<int> pick(0, E - 1);
    for (int64_t i = 0; i < N * K; ++i) idx.set(i, pick(rng));
    const Plan plan = make_plan(be, idx, E);
    HostTensor xe(dt, {N * K, D});
    xe.poison();
    be.moe_dispatch(x, plan.pos, K, xe);
    // Rows of expert e are contiguous and hold tokens routed to e.
    for (int64_t s = 0; s < N * K; ++s) {
      const int64_t row = static_cast<int64_t>(plan.pos.get(s)), e = static_cast<int64_t>(idx.get(s));
      EXPECT_GE(row, plan.offsets.get(e));
      EXPECT_LT(row, plan.offsets.get(e + 1));
      for (int64_t d = 0; d < D; ++d) EXPECT_EQ(xe.get(row * D + d), x.get((s / K) * D + d));
    }
    // Identity experts: combine gives x * sum_k gates (+ the initial out).
    HostTensor out = filled(dt, {N, D}, 1.0);
    be.moe_combine(xe, plan.pos, gates, out);
    std::vector<double> want(N * D);
    for (int64_t t = 0; t < N; ++t) {
      double g = 0;
      for (int64_t k = 0; k < K; ++k) g += gates.get(t * K + k);
      for (int64_t d = 0; d < D; ++d) want[t * D + d] = 1.0 + g * x.get(t * D + d);
    }
    EXPECT_LT(rel_err(out, want), fwd_tol(dt));
  }
}

struct MoeCase {
  int64_t N = 9, K = 2, E = 4, D = 5;
  HostTensor idx;
  Plan plan;
};

MoeCase make_case(CpuBackend& be, std::mt19937_64& rng) {
  MoeCase c;
  c.idx = HostTensor(DType::I32, {c.N, c.K});
  for (int64_t t = 0; t < c.N; ++t) {
    c.idx.set(t * c.K, (t * 3) % c.E);
    c.idx.set(t * c.K + 1, (t * 3 + 1 + static_cast<int64_t>(rng() % 3)) % c.E);
  }
  c.plan = make_plan(be, c.idx, static_cast<int>(c.E));
  return c;
}

TEST(CpuMoe, DispatchBackwardMatchesFiniteDifferences) {
  CpuBackend be(0);
  std::mt19937_64 rng(41);
  const MoeCase c = make_case(be, rng);
  HostTensor x = uniform(DType::F64, {c.N, c.D}, rng), w = uniform(DType::F64, {c.N * c.K, c.D}, rng);
  HostTensor xe(DType::F64, {c.N * c.K, c.D});
  const std::vector<double> fd = fd_grad(x, [&] {
    be.moe_dispatch(x, c.plan.pos, static_cast<int>(c.K), xe);
    return weighted_sum(xe, w);
  });
  HostTensor dx = uniform(DType::F64, {c.N, c.D}, rng);
  const HostTensor dx0 = dx;
  be.moe_dispatch_bwd(w, c.plan.pos, static_cast<int>(c.K), dx);
  EXPECT_LT(rel_err(added(dx, dx0), fd), kGradTol);
}

TEST(CpuMoe, CombineBackwardMatchesFiniteDifferences) {
  CpuBackend be(0);
  std::mt19937_64 rng(42);
  const MoeCase c = make_case(be, rng);
  HostTensor ye = uniform(DType::F64, {c.N * c.K, c.D}, rng), gates = uniform(DType::F64, {c.N, c.K}, rng);
  HostTensor w = uniform(DType::F64, {c.N, c.D}, rng), out(DType::F64, {c.N, c.D});
  auto loss = [&] {
    out.fill(0);
    be.moe_combine(ye, c.plan.pos, gates, out);
    return weighted_sum(out, w);
  };
  const std::vector<double> fd_ye = fd_grad(ye, loss), fd_gates = fd_grad(gates, loss);
  HostTensor dye(DType::F64, {c.N * c.K, c.D}), dgates(DType::F64, {c.N, c.K});
  dye.poison();
  dgates.poison();
  be.moe_combine_bwd(w, ye, c.plan.pos, gates, dye, dgates);
  EXPECT_LT(rel_err(dye, fd_ye), kGradTol);
  EXPECT_LT(rel_err(dgates, fd_gates), kGradTol);
}

// Without the expert outputs: moe_combine_bwd writes dye only, and
// moe_gate_grad forms the gates' gradient <a, da> / gate from the experts'
// SwiGLU activation a (ye = a W2^T) and da = dye W2; a zero gate gets zero.
TEST(CpuMoe, GateGradientFromTheActivationsEqualsTheCombineBackwards) {
  CpuBackend be(0);
  std::mt19937_64 rng(43);
  const MoeCase c = make_case(be, rng);
  const int64_t M = c.N * c.K, F = 3;
  HostTensor a = uniform(DType::F64, {M, F}, rng), W2 = uniform(DType::F64, {c.E, c.D, F}, rng);
  HostTensor gates = uniform(DType::F64, {c.N, c.K}, rng, 0.1, 1.0), dout = uniform(DType::F64, {c.N, c.D}, rng);
  gates.set(3, 0.0);
  HostTensor ye(DType::F64, {M, c.D});
  be.grouped_matmul(a, W2, true, c.plan.offsets, ye);
  HostTensor dye(DType::F64, {M, c.D}), want(DType::F64, {c.N, c.K}), dye2(DType::F64, {M, c.D});
  be.moe_combine_bwd(dout, ye, c.plan.pos, gates, dye, want);
  dye2.poison();
  be.moe_combine_bwd(dout, Tensor(), c.plan.pos, gates, dye2, Tensor());
  EXPECT_EQ(dye2.values(), dye.values());
  HostTensor da(DType::F64, {M, F}), got(DType::F64, {c.N, c.K});
  be.grouped_matmul(dye2, W2, false, c.plan.offsets, da);
  got.poison();
  be.moe_gate_grad(a, da, c.plan.pos, gates, got);
  for (int64_t s = 0; s < c.N * c.K; ++s) {
    if (s == 3) {
      EXPECT_EQ(got.get(s), 0.0);
      EXPECT_NE(want.get(s), 0.0);
    } else {
      EXPECT_NEAR(got.get(s), want.get(s), 1e-12 * (1 + std::abs(want.get(s)))) << "slot " << s;
    }
  }
  EXPECT_THROW(be.moe_combine_bwd(dout, ye, c.plan.pos, gates, dye2, Tensor()), Error);  // ye without dgates
  EXPECT_THROW(be.moe_gate_grad(a, da, c.plan.pos, gates, HostTensor(DType::F64, {c.N, c.K + 1})), Error);
}

TEST(CpuMoe, RejectsPositionsThatAreNotAPermutation) {
  CpuBackend be(0);
  HostTensor x(DType::F64, {2, 3}), xe(DType::F64, {4, 3});
  EXPECT_THROW(be.moe_dispatch(x, indices({4}, {0, 1, 1, 3}), 2, xe), Error);
  EXPECT_THROW(be.moe_dispatch(x, indices({4}, {0, 1, 2, 4}), 2, xe), Error);
  EXPECT_THROW(be.moe_dispatch(x, indices({4}, {0, 1, 2, 3}), 3, xe), Error);  // K mismatch
}

}  // namespace
}  // namespace nmoe::cputest
