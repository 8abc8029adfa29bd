// CORE eval: bundle parsing, prompt construction and span selection for each
// task type, scoring, centered accuracy and CORE, with a scripted scorer.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <fstream>
#include <map>

#include "core/error.h"
#include "eval/core_bundle.h"
#include "eval/core_eval.h"
#include "eval/core_prompt.h"
#include "eval/py_random.h"
#include "test_util.h"

namespace nmoe {
namespace {

using test::error_of;
using test::expect_parts;

// One token per byte, so spans are easy to count by hand.
std::vector<int32_t> byte_tokens(const std::string& s) {
  std::vector<int32_t> out;
  for (unsigned char c : s) out.push_back(c);
  return out;
}
const Encoder kBytes = byte_tokens;
constexpr int32_t kBos = 256;

CoreTask make_task(TaskType type, int shots, const std::string& delim = " ") {
  CoreTask t;
  t.label = "t";
  t.type = type;
  t.num_fewshot = shots;
  t.delimiter = delim;
  return t;
}

TEST(CoreBundle, ShippedBundleHasTheTwentyTwoTasks) {
  const CoreBundle b = load_core_bundle(default_core_bundle_dir());
  ASSERT_EQ(b.tasks.size(), 22u);
  const CoreTask& arc = b.task("arc_easy");
  EXPECT_EQ(arc.type, TaskType::MultipleChoice);
  EXPECT_EQ(arc.num_fewshot, 10);
  EXPECT_EQ(arc.delimiter, "\nAnswer: ");
  EXPECT_DOUBLE_EQ(arc.random_baseline, 25);
  EXPECT_EQ(b.task("jeopardy").has_categories, true);
  EXPECT_EQ(b.task("winograd").type, TaskType::Schema);
  EXPECT_EQ(b.task("lambada_openai").type, TaskType::LanguageModeling);
  EXPECT_EQ(b.task("agi_eval_lsat_ar").num_fewshot, 3);
  EXPECT_DOUBLE_EQ(b.task("boolq").random_baseline, 62);
  EXPECT_DOUBLE_EQ(b.task("bigbench_language_identification").random_baseline, 9.1);
  EXPECT_EQ(b.task("copa").delimiter, " ");
  int present = 0;
  for (const CoreTask& t : b.tasks) present += b.present(t) ? 1 : 0;
  EXPECT_EQ(present, 18);  // hellaswag (two tasks), squad and coqa are not shipped
  EXPECT_FALSE(b.present(b.task("squad")));
  expect_parts(error_of([&] { b.task("mmlu"); }), {"unknown CORE task 'mmlu'", "arc_easy"});
}

TEST(CoreBundle, YamlScalarsAndCsvQuoting) {
  auto tasks = parse_core_yaml(
      "# comment\nicl_tasks:\n-\n  label: a\n  num_fewshot: [10]\n  continuation_delimiter: \"\\nAnswer: \\u00e9\"\n"
      "- label: 'it''s'\n  dataset_uri: x/y.jsonl\n",
      "core.yaml");
  ASSERT_EQ(tasks.size(), 2u);
  EXPECT_EQ(tasks[0].fields[1].second, "10");
  EXPECT_EQ(tasks[0].fields[2].second, "\nAnswer: \xc3\xa9");
  EXPECT_EQ(tasks[1].fields[0].second, "it's");
  auto rows = parse_csv("a,b,c\n\"x, y\",\"say \"\"hi\"\"\",\"two\nlines\"\r\nlast,,\n", "m.csv");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[1][0], "x, y");
  EXPECT_EQ(rows[1][1], "say \"hi\"");
  EXPECT_EQ(rows[1][2], "two\nlines");
  EXPECT_EQ(rows[2], (std::vector<std::string>{"last", "", ""}));
  expect_parts(error_of([] { parse_core_yaml("tasks:\n", "core.yaml"); }), {"core.yaml:1", "icl_tasks"});
  expect_parts(error_of([] { parse_core_yaml("icl_tasks:\n-\n  label\n", "core.yaml"); }), {"core.yaml:3", "key: value"});
  expect_parts(error_of([] { parse_core_yaml("icl_tasks:\n- num_fewshot: [0, 5]\n", "c.yaml"); }), {"c.yaml:2", "one value"});
  expect_parts(error_of([] { parse_csv("a,\"b\n", "m.csv"); }), {"m.csv", "never ends"});
}

class BadBundle : public test::FileTest {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(file("eval_data/x"));
    write_raw("core.yaml", "icl_tasks:\n- label: t1\n  dataset_uri: x/t1.jsonl\n  num_fewshot: [0]\n  icl_task_type: schema\n");
    write_raw("eval_meta_data.csv", "Eval Task,Random baseline\nt1,50\n");
  }
};

TEST_F(BadBundle, ErrorsNameTheFileAndWhatIsWrong) {
  EXPECT_EQ(load_core_bundle(tmp_.path).tasks.size(), 1u);
  expect_parts(error_of([&] { load_core_bundle(file("nope")); }), {"core.yaml", "not found", "--bundle"});
  write_raw("eval_meta_data.csv", "Eval Task,Baseline\nt1,50\n");
  expect_parts(error_of([&] { load_core_bundle(tmp_.path); }), {"eval_meta_data.csv", "Random baseline"});
  write_raw("eval_meta_data.csv", "Eval Task,Random baseline\nt2,50\n");
  expect_parts(error_of([&] { load_core_bundle(tmp_.path); }), {"no random baseline for task 't1'"});
  write_raw("eval_meta_data.csv", "Eval Task,Random baseline\nt1,fifty\n");
  expect_parts(error_of([&] { load_core_bundle(tmp_.path); }), {"'fifty' is not a number"});
  write_raw("eval_meta_data.csv", "Eval Task,Random baseline\nt1,50\n");
  write_raw("core.yaml", "icl_tasks:\n- label: t1\n  dataset_uri: x/t1.jsonl\n  num_fewshot: [0]\n  icl_task_type: essay\n");
  expect_parts(error_of([&] { load_core_bundle(tmp_.path); }), {"core.yaml:5", "'essay'"});
  write_raw("core.yaml", "icl_tasks:\n- label: t1\n  num_fewshot: [0]\n  icl_task_type: schema\n");
  expect_parts(error_of([&] { load_core_bundle(tmp_.path); }), {"core.yaml:2", "dataset_uri"});
  // A malformed task file: line and field.
  write_raw("eval_data/x/t1.jsonl", "{\"context_options\": [\"a\", \"b\"], \"continuation\": \"c\", \"gold\": 0}\n{\"gold\": 1}\n");
  expect_parts(error_of([&] { load_core_examples(file("eval_data/x/t1.jsonl"), TaskType::Schema); }),
               {"t1.jsonl:2", "context_options"});
  write_raw("eval_data/x/t1.jsonl", "{\"context_options\": [\"a\"], \"continuation\": \"c\", \"gold\": 3}\n");
  expect_parts(error_of([&] { load_core_examples(file("eval_data/x/t1.jsonl"), TaskType::Schema); }),
               {"t1.jsonl:1", "gold 3"});
  write_raw("eval_data/x/t1.jsonl", "{not json\n");
  expect_parts(error_of([&] { load_core_examples(file("eval_data/x/t1.jsonl"), TaskType::Schema); }),
               {"t1.jsonl:1", "not valid JSON"});
}

TEST(CorePrompt, PythonStrip) {
  EXPECT_EQ(py_strip("  a b \n\t"), "a b");
  EXPECT_EQ(py_strip("\xc2\xa0x\xe3\x80\x80"), "x");  // no-break space, ideographic space
  EXPECT_EQ(py_strip("\xe2\x80\x8bx"), "\xe2\x80\x8bx");  // zero-width space is not whitespace in Python
  EXPECT_EQ(py_strip("\x1c\x1fx\xc2\x85"), "x");
  EXPECT_EQ(py_strip(""), "");
  EXPECT_EQ(py_strip(" \n "), "");
}

TEST(CorePrompt, MultipleChoicePromptsAndCommonPrefixSpan) {
  std::vector<CoreExample> data(3);
  data[0].query = "Q0";
  data[0].choices = {"ab", "ac"};
  data[0].gold = 1;
  data[1].query = "Q1";
  data[1].choices = {"x", "y"};
  data[1].gold = 0;
  data[2].query = "Q2";
  data[2].choices = {"z", "w"};
  data[2].gold = 1;
  const CoreTask t = make_task(TaskType::MultipleChoice, 2, "\nA: ");
  auto prompts = render_prompts(t, data, 0, {2, 1});
  ASSERT_EQ(prompts.size(), 2u);
  EXPECT_EQ(prompts[0], "Q2\nA: w\n\nQ1\nA: x\n\nQ0\nA: ab");
  EXPECT_EQ(prompts[1], "Q2\nA: w\n\nQ1\nA: x\n\nQ0\nA: ac");
  PreparedExample p = prepare_example(t, prompts, data[0].gold, kBytes, kBos, 1000);
  ASSERT_TRUE(p.error.empty());
  ASSERT_EQ(p.seqs.size(), 2u);
  // BOS + 26 bytes; the choices share "...A: a", so only the last byte is scored.
  EXPECT_EQ(p.seqs[0].tokens.size(), 27u);
  EXPECT_EQ(p.seqs[0].tokens[0], kBos);
  EXPECT_EQ(p.seqs[0].start, 26);
  EXPECT_EQ(p.seqs[0].end, 27);
  EXPECT_EQ(p.gold, 1);
}

TEST(CorePrompt, SchemaPromptsAndCommonSuffixSpan) {
  std::vector<CoreExample> data(2);
  data[0].context_options = {"The cat", "The dog"};
  data[0].continuation = "barked.";
  data[0].gold = 1;
  data[1].context_options = {"One", "Two"};
  data[1].continuation = "end";
  data[1].gold = 0;
  const CoreTask t = make_task(TaskType::Schema, 1);
  auto prompts = render_prompts(t, data, 0, {1});
  ASSERT_EQ(prompts.size(), 2u);
  EXPECT_EQ(prompts[0], "One end\n\nThe cat barked.");
  EXPECT_EQ(prompts[1], "One end\n\nThe dog barked.");
  PreparedExample p = prepare_example(t, prompts, 1, kBytes, kBos, 1000);
  ASSERT_TRUE(p.error.empty());
  // Common suffix " barked." (8 bytes) is the span of both.
  for (const auto& s : p.seqs) {
    EXPECT_EQ(s.end, static_cast<int64_t>(s.tokens.size()));
    EXPECT_EQ(s.end - s.start, 8);
  }
}

TEST(CorePrompt, LanguageModelingStripsAndScoresTheContinuation) {
  std::vector<CoreExample> data(2);
  data[0].context = "  The answer is ";
  data[0].continuation = "42";
  data[1].context = "\nShot context\n";
  data[1].continuation = "yes";
  const CoreTask t = make_task(TaskType::LanguageModeling, 1, "\nAnswer: ");
  auto prompts = render_prompts(t, data, 0, {1});
  ASSERT_EQ(prompts.size(), 2u);
  EXPECT_EQ(prompts[0], "Shot context\nAnswer: yes\n\nThe answer is\nAnswer:");  // stripped
  EXPECT_EQ(prompts[1], "Shot context\nAnswer: yes\n\nThe answer is\nAnswer: 42");
  PreparedExample p = prepare_example(t, prompts, 0, kBytes, kBos, 1000);
  ASSERT_TRUE(p.error.empty());
  ASSERT_EQ(p.seqs.size(), 1u);
  const auto& s = p.seqs[0];
  // The span is what "with" adds to the stripped "without": " 42".
  EXPECT_EQ(s.end - s.start, 3);
  EXPECT_EQ(s.tokens[s.start], ' ');
  EXPECT_EQ(s.tokens[s.end - 1], '2');
}

TEST(CorePrompt, LanguageModelingNeedsWithoutToBeATokenPrefix) {
  // An encoder that merges "r4" into one token: "without" ends in "r", "with" in "r42" -> not a prefix.
  const Encoder merging = [](const std::string& s) {
    std::vector<int32_t> out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == 'r' && i + 1 < s.size() && s[i + 1] == '4') {
        out.push_back(300);
        ++i;
      } else {
        out.push_back(static_cast<unsigned char>(s[i]));
      }
    }
    return out;
  };
  const CoreTask t = make_task(TaskType::LanguageModeling, 0, "");
  PreparedExample p = prepare_example(t, {"answer", "answer42"}, 0, merging, kBos, 1000);
  EXPECT_NE(p.error.find("prefix"), std::string::npos);
}

TEST(CorePrompt, LongSequencesAreCroppedOnTheLeft) {
  const CoreTask t = make_task(TaskType::MultipleChoice, 0);
  PreparedExample p = prepare_example(t, {"0123456789 yes", "0123456789 no"}, 0, kBytes, kBos, 8);
  ASSERT_TRUE(p.error.empty()) << p.error;
  // "BOS 0123456789 yes" is 15 tokens: the first 7 go; the span keeps its tokens.
  EXPECT_EQ(p.seqs[0].tokens.size(), 8u);
  EXPECT_EQ(std::string(p.seqs[0].tokens.begin(), p.seqs[0].tokens.end()), "6789 yes");
  EXPECT_EQ(p.seqs[0].start, 11 + 1 - 7);
  EXPECT_EQ(p.seqs[0].end, 8);
  EXPECT_EQ(std::string(p.seqs[1].tokens.begin() + p.seqs[1].start, p.seqs[1].tokens.end()), "no");
  // A span longer than the sequence length cannot be scored.
  PreparedExample q = prepare_example(t, {"a long answer", "another long answer"}, 0, kBytes, kBos, 4);
  EXPECT_NE(q.error.find("longer than"), std::string::npos);
}

TEST(CorePrompt, ShuffleAndFewShotFollowPythonRandom) {
  // Python: random.Random(1337).shuffle(list(range(10))) and
  // random.Random(1234 + 3).sample([i for i in range(10) if i != 3], 4).
  std::vector<CoreExample> data(10);
  for (int i = 0; i < 10; ++i) data[i].query = std::to_string(i);
  auto shuffled = shuffle_and_truncate(data, 0);
  std::vector<int> order;
  for (const auto& e : shuffled) order.push_back(std::stoi(e.query));
  PyRandom r(1337);
  std::vector<int> expect = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  r.shuffle(expect);
  EXPECT_EQ(order, expect);
  EXPECT_EQ(shuffle_and_truncate(data, 4).size(), 4u);
  const std::vector<size_t> shots = fewshot_indices(10, 3, 4);
  ASSERT_EQ(shots.size(), 4u);
  for (size_t s : shots) EXPECT_NE(s, 3u);
  std::vector<size_t> avail = {0, 1, 2, 4, 5, 6, 7, 8, 9};
  EXPECT_EQ(shots, PyRandom(1237).sample(avail, 4));
  EXPECT_EQ(fewshot_indices(3, 0, 10).size(), 2u);  // fewer examples than shots: all the others
}

// A scorer that scripts its answers: the mean NLL of a sequence is its last
// token, and greedy decoding matches when the span holds a '!'.
class ScriptedScorer : public SequenceScorer {
 public:
  int64_t max_len() const override { return 64; }
  int64_t batch_size() const override { return 3; }
  std::vector<SequenceScore> score(const std::vector<const ScoredSequence*>& batch) override {
    EXPECT_LE(batch.size(), 3u);
    ++calls;
    std::vector<SequenceScore> out;
    for (const ScoredSequence* s : batch) {
      const bool bang = std::find(s->tokens.begin() + s->start, s->tokens.begin() + s->end, '!') !=
                        s->tokens.begin() + s->end;
      out.push_back({static_cast<double>(s->tokens.back()), bang});
    }
    return out;
  }
  int calls = 0;
};

class ScriptedBundle : public test::FileTest {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(file("eval_data/x"));
    write_raw("core.yaml",
              "icl_tasks:\n"
              "- label: mc\n  dataset_uri: x/mc.jsonl\n  num_fewshot: [1]\n  icl_task_type: multiple_choice\n"
              "- label: lm\n  dataset_uri: x/lm.jsonl\n  num_fewshot: [0]\n  icl_task_type: language_modeling\n"
              "- label: gone\n  dataset_uri: x/gone.jsonl\n  num_fewshot: [0]\n  icl_task_type: schema\n");
    write_raw("eval_meta_data.csv", "Eval Task,Random baseline\nmc,25\nlm,0\ngone,50\n");
    // mc: the lowest last byte wins: gold is right in 3 of 4 examples.
    write_raw("eval_data/x/mc.jsonl",
              "{\"query\": \"q\", \"choices\": [\"a\", \"b\", \"c\"], \"gold\": 0}\n"
              "{\"query\": \"q\", \"choices\": [\"b\", \"a\"], \"gold\": 1}\n"
              "{\"query\": \"q\", \"choices\": [\"ca\", \"ba\"], \"gold\": 0}\n"
              "{\"query\": \"q\", \"choices\": [\"c\", \"b\"], \"gold\": 0}\n");
    // lm: correct when the continuation holds a '!'.
    write_raw("eval_data/x/lm.jsonl", "{\"context\": \"c\", \"continuation\": \"!x\"}\n{\"context\": \"c\", \"continuation\": \"?x\"}\n");
  }
};

TEST_F(ScriptedBundle, AccuracyCenteredAndCoreOverPresentTasks) {
  const CoreBundle b = load_core_bundle(tmp_.path);
  ScriptedScorer scorer;
  std::ostringstream log;
  CoreEvalOptions o;
  o.out = &log;
  CoreEvalResult r = run_core_eval(scorer, kBytes, kBos, b, o);
  ASSERT_EQ(r.tasks.size(), 3u);
  EXPECT_EQ(r.tasks[0].examples, 4);
  EXPECT_EQ(r.tasks[0].correct, 3);  // ties go to the first choice (example 3)
  EXPECT_DOUBLE_EQ(r.tasks[0].accuracy, 0.75);
  EXPECT_DOUBLE_EQ(r.tasks[0].centered, (0.75 - 0.25) / 0.75);
  EXPECT_EQ(r.tasks[1].correct, 1);
  EXPECT_DOUBLE_EQ(r.tasks[1].centered, 0.5);
  EXPECT_FALSE(r.tasks[2].present);
  EXPECT_EQ(r.missing, std::vector<std::string>{"gone"});
  EXPECT_EQ(r.n_scored, 2);
  EXPECT_DOUBLE_EQ(r.core, ((0.75 - 0.25) / 0.75 + 0.5) / 2);
  EXPECT_EQ(r.core_label(), "CORE over 2 of 3 tasks");
  expect_parts(log.str(), {"gone: missing"});
  expect_parts(format_core_table(r), {"mc", "0.7500", "missing", "CORE over 2 of 3 tasks", "missing task files"});
  EXPECT_GE(scorer.calls, 4);  // 11 sequences in batches of at most 3

  o.max_examples = 2;
  o.tasks = {"lm"};
  CoreEvalResult r2 = run_core_eval(scorer, kBytes, kBos, b, o);
  ASSERT_EQ(r2.tasks.size(), 1u);
  EXPECT_EQ(r2.tasks[0].examples, 2);
  EXPECT_FALSE(r2.complete());
  EXPECT_EQ(r2.core_label(), "CORE over 1 of 3 tasks");
  o.tasks = {"nope"};
  expect_parts(error_of([&] { run_core_eval(scorer, kBytes, kBos, b, o); }), {"unknown CORE task 'nope'"});
}

TEST(CoreEval, CenteredAccuracy) {
  EXPECT_DOUBLE_EQ(centered_accuracy(0.5, 50), 0.0);
  EXPECT_DOUBLE_EQ(centered_accuracy(1.0, 25), 1.0);
  EXPECT_DOUBLE_EQ(centered_accuracy(0.1, 0), 0.1);
  EXPECT_DOUBLE_EQ(centered_accuracy(0.2, 100), 0.2);  // a baseline of 100% or more is ignored
  EXPECT_LT(centered_accuracy(0.4, 62), 0.0);         // not clamped
}

}  // namespace
}  // namespace nmoe
