// Internals of the BPE tokenizers, shared by src/tokenizer/*.cpp and the tests.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace nmoe::tok {

constexpr uint32_t kNoToken = 0xFFFFFFFFu;

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 32;
  x *= 0xD6E8FEB86659FD93ull;
  x ^= x >> 32;
  return x;
}

// The first min(n, 8) bytes of p, zero-padded (little-endian): equal heads and
// lengths mean equal strings up to 8 bytes.
inline uint64_t load_head(const char* p, size_t n) {
  uint64_t w = 0;
  if (n >= 8) {
    std::memcpy(&w, p, 8);
  } else if (n >= 4) {
    uint32_t a, b;
    std::memcpy(&a, p, 4);
    std::memcpy(&b, p + n - 4, 4);
    w = a | (uint64_t(b) << (8 * (n - 4)));
  } else if (n > 0) {
    const auto* u = reinterpret_cast<const uint8_t*>(p);
    w = u[0] | (uint64_t(u[n >> 1]) << (8 * (n >> 1))) | (uint64_t(u[n - 1]) << (8 * (n - 1)));
  }
  return w;
}

// Hash of a byte string whose head is load_head(p, n).
inline uint64_t hash_bytes(const char* p, size_t n, uint64_t head) {
  uint64_t h = (head ^ (n * 0x9E3779B97F4A7C15ull)) * 0xBF58476D1CE4E5B9ull;
  for (size_t i = 8; i < n; i += 8) {
    uint64_t w;
    if (i + 8 <= n) std::memcpy(&w, p + i, 8);
    else w = load_head(p + i, n - i);
    h = mix64(h ^ w) * 0x94D049BB133111EBull;
  }
  return mix64(h);
}

// The mergeable tokens of an encoding: id (= BPE rank) <-> bytes, and for every
// pair of tokens whose concatenation is a token, the id of that token.
// tiktoken merges two adjacent parts whenever their concatenated bytes form a
// token, with the rank of that token; keying pairs by ids is equivalent because
// every part is always a token.
class BpeVocab {
 public:
  // tokens[id] = bytes of token id; ids whose entry is absent have no token.
  // All 256 single bytes must be tokens; bytes must be unique.
  explicit BpeVocab(std::vector<std::pair<uint32_t, std::string>> tokens);

  // id of the token with these bytes, or kNoToken
  uint32_t find(const char* p, size_t n) const {
    const uint64_t head = load_head(p, n);
    return find(p, n, head, hash_bytes(p, n, head));
  }
  uint32_t find(std::string_view s) const { return find(s.data(), s.size()); }
  uint32_t find(const char* p, size_t n, uint64_t head, uint64_t hash) const {
    for (uint64_t i = hash & slot_mask_;; i = (i + 1) & slot_mask_) {
      const Slot& s = slots_[i];
      if (s.id1 == 0) return kNoToken;
      if (s.head == head && s.len == n &&
          (n <= 8 || std::memcmp(arena_.data() + off_[s.id1 - 1] + 8, p + 8, n - 8) == 0))
        return s.id1 - 1;
    }
  }
  uint32_t byte_token(uint8_t b) const { return byte_token_[b]; }
  uint32_t merge(uint32_t left, uint32_t right) const;  // merged id (its rank), or kNoToken
  bool has(uint32_t id) const { return id < len_.size() && len_[id] != kNoToken; }
  std::string_view bytes(uint32_t id) const { return {arena_.data() + off_[id], len_[id]}; }
  uint32_t id_limit() const { return static_cast<uint32_t>(len_.size()); }  // max id + 1
  size_t num_tokens() const { return num_tokens_; }
  size_t num_pairs() const { return pair_count_; }

 private:
  std::string arena_;
  std::vector<uint64_t> off_;
  std::vector<uint32_t> len_;  // kNoToken where there is no token
  size_t num_tokens_ = 0;
  uint32_t byte_token_[256];
  // bytes -> id: open addressing on hash_bytes, id1 = id + 1 (0 = empty)
  struct Slot {
    uint64_t head;
    uint32_t id1;
    uint32_t len;
  };
  std::vector<Slot> slots_;
  uint64_t slot_mask_ = 0;
  // (left << 32 | right) -> merged id: open addressing, key ~0 = empty
  std::vector<uint64_t> pair_keys_;
  std::vector<uint32_t> pair_vals_;
  uint64_t pair_mask_ = 0;
  size_t pair_count_ = 0;
};

// Reusable buffers of one thread for the merge of long pieces.
struct MergeScratch {
  std::vector<uint32_t> ids, next, prev;
  std::vector<uint64_t> heap;
};

// Appends the tokens of one piece that is not itself a token (any length >= 1).
void bpe_merge(const BpeVocab& vocab, std::string_view piece, std::vector<uint32_t>& out, MergeScratch& scratch);

// ---- pre-tokenization (PCRE2) ----

enum class SplitPattern { kGpt2, kO200k };

// tiktoken's pattern string (tiktoken_ext/openai_public.py).
const char* tiktoken_pattern(SplitPattern p);
// Its PCRE2 translation that gives tiktoken's pieces on every text (slow), and
// the optimized one that does so wherever fast_pattern_applies (patterns.cpp).
std::string pcre2_exact_pattern(SplitPattern p);
std::string pcre2_fast_pattern(SplitPattern p);
// False if the text has a code point where PCRE2's Unicode tables differ from
// tiktoken's (letters etc. new in Unicode 15-16, U+180E). Text must be valid UTF-8.
bool fast_pattern_applies(std::string_view text);

enum class PatternChoice { kAuto, kFast, kExact };

class Pretokenizer {
 public:
  explicit Pretokenizer(SplitPattern p);
  ~Pretokenizer();
  Pretokenizer(const Pretokenizer&) = delete;
  Pretokenizer& operator=(const Pretokenizer&) = delete;

  // Per-thread matching state (match data, JIT stack).
  struct State;
  std::unique_ptr<State, void (*)(State*)> new_state() const;
  // Next piece of text at or after pos: [start, end); false at the end. The
  // text must be valid UTF-8; exact selects the exact pattern (see above).
  bool next(State& st, std::string_view text, size_t pos, size_t& start, size_t& end, bool exact) const;

 private:
  void* code_[2] = {nullptr, nullptr};  // pcre2_code_8*: fast, exact
  bool jit_[2] = {false, false};
};

// All pieces of text (for tests).
std::vector<std::string> pretokenize(SplitPattern p, std::string_view text, PatternChoice c = PatternChoice::kAuto);

// ---- loading ----

struct LoadedRanks {
  std::vector<std::pair<uint32_t, std::string>> tokens;  // (rank, bytes)
};
// tiktoken's data_gym_to_mergeable_bpe_ranks over encoder.json and vocab.bpe.
LoadedRanks load_gpt2_ranks(const std::string& encoder_json_path, const std::string& vocab_bpe_path);
// tiktoken's load_tiktoken_bpe: lines "<base64 bytes> <rank>".
LoadedRanks load_tiktoken_ranks(const std::string& path);
std::vector<uint8_t> base64_decode(std::string_view s);  // throws Error on bad input

// The BPE tokenizer over a vocabulary, a split pattern and special tokens.
std::shared_ptr<const Tokenizer> make_bpe_tokenizer(std::string name, std::shared_ptr<const BpeVocab> vocab,
                                                    SplitPattern pattern, std::map<uint32_t, std::string> specials,
                                                    uint32_t vocab_size, uint32_t eos_id);
std::shared_ptr<const Tokenizer> make_bytes_tokenizer();

// Special tokens of o200k_harmony (tiktoken's o200k_harmony()), id -> text.
std::map<uint32_t, std::string> harmony_special_tokens();

}  // namespace nmoe::tok
