// Internal to src/config: the table of every config key (name, member, fingerprint
// membership) shared by the loader, the JSON writer and config_keys(), and the
// ${NMOE_*} expansion used by the loader.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config/config.h"

namespace nmoe::config_detail {

// A pointer to the Config member that stores the key's value.
using Member = std::variant<int64_t Config::*, double Config::*, bool Config::*, std::string Config::*,
                            std::optional<int64_t> Config::*, std::optional<double> Config::*,
                            std::optional<std::string> Config::*>;

struct KeySpec {
  std::string_view name;
  Member member;
  // False for operational keys that do not change the training math (logging,
  // checkpoint paths, run length, eval...): they are left out of the fingerprint.
  bool fingerprinted;
};

// Every key, sorted by name.
const std::vector<KeySpec>& key_specs();

// nullptr when `name` is not a key.
const KeySpec* find_key(std::string_view name);

// The key nearest to `name` by edit distance, if it is close enough to be a
// plausible typo (distance <= max(2, len/3)).
std::optional<std::string> nearest_key(std::string_view name);

size_t edit_distance(std::string_view a, std::string_view b);

// Expands ${NMOE_NAME} and ${NMOE_NAME:-default} in a string value of `key`.
// `origin` says where the value came from ("configs/x.toml line 3", "--set k=v")
// and is quoted in errors.
std::string expand_env(std::string_view text, std::string_view key, std::string_view origin);

}  // namespace nmoe::config_detail
