// CORE examples: loading a task's JSON lines, few-shot sampling, prompt
// rendering and the token span each prompt is scored on.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "eval/core_bundle.h"

namespace nmoe {

struct CoreExample {
  std::string query;                          // multiple choice
  std::vector<std::string> choices;           // multiple choice
  std::vector<std::string> context_options;   // schema
  std::string context;                        // language modeling
  std::string continuation;                   // schema, language modeling
  int gold = 0;                               // multiple choice, schema
};

// Reads a task's JSONL file; errors name the file, line and missing field.
std::vector<CoreExample> load_core_examples(const std::string& path, TaskType type);

// Python's str.strip(): Unicode whitespace off both ends.
std::string py_strip(const std::string& s);

// Example order and subset: Random(1337).shuffle, then the first max_examples (0: all).
std::vector<CoreExample> shuffle_and_truncate(std::vector<CoreExample> data, int64_t max_examples);

// Few-shot indices of example idx: Random(1234 + idx).sample of the other indices.
std::vector<size_t> fewshot_indices(size_t n, size_t idx, int k);

// The prompts of example idx: one per choice (multiple choice) or context
// option (schema); for language modeling {without continuation (stripped),
// with continuation}.
std::vector<std::string> render_prompts(const CoreTask& task, const std::vector<CoreExample>& data, size_t idx,
                                        const std::vector<size_t>& fewshot);

// A token sequence and its scored span: tokens [start, end) are predicted from
// positions start-1 .. end-2.
struct ScoredSequence {
  std::vector<int32_t> tokens;
  int64_t start = 0, end = 0;
};

struct PreparedExample {
  std::vector<ScoredSequence> seqs;  // one per choice; one for language modeling
  int gold = 0;
  std::string error;  // non-empty: the example cannot be scored and counts as wrong
};

using Encoder = std::function<std::vector<int32_t>(const std::string&)>;

// Tokenizes the prompts (BOS first), selects the spans (multiple choice: after
// the choices' common token prefix; schema: their common token suffix;
// language modeling: the tokens "with" adds to "without") and left-crops
// sequences longer than max_len.
PreparedExample prepare_example(const CoreTask& task, const std::vector<std::string>& prompts, int gold,
                                const Encoder& encode, int32_t bos, int64_t max_len);

}  // namespace nmoe
