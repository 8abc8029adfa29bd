// Tokenizer internals: the split patterns (fast against exact), the merge
// against a direct transcription of tiktoken's loop, long runs, thread safety.
#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "core/paths.h"
#include "test_tokenizer_util.h"
#include "tokenizer/internal.h"
#include "tokenizer/tokenizer.h"

namespace nmoe {
namespace {

using namespace tokenizer_test;

TEST(TokenizerInternals, Pieces) {
  using tok::SplitPattern;
  using V = std::vector<std::string>;
  EXPECT_EQ(tok::pretokenize(SplitPattern::kGpt2, "Hello world  foo's  \n"),
            (V{"Hello", " world", " ", " foo", "'s", "  \n"}));
  EXPECT_EQ(tok::pretokenize(SplitPattern::kGpt2, "a\n\nb 123!!"), (V{"a", "\n", "\n", "b", " 123", "!!"}));
  EXPECT_EQ(tok::pretokenize(SplitPattern::kO200k, "I'M HELLO's 12345 x\n\n  y"),
            (V{"I'M", " HELLO's", " ", "123", "45", " x", "\n\n", " ", " y"}));
  EXPECT_EQ(tok::pretokenize(SplitPattern::kO200k, "camelCase !!\n/x"), (V{"camel", "Case", " !!\n/", "x"}));
  // Rust's \s is White_Space: U+180E is not (PCRE2's \s would take it), U+3000 and U+85 are.
  EXPECT_EQ(tok::pretokenize(SplitPattern::kGpt2, "a\u180Eb"), (V{"a", "\u180E", "b"}));
  EXPECT_EQ(tok::pretokenize(SplitPattern::kGpt2, "a\u3000\u3000b"), (V{"a", "\u3000", "\u3000", "b"}));
  EXPECT_EQ(tok::pretokenize(SplitPattern::kGpt2, "a\xC2\x85 b"), (V{"a", "\xC2\x85", " b"}));
  // a Unicode 16 letter (Garay) is a letter, as in tiktoken; a Unicode 17 one (Sidetic) is not
  EXPECT_EQ(tok::pretokenize(SplitPattern::kGpt2, "x" + utf8(0x10D50) + " " + utf8(0x10940) + "y"),
            (V{"x" + utf8(0x10D50), " " + utf8(0x10940), "y"}));
}

// The fast pattern must give the exact pattern's pieces on any text without
// the few code points where PCRE2's tables differ from tiktoken's.
TEST(TokenizerInternals, FastPatternEqualsExactPattern) {
  using tok::PatternChoice;
  using tok::SplitPattern;
  const std::vector<std::string> units = {
      "a", "z", "A", "Z", "q", "Q", "0", "7", " ", " ", " ", "\t", "\n", "\r", "\r\n", "\v", "\f", "'", "'", "/", "!",
      ".", ",", "-", "_", "\"", "'s", "'S", "'t", "'T", "'re", "'RE", "'rE", "'ve", "'Ve", "'m", "'M", "'ll", "'LL",
      "'lL", "'d", "'D", "'x", "\u017F", "'\u017F", "\u212A", "'\u212A", "\u00C9", "\u03A9", "\u0416", "\u00E9",
      "\u03C9", "\u0436", "\u00DF", "\u1E9E", "\u0130", "\u0131", "\uFB05", "\u01C5", "\u1F88", "\u02B0", "\u30FC",
      "\u65E5", "\u05D0", "\u0E01", "\u0301", "\u0E31", "\u093E", "\u0663", "\u216B", "\u00BD", "\u00B2", "\u00A0",
      "\u0085", "\u3000", "\u2028", "\u1680", "\u2003", "\U0001F600", "\u200D", "\uFE0F", "\u200B", "\x1C", "\uFFFD",
      "\u00AD", "\u2019", "\u0295"};
  const tok::Pretokenizer splitters[2] = {tok::Pretokenizer(SplitPattern::kGpt2), tok::Pretokenizer(SplitPattern::kO200k)};
  auto state = splitters[0].new_state();
  auto pieces = [&](const tok::Pretokenizer& pt, const std::string& s, bool exact) {
    std::vector<std::pair<size_t, size_t>> out;
    size_t pos = 0, b = 0, e = 0;
    while (pt.next(*state, s, pos, b, e, exact)) out.emplace_back(b, e), pos = e;
    return out;
  };
  std::mt19937 rng(2024);
  for (int i = 0; i < 30000; ++i) {
    std::string s;
    const size_t n = 1 + rng() % 40;
    for (size_t k = 0; k < n; ++k) s += units[rng() % units.size()];
    ASSERT_TRUE(tok::fast_pattern_applies(s));
    for (const auto& pt : splitters) ASSERT_EQ(pieces(pt, s, false), pieces(pt, s, true)) << testing::PrintToString(s);
  }
  const std::string text = shakespeare();
  for (SplitPattern p : {SplitPattern::kGpt2, SplitPattern::kO200k})
    EXPECT_EQ(tok::pretokenize(p, text, PatternChoice::kFast), tok::pretokenize(p, text, PatternChoice::kExact));
  // texts with a divergent code point take the exact pattern
  EXPECT_FALSE(tok::fast_pattern_applies("a\u180Eb"));
  EXPECT_FALSE(tok::fast_pattern_applies("abc " + utf8(0x31350)));
  EXPECT_FALSE(tok::fast_pattern_applies(utf8(0x897)));
  EXPECT_TRUE(tok::fast_pattern_applies("abc " + utf8(0x10940) + utf8(0x1F600) + utf8(0x4E00)));
}

// tiktoken's _byte_pair_merge transcribed literally: parts are byte ranges,
// ranks are looked up by the bytes of the concatenation.
Ids tiktoken_merge(const tok::BpeVocab& v, std::string_view piece) {
  std::vector<size_t> starts;
  for (size_t i = 0; i <= piece.size(); ++i) starts.push_back(i);
  auto rank = [&](size_t i) {  // pair of parts i and i + 1
    if (i + 2 >= starts.size()) return tok::kNoToken;
    return v.find(piece.substr(starts[i], starts[i + 2] - starts[i]));
  };
  for (;;) {
    uint32_t best = tok::kNoToken;
    size_t bi = 0;
    for (size_t i = 0; i + 2 < starts.size(); ++i) {
      const uint32_t r = rank(i);
      if (r < best) best = r, bi = i;
    }
    if (best == tok::kNoToken) break;
    starts.erase(starts.begin() + static_cast<long>(bi) + 1);
  }
  Ids out;
  for (size_t i = 0; i + 1 < starts.size(); ++i) out.push_back(v.find(piece.substr(starts[i], starts[i + 1] - starts[i])));
  return out;
}

TEST(TokenizerInternals, MergeMatchesTiktokenLoop) {
  const tok::BpeVocab v(tok::load_tiktoken_ranks(asset_path("tokenizers/o200k_base/o200k_base.tiktoken")).tokens);
  EXPECT_EQ(v.num_tokens(), 199998u);
  std::mt19937 rng(7);
  const std::string alphabets[] = {"ab", "abcdefghijklmnopqrstuvwxyz", "aeiouy tnr", "0123456789",
                                   " \n", "=-+*", "\xC3\xA9\xC3\xA8"};
  tok::MergeScratch scratch;
  for (int i = 0; i < 600; ++i) {
    const std::string& a = alphabets[rng() % std::size(alphabets)];
    const size_t n = 1 + rng() % (i % 3 == 0 ? 600 : 100);  // both the short and the long path
    std::string piece;
    for (size_t k = 0; k < n; ++k) piece += a[rng() % a.size()];
    Ids got;
    tok::bpe_merge(v, piece, got, scratch);
    ASSERT_EQ(got, tiktoken_merge(v, piece)) << piece;
  }
}

TEST(TokenizerInternals, ConcurrentEncodeGivesSameIds) {
  const std::string text = shakespeare();
  for (const char* name : {"gpt2", "o200k_base"}) {
    auto t = load_tokenizer(name);
    const Ids want = t->encode_ordinary(text);
    std::vector<Ids> got(4);
    std::vector<std::thread> threads;
    for (size_t k = 0; k < got.size(); ++k) {
      threads.emplace_back([&, k] {
        // each thread also uses another tokenizer in between, to exercise per-thread state
        auto other = load_tokenizer(k % 2 ? "o200k_harmony" : "gpt2");
        for (int rep = 0; rep < 2; ++rep) {
          got[k].clear();
          t->encode_ordinary(text, got[k]);
          other->encode_ordinary(text.substr(0, 10000));
        }
      });
    }
    for (auto& th : threads) th.join();
    for (const Ids& g : got) EXPECT_EQ(g, want) << name;
  }
}

TEST(TokenizerInternals, ConcurrentLoad) {
  std::vector<std::shared_ptr<const Tokenizer>> got(4);
  std::vector<std::thread> threads;
  for (size_t k = 0; k < got.size(); ++k) threads.emplace_back([&, k] { got[k] = load_tokenizer("o200k_harmony"); });
  for (auto& th : threads) th.join();
  for (const auto& g : got) EXPECT_EQ(g.get(), got[0].get());
}

TEST(TokenizerInternals, LongRunsAreLinear) {
  // long single pieces (whitespace, one letter, digits) must neither recurse deeply nor take quadratic time
  for (const char* name : {"gpt2", "o200k_base"}) {
    auto t = load_tokenizer(name);
    for (const std::string& s : {std::string(2000000, ' ') + "x", std::string(1000000, 'a'),
                                 std::string(500000, '\n') + " y", std::string(300000, '7'),
                                 std::string(300000, '!') + "\n\n"}) {
      const Ids ids = t->encode_ordinary(s);
      ASSERT_EQ(t->decode(ids), s) << name;
    }
  }
}

}  // namespace
}  // namespace nmoe
