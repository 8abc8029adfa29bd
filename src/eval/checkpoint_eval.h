// CORE eval of a saved checkpoint: rebuilds the model from the config stored
// in the checkpoint, loads its weights, scores the bundle and records the
// results in the metrics database under the checkpoint's run and step.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "config/config.h"
#include "eval/core_eval.h"

namespace nmoe {

struct CheckpointEvalOptions {
  CoreEvalOptions core;
  std::string bundle_dir;                  // empty: the shipped bundle
  std::vector<ConfigOverride> overrides;   // applied to the stored config (e.g. device)
  int64_t batch = 0;                       // sequences per forward; 0: the config's micro-batch
  std::string db_path;                     // empty: the config's experiments_db
  bool write_db = true;
  std::ostream* out = nullptr;
};

struct CheckpointEval {
  CoreEvalResult result;
  std::string checkpoint;  // the step directory evaluated
  std::string run_id;
  int64_t step = 0;
  std::string hardware;    // "CPU" or the GPU's name
};

// checkpoint: a step directory (holding state.json) or a checkpoint_dir (its newest step).
CheckpointEval eval_checkpoint_core(const std::string& checkpoint, const CheckpointEvalOptions& opt);

}  // namespace nmoe
