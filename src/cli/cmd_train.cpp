#include <iostream>

#include "cli/commands.h"
#include "dist/dist_env.h"
#include "train/dist_setup.h"
#include "train/trainer.h"

namespace nmoe::cli {

int cmd_train(const std::vector<std::string>& args) {
  std::vector<std::string> rest = args;
  LaunchOptions launch = parse_launch_args(rest);
  if (launch.nproc > 1 || !launch.devices.empty()) {
    launch.child_args = {"train"};
    launch.child_args.insert(launch.child_args.end(), rest.begin(), rest.end());
    return launch_workers(launch);
  }
  ConfigArgs ca = parse_config_args(rest);
  // A worker of a multi-process run (started by the launcher above, torchrun,
  // mpirun or srun) learns its rank from the environment.
  const DistEnv env = dist_env_from_environment();
  Config cfg = load_config(ca.path, ca.overrides, env.world);
  share_cores_between_ranks(cfg, env);
  auto backend = make_backend(cfg);
  std::unique_ptr<DistContext> dist;
  if (env.world > 1) dist = join_run(env, cfg, *backend, model_options(cfg, *backend));
  TrainOptions opts;
  opts.out = &std::cout;
  opts.dist = dist.get();
  TrainResult r = train(cfg, *backend, opts);
  if (r.status == "failed_nan") return 3;
  if (r.status == "interrupted") return 130;
  return 0;
}

}  // namespace nmoe::cli
