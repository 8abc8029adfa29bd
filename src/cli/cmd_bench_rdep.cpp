// `n bench rdep`: the MoE transport alone. Every rank routes its tokens to
// uniformly random experts (top-k distinct), sorts the rows by expert, sends
// each owner its block and takes the rows back (the owner returns what it
// received), as one MoE layer's forward does. Prints one JSON line from rank 0:
// time per dispatch and per return, and the GB/s each rank sends to other ranks.
// Run it with --nproc W (and --devices 0,0,... to put several ranks on one GPU).
#include <algorithm>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "cli/commands.h"
#include "core/arena.h"
#include "dist/dist_env.h"
#include "train/dist_setup.h"
#include "train/trainer.h"

namespace nmoe::cli {

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

int cmd_bench_rdep(const std::vector<std::string>& args) {
  int64_t tokens = 4096, dim = 1024, experts = 64, top_k = 8, iters = 20, warmup = 3;
  std::string device = "auto";
  for (size_t i = 0; i < args.size(); ++i) {
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw UsageError(args[i] + " needs a value");
      return args[++i];
    };
    if (args[i] == "--tokens") tokens = std::stoll(value());
    else if (args[i] == "--dim") dim = std::stoll(value());
    else if (args[i] == "--experts") experts = std::stoll(value());
    else if (args[i] == "--top-k") top_k = std::stoll(value());
    else if (args[i] == "--iters") iters = std::stoll(value());
    else if (args[i] == "--warmup") warmup = std::stoll(value());
    else if (args[i] == "--device") device = value();
    else throw UsageError("bench rdep: unknown option " + args[i]);
  }
  const DistEnv env = dist_env_from_environment();
  if (env.world < 2) throw UsageError("bench rdep needs several ranks: add --nproc N");
  if (experts % env.world != 0 || top_k > experts || tokens < 1 || iters < 1)
    throw UsageError("bench rdep: experts must be divisible by the ranks and top-k <= experts");

  // A config only to pick the backend and the transport sizes.
  Config cfg = load_config_string("dim = " + std::to_string(dim) + "\nn_layers = 1\nn_dense_layers = 0\nn_heads = 1\ninter_dim = 8\n" +
                                      "moe_inter_dim = 8\nn_routed_experts = " + std::to_string(experts) +
                                      "\nn_activated_experts = " + std::to_string(top_k) +
                                      "\nseq_len = " + std::to_string(tokens) + "\nmax_position_embeddings = " + std::to_string(tokens) + "\nbatch_size = " +
                                      std::to_string(env.world) + "\ndevice = \"" + device + "\"\n",
                                  "bench rdep", {}, env.world);
  auto backend = make_backend(cfg);
  ModelOptions mo = model_options(cfg, *backend);
  mo.micro_batch = 1;
  mo.seq_len = tokens;
  auto ctx = join_run(env, cfg, *backend, mo);
  NMOE_CHECK(ctx->transport, "bench rdep: no MoE transport was set up");
  ExpertTransport& T = *ctx->transport;
  const int W = env.world, me = env.rank;
  const int64_t El = experts / W, rows = tokens * top_k;

  // Random routing, rows sorted by expert: only the per-expert counts matter.
  std::mt19937_64 g(1234 + me);
  std::vector<int32_t> count(experts, 0), perm(experts);
  std::iota(perm.begin(), perm.end(), 0);
  for (int64_t t = 0; t < tokens; ++t) {
    std::shuffle(perm.begin(), perm.end(), g);
    for (int64_t k = 0; k < top_k; ++k) ++count[perm[k]];
  }
  std::vector<int32_t> off(experts + 1, 0);
  for (int64_t e = 0; e < experts; ++e) off[e + 1] = off[e] + count[e];
  int64_t remote_rows = 0;
  for (int r = 0; r < W; ++r)
    if (r != me) remote_rows += off[(r + 1) * El] - off[r * El];

  Arena arena("bench");
  Tensor x, offsets;
  arena.reserve(&x, mo.act_dtype(), Shape{rows, dim});
  arena.reserve(&offsets, DType::I32, Shape{experts + 1});
  arena.allocate(*backend);
  backend->fill(x, 1.0);
  backend->copy_from_host(offsets, off.data());

  double t_send = 0, t_ret = 0;
  for (int64_t it = 0; it < warmup + iters; ++it) {
    backend->synchronize();
    const double a = now_s();
    T.send(x, Tensor(), offsets, "bench dispatch");
    const double b = now_s();
    for (int src = 0; src < W; ++src) {
      ReceivedBlock blk = T.received(src);
      if (blk.rows > 0) T.put_back(src, blk.a);
    }
    T.finish_return("bench return");
    backend->synchronize();
    const double c = now_s();
    if (it >= warmup) {
      t_send += b - a;
      t_ret += c - b;
    }
  }
  const double row_bytes = static_cast<double>(dim) * dtype_size(mo.act_dtype());
  // Every rank's figures, then the slowest (the step waits for it).
  std::vector<double> mine = {t_send / iters, t_ret / iters, remote_rows * row_bytes};
  std::vector<double> all = ctx->comm->all_gather(mine);
  if (me == 0) {
    double send = 0, ret = 0, bytes = 0;
    for (int r = 0; r < W; ++r) {
      send = std::max(send, all[3 * r]);
      ret = std::max(ret, all[3 * r + 1]);
      bytes += all[3 * r + 2];
    }
    bytes /= W;
    nlohmann::json j = {{"bench", "rdep"},       {"backend", backend->name()}, {"world", W},
                        {"tokens", tokens},      {"dim", dim},                 {"experts", experts},
                        {"top_k", top_k},        {"dtype", dtype_name(mo.act_dtype())},
                        {"dispatch_ms", send * 1e3},
                        {"return_ms", ret * 1e3},
                        {"remote_mb_per_rank", bytes / 1e6},
                        {"dispatch_gb_per_s", bytes / send / 1e9},
                        {"return_gb_per_s", bytes / ret / 1e9}};
    std::cout << j.dump() << std::endl;
  }
  return 0;
}

}  // namespace nmoe::cli
