#include <iostream>

#include "cli/commands.h"
#include "train/trainer.h"

namespace nmoe::cli {

int cmd_train(const std::vector<std::string>& args) {
  ConfigArgs ca = parse_config_args(args);
  Config cfg = load_config(ca.path, ca.overrides);
  auto backend = make_backend(cfg);
  TrainOptions opts;
  opts.out = &std::cout;
  TrainResult r = train(cfg, *backend, opts);
  if (r.status == "failed_nan") return 3;
  if (r.status == "interrupted") return 130;
  return 0;
}

}  // namespace nmoe::cli
