// validate(): every key and combination, each error naming the key and the fix.
#include <algorithm>
#include <initializer_list>
#include <string_view>

#include "config/config.h"
#include "config/config_internal.h"
#include "core/error.h"

namespace nmoe {
namespace {

template <typename... Args>
[[noreturn]] void invalid(Args&&... args) {
  fail("CONFIG: ", std::forward<Args>(args)...);
}

template <typename T>
void require_at_least(T value, T min, std::string_view key) {
  if (!(value >= min)) invalid(key, " must be >= ", min, ", got ", value, ": set ", key, " = ", min, " or more");
}

void require_positive(double value, std::string_view key) {
  if (!(value > 0)) invalid(key, " must be > 0, got ", value, ": set a positive ", key);
}

void require_positive(int64_t value, std::string_view key) {
  if (value <= 0) invalid(key, " must be > 0, got ", value, ": set a positive ", key);
}

void require_non_negative(double value, std::string_view key) {
  if (!(value >= 0)) invalid(key, " must be >= 0, got ", value, ": set ", key, " = 0 or more");
}

void require_unit_interval(double value, std::string_view key) {
  if (!(value >= 0 && value < 1)) invalid(key, " must be in [0, 1), got ", value, ": e.g. ", key, " = 0.95");
}

void require_one_of(const std::string& value, std::string_view key, std::initializer_list<std::string_view> allowed) {
  if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) return;
  std::string options;
  std::string_view nearest = *allowed.begin();
  for (std::string_view option : allowed) {
    options += options.empty() ? "" : ", ";
    options += option;
    if (config_detail::edit_distance(value, option) < config_detail::edit_distance(value, nearest)) nearest = option;
  }
  invalid(key, " must be one of {", options, "}, got \"", value, "\": e.g. ", key, " = \"", nearest, "\"");
}

void require_set(const std::optional<int64_t>& value, std::string_view key, std::string_view example) {
  if (!value) invalid(key, " is required: add a line such as `", example, "` to the config");
}

void validate_shape(const Config& c) {
  require_set(c.dim, "dim", "dim = 768");
  require_set(c.n_layers, "n_layers", "n_layers = 12");
  require_set(c.n_heads, "n_heads", "n_heads = 12");
  require_positive(*c.dim, "dim");
  require_positive(*c.n_layers, "n_layers");
  require_positive(*c.n_heads, "n_heads");
  if (*c.dim % *c.n_heads != 0) {
    invalid("dim (", *c.dim, ") must be divisible by n_heads (", *c.n_heads,
            "): choose dim as a multiple of n_heads, e.g. dim = ", std::max<int64_t>(*c.dim / *c.n_heads, 1) * *c.n_heads);
  }
  if (c.head_dim() % 2 != 0) {
    invalid("head dimension dim / n_heads = ", *c.dim, " / ", *c.n_heads, " = ", c.head_dim(),
            " must be even (RoPE rotates the two halves of each head): change dim or n_heads");
  }
}

int64_t tokenizer_vocab(const std::string& tokenizer) {
  if (tokenizer == "bytes") return 257;
  if (tokenizer == "gpt2") return 50257;
  if (tokenizer == "o200k_base") return 200019;
  return 201088;  // o200k_harmony
}

void validate_tokenizer(const Config& c) {
  require_positive(c.vocab_size, "vocab_size");
  require_one_of(c.tokenizer, "tokenizer", {"bytes", "gpt2", "o200k_base", "o200k_harmony"});
  const int64_t needed = tokenizer_vocab(c.tokenizer);
  if (c.vocab_size < needed) {
    invalid("vocab_size (", c.vocab_size, ") is smaller than tokenizer \"", c.tokenizer, "\"'s vocabulary (", needed,
            " ids): set vocab_size >= ", needed);
  }
  if (c.eos_token_id < 0 || c.eos_token_id >= c.vocab_size) {
    invalid("eos_token_id (", c.eos_token_id, ") must be in [0, vocab_size = ", c.vocab_size,
            "): use the tokenizer's end-of-text id");
  }
}

void require_width_if_set(const std::optional<int64_t>& width, std::string_view key) {
  if (width && *width <= 0) invalid(key, " must be > 0, got ", *width, ": set a positive ", key, " or remove the line");
}

void validate_moe(const Config& c) {
  const int64_t experts = *c.n_routed_experts;
  if (!c.n_activated_experts) {
    invalid("n_activated_experts is required when n_routed_experts > 0 (", experts,
            " routed experts): add e.g. n_activated_experts = ", std::min<int64_t>(experts, 6));
  }
  const int64_t k = *c.n_activated_experts;
  if (k < 1) invalid("n_activated_experts must be >= 1, got ", k, ": each token needs at least one expert");
  if (k > experts) {
    invalid("n_activated_experts (", k, ") > n_routed_experts (", experts,
            "): a token cannot use more experts than exist; lower n_activated_experts or raise n_routed_experts");
  }
  if (k > 32) invalid("n_activated_experts (", k, ") must be <= 32 (the router's top-k limit): lower it");
  if (c.expert_inter_dim() <= 0) {
    invalid("moe_inter_dim (or inter_dim, its fallback) is required for MoE layers: add e.g. moe_inter_dim = ",
            std::max<int64_t>(*c.dim / 2, 1));
  }
  if (experts % c.world_size != 0) {
    invalid("n_routed_experts (", experts, ") must be divisible by world_size (", c.world_size,
            "): experts are split evenly across ranks; use a multiple of ", c.world_size);
  }
}

void validate_layers(const Config& c) {
  if (c.n_dense_layers < 0 || c.n_dense_layers > *c.n_layers) {
    invalid("n_dense_layers (", c.n_dense_layers, ") must be in [0, n_layers = ", *c.n_layers,
            "]: it counts the leading dense layers");
  }
  require_at_least<int64_t>(c.n_shared_experts, 0, "n_shared_experts");
  if (c.n_routed_experts && *c.n_routed_experts < 0) {
    invalid("n_routed_experts must be >= 0, got ", *c.n_routed_experts, ": remove it for a dense model");
  }
  require_width_if_set(c.inter_dim, "inter_dim");
  require_width_if_set(c.moe_inter_dim, "moe_inter_dim");
  if (c.has_moe()) validate_moe(c);
  if (!c.has_moe() && !c.inter_dim) {
    invalid("inter_dim is required for a dense model (n_routed_experts is unset or 0, or n_dense_layers == n_layers): "
            "add e.g. inter_dim = ", 4 * *c.dim);
  }
  if (c.n_dense_layers > 0 && !c.inter_dim) {
    invalid("inter_dim is required: the first n_dense_layers = ", c.n_dense_layers,
            " layers are dense MLPs; add e.g. inter_dim = ", 4 * *c.dim, " or set n_dense_layers = 0");
  }
}

// Every attention the reference trainer defines; the model builder reports the
// ones nmoe does not implement yet, so they are not rejected here.
void require_attention_kind(const std::string& value, std::string_view key) {
  require_one_of(value, key, {"sdpa", "mla", "swa", "nsa", "dsa", "kda"});
}

void validate_attention(const Config& c) {
  require_attention_kind(c.attn, "attn");
  require_attention_kind(c.attn_local, "attn_local");
  require_at_least<int64_t>(c.attn_global_every, 1, "attn_global_every");
  require_positive(c.attn_local_window, "attn_local_window");
  require_at_least<int64_t>(c.q_lora_rank, 0, "q_lora_rank");
  require_positive(c.kv_lora_rank, "kv_lora_rank");
  require_at_least<int64_t>(c.qk_nope_head_dim, 0, "qk_nope_head_dim");
  require_positive(c.qk_rope_head_dim, "qk_rope_head_dim");
  if (c.qk_rope_head_dim % 2 != 0) invalid("qk_rope_head_dim (", c.qk_rope_head_dim, ") must be even for RoPE");
  require_positive(c.v_head_dim, "v_head_dim");
  require_positive(c.rope_theta, "rope_theta");
  require_at_least(c.rope_scaling_factor, 1.0, "rope_scaling_factor");
  require_positive(c.rope_ntk_alpha, "rope_ntk_alpha");
  require_positive(c.rope_ntk_beta, "rope_ntk_beta");
  require_positive(c.rms_norm_eps, "rms_norm_eps");
  require_at_least<int64_t>(c.max_position_embeddings, 1, "max_position_embeddings");
}

void validate_numerics(const Config& c) {
  require_one_of(c.activation, "activation", {"swiglu", "relu_squared", "squared_reglu"});
  require_one_of(c.dtype, "dtype", {"bf16", "fp8", "nvfp4"});
  const bool embed = c.fp4_embed_gain.has_value(), logits = c.fp4_logits_gain.has_value();
  if ((embed || logits) && c.dtype != "nvfp4") {
    invalid(embed ? "fp4_embed_gain" : "fp4_logits_gain", " is only allowed with dtype = \"nvfp4\" (dtype is \"",
            c.dtype, "\"): remove fp4_embed_gain and fp4_logits_gain, or set dtype = \"nvfp4\"");
  }
  if (embed != logits) {
    invalid("fp4_embed_gain and fp4_logits_gain must be set together: add ",
            embed ? "fp4_logits_gain (reference value 0.125)" : "fp4_embed_gain (reference value 10.667)");
  }
  if (embed) require_positive(*c.fp4_embed_gain, "fp4_embed_gain");
  if (logits) require_positive(*c.fp4_logits_gain, "fp4_logits_gain");
}

void validate_router(const Config& c) {
  require_positive(c.route_scale, "route_scale");
  require_positive(c.routed_scaling_factor, "routed_scaling_factor");
  require_non_negative(c.router_bias_update_rate, "router_bias_update_rate");
  require_non_negative(c.aux_loss_alpha, "aux_loss_alpha");
}

void validate_optimizer(const Config& c) {
  require_positive(c.lr_dense, "lr_dense");
  require_positive(c.lr_router, "lr_router");
  require_positive(c.lr_expert, "lr_expert");
  require_non_negative(c.weight_decay, "weight_decay");
  require_unit_interval(c.adam_beta1, "adam_beta1");
  require_unit_interval(c.adam_beta2, "adam_beta2");
  require_unit_interval(c.adam_beta2_expert, "adam_beta2_expert");
  require_positive(c.adam_eps, "adam_eps");
  require_non_negative(c.grad_clip, "grad_clip");
  if (c.use_muon) invalid("use_muon: Muon is not implemented in nmoe yet: set use_muon = false");
  if (c.expert_opt == "muon") invalid("expert_opt: Muon is not implemented in nmoe yet: set expert_opt = \"adamw\"");
  if (c.expert_opt) require_one_of(*c.expert_opt, "expert_opt", {"auto", "adamw"});
}

void validate_schedule(const Config& c) {
  require_at_least<int64_t>(c.warmup_steps, 0, "warmup_steps");
  require_non_negative(c.hold_tokens, "hold_tokens");
  require_non_negative(c.decay_tokens, "decay_tokens");
  require_positive(c.decay_floor, "decay_floor");
  if (c.decay_floor > c.lr_dense || c.decay_floor > c.lr_expert) {
    invalid("decay_floor (", c.decay_floor, ") must be <= lr_dense (", c.lr_dense, ") and lr_expert (", c.lr_expert,
            "): it is the absolute LR the decay ends at; lower decay_floor");
  }
}

void validate_batching(const Config& c) {
  require_at_least<int64_t>(c.steps, 1, "steps");
  require_at_least<int64_t>(c.batch_size, 1, "batch_size");
  require_at_least<int64_t>(c.seq_len, 1, "seq_len");
  if (c.batch_size % c.world_size != 0) {
    invalid("batch_size (", c.batch_size, ") must be divisible by world_size (", c.world_size,
            "): batch_size is global; use a multiple of ", c.world_size);
  }
  if (c.micro_batch_size) {
    const int64_t micro = *c.micro_batch_size;
    require_at_least<int64_t>(micro, 1, "micro_batch_size");
    if (c.local_batch() % micro != 0) {
      invalid("micro_batch_size (", micro, ") must divide the per-rank batch batch_size / world_size = ",
              c.local_batch(), ": pick a divisor of ", c.local_batch(), " or remove micro_batch_size");
    }
  }
  if (c.seq_len > c.max_position_embeddings) {
    invalid("seq_len (", c.seq_len, ") must be <= max_position_embeddings (", c.max_position_embeddings,
            "): raise max_position_embeddings or lower seq_len");
  }
}

void validate_run(const Config& c) {
  require_at_least<int64_t>(c.log_every, 1, "log_every");
  require_at_least<int64_t>(c.checkpoint_every, 1, "checkpoint_every");
  require_at_least<int64_t>(c.checkpoint_keep_last_n, 1, "checkpoint_keep_last_n");
  require_at_least<int64_t>(c.validation_every, 1, "validation_every");
  require_at_least<int64_t>(c.validation_steps, 1, "validation_steps");
  if (c.validation_enabled && (!c.validation_data_path || c.validation_data_path->empty())) {
    invalid("validation_enabled = true requires validation_data_path: set validation_data_path = \"<dir of .npy "
            "shards>\" or validation_enabled = false");
  }
  if (c.data_path && c.mixture_toml) {
    invalid("data_path and mixture_toml are both set: train on one directory (data_path) or on a mixture "
            "(mixture_toml), not both");
  }
  if (c.target_loss && !c.validation_enabled) {
    invalid("target_loss needs validation_enabled = true (training stops when the validation loss reaches it): "
            "enable validation or remove target_loss");
  }
  require_one_of(c.device, "device", {"auto", "cpu", "cuda"});
  require_one_of(c.expert_grad_dtype, "expert_grad_dtype", {"fp32", "bf16"});
  require_at_least<int64_t>(c.threads, 0, "threads");
  require_one_of(c.eval_mode, "eval_mode", {"inline", "reserved_gpu"});
  require_at_least<int64_t>(c.eval_every, 0, "eval_every");
  require_at_least<int64_t>(c.eval_budget_max_examples, 0, "eval_budget_max_examples");
  require_at_least<int64_t>(c.eval_budget_max_time_s, 0, "eval_budget_max_time_s");
}

}  // namespace

void validate(const Config& c) {
  if (c.world_size < 1) invalid("world_size must be >= 1, got ", c.world_size, " (set by the launcher)");
  validate_shape(c);
  validate_tokenizer(c);
  validate_layers(c);
  validate_attention(c);
  validate_numerics(c);
  validate_router(c);
  validate_optimizer(c);
  validate_schedule(c);
  validate_batching(c);
  validate_run(c);
}

}  // namespace nmoe
