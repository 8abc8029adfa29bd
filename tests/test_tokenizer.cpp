// Tokenizers: names and sizes, hand-checked ids, round trips, UTF-8 repair,
// the long-piece merge against a direct transcription of tiktoken's loop, and
// thread safety. tests/test_tokenizer_vectors.cpp compares against tiktoken.
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "core/paths.h"
#include "tokenizer/internal.h"
#include "tokenizer/tokenizer.h"

namespace nmoe {
namespace {

using Ids = std::vector<uint32_t>;

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string shakespeare() { return read_text(std::string(NMOE_SOURCE_DIR) + "/data/corpus/tinyshakespeare.txt"); }

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

TEST(Tokenizer, NamesSizesAndEos) {
  struct Want {
    const char* name;
    uint32_t vocab, eos;
  };
  for (const Want& w : {Want{"bytes", 257, 256}, Want{"gpt2", 50257, 50256}, Want{"o200k_base", 200019, 199999},
                        Want{"o200k_harmony", 201088, 199999}}) {
    auto t = load_tokenizer(w.name);
    EXPECT_EQ(t->name(), w.name);
    EXPECT_EQ(t->vocab_size(), w.vocab) << w.name;
    EXPECT_EQ(t->eos_id(), w.eos) << w.name;
    EXPECT_EQ(t->token_bytes(t->eos_id()), "<|endoftext|>") << w.name;
    EXPECT_EQ(load_tokenizer(w.name).get(), t.get()) << "loaded once";
    EXPECT_THROW(t->token_bytes(t->vocab_size()), Error);
    const uint32_t bad = t->vocab_size();
    EXPECT_THROW(t->decode(&bad, 1), Error);
  }
  try {
    load_tokenizer("cl100k_base");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cl100k_base"), std::string::npos) << msg;
    EXPECT_NE(msg.find("o200k_harmony"), std::string::npos) << msg;
    EXPECT_NE(msg.find("gpt2"), std::string::npos) << msg;
  }
}

TEST(Tokenizer, SpecialTokens) {
  auto gpt2 = load_tokenizer("gpt2");
  EXPECT_EQ(gpt2->token_bytes(0), "!");
  EXPECT_EQ(gpt2->token_bytes(50255), " gazed");  // the last merge of vocab.bpe
  auto base = load_tokenizer("o200k_base");
  EXPECT_EQ(base->token_bytes(200018), "<|endofprompt|>");
  EXPECT_EQ(base->token_bytes(199998), "");  // no token: padding
  EXPECT_EQ(base->token_bytes(200000), "");
  auto h = load_tokenizer("o200k_harmony");
  const std::pair<uint32_t, const char*> named[] = {
      {199998, "<|startoftext|>"}, {199999, "<|endoftext|>"},   {200000, "<|reserved_200000|>"},
      {200001, "<|reserved_200001|>"}, {200002, "<|return|>"},  {200003, "<|constrain|>"},
      {200004, "<|reserved_200004|>"}, {200005, "<|channel|>"}, {200006, "<|start|>"},
      {200007, "<|end|>"},             {200008, "<|message|>"}, {200009, "<|reserved_200009|>"},
      {200011, "<|reserved_200011|>"}, {200012, "<|call|>"},    {200013, "<|reserved_200013|>"},
      {200018, "<|endofprompt|>"},     {201087, "<|reserved_201087|>"}};
  for (const auto& [id, text] : named) EXPECT_EQ(h->token_bytes(id), text) << id;
  const Ids ids = {200006, 1428, 200008, 200007};
  EXPECT_EQ(h->decode(ids), "<|start|>user<|message|><|end|>");
  EXPECT_EQ(h->token_bytes(1428), "user");
}

TEST(Tokenizer, HandCheckedIds) {
  auto gpt2 = load_tokenizer("gpt2");
  EXPECT_EQ(gpt2->encode_ordinary("Hello world"), (Ids{15496, 995}));
  EXPECT_EQ(gpt2->encode_ordinary("hello world"), (Ids{31373, 995}));
  EXPECT_EQ(gpt2->encode_ordinary(" hello"), (Ids{23748}));
  EXPECT_EQ(gpt2->encode_ordinary("<|endoftext|>"), (Ids{27, 91, 437, 1659, 5239, 91, 29}));
  // tiktoken's tests/test_encoding.py, test_simple_repeated
  EXPECT_EQ(gpt2->encode_ordinary("0"), (Ids{15}));
  EXPECT_EQ(gpt2->encode_ordinary("00"), (Ids{405}));
  EXPECT_EQ(gpt2->encode_ordinary("000"), (Ids{830}));
  EXPECT_EQ(gpt2->encode_ordinary("0000"), (Ids{2388}));
  EXPECT_EQ(gpt2->encode_ordinary("00000"), (Ids{20483}));
  EXPECT_EQ(gpt2->encode_ordinary("000000"), (Ids{10535}));
  EXPECT_EQ(gpt2->encode_ordinary("0000000"), (Ids{24598}));
  EXPECT_EQ(gpt2->encode_ordinary("00000000"), (Ids{8269}));
  EXPECT_EQ(gpt2->encode_ordinary("000000000"), (Ids{10535, 830}));
  EXPECT_EQ(gpt2->encode_ordinary(""), Ids{});
  auto o200k = load_tokenizer("o200k_base");
  EXPECT_EQ(o200k->encode_ordinary("Hello world"), (Ids{13225, 2375}));
  EXPECT_EQ(o200k->encode_ordinary("hello world"), (Ids{24912, 2375}));
  EXPECT_EQ(load_tokenizer("o200k_harmony")->encode_ordinary("hello world"), (Ids{24912, 2375}));
  EXPECT_EQ(load_tokenizer("bytes")->encode_ordinary("Hé"), (Ids{72, 0xC3, 0xA9}));
}

TEST(Tokenizer, Pieces) {
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
TEST(Tokenizer, FastPatternEqualsExactPattern) {
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

TEST(Tokenizer, RoundTripShakespeare) {
  const std::string text = shakespeare();
  ASSERT_GT(text.size(), 1000000u);
  for (const auto& name : tokenizer_names()) {
    auto t = load_tokenizer(name);
    const Ids ids = t->encode_ordinary(text);
    EXPECT_EQ(t->decode(ids), text) << name;
    for (uint32_t id : ids) ASSERT_LT(id, t->vocab_size());
  }
}

// Random text from a mix of scripts, whitespace, digits, emoji and marks.
std::string random_text(std::mt19937& rng, size_t n_chars) {
  static const std::vector<std::pair<uint32_t, uint32_t>> ranges = {
      {0x20, 0x7E},       {0x20, 0x20},       {0x61, 0x7A},    {0x41, 0x5A},     {0x30, 0x39},    {0x09, 0x0D},
      {0xA0, 0xFF},       {0x100, 0x24F},     {0x300, 0x36F},  {0x370, 0x3FF},   {0x400, 0x4FF},  {0x590, 0x6FF},
      {0x900, 0x97F},     {0xE00, 0xE7F},     {0x1680, 0x1680}, {0x180E, 0x180E}, {0x2000, 0x206F}, {0x3000, 0x30FF},
      {0x4E00, 0x9FFF},   {0xAC00, 0xD7A3},   {0xFE00, 0xFE0F}, {0xFF00, 0xFFEF}, {0x1F300, 0x1FAFF}, {0x1F1E6, 0x1F1FF},
      {0x10D40, 0x10D8F}, {0x31350, 0x323AF}, {0x10000, 0x10FFFF}};
  std::string s;
  for (size_t i = 0; i < n_chars; ++i) {
    const auto& [lo, hi] = ranges[rng() % ranges.size()];
    uint32_t cp = lo + static_cast<uint32_t>(rng() % (hi - lo + 1));
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
    if (rng() % 8 == 0) s += "\u200D";  // zero width joiner, as in emoji sequences
    s += utf8(cp);
  }
  return s;
}

TEST(Tokenizer, RoundTripRandomText) {
  std::mt19937 rng(1234);
  std::vector<std::shared_ptr<const Tokenizer>> toks;
  for (const auto& name : tokenizer_names()) toks.push_back(load_tokenizer(name));
  for (int i = 0; i < 1500; ++i) {
    const std::string s = random_text(rng, 1 + rng() % 200);
    ASSERT_TRUE(is_valid_utf8(s));
    for (const auto& t : toks) ASSERT_EQ(t->decode(t->encode_ordinary(s)), s) << t->name();
  }
}

TEST(Tokenizer, RoundTripRandomBytesAfterSanitize) {
  std::mt19937 rng(99);
  std::vector<std::shared_ptr<const Tokenizer>> toks;
  for (const auto& name : tokenizer_names()) toks.push_back(load_tokenizer(name));
  for (int i = 0; i < 1500; ++i) {
    std::string s(rng() % 300, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 3 == 0 ? 0x80 + rng() % 0x80 : rng() % 256);
    const std::string before = s;
    const size_t replaced = sanitize_utf8(s);
    ASSERT_TRUE(is_valid_utf8(s));
    if (is_valid_utf8(before)) {
      ASSERT_EQ(replaced, 0u);
    } else {
      ASSERT_GT(replaced, 0u);
      for (const auto& t : toks) EXPECT_THROW(t->encode_ordinary(before), Error);
    }
    for (const auto& t : toks) ASSERT_EQ(t->decode(t->encode_ordinary(s)), s) << t->name();
  }
}

TEST(Tokenizer, SanitizeMatchesPython) {
  // expected = bytes.decode("utf-8", "replace").encode() under CPython 3.11
  const std::string R = "\xEF\xBF\xBD";
  struct Case {
    std::string in, out;
    size_t replaced;
  };
  const Case cases[] = {
      {"\xE0\x80", R + R, 2},                 // E0 needs A0..BF next: overlong
      {"\xE0\x80\x80", R + R + R, 3},         // overlong 3-byte NUL
      {"\xC0\xAF", R + R, 2},                 // overlong '/'
      {"\xED\xA0\x80", R + R + R, 3},         // UTF-16 surrogate D800
      {"\xF4\x90\x80\x80", R + R + R + R, 4}, // above U+10FFFF
      {"\xF0\x9F\x98", R, 1},                 // truncated emoji: one maximal subpart
      {"\xF0\x9F\x98\x80\xF0\x9F", "\xF0\x9F\x98\x80" + R, 1},
      {"\xE2\x82", R, 1},
      {"\xC3(", R + "(", 1},
      {"\xFF", R, 1},
      {"a\xFF" "b", "a" + R + "b", 1},
      {"\x80\x80", R + R, 2},
      {"caf\xE9", "caf" + R, 1},
      {"\xF8\x88\x80\x80\x80", R + R + R + R + R, 5},
      {"\xC2", R, 1},
      {"\xE1\x80\xE1\x80", R + R, 2},
      {"\xF1\x80\x80", R, 1},
      {"\xF5\x80", R + R, 2},
      {"\xEF\xBF\xBD", R, 0},                  // U+FFFD itself is valid
      {"\xED\x9F\xBF", "\xED\x9F\xBF", 0},     // U+D7FF
      {"\xEE\x80\x80", "\xEE\x80\x80", 0},     // U+E000
      {"\xF4\x8F\xBF\xBF", "\xF4\x8F\xBF\xBF", 0},  // U+10FFFF
      {std::string("a\0b", 3), std::string("a\0b", 3), 0},
      {"", "", 0},
  };
  for (const Case& c : cases) {
    std::string s = c.in;
    EXPECT_EQ(sanitize_utf8(s), c.replaced) << testing::PrintToString(c.in);
    EXPECT_EQ(s, c.out) << testing::PrintToString(c.in);
    EXPECT_EQ(is_valid_utf8(c.in), c.replaced == 0) << testing::PrintToString(c.in);
  }
  EXPECT_EQ(first_invalid_utf8("abcdefghij\xFFx"), 10u);
  EXPECT_EQ(first_invalid_utf8("abc"), 3u);
}

TEST(Tokenizer, InvalidUtf8IsAnError) {
  for (const auto& name : tokenizer_names()) {
    try {
      load_tokenizer(name)->encode_ordinary("ok \xC3(");
      FAIL() << name;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("sanitize_utf8"), std::string::npos) << e.what();
    }
  }
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

TEST(Tokenizer, MergeMatchesTiktokenLoop) {
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

TEST(Tokenizer, ConcurrentEncodeGivesSameIds) {
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

TEST(Tokenizer, ConcurrentLoad) {
  std::vector<std::shared_ptr<const Tokenizer>> got(4);
  std::vector<std::thread> threads;
  for (size_t k = 0; k < got.size(); ++k) threads.emplace_back([&, k] { got[k] = load_tokenizer("o200k_harmony"); });
  for (auto& th : threads) th.join();
  for (const auto& g : got) EXPECT_EQ(g.get(), got[0].get());
}

TEST(Tokenizer, LongRunsAreLinear) {
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
