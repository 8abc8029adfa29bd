#include "config/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cctype>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "core/error.h"
#include "test_util.h"

namespace {

using nmoe::Config;
using nmoe::ConfigOverride;
using testing::HasSubstr;
using testing::Not;

// A small valid MoE config: 2 layers (1 dense, 1 MoE), byte tokenizer.
constexpr const char* kBase = R"(dim = 64
n_layers = 2
n_heads = 4
inter_dim = 128
n_routed_experts = 4
n_activated_experts = 2
moe_inter_dim = 32
tokenizer = "bytes"
vocab_size = 260
eos_token_id = 256
batch_size = 8
seq_len = 128
)";

std::vector<ConfigOverride> to_overrides(const std::vector<std::string>& sets) {
  std::vector<ConfigOverride> out;
  for (const auto& s : sets) out.push_back(nmoe::parse_override(s));
  return out;
}

Config load(const std::string& text, const std::vector<std::string>& sets = {}, int64_t world_size = 1) {
  return nmoe::load_config_string(text, "test.toml", to_overrides(sets), world_size);
}

// The message of the nmoe::Error that loading throws ("" plus a test failure if none).
std::string error_of(const std::string& text, const std::vector<std::string>& sets = {}, int64_t world_size = 1) {
  try {
    load(text, sets, world_size);
  } catch (const nmoe::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected nmoe::Error for config:\n" << text;
  return "";
}

// kBase without the lines that set `keys`.
std::string base_without(std::initializer_list<std::string> keys) {
  std::string out;
  std::istringstream in(kBase);
  for (std::string line; std::getline(in, line);) {
    bool drop = false;
    for (const auto& key : keys) drop = drop || line.rfind(key + " =", 0) == 0;
    if (!drop) out += line + "\n";
  }
  return out;
}

using nmoe::test::ScopedEnv;

std::string source_path(const std::string& relative) { return std::string(NMOE_SOURCE_DIR) + "/" + relative; }

// ---------------------------------------------------------------- defaults

TEST(ConfigDefaults, MatchTheReferenceTrainer) {
  Config c;
  EXPECT_EQ(c.preset, "custom");
  EXPECT_EQ(c.tokenizer, "o200k_harmony");
  EXPECT_EQ(c.vocab_size, 201088);
  EXPECT_EQ(c.eos_token_id, 199999);
  EXPECT_FALSE(c.dim.has_value());
  EXPECT_FALSE(c.n_routed_experts.has_value());
  EXPECT_EQ(c.n_shared_experts, 2);
  EXPECT_EQ(c.n_dense_layers, 1);
  EXPECT_EQ(c.attn, "mla");
  EXPECT_DOUBLE_EQ(c.rope_theta, 50000.0);
  EXPECT_DOUBLE_EQ(c.lr_dense, 3.4e-4);
  EXPECT_DOUBLE_EQ(c.hold_tokens, 10e9);
  EXPECT_DOUBLE_EQ(c.decay_floor, 3e-5);
  EXPECT_EQ(c.batch_size, 8);
  EXPECT_EQ(c.seq_len, 4096);
  EXPECT_TRUE(c.resume);
  EXPECT_EQ(c.world_size, 1);
}

TEST(ConfigDefaults, MinimalFileKeepsDefaultsAndSetsWorldSize) {
  Config c = load(kBase, {}, 2);
  EXPECT_EQ(*c.dim, 64);
  EXPECT_EQ(c.world_size, 2);
  EXPECT_EQ(c.local_batch(), 4);
  EXPECT_EQ(c.steps, 10000);
  EXPECT_TRUE(c.has_moe());
  EXPECT_EQ(c.expert_inter_dim(), 32);
}

TEST(ConfigKeys, SortedUniqueAndComplete) {
  const auto& keys = nmoe::config_keys();
  EXPECT_EQ(keys.size(), 88u);
  EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
  EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()).size(), keys.size());
  EXPECT_THAT(keys, testing::Contains("lr_dense"));
  EXPECT_THAT(keys, testing::Contains("mixture_toml"));
  EXPECT_THAT(keys, Not(testing::Contains("world_size")));
}

// ---------------------------------------------------------------- shipped configs

class ShippedConfig : public testing::TestWithParam<const char*> {};

TEST_P(ShippedConfig, LoadsAndValidates) {
  const std::string path = source_path(GetParam());
  ASSERT_TRUE(std::filesystem::exists(path)) << path;
  Config c;
  EXPECT_NO_THROW(c = nmoe::load_config(path)) << path;
  EXPECT_EQ(c.fingerprint().size(), 64u);
}

TEST_P(ShippedConfig, LoadsOnEightRanks) {
  EXPECT_NO_THROW(nmoe::load_config(source_path(GetParam()), {}, 8));
}

INSTANTIATE_TEST_SUITE_P(All, ShippedConfig,
                         testing::Values("configs/tiny.toml", "configs/moonlet.toml", "configs/moonlight.toml",
                                         "configs/speedrun/dense.toml", "configs/speedrun/moe.toml",
                                         "configs/speedrun/super.toml", "configs/speedrun/ultra.toml"));

TEST(ShippedConfigValues, SuperMatchesReference) {
  ScopedEnv data_dir("NMOE_DATA_DIR", nullptr);
  Config c = nmoe::load_config(source_path("configs/speedrun/super.toml"));
  EXPECT_EQ(c.preset, "speedrun_super");
  EXPECT_EQ(*c.n_routed_experts, 256);
  EXPECT_EQ(*c.n_activated_experts, 7);
  EXPECT_EQ(c.n_dense_layers, 0);
  EXPECT_DOUBLE_EQ(c.hold_tokens, 13505904640.0);
  EXPECT_DOUBLE_EQ(c.decay_tokens, 3690987520.0);
  EXPECT_EQ(c.dtype, "bf16");
  EXPECT_FALSE(c.fp4_embed_gain.has_value());
  EXPECT_EQ(*c.data_path, "/data/speedrun/train");
  EXPECT_DOUBLE_EQ(*c.target_loss, 3.28);
}

TEST(ShippedConfigValues, DataDirComesFromEnvironment) {
  ScopedEnv data_dir("NMOE_DATA_DIR", "/mnt/fast");
  Config c = nmoe::load_config(source_path("configs/speedrun/moe.toml"));
  EXPECT_EQ(*c.data_path, "/mnt/fast/speedrun/train");
  EXPECT_EQ(*c.validation_data_path, "/mnt/fast/speedrun/val");
  EXPECT_DOUBLE_EQ(c.hold_tokens, 1e14);
}

TEST(ShippedConfigValues, DenseHasNoMoeLayers) {
  Config c = nmoe::load_config(source_path("configs/speedrun/dense.toml"));
  EXPECT_FALSE(c.has_moe());
  EXPECT_EQ(c.n_dense_layers, 12);
}

TEST(ShippedConfigValues, TinyRunsOnCpu) {
  Config c = nmoe::load_config(source_path("configs/tiny.toml"));
  EXPECT_EQ(c.device, "cpu");
  EXPECT_EQ(c.vocab_size, 264);
  // The schedule spans exactly the run: hold + decay = steps * batch * seq_len.
  EXPECT_DOUBLE_EQ(c.hold_tokens + c.decay_tokens, double(c.steps * c.batch_size * c.seq_len));
}

TEST(ShippedConfigValues, MoonlightIsMoonletWithMoreLayers) {
  Config let = nmoe::load_config(source_path("configs/moonlet.toml"));
  Config light = nmoe::load_config(source_path("configs/moonlight.toml"));
  EXPECT_EQ(*light.n_layers, 27);
  EXPECT_EQ(light.batch_size, 64);
  EXPECT_THAT(nmoe::config_diff(let.to_json(), light.to_json()),
              testing::ElementsAre("batch_size", "experiment_id", "n_layers", "preset"));
}

TEST(ConfigFile, MissingFileNamesThePath) {
  const std::string path = "/nonexistent/dir/nmoe_missing.toml";
  try {
    nmoe::load_config(path);
    FAIL() << "expected nmoe::Error";
  } catch (const nmoe::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path));
  }
}

TEST(ConfigFile, ErrorsNameTheFile) {
  const auto path = std::filesystem::temp_directory_path() / ("nmoe_cfg_" + std::to_string(::getpid()) + ".toml");
  { std::ofstream(path) << kBase << "lr_dens = 1e-3\n"; }
  try {
    nmoe::load_config(path.string());
    ADD_FAILURE() << "expected nmoe::Error";
  } catch (const nmoe::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path.string() + " line 13"));
  }
  std::filesystem::remove(path);
}

// ---------------------------------------------------------------- syntax, keys, types

TEST(ConfigSyntax, MalformedTomlReportsLineAndColumn) {
  std::string msg = error_of("dim = 64\nn_layers = = 2\n");
  EXPECT_THAT(msg, HasSubstr("TOML syntax error at line 2, column"));
  EXPECT_THAT(msg, HasSubstr("test.toml"));
}

TEST(ConfigSyntax, DuplicateKeyIsASyntaxError) {
  EXPECT_THAT(error_of(std::string(kBase) + "dim = 32\n"), HasSubstr("line 13"));
}

TEST(ConfigSyntax, UnknownKeySuggestsNearest) {
  std::string msg = error_of(std::string(kBase) + "lr_dens = 1e-3\n");
  EXPECT_THAT(msg, HasSubstr("unknown key 'lr_dens' (test.toml line 13); did you mean 'lr_dense'?"));
}

TEST(ConfigSyntax, UnknownKeyFarFromAnyKeyHasNoSuggestion) {
  std::string msg = error_of(std::string(kBase) + "banana_split = 1\n");
  EXPECT_THAT(msg, HasSubstr("unknown key 'banana_split'"));
  EXPECT_THAT(msg, Not(HasSubstr("did you mean")));
}

TEST(ConfigSyntax, UnknownKeysReportedInFileOrder) {
  // "zz_first" sorts after "aa_second" but comes first in the file.
  EXPECT_THAT(error_of("zz_first = 1\naa_second = 2\n"), HasSubstr("'zz_first'"));
}

TEST(ConfigSyntax, TablesAreRejected) {
  std::string msg = error_of(std::string(kBase) + "[model]\nwidth = 5\n");
  EXPECT_THAT(msg, HasSubstr("'model' is a table"));
  EXPECT_THAT(msg, HasSubstr("flat"));
}

TEST(ConfigTypes, StringForIntegerKey) {
  std::string msg = error_of(base_without({"dim"}) + "dim = \"768\"\n");
  EXPECT_THAT(msg, HasSubstr("key 'dim' must be an integer, got string \"768\""));
  EXPECT_THAT(msg, HasSubstr("remove the quotes"));
}

TEST(ConfigTypes, IntegralFloatAcceptedForIntegerKey) {
  EXPECT_EQ(load(std::string(kBase) + "steps = 1e4\n").steps, 10000);
  EXPECT_EQ(load(std::string(kBase) + "hold_tokens = 1e14\n").hold_tokens, 1e14);
}

TEST(ConfigTypes, NonIntegralFloatRejectedForIntegerKey) {
  std::string msg = error_of(std::string(kBase) + "steps = 12.5\n");
  EXPECT_THAT(msg, HasSubstr("key 'steps' must be an integer"));
  EXPECT_THAT(msg, HasSubstr("not a whole number"));
  EXPECT_THAT(error_of(std::string(kBase) + "steps = inf\n"), HasSubstr("key 'steps' must be an integer"));
  EXPECT_THAT(error_of(std::string(kBase) + "steps = 1e30\n"), HasSubstr("64-bit"));
}

TEST(ConfigTypes, IntegerAcceptedForDoubleKey) {
  Config c = load(std::string(kBase) + "rope_theta = 10000\n");
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
}

TEST(ConfigTypes, WrongTypesForOtherKinds) {
  EXPECT_THAT(error_of(std::string(kBase) + "lr_dense = \"fast\"\n"), HasSubstr("key 'lr_dense' must be a number"));
  EXPECT_THAT(error_of(std::string(kBase) + "resume = 1\n"), HasSubstr("key 'resume' must be a boolean"));
  EXPECT_THAT(error_of(std::string(kBase) + "attn = 5\n"), HasSubstr("key 'attn' must be a string, got integer 5"));
  EXPECT_THAT(error_of(std::string(kBase) + "lr_dense = nan\n"), HasSubstr("key 'lr_dense' must be a finite number"));
  EXPECT_THAT(error_of(std::string(kBase) + "seed = [1, 2]\n"), HasSubstr("key 'seed' must be an integer, got an array"));
}

TEST(ConfigTypes, OptionalKeysTakeTheInnerType) {
  Config c = load(std::string(kBase) + "micro_batch_size = 2\ndata_path = \"/d\"\n");
  EXPECT_EQ(c.micro_batch_size, 2);
  EXPECT_EQ(c.data_path, "/d");
  EXPECT_THAT(error_of(std::string(kBase) + "target_loss = true\n"), HasSubstr("key 'target_loss' must be a number"));
}

// ---------------------------------------------------------------- overrides

TEST(ConfigOverrides, ParseSplitsAtFirstEquals) {
  ConfigOverride o = nmoe::parse_override("data_path=/a=b");
  EXPECT_EQ(o.key, "data_path");
  EXPECT_EQ(o.value, "/a=b");
  EXPECT_THROW(nmoe::parse_override("steps"), nmoe::Error);
  EXPECT_THAT([] { nmoe::parse_override("=5"); }, testing::Throws<nmoe::Error>());
}

TEST(ConfigOverrides, ValuesOfEveryKind) {
  Config c = load(kBase, {"steps=7", "lr_dense=1e-3", "resume=false", "attn=sdpa", "experiment_id=\"my run\"",
                          "target_loss=3", "validation_enabled=true", "validation_data_path=/val"});
  EXPECT_EQ(c.steps, 7);
  EXPECT_DOUBLE_EQ(c.lr_dense, 1e-3);
  EXPECT_FALSE(c.resume);
  EXPECT_EQ(c.attn, "sdpa");
  EXPECT_EQ(c.experiment_id, "my run");
  EXPECT_DOUBLE_EQ(*c.target_loss, 3.0);
  EXPECT_EQ(c.validation_data_path, "/val");
}

TEST(ConfigOverrides, NumberLikeTextForStringKeyStaysText) {
  EXPECT_EQ(load(kBase, {"experiment_id=42"}).experiment_id, "42");
}

TEST(ConfigOverrides, ApplyAfterFileInOrder) {
  Config c = load(std::string(kBase) + "steps = 3\n", {"steps=5", "steps=9"});
  EXPECT_EQ(c.steps, 9);
}

TEST(ConfigOverrides, UnknownKeyNamesSetAndSuggests) {
  std::string msg = error_of(kBase, {"lr_dens=1e-3"});
  EXPECT_THAT(msg, HasSubstr("unknown key 'lr_dens'"));
  EXPECT_THAT(msg, HasSubstr("--set lr_dens=1e-3"));
  EXPECT_THAT(msg, HasSubstr("did you mean 'lr_dense'?"));
}

TEST(ConfigOverrides, WrongTypeNamesSet) {
  std::string msg = error_of(kBase, {"dim=wide"});
  EXPECT_THAT(msg, HasSubstr("key 'dim' must be an integer, got string \"wide\""));
  EXPECT_THAT(msg, HasSubstr("--set dim=wide"));
  EXPECT_THAT(error_of(kBase, {"resume=yes"}), HasSubstr("key 'resume' must be a boolean"));
}

TEST(ConfigOverrides, OverridesAreValidated) {
  EXPECT_THAT(error_of(kBase, {"dim=66"}), HasSubstr("n_heads"));
}

// ---------------------------------------------------------------- environment expansion

class ConfigEnv : public testing::Test {
 protected:
  void TearDown() override {
    unsetenv("NMOE_TEST_ROOT");
    unsetenv("NMOE_TEST_EMPTY");
  }
};

TEST_F(ConfigEnv, ExpandsSetVariable) {
  setenv("NMOE_TEST_ROOT", "/scratch", 1);
  Config c = load(std::string(kBase) + "data_path = \"${NMOE_TEST_ROOT}/train\"\n");
  EXPECT_EQ(*c.data_path, "/scratch/train");
}

TEST_F(ConfigEnv, DefaultUsedWhenUnsetOrEmpty) {
  unsetenv("NMOE_TEST_ROOT");
  EXPECT_EQ(*load(std::string(kBase) + "data_path = \"${NMOE_TEST_ROOT:-/data}/x\"\n").data_path, "/data/x");
  setenv("NMOE_TEST_EMPTY", "", 1);
  EXPECT_EQ(*load(std::string(kBase) + "data_path = \"${NMOE_TEST_EMPTY:-/d}\"\n").data_path, "/d");
  setenv("NMOE_TEST_ROOT", "/set", 1);
  EXPECT_EQ(*load(std::string(kBase) + "data_path = \"${NMOE_TEST_ROOT:-/data}/x\"\n").data_path, "/set/x");
}

TEST_F(ConfigEnv, SeveralPlaceholdersAndPlainDollars) {
  setenv("NMOE_TEST_ROOT", "r", 1);
  Config c = load(std::string(kBase) + "metrics_dir = \"$HOME/${NMOE_TEST_ROOT}-${NMOE_TEST_ROOT}\"\n");
  EXPECT_EQ(c.metrics_dir, "$HOME/r-r");
}

TEST_F(ConfigEnv, UnsetWithoutDefaultNamesKeyAndVariable) {
  unsetenv("NMOE_TEST_ROOT");
  std::string msg = error_of(std::string(kBase) + "data_path = \"${NMOE_TEST_ROOT}/train\"\n");
  EXPECT_THAT(msg, HasSubstr("data_path"));
  EXPECT_THAT(msg, HasSubstr("NMOE_TEST_ROOT is not set"));
}

TEST_F(ConfigEnv, NonNmoeVariableRejected) {
  std::string msg = error_of(std::string(kBase) + "checkpoint_dir = \"${HOME}/ckpt\"\n");
  EXPECT_THAT(msg, HasSubstr("checkpoint_dir"));
  EXPECT_THAT(msg, HasSubstr("HOME"));
  EXPECT_THAT(msg, HasSubstr("only NMOE_* variables may be expanded"));
}

TEST_F(ConfigEnv, UnterminatedAndMalformedPlaceholders) {
  EXPECT_THAT(error_of(std::string(kBase) + "data_path = \"${NMOE_TEST_ROOT/x\"\n"), HasSubstr("unterminated"));
  EXPECT_THAT(error_of(std::string(kBase) + "data_path = \"${}\"\n"), HasSubstr("malformed"));
}

TEST_F(ConfigEnv, AppliesToOverrides) {
  setenv("NMOE_TEST_ROOT", "/o", 1);
  EXPECT_EQ(*load(kBase, {"data_path=${NMOE_TEST_ROOT}/t"}).data_path, "/o/t");
  EXPECT_THAT(error_of(kBase, {"data_path=${USER}"}), HasSubstr("only NMOE_* variables"));
}

// ---------------------------------------------------------------- validation

struct ValidationCase {
  std::vector<std::string> sets;
  std::vector<std::string> expected;  // substrings of the error message
  int64_t world_size = 1;
};

class ConfigValidation : public testing::TestWithParam<ValidationCase> {};

TEST_P(ConfigValidation, RejectsWithMessageNamingTheKey) {
  const ValidationCase& vc = GetParam();
  const std::string msg = error_of(kBase, vc.sets, vc.world_size);
  for (const auto& part : vc.expected) EXPECT_THAT(msg, HasSubstr(part));
}

std::vector<ValidationCase> validation_cases() {
  return {
      {{"dim=770", "inter_dim=128"}, {"dim (770) must be divisible by n_heads (4)"}},
      {{"dim=0"}, {"dim must be > 0"}},
      {{"n_heads=-4"}, {"n_heads must be > 0"}},
      {{"n_layers=0"}, {"n_layers must be > 0"}},
      {{"dim=12", "n_heads=4"}, {"must be even", "dim", "n_heads"}},
      {{"vocab_size=0"}, {"vocab_size must be > 0"}},
      {{"eos_token_id=260"}, {"eos_token_id (260)", "vocab_size"}},
      {{"eos_token_id=-1"}, {"eos_token_id"}},
      {{"tokenizer=gtp2"}, {"tokenizer must be one of", "\"gtp2\"", "tokenizer = \"gpt2\""}},
      {{"tokenizer=gpt2"}, {"vocab_size (260)", "50257"}},
      {{"n_dense_layers=3"}, {"n_dense_layers (3)", "n_layers = 2"}},
      {{"n_dense_layers=-1"}, {"n_dense_layers"}},
      {{"n_shared_experts=-1"}, {"n_shared_experts"}},
      {{"n_routed_experts=-2"}, {"n_routed_experts"}},
      {{"n_activated_experts=9", "n_routed_experts=8"}, {"n_activated_experts (9) > n_routed_experts (8)"}},
      {{"n_activated_experts=0"}, {"n_activated_experts must be >= 1"}},
      {{"n_routed_experts=64", "n_activated_experts=33"}, {"n_activated_experts (33)", "32"}},
      {{"moe_inter_dim=-1"}, {"moe_inter_dim"}},
      {{"n_routed_experts=6"}, {"n_routed_experts (6) must be divisible by world_size (4)"}, 4},
      {{"batch_size=6"}, {"batch_size (6) must be divisible by world_size (4)"}, 4},
      {{"attn=flash"}, {"attn must be one of"}},
      {{"attn_local=dense"}, {"attn_local must be one of"}},
      {{"attn_global_every=0"}, {"attn_global_every"}},
      {{"attn_local_window=0"}, {"attn_local_window"}},
      {{"rope_theta=0"}, {"rope_theta"}},
      {{"rms_norm_eps=0"}, {"rms_norm_eps"}},
      {{"rope_scaling_factor=0.5"}, {"rope_scaling_factor"}},
      {{"max_position_embeddings=0"}, {"max_position_embeddings"}},
      {{"seq_len=9000"}, {"seq_len (9000)", "max_position_embeddings (8192)"}},
      {{"activation=gelu"}, {"activation must be one of"}},
      {{"dtype=fp16"}, {"dtype must be one of"}},
      {{"fp4_embed_gain=10.667", "fp4_logits_gain=0.125"}, {"fp4_embed_gain", "dtype = \"nvfp4\""}},
      {{"dtype=nvfp4", "fp4_embed_gain=10.667"}, {"fp4_embed_gain and fp4_logits_gain must be set together"}},
      {{"route_scale=0"}, {"route_scale"}},
      {{"routed_scaling_factor=-1"}, {"routed_scaling_factor"}},
      {{"router_bias_update_rate=-1e-4"}, {"router_bias_update_rate"}},
      {{"aux_loss_alpha=-0.1"}, {"aux_loss_alpha"}},
      {{"lr_dense=0"}, {"lr_dense must be > 0"}},
      {{"lr_router=-1"}, {"lr_router"}},
      {{"lr_expert=0"}, {"lr_expert"}},
      {{"weight_decay=-0.1"}, {"weight_decay"}},
      {{"adam_beta1=1"}, {"adam_beta1 must be in [0, 1)"}},
      {{"adam_beta2=-0.1"}, {"adam_beta2"}},
      {{"adam_beta2_expert=1.5"}, {"adam_beta2_expert"}},
      {{"adam_eps=0"}, {"adam_eps"}},
      {{"grad_clip=-1"}, {"grad_clip"}},
      {{"use_muon=true"}, {"Muon is not implemented in nmoe yet: set use_muon = false"}},
      {{"expert_opt=muon"}, {"expert_opt", "Muon is not implemented"}},
      {{"expert_opt=sgd"}, {"expert_opt must be one of"}},
      {{"warmup_steps=-1"}, {"warmup_steps"}},
      {{"hold_tokens=-1"}, {"hold_tokens"}},
      {{"decay_tokens=-5"}, {"decay_tokens"}},
      {{"decay_floor=0"}, {"decay_floor must be > 0"}},
      {{"decay_floor=1e-3", "lr_dense=1e-4"}, {"decay_floor", "lr_dense"}},
      {{"decay_floor=1e-3", "lr_expert=1e-4"}, {"decay_floor", "lr_expert"}},
      {{"steps=0"}, {"steps must be >= 1"}},
      {{"batch_size=0"}, {"batch_size must be >= 1"}},
      {{"micro_batch_size=0"}, {"micro_batch_size must be >= 1"}},
      {{"micro_batch_size=3"}, {"micro_batch_size (3) must divide", "= 8"}},
      {{"micro_batch_size=4"}, {"micro_batch_size (4) must divide", "= 2"}, 4},
      {{"seq_len=0"}, {"seq_len"}},
      {{"log_every=0"}, {"log_every"}},
      {{"checkpoint_every=0"}, {"checkpoint_every"}},
      {{"checkpoint_keep_last_n=0"}, {"checkpoint_keep_last_n"}},
      {{"validation_every=0"}, {"validation_every"}},
      {{"validation_steps=0"}, {"validation_steps"}},
      {{"validation_enabled=true"}, {"validation_enabled", "validation_data_path"}},
      {{"target_loss=3.28"}, {"target_loss", "validation_enabled"}},
      {{"device=tpu"}, {"device must be one of"}},
      {{"expert_grad_dtype=fp16"}, {"expert_grad_dtype must be one of", "fp32", "bf16"}},
      {{"threads=-1"}, {"threads"}},
      {{"eval_budget_max_examples=-1"}, {"eval_budget_max_examples"}},
      {{"eval_budget_max_time_s=-1"}, {"eval_budget_max_time_s"}},
      {{"eval_mode=modal_job"}, {"eval_mode must be one of"}},
  };
}

// Test names: the first override's key and the case number, e.g. n_heads_3.
std::string validation_case_name(const testing::TestParamInfo<ValidationCase>& info) {
  std::string key = info.param.sets.empty() ? "base" : info.param.sets[0].substr(0, info.param.sets[0].find('='));
  std::string name;
  for (char c : key) name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return name + "_" + std::to_string(info.index);
}

INSTANTIATE_TEST_SUITE_P(Cases, ConfigValidation, testing::ValuesIn(validation_cases()), validation_case_name);

TEST(ConfigValidationRequired, ShapeKeysRequiredWithExample) {
  EXPECT_THAT(error_of(base_without({"dim"})), HasSubstr("dim is required: add a line such as `dim = 768`"));
  EXPECT_THAT(error_of(base_without({"n_layers"})), HasSubstr("n_layers is required"));
  EXPECT_THAT(error_of(base_without({"n_heads"})), HasSubstr("n_heads is required"));
}

TEST(ConfigValidationRequired, MoeNeedsTopKAndExpertWidth) {
  EXPECT_THAT(error_of(base_without({"n_activated_experts"})), HasSubstr("n_activated_experts is required"));
  const std::string no_width = base_without({"moe_inter_dim", "inter_dim"});
  EXPECT_THAT(error_of(no_width, {"n_dense_layers=0"}), HasSubstr("moe_inter_dim (or inter_dim, its fallback) is required"));
}

TEST(ConfigValidationRequired, MoeInterDimFallsBackToInterDim) {
  Config c = load(base_without({"moe_inter_dim"}));
  EXPECT_EQ(c.expert_inter_dim(), 128);
}

TEST(ConfigValidationRequired, DenseLayersNeedInterDim) {
  EXPECT_THAT(error_of(base_without({"inter_dim"})), HasSubstr("inter_dim is required"));
  EXPECT_THAT(error_of(base_without({"inter_dim"}), {"n_routed_experts=0"}), HasSubstr("inter_dim is required for a dense model"));
  // All-MoE layers need no inter_dim.
  EXPECT_NO_THROW(load(base_without({"inter_dim"}), {"n_dense_layers=0"}));
}

TEST(ConfigValidationRequired, DenseModelIgnoresExpertKeys) {
  // n_dense_layers == n_layers: no MoE layer, so top-k limits do not apply.
  EXPECT_NO_THROW(load(kBase, {"n_dense_layers=2", "n_activated_experts=9"}));
}

TEST(ConfigValidationAccepts, ReferenceValuesNotYetImplemented) {
  EXPECT_NO_THROW(load(kBase, {"attn=mla"}));
  EXPECT_NO_THROW(load(kBase, {"attn=kda", "attn_local=nsa"}));
  EXPECT_NO_THROW(load(kBase, {"dtype=nvfp4", "fp4_embed_gain=10.667", "fp4_logits_gain=0.125"}));
  EXPECT_NO_THROW(load(kBase, {"expert_opt=adamw", "activation=relu_squared"}));
}

TEST(ConfigValidationAccepts, ValidateOnDefaultConstructedConfigNamesDim) {
  EXPECT_THAT([] { nmoe::validate(Config{}); }, testing::ThrowsMessage<nmoe::Error>(HasSubstr("dim is required")));
}

// ---------------------------------------------------------------- JSON and fingerprint

TEST(ConfigJson, HasEveryKeySortedCompactAndNullForUnset) {
  Config c = load(kBase);
  const std::string text = c.to_json();
  EXPECT_EQ(text.find(' '), std::string::npos);
  const nlohmann::json j = nlohmann::json::parse(text);
  std::vector<std::string> keys;
  for (const auto& [key, value] : j.items()) keys.push_back(key);
  EXPECT_EQ(keys, nmoe::config_keys());
  EXPECT_TRUE(j.at("target_loss").is_null());
  EXPECT_EQ(j.at("dim"), 64);
  EXPECT_FALSE(j.contains("world_size"));
  EXPECT_THAT(text, HasSubstr("\"adam_beta1\":0.9,"));
}

TEST(ConfigJson, DoublesRoundTripExactly) {
  Config c = load(kBase, {"lr_dense=0.00123456789012345", "hold_tokens=13505904640"});
  const nlohmann::json j = nlohmann::json::parse(c.to_json());
  EXPECT_EQ(j.at("lr_dense").get<double>(), c.lr_dense);
  EXPECT_EQ(j.at("hold_tokens").get<double>(), 13505904640.0);
}

TEST(ConfigJson, AsciiOnly) {
  Config c = load(kBase, {"experiment_id=\"caf\u00e9\""});
  const std::string text = c.to_json();
  for (unsigned char ch : text) EXPECT_LT(ch, 0x80);
  EXPECT_THAT(text, HasSubstr("caf\\u00e9"));
}

TEST(ConfigFingerprint, LeavesOutOperationalKeys) {
  const nlohmann::json j = nlohmann::json::parse(load(kBase).fingerprint_json());
  for (const char* key : {"log_every", "checkpoint_dir", "checkpoint_every", "checkpoint_keep_last_n", "fsync",
                          "resume", "experiments_db", "metrics_dir", "device", "threads", "steps",
                          "validation_enabled", "validation_data_path", "validation_every", "validation_steps",
                          "validation_log_bpb", "target_loss", "experiment_id", "data_root"}) {
    EXPECT_FALSE(j.contains(key)) << key;
  }
  for (const auto& key : nmoe::config_keys()) {
    if (key.rfind("eval_", 0) == 0) {
      EXPECT_FALSE(j.contains(key)) << key;
    }
  }
  for (const char* key : {"lr_dense", "dim", "seed", "batch_size", "data_path", "preset", "micro_batch_size"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
}

TEST(ConfigFingerprint, StableAndSensitiveOnlyToTrainingMath) {
  const std::string base = load(kBase).fingerprint();
  EXPECT_EQ(base.size(), 64u);
  EXPECT_EQ(load(kBase).fingerprint(), base);
  EXPECT_NE(load(kBase, {"lr_dense=1e-3"}).fingerprint(), base);
  EXPECT_NE(load(kBase, {"seed=7"}).fingerprint(), base);
  EXPECT_EQ(load(kBase, {"log_every=1"}).fingerprint(), base);
  EXPECT_EQ(load(kBase, {"steps=5", "checkpoint_dir=/elsewhere", "eval_enabled=true", "resume=false"}).fingerprint(),
            base);
}

TEST(ConfigDiff, NamesChangedKeys) {
  const std::string a = load(kBase).to_json();
  const std::string b = load(kBase, {"lr_dense=1e-3", "steps=5"}).to_json();
  EXPECT_THAT(nmoe::config_diff(a, b), testing::ElementsAre("lr_dense", "steps"));
  EXPECT_TRUE(nmoe::config_diff(a, a).empty());
}

TEST(ConfigDiff, KeysInOnlyOneSide) {
  EXPECT_THAT(nmoe::config_diff(R"({"a":1,"b":2})", R"({"b":2,"c":null})"), testing::ElementsAre("a", "c"));
  EXPECT_THAT(nmoe::config_diff(R"({"x":null})", R"({"x":0})"), testing::ElementsAre("x"));
}

TEST(ConfigDiff, RejectsNonObjects) {
  EXPECT_THROW(nmoe::config_diff("{", "{}"), nmoe::Error);
  EXPECT_THROW(nmoe::config_diff("{}", "[1]"), nmoe::Error);
}

}  // namespace
