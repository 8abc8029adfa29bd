#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "metrics/metrics_db.h"

namespace {

using nmoe::MetricRow;
using nmoe::MetricsDB;

class MetricsDbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::path(::testing::TempDir()) / "nmoe_mdb_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/nested/dir/metrics.db";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_, path_;
};

template <typename F>
std::string mdb_error_of(F&& f) {
  try {
    f();
  } catch (const nmoe::Error& e) {
    return e.what();
  }
  return "<no error>";
}

void mdb_expect_error(const std::string& msg, std::initializer_list<std::string> parts) {
  for (const std::string& part : parts) EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
}

// A plain sqlite3 connection for checking what is on disk.
class RawDb {
 public:
  explicit RawDb(const std::string& path) { EXPECT_EQ(sqlite3_open(path.c_str(), &db_), SQLITE_OK); }
  ~RawDb() { sqlite3_close(db_); }
  // First column of the first row as text ("NULL" for SQL NULL, "" for no row).
  std::string query(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sqlite3_errmsg(db_);
    std::string out;
    if (sqlite3_step(s) == SQLITE_ROW) {
      const unsigned char* t = sqlite3_column_text(s, 0);
      out = t ? reinterpret_cast<const char*>(t) : "NULL";
    }
    sqlite3_finalize(s);
    return out;
  }
  void exec(const std::string& sql) { EXPECT_EQ(sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK); }

 private:
  sqlite3* db_ = nullptr;
};

int64_t wall_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

TEST_F(MetricsDbTest, CreatesSchemaWithWalAndIsIdempotent) {
  { MetricsDB db = MetricsDB::open(path_); EXPECT_EQ(db.path(), path_); }
  ASSERT_TRUE(std::filesystem::exists(path_));
  { MetricsDB again = MetricsDB::open(path_); }  // schema creation is idempotent
  RawDb raw(path_);
  EXPECT_EQ(raw.query("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(raw.query("PRAGMA user_version"), "1");
  for (const char* name : {"experiments", "runs", "metrics", "idx_runs_experiment", "idx_runs_status",
                           "idx_metrics_run_step"})
    EXPECT_EQ(raw.query(std::string("SELECT count(*) FROM sqlite_master WHERE name='") + name + "'"), "1") << name;
}

TEST_F(MetricsDbTest, StartLogEndRun) {
  MetricsDB db = MetricsDB::open(path_);
  db.start_run("run1", "exp-a", R"({"lr":0.001})", "fp123", "abc123");
  std::optional<nmoe::RunRow> r = db.run("run1");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->experiment_id, "exp-a");
  EXPECT_EQ(r->config_json, R"({"lr":0.001})");
  EXPECT_EQ(r->fingerprint, "fp123");
  EXPECT_EQ(r->git_hash, "abc123");
  EXPECT_EQ(r->status, "running");
  EXPECT_FALSE(r->started_at.empty());
  EXPECT_TRUE(r->ended_at.empty());

  int64_t before = wall_ms();
  db.log("run1", 1, {{"train/loss", 2.5}, {"train/lr", 1e-3}});
  db.log("run1", 2, {{"train/loss", 2.25}});
  db.log("run1", 3, {});
  int64_t after = wall_ms();
  std::vector<MetricRow> rows = db.metrics("run1");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].tag, "train/loss");
  EXPECT_EQ(rows[0].step, 1);
  EXPECT_EQ(rows[0].value, 2.5);
  EXPECT_EQ(rows[1].tag, "train/loss");
  EXPECT_EQ(rows[1].step, 2);
  EXPECT_EQ(rows[2].tag, "train/lr");
  EXPECT_EQ(rows[2].value, 1e-3);
  for (const MetricRow& m : rows) {
    EXPECT_GE(m.ts_ms, before);
    EXPECT_LE(m.ts_ms, after);
  }
  EXPECT_EQ(db.tags("run1"), (std::vector<std::string>{"train/loss", "train/lr"}));
  EXPECT_TRUE(db.metrics("other").empty());

  db.end_run("run1", "completed", R"({"final_loss":2.25})");
  r = db.run("run1");
  EXPECT_EQ(r->status, "completed");
  EXPECT_EQ(r->results_json, R"({"final_loss":2.25})");
  EXPECT_FALSE(r->ended_at.empty());

  RawDb raw(path_);
  EXPECT_EQ(raw.query("SELECT name FROM experiments WHERE id='exp-a'"), "exp-a");
  EXPECT_EQ(raw.query("SELECT project FROM experiments WHERE id='exp-a'"), "nmoe");
}

TEST_F(MetricsDbTest, LogReplacesTheSameStep) {
  MetricsDB db = MetricsDB::open(path_);
  db.start_run("r", "e", "{}", "", "");
  db.log("r", 5, {{"loss", 1.0}});
  db.log("r", 5, {{"loss", 2.0}, {"loss", 3.0}});
  std::vector<MetricRow> rows = db.metrics("r");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].value, 3.0);
}

TEST_F(MetricsDbTest, TagPrefixIsLiteral) {
  MetricsDB db = MetricsDB::open(path_);
  db.start_run("r", "e", "{}", "", "");
  db.log("r", 1, {{"train/loss", 1}, {"train/lr", 2}, {"train_x", 3}, {"trainer", 4}, {"val/loss", 5},
                  {"Train/loss", 6}, {"a%b", 7}, {"axb", 8}});
  auto tags_of = [&](const std::string& prefix) {
    std::vector<std::string> out;
    for (const MetricRow& m : db.metrics("r", prefix)) out.push_back(m.tag);
    return out;
  };
  EXPECT_EQ(tags_of("train/"), (std::vector<std::string>{"train/loss", "train/lr"}));
  EXPECT_EQ(tags_of("train"), (std::vector<std::string>{"train/loss", "train/lr", "train_x", "trainer"}));
  EXPECT_EQ(tags_of("a%"), (std::vector<std::string>{"a%b"}));
  EXPECT_EQ(tags_of("val/loss"), (std::vector<std::string>{"val/loss"}));
  EXPECT_EQ(tags_of("zzz"), std::vector<std::string>{});
  EXPECT_EQ(tags_of("").size(), 8u);
  EXPECT_EQ(tags_of("\xff").size(), 0u);
}

TEST_F(MetricsDbTest, SecondConnectionReadsWhileFirstIsOpen) {
  MetricsDB writer = MetricsDB::open(path_);
  writer.start_run("r", "e", "{}", "", "");
  writer.log("r", 1, {{"loss", 4.0}});

  MetricsDB reader = MetricsDB::open(path_);
  ASSERT_EQ(reader.runs().size(), 1u);
  ASSERT_EQ(reader.metrics("r").size(), 1u);
  writer.log("r", 2, {{"loss", 3.0}});
  EXPECT_EQ(reader.metrics("r").size(), 2u);

  // WAL: readers are not blocked by another connection's open write transaction.
  RawDb other(path_);
  other.exec("BEGIN IMMEDIATE");
  other.exec("INSERT INTO metrics(run_id, tag, step, value, ts_ms) VALUES ('r', 'loss', 3, 1.0, 0)");
  EXPECT_EQ(reader.metrics("r").size(), 2u);  // uncommitted row is invisible
  other.exec("COMMIT");
  EXPECT_EQ(reader.metrics("r").size(), 3u);

  reader.log("r", 4, {{"loss", 0.5}});  // both connections can write
  EXPECT_EQ(writer.metrics("r").size(), 4u);
}

TEST_F(MetricsDbTest, NanAndInfinityRoundTrip) {
  MetricsDB db = MetricsDB::open(path_);
  db.start_run("r", "e", "{}", "", "");
  const double inf = std::numeric_limits<double>::infinity();
  db.log("r", 1, {{"a_nan", std::nan("")}, {"b_inf", inf}, {"c_ninf", -inf}, {"d_tiny", 5e-324}});
  std::vector<MetricRow> rows = db.metrics("r");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_TRUE(std::isnan(rows[0].value));
  EXPECT_EQ(rows[1].value, inf);
  EXPECT_EQ(rows[2].value, -inf);
  EXPECT_EQ(rows[3].value, 5e-324);
  RawDb raw(path_);
  EXPECT_EQ(raw.query("SELECT value FROM metrics WHERE tag='a_nan'"), "NULL");
}

TEST_F(MetricsDbTest, RunsAreNewestFirst) {
  MetricsDB db = MetricsDB::open(path_);
  db.start_run("first", "e", "{}", "", "");
  db.start_run("second", "e", "{}", "", "");
  db.start_run("third", "other", "{}", "", "");
  std::vector<nmoe::RunRow> runs = db.runs();
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[0].id, "third");
  EXPECT_EQ(runs[1].id, "second");
  EXPECT_EQ(runs[2].id, "first");
}

TEST_F(MetricsDbTest, ResumeAndMissingRuns) {
  MetricsDB db = MetricsDB::open(path_);
  EXPECT_FALSE(db.run("missing").has_value());
  mdb_expect_error(mdb_error_of([&] { db.end_run("missing", "failed", "{}"); }), {path_, "'missing'"});

  db.start_run("r", "e", "{\"v\":1}", "fp1", "g1");
  db.log("r", 1, {{"loss", 1.0}});
  db.end_run("r", "failed", "{}");
  db.start_run("r", "e", "{\"v\":2}", "fp2", "g2");  // resume
  std::optional<nmoe::RunRow> r = db.run("r");
  EXPECT_EQ(r->status, "running");
  EXPECT_EQ(r->config_json, "{\"v\":2}");
  EXPECT_TRUE(r->ended_at.empty());
  EXPECT_TRUE(r->results_json.empty());
  EXPECT_EQ(db.metrics("r").size(), 1u);
  mdb_expect_error(mdb_error_of([&] { db.start_run("r", "other-exp", "{}", "", ""); }), {path_, "'r'", "'e'"});
}

TEST_F(MetricsDbTest, OpenErrorsNameThePath) {
  std::string blocker = dir_ + "/blocker";
  std::ofstream(blocker) << "x";
  mdb_expect_error(mdb_error_of([&] { MetricsDB::open(blocker + "/m.db"); }), {blocker});

  std::string garbage = dir_ + "/garbage.db";
  std::ofstream(garbage) << std::string(4096, 'g');
  mdb_expect_error(mdb_error_of([&] { MetricsDB::open(garbage); }), {garbage, "not a database"});

  { MetricsDB db = MetricsDB::open(path_); }
  { RawDb(path_).exec("PRAGMA user_version = 7"); }
  mdb_expect_error(mdb_error_of([&] { MetricsDB::open(path_); }), {path_, "schema version 7"});
}

TEST_F(MetricsDbTest, MoveKeepsTheConnection) {
  MetricsDB a = MetricsDB::open(path_);
  MetricsDB b = std::move(a);
  b.start_run("r", "e", "{}", "", "");
  MetricsDB c = MetricsDB::open(dir_ + "/other.db");
  c = std::move(b);
  EXPECT_EQ(c.runs().size(), 1u);
  EXPECT_EQ(c.path(), path_);
}

}  // namespace
