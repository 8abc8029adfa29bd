#include "eval/core_bundle.h"

#include <charconv>
#include <nlohmann/json.hpp>
#include <map>

#include "core/error.h"
#include "core/fs.h"
#include "core/paths.h"

namespace nmoe {

using fs::exists;
using fs::parent_dir;
using fs::read_file;

const char* task_type_name(TaskType t) {
  switch (t) {
    case TaskType::MultipleChoice: return "multiple_choice";
    case TaskType::Schema: return "schema";
    case TaskType::LanguageModeling: return "language_modeling";
  }
  return "?";
}

namespace {

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r"), e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// A YAML scalar as core.yaml writes them: plain, "double-quoted" (with
// escapes), 'single-quoted', or a one-element flow list such as [10].
std::string yaml_scalar(const std::string& raw, const std::string& where) {
  const std::string v = trim(raw);
  if (v.empty()) return v;
  if (v.front() == '"') {
    // Double-quoted YAML escapes as core.yaml uses them (\n, \", \\, \uXXXX) are JSON's.
    nlohmann::json j = nlohmann::json::parse(v, nullptr, /*allow_exceptions=*/false);
    NMOE_CHECK(!j.is_discarded() && j.is_string(), where, ": cannot read the double-quoted string ", v,
               " (unterminated, or an escape other than JSON's)");
    return j.get<std::string>();
  }
  if (v.front() == '\'') {
    NMOE_CHECK(v.size() >= 2 && v.back() == '\'', where, ": unterminated single-quoted string ", v);
    std::string out;
    for (size_t i = 1; i + 1 < v.size(); ++i) {
      out += v[i];
      if (v[i] == '\'' && v[i + 1] == '\'') ++i;
    }
    return out;
  }
  if (v.front() == '[') {
    NMOE_CHECK(v.back() == ']', where, ": unterminated list ", v);
    const std::string inner = trim(v.substr(1, v.size() - 2));
    NMOE_CHECK(!inner.empty() && inner.find(',') == std::string::npos, where,
               ": expected a list of one value, got ", v, " (CORE scores one few-shot count per task)");
    return yaml_scalar(inner, where);
  }
  return v;
}

bool parse_int(const std::string& s, int& out) {
  auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

bool parse_double(const std::string& s, double& out) {
  auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

}  // namespace

std::vector<YamlTask> parse_core_yaml(const std::string& text, const std::string& name) {
  std::vector<YamlTask> tasks;
  bool in_list = false;
  int line_no = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    const std::string where = name + ":" + std::to_string(line_no);
    // Comments start a line or follow whitespace outside quotes; core.yaml has only whole-line ones.
    const std::string t = trim(line);
    if (t.empty() || t.front() == '#') continue;
    if (!in_list) {
      NMOE_CHECK(t == "icl_tasks:", where, ": expected 'icl_tasks:', got '", t, "'");
      in_list = true;
      continue;
    }
    std::string rest = t;
    if (rest.front() == '-') {
      tasks.push_back(YamlTask{{}, {}, line_no});
      rest = trim(rest.substr(1));
      if (rest.empty()) continue;
    }
    NMOE_CHECK(!tasks.empty(), where, ": a key before the first '-' list item");
    const size_t colon = rest.find(':');
    NMOE_CHECK(colon != std::string::npos && colon > 0, where, ": expected 'key: value', got '", rest, "'");
    const std::string key = trim(rest.substr(0, colon));
    tasks.back().fields.emplace_back(key, yaml_scalar(rest.substr(colon + 1), where));
    tasks.back().field_lines.push_back(line_no);
  }
  NMOE_CHECK(in_list, name, ": no 'icl_tasks:' list");
  NMOE_CHECK(!tasks.empty(), name, ": 'icl_tasks:' has no tasks");
  return tasks;
}

std::vector<std::vector<std::string>> parse_csv(const std::string& text, const std::string& name) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, field_started = false;
  int line = 1;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        if (c == '\n') ++line;
        field += c;
      }
      continue;
    }
    if (c == '"' && !field_started) {
      quoted = field_started = true;
    } else if (c == ',') {
      row.push_back(std::move(field));
      field.clear();
      field_started = false;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      row.push_back(std::move(field));
      field.clear();
      field_started = false;
      if (!(row.size() == 1 && row[0].empty())) rows.push_back(std::move(row));
      row.clear();
      ++line;
    } else {
      field += c;
      field_started = true;
    }
  }
  NMOE_CHECK(!quoted, name, ": a quoted field that starts before line ", line, " never ends");
  if (field_started || !row.empty()) {
    row.push_back(std::move(field));
    rows.push_back(std::move(row));
  }
  return rows;
}

bool CoreBundle::present(const CoreTask& t) const { return exists(task_path(t)); }

const CoreTask& CoreBundle::task(const std::string& label) const {
  std::string all;
  for (const CoreTask& t : tasks) {
    if (t.label == label) return t;
    all += (all.empty() ? "" : ", ") + t.label;
  }
  fail("unknown CORE task '", label, "'; the tasks are: ", all);
}

CoreBundle load_core_bundle(const std::string& dir) {
  CoreBundle b;
  b.dir = dir;
  const std::string yaml_path = dir + "/core.yaml", csv_path = dir + "/eval_meta_data.csv";
  NMOE_CHECK(exists(yaml_path), "CORE bundle: ", yaml_path,
             " not found; point --bundle at a directory holding core.yaml, eval_meta_data.csv and eval_data/");
  NMOE_CHECK(exists(csv_path), "CORE bundle: ", csv_path, " not found (it holds each task's random baseline)");

  // Random baselines by task label.
  const auto rows = parse_csv(read_file(csv_path), csv_path);
  NMOE_CHECK(!rows.empty(), csv_path, ": empty file");
  int task_col = -1, base_col = -1;
  for (size_t c = 0; c < rows[0].size(); ++c) {
    const std::string h = trim(rows[0][c]);
    if (h == "Eval Task") task_col = static_cast<int>(c);
    if (h == "Random baseline") base_col = static_cast<int>(c);
  }
  NMOE_CHECK(task_col >= 0 && base_col >= 0, csv_path,
             ": the header needs the columns 'Eval Task' and 'Random baseline'");
  std::map<std::string, double> baseline;
  for (size_t r = 1; r < rows.size(); ++r) {
    const auto& row = rows[r];
    NMOE_CHECK(static_cast<int>(row.size()) > std::max(task_col, base_col), csv_path, ": row ", r + 1, " has ",
               row.size(), " fields, fewer than the header's");
    double v = 0;
    NMOE_CHECK(parse_double(trim(row[base_col]), v), csv_path, ": row ", r + 1, " (", row[task_col],
               "): random baseline '", row[base_col], "' is not a number");
    baseline[trim(row[task_col])] = v;
  }

  for (const YamlTask& y : parse_core_yaml(read_file(yaml_path), yaml_path)) {
    const std::string where = yaml_path + ":" + std::to_string(y.line);
    CoreTask t;
    bool have_label = false, have_uri = false, have_type = false, have_shots = false;
    for (size_t f = 0; f < y.fields.size(); ++f) {
      const auto& [key, value] = y.fields[f];
      const std::string at = yaml_path + ":" + std::to_string(y.field_lines[f]);
      if (key == "label") {
        t.label = value;
        have_label = true;
      } else if (key == "dataset_uri") {
        t.dataset_uri = value;
        have_uri = true;
      } else if (key == "icl_task_type") {
        if (value == "multiple_choice") t.type = TaskType::MultipleChoice;
        else if (value == "schema") t.type = TaskType::Schema;
        else if (value == "language_modeling") t.type = TaskType::LanguageModeling;
        else fail(at, ": icl_task_type '", value, "' is not one of multiple_choice, schema, language_modeling");
        have_type = true;
      } else if (key == "num_fewshot") {
        NMOE_CHECK(parse_int(value, t.num_fewshot) && t.num_fewshot >= 0, at, ": num_fewshot '", value,
                   "' is not a non-negative integer");
        have_shots = true;
      } else if (key == "continuation_delimiter") {
        t.delimiter = value;
      } else if (key == "has_categories") {
        NMOE_CHECK(value == "true" || value == "false", at, ": has_categories must be true or false");
        t.has_categories = value == "true";
      }  // other keys of the bundle format do not change CORE scoring
    }
    NMOE_CHECK(have_label && have_uri && have_type && have_shots, where,
               ": a task needs label, dataset_uri, icl_task_type and num_fewshot");
    NMOE_CHECK(t.dataset_uri.find("..") == std::string::npos, where, ": dataset_uri must stay inside eval_data/");
    for (const CoreTask& o : b.tasks) NMOE_CHECK(o.label != t.label, where, ": task '", t.label, "' appears twice");
    auto it = baseline.find(t.label);
    NMOE_CHECK(it != baseline.end(), csv_path, " has no random baseline for task '", t.label, "' of ", where);
    t.random_baseline = it->second;
    b.tasks.push_back(std::move(t));
  }
  return b;
}

std::string default_core_bundle_dir() { return parent_dir(asset_path("eval/core/core.yaml")); }

}  // namespace nmoe
