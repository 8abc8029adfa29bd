// Pre-tokenization: tiktoken's split regexes, run with PCRE2 (UTF + UCP + JIT).
//
// tiktoken runs its patterns with the Rust crate fancy-regex (backtracking,
// leftmost-first, like PCRE2) on top of the regex crate's Unicode tables. Two
// differences must be bridged for the same pieces:
//  * \s: Rust's \s is exactly the White_Space property; PCRE2's UCP \s also
//    matches U+180E MONGOLIAN VOWEL SEPARATOR. We spell the class out.
//  * Unicode version: tiktoken 0.14's regex crate uses Unicode 16.0, PCRE2 10.42
//    Unicode 14.0. kExtra* below add the letters, marks and numbers assigned in
//    Unicode 15.0-16.0 to the \p{..} classes. They were computed as the code
//    points that Unicode 17 puts in each class and PCRE2 10.42 does not, kept
//    only where tiktoken 0.14 itself treats the code point as a letter/mark
//    (resp. number): a probe of its o200k splitting ("c's" keeps "'s" after a
//    letter; "c111" splits as "c11","1" after a number). That drops Unicode 17
//    additions, which tiktoken does not know. With a PCRE2 of Unicode >= 15 the
//    extra ranges are redundant and harmless.
// `$` in Rust means end of text (PCRE2's \z), and the patterns have no empty
// matches, so a find-all loop over PCRE2 gives tiktoken's find_iter pieces.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <string>

#include "core/error.h"
#include "tokenizer/internal.h"

namespace nmoe::tok {
namespace {

// Unicode White_Space (what Rust's \s matches).
const char* const kWs = "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
                        "\\x{205F}\\x{3000}";

// Unicode 15.0-16.0 additions per class (see the top of this file).
const char* const kExtraL =
    "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}\\x{10D4A}-\\x{10D65}"
    "\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}"
    "\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}\\x{113D3}\\x{11BC0}-\\x{11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}"
    "\\x{11F12}-\\x{11F33}\\x{1342F}\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}\\x{16100}-\\x{1611D}"
    "\\x{16D40}-\\x{16D6C}\\x{18CFF}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}"
    "\\x{1E4D0}-\\x{1E4EB}\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}";
const char* const kExtraLu = "\\x{1C89}\\x{A7CB}-\\x{A7CC}\\x{A7DA}\\x{A7DC}\\x{10D50}-\\x{10D65}";
const char* const kExtraLl = "\\x{1C8A}\\x{A7CD}\\x{A7DB}\\x{10D70}-\\x{10D85}\\x{1DF25}-\\x{1DF2A}";
const char* const kExtraLm =
    "\\x{10D4E}\\x{10D6F}\\x{16D40}-\\x{16D42}\\x{16D6B}-\\x{16D6C}\\x{1E030}-\\x{1E06D}\\x{1E4EB}";
const char* const kExtraLo =
    "\\x{105C0}-\\x{105F3}\\x{10D4A}-\\x{10D4D}\\x{10D4F}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}"
    "\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}\\x{113D3}"
    "\\x{11BC0}-\\x{11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}\\x{13441}-\\x{13446}"
    "\\x{13460}-\\x{143FA}\\x{16100}-\\x{1611D}\\x{16D43}-\\x{16D6A}\\x{18CFF}\\x{1B132}\\x{1B155}"
    "\\x{1E4D0}-\\x{1E4EA}\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}";
const char* const kExtraM =
    "\\x{897}\\x{CF3}\\x{ECE}\\x{10D69}-\\x{10D6D}\\x{10EFC}-\\x{10EFF}\\x{11241}\\x{113B8}-\\x{113C0}\\x{113C2}"
    "\\x{113C5}\\x{113C7}-\\x{113CA}\\x{113CC}-\\x{113D0}\\x{113D2}\\x{113E1}-\\x{113E2}\\x{11F00}-\\x{11F01}"
    "\\x{11F03}\\x{11F34}-\\x{11F3A}\\x{11F3E}-\\x{11F42}\\x{11F5A}\\x{13440}\\x{13447}-\\x{13455}"
    "\\x{1611E}-\\x{1612F}\\x{1E08F}\\x{1E4EC}-\\x{1E4EF}\\x{1E5EE}-\\x{1E5EF}";
const char* const kExtraN =
    "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}\\x{16130}-\\x{16139}"
    "\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}\\x{1E5F1}-\\x{1E5FA}";

// tiktoken_ext/openai_public.py (tiktoken 0.14): r50k_pat_str, used by gpt2.
const char* const kGpt2Tiktoken =
    R"('(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s)";
// o200k_base()'s pat_str: the seven branches joined with "|".
const char* const kO200kTiktoken =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|)"
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|)"
    R"(\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::string gpt2_pcre2() {
  const std::string ws = kWs, l = std::string("\\p{L}") + kExtraL, n = std::string("\\p{N}") + kExtraN;
  return "'(?:[sdmt]|ll|ve|re)| ?[" + l + "]++| ?[" + n + "]++| ?[^" + ws + l + n + "]++|[" + ws + "]++\\z|[" + ws +
         "]+(?![^" + ws + "])|[" + ws + "]";
}

std::string o200k_pcre2() {
  const std::string ws = kWs, l = std::string("\\p{L}") + kExtraL, n = std::string("\\p{N}") + kExtraN;
  const std::string upper = std::string("\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}") + kExtraLu + kExtraLm + kExtraLo + kExtraM;
  const std::string lower = std::string("\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}") + kExtraLl + kExtraLm + kExtraLo + kExtraM;
  const std::string contraction = "(?i:'s|'t|'re|'ve|'m|'ll|'d)?";
  const std::string not_ln = "[^\\r\\n" + l + n + "]?";
  return not_ln + "[" + upper + "]*[" + lower + "]+" + contraction + "|" +  //
         not_ln + "[" + upper + "]+[" + lower + "]*" + contraction + "|" +  //
         "[" + n + "]{1,3}|" +                                                 //
         " ?[^" + ws + l + n + "]+[\\r\\n/]*|" +                               //
         "[" + ws + "]*[\\r\\n]+|" +                                           //
         "[" + ws + "]+(?![^" + ws + "])|" +                                   //
         "[" + ws + "]+";
}

inline pcre2_code* as_code(void* p) { return static_cast<pcre2_code*>(p); }

}  // namespace

const char* tiktoken_pattern(SplitPattern p) { return p == SplitPattern::kGpt2 ? kGpt2Tiktoken : kO200kTiktoken; }

std::string pcre2_pattern(SplitPattern p) { return p == SplitPattern::kGpt2 ? gpt2_pcre2() : o200k_pcre2(); }

struct Pretokenizer::State {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* mctx = nullptr;
  pcre2_jit_stack* stack = nullptr;
  ~State() {
    if (md) pcre2_match_data_free(md);
    if (mctx) pcre2_match_context_free(mctx);
    if (stack) pcre2_jit_stack_free(stack);
  }
};

Pretokenizer::Pretokenizer(SplitPattern p) {
  const std::string pat = pcre2_pattern(p);
  int err = 0;
  PCRE2_SIZE err_off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pat.data()), pat.size(), PCRE2_UTF | PCRE2_UCP, &err,
                                   &err_off, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    fail("tokenizer: cannot compile the split pattern at offset ", err_off, ": ", reinterpret_cast<const char*>(msg));
  }
  code_ = code;
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Pretokenizer::~Pretokenizer() { pcre2_code_free(as_code(code_)); }

std::unique_ptr<Pretokenizer::State, void (*)(Pretokenizer::State*)> Pretokenizer::new_state() const {
  std::unique_ptr<State, void (*)(State*)> st(new State, [](State* s) { delete s; });
  st->md = pcre2_match_data_create_from_pattern(as_code(code_), nullptr);
  st->mctx = pcre2_match_context_create(nullptr);
  NMOE_CHECK(st->md && st->mctx, "tokenizer: out of memory for PCRE2 match data");
  // Long runs of one class backtrack a lot: lift the limits (the patterns are linear per piece).
  pcre2_set_match_limit(st->mctx, 0xFFFFFFFFu);
  pcre2_set_depth_limit(st->mctx, 0xFFFFFFFFu);
  pcre2_set_heap_limit(st->mctx, 0xFFFFFFFFu);
  if (jit_) {
    st->stack = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, nullptr);
    if (st->stack) pcre2_jit_stack_assign(st->mctx, nullptr, st->stack);
  }
  return st;
}

bool Pretokenizer::next(State& st, std::string_view text, size_t pos, size_t& start, size_t& end) const {
  if (pos >= text.size()) return false;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  int rc = PCRE2_ERROR_JIT_BADOPTION;
  if (jit_) rc = pcre2_jit_match(as_code(code_), subject, text.size(), pos, 0, st.md, st.mctx);
  if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
    // no JIT, or it ran out of stack: the interpreter gives the same answer
    rc = pcre2_match(as_code(code_), subject, text.size(), pos, PCRE2_NO_UTF_CHECK, st.md, st.mctx);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    fail("tokenizer: PCRE2 failed at byte ", pos, ": ", reinterpret_cast<const char*>(msg));
  }
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.md);
  start = ov[0];
  end = ov[1];
  if (end <= start) {  // no pattern matches empty, but never loop forever
    end = start + 1;
    while (end < text.size() && (static_cast<uint8_t>(text[end]) & 0xC0) == 0x80) ++end;
  }
  return true;
}

std::vector<std::string> pretokenize(SplitPattern p, std::string_view text) {
  NMOE_CHECK(is_valid_utf8(text), "pretokenize: invalid UTF-8");
  Pretokenizer pt(p);
  auto st = pt.new_state();
  std::vector<std::string> out;
  size_t pos = 0, s = 0, e = 0;
  while (pt.next(*st, text, pos, s, e)) {
    out.emplace_back(text.substr(s, e - s));
    pos = e;
  }
  return out;
}

}  // namespace nmoe::tok
