// The CORE evaluation: every task of a bundle scored with a SequenceScorer;
// accuracy per task, centered by the task's random baseline, CORE = mean.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "eval/core_bundle.h"
#include "eval/core_prompt.h"
#include "eval/sequence_scorer.h"

namespace nmoe {

struct CoreEvalOptions {
  int64_t max_examples = 0;        // per task; 0: all
  double max_time_s = 0;           // per task; 0: no limit
  std::vector<std::string> tasks;  // labels to run; empty: all
  std::ostream* out = nullptr;     // a line per task as it finishes
};

struct CoreTaskResult {
  std::string label;
  TaskType type = TaskType::MultipleChoice;
  bool present = true;   // the task's data file exists
  int64_t examples = 0;  // scored
  int64_t correct = 0;
  int64_t unscorable = 0;  // counted wrong: span cropped away, tokenization mismatch
  double accuracy = 0, centered = 0, seconds = 0, random_baseline = 0;
  bool time_capped = false;
};

struct CoreEvalResult {
  std::vector<CoreTaskResult> tasks;  // bundle order; missing tasks have present = false
  std::vector<std::string> missing;   // labels whose data file is missing
  double core = 0;                    // mean centered accuracy over the tasks scored
  int n_scored = 0;     // tasks scored
  int n_requested = 0;  // tasks asked for (all, or --tasks)
  int n_suite = 0;      // tasks in the bundle
  bool complete() const { return n_scored == n_suite; }
  std::string core_label() const;  // "CORE" for the whole suite, else "CORE over 18 of 22 tasks"
};

// centered = (acc - b) / (1 - b), b = baseline% / 100 (b = 0 when the baseline is >= 100).
double centered_accuracy(double accuracy, double baseline_percent);

CoreEvalResult run_core_eval(SequenceScorer& scorer, const Encoder& encode, int32_t bos,
                             const CoreBundle& bundle, const CoreEvalOptions& opt);

// Per-task table (accuracy, centered, examples, time) and the CORE line.
std::string format_core_table(const CoreEvalResult& r);

}  // namespace nmoe
