// GPT-2's ranks from the original release files, as tiktoken builds them
// (tiktoken/load.py, data_gym_to_mergeable_bpe_ranks):
//  * "data gym" text stands for bytes: the 188 printable Latin-1 bytes other
//    than space (Python's str.isprintable) are themselves, the other 68 bytes
//    are U+0100, U+0101, ... in byte order;
//  * ranks 0-255 are single bytes, the printable ones first, then the others;
//  * rank 256 + k is the concatenation of the two halves of line k + 1 of
//    vocab.bpe (line 0 is the version; the text after the last newline is
//    dropped);
//  * encoder.json must give every token the same id (<|endoftext|> and
//    <|startoftext|> excluded).
#include <nlohmann/json.hpp>

#include <array>
#include <unordered_map>

#include "core/error.h"
#include "core/fs.h"
#include "tokenizer/internal.h"

namespace nmoe::tok {
namespace {

bool py_printable_latin1(int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); }

struct DataGym {
  std::array<uint8_t, 256> rank_to_byte{};
  std::array<int, 256 + 68> char_to_byte{};  // code point -> byte, -1 if none

  DataGym() {
    char_to_byte.fill(-1);
    int k = 0;
    for (int b = 0; b < 256; ++b) {
      if (py_printable_latin1(b)) {
        rank_to_byte[k++] = static_cast<uint8_t>(b);
        char_to_byte[b] = b;
      }
    }
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      if (!py_printable_latin1(b)) {
        rank_to_byte[k++] = static_cast<uint8_t>(b);
        char_to_byte[256 + n++] = b;
      }
    }
    NMOE_ASSERT(k == 256 && n == 68);
  }

  // Bytes that the data gym string s stands for; false if s has another character.
  bool decode(std::string_view s, std::string& out) const {
    out.clear();
    size_t i = 0;
    while (i < s.size()) {
      const auto c = static_cast<uint8_t>(s[i]);
      uint32_t cp;
      if (c < 0x80) {
        cp = c;
        i += 1;
      } else if ((c & 0xE0) == 0xC0 && i + 1 < s.size()) {
        cp = ((c & 0x1Fu) << 6) | (static_cast<uint8_t>(s[i + 1]) & 0x3Fu);
        i += 2;
      } else {
        return false;  // every data gym character is below U+0800
      }
      if (cp >= char_to_byte.size() || char_to_byte[cp] < 0) return false;
      out.push_back(static_cast<char>(char_to_byte[cp]));
    }
    return true;
  }
};

bool is_py_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::vector<std::string_view> split_ws(std::string_view s) {
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_py_space(s[i])) ++i;
    size_t j = i;
    while (j < s.size() && !is_py_space(s[j])) ++j;
    if (j > i) parts.push_back(s.substr(i, j - i));
    i = j;
  }
  return parts;
}

}  // namespace

LoadedRanks load_gpt2_ranks(const std::string& encoder_json_path, const std::string& vocab_bpe_path) {
  const DataGym dg;
  LoadedRanks r;
  std::unordered_map<std::string, uint32_t> rank_of;
  for (uint32_t i = 0; i < 256; ++i) {
    std::string b(1, static_cast<char>(dg.rank_to_byte[i]));
    rank_of.emplace(b, i);
    r.tokens.emplace_back(i, std::move(b));
  }

  const std::string bpe = fs::read_file(vocab_bpe_path);
  std::vector<std::string_view> lines;
  for (size_t start = 0;;) {
    const size_t nl = bpe.find('\n', start);
    if (nl == std::string::npos) {
      lines.emplace_back(std::string_view(bpe).substr(start));
      break;
    }
    lines.emplace_back(std::string_view(bpe).substr(start, nl - start));
    start = nl + 1;
  }
  std::string first, second;
  uint32_t rank = 256;
  for (size_t k = 1; k + 1 < lines.size(); ++k, ++rank) {
    const auto parts = split_ws(lines[k]);
    if (parts.size() != 2 || !dg.decode(parts[0], first) || !dg.decode(parts[1], second))
      fail(vocab_bpe_path, ": line ", k + 1, " is not a merge of two GPT-2 byte strings");
    std::string merged = first + second;
    if (!rank_of.emplace(merged, rank).second)
      fail(vocab_bpe_path, ": line ", k + 1, " repeats the token of an earlier merge");
    r.tokens.emplace_back(rank, std::move(merged));
  }

  nlohmann::json enc;
  try {
    enc = nlohmann::json::parse(fs::read_file(encoder_json_path));
  } catch (const nlohmann::json::exception& e) {
    fail(encoder_json_path, ": not valid JSON: ", e.what());
  }
  NMOE_CHECK(enc.is_object(), encoder_json_path, ": expected a JSON object of token -> id");
  size_t checked = 0;
  std::string bytes;
  for (const auto& [key, value] : enc.items()) {
    if (!dg.decode(key, bytes)) fail(encoder_json_path, ": token \"", key, "\" is not a GPT-2 byte string");
    if (bytes == "<|endoftext|>" || bytes == "<|startoftext|>") continue;
    const auto it = rank_of.find(bytes);
    if (!value.is_number_unsigned() || it == rank_of.end() || it->second != value.get<uint64_t>())
      fail(encoder_json_path, ": token \"", key, "\" has id ", value.dump(), " but vocab.bpe gives it ",
           it == rank_of.end() ? std::string("no rank") : std::to_string(it->second),
           "; the two files do not belong together");
    ++checked;
  }
  NMOE_CHECK(checked == rank_of.size(), encoder_json_path, ": has ", checked, " mergeable tokens but vocab.bpe makes ",
             rank_of.size());
  return r;
}

}  // namespace nmoe::tok
