// UTF-8 validation and Python-compatible repair.
//
// Well-formed sequences (Unicode 15, table 3-7):
//   00..7F | C2..DF 80..BF | E0 A0..BF 80..BF | E1..EC 80..BF 80..BF |
//   ED 80..9F 80..BF | EE..EF 80..BF 80..BF | F0 90..BF 80..BF 80..BF |
//   F1..F3 80..BF 80..BF 80..BF | F4 80..8F 80..BF 80..BF
// An ill-formed sequence is replaced by one U+FFFD per "maximal subpart": the
// longest prefix of a well-formed sequence, or a single byte if none (CPython's
// decoder and the Unicode recommendation agree on this).
#include <cstring>

#include "tokenizer/tokenizer.h"

namespace nmoe {
namespace {

// Length of the well-formed sequence starting at p (> 0), or minus the length
// of the maximal subpart to replace (< 0).
inline int scan_sequence(const unsigned char* p, size_t avail) {
  const unsigned c = p[0];
  if (c < 0x80) return 1;
  int need;
  unsigned lo = 0x80, hi = 0xBF;  // range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return -1;  // 80..C1, F5..FF never start a sequence
  }
  for (int k = 1; k <= need; ++k) {
    if (static_cast<size_t>(k) >= avail) return -k;  // truncated by the end of the text
    const unsigned b = p[k];
    const bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return -k;
  }
  return need + 1;
}

inline bool ascii8(const char* p) {
  uint64_t w;
  std::memcpy(&w, p, 8);
  return (w & 0x8080808080808080ull) == 0;
}

}  // namespace

size_t first_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (i + 8 <= n && ascii8(s.data() + i)) {
      i += 8;
      continue;
    }
    const int len = scan_sequence(p + i, n - i);
    if (len < 0) return i;
    i += static_cast<size_t>(len);
  }
  return n;
}

bool is_valid_utf8(std::string_view s) { return first_invalid_utf8(s) == s.size(); }

size_t sanitize_utf8(std::string& s) {
  size_t i = first_invalid_utf8(s);
  if (i == s.size()) return 0;
  std::string out;
  out.reserve(s.size() + 16);
  out.append(s, 0, i);
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t replaced = 0;
  while (i < n) {
    const int len = scan_sequence(p + i, n - i);
    if (len > 0) {
      out.append(s, i, static_cast<size_t>(len));
      i += static_cast<size_t>(len);
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++replaced;
      i += static_cast<size_t>(-len);
    }
  }
  s.swap(out);
  return replaced;
}

}  // namespace nmoe
