// Tokenizers by name, loaded once per process from the shipped assets, and the
// byte tokenizer.
#include <mutex>

#include "core/error.h"
#include "core/paths.h"
#include "core/sha256.h"
#include "tokenizer/internal.h"

namespace nmoe {

std::vector<uint32_t> Tokenizer::encode_ordinary(std::string_view text) const {
  std::vector<uint32_t> out;
  encode_ordinary(text, out);
  return out;
}

namespace tok {
namespace {

const char* const kEndOfText = "<|endoftext|>";

class BytesTokenizer final : public Tokenizer {
 public:
  using Tokenizer::decode;
  using Tokenizer::encode_ordinary;
  const std::string& name() const override { return name_; }
  uint32_t vocab_size() const override { return 257; }
  uint32_t eos_id() const override { return 256; }
  void encode_ordinary(std::string_view text, std::vector<uint32_t>& out) const override {
    const size_t bad = first_invalid_utf8(text);
    NMOE_CHECK(bad == text.size(), "bytes: encode_ordinary needs valid UTF-8, but byte ", bad,
               " starts an invalid sequence; repair the text with sanitize_utf8 first");
    const size_t base = out.size();
    out.resize(base + text.size());
    for (size_t i = 0; i < text.size(); ++i) out[base + i] = static_cast<uint8_t>(text[i]);
  }
  std::string decode(const uint32_t* ids, size_t n) const override {
    std::string out;
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      if (ids[i] < 256) out.push_back(static_cast<char>(ids[i]));
      else out += token_bytes(ids[i]);
    }
    return out;
  }
  std::string token_bytes(uint32_t id) const override {
    if (id < 256) return std::string(1, static_cast<char>(id));
    if (id == 256) return kEndOfText;
    fail("bytes: token id ", id, " is out of range (vocab_size 257)");
  }

 private:
  std::string name_ = "bytes";
};

// tiktoken's pinned hashes of the files it downloads (tiktoken_ext/openai_public.py).
std::string checked_asset(const std::string& rel, const char* sha256) {
  const std::string path = asset_path(rel);
  const std::string got = sha256_file_hex(path);
  NMOE_CHECK(got == sha256, path, ": sha256 is ", got, ", expected ", sha256,
             " (tiktoken's hash of this file); restore the shipped file");
  return path;
}

std::shared_ptr<const BpeVocab> o200k_vocab() {  // called under the registry lock
  static std::shared_ptr<const BpeVocab> vocab;
  if (!vocab) {
    const std::string path = checked_asset("tokenizers/o200k_base/o200k_base.tiktoken",
                                           "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d");
    vocab = std::make_shared<const BpeVocab>(load_tiktoken_ranks(path).tokens);
  }
  return vocab;
}

std::shared_ptr<const Tokenizer> create(const std::string& name) {
  if (name == "bytes") return make_bytes_tokenizer();
  if (name == "gpt2") {
    const std::string enc = checked_asset("tokenizers/gpt2/encoder.json",
                                          "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783");
    const std::string bpe = checked_asset("tokenizers/gpt2/vocab.bpe",
                                          "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5");
    auto vocab = std::make_shared<const BpeVocab>(load_gpt2_ranks(enc, bpe).tokens);
    return make_bpe_tokenizer(name, vocab, SplitPattern::kGpt2, {{50256, kEndOfText}}, 50257, 50256);
  }
  if (name == "o200k_base") {
    return make_bpe_tokenizer(name, o200k_vocab(), SplitPattern::kO200k,
                              {{199999, kEndOfText}, {200018, "<|endofprompt|>"}}, 200019, 199999);
  }
  if (name == "o200k_harmony") {
    return make_bpe_tokenizer(name, o200k_vocab(), SplitPattern::kO200k, harmony_special_tokens(), 201088, 199999);
  }
  std::string valid;
  for (const auto& n : tokenizer_names()) valid += (valid.empty() ? "" : ", ") + n;
  fail("unknown tokenizer \"", name, "\"; valid tokenizers: ", valid);
}

}  // namespace

std::shared_ptr<const Tokenizer> make_bytes_tokenizer() { return std::make_shared<BytesTokenizer>(); }

std::map<uint32_t, std::string> harmony_special_tokens() {
  // tiktoken_ext/openai_public.py, o200k_harmony(): o200k_base's specials, the
  // named harmony tokens, and <|reserved_{i}|> for every other id up to 201087.
  // Id 200018 is both <|endofprompt|> (from o200k_base) and <|reserved_200018|>;
  // it decodes to <|endofprompt|> here.
  std::map<uint32_t, std::string> s = {
      {199998, "<|startoftext|>"}, {199999, kEndOfText},     {200002, "<|return|>"},  {200003, "<|constrain|>"},
      {200005, "<|channel|>"},     {200006, "<|start|>"},    {200007, "<|end|>"},     {200008, "<|message|>"},
      {200012, "<|call|>"},        {200018, "<|endofprompt|>"},
  };
  for (uint32_t i = 200000; i < 201088; ++i) s.emplace(i, "<|reserved_" + std::to_string(i) + "|>");
  return s;
}

}  // namespace tok

const std::vector<std::string>& tokenizer_names() {
  static const std::vector<std::string> names = {"bytes", "gpt2", "o200k_base", "o200k_harmony"};
  return names;
}

std::shared_ptr<const Tokenizer> load_tokenizer(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const Tokenizer>> loaded;
  std::lock_guard<std::mutex> lock(mu);
  auto it = loaded.find(name);
  if (it != loaded.end()) return it->second;
  auto t = tok::create(name);
  loaded.emplace(name, t);
  return t;
}

}  // namespace nmoe
