#include "eval/core_prompt.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/line_reader.h"
#include "eval/py_random.h"

namespace nmoe {

namespace {

// Decodes the UTF-8 code point at s[i] (length in *len); invalid bytes count as one non-space unit.
uint32_t code_point_at(const std::string& s, size_t i, size_t* len) {
  const auto c = static_cast<unsigned char>(s[i]);
  int n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
  if (i + n > s.size()) n = 1;
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  *len = static_cast<size_t>(n);
  return cp;
}

bool py_isspace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string get_string(const nlohmann::json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  NMOE_CHECK(it != j.end() && it->is_string(), where, ": field \"", key, "\" missing or not a string");
  return it->get<std::string>();
}

std::vector<std::string> get_strings(const nlohmann::json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  NMOE_CHECK(it != j.end() && it->is_array() && !it->empty(), where, ": field \"", key,
             "\" missing or not a non-empty list");
  std::vector<std::string> out;
  for (const auto& v : *it) {
    NMOE_CHECK(v.is_string(), where, ": field \"", key, "\" holds a non-string");
    out.push_back(v.get<std::string>());
  }
  return out;
}

int get_gold(const nlohmann::json& j, size_t n_options, const std::string& where) {
  auto it = j.find("gold");
  NMOE_CHECK(it != j.end() && it->is_number_integer(), where, ": field \"gold\" missing or not an integer");
  const int64_t g = it->get<int64_t>();
  NMOE_CHECK(g >= 0 && g < static_cast<int64_t>(n_options), where, ": gold ", g, " is not an index of the ",
             n_options, " options");
  return static_cast<int>(g);
}

std::string join_blocks(const std::vector<std::string>& blocks) {
  std::string out;
  for (size_t i = 0; i < blocks.size(); ++i) out += (i ? "\n\n" : "") + blocks[i];
  return out;
}

}  // namespace

std::string py_strip(const std::string& s) {
  size_t b = 0, len = 0;
  while (b < s.size() && py_isspace(code_point_at(s, b, &len))) b += len;
  size_t e = s.size();
  while (e > b) {
    // Step back to the start of the last code point.
    size_t k = e - 1;
    while (k > b && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
    if (!py_isspace(code_point_at(s, k, &len)) || k + len != e) break;
    e = k;
  }
  return s.substr(b, e - b);
}

std::vector<CoreExample> load_core_examples(const std::string& path, TaskType type) {
  LineReader reader(path);
  std::vector<CoreExample> out;
  std::string line;
  int64_t line_no = 0;
  while (reader.next(line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(where, ": not valid JSON (", e.what(), ")");
    }
    NMOE_CHECK(j.is_object(), where, ": expected a JSON object");
    CoreExample ex;
    switch (type) {
      case TaskType::MultipleChoice:
        ex.query = get_string(j, "query", where);
        ex.choices = get_strings(j, "choices", where);
        ex.gold = get_gold(j, ex.choices.size(), where);
        break;
      case TaskType::Schema:
        ex.context_options = get_strings(j, "context_options", where);
        ex.continuation = get_string(j, "continuation", where);
        ex.gold = get_gold(j, ex.context_options.size(), where);
        break;
      case TaskType::LanguageModeling:
        ex.context = get_string(j, "context", where);
        ex.continuation = get_string(j, "continuation", where);
        break;
    }
    out.push_back(std::move(ex));
  }
  NMOE_CHECK(!out.empty(), path, ": no examples");
  return out;
}

std::vector<CoreExample> shuffle_and_truncate(std::vector<CoreExample> data, int64_t max_examples) {
  PyRandom(1337).shuffle(data);
  if (max_examples > 0 && static_cast<int64_t>(data.size()) > max_examples) data.resize(max_examples);
  return data;
}

std::vector<size_t> fewshot_indices(size_t n, size_t idx, int k) {
  if (k <= 0) return {};
  std::vector<size_t> available;
  available.reserve(n);
  for (size_t i = 0; i < n; ++i)
    if (i != idx) available.push_back(i);
  // Fewer other examples than shots (a tiny --max-examples): use them all, as sample() would refuse.
  if (available.size() < static_cast<size_t>(k)) return available;
  return PyRandom(1234 + idx).sample(available, static_cast<size_t>(k));
}

std::vector<std::string> render_prompts(const CoreTask& task, const std::vector<CoreExample>& data, size_t idx,
                                        const std::vector<size_t>& fewshot) {
  const std::string& d = task.delimiter;
  const CoreExample& ex = data.at(idx);
  std::vector<std::string> shots;
  for (size_t i : fewshot) {
    const CoreExample& f = data.at(i);
    switch (task.type) {
      case TaskType::MultipleChoice: shots.push_back(f.query + d + f.choices[f.gold]); break;
      case TaskType::Schema: shots.push_back(f.context_options[f.gold] + d + f.continuation); break;
      case TaskType::LanguageModeling: shots.push_back(py_strip(f.context) + d + f.continuation); break;
    }
  }
  std::vector<std::string> prompts;
  auto with_shots = [&](const std::string& last) {
    std::vector<std::string> blocks = shots;
    blocks.push_back(last);
    return join_blocks(blocks);
  };
  switch (task.type) {
    case TaskType::MultipleChoice:
      for (const std::string& c : ex.choices) prompts.push_back(with_shots(ex.query + d + c));
      break;
    case TaskType::Schema:
      for (const std::string& c : ex.context_options) prompts.push_back(with_shots(c + d + ex.continuation));
      break;
    case TaskType::LanguageModeling: {
      const std::string base = with_shots(py_strip(ex.context) + d);
      prompts.push_back(py_strip(base));
      prompts.push_back(base + ex.continuation);
      break;
    }
  }
  return prompts;
}

PreparedExample prepare_example(const CoreTask& task, const std::vector<std::string>& prompts, int gold,
                                const Encoder& encode, int32_t bos, int64_t max_len) {
  PreparedExample p;
  p.gold = gold;
  std::vector<std::vector<int32_t>> toks;
  for (const std::string& s : prompts) {
    std::vector<int32_t> t{bos};
    const std::vector<int32_t> body = encode(s);
    t.insert(t.end(), body.begin(), body.end());
    toks.push_back(std::move(t));
  }
  if (task.type == TaskType::LanguageModeling) {
    NMOE_ASSERT(toks.size() == 2);
    const auto& without = toks[0];
    auto& with = toks[1];
    if (without.size() >= with.size() || !std::equal(without.begin(), without.end(), with.begin())) {
      p.error = "the prompt without the continuation does not tokenize to a prefix of the prompt with it";
      return p;
    }
    p.seqs.push_back({std::move(with), static_cast<int64_t>(without.size()), 0});
    p.seqs.back().end = static_cast<int64_t>(p.seqs.back().tokens.size());
  } else {
    size_t common = 0;
    if (task.type == TaskType::MultipleChoice) {
      // Length of the token prefix that every choice shares.
      common = toks[0].size();
      for (const auto& t : toks) {
        size_t k = 0;
        while (k < common && k < t.size() && t[k] == toks[0][k]) ++k;
        common = k;
      }
      for (auto& t : toks) p.seqs.push_back({t, static_cast<int64_t>(common), static_cast<int64_t>(t.size())});
    } else {
      // Length of the token suffix that every context option shares.
      common = toks[0].size();
      for (const auto& t : toks) {
        size_t k = 0;
        while (k < common && k < t.size() && t[t.size() - 1 - k] == toks[0][toks[0].size() - 1 - k]) ++k;
        common = k;
      }
      for (auto& t : toks)
        p.seqs.push_back({t, static_cast<int64_t>(t.size() - common), static_cast<int64_t>(t.size())});
    }
  }
  for (ScoredSequence& s : p.seqs) {
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    if (n > max_len) {
      const int64_t crop = n - max_len;
      if (s.start - crop < 1) {
        p.error = "the scored span is longer than the model's sequence length";
        return p;
      }
      s.tokens.erase(s.tokens.begin(), s.tokens.begin() + crop);
      s.start -= crop;
      s.end -= crop;
    }
    if (s.start < 1 || s.end <= s.start) {
      p.error = "empty scored span (a choice equals the common prefix or suffix)";
      return p;
    }
  }
  return p;
}

}  // namespace nmoe
