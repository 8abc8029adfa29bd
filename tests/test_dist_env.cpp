// Rank, world and rendezvous address from torchrun-style variables: defaults
// for a single process, and errors that name the variable.
#include <gtest/gtest.h>

#include "dist/dist_env.h"
#include "test_util.h"

namespace nmoe {
namespace {

using Vars = std::map<std::string, std::string>;

Vars four_ranks(int rank) {
  return {{"RANK", std::to_string(rank)}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", std::to_string(rank)},
          {"LOCAL_WORLD_SIZE", "4"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}};
}

TEST(DistEnv, UnsetMeansOneProcess) {
  DistEnv e = parse_dist_env({});
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.world, 1);
  EXPECT_EQ(e.local_rank, 0);
  EXPECT_EQ(e.local_world, 1);
  EXPECT_FALSE(e.launched);
  EXPECT_FALSE(e.job_id.empty());
  // Stray rendezvous variables do not matter without WORLD_SIZE.
  EXPECT_EQ(parse_dist_env({{"MASTER_PORT", "x"}}).world, 1);
}

TEST(DistEnv, ReadsTorchrunVariables) {
  Vars v = four_ranks(2);
  v["NMOE_JOB_ID"] = "nmoe-123-456";
  DistEnv e = parse_dist_env(v);
  EXPECT_EQ(e.rank, 2);
  EXPECT_EQ(e.world, 4);
  EXPECT_EQ(e.local_rank, 2);
  EXPECT_EQ(e.local_world, 4);
  EXPECT_EQ(e.master_addr, "127.0.0.1");
  EXPECT_EQ(e.master_port, 29500);
  EXPECT_EQ(e.job_id, "nmoe-123-456");
  EXPECT_TRUE(e.launched);
}

TEST(DistEnv, LocalVariablesDefaultToTheGlobalOnes) {
  DistEnv e = parse_dist_env({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1234"}});
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_world, 2);
  EXPECT_EQ(e.master_addr, "127.0.0.1");
}

TEST(DistEnv, JobIdWithoutLauncherIsTheSameOnEveryRank) {
  DistEnv a = parse_dist_env(four_ranks(0)), b = parse_dist_env(four_ranks(3));
  EXPECT_EQ(a.job_id, b.job_id);
  for (char c : a.job_id) EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_');
  Vars other = four_ranks(0);
  other["MASTER_PORT"] = "29501";
  EXPECT_NE(parse_dist_env(other).job_id, a.job_id);
}

TEST(DistEnv, WorldOfOneNeedsNoPort) {
  DistEnv e = parse_dist_env({{"WORLD_SIZE", "1"}});
  EXPECT_EQ(e.world, 1);
  EXPECT_TRUE(e.launched);
}

TEST(DistEnv, ErrorsNameTheVariable) {
  auto err = [](Vars v) { return test::error_of([&] { parse_dist_env(v); }); };
  auto with = [](const std::string& k, const std::string& val) {
    Vars v = four_ranks(1);
    v[k] = val;
    return v;
  };
  auto without = [](const std::string& k) {
    Vars v = four_ranks(1);
    v.erase(k);
    return v;
  };
  test::expect_parts(err(with("RANK", "one")), {"RANK", "'one'", "not an integer"});
  test::expect_parts(err(with("RANK", "4")), {"RANK=4", "0..3"});
  test::expect_parts(err(with("RANK", "-1")), {"RANK=-1"});
  test::expect_parts(err(with("WORLD_SIZE", "0")), {"WORLD_SIZE=0"});
  test::expect_parts(err(with("WORLD_SIZE", "4x")), {"WORLD_SIZE", "not an integer"});
  test::expect_parts(err(with("LOCAL_RANK", "4")), {"LOCAL_RANK=4"});
  test::expect_parts(err(with("LOCAL_WORLD_SIZE", "3")), {"not a multiple", "LOCAL_WORLD_SIZE=3"});
  test::expect_parts(err(with("LOCAL_WORLD_SIZE", "2")), {"multi-node", "not supported"});
  test::expect_parts(err(with("MASTER_PORT", "0")), {"MASTER_PORT=0", "1..65535"});
  test::expect_parts(err(with("MASTER_PORT", "65536")), {"MASTER_PORT=65536"});
  test::expect_parts(err(with("MASTER_PORT", "")), {"MASTER_PORT", "not an integer"});
  test::expect_parts(err(without("MASTER_PORT")), {"MASTER_PORT", "not set"});
  test::expect_parts(err(without("RANK")), {"RANK", "not set"});
  test::expect_parts(err(with("MASTER_ADDR", "")), {"MASTER_ADDR", "empty"});
  test::expect_parts(err(with("NMOE_JOB_ID", "a/b")), {"NMOE_JOB_ID", "letters"});
  test::expect_parts(err(with("NMOE_JOB_ID", "")), {"NMOE_JOB_ID"});
  test::expect_parts(err({{"RANK", "2"}}), {"RANK", "WORLD_SIZE", "not"});
}

TEST(DistEnv, ReadsTheProcessEnvironment) {
  ::setenv("WORLD_SIZE", "2", 1);
  ::setenv("RANK", "1", 1);
  ::setenv("MASTER_PORT", "4321", 1);
  DistEnv e = dist_env_from_environment();
  ::unsetenv("WORLD_SIZE");
  ::unsetenv("RANK");
  ::unsetenv("MASTER_PORT");
  EXPECT_EQ(e.rank, 1);
  EXPECT_EQ(e.world, 2);
  EXPECT_EQ(e.master_port, 4321);
  EXPECT_EQ(dist_env_from_environment().world, 1);
}

}  // namespace
}  // namespace nmoe
