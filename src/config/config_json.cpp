// Canonical JSON, fingerprint and diff.
#include <nlohmann/json.hpp>
#include <set>

#include "config/config.h"
#include "config/config_internal.h"
#include "core/error.h"
#include "core/sha256.h"

namespace nmoe {
namespace {

template <typename T>
nlohmann::json json_value(const T& value) {
  return value;
}

template <typename T>
nlohmann::json json_value(const std::optional<T>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

std::string canonical_json(const Config& c, bool fingerprinted_only) {
  nlohmann::json object = nlohmann::json::object();  // std::map-backed: keys come out sorted
  for (const auto& spec : config_detail::key_specs()) {
    if (fingerprinted_only && !spec.fingerprinted) continue;
    std::visit([&](auto member) { object[std::string(spec.name)] = json_value(c.*member); }, spec.member);
  }
  // Compact separators, ASCII only; invalid UTF-8 (only possible through an
  // expanded environment variable) is replaced rather than thrown on.
  return object.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
}

nlohmann::json parse_object(const std::string& text, std::string_view which) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) fail("CONFIG: config_diff: ", which, " is not a JSON object");
  return j;
}

}  // namespace

std::string Config::to_json() const { return canonical_json(*this, false); }

std::string Config::fingerprint_json() const { return canonical_json(*this, true); }

std::string Config::fingerprint() const { return sha256_hex(fingerprint_json()); }

std::vector<std::string> config_diff(const std::string& json_a, const std::string& json_b) {
  const nlohmann::json a = parse_object(json_a, "the first config");
  const nlohmann::json b = parse_object(json_b, "the second config");
  std::set<std::string> keys;
  for (const auto& [key, value] : a.items()) keys.insert(key);
  for (const auto& [key, value] : b.items()) keys.insert(key);
  std::vector<std::string> differing;
  for (const std::string& key : keys) {
    if (!a.contains(key) || !b.contains(key) || a.at(key) != b.at(key)) differing.push_back(key);
  }
  return differing;
}

}  // namespace nmoe

namespace nmoe {

Config config_from_json(const std::string& json, const std::string& name,
                        const std::vector<ConfigOverride>& overrides) {
  const nlohmann::json j = parse_object(json, name);
  // JSON scalars and arrays are TOML values as they are dumped; null is an unset optional.
  std::string toml;
  for (const auto& [key, value] : j.items()) {
    if (value.is_null()) continue;
    toml += key + " = " + value.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace) + "\n";
  }
  return load_config_string(toml, name, overrides);
}

}  // namespace nmoe
