// Pre-tokenization with PCRE2 (UTF + UCP, JIT-compiled once): the pieces of
// tiktoken's find_iter over the split pattern. The patterns cannot match the
// empty string and every character starts a match, so repeated leftmost-first
// matches from the end of the previous piece give exactly its pieces.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/error.h"
#include "tokenizer/internal.h"

namespace nmoe::tok {
namespace {

inline pcre2_code* as_code(void* p) { return static_cast<pcre2_code*>(p); }

pcre2_code* compile(const std::string& pat) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pat.data()), pat.size(), PCRE2_UTF | PCRE2_UCP, &err, &err_off, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    fail("tokenizer: cannot compile the split pattern at offset ", err_off, ": ", reinterpret_cast<const char*>(msg));
  }
  return code;
}

}  // namespace

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
  const std::string pats[2] = {pcre2_fast_pattern(p), pcre2_exact_pattern(p)};
  for (int k = 0; k < 2; ++k) {
    code_[k] = compile(pats[k]);
    jit_[k] = pcre2_jit_compile(as_code(code_[k]), PCRE2_JIT_COMPLETE) == 0;
  }
}

Pretokenizer::~Pretokenizer() {
  for (void* c : code_) pcre2_code_free(as_code(c));
}

std::unique_ptr<Pretokenizer::State, void (*)(Pretokenizer::State*)> Pretokenizer::new_state() const {
  std::unique_ptr<State, void (*)(State*)> st(new State, [](State* s) { delete s; });
  st->md = pcre2_match_data_create(1, nullptr);
  st->mctx = pcre2_match_context_create(nullptr);
  NMOE_CHECK(st->md && st->mctx, "tokenizer: out of memory for PCRE2 match data");
  // Long runs of one class backtrack a lot: lift the limits (matching is linear per piece).
  pcre2_set_match_limit(st->mctx, 0xFFFFFFFFu);
  pcre2_set_depth_limit(st->mctx, 0xFFFFFFFFu);
  pcre2_set_heap_limit(st->mctx, 0xFFFFFFFFu);
  if (jit_[0] || jit_[1]) {
    st->stack = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, nullptr);
    if (st->stack) pcre2_jit_stack_assign(st->mctx, nullptr, st->stack);
  }
  return st;
}

bool Pretokenizer::next(State& st, std::string_view text, size_t pos, size_t& start, size_t& end, bool exact) const {
  if (pos >= text.size()) return false;
  pcre2_code* code = as_code(code_[exact]);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  int rc = PCRE2_ERROR_JIT_BADOPTION;
  if (jit_[exact]) rc = pcre2_jit_match(code, subject, text.size(), pos, 0, st.md, st.mctx);
  if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
    // no JIT, or its stack ran out: the interpreter gives the same answer
    rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, st.md, st.mctx);
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
  if (end <= start) {  // no pattern matches the empty string, but never loop forever
    end = start + 1;
    while (end < text.size() && (static_cast<uint8_t>(text[end]) & 0xC0) == 0x80) ++end;
  }
  return true;
}

std::vector<std::string> pretokenize(SplitPattern p, std::string_view text, PatternChoice c) {
  NMOE_CHECK(is_valid_utf8(text), "pretokenize: invalid UTF-8");
  const bool exact = c == PatternChoice::kExact || (c == PatternChoice::kAuto && !fast_pattern_applies(text));
  Pretokenizer pt(p);
  auto st = pt.new_state();
  std::vector<std::string> out;
  size_t pos = 0, s = 0, e = 0;
  while (pt.next(*st, text, pos, s, e, exact)) {
    out.emplace_back(text.substr(s, e - s));
    pos = e;
  }
  return out;
}

}  // namespace nmoe::tok
