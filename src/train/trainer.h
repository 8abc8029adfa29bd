// The training loop of `n train`: data, forward/backward with gradient
// accumulation, AdamW, validation, target-loss stop, checkpoints with
// deterministic resume, console progress and the metrics database.
#pragma once

#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "model/model.h"
#include "ops/backend.h"

namespace nmoe {

struct DistContext;

struct TrainOptions {
  std::ostream* out = nullptr;  // progress output (nullptr: silent); rank 0 only
  DistContext* dist = nullptr;  // several ranks (train/dist_setup.h); null: one process
  std::string run_id;           // empty: $NMOE_RUN or run_<unix time>_<pid>
  bool metrics = true;          // write the metrics database
};

struct TrainResult {
  std::string run_id;
  std::string status;  // completed | completed_target | failed_nan | interrupted
  int64_t start_step = 0;  // first step run by this call (after resume)
  int64_t steps_done = 0;  // optimizer steps completed in total
  double tokens_seen = 0;
  std::vector<double> losses;  // training loss of each step run by this call
  std::optional<double> val_loss;
  bool target_reached = false;
  // When the validation loss first reached target_loss (the speedrun record).
  int64_t step_to_target = 0;
  double tokens_to_target = 0;
  double train_seconds_to_target = 0;  // wall time since the loop started, excluding validation
  double train_seconds = 0;  // wall time excluding validation
  std::string last_checkpoint;
};

// Runs training to the end (steps, target loss, NaN, or Ctrl-C). Throws Error on
// bad configs or data; a non-finite loss returns status failed_nan.
TrainResult train(const Config& cfg, Backend& backend, const TrainOptions& opts = {});

// The backend a config asks for (device = auto | cpu | cuda).
std::unique_ptr<Backend> make_backend(const Config& cfg);

// Model options for a config on a backend: micro-batch shape, dtypes, and a
// cross-entropy chunk that suits the device (large on a GPU, small on a CPU).
ModelOptions model_options(const Config& cfg, const Backend& backend);

}  // namespace nmoe
