#include "config/config_internal.h"

#include <algorithm>
#include <numeric>

namespace nmoe {
namespace config_detail {
namespace {

// Keys are fingerprinted unless marked OP (operational).
constexpr bool FP = true;
constexpr bool OP = false;

std::vector<KeySpec> build_key_specs() {
  std::vector<KeySpec> specs = {
      // run identity
      {"preset", &Config::preset, FP},
      {"experiment_id", &Config::experiment_id, OP},
      {"seed", &Config::seed, FP},
      // tokenizer
      {"tokenizer", &Config::tokenizer, FP},
      {"vocab_size", &Config::vocab_size, FP},
      {"eos_token_id", &Config::eos_token_id, FP},
      // model
      {"dim", &Config::dim, FP},
      {"n_layers", &Config::n_layers, FP},
      {"n_heads", &Config::n_heads, FP},
      {"inter_dim", &Config::inter_dim, FP},
      {"moe_inter_dim", &Config::moe_inter_dim, FP},
      {"n_routed_experts", &Config::n_routed_experts, FP},
      {"n_activated_experts", &Config::n_activated_experts, FP},
      {"n_shared_experts", &Config::n_shared_experts, FP},
      {"n_dense_layers", &Config::n_dense_layers, FP},
      {"attn", &Config::attn, FP},
      {"attn_local", &Config::attn_local, FP},
      {"attn_global_every", &Config::attn_global_every, FP},
      {"attn_local_window", &Config::attn_local_window, FP},
      {"q_lora_rank", &Config::q_lora_rank, FP},
      {"kv_lora_rank", &Config::kv_lora_rank, FP},
      {"qk_nope_head_dim", &Config::qk_nope_head_dim, FP},
      {"qk_rope_head_dim", &Config::qk_rope_head_dim, FP},
      {"v_head_dim", &Config::v_head_dim, FP},
      {"max_position_embeddings", &Config::max_position_embeddings, FP},
      {"rope_theta", &Config::rope_theta, FP},
      {"rope_scaling_factor", &Config::rope_scaling_factor, FP},
      {"rope_ntk_alpha", &Config::rope_ntk_alpha, FP},
      {"rope_ntk_beta", &Config::rope_ntk_beta, FP},
      {"rms_norm_eps", &Config::rms_norm_eps, FP},
      {"activation", &Config::activation, FP},
      {"dtype", &Config::dtype, FP},
      {"fp4_embed_gain", &Config::fp4_embed_gain, FP},
      {"fp4_logits_gain", &Config::fp4_logits_gain, FP},
      // router
      {"router_bias_update_rate", &Config::router_bias_update_rate, FP},
      {"aux_loss_alpha", &Config::aux_loss_alpha, FP},
      {"norm_topk_prob", &Config::norm_topk_prob, FP},
      {"route_scale", &Config::route_scale, FP},
      {"routed_scaling_factor", &Config::routed_scaling_factor, FP},
      // optimizer
      {"lr_dense", &Config::lr_dense, FP},
      {"lr_router", &Config::lr_router, FP},
      {"lr_expert", &Config::lr_expert, FP},
      {"weight_decay", &Config::weight_decay, FP},
      {"adam_beta1", &Config::adam_beta1, FP},
      {"adam_beta2", &Config::adam_beta2, FP},
      {"adam_beta2_expert", &Config::adam_beta2_expert, FP},
      {"adam_eps", &Config::adam_eps, FP},
      {"grad_clip", &Config::grad_clip, FP},
      {"use_muon", &Config::use_muon, FP},
      {"expert_opt", &Config::expert_opt, FP},
      // schedule
      {"warmup_steps", &Config::warmup_steps, FP},
      {"hold_tokens", &Config::hold_tokens, FP},
      {"decay_tokens", &Config::decay_tokens, FP},
      {"decay_floor", &Config::decay_floor, FP},
      // training
      {"steps", &Config::steps, OP},
      {"batch_size", &Config::batch_size, FP},
      {"micro_batch_size", &Config::micro_batch_size, FP},
      {"seq_len", &Config::seq_len, FP},
      {"log_every", &Config::log_every, OP},
      {"loss_mask_eos", &Config::loss_mask_eos, FP},
      {"device", &Config::device, OP},
      {"threads", &Config::threads, OP},
      {"recompute_attention", &Config::recompute_attention, OP},
      {"expert_grad_dtype", &Config::expert_grad_dtype, FP},
      // checkpointing
      {"checkpoint_dir", &Config::checkpoint_dir, OP},
      {"checkpoint_every", &Config::checkpoint_every, OP},
      {"checkpoint_keep_last_n", &Config::checkpoint_keep_last_n, OP},
      {"fsync", &Config::fsync, OP},
      {"resume", &Config::resume, OP},
      // data
      {"data_root", &Config::data_root, OP},
      {"data_path", &Config::data_path, FP},
      {"mixture_toml", &Config::mixture_toml, FP},
      {"validation_enabled", &Config::validation_enabled, OP},
      {"validation_data_path", &Config::validation_data_path, OP},
      {"validation_every", &Config::validation_every, OP},
      {"validation_steps", &Config::validation_steps, OP},
      {"validation_log_bpb", &Config::validation_log_bpb, OP},
      {"target_loss", &Config::target_loss, OP},
      // metrics
      {"metrics_dir", &Config::metrics_dir, OP},
      {"experiments_db", &Config::experiments_db, OP},
      // evaluation
      {"eval_enabled", &Config::eval_enabled, OP},
      {"eval_mode", &Config::eval_mode, OP},
      {"eval_every", &Config::eval_every, OP},
      {"eval_tasks", &Config::eval_tasks, OP},
      {"eval_tasks_file", &Config::eval_tasks_file, OP},
      {"eval_bundle_dir", &Config::eval_bundle_dir, OP},
      {"eval_budget_max_examples", &Config::eval_budget_max_examples, OP},
      {"eval_budget_max_time_s", &Config::eval_budget_max_time_s, OP},
  };
  std::sort(specs.begin(), specs.end(),
            [](const KeySpec& a, const KeySpec& b) { return a.name < b.name; });
  return specs;
}

}  // namespace

const std::vector<KeySpec>& key_specs() {
  static const std::vector<KeySpec> specs = build_key_specs();
  return specs;
}

const KeySpec* find_key(std::string_view name) {
  const auto& specs = key_specs();
  auto it = std::lower_bound(specs.begin(), specs.end(), name,
                             [](const KeySpec& s, std::string_view n) { return s.name < n; });
  return it != specs.end() && it->name == name ? &*it : nullptr;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  // Levenshtein distance with a single rolling row.
  std::vector<size_t> row(b.size() + 1);
  std::iota(row.begin(), row.end(), size_t{0});
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t substitute = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      diagonal = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, substitute});
    }
  }
  return row[b.size()];
}

std::optional<std::string> nearest_key(std::string_view name) {
  const KeySpec* best = nullptr;
  size_t best_distance = 0;
  for (const auto& spec : key_specs()) {
    size_t d = edit_distance(name, spec.name);
    if (best == nullptr || d < best_distance) {
      best = &spec;
      best_distance = d;
    }
  }
  const size_t limit = std::max<size_t>(2, name.size() / 3);
  if (best == nullptr || best_distance > limit) return std::nullopt;
  return std::string(best->name);
}

}  // namespace config_detail

const std::vector<std::string>& config_keys() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& spec : config_detail::key_specs()) out.emplace_back(spec.name);
    return out;
  }();
  return names;
}

}  // namespace nmoe
