// ParamStore with the expert group's gradients in their own dtype
// (expert_grad_dtype): the layout, the views and the errors. The CPU backend
// holds BF16 buffers (it never computes on them), so the bookkeeping is
// checked here; the GPU tests train with it.
#include <gtest/gtest.h>

#include <string>

#include "backend/cpu/cpu_backend.h"
#include "config/config.h"
#include "model/model.h"
#include "model/params.h"
#include "test_util.h"
#include "train/trainer.h"

namespace nmoe {
namespace {

void build(ParamStore& ps, Backend& be, DType expert_grads) {
  ParamSpec ex{"experts.w", Shape{4, 10, 3}, ParamGroup::Expert};
  ex.per_expert = true;
  ps.add(ex);
  ps.add({"router.w", Shape{4, 10}, ParamGroup::Router});
  ps.add({"a.weight", Shape{100, 7}, ParamGroup::DenseDecay});
  ps.add({"b.weight", Shape{33}, ParamGroup::DenseNoDecay});
  ps.allocate(be, DType::F32, DType::F32, expert_grads);
}

TEST(ParamStoreGrads, OneDtypeKeepsOneBuffer) {
  auto be = make_cpu_backend(1);
  ParamStore ps;
  build(ps, *be, DType::F32);
  EXPECT_FALSE(ps.split_grads());
  ASSERT_EQ(ps.grad_buffers().size(), 1u);
  EXPECT_EQ(ps.grad_buffers()[0].data, ps.flat_grads().data);
  EXPECT_EQ(ps.grad_bytes(), ps.numel() * sizeof(float));
  for (const Param& p : ps.all()) EXPECT_EQ(p.g.data, ps.flat_grads().ptr<float>() + p.offset) << p.spec.name;
  // Any range, the expert group's end included, is one view.
  const int64_t ex_end = ps.group(ParamGroup::Expert).end;
  EXPECT_EQ(ps.grads(ex_end - 1, ex_end + 1).numel(), 2);
}

TEST(ParamStoreGrads, BF16ExpertGradientsLiveInTheirOwnBuffer) {
  auto be = make_cpu_backend(1);
  ParamStore ps;
  build(ps, *be, DType::BF16);
  ASSERT_TRUE(ps.split_grads());
  const GroupRange ex = ps.group(ParamGroup::Expert);
  const std::vector<Tensor> bufs = ps.grad_buffers();
  ASSERT_EQ(bufs.size(), 2u);
  EXPECT_EQ(bufs[0].dtype, DType::BF16);
  EXPECT_EQ(bufs[0].numel(), ex.size());
  EXPECT_EQ(bufs[1].dtype, DType::F32);
  EXPECT_EQ(bufs[1].numel(), ps.numel() - ex.end);
  EXPECT_EQ(ps.grad_bytes(), ex.size() * 2 + (ps.numel() - ex.end) * 4);
  EXPECT_EQ(ps.grad_dtype(ParamGroup::Expert), DType::BF16);
  EXPECT_EQ(ps.grad_dtype(ParamGroup::Router), DType::F32);
  for (const Param& p : ps.all()) {
    const bool expert = p.spec.group == ParamGroup::Expert;
    EXPECT_EQ(p.g.dtype, expert ? DType::BF16 : DType::F32) << p.spec.name;
    const char* want = expert ? static_cast<const char*>(bufs[0].data) + p.offset * 2
                              : static_cast<const char*>(bufs[1].data) + (p.offset - ex.end) * 4;
    EXPECT_EQ(p.g.data, want) << p.spec.name;
    EXPECT_EQ(ps.grads(p.offset, p.offset + p.spec.shape.numel()).data, p.g.data) << p.spec.name;
  }
  // Whole buffers zeroed at allocation.
  std::vector<uint16_t> host(bufs[0].numel(), 1);
  be->copy_to_host(host.data(), bufs[0]);
  for (uint16_t b : host) ASSERT_EQ(b, 0);
  EXPECT_NE(test::error_of([&] { ps.grads(ex.end - 1, ex.end + 1); }).find("crosses the end of the expert group"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { ps.flat_grads(); }).find("separate buffers"), std::string::npos);
}

// On the CPU backend every gradient is fp32, as dtype = "bf16" computes in
// fp32 there; a model asked for BF16 expert gradients without BF16 compute
// refuses with what to change.
TEST(ParamStoreGrads, BF16ExpertGradientsAreAGpuStorageChoice) {
  Config c = load_config_string(R"(
    dim = 32
    n_layers = 2
    n_heads = 2
    inter_dim = 64
    moe_inter_dim = 16
    n_routed_experts = 4
    n_activated_experts = 2
    n_dense_layers = 1
    tokenizer = "bytes"
    vocab_size = 264
    eos_token_id = 256
    attn = "sdpa"
    seq_len = 8
    batch_size = 2
    expert_grad_dtype = "bf16"
  )",
                                "bf16-grads");
  auto be = make_cpu_backend(1);
  EXPECT_FALSE(model_options(c, *be).expert_grad_dtype.has_value());
  ModelOptions o;
  o.micro_batch = 2;
  o.seq_len = 8;
  o.expert_grad_dtype = DType::BF16;
  const std::string msg2 = test::error_of([&] { Model m(c, *be, o); });
  EXPECT_NE(msg2.find("set expert_grad_dtype = \"fp32\""), std::string::npos) << msg2;
}

}  // namespace
}  // namespace nmoe
