// `n bench CONFIG`: training throughput on synthetic tokens, the way
// bench/torch_moe_baseline-style scripts measure it: one micro-batch per step,
// warm-up steps untimed, then tokens/s, ms/step, MFU and memory as one JSON line.
// --accumulate K runs K micro-batches per optimizer step (gradient
// accumulation, as a config whose batch_size is K micro-batches trains): the
// optimizer's cost is shared by K micro-batches. ms_per_step is per optimizer
// step, ms_per_micro_batch per micro-batch (the baseline scripts' "step").
// --nproc W [--devices ...] trains with expert parallelism over W ranks (as
// `n train --nproc`): each rank runs its own micro-batches, and rank 0 prints
// the global and per-GPU tokens/s and the share of MoE transfers and waits.
// --op-times runs the model on a TimedBackend (ops/timed_backend.h): a table of
// time per op over the timed steps goes to stderr and into the JSON as
// "op_times"; the throughput of such a run is not representative (every op
// waits for the device), which the JSON marks with "op_times_mode": true.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <algorithm>

#include "cli/commands.h"
#include "model/model.h"
#include "ops/timed_backend.h"
#include "optim/optimizer.h"
#include "dist/dist_env.h"
#include "train/dist_setup.h"
#include "train/grad_accumulator.h"
#include "train/trainer.h"

namespace nmoe::cli {

int cmd_bench(const std::vector<std::string>& args) {
  if (!args.empty() && args[0] == "rdep") {
    std::vector<std::string> rest(args.begin() + 1, args.end());
    LaunchOptions launch = parse_launch_args(rest);
    if (launch.nproc > 1 || !launch.devices.empty()) {
      launch.child_args = {"bench", "rdep"};
      launch.child_args.insert(launch.child_args.end(), rest.begin(), rest.end());
      return launch_workers(launch);
    }
    return cmd_bench_rdep(rest);
  }
  std::vector<std::string> launch_rest = args;
  LaunchOptions launch = parse_launch_args(launch_rest);
  if (launch.nproc > 1 || !launch.devices.empty()) {
    if (std::find(launch_rest.begin(), launch_rest.end(), "--op-times") != launch_rest.end())
      throw UsageError("--op-times times one rank's ops; run it without --nproc");
    launch.child_args = {"bench"};
    launch.child_args.insert(launch.child_args.end(), launch_rest.begin(), launch_rest.end());
    return launch_workers(launch);
  }
  const DistEnv env = dist_env_from_environment();  // a worker of `n bench --nproc`, or one process
  std::vector<std::string> rest;
  int64_t micro = 16, seq = 2048, steps = 20, warmup = 5, accumulate = 1;
  double peak_tflops = 989.0;
  bool op_times = false;
  for (size_t i = 0; i < args.size(); ++i) {
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw UsageError(args[i] + " needs a value");
      return args[++i];
    };
    if (args[i] == "--micro-batch") micro = std::stoll(value());
    else if (args[i] == "--seq") seq = std::stoll(value());
    else if (args[i] == "--steps") steps = std::stoll(value());
    else if (args[i] == "--warmup") warmup = std::stoll(value());
    else if (args[i] == "--peak-tflops") peak_tflops = std::stod(value());
    else if (args[i] == "--accumulate") accumulate = std::stoll(value());
    else if (args[i] == "--op-times") op_times = true;
    else rest.push_back(args[i]);
  }
  if (micro < 1 || seq < 1 || steps < 1 || warmup < 0 || accumulate < 1)
    throw UsageError("bench sizes must be positive");
  if (op_times && env.world > 1) throw UsageError("--op-times times one rank's ops; run it without --nproc");  // torchrun
  ConfigArgs ca = parse_config_args(rest);
  ca.overrides.push_back({"seq_len", std::to_string(seq)});
  ca.overrides.push_back({"micro_batch_size", std::to_string(micro)});
  ca.overrides.push_back({"batch_size", std::to_string(micro * accumulate * env.world)});
  Config cfg = load_config(ca.path, ca.overrides, env.world);
  share_cores_between_ranks(cfg, env);
  auto backend = make_backend(cfg);
  backend->synchronize();
  const int64_t mem_before = backend->device_memory_in_use();  // runtime context only
  std::unique_ptr<TimedBackend> timed;
  if (op_times) timed = std::make_unique<TimedBackend>(*backend);
  Backend& be = timed ? static_cast<Backend&>(*timed) : *backend;

  ModelOptions mo = model_options(cfg, be);
  std::unique_ptr<DistContext> dist;
  if (env.world > 1) dist = join_run(env, cfg, *backend, mo);
  Comm* comm = dist ? dist->comm.get() : nullptr;
  ExpertTransport* transport = dist ? dist->transport.get() : nullptr;
  mo.rank = env.rank;
  mo.world = env.world;
  mo.shard_optimizer_state = env.world > 1;  // ZeRO-1, as in training
  Model model(cfg, be, mo);
  if (dist) model.set_transport(transport);
  model.init_weights(static_cast<uint64_t>(cfg.seed));
  GradAccumulator accumulator(model, comm, mo.exact_accumulation);
  Optimizer opt(cfg, model, comm);
  const int64_t N = micro * seq;
  std::mt19937_64 g(1 + static_cast<uint64_t>(env.rank));  // each rank its own tokens
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(std::min<int64_t>(cfg.vocab_size, 50257) - 1));
  std::vector<int32_t> in(N), tgt(N);
  for (auto& x : in) x = tok(g);
  for (auto& x : tgt) x = tok(g);
  // Gradients are means over the global batch (every rank's micro-batches).
  const int64_t own_count = model.count_targets(tgt.data(), N);
  const int64_t count = comm ? comm->sum(own_count) : own_count;

  // One optimizer step over `accumulate` micro-batches, the update overlapping
  // the last backward where it can (as in training).
  auto train_step = [&](int64_t s) {
    const double tokens_seen = static_cast<double>(s * N * accumulate * env.world);
    accumulator.begin_step();
    model.reset_step_stats();
    for (int64_t m = 0; m < accumulate; ++m) {
      accumulator.begin_leaf();
      if (m == accumulate - 1 && opt.overlaps_backward()) opt.begin_overlapped_step(s, tokens_seen);
      model.forward_backward(in.data(), tgt.data(), 1.0 / static_cast<double>(count * accumulate), 0.0);
      accumulator.end_leaf();
    }
    accumulator.finish();
    if (comm)
      for (const Tensor& c : model.router_counts()) comm->all_reduce_sum(c, "router expert counts");
    opt.step(s, tokens_seen);
  };
  double loss = 0;
  std::chrono::steady_clock::time_point t0;
  double comm_t0 = 0;
  for (int64_t s = 0; s < warmup + steps; ++s) {
    if (s == warmup) {
      backend->synchronize();
      if (comm) comm->barrier();
      if (timed) timed->reset();
      t0 = std::chrono::steady_clock::now();
      comm_t0 = transport ? transport->seconds() : 0.0;
    }
    train_step(s);
  }
  std::vector<TimedBackend::Row> op_rows;
  if (timed) op_rows = timed->report(steps);
  loss = model.read_loss_sum() / static_cast<double>(own_count * accumulate);  // this rank's tokens
  backend->synchronize();
  if (comm) comm->barrier();  // the slowest rank's time
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / steps;
  const double comm_share = transport ? (transport->seconds() - comm_t0) / (dt * steps) : 0.0;
  // The host's own time for one step: enqueueing it on an idle device (host
  // syncs inside the step count too). When this is well below ms_per_step,
  // the device does not wait for the host, and a CUDA graph would not speed
  // the step up.
  double host_dt = 0;
  if (!timed) {
    const auto h0 = std::chrono::steady_clock::now();
    train_step(warmup + steps);
    host_dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - h0).count();
    backend->synchronize();
  }
  const double dt_micro = dt / static_cast<double>(accumulate);
  const double tps = static_cast<double>(N) / dt_micro;  // per rank
  const double fpt = model.flops_per_token();
  // Everything is allocated up front or grows once at first use and is kept,
  // so memory in use after the steps is the run's peak.
  const int64_t mem_after = backend->device_memory_in_use();
  const double planned_gib = static_cast<double>(model.memory_plan().total()) / (1 << 30);
  nlohmann::json j = {{"impl", std::string("nmoe-") + backend->name()},
                      {"config", cfg.preset},
                      {"micro_batch", micro},
                      {"micro_batches_per_step", accumulate},
                      {"seq", seq},
                      {"ms_per_step", dt * 1e3},
                      {"ms_per_micro_batch", dt_micro * 1e3},
                      {"tokens_per_s", tps},
                      {"gflop_per_token", fpt / 1e9},
                      {"mfu", fpt * tps / (peak_tflops * 1e12)},
                      {"planned_mem_gib", planned_gib},
                      {"optimizer_overlaps_backward", opt.overlaps_backward()},
                      {"final_loss", loss}};
  if (!timed && env.world == 1) j["host_ms_per_step"] = host_dt * 1e3;  // with ranks it would include their waits
  if (env.world > 1) {
    j["world"] = env.world;
    j["tokens_per_s_all_ranks"] = tps * env.world;
    j["moe_comm_share"] = comm_share;
  }
  if (mem_before >= 0 && mem_after >= 0) {
    const double measured_gib = static_cast<double>(mem_after - mem_before) / (1 << 30);
    j["measured_mem_gib"] = measured_gib;
    std::cerr << "memory: planned " << planned_gib << " GiB, measured " << measured_gib
              << " GiB (device memory in use after the steps minus before the model)\n";
  }
  if (timed) {
    j["op_times_mode"] = true;
    nlohmann::json ops = nlohmann::json::array();
    for (const auto& r : op_rows)
      ops.push_back({{"op", r.op}, {"calls", r.calls}, {"ms_per_step", r.ms_per_step}, {"share", r.share}});
    j["op_times"] = ops;
    std::cerr << "time per op over " << steps << " step(s), each op between two synchronizations ("
              << dt * 1e3 << " ms/step in all):\n"
              << TimedBackend::format(op_rows) << std::flush;
  }
  if (env.rank == 0) std::cout << j.dump() << std::endl;
  return 0;
}

}  // namespace nmoe::cli
