#include "speedrun/leaderboard.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>

#include "core/error.h"
#include "core/fs.h"

namespace nmoe {

using fs::exists;
using fs::make_dirs;
using fs::parent_dir;
using fs::read_file;
using fs::write_file_atomic;

namespace {

nlohmann::json load_or_new(const std::string& path) {
  if (!exists(path))
    return {{"schema_version", 1},
            {"rules", {{"target_loss", 3.28}, {"requires_core", true}, {"sort_by", {"wall_time_s", "steps"}}}},
            {"runs", nlohmann::json::array()}};
  nlohmann::json j = nlohmann::json::parse(read_file(path), nullptr, /*allow_exceptions=*/false);
  NMOE_CHECK(!j.is_discarded(), path, " is not valid JSON; fix or move it away");
  NMOE_CHECK(j.is_object() && j.contains("runs") && j["runs"].is_array(), path,
             " has no \"runs\" list; is it a leaderboard? (fix or move it away)");
  NMOE_CHECK(!j.contains("schema_version") || j["schema_version"] == 1, path, ": schema_version ",
             j["schema_version"].dump(), " is not 1");
  return j;
}

double num(const nlohmann::json& r, const char* key) {
  auto it = r.find(key);
  return it != r.end() && it->is_number() ? it->get<double>() : 0.0;
}

std::string str(const nlohmann::json& r, const char* key) {
  auto it = r.find(key);
  return it != r.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

nlohmann::json to_json(const LeaderboardEntry& e) {
  return {{"config", e.config},
          {"hardware", e.hardware},
          {"n_gpus", e.n_gpus},
          {"n_ranks", e.n_ranks},
          {"dtype", e.dtype},
          {"target_loss", e.target_loss},
          {"final_loss", e.final_loss},
          {"core_score", e.core_score},
          {"core_tasks", e.core_tasks},
          {"core_tasks_total", e.core_tasks_total},
          {"tokens", e.tokens},
          {"steps", e.steps},
          {"wall_time_s", std::round(e.wall_time_s * 10) / 10},
          {"target_reached", true},
          {"date", e.date},
          {"experiment_id", e.experiment_id},
          {"run_id", e.run_id}};
}

void append_to_leaderboard(const std::string& path, const LeaderboardEntry& e) {
  nlohmann::json j = load_or_new(path);
  j["runs"].push_back(to_json(e));
  auto& runs = j["runs"];
  std::stable_sort(runs.begin(), runs.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
    const double ta = num(a, "wall_time_s"), tb = num(b, "wall_time_s");
    if (ta != tb) return ta < tb;
    return num(a, "steps") < num(b, "steps");
  });
  const std::string dir = parent_dir(path);
  if (!dir.empty() && dir != ".") make_dirs(dir);
  write_file_atomic(path, j.dump(2) + "\n");
}

std::string format_leaderboard(const std::string& path, size_t limit) {
  NMOE_CHECK(exists(path), "no leaderboard at ", path, " yet: `n speedrun` writes one when a run reaches its target");
  const nlohmann::json j = load_or_new(path);
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%-4s %-8s %-10s %5s %-5s %7s %14s %10s %8s %8s %-8s %s\n", "#", "config",
                "hardware", "ranks", "dtype", "steps", "tokens", "wall_s", "val_loss", "CORE", "tasks", "date");
  out += line;
  size_t i = 0;
  for (const auto& r : j["runs"]) {
    if (i == limit) break;
    const std::string tasks = r.contains("core_tasks") ? std::to_string(static_cast<int64_t>(num(r, "core_tasks"))) +
                                                             "/" +
                                                             std::to_string(static_cast<int64_t>(num(r, "core_tasks_total")))
                                                       : "";
    const double ranks = r.contains("n_ranks") ? num(r, "n_ranks") : num(r, "n_gpus");
    std::snprintf(line, sizeof line, "%-4zu %-8s %-10s %5.0f %-5s %7.0f %14.0f %10.1f %8.4f %8.4f %-8s %s\n", ++i,
                  str(r, "config").c_str(), str(r, "hardware").c_str(), ranks, str(r, "dtype").c_str(),
                  num(r, "steps"), num(r, "tokens"), num(r, "wall_time_s"), num(r, "final_loss"),
                  num(r, "core_score"), tasks.c_str(), str(r, "date").substr(0, 19).c_str());
    out += line;
  }
  if (i == 0) out += "(no runs yet)\n";
  return out;
}

std::string short_hardware_name(const std::string& device_name) {
  for (const char* known : {"GB200", "B200", "H200", "H100", "H800", "A100", "L40S", "B100"})
    if (device_name.find(known) != std::string::npos) return known;
  return device_name;
}

std::string iso_local_time_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return buf;
}

}  // namespace nmoe
