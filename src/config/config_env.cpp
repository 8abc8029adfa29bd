// ${NMOE_*} expansion in string config values.
#include <cstdlib>

#include "config/config_internal.h"
#include "core/error.h"

namespace nmoe::config_detail {
namespace {

bool is_name_char(char ch) {
  return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
}

bool is_valid_name(std::string_view name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  for (char ch : name) {
    if (!is_name_char(ch)) return false;
  }
  return true;
}

struct Placeholder {
  std::string_view name;
  std::optional<std::string_view> fallback;  // the text after ":-"
};

Placeholder parse_placeholder(std::string_view inner, std::string_view key, std::string_view origin) {
  Placeholder p;
  size_t sep = inner.find(":-");
  p.name = inner.substr(0, sep);
  if (sep != std::string_view::npos) p.fallback = inner.substr(sep + 2);
  if (!is_valid_name(p.name)) {
    fail("CONFIG: key '", key, "' (", origin, "): malformed placeholder '${", inner,
         "}': write ${NMOE_NAME} or ${NMOE_NAME:-default}");
  }
  if (p.name.substr(0, 5) != "NMOE_") {
    fail("CONFIG: key '", key, "' (", origin, "): cannot expand variable '", p.name,
         "': only NMOE_* variables may be expanded (e.g. ${NMOE_DATA_DIR:-/data})");
  }
  return p;
}

std::string resolve(const Placeholder& p, std::string_view key, std::string_view origin) {
  const std::string name(p.name);
  const char* value = std::getenv(name.c_str());
  // As in the shell, ":-" also replaces a variable that is set but empty.
  if (value != nullptr && (*value != '\0' || !p.fallback)) return value;
  if (p.fallback) return std::string(*p.fallback);
  fail("CONFIG: key '", key, "' (", origin, "): environment variable ", name,
       " is not set: export it, or give a default with ${", name, ":-default}");
}

}  // namespace

std::string expand_env(std::string_view text, std::string_view key, std::string_view origin) {
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t open = text.find("${", pos);
    if (open == std::string_view::npos) {
      out.append(text.substr(pos));
      break;
    }
    out.append(text.substr(pos, open - pos));
    size_t close = text.find('}', open + 2);
    if (close == std::string_view::npos) {
      fail("CONFIG: key '", key, "' (", origin, "): unterminated '${' in \"", text,
           "\": close the placeholder with '}'");
    }
    Placeholder p = parse_placeholder(text.substr(open + 2, close - open - 2), key, origin);
    out.append(resolve(p, key, origin));
    pos = close + 1;
  }
  return out;
}

}  // namespace nmoe::config_detail
