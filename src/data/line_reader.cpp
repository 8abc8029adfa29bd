#include "data/line_reader.h"

#include <zlib.h>
#include <zstd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace nmoe {

namespace {
bool ends_with(const std::string& s, const char* suffix) {
  size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}
constexpr size_t kChunk = 1 << 20;
}  // namespace

struct LineReader::Decoder {
  enum Kind { Plain, Zstd, Gzip } kind = Plain;
  FILE* f = nullptr;
  gzFile gz = nullptr;
  ZSTD_DCtx* zctx = nullptr;
  std::vector<char> in;
  ZSTD_inBuffer zin{nullptr, 0, 0};
  int64_t read_bytes = 0;
  std::string path;

  ~Decoder() {
    if (f) std::fclose(f);
    if (gz) gzclose(gz);
    if (zctx) ZSTD_freeDCtx(zctx);
  }

  // Appends up to kChunk decompressed bytes to out; returns false at end of input.
  bool read(std::string& out) {
    if (kind == Gzip) {
      size_t old = out.size();
      out.resize(old + kChunk);
      int n = gzread(gz, out.data() + old, static_cast<unsigned>(kChunk));
      int err = 0;
      const char* msg = gzerror(gz, &err);
      NMOE_CHECK(n >= 0 && (err == Z_OK || err == Z_STREAM_END), "'", path, "': gzip error: ", msg);
      out.resize(old + static_cast<size_t>(std::max(n, 0)));
      read_bytes = gzoffset(gz);
      return n > 0;
    }
    if (kind == Plain) {
      size_t old = out.size();
      out.resize(old + kChunk);
      size_t n = std::fread(out.data() + old, 1, kChunk, f);
      NMOE_CHECK(!std::ferror(f), "error reading '", path, "': ", std::strerror(errno));
      out.resize(old + n);
      read_bytes += static_cast<int64_t>(n);
      return n > 0;
    }
    for (;;) {
      if (zin.pos == zin.size) {
        size_t n = std::fread(in.data(), 1, in.size(), f);
        NMOE_CHECK(!std::ferror(f), "error reading '", path, "': ", std::strerror(errno));
        if (n == 0) return false;
        read_bytes += static_cast<int64_t>(n);
        zin = {in.data(), n, 0};
      }
      size_t old = out.size();
      out.resize(old + kChunk);
      ZSTD_outBuffer zout{out.data() + old, kChunk, 0};
      size_t rc = ZSTD_decompressStream(zctx, &zout, &zin);
      NMOE_CHECK(!ZSTD_isError(rc), "'", path, "': zstd error: ", ZSTD_getErrorName(rc));
      out.resize(old + zout.pos);
      if (zout.pos > 0) return true;
    }
  }
};

LineReader::LineReader(const std::string& path) : path_(path), dec_(std::make_unique<Decoder>()) {
  dec_->path = path;
  if (ends_with(path, ".gz")) {
    dec_->kind = Decoder::Gzip;
    dec_->gz = gzopen(path.c_str(), "rb");
    NMOE_CHECK(dec_->gz, "cannot open '", path, "': ", std::strerror(errno));
    return;
  }
  dec_->f = std::fopen(path.c_str(), "rb");
  NMOE_CHECK(dec_->f, "cannot open '", path, "': ", std::strerror(errno));
  if (ends_with(path, ".zst") || ends_with(path, ".zstd")) {
    dec_->kind = Decoder::Zstd;
    dec_->zctx = ZSTD_createDCtx();
    dec_->in.resize(ZSTD_DStreamInSize());
  }
}

LineReader::~LineReader() = default;

int64_t LineReader::compressed_bytes_read() const { return dec_->read_bytes; }

bool LineReader::fill() {
  if (eof_) return false;
  if (pos_ > 0) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  if (!dec_->read(buf_)) eof_ = true;
  return !eof_;
}

bool LineReader::next(std::string& line) {
  for (;;) {
    size_t nl = buf_.find('\n', pos_);
    if (nl != std::string::npos) {
      line.assign(buf_, pos_, nl - pos_);
      pos_ = nl + 1;
      ++line_no_;
      return true;
    }
    if (!fill()) {
      if (pos_ < buf_.size()) {
        line.assign(buf_, pos_, std::string::npos);
        pos_ = buf_.size();
        ++line_no_;
        return true;
      }
      return false;
    }
  }
}

std::string LineReader::read_rest() {
  while (fill()) {
  }
  std::string rest = buf_.substr(pos_);
  pos_ = buf_.size();
  return rest;
}

std::string read_text_file(const std::string& path) { return LineReader(path).read_rest(); }

}  // namespace nmoe
