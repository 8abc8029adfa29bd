#include "train/trainer.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <ostream>

#include "backend/cpu/cpu_backend.h"
#if defined(NMOE_HAVE_CUDA) && __has_include("backend/cuda/cuda_backend.h")
#include "backend/cuda/cuda_backend.h"
#define NMOE_CUDA_BACKEND 1
#endif
#include "checkpoint/checkpoint.h"
#include "core/rng.h"
#include "data/loader.h"
#include "data/manifest.h"
#include "data/mixture.h"
#include "dist/tree_sum.h"
#include "train/dist_setup.h"
#include "train/grad_accumulator.h"
#include "metrics/metrics_db.h"
#include "model/model.h"
#include "optim/optimizer.h"
#include "train/progress.h"
#include "train/router_stats.h"

namespace nmoe {

namespace {

std::atomic<bool> g_interrupted{false};
void on_sigint(int) { g_interrupted = true; }

// Restores the previous SIGINT/SIGTERM handlers when training returns.
struct InterruptGuard {
  struct sigaction old_int {}, old_term {};
  InterruptGuard() {
    g_interrupted = false;
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
  }
  ~InterruptGuard() {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
  }
};

std::string make_run_id() {
  if (const char* r = std::getenv("NMOE_RUN"); r && *r) return r;
  return "run_" + std::to_string(std::time(nullptr)) + "_" + std::to_string(::getpid());
}

std::string git_hash() {
  std::string cmd = std::string("git -C '") + NMOE_SOURCE_DIR + "' rev-parse --short HEAD 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return "";
  char buf[64] = {0};
  std::string out = fgets(buf, sizeof buf, p) ? buf : "";
  pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Splits rows of (seq_len + 1) tokens into inputs and targets.
void split_sequences(const std::vector<int32_t>& seqs, int64_t n_seq, int64_t seq_len, std::vector<int32_t>& in,
                     std::vector<int32_t>& tgt) {
  in.resize(n_seq * seq_len);
  tgt.resize(n_seq * seq_len);
  for (int64_t s = 0; s < n_seq; ++s)
    for (int64_t t = 0; t < seq_len; ++t) {
      in[s * seq_len + t] = seqs[s * (seq_len + 1) + t];
      tgt[s * seq_len + t] = seqs[s * (seq_len + 1) + t + 1];
    }
}

// Everything a step needs to know about the ranks: none (one process) or a
// DistContext. Loss sums are kept per micro-batch and summed in the tree
// order over the global batch (dist/tree_sum.h) when exact.
struct Ranks {
  Comm* comm = nullptr;
  int rank = 0, world = 1;
  int64_t sum(int64_t v) const { return comm ? comm->sum(v) : v; }
  double tree_total(const std::vector<double>& mine) const {
    return tree_sum(comm ? comm->all_gather(mine) : mine);
  }
  // Two per-leaf series of equal length on every rank, in one exchange.
  std::pair<double, double> tree_totals(const std::vector<double>& a, const std::vector<double>& b) const {
    std::vector<double> both(a);
    both.insert(both.end(), b.begin(), b.end());
    if (comm) both = comm->all_gather(both);
    const size_t per = a.size() + b.size();
    std::vector<double> ta, tb;
    for (size_t r = 0; r * per < both.size(); ++r) {
      ta.insert(ta.end(), both.begin() + r * per, both.begin() + r * per + a.size());
      tb.insert(tb.end(), both.begin() + r * per + a.size(), both.begin() + (r + 1) * per);
    }
    return {tree_sum(ta), tree_sum(tb)};
  }
};

double validation_loss(const Config& cfg, Model& model, const Ranks& ranks, bool exact) {
  TokenLoader val(*cfg.validation_data_path, cfg.seq_len, cfg.vocab_size);
  const int64_t local = cfg.local_batch(), micro = cfg.micro_batch(), T = cfg.seq_len;
  std::vector<int32_t> seqs(local * (T + 1)), in, tgt;
  int64_t count = 0;
  double sum = 0;
  model.reset_step_stats();
  for (int64_t i = 0; i < cfg.validation_steps; ++i) {
    val.next_batch(cfg.batch_size, ranks.rank, ranks.world, seqs.data());
    split_sequences(seqs, local, T, in, tgt);
    count += model.count_targets(tgt.data(), static_cast<int64_t>(tgt.size()));
    std::vector<double> leaves;  // this batch's micro-batches
    for (int64_t m = 0; m < local / micro; ++m) {
      model.forward_loss(in.data() + m * micro * T, tgt.data() + m * micro * T);
      if (exact) {
        leaves.push_back(model.read_loss_sum());
        model.reset_loss_sums();
      }
    }
    if (exact) sum += ranks.tree_total(leaves);
  }
  if (!exact) sum = ranks.tree_total({model.read_loss_sum()});
  count = ranks.sum(count);
  model.reset_step_stats();
  return count > 0 ? sum / static_cast<double>(count) : NAN;
}

void router_metrics(Model& model, std::vector<std::pair<std::string, double>>& m, RouterStats* agg_out) {
  const int64_t n = model.shape().n_moe_layers();
  RouterStats agg;
  for (int64_t i = 0; i < n; ++i) {
    RouterStats s = router_stats(model.read_expert_counts(i), model.read_router_bias(i));
    char p[48];
    std::snprintf(p, sizeof p, "router/layer_%02lld/", static_cast<long long>(i));
    std::string pre = p;
    m.emplace_back(pre + "cv", s.cv);
    m.emplace_back(pre + "max_load", s.max_load);
    m.emplace_back(pre + "dead_experts", static_cast<double>(s.dead));
    m.emplace_back(pre + "bias_min", s.bias_min);
    m.emplace_back(pre + "bias_max", s.bias_max);
    m.emplace_back(pre + "bias_range", s.bias_max - s.bias_min);
    for (size_t e = 0; e < s.load.size(); ++e) {
      char t[32];
      std::snprintf(t, sizeof t, "load/e%03zu", e);
      m.emplace_back(pre + t, s.load[e]);
    }
    agg.cv += s.cv / static_cast<double>(n);
    agg.dead += s.dead;
    agg.bias_min = i == 0 ? s.bias_min : std::min(agg.bias_min, s.bias_min);
    agg.bias_max = i == 0 ? s.bias_max : std::max(agg.bias_max, s.bias_max);
  }
  if (n > 0) {
    m.emplace_back("router_agg/mean_cv", agg.cv);
    m.emplace_back("router_agg/dead_experts_count", static_cast<double>(agg.dead));
  }
  if (agg_out) *agg_out = agg;
}

// Refuses data made for another tokenizer, vocabulary or EOS, and directories
// whose .npy files differ from their manifest. A directory without a manifest
// cannot be checked: one warning line says so.
void check_training_data(const Config& cfg, Progress& out) {
  auto check = [&](const std::string& dir, const std::string& origin) {
    if (!std::filesystem::exists(dir)) return;  // the loader says so
    if (!std::filesystem::is_directory(dir) || !has_manifest(dir)) {
      out.line("warning: '" + dir + "' (" + origin + ") has no manifest.json: its tokenizer, shards and checksums " +
               "cannot be checked (n data prep writes one)");
      return;
    }
    check_dataset_matches(dir, cfg.tokenizer, cfg.vocab_size, cfg.eos_token_id, origin);
    check_shards_match_manifest(dir);
  };
  if (cfg.data_path) check(*cfg.data_path, "data_path");
  if (cfg.mixture_toml)
    for (const MixtureSource& s : MixtureSpec::load(*cfg.mixture_toml).sources)
      check(s.path, "the path of source '" + s.name + "' in mixture_toml " + *cfg.mixture_toml);
  if (cfg.validation_enabled) check(*cfg.validation_data_path, "validation_data_path");
}

}  // namespace

std::unique_ptr<Backend> make_backend(const Config& cfg) {
#ifdef NMOE_CUDA_BACKEND
  if (cfg.device == "cuda" || (cfg.device == "auto" && cuda_device_available())) {
    NMOE_CHECK(cuda_device_available(), "device = \"cuda\" but no CUDA device is visible; set device = \"cpu\"");
    return make_cuda_backend(0);
  }
#else
  NMOE_CHECK(cfg.device != "cuda", "device = \"cuda\": this build has no CUDA backend (nvcc was not found when ",
             "it was built); set device = \"cpu\"");
#endif
  return make_cpu_backend(static_cast<int>(cfg.threads));
}

ModelOptions model_options(const Config& cfg, const Backend& backend) {
  ModelOptions mo;
  mo.dtype = DType::F32;
  mo.micro_batch = cfg.micro_batch();
  mo.seq_len = cfg.seq_len;
  const bool gpu = std::string(backend.name()) == "cuda";
  // On a GPU the chunk's [rows, vocab] fp32 logits (the BF16 gradient is
  // written over them) are the largest scratch: 4096 x 50304 x 4 B = 786 MiB;
  // the chunk's GEMMs are still large enough to run at full rate.
  mo.ce_chunk_rows = gpu ? 4096 : 256;
  // dtype = "bf16": BF16 activations and weight copy on the GPU (fp32 master
  // weights, moments and statistics). The CPU backend computes in fp32.
  NMOE_CHECK(cfg.dtype == "bf16", "dtype = \"", cfg.dtype, "\" is not supported on Hopper (fp8/nvfp4 are ",
             "Blackwell paths); set dtype = \"bf16\"");
  if (gpu) mo.compute_dtype = DType::BF16;
  mo.recompute_attention = cfg.recompute_attention;
  // expert_grad_dtype = "bf16": like dtype = "bf16", a GPU storage choice; the
  // CPU backend keeps every gradient in fp32 (the run's header says which).
  if (gpu && cfg.expert_grad_dtype == "bf16") mo.expert_grad_dtype = DType::BF16;
  // The CPU backend sums micro-batches in the fixed tree order, so results do
  // not depend on the rank count; the GPU accumulates in place (memory).
  mo.exact_accumulation = !gpu;
  return mo;
}

TrainResult train(const Config& cfg, Backend& backend, const TrainOptions& opts) {
  Ranks ranks;
  if (opts.dist) {
    ranks.comm = opts.dist->comm.get();
    ranks.rank = opts.dist->rank();
    ranks.world = opts.dist->world();
  }
  NMOE_CHECK(cfg.world_size == ranks.world, "the config was validated for ", cfg.world_size,
             " ranks but this run has ", ranks.world);
  const bool lead = ranks.rank == 0;
  Progress out(lead ? opts.out : nullptr);
  NMOE_CHECK(cfg.data_path || cfg.mixture_toml,
             "no training data: set data_path (a directory of .npy token shards) or mixture_toml");
  check_training_data(cfg, out);
  InterruptGuard interrupt_guard;

  ModelOptions mo = model_options(cfg, backend);
  mo.rank = ranks.rank;
  mo.world = ranks.world;
  mo.shard_optimizer_state = ranks.comm != nullptr && ranks.world > 1;  // ZeRO-1 for the replicated parameters
  Model model(cfg, backend, mo);
  if (opts.dist) model.set_transport(opts.dist->transport.get());
  const bool exact = mo.exact_accumulation;
  GradAccumulator accumulator(model, ranks.comm, exact);
  Optimizer optimizer(cfg, model, ranks.comm);
  auto loader_ptr = make_data_loader(cfg.data_path.value_or(""), cfg.mixture_toml.value_or(""), cfg.seq_len,
                                     cfg.vocab_size);
  DataLoader& loader = *loader_ptr;
  loader.on_wrap([&](const std::string& msg) { out.line("warning: " + msg); });
  Rng rng(static_cast<uint64_t>(cfg.seed));

  TrainResult res;
  res.run_id = opts.run_id.empty() ? make_run_id() : opts.run_id;
  double tokens_seen = 0;
  int64_t step = 0;
  if (auto ck = cfg.resume ? find_latest_checkpoint(cfg.checkpoint_dir) : std::nullopt) {
    CheckpointState st = load_checkpoint(*ck, model, cfg);
    step = st.step;
    tokens_seen = st.tokens_seen;
    optimizer.set_adam_steps(st.adam_steps);
    loader.set_state(st.loader);
    rng.set_state(st.rng);
    out.line("resumed from " + *ck + " at step " + std::to_string(step) +
             (st.world_size != ranks.world ? " (written by " + std::to_string(st.world_size) + " ranks, resharded to " +
                                                 std::to_string(ranks.world) + ")"
                                           : ""));
  } else {
    model.init_weights(static_cast<uint64_t>(cfg.seed));
  }
  res.start_step = step;
  if (step >= cfg.steps)
    out.line("nothing to train: the checkpoint is at step " + std::to_string(step) + " and steps = " +
             std::to_string(cfg.steps) + "; raise steps to continue");

  std::optional<MetricsDB> db;
  if (opts.metrics && lead) {
    db.emplace(MetricsDB::open(cfg.experiments_db));
    db->start_run(res.run_id, cfg.experiment_id, cfg.to_json(), cfg.fingerprint(), git_hash());
  }
  out.header(cfg, model, loader, res.run_id);

  const int64_t T = cfg.seq_len, local = cfg.local_batch(), micro = cfg.micro_batch();
  const int64_t n_micro = local / micro;
  const double tokens_per_step = static_cast<double>(cfg.batch_size * T);
  const int64_t n_moe = model.shape().n_moe_layers();
  // The aux loss is the mean over MoE layers and over the global batch's micro-batches.
  const double aux_weight = cfg.aux_loss_alpha > 0 && n_moe > 0
                                ? cfg.aux_loss_alpha / static_cast<double>(n_moe * n_micro * ranks.world)
                                : 0.0;
  std::vector<int32_t> seqs(local * (T + 1)), in, tgt;

  ExpertTransport* transport = opts.dist ? opts.dist->transport.get() : nullptr;
  double comm_at_log = 0;
  auto t_start = std::chrono::steady_clock::now();
  auto t_log = t_start;
  double valid_seconds = 0, tokens_since_log = 0;
  res.status = "completed";
  auto checkpoint = [&]() {
    CheckpointState st;
    st.step = step;
    st.tokens_seen = tokens_seen;
    st.adam_steps = optimizer.adam_steps();
    st.loader = loader.state();
    st.rng = rng.state();
    st.world_size = ranks.world;
    st.run_id = res.run_id;
    st.config_json = cfg.to_json();
    st.fingerprint_json = cfg.fingerprint_json();
    st.fingerprint = cfg.fingerprint();
    res.last_checkpoint =
        save_checkpoint(cfg.checkpoint_dir, st, model, cfg.fsync, cfg.checkpoint_keep_last_n, ranks.comm);
    out.line("checkpoint: " + res.last_checkpoint);
  };

  while (step < cfg.steps) {
    // Ranks stop together: a Ctrl-C seen by any rank stops all at this step.
    const bool interrupted = ranks.comm ? ranks.comm->any(g_interrupted) : g_interrupted.load();
    if (interrupted) {
      res.status = "interrupted";
      out.line("interrupted: saving a checkpoint and stopping");
      break;
    }
    const int64_t s = step + 1;  // 1-based step number for logs and cadences
    loader.next_batch(cfg.batch_size, ranks.rank, ranks.world, seqs.data());
    split_sequences(seqs, local, T, in, tgt);
    const int64_t count = ranks.sum(model.count_targets(tgt.data(), static_cast<int64_t>(tgt.size())));
    const double grad_scale = count > 0 ? 1.0 / static_cast<double>(count) : 0.0;

    accumulator.begin_step();
    model.reset_step_stats();
    std::vector<double> leaf_loss, leaf_aux;
    for (int64_t m = 0; m < n_micro; ++m) {
      accumulator.begin_leaf();
      // The update of each parameter overlaps the rest of the last backward.
      if (m == n_micro - 1 && optimizer.overlaps_backward()) optimizer.begin_overlapped_step(step, tokens_seen);
      model.forward_backward(in.data() + m * micro * T, tgt.data() + m * micro * T, grad_scale, aux_weight);
      accumulator.end_leaf();
      if (exact) {
        leaf_loss.push_back(model.read_loss_sum());
        leaf_aux.push_back(model.read_aux_sum());
        model.reset_loss_sums();
      }
    }
    if (!exact) {
      leaf_loss.push_back(model.read_loss_sum());
      leaf_aux.push_back(model.read_aux_sum());
    }
    accumulator.finish();
    if (ranks.comm)
      for (const Tensor& c : model.router_counts()) ranks.comm->all_reduce_sum(c, "router expert counts");
    const auto [loss_sum, aux] = ranks.tree_totals(leaf_loss, leaf_aux);
    const double loss = count > 0 ? loss_sum / static_cast<double>(count) : 0.0;
    if (!std::isfinite(loss) || !std::isfinite(aux)) {
      optimizer.abandon_overlapped_step();  // the weights in memory then hold the failed step's update
      res.status = "failed_nan";
      out.line("error: loss is not finite at step " + std::to_string(s) +
               " (loss " + std::to_string(loss) + "); stopping. Lower the learning rates or enable grad_clip.");
      break;
    }
    OptimizerStep os = optimizer.step(step, tokens_seen);
    tokens_seen += tokens_per_step;
    tokens_since_log += tokens_per_step;
    step = s;
    res.losses.push_back(loss);

    if (s == 1 || s % cfg.log_every == 0 || s == cfg.steps) {
      const double grad_norm = optimizer.last_grad_norm();  // waits for the step: inside the interval
      const double dt = seconds_since(t_log);
      const double tps = dt > 0 ? tokens_since_log / dt : 0.0;
      const double comm_s = transport ? transport->seconds() : 0.0;
      t_log = std::chrono::steady_clock::now();
      tokens_since_log = 0;
      std::vector<std::pair<std::string, double>> m = {
          {"train/loss", loss},
          {"train/aux_loss", aux},
          {"train/grad_norm", grad_norm},
          {"train/tokens_seen", tokens_seen},
          {"optimizer/lr_dense", os.lr_dense},
          {"optimizer/lr_expert", os.lr_expert},
          {"optimizer/lr_router", os.lr_router},
          {"optimizer/bias_gamma", os.bias_gamma},
          {"throughput/tokens_per_s", tps},
          {"efficiency/tflops", tps * model.flops_per_token() / 1e12},
      };
      if (transport) {  // MoE transfers and waits, as a share of the wall time since the last log
        m.emplace_back("time/moe_comm_share", dt > 0 ? (comm_s - comm_at_log) / dt : 0.0);
        comm_at_log = comm_s;
      }
      RouterStats agg;
      router_metrics(model, m, &agg);
      if (db) db->log(res.run_id, s, m);
      const double elapsed = seconds_since(t_start) - valid_seconds;
      out.step(s, cfg.steps, loss, os.lr_dense, grad_norm, tps, elapsed,
               static_cast<double>(s - res.start_step), n_moe > 0 ? &agg : nullptr);
    }

    bool stop_target = false;
    if (cfg.validation_enabled && (s % cfg.validation_every == 0 || s == cfg.steps)) {
      auto tv = std::chrono::steady_clock::now();
      const double vl = validation_loss(cfg, model, ranks, exact);
      valid_seconds += seconds_since(tv);
      res.val_loss = vl;
      if (db) db->log(res.run_id, s, {{"valid/loss", vl}});
      out.validation(s, vl, cfg.target_loss);
      if (cfg.target_loss && vl <= *cfg.target_loss) {
        res.target_reached = true;
        res.status = "completed_target";
        res.step_to_target = s;
        res.tokens_to_target = tokens_seen;
        res.train_seconds_to_target = seconds_since(t_start) - valid_seconds;
        stop_target = true;
      }
    }
    if (s % cfg.checkpoint_every == 0 || s == cfg.steps || stop_target) checkpoint();
    if (stop_target) break;
  }
  if (res.status == "interrupted") checkpoint();

  res.steps_done = step;
  res.tokens_seen = tokens_seen;
  res.train_seconds = seconds_since(t_start) - valid_seconds;
  if (db) {
    nlohmann::json r = {{"steps_completed", step},
                        {"tokens_seen", tokens_seen},
                        {"final_loss", res.losses.empty() ? nlohmann::json(nullptr) : nlohmann::json(res.losses.back())},
                        {"val_loss", res.val_loss ? nlohmann::json(*res.val_loss) : nlohmann::json(nullptr)},
                        {"target_reached", res.target_reached},
                        {"step_to_target", res.step_to_target},
                        {"tokens_to_target", res.tokens_to_target},
                        {"train_time_s_to_target", res.train_seconds_to_target},
                        {"last_checkpoint", res.last_checkpoint},
                        {"train_time_s", res.train_seconds},
                        {"stop_reason", res.status}};
    db->end_run(res.run_id, res.status, r.dump());
  }
  out.finish(res.status, step, res.train_seconds);
  return res;
}

}  // namespace nmoe
