#include "core/paths.h"

#include <cstdlib>
#include <filesystem>

#include "core/error.h"

namespace nmoe {

std::string shipped_path(const std::string& rel) {
  std::string tried;
  if (const char* home = std::getenv("NMOE_HOME"); home && *home) {
    std::string p = std::string(home) + "/" + rel;
    if (std::filesystem::exists(p)) return p;
    tried = p + " or ";
  }
  std::string p = std::string(NMOE_SOURCE_DIR) + "/" + rel;
  if (std::filesystem::exists(p)) return p;
  fail("'", rel, "' not found (looked for ", tried, p, "); set NMOE_HOME to the nmoe checkout");
}

std::string asset_path(const std::string& rel) { return shipped_path("assets/" + rel); }

}  // namespace nmoe
