#include "eval/core_eval.h"

#include <chrono>
#include <cstdio>
#include <ostream>

#include "core/error.h"

namespace nmoe {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Index of the smallest value, first on ties, as Python's l.index(min(l)).
int argmin_first(const std::vector<double>& v) {
  int best = 0;
  for (int i = 1; i < static_cast<int>(v.size()); ++i)
    if (v[i] < v[best]) best = i;
  return best;
}

CoreTaskResult run_task(SequenceScorer& scorer, const Encoder& encode, int32_t bos, const CoreBundle& bundle,
                        const CoreTask& task, const CoreEvalOptions& opt) {
  CoreTaskResult r;
  r.label = task.label;
  r.type = task.type;
  r.random_baseline = task.random_baseline;
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<CoreExample> data =
      shuffle_and_truncate(load_core_examples(bundle.task_path(task), task.type), opt.max_examples);
  const size_t batch = static_cast<size_t>(scorer.batch_size());
  size_t next = 0;
  while (next < data.size()) {
    if (opt.max_time_s > 0 && seconds_since(t0) >= opt.max_time_s) {
      r.time_capped = true;
      break;
    }
    // A window of examples holding at least one batch of sequences.
    std::vector<PreparedExample> window;
    size_t n_seqs = 0;
    while (next < data.size() && n_seqs < batch) {
      const std::vector<std::string> prompts =
          render_prompts(task, data, next, fewshot_indices(data.size(), next, task.num_fewshot));
      window.push_back(prepare_example(task, prompts, data[next].gold, encode, bos, scorer.max_len()));
      n_seqs += window.back().seqs.size();
      ++next;
    }
    std::vector<const ScoredSequence*> flat;
    for (const PreparedExample& p : window)
      if (p.error.empty())
        for (const ScoredSequence& s : p.seqs) flat.push_back(&s);
    std::vector<SequenceScore> scores;
    for (size_t b = 0; b < flat.size(); b += batch) {
      std::vector<const ScoredSequence*> part(flat.begin() + b, flat.begin() + std::min(flat.size(), b + batch));
      std::vector<SequenceScore> s = scorer.score(part);
      scores.insert(scores.end(), s.begin(), s.end());
    }
    size_t k = 0;
    for (const PreparedExample& p : window) {
      ++r.examples;
      if (!p.error.empty()) {
        ++r.unscorable;
        continue;
      }
      if (task.type == TaskType::LanguageModeling) {
        r.correct += scores[k].greedy_match ? 1 : 0;
      } else {
        std::vector<double> nll;
        for (size_t c = 0; c < p.seqs.size(); ++c) nll.push_back(scores[k + c].mean_nll);
        r.correct += argmin_first(nll) == p.gold ? 1 : 0;
      }
      k += p.seqs.size();
    }
  }
  r.accuracy = r.examples > 0 ? static_cast<double>(r.correct) / static_cast<double>(r.examples) : 0.0;
  r.centered = centered_accuracy(r.accuracy, task.random_baseline);
  r.seconds = seconds_since(t0);
  return r;
}

}  // namespace

double centered_accuracy(double accuracy, double baseline_percent) {
  const double b = baseline_percent >= 100 ? 0.0 : baseline_percent / 100.0;
  return (accuracy - b) / (1.0 - b);
}

std::string CoreEvalResult::core_label() const {
  if (complete()) return "CORE";
  return "CORE over " + std::to_string(n_scored) + " of " + std::to_string(n_suite) + " tasks";
}

CoreEvalResult run_core_eval(SequenceScorer& scorer, const Encoder& encode, int32_t bos,
                             const CoreBundle& bundle, const CoreEvalOptions& opt) {
  std::vector<const CoreTask*> tasks;
  if (opt.tasks.empty()) {
    for (const CoreTask& t : bundle.tasks) tasks.push_back(&t);
  } else {
    for (const std::string& label : opt.tasks) tasks.push_back(&bundle.task(label));  // throws on unknown names
  }
  CoreEvalResult res;
  res.n_requested = static_cast<int>(tasks.size());
  res.n_suite = static_cast<int>(bundle.tasks.size());
  double sum = 0;
  for (const CoreTask* t : tasks) {
    if (!bundle.present(*t)) {
      CoreTaskResult m;
      m.label = t->label;
      m.type = t->type;
      m.present = false;
      m.random_baseline = t->random_baseline;
      res.tasks.push_back(m);
      res.missing.push_back(t->label);
      if (opt.out)
        *opt.out << "  " << t->label << ": missing (" << bundle.task_path(*t) << " not found); not scored\n"
                 << std::flush;
      continue;
    }
    CoreTaskResult r = run_task(scorer, encode, bos, bundle, *t, opt);
    if (opt.out) {
      char line[256];
      std::snprintf(line, sizeof line, "  %-34s acc %.4f  centered %+.4f  %6lld examples  %7.1f s%s\n",
                    r.label.c_str(), r.accuracy, r.centered, static_cast<long long>(r.examples), r.seconds,
                    r.time_capped ? "  (time budget reached)" : "");
      *opt.out << line << std::flush;
    }
    sum += r.centered;
    ++res.n_scored;
    res.tasks.push_back(std::move(r));
  }
  res.core = res.n_scored > 0 ? sum / res.n_scored : 0.0;
  return res;
}

std::string format_core_table(const CoreEvalResult& r) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-34s %-18s %9s %9s %9s %8s\n", "task", "type", "accuracy", "centered",
                "examples", "time_s");
  out += line;
  for (const CoreTaskResult& t : r.tasks) {
    if (!t.present) {
      std::snprintf(line, sizeof line, "%-34s %-18s %9s %9s %9s %8s\n", t.label.c_str(), task_type_name(t.type),
                    "missing", "-", "-", "-");
    } else {
      std::snprintf(line, sizeof line, "%-34s %-18s %9.4f %+9.4f %9lld %8.1f%s\n", t.label.c_str(),
                    task_type_name(t.type), t.accuracy, t.centered, static_cast<long long>(t.examples), t.seconds,
                    t.time_capped ? "  time budget" : "");
    }
    out += line;
  }
  std::snprintf(line, sizeof line, "%s: %.4f\n", r.core_label().c_str(), r.core);
  out += line;
  if (!r.missing.empty()) {
    out += "missing task files (not scored): ";
    for (size_t i = 0; i < r.missing.size(); ++i) out += (i ? ", " : "") + r.missing[i];
    out += "\n";
  }
  return out;
}

}  // namespace nmoe
