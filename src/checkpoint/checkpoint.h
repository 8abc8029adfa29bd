// Checkpoints: a directory step_XXXXXXXX/ under checkpoint_dir holding
//   model.safetensors      weights (fp32 master copy) and router biases
//   optimizer.safetensors  AdamW moments, named exp_avg/<param>, exp_avg_sq/<param>
//   state.json             step, tokens, optimizer step, loader cursor, RNG,
//                          config and fingerprint, SHA-256 of the two files
// written under a temporary name, fsynced and renamed, so a directory with the
// final name is always complete. checkpoint_dir/latest names the newest one.
// Layout and tensor names: docs/checkpoint.md.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "config/config.h"
#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "model/model.h"

namespace nmoe {

class Comm;

struct CheckpointState {
  int64_t step = 0;          // optimizer steps completed
  double tokens_seen = 0;    // global tokens consumed
  int64_t adam_steps = 0;
  nlohmann::json loader;  // DataLoader::state()
  std::array<uint64_t, 4> rng{};
  int64_t world_size = 1;
  std::string run_id;
  std::string config_json;       // every key
  std::string fingerprint_json;  // fingerprinted keys
  std::string fingerprint;
};

std::string checkpoint_name(int64_t step);  // "step_00000100"

// Writes a checkpoint of the model and optimizer state; keeps the newest keep_last_n.
// Returns the checkpoint directory. With several ranks (comm), every rank
// calls it: expert tensors are gathered and rank 0 writes the files.
std::string save_checkpoint(const std::string& checkpoint_dir, const CheckpointState& state, Model& model,
                            bool fsync, int64_t keep_last_n, Comm* comm = nullptr);

// Newest complete checkpoint directory under checkpoint_dir, if any.
std::optional<std::string> find_latest_checkpoint(const std::string& checkpoint_dir);

// Reads state.json and verifies the files' checksums (throws Error on corruption).
// weights_only: verify model.safetensors alone (evaluation needs no optimizer
// state, so a checkpoint whose optimizer file was removed still evaluates).
CheckpointState read_checkpoint_state(const std::string& ckpt_dir, bool weights_only = false);

// Loads weights, router biases and moments into the model after checking that
// the checkpoint's config fingerprint matches cfg (the error names every key
// that differs). The rank count may differ from the writer's.
CheckpointState load_checkpoint(const std::string& ckpt_dir, Model& model, const Config& cfg);

// Weights only (model.safetensors), e.g. for evaluation; tensor names and shapes must match.
void load_weights(const std::string& safetensors_path, Model& model);
// Writes the model's weights and buffers to one safetensors file (with
// several ranks every rank calls it and rank 0 writes).
void save_weights(const std::string& safetensors_path, Model& model, bool fsync, Comm* comm = nullptr);

}  // namespace nmoe
