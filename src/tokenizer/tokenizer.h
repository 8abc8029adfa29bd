// Tokenizers: byte-level BPE identical to OpenAI's tiktoken (gpt2, o200k_base,
// o200k_harmony), token for token, plus the 257-id byte tokenizer.
//
// Encoding follows tiktoken's encode_ordinary: the text is split into pieces by
// the encoding's regex (PCRE2 with JIT here, fancy-regex in tiktoken), each
// piece that is a whole token becomes that token, and every other piece is
// merged byte pair by byte pair, lowest rank first. Special tokens are never
// recognised in the text: "<|endoftext|>" in the input is ordinary text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace nmoe {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual const std::string& name() const = 0;
  // Number of ids, special tokens and padding included: gpt2 50257,
  // o200k_base 200019, o200k_harmony 201088, bytes 257.
  virtual uint32_t vocab_size() const = 0;
  virtual uint32_t eos_id() const = 0;  // gpt2 50256, o200k_* 199999, bytes 256
  // tiktoken's encode_ordinary; appends to out. The text must be valid UTF-8
  // (sanitize_utf8 first): invalid UTF-8 throws Error. Thread-safe.
  virtual void encode_ordinary(std::string_view text, std::vector<uint32_t>& out) const = 0;
  std::vector<uint32_t> encode_ordinary(std::string_view text) const;
  // Concatenated bytes of the tokens; special tokens decode to their text, ids
  // without bytes (padding) to "". An id >= vocab_size() throws Error.
  // decode(encode_ordinary(s)) == s for valid UTF-8 s.
  virtual std::string decode(const uint32_t* ids, size_t n) const = 0;
  std::string decode(const std::vector<uint32_t>& ids) const { return decode(ids.data(), ids.size()); }
  virtual std::string token_bytes(uint32_t id) const = 0;
};

// "bytes", "gpt2", "o200k_base" or "o200k_harmony", loaded from the shipped
// files under assets/tokenizers (see core/paths.h). Unknown names throw Error
// listing the valid ones. Each tokenizer is loaded once per process and shared;
// loading and encoding are thread-safe.
std::shared_ptr<const Tokenizer> load_tokenizer(const std::string& name);
const std::vector<std::string>& tokenizer_names();

// Replaces every invalid UTF-8 sequence by U+FFFD exactly as Python's
// bytes.decode("utf-8", errors="replace") does (one U+FFFD per maximal subpart
// of an ill-formed sequence); returns the number of replacements.
size_t sanitize_utf8(std::string& s);
bool is_valid_utf8(std::string_view s);
// Byte offset of the first invalid sequence, or s.size() if s is valid.
size_t first_invalid_utf8(std::string_view s);

}  // namespace nmoe
