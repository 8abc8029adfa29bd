// `n speedrun [NAME]` and `n speedrun --leaderboard`.
#include <iostream>

#include "cli/commands.h"
#include "speedrun/leaderboard.h"
#include "speedrun/speedrun.h"

namespace nmoe::cli {

int cmd_speedrun(const std::vector<std::string>& args_in) {
  std::vector<std::string> args = args_in;
  SpeedrunOptions o;
  o.launch = parse_launch_args(args);
  o.out = &std::cout;
  bool show_board = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw UsageError(a + " needs a value");
      return args[++i];
    };
    if (a == "--leaderboard" || a == "-l") show_board = true;
    else if (a == "--leaderboard-file") o.leaderboard = value();
    else if (a == "--data") o.data_dir = value();
    else if (a == "--corpus") o.corpus_dir = value();
    else if (a == "--steps") {
      const std::string v = value();
      try {
        o.steps = std::stoll(v);
      } catch (...) {
        o.steps = -1;
      }
      if (o.steps <= 0) throw UsageError("--steps needs a positive integer, got '" + v + "'");
    } else if (a == "--dtype") o.dtype = value();
    else if (a == "--set") o.overrides.push_back(parse_override(value()));
    else if (a == "--bundle") o.bundle_dir = value();
    else if (a == "--work-dir") o.work_dir = value();
    else if (!a.empty() && a[0] == '-') throw UsageError("unknown option '" + a + "'");
    else if (o.name.empty()) o.name = a;
    else throw UsageError("one speedrun name, got '" + o.name + "' and '" + a + "'");
  }
  if (show_board) {
    std::cout << format_leaderboard(o.leaderboard);
    return 0;
  }
  SpeedrunResult r = run_speedrun(o);
  if (!r.recorded) {
    std::cout << "speedrun: not added to " << o.leaderboard << ": " << r.why_not << "\n";
    return 1;
  }
  return 0;
}

}  // namespace nmoe::cli
