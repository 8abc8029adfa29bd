// CPU backend: wrong shapes and dtypes throw nmoe::Error naming the op.
#include <string>

#include "cpu_test_util.h"

namespace nmoe::cputest {
namespace {

// Expects `call` to throw an Error whose message mentions `op`.
template <class Call>
void expect_error(const std::string& op, Call&& call) {
  try {
    call();
    ADD_FAILURE() << op << ": expected nmoe::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(op), std::string::npos) << e.what();
  }
}

HostTensor f64(Shape s) { return filled(DType::F64, s, 0.5); }

TEST(CpuErrors, DtypeRules) {
  CpuBackend be(0);
  HostTensor a = f64({2, 3}), b32 = filled(DType::F32, {3, 4}, 1), c = f64({2, 4});
  expect_error("matmul", [&] { be.matmul(a, false, b32, false, c, 1, 0); });  // mixed
  HostTensor bf(DType::BF16, {2, 3}), bf_out(DType::BF16, {2, 3});
  expect_error("add", [&] { be.add(bf_out, bf, bf, 1); });
  expect_error("rmsnorm_fwd", [&] {
    be.rmsnorm_fwd(a, filled(DType::F32, {3}, 1), 1e-5, f64({2, 3}), f64({2}));
  });
  expect_error("embedding_fwd", [&] {
    be.embedding_fwd(f64({4, 3}), filled(DType::F64, {2}, 0), f64({2, 3}));  // tokens not I32
  });
  expect_error("sum_squares", [&] { be.sum_squares(a, filled(DType::F32, {1}, 0)); });
}

TEST(CpuErrors, DenseAndGroupedShapes) {
  CpuBackend be(0);
  expect_error("matmul", [&] { be.matmul(f64({2, 3}), false, f64({4, 5}), false, f64({2, 5}), 1, 0); });
  expect_error("matmul", [&] { be.matmul(f64({2, 3}), true, f64({2, 5}), false, f64({2, 5}), 1, 0); });
  const HostTensor off = indices({3}, {0, 2, 5});
  expect_error("grouped_matmul", [&] { be.grouped_matmul(f64({5, 4}), f64({2, 3}), true, off, f64({5, 3})); });
  expect_error("grouped_matmul", [&] { be.grouped_matmul(f64({5, 4}), f64({2, 3, 4}), true, off, f64({5, 4})); });
  expect_error("grouped_matmul_wgrad", [&] {
    be.grouped_matmul_wgrad(f64({5, 3}), f64({5, 5}), off, f64({2, 3, 4}));
  });
  expect_error("add", [&] { be.add(f64({2, 3}), f64({2, 3}), f64({3, 3}), 1); });
}

TEST(CpuErrors, NormEmbeddingSwigluShapes) {
  CpuBackend be(0);
  expect_error("embedding_fwd", [&] { be.embedding_fwd(f64({4, 3}), indices({2}, {0, 4}), f64({2, 3})); });
  expect_error("embedding_fwd", [&] { be.embedding_fwd(f64({4, 3}), indices({2}, {0, 1}), f64({2, 2})); });
  expect_error("embedding_bwd", [&] { be.embedding_bwd(f64({3, 3}), indices({2}, {0, 1}), f64({4, 3})); });
  expect_error("rmsnorm_fwd", [&] { be.rmsnorm_fwd(f64({2, 3}), f64({4}), 1e-5, f64({2, 3}), f64({2})); });
  expect_error("rmsnorm_fwd", [&] { be.rmsnorm_fwd(f64({2, 3}), f64({3}), 1e-5, f64({2, 3}), f64({3})); });
  expect_error("rmsnorm_bwd", [&] {
    be.rmsnorm_bwd(f64({2, 3}), f64({2, 3}), f64({3}), f64({2}), f64({2, 3}), f64({2}));
  });
  expect_error("swiglu_fwd", [&] { be.swiglu_fwd(f64({2, 5}), f64({2, 2})); });
  expect_error("swiglu_fwd", [&] { be.swiglu_fwd(f64({2, 6}), f64({2, 2})); });
  expect_error("swiglu_bwd", [&] { be.swiglu_bwd(f64({2, 3}), f64({2, 6}), f64({2, 3}), Tensor()); });
}

TEST(CpuErrors, AttentionShapes) {
  CpuBackend be(0);
  const HostTensor qkv = f64({6, 3, 2, 4});
  const HostTensor cos = f64({3, 2}), sin = f64({3, 2});
  expect_error("rope", [&] { be.rope(qkv, cos, sin, 4, false); });           // table too short, 6 % 4
  expect_error("rope", [&] { be.rope(qkv, f64({3, 4}), f64({3, 4}), 3, false); });  // not Dh/2 columns
  expect_error("rope", [&] { be.rope(f64({6, 3, 2, 3}), f64({3, 1}), f64({3, 1}), 3, false); });  // odd Dh
  expect_error("rope", [&] { be.rope(f64({6, 2, 2, 4}), cos, sin, 3, false); });  // not [N,3,H,Dh]
  expect_error("attention_fwd", [&] { be.attention_fwd(qkv, 4, 1, f64({6, 8}), f64({2, 2, 3})); });
  expect_error("attention_fwd", [&] { be.attention_fwd(qkv, 3, 1, f64({6, 6}), f64({2, 2, 3})); });
  expect_error("attention_fwd", [&] { be.attention_fwd(qkv, 3, 1, f64({6, 8}), f64({2, 2, 2})); });
  expect_error("attention_bwd", [&] {
    be.attention_bwd(f64({6, 8}), qkv, f64({6, 8}), f64({2, 2, 3}), 3, 1, f64({6, 3, 2, 3}));
  });
}

TEST(CpuErrors, RouterAndMoeShapes) {
  CpuBackend be(0);
  RouterParams p;
  p.top_k = 2;
  const HostTensor logits = f64({3, 4});
  auto route = [&](const HostTensor& bias, const HostTensor& idx, const HostTensor& counts) {
    HostTensor scores = f64({3, 4}), gates = f64({3, 2});
    be.router_fwd(logits, bias, p, scores, idx, gates, counts);
  };
  const HostTensor idx(DType::I32, {3, 2}), counts = filled(DType::I32, {4}, 0);
  expect_error("router_fwd", [&] { route(f64({3}), idx, counts); });
  expect_error("router_fwd", [&] { route(f64({4}), HostTensor(DType::I32, {3, 3}), counts); });
  expect_error("router_fwd", [&] { route(f64({4}), idx, filled(DType::I32, {5}, 0)); });
  p.top_k = 5;
  expect_error("router_fwd", [&] { route(f64({4}), HostTensor(DType::I32, {3, 5}), counts); });
  p.top_k = 2;
  expect_error("router_bwd", [&] { be.router_bwd(f64({3, 2}), f64({3, 4}), indices({3, 2}, {0, 1, 2, 3, 4, 0}), p, f64({3, 4})); });
  expect_error("router_bwd", [&] { be.router_bwd(f64({3, 2}), f64({3, 4}), indices({3, 2}, {0, 1, 2, 3, 1, 0}), p, f64({3, 5})); });
  expect_error("moe_aux_loss", [&] { be.moe_aux_loss(f64({3, 2}), indices({3, 2}, {0, 1, 2, 3, 1, 0}), 3, 1, scalar_f64(), f64({3, 2})); });
  expect_error("moe_aux_loss", [&] { be.moe_aux_loss(f64({3, 2}), indices({2, 3}, {0, 1, 2, 0, 1, 0}), 4, 1, scalar_f64(), f64({3, 2})); });
  expect_error("router_bias_update", [&] { be.router_bias_update(f64({4}), indices({3}, {1, 2, 3}), 0.1); });
  const HostTensor pos = indices({6}, {0, 1, 2, 3, 4, 5});
  expect_error("moe_dispatch", [&] { be.moe_dispatch(f64({3, 4}), pos, 2, f64({6, 5})); });
  expect_error("moe_dispatch_bwd", [&] { be.moe_dispatch_bwd(f64({5, 4}), pos, 2, f64({3, 4})); });
  expect_error("moe_combine", [&] { be.moe_combine(f64({6, 4}), pos, f64({3, 3}), f64({3, 4})); });
  expect_error("moe_combine_bwd", [&] {
    be.moe_combine_bwd(f64({3, 4}), f64({6, 4}), pos, f64({3, 2}), f64({6, 4}), f64({2, 2}));
  });
  expect_error("moe_plan", [&] { be.moe_plan(indices({3, 2}, {0, 1, 2, 3, 1, 0}), 4, HostTensor(DType::I32, {4}), HostTensor(DType::I32, {6})); });
}

}  // namespace
}  // namespace nmoe::cputest
