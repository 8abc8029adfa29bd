// Subcommands of `n`. Each returns the process exit code.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "config/config.h"

namespace nmoe::cli {

// A malformed command line (exit code 2, usage printed).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int cmd_train(const std::vector<std::string>& args);
int cmd_config(const std::vector<std::string>& args);
int cmd_data(const std::vector<std::string>& args);
int cmd_bench(const std::vector<std::string>& args);

// Parses "CONFIG.toml [--set k=v]..." into a path and overrides.
struct ConfigArgs {
  std::string path;
  std::vector<ConfigOverride> overrides;
};
ConfigArgs parse_config_args(const std::vector<std::string>& args);

}  // namespace nmoe::cli
