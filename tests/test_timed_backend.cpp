// TimedBackend (ops/timed_backend.h): wrapping the CPU backend changes no
// result (single ops and a whole training step bit for bit), it forwards every
// virtual method of Backend, and its report lists the called ops; `n bench
// --op-times` prints the table and adds "op_times" to the JSON.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <vector>

#include "cpu_test_util.h"
#include "model/model.h"
#include "ops/timed_backend.h"
#include "optim/optimizer.h"
#include "test_util.h"

namespace nmoe {
namespace {

using cputest::filled;
using cputest::HostTensor;
using cputest::indices;
using cputest::scalar_f64;
using cputest::uniform;

std::map<std::string, TimedBackend::Row> rows_by_op(const std::vector<TimedBackend::Row>& rows) {
  std::map<std::string, TimedBackend::Row> m;
  for (const auto& r : rows) m[r.op] = r;
  return m;
}

// Every virtual method declared in src/ops/backend.h must be one TimedBackend
// forwards: a method added to Backend with a default body would otherwise run
// the default instead of the inner backend's override.
TEST(TimedBackend, ForwardsEveryVirtualOfBackend) {
  std::ifstream f(test::source_dir() + "/src/ops/backend.h");
  ASSERT_TRUE(f) << "cannot read src/ops/backend.h";
  std::stringstream ss;
  std::string line;
  while (std::getline(f, line)) ss << line.substr(0, line.find("//")) << "\n";
  const std::string text = ss.str();
  std::set<std::string> declared;
  const std::regex re(R"(virtual\s+[^;(){}]*?(\w+)\s*\()");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it)
    if ((*it)[1] != "Backend") declared.insert((*it)[1]);
  const auto& names = TimedBackend::op_names();
  const std::set<std::string> forwarded(names.begin(), names.end());
  EXPECT_EQ(forwarded.size(), names.size()) << "duplicate op names";
  EXPECT_GE(declared.size(), 30u);
  EXPECT_EQ(declared, forwarded);
}

TEST(TimedBackend, ForwardsNamesAndCountsNothingForThem) {
  CpuBackend be(1);
  TimedBackend tb(be);
  EXPECT_STREQ(tb.name(), be.name());
  EXPECT_EQ(tb.device_name(), be.device_name());
  EXPECT_TRUE(tb.report().empty());
  tb.synchronize();
  auto rows = tb.report();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].op, "synchronize");
  EXPECT_EQ(rows[0].calls, 1);
  tb.reset();
  EXPECT_TRUE(tb.report().empty());
  EXPECT_THROW(tb.report(0), Error);
}

TEST(TimedBackend, OpsAreBitIdenticalAndCounted) {
  CpuBackend be(2);
  TimedBackend tb(be);
  std::mt19937_64 rng(7);
  const DType dt = DType::F32;
  const int64_t B = 2, T = 8, H = 2, Dh = 4, N = B * T, D = 12, F = 6, E = 4, K = 2, V = 10;

  // Runs op on a backend and returns its outputs.
  auto both = [&](const char* what, const std::function<std::vector<HostTensor>(Backend&)>& op) {
    const auto a = op(be), b = op(tb);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(a[i].bytes_equal(b[i])) << what << " output " << i;
  };
  const HostTensor A = uniform(dt, {N, D}, rng), W = uniform(dt, {D, 7}, rng), C0 = uniform(dt, {N, 7}, rng);
  both("matmul", [&](Backend& x) {
    HostTensor C = C0;
    x.matmul(A, false, W, false, C, 0.5, 1.0);
    x.matmul(A, false, W, false, C, 1.0, 0.5);
    return std::vector<HostTensor>{C};
  });
  const HostTensor w = uniform(dt, {D}, rng);
  both("rmsnorm_fwd", [&](Backend& x) {
    HostTensor y(dt, {N, D}), rstd(dt, {N});
    x.rmsnorm_fwd(A, w, 1e-5, y, rstd);
    return std::vector<HostTensor>{y, rstd};
  });
  const HostTensor qkv = uniform(dt, {N, 3, H, Dh}, rng);
  both("attention_fwd", [&](Backend& x) {
    HostTensor out(dt, {N, H * Dh}), lse(dt, {B, H, T});
    x.attention_fwd(qkv, static_cast<int>(T), 0.5, out, lse);
    return std::vector<HostTensor>{out, lse};
  });
  const HostTensor h13 = uniform(dt, {N, 2 * F}, rng);
  both("swiglu_fwd", [&](Backend& x) {
    HostTensor a(dt, {N, F});
    x.swiglu_fwd(h13, a);
    return std::vector<HostTensor>{a};
  });
  const HostTensor logits = uniform(dt, {N, E}, rng), bias = uniform(dt, {E}, rng, -0.1, 0.1);
  both("router_fwd", [&](Backend& x) {
    RouterParams p;
    p.top_k = static_cast<int>(K);
    HostTensor scores(dt, {N, E}), idx(DType::I32, {N, K}), gates(dt, {N, K});
    HostTensor counts = filled(DType::I32, {E}, 0);
    x.router_fwd(logits, bias, p, scores, idx, gates, counts);
    return std::vector<HostTensor>{scores, idx, gates, counts};
  });
  const HostTensor head = uniform(dt, {V, D}, rng);
  std::vector<int32_t> tv(N);
  for (int64_t i = 0; i < N; ++i) tv[i] = static_cast<int32_t>((i * 3) % V);
  const HostTensor targets = indices({N}, tv);
  both("cross_entropy", [&](Backend& x) {
    HostTensor loss = scalar_f64(0.25), dh(dt, {N, D}), dW = filled(dt, {V, D}, 0.0);
    x.cross_entropy(A, head, targets, -1, 1.0 / N, 4, loss, dh, dW);
    return std::vector<HostTensor>{loss, dh, dW};
  });
  both("copy/fill/convert", [&](Backend& x) {
    HostTensor c(dt, {N, D}), v(dt, {N, D}), f(dt, {5});
    x.copy(c, A);
    x.convert(v, A);
    x.fill(f, 1.5);
    return std::vector<HostTensor>{c, v, f};
  });

  const auto rows = tb.report(2);
  const auto m = rows_by_op(rows);
  const std::map<std::string, int64_t> want = {{"matmul", 2},        {"rmsnorm_fwd", 1}, {"attention_fwd", 1},
                                               {"swiglu_fwd", 1},    {"router_fwd", 1},  {"cross_entropy", 1},
                                               {"copy", 1},          {"convert", 1},     {"fill", 1}};
  EXPECT_EQ(m.size(), want.size());
  double share = 0;
  for (const auto& [op, calls] : want) {
    ASSERT_TRUE(m.count(op)) << op;
    EXPECT_EQ(m.at(op).calls, calls) << op;
    EXPECT_GE(m.at(op).total_ms, 0);
    EXPECT_DOUBLE_EQ(m.at(op).ms_per_step, m.at(op).total_ms / 2);
    share += m.at(op).share;
  }
  EXPECT_NEAR(share, 1.0, 1e-9);
  for (size_t i = 1; i < rows.size(); ++i) EXPECT_GE(rows[i - 1].total_ms, rows[i].total_ms);

  const std::string table = TimedBackend::format(rows);
  EXPECT_NE(table.find("attention_fwd"), std::string::npos) << table;
  EXPECT_NE(table.find("total"), std::string::npos) << table;
}

const char* kMoeToml = R"(
vocab_size = 264
eos_token_id = 256
tokenizer = "bytes"
dim = 16
n_layers = 3
n_heads = 2
inter_dim = 24
moe_inter_dim = 8
n_dense_layers = 1
n_routed_experts = 6
n_activated_experts = 2
n_shared_experts = 1
aux_loss_alpha = 0.05
attn = "sdpa"
seq_len = 8
batch_size = 2
)";

// Two training steps (forward, backward, optimizer, router-bias update) on the
// wrapper give the same loss, gradients and weights as on the bare backend.
TEST(TimedBackend, TrainingStepsAreBitIdentical) {
  auto backend = make_cpu_backend(2);
  Config cfg = load_config_string(kMoeToml, "timed");
  const int64_t N = cfg.batch_size * cfg.seq_len;
  auto tok = test::random_tokens(N, static_cast<int32_t>(cfg.vocab_size), 31);
  auto tgt = test::random_tokens(N, static_cast<int32_t>(cfg.vocab_size), 32);
  struct Result {
    std::vector<double> losses;
    std::vector<float> grads, params;
  };
  auto run = [&](Backend& be) {
    ModelOptions o;
    o.micro_batch = cfg.batch_size;
    o.seq_len = cfg.seq_len;
    Model m(cfg, be, o);
    m.init_weights(5);
    Optimizer opt(cfg, m);
    Result r;
    for (int64_t s = 0; s < 2; ++s) {
      m.zero_grads();
      m.reset_step_stats();
      m.forward_backward(tok.data(), tgt.data(), 1.0 / static_cast<double>(N), 0.05);
      r.losses.push_back(m.read_loss_sum());
      r.losses.push_back(m.read_aux_sum());
      r.grads.resize(m.params().numel());
      be.copy_to_host(r.grads.data(), m.params().flat_grads());
      opt.step(s, static_cast<double>(s * N));
      m.update_router_bias(1e-3);
    }
    r.params.resize(m.params().numel());
    be.copy_to_host(r.params.data(), m.params().flat_params());
    return r;
  };
  const Result plain = run(*backend);
  TimedBackend tb(*backend);
  const Result timed = run(tb);
  EXPECT_EQ(plain.losses, timed.losses);
  EXPECT_TRUE(plain.grads == timed.grads);
  EXPECT_TRUE(plain.params == timed.params);

  const auto m = rows_by_op(tb.report(2));
  for (const char* op : {"matmul", "grouped_matmul", "grouped_matmul_wgrad", "attention_fwd", "attention_bwd",
                         "rmsnorm_fwd", "rmsnorm_bwd", "router_fwd", "router_bwd", "moe_aux_loss", "moe_plan",
                         "moe_dispatch", "moe_combine", "cross_entropy", "embedding_fwd", "embedding_bwd",
                         "adamw", "sum_squares", "router_bias_update", "alloc", "copy_to_host"}) {
    ASSERT_TRUE(m.count(op)) << op;
    EXPECT_GT(m.at(op).calls, 0) << op;
  }
}

TEST(TimedBackendCli, BenchOpTimes) {
  const auto r = test::run_command(test::n_binary() + " bench " + test::source_dir() +
                                   "/configs/tiny.toml --set device=cpu --set threads=2 --micro-batch 1 --seq 32"
                                   " --steps 1 --warmup 0 --op-times");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The table (stderr) names the ops; the JSON is the last line.
  EXPECT_NE(r.output.find("attention_fwd"), std::string::npos) << r.output;
  std::string out = r.output;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  const nlohmann::json j = nlohmann::json::parse(out.substr(out.rfind('\n') + 1));
  EXPECT_EQ(j.at("op_times_mode"), true);
  const auto& ops = j.at("op_times");
  ASSERT_TRUE(ops.is_array());
  std::map<std::string, nlohmann::json> by_op;
  double share = 0;
  for (const auto& o : ops) {
    by_op[o.at("op").get<std::string>()] = o;
    share += o.at("share").get<double>();
    EXPECT_GT(o.at("calls").get<int64_t>(), 0);
    EXPECT_GE(o.at("ms_per_step").get<double>(), 0);
  }
  EXPECT_NEAR(share, 1.0, 1e-6);
  ASSERT_TRUE(by_op.count("matmul")) << j.dump();
  ASSERT_TRUE(by_op.count("attention_fwd")) << j.dump();
  EXPECT_EQ(by_op["attention_fwd"].at("calls").get<int64_t>(), 4);  // one per layer, one step
}

// --accumulate K: K forward/backward passes per optimizer step.
TEST(TimedBackendCli, BenchAccumulatesMicroBatches) {
  const auto run = [](int k) {
    const auto r = test::run_command(test::n_binary() + " bench " + test::source_dir() +
                                     "/configs/tiny.toml --set device=cpu --set threads=2 --micro-batch 1 --seq 32"
                                     " --steps 1 --warmup 0 --op-times --accumulate " + std::to_string(k));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::string out = r.output;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    const nlohmann::json j = nlohmann::json::parse(out.substr(out.rfind('\n') + 1));
    EXPECT_EQ(j.at("micro_batches_per_step"), k);
    std::map<std::string, int64_t> calls;
    for (const auto& o : j.at("op_times")) calls[o.at("op").get<std::string>()] = o.at("calls").get<int64_t>();
    return calls;
  };
  auto one = run(1), three = run(3);
  EXPECT_EQ(three["attention_fwd"], 3 * one["attention_fwd"]);
  EXPECT_EQ(three["attention_bwd"], 3 * one["attention_bwd"]);
  ASSERT_GT(one["adamw_copy"] + one["adamw"], 0);
  EXPECT_EQ(three["adamw_copy"] + three["adamw"], one["adamw_copy"] + one["adamw"]);  // one optimizer step
  auto bad = test::run_command(test::n_binary() + " bench " + test::source_dir() + "/configs/tiny.toml --accumulate 0");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
}

// --nproc W: the throughput of training with expert parallelism, W ranks on
// the CPU transport; rank 0 alone prints, with the all-rank figures.
TEST(TimedBackendCli, BenchTrainsOverSeveralRanks) {
  const auto r = test::run_command(test::n_binary() + " bench " + test::source_dir() +
                                   "/configs/tiny.toml --set device=cpu --micro-batch 1 --seq 32"
                                   " --steps 2 --warmup 1 --nproc 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string out = r.output;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  EXPECT_EQ(std::count(out.begin(), out.end(), '{'), 1) << "one JSON line, from rank 0: " << out;
  const nlohmann::json j = nlohmann::json::parse(out.substr(out.rfind('\n') + 1));
  EXPECT_EQ(j.at("world"), 2);
  EXPECT_GT(j.at("tokens_per_s").get<double>(), 0);
  const double share = j.at("moe_comm_share").get<double>();
  EXPECT_GT(share, 0.0);
  EXPECT_LT(share, 1.0);
  EXPECT_TRUE(std::isfinite(j.at("final_loss").get<double>()));
  const auto bad = test::run_command(test::n_binary() + " bench " + test::source_dir() +
                                     "/configs/tiny.toml --set device=cpu --nproc 2 --op-times --steps 1");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("--op-times times one rank"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace nmoe
