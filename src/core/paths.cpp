#include "core/paths.h"

#include <cstdlib>
#include <filesystem>

#include "core/error.h"

namespace nmoe {

std::string asset_path(const std::string& rel) {
  std::string tried;
  if (const char* home = std::getenv("NMOE_HOME"); home && *home) {
    std::string p = std::string(home) + "/assets/" + rel;
    if (std::filesystem::exists(p)) return p;
    tried = p + " or ";
  }
  std::string p = std::string(NMOE_SOURCE_DIR) + "/assets/" + rel;
  if (std::filesystem::exists(p)) return p;
  fail("asset '", rel, "' not found (looked for ", tried, p, "); set NMOE_HOME to the nmoe checkout");
}

}  // namespace nmoe
