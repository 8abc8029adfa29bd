// `n ... --nproc N`: starts N copies of this program as the ranks of one run on
// this machine, relays their output, forwards Ctrl-C, and stops the others when
// one fails.
#pragma once

#include <string>
#include <vector>

namespace nmoe {

struct LaunchOptions {
  int nproc = 1;
  // Device ids, one per rank (the same id may repeat, so ranks share a GPU);
  // empty: rank i gets device i.
  std::vector<std::string> devices;
  // Without explicit devices: this many consecutive ranks share one GPU
  // (rank i gets device i / gpus_per_rank_share); 0 = one GPU per rank.
  int gpus_per_rank_share = 0;
  bool all_ranks_output = false;        // print every rank's lines, prefixed "[rank R] "
  std::vector<std::string> child_args;  // argv after the program, e.g. {"train", "cfg.toml", "--set", "x=1"}
};

// Runs the ranks to completion. Returns 0 when all exit 0, 130 when interrupted
// and all exit 0 or 130, otherwise the first failing rank's exit code (128 +
// signal number when a signal killed it).
int launch_workers(const LaunchOptions& opts);

// CUDA_VISIBLE_DEVICES for each rank, "" for "leave the inherited value".
// Ids index into parent_visible (the launcher's CUDA_VISIBLE_DEVICES, null when
// unset); gpu_count is the number of GPUs found when it is unset. Without
// explicit devices and with fewer known GPUs than needed (a CPU run), every
// rank keeps the inherited value.
std::vector<std::string> rank_devices(const LaunchOptions& opts, const char* parent_visible, int gpu_count);

}  // namespace nmoe
