// The vocabulary tables and tiktoken's byte-pair merge.
//
// tiktoken (src/lib.rs, _byte_pair_merge) splits a piece into single bytes and
// repeatedly merges the adjacent pair whose concatenation is the token of
// lowest rank, the leftmost such pair on ties, until no adjacent pair forms a
// token. Short pieces use the same linear scan over a small array; long pieces
// use a min-heap keyed by (rank, byte position) over a linked list, which picks
// the same pair at every step in O(n log n).
#include <algorithm>
#include <functional>

#include "core/error.h"
#include "tokenizer/internal.h"

namespace nmoe::tok {
namespace {

constexpr uint64_t kEmptyPair = ~0ull;
constexpr int kIdBits = 21;  // ids < 2^21 so that (left, right, merged) packs into 63 bits
constexpr uint64_t kIdMask = (1ull << kIdBits) - 1;

inline uint64_t pair_hash(uint64_t key) { return mix64(key * 0x9E3779B97F4A7C15ull); }

size_t table_size(size_t count) {
  size_t cap = 16;
  while (cap < count + count / 2 + 1) cap <<= 1;
  return cap;
}

}  // namespace

BpeVocab::BpeVocab(std::vector<std::pair<uint32_t, std::string>> tokens) {
  uint32_t limit = 0;
  size_t total = 0;
  for (const auto& [id, bytes] : tokens) {
    NMOE_CHECK(id < (1u << kIdBits), "tokenizer: token id ", id, " is too large (at most ", (1u << kIdBits) - 1, ")");
    NMOE_CHECK(!bytes.empty(), "tokenizer: token ", id, " has no bytes");
    limit = std::max(limit, id + 1);
    total += bytes.size();
  }
  off_.assign(limit, 0);
  len_.assign(limit, kNoToken);
  arena_.reserve(total);
  for (const auto& [id, bytes] : tokens) {
    NMOE_CHECK(len_[id] == kNoToken, "tokenizer: id ", id, " is given twice");
    off_[id] = arena_.size();
    len_[id] = static_cast<uint32_t>(bytes.size());
    arena_ += bytes;
  }
  num_tokens_ = tokens.size();
  tokens.clear();
  tokens.shrink_to_fit();

  // bytes -> id
  slots_.assign(table_size(num_tokens_), Slot{0, 0, 0});
  slot_mask_ = slots_.size() - 1;
  for (uint32_t id = 0; id < limit; ++id) {
    if (len_[id] == kNoToken) continue;
    const std::string_view b = bytes(id);
    const uint32_t have = find(b);
    if (have != kNoToken) fail("tokenizer: tokens ", have, " and ", id, " have the same bytes");
    const uint64_t head = load_head(b.data(), b.size());
    uint64_t i = hash_bytes(b.data(), b.size(), head) & slot_mask_;
    while (slots_[i].id1 != 0) i = (i + 1) & slot_mask_;
    slots_[i] = Slot{head, id + 1, len_[id]};
  }
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    byte_token_[b] = find(&c, 1);
    NMOE_CHECK(byte_token_[b] != kNoToken, "tokenizer: the single byte ", b, " is not a token");
  }

  // (left, right) -> merged, for every split of every token into two tokens
  std::vector<uint64_t> pairs;
  for (uint32_t id = 0; id < limit; ++id) {
    if (len_[id] == kNoToken || len_[id] < 2) continue;
    const std::string_view b = bytes(id);
    for (size_t k = 1; k < b.size(); ++k) {
      const uint32_t l = find(b.data(), k);
      if (l == kNoToken) continue;
      const uint32_t r = find(b.data() + k, b.size() - k);
      if (r == kNoToken) continue;
      pairs.push_back((uint64_t(l) << (2 * kIdBits)) | (uint64_t(r) << kIdBits) | id);
    }
  }
  pair_count_ = pairs.size();
  pair_keys_.assign(table_size(pairs.size()), kEmptyPair);
  pair_mask_ = pair_keys_.size() - 1;
  for (uint64_t p : pairs) {
    uint64_t i = pair_hash(p >> kIdBits) & pair_mask_;
    while (pair_keys_[i] != kEmptyPair) i = (i + 1) & pair_mask_;
    pair_keys_[i] = p;
  }
}

uint32_t BpeVocab::merge(uint32_t left, uint32_t right) const {
  const uint64_t key = (uint64_t(left) << kIdBits) | right;
  uint64_t i = pair_hash(key) & pair_mask_;
  for (;;) {
    const uint64_t s = pair_keys_[i];
    if ((s >> kIdBits) == key) return static_cast<uint32_t>(s & kIdMask);
    if (s == kEmptyPair) return kNoToken;
    i = (i + 1) & pair_mask_;
  }
}

namespace {

constexpr size_t kSmallPiece = 64;

void merge_small(const BpeVocab& v, std::string_view piece, std::vector<uint32_t>& out) {
  uint32_t ids[kSmallPiece];
  uint32_t ranks[kSmallPiece];  // ranks[i]: merge of ids[i] and ids[i + 1]
  size_t m = piece.size();
  for (size_t i = 0; i < m; ++i) ids[i] = v.byte_token(static_cast<uint8_t>(piece[i]));
  for (size_t i = 0; i + 1 < m; ++i) ranks[i] = v.merge(ids[i], ids[i + 1]);
  while (m > 1) {
    uint32_t best = kNoToken;
    size_t bi = 0;
    for (size_t i = 0; i + 1 < m; ++i) {
      if (ranks[i] < best) {
        best = ranks[i];
        bi = i;
      }
    }
    if (best == kNoToken) break;
    ids[bi] = best;
    // drop part bi + 1 and the pair that started at it
    for (size_t i = bi + 1; i + 1 < m; ++i) ids[i] = ids[i + 1];
    for (size_t i = bi + 1; i + 2 < m; ++i) ranks[i] = ranks[i + 1];
    --m;
    ranks[bi] = bi + 1 < m ? v.merge(ids[bi], ids[bi + 1]) : kNoToken;
    if (bi > 0) ranks[bi - 1] = v.merge(ids[bi - 1], ids[bi]);
  }
  out.insert(out.end(), ids, ids + m);
}

void merge_large(const BpeVocab& v, std::string_view piece, std::vector<uint32_t>& out, MergeScratch& s) {
  const uint32_t n = static_cast<uint32_t>(piece.size());
  constexpr uint32_t kEnd = kNoToken;
  s.ids.resize(n);
  s.next.resize(n);
  s.prev.resize(n);
  s.heap.clear();
  for (uint32_t i = 0; i < n; ++i) {
    s.ids[i] = v.byte_token(static_cast<uint8_t>(piece[i]));
    s.next[i] = i + 1 < n ? i + 1 : kEnd;
    s.prev[i] = i > 0 ? i - 1 : kEnd;
  }
  auto key = [](uint32_t rank, uint32_t pos) { return (uint64_t(rank) << 32) | pos; };
  for (uint32_t i = 0; i + 1 < n; ++i) {
    const uint32_t r = v.merge(s.ids[i], s.ids[i + 1]);
    if (r != kNoToken) s.heap.push_back(key(r, i));
  }
  const auto cmp = std::greater<uint64_t>();
  std::make_heap(s.heap.begin(), s.heap.end(), cmp);
  while (!s.heap.empty()) {
    std::pop_heap(s.heap.begin(), s.heap.end(), cmp);
    const uint64_t top = s.heap.back();
    s.heap.pop_back();
    const uint32_t rank = static_cast<uint32_t>(top >> 32);
    const uint32_t pos = static_cast<uint32_t>(top);
    // stale entries: the part is gone, or the pair at pos is no longer this one
    if (s.ids[pos] == kNoToken) continue;
    const uint32_t right = s.next[pos];
    if (right == kEnd || v.merge(s.ids[pos], s.ids[right]) != rank) continue;
    s.ids[pos] = rank;
    s.ids[right] = kNoToken;
    const uint32_t after = s.next[right];
    s.next[pos] = after;
    if (after != kEnd) {
      s.prev[after] = pos;
      const uint32_t r = v.merge(rank, s.ids[after]);
      if (r != kNoToken) {
        s.heap.push_back(key(r, pos));
        std::push_heap(s.heap.begin(), s.heap.end(), cmp);
      }
    }
    const uint32_t before = s.prev[pos];
    if (before != kEnd) {
      const uint32_t r = v.merge(s.ids[before], rank);
      if (r != kNoToken) {
        s.heap.push_back(key(r, before));
        std::push_heap(s.heap.begin(), s.heap.end(), cmp);
      }
    }
  }
  for (uint32_t i = 0; i != kEnd; i = s.next[i]) out.push_back(s.ids[i]);
}

}  // namespace

void bpe_merge(const BpeVocab& vocab, std::string_view piece, std::vector<uint32_t>& out, MergeScratch& scratch) {
  if (piece.empty()) return;
  if (piece.size() <= kSmallPiece) {
    merge_small(vocab, piece, out);
  } else {
    NMOE_CHECK(piece.size() < 0xFFFFFFFFull, "tokenizer: a single piece of ", piece.size(), " bytes is too long");
    merge_large(vocab, piece, out, scratch);
  }
}

}  // namespace nmoe::tok
