// .tiktoken rank files (tiktoken/load.py, load_tiktoken_bpe): one token per
// line, "<base64 of the token's bytes> <rank>", empty lines ignored.
#include "core/error.h"
#include "core/fs.h"
#include "tokenizer/internal.h"

namespace nmoe::tok {
namespace {

int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\v' || c == '\f'; }

}  // namespace

std::vector<uint8_t> base64_decode(std::string_view s) {
  NMOE_CHECK(s.size() % 4 == 0, "base64: length ", s.size(), " is not a multiple of 4");
  size_t pad = 0;
  while (pad < 2 && pad < s.size() && s[s.size() - 1 - pad] == '=') ++pad;
  std::vector<uint8_t> out;
  out.reserve(s.size() / 4 * 3);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i + pad < s.size(); ++i) {
    const int v = b64_value(s[i]);
    NMOE_CHECK(v >= 0, "base64: invalid character '", s[i], "'");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>(acc >> bits));
      acc &= (1u << bits) - 1;
    }
  }
  NMOE_CHECK(acc == 0, "base64: non-zero padding bits");
  return out;
}

LoadedRanks load_tiktoken_ranks(const std::string& path) {
  const std::string text = fs::read_file(path);
  LoadedRanks r;
  r.tokens.reserve(text.size() / 16);
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = pos;
    while (end < text.size() && text[end] != '\n' && text[end] != '\r') ++end;
    std::string_view line(text.data() + pos, end - pos);
    ++line_no;
    pos = end;
    if (pos < text.size() && text[pos] == '\r') ++pos;
    if (pos < text.size() && text[pos] == '\n') ++pos;
    if (line.empty()) continue;
    while (!line.empty() && is_space(line.front())) line.remove_prefix(1);
    while (!line.empty() && is_space(line.back())) line.remove_suffix(1);
    const size_t sp = line.find_first_of(" \t\v\f");
    bool ok = sp != std::string_view::npos;
    std::string_view b64, num;
    if (ok) {
      b64 = line.substr(0, sp);
      num = line.substr(sp);
      while (!num.empty() && is_space(num.front())) num.remove_prefix(1);
      ok = !num.empty() && num.size() <= 9 && num.find_first_not_of("0123456789") == std::string_view::npos;
    }
    if (!ok) fail(path, ":", line_no, ": expected \"<base64 token> <rank>\"");
    std::vector<uint8_t> bytes;
    try {
      bytes = base64_decode(b64);
    } catch (const Error& e) {
      fail(path, ":", line_no, ": ", e.what());
    }
    r.tokens.emplace_back(static_cast<uint32_t>(std::stoul(std::string(num))),
                          std::string(bytes.begin(), bytes.end()));
  }
  return r;
}

}  // namespace nmoe::tok
