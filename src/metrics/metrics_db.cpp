#include "metrics/metrics_db.h"

#include <sqlite3.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/error.h"
#include "core/fs.h"

namespace nmoe {

namespace {

constexpr int kSchemaVersion = 1;
constexpr int kBusyTimeoutMs = 5000;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS experiments (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  project TEXT NOT NULL DEFAULT 'nmoe',
  description TEXT,
  created_at TEXT DEFAULT (datetime('now'))
);
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY,
  experiment_id TEXT NOT NULL,
  config_json TEXT NOT NULL,
  fingerprint TEXT,
  git_hash TEXT,
  started_at TEXT DEFAULT (datetime('now')),
  ended_at TEXT,
  status TEXT NOT NULL DEFAULT 'running',
  results_json TEXT
);
CREATE INDEX IF NOT EXISTS idx_runs_experiment ON runs(experiment_id);
CREATE INDEX IF NOT EXISTS idx_runs_status ON runs(status);
CREATE TABLE IF NOT EXISTS metrics (
  run_id TEXT NOT NULL,
  tag TEXT NOT NULL,
  step INTEGER NOT NULL,
  value REAL,
  ts_ms INTEGER NOT NULL,
  PRIMARY KEY (run_id, tag, step)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_metrics_run_step ON metrics(run_id, step);
)sql";

[[noreturn]] void db_fail(const std::string& path, sqlite3* db, const std::string& what) {
  fail("metrics db '", path, "': ", what, ": ", db ? sqlite3_errmsg(db) : "out of memory");
}

void exec_sql(sqlite3* db, const std::string& path, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    fail("metrics db '", path, "': ", msg);
  }
}

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// A prepared statement; every failure names the database.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& path, const char* sql) : db_(db), path_(path) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) db_fail(path_, db_, "prepare failed");
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }

  Statement& bind(int i, const std::string& s) {
    if (s.size() > static_cast<size_t>(std::numeric_limits<int>::max())) fail("metrics db '", path_, "': string of ", s.size(), " bytes is too long");
    return check_bind(sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT));
  }
  Statement& bind(int i, int64_t v) { return check_bind(sqlite3_bind_int64(stmt_, i, v)); }
  Statement& bind(int i, double v) { return check_bind(sqlite3_bind_double(stmt_, i, v)); }
  Statement& bind_null(int i) { return check_bind(sqlite3_bind_null(stmt_, i)); }

  // True while a row is available; false when done.
  bool step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    db_fail(path_, db_, "statement failed");
  }
  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  std::string text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
  }
  int64_t int64(int col) const { return sqlite3_column_int64(stmt_, col); }
  double real_or_nan(int col) const {
    if (sqlite3_column_type(stmt_, col) == SQLITE_NULL) return std::numeric_limits<double>::quiet_NaN();
    return sqlite3_column_double(stmt_, col);
  }

 private:
  Statement& check_bind(int rc) {
    if (rc != SQLITE_OK) db_fail(path_, db_, "bind failed");
    return *this;
  }

  sqlite3* db_;
  const std::string& path_;
  sqlite3_stmt* stmt_ = nullptr;
};

// BEGIN IMMEDIATE takes the write lock up front, so a concurrent writer waits
// in busy_timeout instead of failing on a lock upgrade. Rolls back unless committed.
class Transaction {
 public:
  Transaction(sqlite3* db, const std::string& path) : db_(db), path_(path) {
    exec_sql(db_, path_, "BEGIN IMMEDIATE");
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() {
    if (!done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void commit() {
    exec_sql(db_, path_, "COMMIT");
    done_ = true;
  }

 private:
  sqlite3* db_;
  const std::string& path_;
  bool done_ = false;
};

RunRow read_run(const Statement& s) {
  return RunRow{s.text(0), s.text(1), s.text(2), s.text(3), s.text(4), s.text(5), s.text(6), s.text(7), s.text(8)};
}

constexpr const char* kRunColumns =
    "SELECT id, experiment_id, config_json, fingerprint, git_hash, started_at, ended_at, status, results_json "
    "FROM runs ";

// Smallest string greater than every string starting with prefix (byte order),
// or nullopt when there is none (empty prefix or all 0xFF bytes).
std::optional<std::string> prefix_upper_bound(std::string prefix) {
  while (!prefix.empty() && static_cast<unsigned char>(prefix.back()) == 0xFF) prefix.pop_back();
  if (prefix.empty()) return std::nullopt;
  prefix.back() = static_cast<char>(static_cast<unsigned char>(prefix.back()) + 1);
  return prefix;
}

// First column of the first row of a one-row statement (a PRAGMA), or "".
std::string pragma_text(sqlite3* db, const std::string& path, const char* sql) {
  Statement s(db, path, sql);
  return s.step() ? s.text(0) : std::string();
}

}  // namespace

MetricsDB MetricsDB::open(const std::string& path) {
  MetricsDB m;  // its destructor closes the handle if setup below throws
  m.path_ = path;
  fs::make_dirs(fs::parent_dir(path));
  int rc = sqlite3_open_v2(path.c_str(), &m.db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) db_fail(path, m.db_, "cannot open");
  sqlite3_busy_timeout(m.db_, kBusyTimeoutMs);

  std::string mode = pragma_text(m.db_, m.path_, "PRAGMA journal_mode=WAL");
  if (mode != "wal") {
    std::fprintf(stderr, "warning: metrics db '%s': WAL journal mode refused (got '%s'); using DELETE\n",
                 path.c_str(), mode.c_str());
    m.exec("PRAGMA journal_mode=DELETE");
  }
  m.exec("PRAGMA synchronous=NORMAL");
  m.create_schema();
  return m;
}

void MetricsDB::exec(const char* sql) const { exec_sql(db_, path_, sql); }

void MetricsDB::create_schema() {
  Transaction tx(db_, path_);
  int64_t found = 0;
  {
    Statement version(db_, path_, "PRAGMA user_version");
    if (version.step()) found = version.int64(0);
  }
  if (found > kSchemaVersion)
    fail("metrics db '", path_, "': schema version ", found, " is newer than this build supports (",
         kSchemaVersion, ")");
  exec(kSchema);
  if (found < kSchemaVersion) exec("PRAGMA user_version = 1");
  tx.commit();
}

MetricsDB::MetricsDB(MetricsDB&& o) noexcept : path_(std::move(o.path_)), db_(o.db_) { o.db_ = nullptr; }

MetricsDB& MetricsDB::operator=(MetricsDB&& o) noexcept {
  if (this != &o) {
    sqlite3_close_v2(db_);
    path_ = std::move(o.path_);
    db_ = o.db_;
    o.db_ = nullptr;
  }
  return *this;
}

MetricsDB::~MetricsDB() { sqlite3_close_v2(db_); }

void MetricsDB::start_run(const std::string& run_id, const std::string& experiment_id,
                          const std::string& config_json, const std::string& fingerprint,
                          const std::string& git_hash) {
  Transaction tx(db_, path_);
  std::optional<RunRow> previous = run(run_id);
  if (previous && previous->experiment_id != experiment_id)
    fail("metrics db '", path_, "': run '", run_id, "' already exists in experiment '", previous->experiment_id,
         "', not '", experiment_id, "'");

  Statement experiment(db_, path_, "INSERT OR IGNORE INTO experiments(id, name) VALUES (?1, ?1)");
  experiment.bind(1, experiment_id).step();

  Statement run(db_, path_,
                "INSERT INTO runs(id, experiment_id, config_json, fingerprint, git_hash, status) "
                "VALUES (?1, ?2, ?3, ?4, ?5, 'running') "
                "ON CONFLICT(id) DO UPDATE SET config_json = excluded.config_json, "
                "fingerprint = excluded.fingerprint, git_hash = excluded.git_hash, "
                "status = 'running', ended_at = NULL, results_json = NULL");
  run.bind(1, run_id).bind(2, experiment_id).bind(3, config_json).bind(4, fingerprint).bind(5, git_hash).step();
  tx.commit();
}

void MetricsDB::end_run(const std::string& run_id, const std::string& status, const std::string& results_json) {
  Statement s(db_, path_,
              "UPDATE runs SET status = ?2, results_json = ?3, ended_at = datetime('now') WHERE id = ?1");
  s.bind(1, run_id).bind(2, status).bind(3, results_json).step();
  if (sqlite3_changes(db_) == 0) fail("metrics db '", path_, "': end_run: no run '", run_id, "'");
}

void MetricsDB::log(const std::string& run_id, int64_t step,
                    const std::vector<std::pair<std::string, double>>& values) {
  if (values.empty()) return;
  int64_t ts = now_ms();
  Transaction tx(db_, path_);
  Statement s(db_, path_,
              "INSERT OR REPLACE INTO metrics(run_id, tag, step, value, ts_ms) VALUES (?1, ?2, ?3, ?4, ?5)");
  for (const auto& [tag, value] : values) {
    s.bind(1, run_id).bind(2, tag).bind(3, step).bind(4, value).bind(5, ts).step();
    s.reset();
  }
  tx.commit();
}

std::vector<RunRow> MetricsDB::runs() const {
  std::string sql = std::string(kRunColumns) + "ORDER BY started_at DESC, rowid DESC";
  Statement s(db_, path_, sql.c_str());
  std::vector<RunRow> out;
  while (s.step()) out.push_back(read_run(s));
  return out;
}

std::optional<RunRow> MetricsDB::run(const std::string& run_id) const {
  std::string sql = std::string(kRunColumns) + "WHERE id = ?1";
  Statement s(db_, path_, sql.c_str());
  s.bind(1, run_id);
  if (!s.step()) return std::nullopt;
  return read_run(s);
}

std::vector<MetricRow> MetricsDB::metrics(const std::string& run_id, const std::string& tag_prefix) const {
  // A byte range instead of LIKE: tags contain '_' and LIKE is case-insensitive.
  Statement s(db_, path_,
              "SELECT step, tag, value, ts_ms FROM metrics "
              "WHERE run_id = ?1 AND tag >= ?2 AND (?3 IS NULL OR tag < ?3) ORDER BY tag, step");
  s.bind(1, run_id).bind(2, tag_prefix);
  std::optional<std::string> upper = prefix_upper_bound(tag_prefix);
  if (upper) s.bind(3, *upper); else s.bind_null(3);
  std::vector<MetricRow> out;
  while (s.step()) out.push_back(MetricRow{s.int64(0), s.text(1), s.real_or_nan(2), s.int64(3)});
  return out;
}

std::vector<std::string> MetricsDB::tags(const std::string& run_id) const {
  Statement s(db_, path_, "SELECT DISTINCT tag FROM metrics WHERE run_id = ?1 ORDER BY tag");
  s.bind(1, run_id);
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.text(0));
  return out;
}

}  // namespace nmoe
