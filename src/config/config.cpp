// Loading: TOML file -> typed Config, then --set overrides, then validation.
#include "config/config.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <toml++/toml.h>

#include "config/config_internal.h"
#include "core/error.h"

namespace nmoe {
namespace {

using config_detail::KeySpec;

// A short description of a TOML value for type errors: `string "768"`, `float 1.5`.
std::string describe(const toml::node& node) {
  std::ostringstream os;
  if (auto s = node.as_string()) {
    os << "string \"" << s->get() << "\"";
  } else if (auto i = node.as_integer()) {
    os << "integer " << i->get();
  } else if (auto f = node.as_floating_point()) {
    os << "float " << f->get();
  } else if (auto b = node.as_boolean()) {
    os << "boolean " << (b->get() ? "true" : "false");
  } else if (node.is_array()) {
    os << "an array";
  } else if (node.is_table()) {
    os << "a table";
  } else {
    os << "a date/time";
  }
  return os.str();
}

[[noreturn]] void type_error(std::string_view key, std::string_view expected, const toml::node& node,
                             std::string_view origin, std::string_view hint = "") {
  fail("CONFIG: key '", key, "' must be ", expected, ", got ", describe(node), " (", origin, ")", hint);
}

// Hint for a quoted number or boolean: the user most likely meant the bare value.
std::string unquote_hint(const toml::node& node, std::string_view key) {
  auto s = node.as_string();
  if (!s) return "";
  try {
    toml::table t = toml::parse(std::string(key) + " = " + s->get());
    if (t.size() == 1 && !t.get(key)->is_string()) {
      return std::string(": remove the quotes, e.g. ") + std::string(key) + " = " + s->get();
    }
  } catch (const toml::parse_error&) {
  }
  return "";
}

int64_t read_int(const toml::node& node, std::string_view key, std::string_view origin) {
  if (auto i = node.as_integer()) return i->get();
  if (auto f = node.as_floating_point()) {
    double v = f->get();
    // 2^63 is exactly representable; anything in [-2^63, 2^63) fits in int64.
    constexpr double kLimit = 9223372036854775808.0;
    if (!std::isfinite(v) || std::trunc(v) != v) {
      type_error(key, "an integer", node, origin, ": the value is not a whole number");
    }
    if (v < -kLimit || v >= kLimit) type_error(key, "an integer", node, origin, ": out of the 64-bit range");
    return static_cast<int64_t>(v);
  }
  type_error(key, "an integer", node, origin, unquote_hint(node, key));
}

double read_double(const toml::node& node, std::string_view key, std::string_view origin) {
  double v;
  if (auto i = node.as_integer()) {
    v = static_cast<double>(i->get());
  } else if (auto f = node.as_floating_point()) {
    v = f->get();
  } else {
    type_error(key, "a number", node, origin, unquote_hint(node, key));
  }
  if (!std::isfinite(v)) type_error(key, "a finite number", node, origin);
  return v;
}

bool read_bool(const toml::node& node, std::string_view key, std::string_view origin) {
  if (auto b = node.as_boolean()) return b->get();
  type_error(key, "a boolean (true or false)", node, origin, unquote_hint(node, key));
}

std::string read_string(const toml::node& node, std::string_view key, std::string_view origin) {
  if (auto s = node.as_string()) return config_detail::expand_env(s->get(), key, origin);
  std::string hint;
  if (!node.is_array() && !node.is_table()) hint = ": put the value in quotes";
  type_error(key, "a string", node, origin, hint);
}

template <typename T>
T read_value(const toml::node& node, std::string_view key, std::string_view origin);
template <>
int64_t read_value(const toml::node& n, std::string_view k, std::string_view o) { return read_int(n, k, o); }
template <>
double read_value(const toml::node& n, std::string_view k, std::string_view o) { return read_double(n, k, o); }
template <>
bool read_value(const toml::node& n, std::string_view k, std::string_view o) { return read_bool(n, k, o); }
template <>
std::string read_value(const toml::node& n, std::string_view k, std::string_view o) {
  return read_string(n, k, o);
}

template <typename T>
struct OptionalInner {
  using type = T;
};
template <typename T>
struct OptionalInner<std::optional<T>> {
  using type = T;
};

void assign(Config& c, const KeySpec& spec, const toml::node& node, std::string_view origin) {
  std::visit(
      [&](auto member) {
        using Stored = std::remove_reference_t<decltype(c.*member)>;
        using Inner = typename OptionalInner<Stored>::type;
        c.*member = read_value<Inner>(node, spec.name, origin);
      },
      spec.member);
}

bool is_string_key(const KeySpec& spec) {
  return std::holds_alternative<std::string Config::*>(spec.member) ||
         std::holds_alternative<std::optional<std::string> Config::*>(spec.member);
}

const KeySpec& lookup_key(std::string_view key, std::string_view origin) {
  if (const KeySpec* spec = config_detail::find_key(key)) return *spec;
  std::string suggestion;
  if (auto near = config_detail::nearest_key(key)) suggestion = "; did you mean '" + *near + "'?";
  else suggestion = "; see docs/config.md for the list of keys";
  fail("CONFIG: unknown key '", key, "' (", origin, ")", suggestion);
}

std::string file_origin(const std::string& name, const toml::node& node) {
  return detail::concat(name, " line ", node.source().begin.line);
}

toml::table parse_toml(const std::string& text, const std::string& name) {
  try {
    return toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    fail("CONFIG: TOML syntax error at line ", e.source().begin.line, ", column ", e.source().begin.column,
         ": ", e.description(), " (", name, ")");
  }
}

void apply_table(Config& c, const toml::table& table, const std::string& name) {
  // Report problems in file order, not in the table's (alphabetical) order.
  std::vector<std::pair<std::string_view, const toml::node*>> entries;
  for (const auto& [key, node] : table) entries.emplace_back(key.str(), &node);
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return a.second->source().begin.line < b.second->source().begin.line;
  });
  for (const auto& [key, node] : entries) {
    const std::string origin = file_origin(name, *node);
    if (node->is_table() && !config_detail::find_key(key)) {
      fail("CONFIG: '", key, "' is a table (", origin,
           "): nmoe configs are flat; write every key at the top level, without [sections] or dotted keys");
    }
    assign(c, lookup_key(key, origin), *node, origin);
  }
}

// The override's value as a TOML node: parsed TOML if it is a single valid
// value, else the raw text as a string (so `--set attn=sdpa` works).
toml::table override_value_table(const ConfigOverride& o, const KeySpec& spec) {
  constexpr std::string_view kSlot = "value";
  toml::table raw;
  raw.insert(kSlot, o.value);
  toml::table parsed;
  try {
    parsed = toml::parse(std::string(kSlot) + " = " + o.value);
  } catch (const toml::parse_error&) {
    return raw;
  }
  if (parsed.size() != 1 || !parsed.contains(kSlot)) return raw;
  // For string keys the raw text wins (`--set experiment_id=42` means "42").
  if (is_string_key(spec) && !parsed.get(kSlot)->is_string()) return raw;
  return parsed;
}

void apply_override(Config& c, const ConfigOverride& o) {
  const std::string origin = "--set " + o.key + "=" + o.value;
  const KeySpec& spec = lookup_key(o.key, origin);
  toml::table holder = override_value_table(o, spec);
  assign(c, spec, *holder.get("value"), origin);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("CONFIG: cannot read config file '", path, "': ", std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("CONFIG: error while reading config file '", path, "'");
  return text.str();
}

std::string_view trim(std::string_view s) {
  const char* space = " \t\r\n";
  size_t begin = s.find_first_not_of(space);
  if (begin == std::string_view::npos) return {};
  return s.substr(begin, s.find_last_not_of(space) - begin + 1);
}

}  // namespace

ConfigOverride parse_override(const std::string& kv) {
  size_t eq = kv.find('=');
  if (eq == std::string::npos) {
    fail("CONFIG: --set expects key=value, got '", kv, "': e.g. --set lr_dense=1e-3");
  }
  std::string key(trim(std::string_view(kv).substr(0, eq)));
  if (key.empty()) fail("CONFIG: --set '", kv, "' has an empty key: write key=value, e.g. --set steps=100");
  return ConfigOverride{key, kv.substr(eq + 1)};
}

Config load_config_string(const std::string& toml_text, const std::string& name,
                          const std::vector<ConfigOverride>& overrides, int64_t world_size) {
  const toml::table table = parse_toml(toml_text, name);
  Config c;
  apply_table(c, table, name);
  for (const ConfigOverride& o : overrides) apply_override(c, o);
  c.world_size = world_size;
  validate(c);
  return c;
}

Config load_config(const std::string& path, const std::vector<ConfigOverride>& overrides,
                   int64_t world_size) {
  return load_config_string(read_file(path), path, overrides, world_size);
}

}  // namespace nmoe
