// `n speedrun NAME`: ensure the data and the eval bundle, train the speedrun
// config until the validation loss reaches its target, score the model on
// CORE and append the run to the leaderboard.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "config/config.h"
#include "dist/launch.h"

namespace nmoe {

struct SpeedrunOptions {
  std::string name;                       // tiny | wiki | dense | moe | super | ultra
                                          // (empty: super on a GPU, else tiny)
  std::string data_dir;                   // holds train/ and val/ shard directories; empty: the default place
  std::string corpus_dir;                 // wiki: the WikiExtractor text files to prepare the shards from
  int64_t steps = 0;                      // 0: the config's
  std::string dtype;                      // empty: the config's
  std::vector<ConfigOverride> overrides;  // --set
  LaunchOptions launch;                   // --nproc, --devices
  std::string leaderboard = "LEADERBOARD.json";
  std::string bundle_dir;                 // empty: the shipped CORE bundle
  std::string work_dir = "runs/speedrun"; // data, checkpoints and metrics of speedruns
  std::ostream* out = nullptr;
};

struct SpeedrunResult {
  bool target_reached = false;
  bool recorded = false;   // appended to the leaderboard
  std::string why_not;     // why it was not recorded
  double core = 0;
  std::string run_id;
};

// The speedrun names and the config file of one.
const std::vector<std::string>& speedrun_names();
std::string speedrun_config_path(const std::string& name);

// Makes sure <data_dir>/train and <data_dir>/val hold shards for the config's
// tokenizer: the tiny speedrun prepares the shipped Wikipedia sample, the wiki
// speedrun the Wikipedia corpus in corpus_dir; the others download and prepare
// the canonical dataset from the hub, or explain how to supply local shards
// when that is not possible.
void ensure_speedrun_data(const std::string& name, const Config& cfg, const std::string& data_dir,
                          const std::string& corpus_dir, std::ostream* out);

SpeedrunResult run_speedrun(const SpeedrunOptions& opt);

}  // namespace nmoe
