// The CORE eval bundle: core.yaml (tasks, few-shot counts, delimiters),
// eval_meta_data.csv (random baselines) and eval_data/<category>/<task>.jsonl.
#pragma once

#include <string>
#include <vector>

namespace nmoe {

enum class TaskType { MultipleChoice, Schema, LanguageModeling };

const char* task_type_name(TaskType t);  // multiple_choice | schema | language_modeling

struct CoreTask {
  std::string label;
  std::string dataset_uri;  // relative to eval_data/
  TaskType type = TaskType::MultipleChoice;
  int num_fewshot = 0;
  std::string delimiter = " ";
  bool has_categories = false;
  double random_baseline = 0;  // percent
};

struct CoreBundle {
  std::string dir;
  std::vector<CoreTask> tasks;  // in core.yaml order

  std::string task_path(const CoreTask& t) const { return dir + "/eval_data/" + t.dataset_uri; }
  bool present(const CoreTask& t) const;
  const CoreTask& task(const std::string& label) const;  // throws, listing the labels
};

// Reads and checks core.yaml and eval_meta_data.csv under dir. Errors name the
// file and line. Task data files may be missing (present() tells).
CoreBundle load_core_bundle(const std::string& dir);

// The bundle shipped with nmoe (assets/eval/core).
std::string default_core_bundle_dir();

// The parsers, exposed for tests.
struct YamlTask {
  std::vector<std::pair<std::string, std::string>> fields;  // key, scalar value (quotes resolved)
  std::vector<int> field_lines;                              // line of each field
  int line = 0;                                              // line of the '-'
};
std::vector<YamlTask> parse_core_yaml(const std::string& text, const std::string& name);
std::vector<std::vector<std::string>> parse_csv(const std::string& text, const std::string& name);

}  // namespace nmoe
