// Streams the lines of a text file that may be compressed (.zst, .gz).
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

namespace nmoe {

class LineReader {
 public:
  explicit LineReader(const std::string& path);  // throws Error naming the path
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // Next line without its '\n' (a final line without '\n' counts); false at the end.
  bool next(std::string& line);
  // Everything not yet returned, raw (newlines kept).
  std::string read_rest();
  int64_t line_number() const { return line_no_; }  // 1-based number of the last line returned
  int64_t compressed_bytes_read() const;             // for progress
  const std::string& path() const { return path_; }

 private:
  bool fill();  // more decompressed bytes into buf_; false at end of input

  struct Decoder;
  std::string path_;
  std::unique_ptr<Decoder> dec_;
  std::string buf_;
  size_t pos_ = 0;
  int64_t line_no_ = 0;
  bool eof_ = false;
};

// Whole contents of a possibly compressed file.
std::string read_text_file(const std::string& path);

}  // namespace nmoe
