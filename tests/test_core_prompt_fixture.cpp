// CORE prompts and scored spans against an independent Python statement of the
// eval's rules: tests/reference/fixtures/core_prompts.json, made by
// tests/reference/make_core_prompt_fixture.py from the shipped bundle. For the
// first examples of every shipped task (Random(1337) shuffle, first 20 kept),
// the few-shot indices, the prompts, and per sequence the byte tokens (BOS 256
// first, left-cropped to 256) with their scored span must be reproduced exactly,
// and unscorable examples must be unscorable in nmoe too.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "eval/core_bundle.h"
#include "eval/core_prompt.h"
#include "test_util.h"

namespace nmoe {
namespace {

using nlohmann::json;

const json& fixture() {
  static const json doc = [] {
    const std::string path = test::source_dir() + "/tests/reference/fixtures/core_prompts.json";
    std::ifstream f(path);
    NMOE_CHECK(f.good(), "cannot read ", path, " (run tests/reference/make_core_prompt_fixture.py)");
    return json::parse(f);
  }();
  return doc;
}

// The byte tokenizer: one token per UTF-8 byte, 0..255.
std::vector<int32_t> bytes_of(const std::string& s) {
  std::vector<int32_t> out;
  out.reserve(s.size());
  for (unsigned char c : s) out.push_back(c);
  return out;
}

// Where two strings first differ, with a little of each around it, for readable failures.
std::string describe_difference(const std::string& a, const std::string& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  const size_t from = i < 40 ? 0 : i - 40;
  return "sizes " + std::to_string(a.size()) + " vs " + std::to_string(b.size()) + ", first difference at byte " +
         std::to_string(i) + ":\n  nmoe:   " + json(a.substr(from, 80)).dump() + "\n  python: " +
         json(b.substr(from, 80)).dump();
}

TEST(CorePromptFixture, CoversTheShippedTasks) {
  const CoreBundle b = load_core_bundle(default_core_bundle_dir());
  const json& fx = fixture();
  std::set<std::string> in_fixture, missing;
  for (const json& t : fx.at("tasks")) in_fixture.insert(t.at("label").get<std::string>());
  for (const json& m : fx.at("missing")) missing.insert(m.get<std::string>());
  for (const CoreTask& t : b.tasks) {
    if (b.present(t))
      EXPECT_TRUE(in_fixture.count(t.label)) << t.label << " is shipped but not in the fixture";
    else
      EXPECT_TRUE(missing.count(t.label)) << t.label << " is not shipped but the fixture has it";
  }
  EXPECT_EQ(in_fixture.size(), 18u);
  EXPECT_EQ(fx.at("bos").get<int>(), 256);
  EXPECT_EQ(fx.at("max_len").get<int>(), 256);
  EXPECT_EQ(fx.at("max_examples").get<int>(), 20);
  // The fixture exercises every task type, left-cropping and an unscorable example.
  std::set<std::string> types;
  int errors = 0, cropped = 0;
  for (const json& t : fx.at("tasks")) {
    types.insert(t.at("type").get<std::string>());
    for (const json& e : t.at("examples")) {
      errors += e.at("error").get<bool>() ? 1 : 0;
      for (const json& s : e.at("seqs")) cropped += s.at("tokens").at(0).get<int>() != 256 ? 1 : 0;
    }
  }
  EXPECT_EQ(types.size(), 3u);
  EXPECT_GE(errors, 1);
  EXPECT_GE(cropped, 1);
}

TEST(CorePromptFixture, PromptsAndSpansMatchPython) {
  const CoreBundle b = load_core_bundle(default_core_bundle_dir());
  const json& fx = fixture();
  const int32_t bos = fx.at("bos").get<int32_t>();
  const int64_t max_len = fx.at("max_len").get<int64_t>();
  const int64_t max_examples = fx.at("max_examples").get<int64_t>();
  const Encoder encode = bytes_of;
  int n_examples = 0, n_seqs = 0;
  for (const json& ft : fx.at("tasks")) {
    const std::string label = ft.at("label").get<std::string>();
    SCOPED_TRACE("task " + label);
    const CoreTask& task = b.task(label);
    // The bundle as the Python parser read it.
    EXPECT_EQ(task_type_name(task.type), ft.at("type").get<std::string>());
    EXPECT_EQ(task.num_fewshot, ft.at("num_fewshot").get<int>());
    EXPECT_EQ(task.delimiter, ft.at("delimiter").get<std::string>());
    ASSERT_TRUE(b.present(task));
    const std::vector<CoreExample> data =
        shuffle_and_truncate(load_core_examples(b.task_path(task), task.type), max_examples);
    ASSERT_EQ(static_cast<int64_t>(data.size()), ft.at("n_data").get<int64_t>());
    const json& examples = ft.at("examples");
    for (size_t idx = 0; idx < examples.size(); ++idx) {
      SCOPED_TRACE("example " + std::to_string(idx));
      const json& fe = examples[idx];
      ++n_examples;
      const std::vector<size_t> shots = fewshot_indices(data.size(), idx, task.num_fewshot);
      EXPECT_EQ(shots, fe.at("fewshot").get<std::vector<size_t>>());
      const std::vector<std::string> prompts = render_prompts(task, data, idx, shots);
      const auto want_prompts = fe.at("prompts").get<std::vector<std::string>>();
      ASSERT_EQ(prompts.size(), want_prompts.size());
      for (size_t i = 0; i < prompts.size(); ++i)
        EXPECT_TRUE(prompts[i] == want_prompts[i]) << "prompt " << i << ": "
                                                   << describe_difference(prompts[i], want_prompts[i]);
      // Spans are checked on nmoe's own prompts, so a prompt difference does not hide a span one.
      const PreparedExample p = prepare_example(task, prompts, data[idx].gold, encode, bos, max_len);
      if (!fe.at("gold").is_null()) {
        EXPECT_EQ(p.gold, fe.at("gold").get<int>());
      }
      const bool want_error = fe.at("error").get<bool>();
      EXPECT_EQ(!p.error.empty(), want_error)
          << "nmoe: '" << p.error << "', python: '" << fe.at("error_reason").get<std::string>() << "'";
      if (want_error || !p.error.empty()) continue;
      const json& want_seqs = fe.at("seqs");
      ASSERT_EQ(p.seqs.size(), want_seqs.size());
      for (size_t s = 0; s < p.seqs.size(); ++s) {
        SCOPED_TRACE("sequence " + std::to_string(s));
        ++n_seqs;
        const ScoredSequence& got = p.seqs[s];
        const json& want = want_seqs[s];
        EXPECT_EQ(got.start, want.at("start").get<int64_t>());
        EXPECT_EQ(got.end, want.at("end").get<int64_t>());
        const auto want_tokens = want.at("tokens").get<std::vector<int32_t>>();
        EXPECT_EQ(got.tokens.size(), want_tokens.size());
        if (got.tokens != want_tokens) {
          const auto m = std::mismatch(got.tokens.begin(), got.tokens.end(), want_tokens.begin(), want_tokens.end());
          ADD_FAILURE() << "tokens differ first at position " << (m.first - got.tokens.begin());
        }
      }
    }
  }
  EXPECT_EQ(n_examples, 18 * 5);
  EXPECT_GT(n_seqs, 100);
}

}  // namespace
}  // namespace nmoe
