// Training configuration: one typed struct, loaded from TOML, validated at load.
// Keys and defaults follow the reference trainer (docs/config.md lists them all).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace nmoe {

struct Config {
  // ---- run identity ----
  std::string preset = "custom";
  std::string experiment_id = "default";
  int64_t seed = 42;

  // ---- tokenizer ----
  std::string tokenizer = "o200k_harmony";  // bytes | gpt2 | o200k_base | o200k_harmony
  int64_t vocab_size = 201088;
  int64_t eos_token_id = 199999;

  // ---- model ----
  std::optional<int64_t> dim;       // required
  std::optional<int64_t> n_layers;  // required
  std::optional<int64_t> n_heads;   // required
  std::optional<int64_t> inter_dim;
  std::optional<int64_t> moe_inter_dim;  // falls back to inter_dim
  std::optional<int64_t> n_routed_experts;
  std::optional<int64_t> n_activated_experts;
  int64_t n_shared_experts = 2;
  int64_t n_dense_layers = 1;
  std::string attn = "mla";  // sdpa | mla | swa | nsa | dsa | kda
  std::string attn_local = "swa";
  int64_t attn_global_every = 1;
  int64_t attn_local_window = 128;
  int64_t q_lora_rank = 1536;
  int64_t kv_lora_rank = 512;
  int64_t qk_nope_head_dim = 128;
  int64_t qk_rope_head_dim = 64;
  int64_t v_head_dim = 128;
  int64_t max_position_embeddings = 8192;
  double rope_theta = 50000.0;
  double rope_scaling_factor = 1.0;
  double rope_ntk_alpha = 1.0;
  double rope_ntk_beta = 32.0;
  double rms_norm_eps = 1e-5;
  std::string activation = "swiglu";
  std::string dtype = "bf16";  // bf16 | fp8 | nvfp4 (GPU expert path)
  std::optional<double> fp4_embed_gain;
  std::optional<double> fp4_logits_gain;

  // ---- router ----
  double router_bias_update_rate = 1e-4;
  double aux_loss_alpha = 0.0;
  bool norm_topk_prob = true;  // accepted for compatibility; gates are always normalized
  double route_scale = 1.0;
  double routed_scaling_factor = 1.0;

  // ---- optimizer ----
  double lr_dense = 3.4e-4;
  double lr_router = 3.4e-4;
  double lr_expert = 3.4e-4;
  double weight_decay = 0.1;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.95;
  double adam_beta2_expert = 0.99;
  double adam_eps = 1e-8;
  double grad_clip = 0.0;  // global-norm clipping threshold; 0 = off
  bool use_muon = false;   // accepted only as false for now
  std::optional<std::string> expert_opt;  // auto | adamw

  // ---- schedule (WSD) ----
  int64_t warmup_steps = 500;
  double hold_tokens = 10e9;
  double decay_tokens = 40e9;
  double decay_floor = 3e-5;

  // ---- training ----
  int64_t steps = 10000;
  int64_t batch_size = 8;  // global sequences per optimizer step
  std::optional<int64_t> micro_batch_size;  // per-rank sequences per forward; default: whole local batch
  int64_t seq_len = 4096;
  int64_t log_every = 10;
  bool loss_mask_eos = true;
  std::string device = "auto";  // auto | cpu | cuda
  int64_t threads = 0;          // CPU threads; 0 = all cores
  bool recompute_attention = false;  // recompute attention in backward instead of keeping its activations
  std::string expert_grad_dtype = "fp32";  // fp32 | bf16 (GPU): storage of the routed experts' gradients

  // ---- checkpointing ----
  std::string checkpoint_dir = "/data/checkpoints";
  int64_t checkpoint_every = 1000;
  int64_t checkpoint_keep_last_n = 3;
  bool fsync = true;
  bool resume = true;

  // ---- data ----
  std::string data_root = "/data";
  std::optional<std::string> data_path;
  std::optional<std::string> mixture_toml;  // weighted mixture of shard directories (docs/data.md)
  bool validation_enabled = false;
  std::optional<std::string> validation_data_path;
  int64_t validation_every = 500;
  int64_t validation_steps = 100;
  bool validation_log_bpb = false;
  std::optional<double> target_loss;

  // ---- metrics ----
  std::string metrics_dir = "/data/metrics";
  std::string experiments_db = "/data/experiments.db";

  // ---- evaluation (run after training; see `n eval`) ----
  bool eval_enabled = false;
  std::string eval_mode = "inline";
  int64_t eval_every = 0;
  std::string eval_tasks = "core";
  std::string eval_tasks_file = "configs/eval/core.toml";
  std::string eval_bundle_dir = "";
  int64_t eval_budget_max_examples = 500;
  int64_t eval_budget_max_time_s = 300;

  // ---- derived (filled by finalize(), never read from TOML) ----
  int64_t world_size = 1;  // set by the launcher before validation

  // Effective widths.
  int64_t expert_inter_dim() const { return moe_inter_dim ? *moe_inter_dim : inter_dim.value_or(0); }
  int64_t head_dim() const { return *dim / *n_heads; }
  bool is_moe_layer(int64_t layer) const {
    return n_routed_experts.value_or(0) > 0 && layer >= n_dense_layers;
  }
  bool has_moe() const { return n_routed_experts.value_or(0) > 0 && n_dense_layers < *n_layers; }
  int64_t local_batch() const { return batch_size / world_size; }
  int64_t micro_batch() const { return micro_batch_size ? *micro_batch_size : local_batch(); }

  // Canonical JSON (sorted keys, compact, ASCII) of every key; unset optionals are null.
  std::string to_json() const;
  // SHA-256 hex of the canonical JSON of the fingerprinted keys (operational
  // keys such as log_every or checkpoint_dir are left out; see docs/config.md).
  std::string fingerprint() const;
  // Canonical JSON of the fingerprinted keys only.
  std::string fingerprint_json() const;
};

struct ConfigOverride {
  std::string key;
  std::string value;  // TOML value syntax; a bare word is taken as a string
};

// Parses "key=value" (as given to --set). Throws Error on a malformed pair.
ConfigOverride parse_override(const std::string& kv);

// Loads a TOML file, applies overrides in order, expands ${NMOE_*} in strings,
// sets world_size, and validates. Throws Error with a message that names the
// key (or line and column for TOML syntax errors) and says what to change.
Config load_config(const std::string& path, const std::vector<ConfigOverride>& overrides = {},
                   int64_t world_size = 1);
// The same, from TOML text (name is used in messages).
Config load_config_string(const std::string& toml_text, const std::string& name,
                          const std::vector<ConfigOverride>& overrides = {},
                          int64_t world_size = 1);

// A config from its canonical JSON (Config::to_json, as checkpoints store it).
Config config_from_json(const std::string& json, const std::string& name,
                        const std::vector<ConfigOverride>& overrides = {});

// Validates every key and combination; throws Error naming the key.
void validate(const Config& c);

// Keys whose values differ between two canonical JSON objects (for resume errors).
std::vector<std::string> config_diff(const std::string& json_a, const std::string& json_b);

// All valid key names, sorted.
const std::vector<std::string>& config_keys();

}  // namespace nmoe
