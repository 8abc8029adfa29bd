// The `n` binary: config errors give a non-zero exit and a message naming the
// key; malformed TOML reports line and column; training runs end to end.
#include <gtest/gtest.h>

#include "core/fs.h"
#include "test_util.h"

namespace nmoe {
namespace {

const char* kBase = R"(tokenizer = "bytes"
vocab_size = 264
eos_token_id = 256
dim = 32
n_layers = 2
n_heads = 2
inter_dim = 64
moe_inter_dim = 16
n_dense_layers = 1
n_routed_experts = 4
n_activated_experts = 2
attn = "sdpa"
seq_len = 16
batch_size = 2
)";

test::CommandResult check(const test::TempDir& d, const std::string& toml, const std::string& extra = "") {
  fs::write_file_atomic(d / "c.toml", toml, false);
  return test::run_command(test::n_binary() + " config check " + d / "c.toml" + " " + extra);
}

void expect_error(const test::CommandResult& r, const std::string& needle) {
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.output;
}

TEST(Cli, ValidConfigPasses) {
  test::TempDir d;
  auto r = check(d, kBase);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("fingerprint"), std::string::npos);
}

TEST(Cli, ConfigErrorsNameTheKey) {
  test::TempDir d;
  std::string base = kBase;
  expect_error(check(d, base + "n_activated_experts = 9\n"), "n_activated_experts");
  expect_error(check(d, base, "--set dim=33"), "n_heads");
  expect_error(check(d, base + "lr_dens = 1e-3\n"), "lr_dense");
  expect_error(check(d, base + "seq_len = \"long\"\n"), "seq_len");
  expect_error(check(d, base, "--set lr_dense=-1"), "lr_dense");
  expect_error(check(d, base, "--set n_activated_experts=0"), "n_activated_experts");
  expect_error(check(d, base, "--set 'data_path=${HOME}'"), "NMOE_");
}

TEST(Cli, MalformedTomlReportsLineAndColumn) {
  test::TempDir d;
  auto r = check(d, std::string(kBase) + "dim = = 3\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("line 15"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("column"), std::string::npos) << r.output;
}

TEST(Cli, UnimplementedFeatureIsRefusedAtStart) {
  test::TempDir d;
  fs::write_file_atomic(d / "c.toml", kBase, false);
  auto r = test::run_command(test::n_binary() + " train " + d / "c.toml" + " --set attn=mla --set data_path=" + d.path);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("attn"), std::string::npos) << r.output;
}

TEST(Cli, UsageErrors) {
  auto r = test::run_command(test::n_binary() + " frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  r = test::run_command(test::n_binary() + " train");
  EXPECT_EQ(r.exit_code, 2);
  r = test::run_command(test::n_binary() + " help");
  EXPECT_EQ(r.exit_code, 0);
}

}  // namespace
}  // namespace nmoe
