#include "data/prep.h"

#include <utf8proc.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <ostream>
#include <thread>
#include <unistd.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/rng.h"
#include "core/sha256.h"
#include "data/npy.h"
#include "data/prep_progress.h"
#include "data/shard_index.h"
#include "tokenizer/tokenizer.h"

namespace nmoe {

using json = nlohmann::json;
namespace sfs = std::filesystem;

namespace {

constexpr const char* kStateFile = ".prep_state.json";
constexpr size_t kBatchDocs = 512;
constexpr size_t kBatchBytes = 8 << 20;

// ---- per-document processing (runs on worker threads) ----------------------

enum class DocFate : uint8_t { Kept, Empty, Short };

struct RawDoc {
  std::string text;
  int64_t replaced = 0;  // invalid UTF-8 sequences the source already replaced
};

struct ProcessedDoc {
  std::vector<uint32_t> tokens;  // with EOS; empty unless kept
  DocFate fate = DocFate::Kept;
  bool truncated = false;
  int64_t replaced = 0;  // invalid UTF-8 sequences replaced
  int64_t bytes = 0;
};

bool is_ascii(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

std::string nfc(const std::string& s) {
  if (is_ascii(s)) return s;
  utf8proc_uint8_t* out = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                    static_cast<utf8proc_ssize_t>(s.size()), &out,
                                    static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  NMOE_CHECK(n >= 0, "NFC normalization failed: ", utf8proc_errmsg(n));
  std::string r(reinterpret_cast<char*>(out), static_cast<size_t>(n));
  std::free(out);
  return r;
}

// Python's str.strip(): Unicode whitespace at both ends.
size_t space_len_at(const std::string& s, size_t i) {
  unsigned char c = s[i];
  if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)) return 1;
  if (c < 0x80) return 0;
  utf8proc_int32_t cp = 0;
  utf8proc_ssize_t n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                                        static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
  if (n <= 0) return 0;
  bool ws = cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
            cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
  return ws ? static_cast<size_t>(n) : 0;
}

void strip(std::string& s) {
  size_t b = 0;
  while (b < s.size()) {
    size_t n = space_len_at(s, b);
    if (!n) break;
    b += n;
  }
  size_t e = s.size();
  while (e > b) {  // walk back to the start of the last code point
    size_t p = e - 1;
    while (p > b && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
    if (space_len_at(s, p) != e - p) break;
    e = p;
  }
  s = s.substr(b, e - b);
}

ProcessedDoc process(RawDoc doc, const Tokenizer& tok, const PrepOptions& opt) {
  ProcessedDoc d;
  std::string& text = doc.text;
  d.bytes = static_cast<int64_t>(text.size());
  d.replaced = doc.replaced + static_cast<int64_t>(sanitize_utf8(text));
  if (opt.normalize_nfc) text = nfc(text);
  strip(text);
  if (text.empty()) {
    d.fate = DocFate::Empty;
    return d;
  }
  tok.encode_ordinary(text, d.tokens);
  if (static_cast<int64_t>(d.tokens.size()) < opt.min_tokens) {
    d.fate = DocFate::Short;
    d.tokens.clear();
    return d;
  }
  if (static_cast<int64_t>(d.tokens.size()) > opt.max_tokens) {
    d.tokens.resize(static_cast<size_t>(opt.max_tokens));
    d.truncated = true;
  }
  d.tokens.push_back(tok.eos_id());
  return d;
}

// ---- ordered parallel batches ------------------------------------------------

class BatchPool {
 public:
  BatchPool(int workers, const Tokenizer& tok, const PrepOptions& opt) : tok_(tok), opt_(opt) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { run(); });
  }
  ~BatchPool() {
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  void submit(int64_t id, std::vector<RawDoc> docs) {
    {
      std::lock_guard<std::mutex> g(mu_);
      todo_.emplace_back(id, std::move(docs));
    }
    cv_.notify_one();
  }
  std::vector<ProcessedDoc> take(int64_t id) {
    std::unique_lock<std::mutex> g(mu_);
    done_cv_.wait(g, [&] { return done_.count(id) || error_; });
    if (error_) std::rethrow_exception(error_);
    auto r = std::move(done_[id]);
    done_.erase(id);
    return r;
  }

 private:
  void run() {
    for (;;) {
      std::pair<int64_t, std::vector<RawDoc>> job;
      {
        std::unique_lock<std::mutex> g(mu_);
        cv_.wait(g, [&] { return stop_ || !todo_.empty(); });
        if (stop_) return;
        job = std::move(todo_.front());
        todo_.pop_front();
      }
      std::vector<ProcessedDoc> out;
      try {
        for (RawDoc& d : job.second) out.push_back(process(std::move(d), tok_, opt_));
      } catch (...) {
        std::lock_guard<std::mutex> g(mu_);
        if (!error_) error_ = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> g(mu_);
        done_[job.first] = std::move(out);
      }
      done_cv_.notify_all();
    }
  }
  const Tokenizer& tok_;
  const PrepOptions& opt_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::deque<std::pair<int64_t, std::vector<RawDoc>>> todo_;
  std::map<int64_t, std::vector<ProcessedDoc>> done_;
  std::exception_ptr error_;
  bool stop_ = false;
};

// ---- shard writing and resumable state ----------------------------------------

struct Stats {
  int64_t docs_read = 0, docs_kept = 0, dropped_empty = 0, dropped_short = 0, truncated = 0;
  int64_t invalid_utf8_replaced = 0, docs_with_invalid_utf8 = 0, bytes_read = 0;
  json to_json() const {
    return {{"documents_read", docs_read},         {"documents_kept", docs_kept},
            {"dropped_empty", dropped_empty},      {"dropped_short", dropped_short},
            {"truncated", truncated},              {"invalid_utf8_replaced", invalid_utf8_replaced},
            {"documents_with_invalid_utf8", docs_with_invalid_utf8}, {"bytes_read", bytes_read}};
  }
  void from_json(const json& j) {
    docs_read = j.at("documents_read");
    docs_kept = j.at("documents_kept");
    dropped_empty = j.at("dropped_empty");
    dropped_short = j.at("dropped_short");
    truncated = j.at("truncated");
    invalid_utf8_replaced = j.at("invalid_utf8_replaced");
    docs_with_invalid_utf8 = j.at("documents_with_invalid_utf8");
    bytes_read = j.at("bytes_read");
  }
};

class ShardSet {
 public:
  ShardSet(const PrepOptions& opt, DType dtype) : opt_(opt), dtype_(dtype), dirs_(opt.num_shards) {}

  // Adds the next document of the stream; returns true when a round ended.
  bool add(int64_t doc_number, const std::vector<uint32_t>& tokens) {
    uint64_t h = static_cast<uint64_t>(doc_number) ^ 0x6e6d6f6570726570ULL;
    Dir& d = dirs_[splitmix64(h) % static_cast<uint64_t>(dirs_.size())];
    const size_t di = static_cast<size_t>(&d - dirs_.data());
    if (!d.tokens.empty() && static_cast<int64_t>(d.tokens.size() + tokens.size()) > opt_.tokens_per_shard)
      flush(di);
    d.docs.emplace_back(d.tokens.size(), d.tokens.size() + tokens.size());
    d.tokens.insert(d.tokens.end(), tokens.begin(), tokens.end());
    total_tokens += static_cast<int64_t>(tokens.size());
    ++total_docs;
    round_tokens_ += static_cast<int64_t>(tokens.size());
    if (round_tokens_ < opt_.tokens_per_shard) return false;
    flush_all();
    return true;
  }
  void flush_all() {
    for (size_t i = 0; i < dirs_.size(); ++i) flush(i);
    round_tokens_ = 0;
  }
  json state() const {
    json next = json::array(), shards = json::array();
    for (const Dir& d : dirs_) next.push_back(d.next_shard);
    for (const ShardEntry& s : shards_)
      shards.push_back({{"path", s.path}, {"index_path", s.index_path}, {"num_tokens", s.num_tokens},
                        {"num_documents", s.num_documents}, {"checksum", s.checksum}});
    return {{"next_shard", next}, {"shards", shards}, {"total_tokens", total_tokens}, {"total_documents", total_docs}};
  }
  void restore(const json& j) {
    for (size_t i = 0; i < dirs_.size(); ++i) dirs_[i].next_shard = j.at("next_shard").at(i);
    for (const json& s : j.at("shards"))
      shards_.push_back({s.at("path"), s.at("index_path"), s.at("num_tokens"), s.at("num_documents"), s.at("checksum")});
    total_tokens = j.at("total_tokens");
    total_docs = j.at("total_documents");
  }
  std::vector<ShardEntry> shards() const {
    auto s = shards_;
    std::sort(s.begin(), s.end(), [](const ShardEntry& a, const ShardEntry& b) { return a.path < b.path; });
    return s;
  }
  int64_t total_tokens = 0, total_docs = 0;

 private:
  struct Dir {
    int64_t next_shard = 0;
    std::vector<uint32_t> tokens;
    std::vector<DocSpan> docs;
  };
  void flush(size_t di) {
    Dir& d = dirs_[di];
    if (d.docs.empty()) return;
    char rel[512];
    std::snprintf(rel, sizeof rel, "shard_%04zu/%s-%s-shard-%06lld.npy", di, opt_.name.c_str(), opt_.version.c_str(),
                  static_cast<long long>(d.next_shard));
    const std::string path = opt_.output + "/" + rel;
    write_npy_tokens(path, d.tokens.data(), d.tokens.size(), dtype_, opt_.fsync);
    write_shard_index(index_path_for(path), d.docs, opt_.fsync);
    shards_.push_back({rel, index_path_for(rel), static_cast<int64_t>(d.tokens.size()),
                       static_cast<int64_t>(d.docs.size()), sha256_file_hex(path)});
    ++d.next_shard;
    d.tokens.clear();
    d.docs.clear();
  }
  const PrepOptions& opt_;
  DType dtype_;
  std::vector<Dir> dirs_;
  std::vector<ShardEntry> shards_;
  int64_t round_tokens_ = 0;
};

std::string now_iso() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// The input, for messages: its first files, or the hub dataset.
std::string input_names(const SourceSpec& s) {
  if (s.source == "hf") return "dataset " + s.dataset + "@" + s.revision;
  std::string names;
  for (size_t i = 0; i < s.files.size() && i < 3; ++i) names += (i ? ", '" : "'") + s.files[i] + "'";
  if (s.files.size() > 3) names += " and " + std::to_string(s.files.size() - 3) + " more files";
  return names;
}

void validate(const PrepOptions& o) {
  NMOE_CHECK(!o.output.empty(), "--output DIR is required");
  NMOE_CHECK(!o.name.empty() && o.name.find('/') == std::string::npos, "--name must be a non-empty file-name part");
  NMOE_CHECK(o.num_shards >= 1 && o.num_shards <= 10000, "--num-shards must be in [1, 10000], got ", o.num_shards);
  NMOE_CHECK(o.tokens_per_shard >= 1, "--tokens-per-shard must be >= 1");
  NMOE_CHECK(o.min_tokens >= 0, "--min-tokens must be >= 0");
  NMOE_CHECK(o.max_tokens >= 1 && o.max_tokens >= o.min_tokens, "--max-tokens must be >= max(1, --min-tokens)");
  NMOE_CHECK(o.max_tokens_total >= 0, "--max-tokens-total must be >= 0");
  NMOE_CHECK(o.workers >= 0, "--workers must be >= 0");
}

}  // namespace

std::string prep_fingerprint(const PrepOptions& o) {
  json j = {{"source", o.source.source},       {"files", o.source.files},
            {"text_field", o.source.text_field}, {"text_format", o.source.text_format},
            {"dataset", o.source.dataset},     {"split", o.source.split},
            {"revision", o.source.revision},   {"name", o.name},
            {"version", o.version},            {"tokenizer", o.tokenizer},
            {"num_shards", o.num_shards},      {"tokens_per_shard", o.tokens_per_shard},
            {"min_tokens", o.min_tokens},      {"max_tokens", o.max_tokens},
            {"max_tokens_total", o.max_tokens_total}, {"normalize_nfc", o.normalize_nfc}};
  return sha256_hex(j.dump());
}

PrepResult prep_dataset(const PrepOptions& opt) {
  validate(opt);
  PrepResult res;
  const std::string fp = prep_fingerprint(opt);
  const std::string state_path = opt.output + "/" + kStateFile;
  if (has_manifest(opt.output)) {
    Manifest m = Manifest::read(opt.output);
    NMOE_CHECK(m.prep_fingerprint == fp, "'", opt.output,
               "' already holds a dataset prepared with other options; choose another --output or remove it");
    res.manifest = m;
    res.already_prepared = true;
    return res;
  }
  auto tok = load_tokenizer(opt.tokenizer);
  const DType dtype = tok->vocab_size() <= 65536 ? DType::U16 : DType::U32;
  fs::make_dirs(opt.output);

  ShardSet shards(opt, dtype);
  Stats stats;
  if (fs::exists(state_path)) {
    json st = json::parse(fs::read_file(state_path));
    NMOE_CHECK(st.at("fingerprint") == fp, "'", opt.output,
               "' holds an unfinished prep with other options; rerun it with the same options, or remove the directory");
    shards.restore(st.at("shards_state"));
    stats.from_json(st.at("stats"));
    res.resumed_at_document = st.at("documents_consumed");
    if (opt.log) *opt.log << "prep: resuming after " << res.resumed_at_document << " documents\n";
  }
  auto save_state = [&](int64_t consumed) {
    json st = {{"fingerprint", fp}, {"documents_consumed", consumed}, {"shards_state", shards.state()},
               {"stats", stats.to_json()}};
    fs::write_file_atomic(state_path, st.dump() + "\n", opt.fsync);
    if (const char* crash = std::getenv("NMOE_PREP_CRASH_AFTER_SAVE")) {  // fault injection for tests
      static int saves = 0;
      if (++saves >= std::atoi(crash)) _exit(86);
    }
  };

  auto source = open_doc_source(opt.source, opt.log);
  std::string text;
  for (int64_t i = 0; i < res.resumed_at_document; ++i)
    NMOE_CHECK(source->next(text), "the input has fewer documents than the saved prep state expects (",
               res.resumed_at_document, "); the input changed since the prep was interrupted");

  const int workers = opt.workers > 0 ? opt.workers : std::max(1u, std::thread::hardware_concurrency());
  BatchPool pool(workers, *tok, opt);
  PrepProgress progress(opt.log, opt.max_tokens_total);
  int64_t next_submit = 0, next_take = 0, doc_number = res.resumed_at_document;
  bool input_done = false, budget_done = false;
  int64_t invalid_reported = 0;
  std::string first_invalid;  // where, for the summary
  auto read_batch = [&]() {
    std::vector<RawDoc> batch;
    size_t bytes = 0;
    while (batch.size() < kBatchDocs && bytes < kBatchBytes && source->next(text)) {
      bytes += text.size();
      const int64_t replaced = source->invalid_utf8_replaced();
      if (replaced > 0 || !is_valid_utf8(text)) {
        if (first_invalid.empty()) first_invalid = source->where();
        if (invalid_reported++ < 5 && opt.log)
          *opt.log << "warning: invalid UTF-8 in " << source->where() << "; replaced with U+FFFD\n";
      }
      batch.push_back({std::move(text), replaced});
    }
    if (batch.size() < kBatchDocs && bytes < kBatchBytes) input_done = true;
    return batch;
  };
  while (!budget_done) {
    while (!input_done && next_submit - next_take < 2 * workers) {
      auto batch = read_batch();
      if (batch.empty()) break;
      pool.submit(next_submit++, std::move(batch));
    }
    if (next_take == next_submit) break;
    std::vector<ProcessedDoc> done = pool.take(next_take++);
    for (ProcessedDoc& d : done) {
      ++stats.docs_read;
      stats.bytes_read += d.bytes;
      stats.invalid_utf8_replaced += d.replaced;
      stats.docs_with_invalid_utf8 += d.replaced > 0;
      stats.truncated += d.truncated;
      const int64_t number = doc_number++;
      if (d.fate == DocFate::Empty) ++stats.dropped_empty;
      if (d.fate == DocFate::Short) ++stats.dropped_short;
      if (d.fate != DocFate::Kept) continue;
      ++stats.docs_kept;
      bool round_end = shards.add(number, d.tokens);
      if (opt.max_tokens_total > 0 && shards.total_tokens >= opt.max_tokens_total) {
        budget_done = true;
        break;
      }
      if (round_end) save_state(number + 1);
    }
    progress.update(stats.docs_read, shards.total_tokens, source->fraction_done());
  }
  shards.flush_all();
  progress.finish(stats.docs_read, shards.total_tokens);

  Manifest m;
  m.dataset = opt.name;
  m.version = opt.version;
  m.tokenizer = opt.tokenizer;
  m.vocab_size = tok->vocab_size();
  m.eos_token_id = tok->eos_id();
  m.dtype = dtype == DType::U16 ? "uint16" : "uint32";
  m.created_at = now_iso();
  m.shards = shards.shards();
  m.total_tokens = shards.total_tokens;
  m.total_documents = shards.total_docs;
  m.source_info = {{"source", opt.source.source}, {"description", source->describe()},
                   {"num_shard_dirs", opt.num_shards}, {"tokens_per_shard", opt.tokens_per_shard}};
  if (opt.source.source == "hf") m.source_info["dataset"] = opt.source.dataset;
  m.stats = stats.to_json();
  m.prep_fingerprint = fp;
  NMOE_CHECK(m.total_tokens > 0, "prep produced no tokens from ", input_names(opt.source), " (", stats.docs_read,
             " documents read): ",
             stats.docs_read == 0 ? "the input holds no documents"
                                  : "every document was empty or shorter than --min-tokens " +
                                        std::to_string(opt.min_tokens));
  m.write(opt.output, opt.fsync);
  std::error_code ec;
  sfs::remove(state_path, ec);
  if (opt.log && stats.invalid_utf8_replaced > 0)
    *opt.log << "warning: replaced " << stats.invalid_utf8_replaced << " invalid UTF-8 sequences in "
             << stats.docs_with_invalid_utf8 << " documents with U+FFFD"
             << (first_invalid.empty() ? "" : " (the first in " + first_invalid + ")") << "\n";
  res.manifest = m;
  return res;
}

}  // namespace nmoe
