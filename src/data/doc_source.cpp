#include "data/doc_source.h"

#include <fnmatch.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>

#include "core/error.h"
#include "data/hf_hub.h"
#include "data/line_reader.h"
#include "data/parquet.h"
#include "tokenizer/tokenizer.h"

namespace nmoe {

namespace sfs = std::filesystem;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool is_parquet(const std::string& p) { return ends_with(p, ".parquet"); }
bool is_jsonl(const std::string& p) {
  for (const char* e : {".jsonl", ".jsonl.zst", ".jsonl.gz", ".json.zst", ".json.gz", ".ndjson"})
    if (ends_with(p, e)) return true;
  return false;
}

// Documents of one file.
class FileDocs {
 public:
  virtual ~FileDocs() = default;
  virtual bool next(std::string& text) = 0;
  virtual std::string where() const = 0;
  virtual double fraction() const = 0;  // of this file
  virtual int64_t replaced() const { return 0; }  // see DocSource::invalid_utf8_replaced
};

class TextDocs : public FileDocs {
 public:
  TextDocs(const std::string& path, const std::string& format)
      : path_(path), format_(format), reader_(path), size_(static_cast<double>(sfs::file_size(path))) {}
  bool next(std::string& text) override {
    if (format_ == "plain") {
      if (done_) return false;
      done_ = true;
      text = reader_.read_rest();
      return true;
    }
    std::string line;
    if (format_ == "lines") {
      while (reader_.next(line))
        if (line.find_first_not_of(" \t\r") != std::string::npos) {
          text = std::move(line);
          return true;
        }
      return false;
    }
    // wikiextractor: <doc ...> opens a document, </doc> closes it; those lines are dropped.
    bool in_doc = false;
    text.clear();
    while (reader_.next(line)) {
      if (!in_doc) {
        if (line.rfind("<doc ", 0) == 0 || line == "<doc>") {
          in_doc = true;
          start_line_ = reader_.line_number();
        }
        continue;
      }
      if (line == "</doc>") return true;
      if (!text.empty()) text.push_back('\n');
      text += line;
    }
    NMOE_CHECK(!in_doc, "'", path_, "': document opened at line ", start_line_, " has no closing </doc>");
    return false;
  }
  std::string where() const override {
    return path_ + ":" + std::to_string(format_ == "wikiextractor" ? start_line_ : reader_.line_number());
  }
  double fraction() const override { return size_ > 0 ? reader_.compressed_bytes_read() / size_ : 1.0; }

 private:
  std::string path_, format_;
  LineReader reader_;
  double size_;
  bool done_ = false;
  int64_t start_line_ = 0;
};

// Value of the 4 hex digits at s[i], or -1.
int hex4(const std::string& s, size_t i) {
  if (i + 4 > s.size()) return -1;
  int v = 0;
  for (size_t k = i; k < i + 4; ++k) {
    const char c = s[k];
    if (c >= '0' && c <= '9') v = v * 16 + (c - '0');
    else if (c >= 'a' && c <= 'f') v = v * 16 + (c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v = v * 16 + (c - 'A' + 10);
    else return -1;
  }
  return v;
}

// Replaces each \uXXXX escape of a lone UTF-16 surrogate (a high one not
// followed by a low one, or a low one alone) inside the JSON strings of line
// by \ufffd, which the JSON parser would otherwise reject (Python's json
// accepts them). Returns how many were replaced.
size_t replace_lone_surrogates(std::string& line) {
  if (line.find("\\ud") == std::string::npos && line.find("\\uD") == std::string::npos) return 0;
  std::string out;
  out.reserve(line.size());
  size_t replaced = 0;
  bool in_string = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == '"') in_string = !in_string;
    if (!in_string || c != '\\' || i + 1 == line.size()) {
      out += c;
      continue;
    }
    const int cp = line[i + 1] == 'u' ? hex4(line, i + 2) : -1;
    if (cp < 0xD800 || cp > 0xDFFF) {  // another escape: copied whole, so an escaped quote or backslash is skipped
      out.append(line, i, 2);
      ++i;
      continue;
    }
    const bool pair = cp <= 0xDBFF && line.compare(i + 6, 2, "\\u") == 0 && hex4(line, i + 8) >= 0xDC00 &&
                      hex4(line, i + 8) <= 0xDFFF;
    out += pair ? line.substr(i, 12) : "\\ufffd";
    replaced += !pair;
    i += pair ? 11 : 5;
  }
  line.swap(out);
  return replaced;
}

class JsonlDocs : public FileDocs {
 public:
  JsonlDocs(const std::string& path, const std::string& field)
      : path_(path), field_(field), reader_(path), size_(static_cast<double>(sfs::file_size(path))) {}
  bool next(std::string& text) override {
    std::string line;
    while (reader_.next(line)) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      // The parser rejects invalid UTF-8 and lone surrogates, so both are
      // replaced in the whole line first (and counted for the document).
      replaced_ = static_cast<int64_t>(sanitize_utf8(line) + replace_lone_surrogates(line));
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        fail(where(), ": not valid JSON (", e.what(), ")");
      }
      const nlohmann::json* v = &j;
      size_t start = 0;
      while (true) {  // dotted path
        size_t dot = field_.find('.', start);
        std::string key = field_.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
        NMOE_CHECK(v->is_object() && v->contains(key), where(), ": no \"", field_, "\" field",
                   j.is_object() ? " (fields: " + keys_of(j) + ")" : std::string(" (the line is not a JSON object)"),
                   "; choose the field with --text-field");
        v = &(*v)[key];
        if (dot == std::string::npos) break;
        start = dot + 1;
      }
      NMOE_CHECK(v->is_string(), where(), ": field \"", field_, "\" is ", v->type_name(), ", not a string");
      text = v->get<std::string>();
      return true;
    }
    return false;
  }
  std::string where() const override { return path_ + ":" + std::to_string(reader_.line_number()); }
  double fraction() const override { return size_ > 0 ? reader_.compressed_bytes_read() / size_ : 1.0; }
  int64_t replaced() const override { return replaced_; }

 private:
  static std::string keys_of(const nlohmann::json& j) {
    std::string s;
    for (const auto& [k, v] : j.items()) s += (s.empty() ? "" : ", ") + k;
    return s;
  }
  std::string path_, field_;
  LineReader reader_;
  double size_;
  int64_t replaced_ = 0;
};

class ParquetDocs : public FileDocs {
 public:
  ParquetDocs(const std::string& path, const std::string& column)
      : path_(path), column_(column), file_(ParquetFile::open(path)) {
    auto cols = file_.column_names();
    if (std::find(cols.begin(), cols.end(), column) == cols.end()) {
      std::string all;
      for (const auto& c : cols) all += (all.empty() ? "" : ", ") + c;
      fail("'", path, "' has no column \"", column, "\" (columns: ", all, "); choose one with --text-field");
    }
  }
  bool next(std::string& text) override {
    while (pending_.empty()) {
      if (group_ >= file_.num_row_groups()) return false;
      file_.read_strings(column_, group_++, [&](int64_t row, std::optional<std::string_view> v) {
        pending_.emplace_back(row, v ? std::string(*v) : std::string());
      });
    }
    row_ = pending_.front().first;
    text = std::move(pending_.front().second);
    pending_.pop_front();
    return true;
  }
  std::string where() const override { return path_ + " row " + std::to_string(row_); }
  double fraction() const override {
    return file_.num_row_groups() > 0 ? static_cast<double>(group_) / file_.num_row_groups() : 1.0;
  }

 private:
  std::string path_, column_;
  ParquetFile file_;
  int group_ = 0;
  int64_t row_ = 0;
  std::deque<std::pair<int64_t, std::string>> pending_;
};

// Files in order, each opened when reached (hf files are downloaded then).
class ChainSource : public DocSource {
 public:
  using Opener = std::function<std::unique_ptr<FileDocs>(size_t)>;
  ChainSource(size_t n_files, Opener open, std::string description)
      : n_(n_files), open_(std::move(open)), description_(std::move(description)) {}
  bool next(std::string& text) override {
    while (true) {
      if (!cur_) {
        if (idx_ >= n_) return false;
        cur_ = open_(idx_);
      }
      if (cur_->next(text)) return true;
      last_where_ = cur_->where();
      cur_.reset();
      ++idx_;
    }
  }
  std::string where() const override { return cur_ ? cur_->where() : last_where_; }
  int64_t invalid_utf8_replaced() const override { return cur_ ? cur_->replaced() : 0; }
  double fraction_done() const override {
    if (n_ == 0) return 1.0;
    return (static_cast<double>(idx_) + (cur_ ? cur_->fraction() : 0.0)) / static_cast<double>(n_);
  }
  std::string describe() const override { return description_; }

 private:
  size_t n_, idx_ = 0;
  Opener open_;
  std::unique_ptr<FileDocs> cur_;
  std::string description_, last_where_;
};

std::unique_ptr<FileDocs> open_file_docs(const std::string& path, const SourceSpec& spec, const std::string& kind) {
  if (kind == "parquet") return std::make_unique<ParquetDocs>(path, spec.text_field);
  if (kind == "jsonl" || kind == "jsonl_zst") return std::make_unique<JsonlDocs>(path, spec.text_field);
  return std::make_unique<TextDocs>(path, spec.text_format);
}

std::string kind_of_hub_file(const std::string& path) {
  if (is_parquet(path)) return "parquet";
  if (is_jsonl(path)) return "jsonl";
  return "text";
}

bool matches_split(const std::string& path, const std::string& split) {
  std::string name = sfs::path(path).filename().string();
  for (const auto& part : sfs::path(path).parent_path())
    if (part.string() == split) return true;
  return name.rfind(split + "-", 0) == 0 || name.rfind(split + ".", 0) == 0 || name.rfind(split + "_", 0) == 0 ||
         name.find("-" + split + "-") != std::string::npos || name.find("-" + split + ".") != std::string::npos;
}

}  // namespace

std::vector<std::string> select_hub_files(const std::vector<std::string>& repo_paths, const SourceSpec& spec) {
  std::vector<std::string> out;
  for (const std::string& p : repo_paths) {
    if (!is_parquet(p) && !is_jsonl(p)) continue;
    bool ok = false;
    if (!spec.files.empty()) {
      for (const std::string& pat : spec.files) ok = ok || fnmatch(pat.c_str(), p.c_str(), 0) == 0;
    } else {
      ok = matches_split(p, spec.split);
    }
    if (ok) out.push_back(p);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::unique_ptr<DocSource> open_doc_source(const SourceSpec& spec, std::ostream* log) {
  static const std::vector<std::string> kinds = {"text", "jsonl", "jsonl_zst", "parquet", "hf"};
  NMOE_CHECK(std::find(kinds.begin(), kinds.end(), spec.source) != kinds.end(), "--source \"", spec.source,
             "\" is not one of text, jsonl, jsonl_zst, parquet, hf");
  NMOE_CHECK(spec.text_format == "plain" || spec.text_format == "lines" || spec.text_format == "wikiextractor",
             "--text-format \"", spec.text_format, "\" is not one of plain, lines, wikiextractor");
  if (spec.source != "hf") {
    NMOE_CHECK(!spec.files.empty(), "--source ", spec.source, " needs input files: --data-files FILE...");
    for (const std::string& f : spec.files)
      NMOE_CHECK(sfs::is_regular_file(f), "input file '", f, "' does not exist");
    std::string desc = spec.source + ": " + std::to_string(spec.files.size()) + " file(s)";
    return std::make_unique<ChainSource>(
        spec.files.size(), [spec](size_t i) { return open_file_docs(spec.files[i], spec, spec.source); }, desc);
  }
  NMOE_CHECK(!spec.dataset.empty() && spec.dataset.find('/') != std::string::npos,
             "--source hf needs --dataset owner/name");
  auto client = std::make_shared<HubClient>(HubOptions::from_env());
  std::vector<std::string> paths;
  for (const HubFile& f : client->list_files(spec.dataset, spec.revision)) paths.push_back(f.path);
  std::vector<std::string> chosen = select_hub_files(paths, spec);
  if (chosen.empty()) {
    std::string all;
    for (size_t i = 0; i < paths.size() && i < 20; ++i) all += (i ? ", " : "") + paths[i];
    fail("dataset ", spec.dataset, " has no parquet/jsonl files for split \"", spec.split,
         "\"; files: ", all.empty() ? "(none)" : all, ". Select files with --data-files PATTERN");
  }
  std::string desc = "hf: " + spec.dataset + "@" + spec.revision + " (" + std::to_string(chosen.size()) + " files)";
  return std::make_unique<ChainSource>(
      chosen.size(),
      [spec, client, chosen, log](size_t i) {
        if (log) *log << "downloading " << spec.dataset << "/" << chosen[i] << "\n" << std::flush;
        std::string local = client->download(spec.dataset, chosen[i], spec.revision);
        return open_file_docs(local, spec, kind_of_hub_file(chosen[i]));
      },
      desc);
}

}  // namespace nmoe
