// The BPE tokenizer: split with the encoding's pattern, then per piece
// (tiktoken's CoreBPE::encode_ordinary) the whole piece if it is a token, else
// the byte-pair merge. Each thread keeps, per tokenizer, its PCRE2 match state,
// merge buffers and a direct-mapped cache of recent pieces and their ids, so
// the hot path allocates nothing.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/internal.h"

namespace nmoe::tok {
namespace {

std::atomic<uint64_t> g_next_uid{1};

// Recent pieces of one thread and their ids (direct-mapped, one cache line
// per entry): most pieces of real text repeat, and this small table stays in
// the CPU caches where the vocabulary tables do not.
struct PieceCache {
  static constexpr size_t kEntries = 16384;
  static constexpr size_t kMaxIds = 5;
  static constexpr size_t kMaxBytes = 40;
  struct alignas(64) Entry {
    uint64_t head = 0;
    uint8_t len = 0;  // 0 = empty
    uint8_t n = 0;
    uint32_t ids[kMaxIds];
    char tail[kMaxBytes - 8];  // bytes 8.. of the piece
  };
  static_assert(sizeof(Entry) == 64);
  std::vector<Entry> entries = std::vector<Entry>(kEntries);

  const Entry* find(uint64_t hash, uint64_t head, const char* p, size_t len) const {
    const Entry& e = entries[hash & (kEntries - 1)];
    if (e.head == head && e.len == len && len != 0 && (len <= 8 || std::memcmp(e.tail, p + 8, len - 8) == 0))
      return &e;
    return nullptr;
  }
  void put(uint64_t hash, uint64_t head, const char* p, size_t len, const uint32_t* ids, size_t n) {
    if (len == 0 || len > kMaxBytes || n > kMaxIds) return;
    Entry& e = entries[hash & (kEntries - 1)];
    e.head = head;
    e.len = static_cast<uint8_t>(len);
    e.n = static_cast<uint8_t>(n);
    std::memcpy(e.ids, ids, n * sizeof(uint32_t));
    if (len > 8) std::memcpy(e.tail, p + 8, len - 8);
  }
};

struct Workspace {
  uint64_t owner = 0;
  std::unique_ptr<Pretokenizer::State, void (*)(Pretokenizer::State*)> state{nullptr, nullptr};
  MergeScratch scratch;
  PieceCache cache;
};

class BpeTokenizer final : public Tokenizer {
 public:
  BpeTokenizer(std::string name, std::shared_ptr<const BpeVocab> vocab, SplitPattern pattern,
               std::map<uint32_t, std::string> specials, uint32_t vocab_size, uint32_t eos_id)
      : name_(std::move(name)),
        vocab_(std::move(vocab)),
        pretok_(pattern),
        vocab_size_(vocab_size),
        eos_id_(eos_id),
        uid_(g_next_uid.fetch_add(1)) {
    NMOE_CHECK(vocab_->id_limit() <= vocab_size_, name_, ": vocab_size ", vocab_size_, " is smaller than the ranks");
    for (auto& [id, text] : specials) {
      NMOE_CHECK(id < vocab_size_, name_, ": special token ", id, " is outside the vocabulary");
      NMOE_CHECK(!vocab_->has(id), name_, ": special token ", id, " is also a mergeable token");
      specials_.emplace(id, std::move(text));
    }
    NMOE_CHECK(specials_.count(eos_id_), name_, ": the end-of-text id ", eos_id_, " is not a special token");
  }

  using Tokenizer::decode;
  using Tokenizer::encode_ordinary;
  const std::string& name() const override { return name_; }
  uint32_t vocab_size() const override { return vocab_size_; }
  uint32_t eos_id() const override { return eos_id_; }

  void encode_ordinary(std::string_view text, std::vector<uint32_t>& out) const override {
    const size_t bad = first_invalid_utf8(text);
    if (bad != text.size()) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned>(static_cast<uint8_t>(text[bad])));
      fail(name_, ": encode_ordinary needs valid UTF-8, but byte ", bad, " (", hex,
           ") starts an invalid sequence; repair the text with sanitize_utf8 first");
    }
    Workspace& ws = workspace();
    const size_t need = out.size() + text.size() / 3 + 16;  // ~3-5 bytes per token
    if (out.capacity() < need) out.reserve(std::max(need, 2 * out.capacity()));  // callers append doc after doc
    const bool exact = !fast_pattern_applies(text);
    size_t pos = 0, start = 0, end = 0;
    while (pretok_.next(*ws.state, text, pos, start, end, exact)) {
      encode_piece(text.data() + start, end - start, out, ws);
      pos = end;
    }
  }

  std::string decode(const uint32_t* ids, size_t n) const override {
    std::string out;
    out.reserve(n * 4);
    for (size_t i = 0; i < n; ++i) {
      const uint32_t id = ids[i];
      if (vocab_->has(id)) {
        out += vocab_->bytes(id);
      } else {
        check_id(id);
        if (auto it = specials_.find(id); it != specials_.end()) out += it->second;
      }
    }
    return out;
  }

  std::string token_bytes(uint32_t id) const override {
    if (vocab_->has(id)) return std::string(vocab_->bytes(id));
    check_id(id);
    auto it = specials_.find(id);
    return it == specials_.end() ? std::string() : it->second;
  }

 private:
  void check_id(uint32_t id) const {
    if (id >= vocab_size_) fail(name_, ": token id ", id, " is out of range (vocab_size ", vocab_size_, ")");
  }

  void encode_piece(const char* p, size_t n, std::vector<uint32_t>& out, Workspace& ws) const {
    if (n == 1) {
      out.push_back(vocab_->byte_token(static_cast<uint8_t>(*p)));
      return;
    }
    const uint64_t head = load_head(p, n);
    const uint64_t h = hash_bytes(p, n, head);
    if (const auto* e = ws.cache.find(h, head, p, n)) {
      out.insert(out.end(), e->ids, e->ids + e->n);
      return;
    }
    const size_t before = out.size();
    const uint32_t whole = vocab_->find(p, n, head, h);
    if (whole != kNoToken) out.push_back(whole);
    else bpe_merge(*vocab_, std::string_view(p, n), out, ws.scratch);
    ws.cache.put(h, head, p, n, out.data() + before, out.size() - before);
  }

  // This thread's workspace for this tokenizer (a few tokenizers per thread are kept).
  Workspace& workspace() const {
    thread_local std::vector<std::unique_ptr<Workspace>> spaces;
    for (size_t i = 0; i < spaces.size(); ++i) {
      if (spaces[i]->owner == uid_) {
        if (i != 0) std::swap(spaces[i], spaces[0]);
        return *spaces[0];
      }
    }
    auto ws = std::make_unique<Workspace>();
    ws->owner = uid_;
    ws->state = pretok_.new_state();
    if (spaces.size() >= 4) spaces.pop_back();
    spaces.insert(spaces.begin(), std::move(ws));
    return *spaces[0];
  }

  std::string name_;
  std::shared_ptr<const BpeVocab> vocab_;
  Pretokenizer pretok_;
  std::unordered_map<uint32_t, std::string> specials_;
  uint32_t vocab_size_;
  uint32_t eos_id_;
  uint64_t uid_;  // identifies this tokenizer's per-thread workspaces (never reused)
};

}  // namespace

std::shared_ptr<const Tokenizer> make_bpe_tokenizer(std::string name, std::shared_ptr<const BpeVocab> vocab,
                                                    SplitPattern pattern, std::map<uint32_t, std::string> specials,
                                                    uint32_t vocab_size, uint32_t eos_id) {
  return std::make_shared<BpeTokenizer>(std::move(name), std::move(vocab), pattern, std::move(specials), vocab_size,
                                        eos_id);
}

}  // namespace nmoe::tok
