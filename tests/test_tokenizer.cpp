// Tokenizers: names and sizes, special tokens, hand-checked ids, round trips
// and UTF-8 repair. test_tokenizer_internals.cpp checks the split patterns,
// the merge and thread safety; test_tokenizer_vectors.cpp compares with tiktoken.
#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "test_tokenizer_util.h"
#include "tokenizer/tokenizer.h"

namespace nmoe {
namespace {

using namespace tokenizer_test;

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

}  // namespace
}  // namespace nmoe
