// `n eval core --checkpoint DIR`: the CORE suite on a saved checkpoint.
#include <cmath>
#include <iostream>

#include "cli/commands.h"
#include "eval/checkpoint_eval.h"

namespace nmoe::cli {

namespace {

double parse_number(const std::string& flag, const std::string& v) {
  size_t used = 0;
  double x = 0;
  try {
    x = std::stod(v, &used);
  } catch (...) {
    used = 0;
  }
  if (used != v.size() || !std::isfinite(x) || x < 0) throw UsageError(flag + " needs a non-negative number, got '" + v + "'");
  return x;
}

}  // namespace

int cmd_eval(const std::vector<std::string>& args) {
  if (args.empty() || args[0] != "core")
    throw UsageError("usage: n eval core --checkpoint DIR [--max-examples N] [--max-time-s S] [--tasks a,b] "
                     "[--bundle DIR] [--batch N] [--db PATH] [--set key=value]");
  std::string checkpoint;
  CheckpointEvalOptions o;
  o.out = &std::cout;
  o.core.out = &std::cout;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw UsageError(a + " needs a value");
      return args[++i];
    };
    if (a == "--checkpoint") checkpoint = value();
    else if (a == "--max-examples") o.core.max_examples = static_cast<int64_t>(parse_number(a, value()));
    else if (a == "--max-time-s") o.core.max_time_s = parse_number(a, value());
    else if (a == "--tasks") o.core.tasks = split_comma_list(a, value(), "task labels, like arc_easy,copa");
    else if (a == "--bundle") o.bundle_dir = value();
    else if (a == "--batch") o.batch = static_cast<int64_t>(parse_number(a, value()));
    else if (a == "--db") o.db_path = value();
    else if (a == "--no-db") o.write_db = false;
    else if (a == "--set") o.overrides.push_back(parse_override(value()));
    else throw UsageError("unknown option '" + a + "'");
  }
  if (checkpoint.empty()) throw UsageError("--checkpoint DIR is required (a step directory or a checkpoint_dir)");
  CheckpointEval ev = eval_checkpoint_core(checkpoint, o);
  std::cout << "\n" << format_core_table(ev.result);
  return 0;
}

}  // namespace nmoe::cli
