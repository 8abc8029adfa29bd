// The split patterns: tiktoken's strings, and the two PCRE2 translations used.
//
// tiktoken runs its patterns with the Rust crate fancy-regex (backtracking and
// leftmost-first like PCRE2) over the regex crate's Unicode 16.0 tables; PCRE2
// 10.42 has Unicode 14.0 tables. Two differences must be bridged:
//  * \s: Rust's \s is the White_Space property; PCRE2's UCP \s also matches
//    U+180E MONGOLIAN VOWEL SEPARATOR.
//  * Unicode 15.0-16.0 added letters, marks and numbers (kNew* below). They were
//    computed as the code points that Unicode 17 puts in each class and PCRE2
//    10.42 does not, kept only where tiktoken 0.14 itself treats the code point
//    as a letter/mark (resp. number), by probing its o200k splitting ("c's"
//    keeps "'s" after a letter, "c111" splits as "c11","1" after a number); this
//    drops the Unicode 17 additions that tiktoken does not know.
// The exact pattern is tiktoken's with \s spelled out as White_Space and the
// kNew* ranges added to each \p class; `$` becomes \z (Rust's `$` is the end of
// the text). It is used for texts that contain one of those code points.
// Every other text uses the fast pattern, which gives the same pieces there (a
// test checks this on random text): PCRE2's own \s and \p classes, ASCII
// ranges listed first (PCRE2's JIT then tests a bitmap before the Unicode
// tables), possessive quantifiers where nothing after them can fail, and the
// case-insensitive contraction spelled out as the sets PCRE2's caseless
// matching uses ('s also matches U+017F LATIN SMALL LETTER LONG S).
#include <algorithm>
#include <cstdio>
#include <vector>

#include "tokenizer/internal.h"

namespace nmoe::tok {
namespace {

struct Range {
  uint32_t lo, hi;
};

// Unicode 15.0-16.0 additions to \p{L}, \p{Lu}, \p{Ll}, \p{Lm}, \p{Lo}, \p{M}, \p{N} (none to \p{Lt}).
constexpr Range kNewL[] = {
    {0x1C89, 0x1C8A}, {0xA7CB, 0xA7CD}, {0xA7DA, 0xA7DC}, {0x105C0, 0x105F3}, {0x10D4A, 0x10D65},
    {0x10D6F, 0x10D85}, {0x10EC2, 0x10EC4}, {0x1123F, 0x11240}, {0x11380, 0x11389}, {0x1138B, 0x1138B},
    {0x1138E, 0x1138E}, {0x11390, 0x113B5}, {0x113B7, 0x113B7}, {0x113D1, 0x113D1}, {0x113D3, 0x113D3},
    {0x11BC0, 0x11BE0}, {0x11F02, 0x11F02}, {0x11F04, 0x11F10}, {0x11F12, 0x11F33}, {0x1342F, 0x1342F},
    {0x13441, 0x13446}, {0x13460, 0x143FA}, {0x16100, 0x1611D}, {0x16D40, 0x16D6C}, {0x18CFF, 0x18CFF},
    {0x1B132, 0x1B132}, {0x1B155, 0x1B155}, {0x1DF25, 0x1DF2A}, {0x1E030, 0x1E06D}, {0x1E4D0, 0x1E4EB},
    {0x1E5D0, 0x1E5ED}, {0x1E5F0, 0x1E5F0}, {0x2B739, 0x2B739}, {0x2EBF0, 0x2EE5D}, {0x31350, 0x323AF},
};
constexpr Range kNewLu[] = {
    {0x1C89, 0x1C89}, {0xA7CB, 0xA7CC}, {0xA7DA, 0xA7DA}, {0xA7DC, 0xA7DC}, {0x10D50, 0x10D65},
};
constexpr Range kNewLl[] = {
    {0x1C8A, 0x1C8A}, {0xA7CD, 0xA7CD}, {0xA7DB, 0xA7DB}, {0x10D70, 0x10D85}, {0x1DF25, 0x1DF2A},
};
constexpr Range kNewLm[] = {
    {0x10D4E, 0x10D4E}, {0x10D6F, 0x10D6F}, {0x16D40, 0x16D42}, {0x16D6B, 0x16D6C}, {0x1E030, 0x1E06D},
    {0x1E4EB, 0x1E4EB},
};
constexpr Range kNewLo[] = {
    {0x105C0, 0x105F3}, {0x10D4A, 0x10D4D}, {0x10D4F, 0x10D4F}, {0x10EC2, 0x10EC4}, {0x1123F, 0x11240},
    {0x11380, 0x11389}, {0x1138B, 0x1138B}, {0x1138E, 0x1138E}, {0x11390, 0x113B5}, {0x113B7, 0x113B7},
    {0x113D1, 0x113D1}, {0x113D3, 0x113D3}, {0x11BC0, 0x11BE0}, {0x11F02, 0x11F02}, {0x11F04, 0x11F10},
    {0x11F12, 0x11F33}, {0x1342F, 0x1342F}, {0x13441, 0x13446}, {0x13460, 0x143FA}, {0x16100, 0x1611D},
    {0x16D43, 0x16D6A}, {0x18CFF, 0x18CFF}, {0x1B132, 0x1B132}, {0x1B155, 0x1B155}, {0x1E4D0, 0x1E4EA},
    {0x1E5D0, 0x1E5ED}, {0x1E5F0, 0x1E5F0}, {0x2B739, 0x2B739}, {0x2EBF0, 0x2EE5D}, {0x31350, 0x323AF},
};
constexpr Range kNewM[] = {
    {0x897, 0x897}, {0xCF3, 0xCF3}, {0xECE, 0xECE}, {0x10D69, 0x10D6D}, {0x10EFC, 0x10EFF}, {0x11241, 0x11241},
    {0x113B8, 0x113C0}, {0x113C2, 0x113C2}, {0x113C5, 0x113C5}, {0x113C7, 0x113CA}, {0x113CC, 0x113D0},
    {0x113D2, 0x113D2}, {0x113E1, 0x113E2}, {0x11F00, 0x11F01}, {0x11F03, 0x11F03}, {0x11F34, 0x11F3A},
    {0x11F3E, 0x11F42}, {0x11F5A, 0x11F5A}, {0x13440, 0x13440}, {0x13447, 0x13455}, {0x1611E, 0x1612F},
    {0x1E08F, 0x1E08F}, {0x1E4EC, 0x1E4EF}, {0x1E5EE, 0x1E5EF},
};
constexpr Range kNewN[] = {
    {0x10D40, 0x10D49}, {0x116D0, 0x116E3}, {0x11BF0, 0x11BF9}, {0x11F50, 0x11F59}, {0x16130, 0x16139},
    {0x16D70, 0x16D79}, {0x1CCF0, 0x1CCF9}, {0x1D2C0, 0x1D2D3}, {0x1E4F0, 0x1E4F9}, {0x1E5F1, 0x1E5FA},
};

constexpr uint32_t kMongolianVowelSeparator = 0x180E;

// tiktoken_ext/openai_public.py (tiktoken 0.14): r50k_pat_str, which gpt2 uses.
const char* const kGpt2Tiktoken =
    R"('(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s)";
// o200k_base()'s pat_str: seven branches joined with "|".
const char* const kO200kTiktoken =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|)"
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|)"
    R"(\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

template <size_t N>
std::string ranges(const Range (&rs)[N]) {
  std::string s;
  char buf[32];
  for (const Range& r : rs) {
    if (r.lo == r.hi) std::snprintf(buf, sizeof buf, "\\x{%X}", r.lo);
    else std::snprintf(buf, sizeof buf, "\\x{%X}-\\x{%X}", r.lo, r.hi);
    s += buf;
  }
  return s;
}

// White_Space, what Rust's \s matches.
const std::string kWs = "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
                        "\\x{205F}\\x{3000}";

std::string exact_gpt2() {
  const std::string ws = kWs, l = "\\p{L}" + ranges(kNewL), n = "\\p{N}" + ranges(kNewN);
  return "'(?:[sdmt]|ll|ve|re)| ?[" + l + "]++| ?[" + n + "]++| ?[^" + ws + l + n + "]++|[" + ws + "]++\\z|[" + ws +
         "]+(?![^" + ws + "])|[" + ws + "]";
}

std::string exact_o200k() {
  const std::string ws = kWs, l = "\\p{L}" + ranges(kNewL), n = "\\p{N}" + ranges(kNewN);
  const std::string upper =
      "\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}" + ranges(kNewLu) + ranges(kNewLm) + ranges(kNewLo) + ranges(kNewM);
  const std::string lower = "\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}" + ranges(kNewLl) + ranges(kNewLm) + ranges(kNewLo) + ranges(kNewM);
  const std::string contraction = "(?i:'s|'t|'re|'ve|'m|'ll|'d)?";
  const std::string prefix = "[^\\r\\n" + l + n + "]?";
  return prefix + "[" + upper + "]*[" + lower + "]+" + contraction + "|" +  //
         prefix + "[" + upper + "]+[" + lower + "]*" + contraction + "|" +  //
         "[" + n + "]{1,3}|" +                                                 //
         " ?[^" + ws + l + n + "]+[\\r\\n/]*|" +                               //
         "[" + ws + "]*[\\r\\n]+|" +                                           //
         "[" + ws + "]+(?![^" + ws + "])|" +                                   //
         "[" + ws + "]+";
}

const char* const kGpt2Fast = R"('(?:[sdmt]|ll|ve|re)| ?+[a-zA-Z\p{L}]++| ?+[0-9\p{N}]++| ?+[^\s\p{L}\p{N}]++|\s++\z|\s+(?!\S)|\s)";
const char* const kO200kFast =
    R"([^\r\na-zA-Z0-9\p{L}\p{N}]?[A-Z\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[a-z\p{Ll}\p{Lm}\p{Lo}\p{M}]++)"
    R"((?:'(?:[sStTmMdD\x{17F}]|[rR][eE]|[vV][eE]|[lL][lL]))?+|)"
    R"([^\r\na-zA-Z0-9\p{L}\p{N}]?[A-Z\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]++[a-z\p{Ll}\p{Lm}\p{Lo}\p{M}]*+)"
    R"((?:'(?:[sStTmMdD\x{17F}]|[rR][eE]|[vV][eE]|[lL][lL]))?+|)"
    R"([0-9\p{N}]{1,3}+| ?+[^\sa-zA-Z0-9\p{L}\p{N}]++[\r\n/]*+|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Code points on which the fast pattern may differ from tiktoken: sorted, merged.
struct Divergent {
  std::vector<Range> all;
  std::vector<uint64_t> bmp;  // bitmap of those below U+10000
  Divergent() {
    auto add = [&](const auto& rs) { all.insert(all.end(), std::begin(rs), std::end(rs)); };
    add(kNewL), add(kNewLu), add(kNewLl), add(kNewLm), add(kNewLo), add(kNewM), add(kNewN);
    all.push_back({kMongolianVowelSeparator, kMongolianVowelSeparator});
    std::sort(all.begin(), all.end(), [](Range a, Range b) { return a.lo < b.lo; });
    std::vector<Range> merged;
    for (Range r : all) {
      if (!merged.empty() && r.lo <= merged.back().hi + 1) merged.back().hi = std::max(merged.back().hi, r.hi);
      else merged.push_back(r);
    }
    all.swap(merged);
    bmp.assign(0x10000 / 64, 0);
    for (Range r : all)
      for (uint32_t c = r.lo; c <= r.hi && c < 0x10000; ++c) bmp[c >> 6] |= 1ull << (c & 63);
  }
  bool contains(uint32_t c) const {
    if (c < 0x10000) return (bmp[c >> 6] >> (c & 63)) & 1;
    auto it = std::upper_bound(all.begin(), all.end(), c, [](uint32_t v, Range r) { return v < r.lo; });
    return it != all.begin() && c <= (it - 1)->hi;
  }
};

}  // namespace

const char* tiktoken_pattern(SplitPattern p) { return p == SplitPattern::kGpt2 ? kGpt2Tiktoken : kO200kTiktoken; }
std::string pcre2_exact_pattern(SplitPattern p) { return p == SplitPattern::kGpt2 ? exact_gpt2() : exact_o200k(); }
std::string pcre2_fast_pattern(SplitPattern p) { return p == SplitPattern::kGpt2 ? kGpt2Fast : kO200kFast; }

bool fast_pattern_applies(std::string_view text) {
  static const Divergent div;
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    if (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if ((w & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    const uint8_t c = p[i];
    if (c < 0x80) {
      i += 1;
    } else if (c < 0xE0) {  // two bytes: nothing below U+0800 diverges
      i += 2;
    } else if (c < 0xF0) {
      if (i + 2 < n) {
        const uint32_t cp = ((c & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu);
        if (div.contains(cp)) return false;
      }
      i += 3;
    } else {
      if (i + 3 < n) {
        const uint32_t cp =
            ((c & 0x07u) << 18) | ((p[i + 1] & 0x3Fu) << 12) | ((p[i + 2] & 0x3Fu) << 6) | (p[i + 3] & 0x3Fu);
        if (div.contains(cp)) return false;
      }
      i += 4;
    }
  }
  return true;
}

}  // namespace nmoe::tok
