#include "eval/checkpoint_eval.h"

#include <ostream>

#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "core/fs.h"
#include "eval/model_scorer.h"
#include "metrics/metrics_db.h"
#include "tokenizer/tokenizer.h"
#include "train/trainer.h"

namespace nmoe {

using fs::exists;

namespace {

std::string resolve_step_dir(const std::string& path) {
  if (exists(path + "/state.json")) return path;
  NMOE_CHECK(exists(path), "checkpoint '", path, "' does not exist");
  auto latest = find_latest_checkpoint(path);
  NMOE_CHECK(latest.has_value(), "'", path,
             "' is neither a checkpoint (no state.json) nor a checkpoint directory holding one");
  return *latest;
}

}  // namespace

CheckpointEval eval_checkpoint_core(const std::string& checkpoint, const CheckpointEvalOptions& opt) {
  CheckpointEval ev;
  ev.checkpoint = resolve_step_dir(checkpoint);
  const CheckpointState st = read_checkpoint_state(ev.checkpoint, /*weights_only=*/true);
  ev.run_id = st.run_id;
  ev.step = st.step;
  const Config cfg = config_from_json(st.config_json, ev.checkpoint + "/state.json", opt.overrides);

  auto tok = load_tokenizer(cfg.tokenizer);
  NMOE_CHECK(tok->vocab_size() <= static_cast<uint32_t>(cfg.vocab_size) &&
                 tok->eos_id() == static_cast<uint32_t>(cfg.eos_token_id),
             "checkpoint ", ev.checkpoint, ": its vocabulary (vocab_size ", cfg.vocab_size, ", eos ",
             cfg.eos_token_id, ") does not fit tokenizer '", cfg.tokenizer, "' (", tok->vocab_size(),
             " tokens, eos ", tok->eos_id(), ")");
  const CoreBundle bundle = load_core_bundle(opt.bundle_dir.empty() ? default_core_bundle_dir() : opt.bundle_dir);

  auto backend = make_backend(cfg);
  ev.hardware = backend->device_name();
  ModelOptions mo = model_options(cfg, *backend);
  if (opt.batch > 0) mo.micro_batch = opt.batch;
  Model model(cfg, *backend, mo);
  load_weights(ev.checkpoint + "/model.safetensors", model);
  ModelScorer scorer(model, static_cast<int32_t>(cfg.eos_token_id));
  const Encoder encode = [&](const std::string& s) {
    std::vector<uint32_t> ids = tok->encode_ordinary(s);
    return std::vector<int32_t>(ids.begin(), ids.end());
  };
  if (opt.out)
    *opt.out << "CORE eval of " << ev.checkpoint << " (step " << ev.step << ", " << cfg.tokenizer << ", "
             << ev.hardware << ", batch " << mo.micro_batch << " x " << mo.seq_len << ")\n"
             << std::flush;
  ev.result = run_core_eval(scorer, encode, static_cast<int32_t>(tok->eos_id()), bundle, opt.core);

  if (opt.write_db) {
    MetricsDB db = MetricsDB::open(opt.db_path.empty() ? cfg.experiments_db : opt.db_path);
    if (!db.run(ev.run_id)) {
      db.start_run(ev.run_id, cfg.experiment_id, cfg.to_json(), cfg.fingerprint(), "");
      db.end_run(ev.run_id, "completed", "{}");
    }
    std::vector<std::pair<std::string, double>> m;
    for (const CoreTaskResult& t : ev.result.tasks) {
      if (!t.present) continue;
      m.emplace_back("eval/core/" + t.label + "/accuracy", t.accuracy);
      m.emplace_back("eval/core/" + t.label + "/centered", t.centered);
      m.emplace_back("eval/core/" + t.label + "/examples", static_cast<double>(t.examples));
    }
    m.emplace_back("eval/CORE", ev.result.core);
    m.emplace_back("eval/CORE_tasks", ev.result.n_scored);
    db.log(ev.run_id, ev.step, m);
  }
  return ev;
}

}  // namespace nmoe
