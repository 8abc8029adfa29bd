// Experiment/run/metric store in SQLite (WAL mode, so readers such as a
// dashboard can query while the trainer writes).
//
// NaN: SQLite stores a NaN REAL as NULL, so readers of the raw database see
// NULL; metrics() maps NULL back to NaN. Infinities are stored as they are.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

struct sqlite3;

namespace nmoe {

struct RunRow {
  std::string id, experiment_id, config_json, fingerprint, git_hash, started_at, ended_at, status, results_json;
};

struct MetricRow {
  int64_t step;
  std::string tag;
  double value;
  int64_t ts_ms;
};

class MetricsDB {
 public:
  // Opens or creates the database (and its parent directories), sets WAL
  // (DELETE with a warning on stderr if WAL is refused), busy_timeout 5000 ms,
  // synchronous=NORMAL, and creates the schema if missing.
  static MetricsDB open(const std::string& path);

  MetricsDB(MetricsDB&& other) noexcept;
  MetricsDB& operator=(MetricsDB&& other) noexcept;
  MetricsDB(const MetricsDB&) = delete;
  MetricsDB& operator=(const MetricsDB&) = delete;
  ~MetricsDB();

  // Inserts the run with status 'running' (and its experiment if missing).
  // Starting an existing run id again (a resume) resets it to 'running',
  // clears ended_at/results_json, updates config/fingerprint/git hash, and
  // keeps started_at and its metrics.
  void start_run(const std::string& run_id, const std::string& experiment_id, const std::string& config_json,
                 const std::string& fingerprint, const std::string& git_hash);
  // Sets status, results_json and ended_at = now; throws if the run does not exist.
  void end_run(const std::string& run_id, const std::string& status, const std::string& results_json);
  // One transaction; INSERT OR REPLACE on (run_id, tag, step); ts_ms = now.
  void log(const std::string& run_id, int64_t step, const std::vector<std::pair<std::string, double>>& values);

  std::vector<RunRow> runs() const;  // newest first
  std::optional<RunRow> run(const std::string& run_id) const;
  // Ordered by tag, then step. tag_prefix matches literally (no wildcards).
  std::vector<MetricRow> metrics(const std::string& run_id, const std::string& tag_prefix = "") const;
  std::vector<std::string> tags(const std::string& run_id) const;  // sorted, distinct

  const std::string& path() const { return path_; }

 private:
  MetricsDB() = default;
  void exec(const char* sql) const;
  void create_schema();

  std::string path_;
  sqlite3* db_ = nullptr;
};

}  // namespace nmoe
