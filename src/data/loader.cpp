#include "data/loader.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"

namespace nmoe {

std::vector<std::string> list_shards(const std::string& path) {
  namespace sfs = std::filesystem;
  NMOE_CHECK(sfs::exists(path), "data path '", path, "' does not exist");
  std::vector<std::string> out;
  if (sfs::is_regular_file(path)) {
    out.push_back(path);
    return out;
  }
  for (const auto& e : sfs::recursive_directory_iterator(path, sfs::directory_options::follow_directory_symlink))
    if (e.is_regular_file() && e.path().extension() == ".npy") out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

TokenLoader::TokenLoader(const std::string& path, int64_t seq_len, int64_t vocab_size)
    : path_(path), seq_len_(seq_len), vocab_size_(vocab_size) {
  for (const std::string& f : list_shards(path)) {
    NpyTokenFile file = NpyTokenFile::open(f);
    total_tokens_ += static_cast<int64_t>(file.size());
    files_.push_back(std::move(file));
  }
  NMOE_CHECK(!files_.empty(), "no .npy token shards under '", path, "'; prepare data with `n data prep`");
  NMOE_CHECK(total_tokens_ >= seq_len + 1, "dataset '", path, "' holds ", total_tokens_,
             " tokens, fewer than one sequence of seq_len + 1 = ", seq_len + 1);
  if (files_[0].size() == 0) advance_file();
}

int64_t TokenLoader::slice_begin(int64_t batch, int rank, int world) {
  int64_t q = batch / world, rem = batch % world;
  return rank * q + std::min<int64_t>(rank, rem);
}

int64_t TokenLoader::slice_size(int64_t batch, int rank, int world) {
  int64_t q = batch / world, rem = batch % world;
  return q + (rank < rem ? 1 : 0);
}

void TokenLoader::set_cursor(const LoaderCursor& c) {
  NMOE_CHECK(c.file >= 0 && c.file < static_cast<int64_t>(files_.size()) && c.pos >= 0 &&
                 c.pos <= static_cast<int64_t>(files_[c.file].size()),
             "loader cursor (file ", c.file, ", position ", c.pos, ") does not fit the shards under '",
             path_, "'; the dataset changed since the checkpoint was written");
  cursor_ = c;
}

void TokenLoader::advance_file() {
  do {
    cursor_.pos = 0;
    if (++cursor_.file == static_cast<int64_t>(files_.size())) {
      cursor_.file = 0;
      ++cursor_.wraps;
      if (on_wrap_)
        on_wrap_("data stream '" + path_ + "' wrapped around (pass " + std::to_string(cursor_.wraps + 1) +
                 " over " + std::to_string(total_tokens_) + " tokens)");
    }
  } while (files_[cursor_.file].size() == 0);
}

void TokenLoader::read_tokens(int64_t n, int32_t* out) {
  while (n > 0) {
    const NpyTokenFile& f = files_[cursor_.file];
    int64_t take = std::min<int64_t>(n, static_cast<int64_t>(f.size()) - cursor_.pos);
    f.read(static_cast<size_t>(cursor_.pos), static_cast<size_t>(take), out);
    for (int64_t i = 0; i < take; ++i)
      NMOE_CHECK(out[i] >= 0 && out[i] < vocab_size_, "token id ", out[i], " at position ", cursor_.pos + i,
                 " of '", f.path(), "' is outside the vocabulary [0, ", vocab_size_,
                 "); the shard was made with another tokenizer or vocab_size is too small");
    out += take;
    n -= take;
    cursor_.pos += take;
    if (cursor_.pos == static_cast<int64_t>(f.size())) advance_file();
  }
}

void TokenLoader::skip_tokens(int64_t n) {
  while (n > 0) {
    int64_t left = static_cast<int64_t>(files_[cursor_.file].size()) - cursor_.pos;
    int64_t take = std::min(n, left);
    n -= take;
    cursor_.pos += take;
    if (cursor_.pos == static_cast<int64_t>(files_[cursor_.file].size())) advance_file();
  }
}

void TokenLoader::next_sequence(int32_t* out) {
  if (out) read_tokens(seq_len_ + 1, out);
  else skip_tokens(seq_len_ + 1);
  cursor_.sequences += 1;
}

nlohmann::json TokenLoader::state() const {
  return {{"file", cursor_.file}, {"pos", cursor_.pos}, {"wraps", cursor_.wraps}, {"sequences", cursor_.sequences}};
}

void TokenLoader::set_state(const nlohmann::json& j) {
  LoaderCursor c;
  try {
    c.file = j.at("file").get<int64_t>();
    c.pos = j.at("pos").get<int64_t>();
    c.wraps = j.at("wraps").get<int64_t>();
    c.sequences = j.at("sequences").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    fail("loader state for '", path_, "' is malformed: ", e.what());
  }
  set_cursor(c);
}

std::string TokenLoader::describe() const {
  return path_ + " (" + std::to_string(files_.size()) + " shards, " + std::to_string(total_tokens_) + " tokens)";
}

void TokenLoader::next_batch(int64_t batch_size, int rank, int world, int32_t* out) {
  const int64_t seq = seq_len_ + 1;
  const int64_t begin = slice_begin(batch_size, rank, world), len = slice_size(batch_size, rank, world);
  skip_tokens(begin * seq);
  read_tokens(len * seq, out);
  skip_tokens((batch_size - begin - len) * seq);
  cursor_.sequences += batch_size;
}

}  // namespace nmoe
