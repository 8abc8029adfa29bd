#include "speedrun/speedrun.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <ostream>
#include <unistd.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/paths.h"
#include "data/manifest.h"
#include "data/prep.h"
#include "eval/checkpoint_eval.h"
#include "metrics/metrics_db.h"
#include "speedrun/leaderboard.h"
#include "train/trainer.h"
#ifdef NMOE_CUDA_BACKEND
#include "backend/cuda/cuda_backend.h"
#endif

namespace nmoe {

using fs::exists;

namespace {

// The canonical data of the GPU speedruns (the reference's choice).
constexpr const char* kHubDataset = "karpathy/fineweb-edu-100b-shuffle";
constexpr const char* kHubValFile = "shard_01822.parquet";

bool gpu_present() {
#ifdef NMOE_CUDA_BACKEND
  return cuda_device_available();
#else
  return false;
#endif
}

void say(std::ostream* out, const std::string& s) {
  if (out) *out << "speedrun: " << s << "\n" << std::flush;
}

bool dataset_ready(const std::string& dir, const Config& cfg, std::string* why) {
  if (!has_manifest(dir)) {
    *why = dir + " has no manifest.json";
    return false;
  }
  try {
    check_dataset_matches(dir, cfg.tokenizer, cfg.vocab_size, cfg.eos_token_id);
  } catch (const Error& e) {
    *why = e.what();
    return false;
  }
  return true;
}

void prep_wikiextractor(const Config& cfg, const std::vector<std::string>& files, const std::string& name,
                        const std::string& out_dir, std::ostream* out) {
  PrepOptions p;
  p.source.source = "text";
  p.source.text_format = "wikiextractor";
  p.source.files = files;
  p.output = out_dir;
  p.name = name;
  p.tokenizer = cfg.tokenizer;
  p.tokens_per_shard = 50'000'000;
  p.log = out;
  prep_dataset(p);
}

// The WikiExtractor text files of one split in a corpus directory: the names
// holding ".train." (or ".val.") and ending in .txt or .txt.zst, sorted.
std::vector<std::string> corpus_split_files(const std::string& dir, const std::string& split) {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string f = e.path().filename().string();
    const bool text = f.size() > 4 && (f.substr(f.size() - 4) == ".txt" ||
                                       (f.size() > 8 && f.substr(f.size() - 8) == ".txt.zst"));
    if (e.is_regular_file() && text && f.find("." + split + ".") != std::string::npos)
      files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

void prep_wiki_corpus(const Config& cfg, const std::string& corpus_dir, const std::string& data_dir,
                      bool train_ok, bool val_ok, std::ostream* out) {
  const char* how =
      "\n  The 'wiki' speedrun trains on an English Wikipedia dump in WikiExtractor text form: pass\n"
      "    n speedrun wiki --corpus DIR\n"
      "  where DIR holds the training text (*.train.txt or *.train.txt.zst) and the validation text\n"
      "  (*.val.txt[.zst]), or pass --data DIR with DIR/train and DIR/val made by `n data prep`.";
  NMOE_CHECK(!corpus_dir.empty(), "no Wikipedia corpus given and no prepared shards", how);
  NMOE_CHECK(std::filesystem::is_directory(corpus_dir), "the Wikipedia corpus directory ", corpus_dir,
             " does not exist", how);
  const std::vector<std::string> train = corpus_split_files(corpus_dir, "train"),
                                 val = corpus_split_files(corpus_dir, "val");
  NMOE_CHECK(!train.empty(), corpus_dir, " holds no training text (*.train.txt[.zst])", how);
  NMOE_CHECK(!val.empty(), corpus_dir, " holds no validation text (*.val.txt[.zst])", how);
  say(out, "data: preparing the Wikipedia corpus in " + corpus_dir + " into " + data_dir);
  if (!train_ok) prep_wikiextractor(cfg, train, "enwiki", data_dir + "/train", out);
  if (!val_ok) prep_wikiextractor(cfg, val, "enwiki", data_dir + "/val", out);
}

void prep_hub(const Config& cfg, const std::string& split_dir, bool val, std::ostream* out) {
  PrepOptions p;
  p.source.source = "hf";
  p.source.dataset = std::getenv("NMOE_SPEEDRUN_DATASET") ? std::getenv("NMOE_SPEEDRUN_DATASET") : kHubDataset;
  p.source.split = "train";
  if (val) {
    const char* f = std::getenv("NMOE_SPEEDRUN_VAL_DATA_FILE");
    p.source.files = {f ? f : kHubValFile};
    p.max_tokens_total = 10'485'760;
  } else {
    p.max_tokens_total = 10'000'000'000;
    p.num_shards = 64;
  }
  p.output = split_dir;
  p.name = "speedrun";
  p.tokenizer = cfg.tokenizer;
  p.log = out;
  prep_dataset(p);
}

// What the ranks of a launched run recorded at its end (rank 0 writes the results).
TrainResult result_from_db(const std::string& db_path, const std::string& run_id) {
  MetricsDB db = MetricsDB::open(db_path);
  auto row = db.run(run_id);
  NMOE_CHECK(row && !row->results_json.empty(), "run ", run_id, " left no results in ", db_path);
  const nlohmann::json r = nlohmann::json::parse(row->results_json);
  TrainResult tr;
  tr.status = r.value("stop_reason", std::string());
  tr.steps_done = r.value("steps_completed", int64_t{0});
  if (r.contains("val_loss") && r["val_loss"].is_number()) tr.val_loss = r["val_loss"].get<double>();
  tr.target_reached = r.value("target_reached", false);
  tr.step_to_target = r.value("step_to_target", int64_t{0});
  tr.tokens_to_target = r.value("tokens_to_target", 0.0);
  tr.train_seconds_to_target = r.value("train_time_s_to_target", 0.0);
  tr.last_checkpoint = r.value("last_checkpoint", std::string());
  return tr;
}

}  // namespace

const std::vector<std::string>& speedrun_names() {
  static const std::vector<std::string> names = {"tiny", "wiki", "dense", "moe", "super", "ultra"};
  return names;
}

std::string speedrun_config_path(const std::string& name) {
  bool known = false;
  for (const std::string& n : speedrun_names()) known = known || n == name;
  if (!known) {
    std::string all;
    for (const std::string& n : speedrun_names()) all += (all.empty() ? "" : ", ") + n;
    fail("unknown speedrun '", name, "'; choose one of ", all);
  }
  const std::string rel = "configs/speedrun/" + name + ".toml";
  if (exists(rel)) return rel;
  return shipped_path(rel);
}

void ensure_speedrun_data(const std::string& name, const Config& cfg, const std::string& data_dir,
                          const std::string& corpus_dir, std::ostream* out) {
  const std::string train = data_dir + "/train", val = data_dir + "/val";
  std::string why_train, why_val;
  const bool train_ok = dataset_ready(train, cfg, &why_train), val_ok = dataset_ready(val, cfg, &why_val);
  if (train_ok && val_ok) {
    say(out, "data: " + data_dir + " (train and val ready" +
                 (corpus_dir.empty() ? std::string(")")
                                     : "; --corpus not read: remove " + data_dir + " to prepare it again)"));
    return;
  }
  if (name == "tiny") {
    say(out, "data: preparing the shipped Wikipedia sample into " + data_dir);
    const std::string sample = "corpus/enwiki_sample/";
    if (!train_ok) prep_wikiextractor(cfg, {asset_path(sample + "train.txt.zst")}, "enwiki_sample", train, out);
    if (!val_ok) prep_wikiextractor(cfg, {asset_path(sample + "val.txt.zst")}, "enwiki_sample", val, out);
    return;
  }
  if (name == "wiki") {
    prep_wiki_corpus(cfg, corpus_dir, data_dir, train_ok, val_ok, out);
    return;
  }
  say(out, "data: " + (train_ok ? why_val : why_train) + "; preparing " + kHubDataset + " from the hub into " +
               data_dir);
  try {
    if (!train_ok) prep_hub(cfg, train, false, out);
    if (!val_ok) prep_hub(cfg, val, true, out);
  } catch (const Error& e) {
    fail("the speedrun data could not be prepared: ", e.what(), "\n  The '", name, "' speedrun trains on ",
         kHubDataset, " (GPT-2 tokens; 10B for training, ", kHubValFile,
         " for validation). Without access to the hub, prepare shards from local files with\n"
         "    n data prep --source parquet|jsonl|text --data-files ... --tokenizer ",
         cfg.tokenizer, " --output DIR/train   (and DIR/val)\n  and run `n speedrun ", name, " --data DIR`.");
  }
}

SpeedrunResult run_speedrun(const SpeedrunOptions& opt_in) {
  SpeedrunOptions opt = opt_in;
  std::ostream* out = opt.out;
  if (opt.name.empty()) opt.name = gpu_present() ? "super" : "tiny";
  NMOE_CHECK(opt.corpus_dir.empty() || opt.name == "wiki", "--corpus is for the wiki speedrun; the '", opt.name,
             "' speedrun takes --data DIR with prepared shards");
  const std::string cfg_path = speedrun_config_path(opt.name);
  const std::string data_dir = opt.data_dir.empty() ? opt.work_dir + "/" + opt.name + "/data" : opt.data_dir;

  // The run's identity and places, then the config with the speedrun's settings.
  SpeedrunResult res;
  res.run_id = "speedrun_" + opt.name + "_" + std::to_string(std::time(nullptr)) + "_" + std::to_string(getpid());
  const std::string run_dir = opt.work_dir + "/" + opt.name + "/" + res.run_id;
  std::vector<ConfigOverride> ov = {
      {"data_path", "\"" + data_dir + "/train\""},
      {"validation_data_path", "\"" + data_dir + "/val\""},
      {"validation_enabled", "true"},
      {"checkpoint_dir", "\"" + run_dir + "/checkpoints\""},
      {"resume", "false"},
  };
  if (opt.steps > 0) ov.push_back({"steps", std::to_string(opt.steps)});
  if (!opt.dtype.empty()) ov.push_back({"dtype", "\"" + opt.dtype + "\""});
  ov.insert(ov.end(), opt.overrides.begin(), opt.overrides.end());
  const int nproc = std::max(1, opt.launch.nproc);
  const Config cfg = load_config(cfg_path, ov, nproc);
  NMOE_CHECK(cfg.target_loss.has_value(), cfg_path, " sets no target_loss; a speedrun needs one");
  say(out, opt.name + " (" + cfg_path + "): train to validation loss " + std::to_string(*cfg.target_loss) +
               " in at most " + std::to_string(cfg.steps) + " steps, then CORE");

  ensure_speedrun_data(opt.name, cfg, data_dir, opt.corpus_dir, out);
  const CoreBundle bundle =
      load_core_bundle(opt.bundle_dir.empty() ? default_core_bundle_dir() : opt.bundle_dir);  // fails before training
  say(out, "eval bundle: " + bundle.dir);

  // Train: in this process for one rank, else as launched workers.
  TrainResult tr;
  std::string hardware;
  if (nproc == 1) {
    auto backend = make_backend(cfg);
    hardware = backend->device_name();
    TrainOptions to;
    to.out = out;
    to.run_id = res.run_id;
    tr = train(cfg, *backend, to);
  } else {
    LaunchOptions lo = opt.launch;
    lo.child_args = {"train", cfg_path};
    for (const ConfigOverride& o : ov) {
      lo.child_args.push_back("--set");
      lo.child_args.push_back(o.key + "=" + o.value);
    }
    setenv("NMOE_RUN", res.run_id.c_str(), 1);
    const int rc = launch_workers(lo);
    unsetenv("NMOE_RUN");
    if (rc != 0) {
      res.why_not = "the training ranks failed (exit code " + std::to_string(rc) + ")";
      return res;
    }
    tr = result_from_db(cfg.experiments_db, res.run_id);
  }
  res.target_reached = tr.target_reached;
  if (!tr.target_reached) {
    res.why_not = "the validation loss " + std::to_string(tr.val_loss.value_or(0)) + " did not reach the target " +
                  std::to_string(*cfg.target_loss) + " in " + std::to_string(tr.steps_done) + " steps (" +
                  tr.status + ")";
    return res;
  }
  const double val_loss = tr.val_loss.value_or(0), tokens = tr.tokens_to_target, seconds = tr.train_seconds_to_target;
  const int64_t steps = tr.step_to_target;
  char when[160];
  std::snprintf(when, sizeof when, "target reached at step %lld (%.0f tokens, %.1f s of training excluding validation)",
                static_cast<long long>(steps), tokens, seconds);
  say(out, std::string(when) + "; scoring CORE");

  // CORE on the checkpoint written at the target.
  CheckpointEvalOptions eo;
  eo.bundle_dir = bundle.dir;
  eo.core.max_examples = cfg.eval_budget_max_examples;
  eo.core.max_time_s = static_cast<double>(cfg.eval_budget_max_time_s);
  eo.core.out = out;
  eo.out = out;
  CheckpointEval ev;
  try {
    ev = eval_checkpoint_core(tr.last_checkpoint, eo);
  } catch (const Error& e) {
    res.why_not = std::string("the CORE eval failed: ") + e.what();
    return res;
  }
  if (hardware.empty()) hardware = ev.hardware;
  if (out) *out << "\n" << format_core_table(ev.result) << std::flush;
  if (ev.result.n_scored == 0) {
    res.why_not = "the CORE eval scored no task";
    return res;
  }
  res.core = ev.result.core;

  LeaderboardEntry e;
  e.config = opt.name;
  const bool cpu = hardware == "CPU";
  e.hardware = cpu ? "CPU" : short_hardware_name(hardware);
  e.n_gpus = cpu ? 0 : nproc;
  e.n_ranks = nproc;
  e.dtype = cpu ? "fp32" : cfg.dtype;  // the CPU backend computes in fp32 whatever the config says
  e.target_loss = *cfg.target_loss;
  e.final_loss = val_loss;
  e.core_score = ev.result.core;
  e.core_tasks = ev.result.n_scored;
  e.core_tasks_total = ev.result.n_suite;
  e.tokens = tokens;
  e.steps = steps;
  e.wall_time_s = seconds;
  e.date = iso_local_time_now();
  e.experiment_id = cfg.experiment_id;
  e.run_id = res.run_id;
  append_to_leaderboard(opt.leaderboard, e);
  res.recorded = true;
  say(out, "recorded in " + opt.leaderboard + " (" + ev.result.core_label() + " " + std::to_string(res.core) + ")");
  return res;
}

}  // namespace nmoe
