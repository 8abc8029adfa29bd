#include "data/npy.h"

#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/fs.h"

namespace nmoe {

static_assert(std::endian::native == std::endian::little,
              ".npy tokens are little-endian; a big-endian host would need byte swaps");

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
constexpr size_t kAlign = 64;  // numpy pads the header so the data starts 64-byte aligned

template <typename... Args>
[[noreturn]] void npy_fail(const std::string& path, Args&&... args) {
  fail("npy '", path, "': ", std::forward<Args>(args)...);
}

struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<uint64_t> shape;
};

std::string shape_str(const std::vector<uint64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

// Parser for the Python dict literal numpy writes as the header, e.g.
// {'descr': '<u2', 'fortran_order': False, 'shape': (3,), }
// Only the three keys numpy defines are accepted, in any order, each once.
class HeaderParser {
 public:
  HeaderParser(const std::string& path, std::string_view text) : path_(path), s_(text) {}

  NpyHeader parse() {
    NpyHeader h;
    bool seen_descr = false, seen_fortran = false, seen_shape = false;
    expect('{');
    skip_ws();
    while (peek() != '}') {
      std::string key = parse_string();
      skip_ws();
      expect(':');
      skip_ws();
      if (key == "descr") {
        mark_seen(seen_descr, key);
        if (peek() != '\'' && peek() != '"') error("'descr' must be a string (structured dtypes are not token shards)");
        h.descr = parse_string();
      } else if (key == "fortran_order") {
        mark_seen(seen_fortran, key);
        h.fortran_order = parse_bool();
      } else if (key == "shape") {
        mark_seen(seen_shape, key);
        h.shape = parse_tuple();
      } else {
        error("unexpected key '", key, "' in header");
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        skip_ws();
      } else if (peek() != '}') {
        error("expected ',' or '}' at header offset ", pos_);
      }
    }
    ++pos_;
    skip_ws();
    if (pos_ != s_.size()) error("unexpected text after the header dict at offset ", pos_);
    if (!seen_descr) error("header lacks 'descr'");
    if (!seen_fortran) error("header lacks 'fortran_order'");
    if (!seen_shape) error("header lacks 'shape'");
    return h;
  }

 private:
  template <typename... Args>
  [[noreturn]] void error(Args&&... args) const {
    npy_fail(path_, "bad header: ", std::forward<Args>(args)...);
  }

  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  void expect(char c) {
    if (peek() != c) error("expected '", c, "' at header offset ", pos_);
    ++pos_;
  }
  void mark_seen(bool& seen, const std::string& key) const {
    if (seen) error("duplicate key '", key, "'");
    seen = true;
  }

  std::string parse_string() {
    char quote = peek();
    if (quote != '\'' && quote != '"') error("expected a quoted string at header offset ", pos_);
    size_t end = s_.find(quote, pos_ + 1);
    if (end == std::string_view::npos) error("unterminated string at header offset ", pos_);
    std::string_view body = s_.substr(pos_ + 1, end - pos_ - 1);
    if (body.find('\\') != std::string_view::npos) error("escape sequences are not supported in header strings");
    pos_ = end + 1;
    return std::string(body);
  }

  bool parse_bool() {
    if (s_.substr(pos_, 4) == "True") { pos_ += 4; return true; }
    if (s_.substr(pos_, 5) == "False") { pos_ += 5; return false; }
    error("'fortran_order' must be True or False");
  }

  uint64_t parse_uint() {
    if (peek() < '0' || peek() > '9') error("expected a non-negative integer in 'shape' at header offset ", pos_);
    uint64_t v = 0;
    while (peek() >= '0' && peek() <= '9') {
      uint64_t digit = static_cast<uint64_t>(peek() - '0');
      if (v > (std::numeric_limits<uint64_t>::max() - digit) / 10) error("'shape' dimension is too large");
      v = v * 10 + digit;
      ++pos_;
    }
    return v;
  }

  // A Python tuple literal of ints: (), (N,), (A, B), (A, B,).
  std::vector<uint64_t> parse_tuple() {
    std::vector<uint64_t> dims;
    expect('(');
    skip_ws();
    bool trailing_comma = false;
    while (peek() != ')') {
      dims.push_back(parse_uint());
      skip_ws();
      trailing_comma = peek() == ',';
      if (trailing_comma) {
        ++pos_;
        skip_ws();
      } else if (peek() != ')') {
        error("expected ',' or ')' in 'shape' at header offset ", pos_);
      }
    }
    ++pos_;
    if (dims.size() == 1 && !trailing_comma) error("'shape' must be a tuple, e.g. (N,)");
    return dims;
  }

  const std::string& path_;
  std::string_view s_;
  size_t pos_ = 0;
};

uint32_t read_le(const unsigned char* p, size_t nbytes) {
  uint32_t v = 0;
  for (size_t i = 0; i < nbytes; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}

// Validates magic and version; returns the header text and sets data_offset.
std::string_view read_preamble(const std::string& path, const unsigned char* bytes, size_t file_size,
                               size_t& data_offset) {
  if (file_size < kMagicLen || std::memcmp(bytes, kMagic, kMagicLen) != 0)
    npy_fail(path, "not a .npy file (bad magic)");
  if (file_size < kMagicLen + 2) npy_fail(path, "truncated before the version bytes");
  int major = bytes[6], minor = bytes[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0)
    npy_fail(path, "unsupported .npy version ", major, ".", minor, " (supported: 1.0, 2.0, 3.0)");
  size_t len_bytes = major == 1 ? 2 : 4;
  size_t prefix = kMagicLen + 2 + len_bytes;
  if (file_size < prefix) npy_fail(path, "truncated before the header length");
  size_t header_len = read_le(bytes + kMagicLen + 2, len_bytes);
  if (header_len > file_size - prefix)
    npy_fail(path, "truncated header: header length ", header_len, " exceeds the ", file_size - prefix,
             " bytes left in the file");
  data_offset = prefix + header_len;
  return std::string_view(reinterpret_cast<const char*>(bytes + prefix), header_len);
}

DType dtype_from_descr(const std::string& path, const std::string& descr) {
  if (descr == "<u2") return DType::U16;
  if (descr == "<u4") return DType::U32;
  npy_fail(path, "unsupported descr '", descr, "' (token shards must be '<u2' or '<u4')");
}

}  // namespace

NpyTokenFile NpyTokenFile::open(const std::string& path) {
  NpyTokenFile f;
  f.map_ = MappedFile::open(path, "npy");
  const unsigned char* bytes = f.map_.data();
  size_t file_size = f.map_.size();
  size_t data_offset = 0;
  std::string_view text = read_preamble(path, bytes, file_size, data_offset);
  NpyHeader h = HeaderParser(path, text).parse();
  f.dtype_ = dtype_from_descr(path, h.descr);
  if (h.fortran_order) npy_fail(path, "fortran_order True is not supported");
  if (h.shape.size() != 1) npy_fail(path, "expected a 1-D array, found shape ", shape_str(h.shape));

  uint64_t n = h.shape[0];
  size_t itemsize = dtype_size(f.dtype_);
  size_t found = file_size - data_offset;
  if (n > std::numeric_limits<size_t>::max() / itemsize)
    npy_fail(path, "shape (", n, ",) is too large");
  size_t expected = static_cast<size_t>(n) * itemsize;
  if (found < expected) npy_fail(path, "truncated: expected ", expected, " bytes of data, found ", found);
  if (found > expected)
    npy_fail(path, "trailing bytes: expected ", expected, " bytes of data, found ", found);
  f.data_offset_ = data_offset;  // size() is now n
  return f;
}

uint32_t NpyTokenFile::at(size_t i) const {
  if (i >= size()) npy_fail(path(), "index ", i, " out of range (", size(), " tokens)");
  // memcpy: the data section is only guaranteed aligned for files numpy wrote.
  if (dtype_ == DType::U16) {
    uint16_t v;
    std::memcpy(&v, tokens() + i * 2, 2);
    return v;
  }
  uint32_t v;
  std::memcpy(&v, tokens() + i * 4, 4);
  return v;
}

void NpyTokenFile::read(size_t begin, size_t count, int32_t* out) const {
  size_t n = size();
  if (begin > n || count > n - begin)
    npy_fail(path(), "read of ", count, " tokens at index ", begin, " out of range (", n, " tokens)");
  if (count == 0) return;  // tokens() is only valid when there are tokens
  if (dtype_ == DType::U16) {
    const unsigned char* src = tokens() + begin * 2;
    for (size_t i = 0; i < count; ++i) {
      uint16_t v;
      std::memcpy(&v, src + i * 2, 2);
      out[i] = v;
    }
    return;
  }
  const unsigned char* src = tokens() + begin * 4;
  for (size_t i = 0; i < count; ++i) {
    uint32_t v;
    std::memcpy(&v, src + i * 4, 4);
    if (v > static_cast<uint32_t>(std::numeric_limits<int32_t>::max()))
      npy_fail(path(), "token ", v, " at index ", begin + i, " does not fit int32");
    out[i] = static_cast<int32_t>(v);
  }
}

namespace {

// numpy's version 1.0 layout: dict repr, spaces, '\n', total a multiple of 64.
std::string npy_header(const char* descr, size_t n) {
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (" +
                     std::to_string(n) + ",), }";
  size_t prefix = kMagicLen + 2 + 2;
  size_t unpadded = prefix + dict.size() + 1;
  size_t pad = kAlign - unpadded % kAlign;
  size_t header_len = dict.size() + pad + 1;
  std::string out(kMagic, kMagicLen);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header_len & 0xff);
  out += static_cast<char>(header_len >> 8);
  out += dict;
  out.append(pad, ' ');
  out += '\n';
  return out;
}

template <typename T>
void append_tokens(const std::string& path, const uint32_t* tokens, size_t n, std::string& out) {
  size_t start = out.size();
  out.resize(start + n * sizeof(T));
  char* dst = out.data() + start;
  for (size_t i = 0; i < n; ++i) {
    if (tokens[i] > std::numeric_limits<T>::max())
      npy_fail(path, "token ", tokens[i], " at index ", i, " does not fit uint", 8 * sizeof(T));
    T v = static_cast<T>(tokens[i]);
    std::memcpy(dst + i * sizeof(T), &v, sizeof(T));
  }
}

}  // namespace

void write_npy_tokens(const std::string& path, const uint32_t* tokens, size_t n, DType dtype, bool fsync) {
  if (dtype != DType::U16 && dtype != DType::U32)
    npy_fail(path, "token shards must be U16 or U32, got ", dtype_name(dtype));
  if (n > 0 && tokens == nullptr) npy_fail(path, "null token pointer for ", n, " tokens");
  std::string bytes = npy_header(dtype == DType::U16 ? "<u2" : "<u4", n);
  if (dtype == DType::U16)
    append_tokens<uint16_t>(path, tokens, n, bytes);
  else
    append_tokens<uint32_t>(path, tokens, n, bytes);
  fs::write_file_atomic(path, bytes, fsync);
}

}  // namespace nmoe
