#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"

namespace nmoe::cli {

ConfigArgs parse_config_args(const std::vector<std::string>& args) {
  ConfigArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--set") {
      if (i + 1 >= args.size()) throw UsageError("--set needs key=value");
      out.overrides.push_back(parse_override(args[++i]));
    } else if (a.rfind("--set=", 0) == 0) {
      out.overrides.push_back(parse_override(a.substr(6)));
    } else if (!a.empty() && a[0] == '-') {
      throw UsageError("unknown option '" + a + "'");
    } else if (out.path.empty()) {
      out.path = a;
    } else {
      throw UsageError("unexpected argument '" + a + "'");
    }
  }
  if (out.path.empty()) throw UsageError("missing CONFIG.toml");
  return out;
}

int cmd_config(const std::vector<std::string>& args) {
  if (args.empty()) throw UsageError("config needs a subcommand: check, show or keys");
  const std::string sub = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (sub == "keys") {
    for (const std::string& k : config_keys()) std::cout << k << "\n";
    return 0;
  }
  ConfigArgs ca = parse_config_args(rest);
  Config cfg = load_config(ca.path, ca.overrides);
  if (sub == "check") {
    std::cout << ca.path << ": ok (fingerprint " << cfg.fingerprint() << ")\n";
    return 0;
  }
  if (sub == "show") {
    std::cout << nlohmann::json::parse(cfg.to_json()).dump(2) << "\n";
    return 0;
  }
  throw UsageError("unknown config subcommand '" + sub + "'");
}

}  // namespace nmoe::cli
