// Every CUDA op with a reduction, run twice on the same inputs, gives
// bit-identical outputs (accumulating outputs restart from the same values).
#include <functional>

#include "gpu_test_util.h"

namespace nmoe::gputest {
namespace {

constexpr DType F = DType::F32;

// Runs `op` twice, each time after resetting `outs` to their initial host
// values, and expects identical bytes.
void expect_repeatable(const char* name, const std::vector<std::pair<DevTensor*, HostTensor>>& outs,
                       const std::function<void()>& op) {
  std::vector<HostTensor> first;
  for (int run = 0; run < 2; ++run) {
    for (const auto& [d, init] : outs) d->upload(init);
    op();
    for (size_t i = 0; i < outs.size(); ++i) {
      HostTensor got = outs[i].first->download();
      if (run == 0) first.push_back(got);
      else EXPECT_TRUE(got.bytes_equal(first[i])) << name << ": output " << i << " differs";
    }
  }
}

TEST(CudaDeterminism, ReductionsAreBitIdentical) {
  NMOE_SKIP_WITHOUT_CUDA();
  std::mt19937_64 rng(41);
  const int64_t N = 4096, D = 512, V = 1000, E = 64, K = 6, Fw = 384;
  HostTensor x = uniform(F, Shape{N, D}, rng), g = uniform(F, Shape{N, D}, rng);
  HostTensor w = uniform(F, Shape{D}, rng), r = uniform(F, Shape{N}, rng, 0.5, 2);
  HostTensor tok = random_ids(Shape{N}, 0, 9, rng);  // many repeats
  DevTensor dx(x), dg(g), dw(w), dr(r), dtok(tok);
  DevTensor odx(F, Shape{N, D}), odw(F, Shape{D}), oW(F, Shape{V, D});
  HostTensor zND = filled(F, Shape{N, D}, 0.1), zD = filled(F, Shape{D}, 0.1);
  HostTensor zVD = filled(F, Shape{V, D}, 0.1);
  expect_repeatable("embedding_bwd", {{&oW, zVD}}, [&] { gpu().embedding_bwd(dg, dtok, oW); });
  expect_repeatable("rmsnorm_bwd", {{&odx, zND}, {&odw, zD}},
                    [&] { gpu().rmsnorm_bwd(dg, dx, dw, dr, odx, odw); });

  HostTensor Wv = uniform(F, Shape{V, D}, rng), tgt = random_ids(Shape{N}, 0, V - 1, rng);
  DevTensor dWv(Wv), dtgt(tgt), loss(DType::F64, Shape{1});
  expect_repeatable("cross_entropy", {{&loss, scalar(0)}, {&odx, zND}, {&oW, zVD}}, [&] {
    gpu().cross_entropy(dx, dWv, dtgt, -1, 1e-3, 1000, loss, odx, oW);
  });
  expect_repeatable("sum_squares", {{&loss, scalar(0)}}, [&] { gpu().sum_squares(dx, loss); });
  HostTensor B_ = uniform(F, Shape{D, D}, rng);
  DevTensor dB(B_), oC(F, Shape{D, D});
  expect_repeatable("matmul", {{&oC, filled(F, Shape{D, D}, 0.1)}},
                    [&] { gpu().matmul(dx, true, dg, false, oC, 1.0, 1.0); });

  // Attention.
  const int64_t T = 1000, H = 4, Dh = 64, B = 2;
  HostTensor qkv = uniform(F, Shape{B * T, 3, H, Dh}, rng), go = uniform(F, Shape{B * T, H * Dh}, rng);
  DevTensor dqkv(qkv), dgo(go), aout(F, Shape{B * T, H * Dh}), alse(F, Shape{B, H, T});
  DevTensor adq(F, Shape{B * T, 3, H, Dh});
  expect_repeatable("attention_fwd", {{&aout, filled(F, Shape{B * T, H * Dh}, 0)},
                                      {&alse, filled(F, Shape{B, H, T}, 0)}},
                    [&] { gpu().attention_fwd(dqkv, static_cast<int>(T), 0.125, aout, alse); });
  expect_repeatable("attention_bwd", {{&adq, filled(F, Shape{B * T, 3, H, Dh}, 0)}}, [&] {
    gpu().attention_bwd(dgo, dqkv, aout, alse, static_cast<int>(T), 0.125, adq);
  });

  // Router, aux loss, plan and the grouped GEMMs.
  HostTensor logits = uniform(F, Shape{N, E}, rng), bias = uniform(F, Shape{E}, rng, -0.1, 0.1);
  DevTensor dl(logits), db(bias), sc(F, Shape{N, E}), idx(DType::I32, Shape{N, K});
  DevTensor gates(F, Shape{N, K}), counts(DType::I32, Shape{E}), dgates(F, Shape{N, K});
  DevTensor off(DType::I32, Shape{E + 1}), pos(DType::I32, Shape{N * K});
  RouterParams p;
  p.top_k = static_cast<int>(K);
  expect_repeatable("router_fwd", {{&counts, filled(DType::I32, Shape{E}, 0)}, {&idx, filled(DType::I32, Shape{N, K}, 0)}, {&gates, filled(F, Shape{N, K}, 0)}},
                    [&] { gpu().router_fwd(dl, db, p, sc, idx, gates, counts); });
  expect_repeatable("moe_aux_loss", {{&loss, scalar(0)}, {&dgates, filled(F, Shape{N, K}, 0)}},
                    [&] { gpu().moe_aux_loss(gates, idx, static_cast<int>(E), 0.1, loss, dgates); });
  expect_repeatable("moe_plan", {{&off, filled(DType::I32, Shape{E + 1}, 0)}, {&pos, filled(DType::I32, Shape{N * K}, 0)}},
                    [&] { gpu().moe_plan(idx, static_cast<int>(E), off, pos); });
  HostTensor xe = uniform(F, Shape{N * K, D}, rng), ew = uniform(F, Shape{E, 2 * Fw, D}, rng);
  HostTensor dye = uniform(F, Shape{N * K, 2 * Fw}, rng);
  DevTensor dxe(xe), dew(ew), ddye(dye), ye(F, Shape{N * K, 2 * Fw}), dEW(F, Shape{E, 2 * Fw, D});
  expect_repeatable("grouped_matmul", {{&ye, filled(F, Shape{N * K, 2 * Fw}, 0)}},
                    [&] { gpu().grouped_matmul(dxe, dew, true, off, ye); });
  expect_repeatable("grouped_matmul_wgrad", {{&dEW, filled(F, Shape{E, 2 * Fw, D}, 0.1)}},
                    [&] { gpu().grouped_matmul_wgrad(ddye, dxe, off, dEW); });
}

}  // namespace
}  // namespace nmoe::gputest
