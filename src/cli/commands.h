// Subcommands of `n`. Each returns the process exit code.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "config/config.h"
#include "dist/launch.h"

namespace nmoe::cli {

// A malformed command line (exit code 2, usage printed).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int cmd_train(const std::vector<std::string>& args);
int cmd_config(const std::vector<std::string>& args);
int cmd_data(const std::vector<std::string>& args);
int cmd_bench(const std::vector<std::string>& args);
int cmd_eval(const std::vector<std::string>& args);
int cmd_speedrun(const std::vector<std::string>& args);
int cmd_bench_rdep(const std::vector<std::string>& args);
int cmd_dist_selftest(const std::vector<std::string>& args);  // hidden: exercises the rendezvous in launched ranks

// Parses "CONFIG.toml [--set k=v]..." into a path and overrides.
struct ConfigArgs {
  std::string path;
  std::vector<ConfigOverride> overrides;
};
ConfigArgs parse_config_args(const std::vector<std::string>& args);

// "a,b,c" as its items; an empty item is a UsageError saying flag needs a comma list of `what`.
std::vector<std::string> split_comma_list(const std::string& flag, const std::string& v, const std::string& what);

// Removes --nproc N, --devices LIST and --all-ranks-output from args (anywhere,
// except as the value of --set) and returns them; nproc is 1 when absent.
LaunchOptions parse_launch_args(std::vector<std::string>& args);

}  // namespace nmoe::cli
