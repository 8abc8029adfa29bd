// `n`: the nmoe command line.
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"

namespace {

const char* kUsage = R"(usage: n <command> [options]

commands:
  train CONFIG.toml [--set key=value ...] [--nproc N [--devices LIST] [--all-ranks-output]]
                                            train a model (docs/config.md lists the keys); --nproc:
                                            N ranks on this machine, --devices: each rank's GPU
                                            (0,0,1,1 shares), --all-ranks-output: every rank's lines
  config check CONFIG.toml [--set ...]      validate a config and print its fingerprint
  config show CONFIG.toml [--set ...]       print the resolved config as JSON
  config keys                               list every config key
  data prep --source text|jsonl|jsonl_zst|parquet|hf --output DIR [options]
                                            tokenize documents into .npy shards (docs/data.md)
  data verify DIR [--no-checksums]          check a prepared dataset against its manifest
  data info DIR                             summarize a prepared dataset
  bench CONFIG.toml [--micro-batch 16] [--seq 2048] [--steps 20] [--warmup 5] [--op-times] [--set ...]
                                            training throughput on synthetic tokens (JSON line);
                                            --op-times: time per op (table on stderr, "op_times"
                                            in the JSON; ops synchronized, so slower overall)
  bench rdep --nproc N [--devices LIST] [--tokens 4096] [--dim 1024] [--experts 64] [--top-k 8]
             [--iters 20]               MoE dispatch/return time and GB/s between ranks (JSON line)
  eval core --checkpoint DIR [--max-examples N] [--max-time-s S] [--tasks a,b] [--bundle DIR]
            [--batch N] [--db PATH | --no-db] [--set key=value]
                                            the CORE suite (22 tasks) on a checkpoint (docs/eval.md)
  speedrun [tiny|wiki|dense|moe|super|ultra] [--data DIR] [--corpus DIR] [--steps N] [--nproc N]
           [--dtype bf16] [--set ...]
                                            prepare data, train to the target loss, run CORE, append
                                            to LEADERBOARD.json (docs/speedrun.md)
  speedrun --leaderboard                    print the leaderboard
  help                                      this message
)";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  const std::string cmd = args[0];
  args.erase(args.begin());
  try {
    if (cmd == "train") return nmoe::cli::cmd_train(args);
    if (cmd == "config") return nmoe::cli::cmd_config(args);
    if (cmd == "data") return nmoe::cli::cmd_data(args);
    if (cmd == "bench") return nmoe::cli::cmd_bench(args);
    if (cmd == "eval") return nmoe::cli::cmd_eval(args);
    if (cmd == "speedrun") return nmoe::cli::cmd_speedrun(args);
    if (cmd == "dist-selftest") return nmoe::cli::cmd_dist_selftest(args);
    std::cerr << "n: unknown command '" << cmd << "'\n\n" << kUsage;
    return 2;
  } catch (const nmoe::cli::UsageError& e) {
    std::cerr << "n " << cmd << ": " << e.what() << "\n\n" << kUsage;
    return 2;
  } catch (const nmoe::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
