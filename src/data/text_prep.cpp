#include "data/text_prep.h"

#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "core/sha256.h"
#include "data/npy.h"

namespace nmoe {

TextPrepResult prep_text_bytes(const std::vector<std::string>& files, const std::string& output,
                               const std::string& name, const std::string& version, bool fsync) {
  NMOE_CHECK(!files.empty(), "data prep: no input files (use --data-files FILE)");
  constexpr uint32_t kEos = 256;
  std::vector<uint32_t> tokens;
  TextPrepResult res;
  for (const std::string& f : files) {
    std::string text = fs::read_file(f);
    NMOE_CHECK(!text.empty(), "data prep: '", f, "' is empty");
    for (unsigned char c : text) tokens.push_back(c);
    tokens.push_back(kEos);
    ++res.documents;
  }
  fs::make_dirs(output);
  const std::string shard = name + "-" + version + "-shard-000000.npy";
  write_npy_tokens(output + "/" + shard, tokens.data(), tokens.size(), DType::U16, fsync);
  res.tokens = static_cast<int64_t>(tokens.size());
  res.shards.push_back(output + "/" + shard);

  nlohmann::json m = {{"dataset", name},
                      {"version", version},
                      {"tokenizer", "bytes"},
                      {"vocab_size", 257},
                      {"eos_token_id", kEos},
                      {"dtype", "uint16"},
                      {"total_tokens", res.tokens},
                      {"total_documents", res.documents},
                      {"num_shards", 1},
                      {"shards",
                       {{{"path", shard},
                         {"num_tokens", res.tokens},
                         {"num_documents", res.documents},
                         {"checksum", sha256_file_hex(output + "/" + shard)}}}},
                      {"source_info", {{"source", "text"}, {"files", files}}}};
  fs::write_file_atomic(output + "/manifest.json", m.dump(2) + "\n", fsync);
  return res;
}

}  // namespace nmoe
