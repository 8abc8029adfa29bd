// LEADERBOARD.json: speedrun results, sorted by wall time to the target
// (then steps). Only runs that reached their target and were scored on CORE
// are recorded.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace nmoe {

struct LeaderboardEntry {
  std::string config;      // speedrun name, e.g. "super"
  std::string hardware;    // "H200", "H100", "CPU"
  int64_t n_gpus = 0;      // 0 on the CPU
  int64_t n_ranks = 1;
  std::string dtype;
  double target_loss = 0;
  double final_loss = 0;   // validation loss at the target
  double core_score = 0;
  int64_t core_tasks = 0;        // tasks scored
  int64_t core_tasks_total = 0;  // tasks in the suite
  double tokens = 0;       // tokens to the target
  int64_t steps = 0;
  double wall_time_s = 0;  // training time to the target, validation excluded
  std::string date;        // ISO 8601, local time
  std::string experiment_id, run_id;
};

nlohmann::json to_json(const LeaderboardEntry& e);

// Loads (or starts) the file, appends the entry, sorts runs by (wall_time_s,
// steps) and writes it back atomically; other keys of the file are kept.
// Throws Error if the file exists but is not a leaderboard.
void append_to_leaderboard(const std::string& path, const LeaderboardEntry& e);

// The table `n speedrun --leaderboard` prints (the first `limit` runs).
std::string format_leaderboard(const std::string& path, size_t limit = 20);

// "H200" from "NVIDIA H200", "H100" from "NVIDIA H100 80GB HBM3"; other names unchanged.
std::string short_hardware_name(const std::string& device_name);

std::string iso_local_time_now();

}  // namespace nmoe
