// A tiny Parquet writer for the reader's tests, written from the format
// specification: string columns (required, optional, inside an optional
// struct, or repeated -- the last only for schema errors) and required INT64
// columns; PLAIN, PLAIN_DICTIONARY / RLE_DICTIONARY, DELTA_LENGTH_BYTE_ARRAY
// and DELTA_BYTE_ARRAY; data pages v1 and v2; codecs none, snappy, gzip, zstd.
// The footer carries fields the reader does not use (statistics, key-value
// metadata, logical types, out-of-order field ids) so their skipping is tested.
#pragma once

#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace nmoe::test::pqw {

enum Codec { kNone = 0, kSnappy = 1, kGzip = 2, kZstd = 6 };
enum Enc { kPlain = 0, kPlainDict = 2, kRle = 3, kDeltaLength = 6, kDeltaByteArray = 7, kRleDict = 8 };

// Thrift compact protocol writer.
class Thrift {
 public:
  std::string out;
  void varint(uint64_t v) {
    while (v >= 0x80) { out += char((v & 0x7f) | 0x80); v >>= 7; }
    out += char(v);
  }
  void zigzag(int64_t v) { varint((uint64_t(v) << 1) ^ uint64_t(v >> 63)); }
  void field(int16_t id, uint8_t type) {
    int delta = id - last_;
    if (delta > 0 && delta <= 15) {
      out += char(delta << 4 | type);
    } else {  // long form: type byte, then the id as a zigzag varint
      out += char(type);
      zigzag(id);
    }
    last_ = id;
  }
  void i32(int16_t id, int32_t v) { field(id, 5), zigzag(v); }
  void i64(int16_t id, int64_t v) { field(id, 6), zigzag(v); }
  void boolean(int16_t id, bool v) { field(id, v ? 1 : 2); }
  void binary(int16_t id, const std::string& s) { field(id, 8), raw_binary(s); }
  void raw_binary(const std::string& s) { varint(s.size()), out += s; }
  void begin_struct(int16_t id) { field(id, 12), push(); }
  void begin_elem() { push(); }  // a struct inside a list
  void end() { out += char(0), last_ = stack_.back(), stack_.pop_back(); }
  void list(int16_t id, uint8_t elem, size_t n) {
    field(id, 9);
    if (n < 15) { out += char(n << 4 | elem); } else { out += char(0xf0 | elem); varint(n); }
  }

 private:
  void push() { stack_.push_back(last_); last_ = 0; }
  int16_t last_ = 0;
  std::vector<int16_t> stack_;
};

inline void put_u32(std::string& s, uint32_t v) { for (int i = 0; i < 4; ++i) s += char(v >> (8 * i)); }

// Bit-packs values LSB first, in groups of 8 (padded with zeros).
inline void bit_pack(const uint64_t* v, size_t n, size_t padded, int w, std::string& out) {
  std::string bytes((padded * w + 7) / 8, '\0');
  for (size_t i = 0; i < n; ++i)
    for (int b = 0; b < w; ++b)
      if (v[i] >> b & 1) bytes[(i * w + b) / 8] |= char(1 << ((i * w + b) % 8));
  out += bytes;
}

// RLE / bit-packed hybrid: runs of >= 8 equal values as RLE, the rest as
// bit-packed groups of 8, so both run kinds occur.
inline std::string rle_hybrid(const std::vector<uint32_t>& v, int w) {
  Thrift t;  // only for its varint
  auto run_at = [&](size_t i) {
    size_t j = i;
    while (j < v.size() && v[j] == v[i]) ++j;
    return j - i;
  };
  for (size_t i = 0; i < v.size();) {
    if (size_t r = run_at(i); r >= 8) {
      t.varint(r << 1);
      for (int b = 0; b < (w + 7) / 8; ++b) t.out += char(v[i] >> (8 * b));
      i += r;
      continue;
    }
    size_t start = i, groups = 0;
    do { i = std::min(i + 8, v.size()); ++groups; } while (i < v.size() && run_at(i) < 8 && groups < 60);
    t.varint(groups << 1 | 1);
    std::vector<uint64_t> vals(v.begin() + start, v.begin() + i);
    bit_pack(vals.data(), vals.size(), groups * 8, w, t.out);
  }
  return t.out;
}

// DELTA_BINARY_PACKED with blocks of 128 values in 4 miniblocks of 32.
inline std::string delta_binary_packed(const std::vector<int64_t>& v) {
  Thrift t;
  t.varint(128);
  t.varint(4);
  t.varint(v.size());
  t.zigzag(v.empty() ? 0 : v[0]);
  for (size_t i = 1; i < v.size(); i += 128) {
    size_t n = std::min<size_t>(128, v.size() - i);
    std::vector<int64_t> d(n);
    for (size_t k = 0; k < n; ++k) d[k] = v[i + k] - v[i + k - 1];
    int64_t mn = *std::min_element(d.begin(), d.end());
    t.zigzag(mn);
    std::vector<uint64_t> rel(n);
    for (size_t k = 0; k < n; ++k) rel[k] = uint64_t(d[k] - mn);
    std::string packed, widths;
    for (size_t m = 0; m < 4; ++m) {
      size_t b = m * 32, e = std::min(n, b + 32);
      int w = 0;
      for (size_t k = b; k < e; ++k) w = std::max(w, int(std::bit_width(rel[k])));
      widths += char(b < n ? w : 0);
      if (b < n) bit_pack(rel.data() + b, e - b, 32, w, packed);
    }
    t.out += widths + packed;
  }
  return t.out;
}

struct Column {
  std::string name;  // "a.b": leaf b inside an optional struct a
  bool is_int64 = false;
  bool optional = false;
  bool repeated = false;
  std::vector<std::optional<std::string>> strings;
  std::vector<int64_t> ints;
};

struct Options {
  int codec = kNone;
  bool v2 = false;
  int encoding = kPlain;
  size_t rows_per_group = 1000;
  size_t rows_per_page = 100;
  bool v2_is_compressed = true;
  int codec_in_metadata = -1;  // >= 0: claim this codec (for unsupported-codec errors)
  int encoding_in_page = -1;   // >= 0: claim this value encoding in page headers
};

inline std::string compress(int codec, const std::string& s) {
  std::string out;
  if (codec == kSnappy) {
    size_t n = snappy_max_compressed_length(s.size());
    out.resize(n);
    if (snappy_compress(s.data(), s.size(), out.data(), &n) != SNAPPY_OK) throw std::runtime_error("snappy");
    out.resize(n);
  } else if (codec == kGzip) {
    z_stream zs{};
    deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);  // gzip wrapper
    out.resize(deflateBound(&zs, s.size()) + 32);
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(s.data()));
    zs.avail_in = uInt(s.size());
    zs.next_out = reinterpret_cast<Bytef*>(out.data());
    zs.avail_out = uInt(out.size());
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END) throw std::runtime_error("deflate");
    out.resize(zs.total_out);
    deflateEnd(&zs);
  } else if (codec == kZstd) {
    out.resize(ZSTD_compressBound(s.size()));
    size_t n = ZSTD_compress(out.data(), out.size(), s.data(), s.size(), 3);
    if (ZSTD_isError(n)) throw std::runtime_error("zstd");
    out.resize(n);
  } else {
    return s;
  }
  return out;
}

inline std::string plain_strings(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) { put_u32(s, uint32_t(x.size())); s += x; }
  return s;
}

inline std::string encode_values(int enc, const std::vector<std::string>& v, const std::map<std::string, uint32_t>& dict) {
  if (enc == kPlain) return plain_strings(v);
  std::vector<int64_t> lens;
  std::string data;
  if (enc == kPlainDict || enc == kRleDict) {
    int w = std::max(1, int(std::bit_width(dict.size())));
    std::vector<uint32_t> idx;
    for (const auto& x : v) idx.push_back(dict.at(x));
    return std::string(1, char(w)) + rle_hybrid(idx, w);
  }
  if (enc == kDeltaLength) {
    for (const auto& x : v) { lens.push_back(int64_t(x.size())); data += x; }
    return delta_binary_packed(lens) + data;
  }
  std::vector<int64_t> prefixes;  // kDeltaByteArray
  std::string prev;
  for (const auto& x : v) {
    size_t p = 0;
    while (p < prev.size() && p < x.size() && prev[p] == x[p]) ++p;
    prefixes.push_back(int64_t(p));
    lens.push_back(int64_t(x.size() - p));
    data += x.substr(p);
    prev = x;
  }
  return delta_binary_packed(prefixes) + delta_binary_packed(lens) + data;
}

inline std::vector<std::string> split_path(const std::string& name) {
  size_t dot = name.find('.');
  if (dot == std::string::npos) return {name};
  return {name.substr(0, dot), name.substr(dot + 1)};
}

inline void page_header(Thrift& t, int type, size_t usize, size_t csize) {
  t.i32(1, type), t.i32(2, int32_t(usize)), t.i32(3, int32_t(csize));
  t.i32(4, 0x12345678);  // crc, ignored by the reader
}

// Whole file as bytes.
inline std::string write_parquet(const std::vector<Column>& cols, const Options& o) {
  size_t rows = cols[0].is_int64 ? cols[0].ints.size() : cols[0].strings.size();
  std::string file = "PAR1";
  Thrift meta;
  struct ChunkInfo { int64_t offset, dict_offset, data_offset, size, usize; };
  std::vector<std::vector<ChunkInfo>> groups;
  for (size_t g0 = 0; g0 < rows; g0 += o.rows_per_group) {
    size_t g1 = std::min(rows, g0 + o.rows_per_group);
    std::vector<ChunkInfo> infos;
    for (const Column& c : cols) {
      ChunkInfo ci{int64_t(file.size()), -1, -1, 0, 0};
      bool dict_enc = !c.is_int64 && (o.encoding == kPlainDict || o.encoding == kRleDict);
      std::map<std::string, uint32_t> dict;
      size_t start = file.size();
      if (dict_enc) {
        std::vector<std::string> entries;
        for (size_t r = g0; r < g1; ++r)
          if (c.strings[r] && dict.emplace(*c.strings[r], uint32_t(entries.size())).second) entries.push_back(*c.strings[r]);
        std::string body = plain_strings(entries), comp = compress(o.codec, body);
        Thrift h;
        page_header(h, 2, body.size(), comp.size());
        h.begin_struct(7), h.i32(1, int32_t(entries.size()));
        h.i32(2, o.encoding == kPlainDict ? kPlainDict : kPlain), h.end(), h.out += char(0);
        ci.dict_offset = int64_t(file.size());
        ci.usize += int64_t(h.out.size() + body.size());
        file += h.out + comp;
      }
      int max_def = (c.optional ? 1 : 0) + int(split_path(c.name).size()) - 1;
      for (size_t p0 = g0; p0 < g1; p0 += o.rows_per_page) {
        size_t p1 = std::min(g1, p0 + o.rows_per_page);
        std::vector<uint32_t> defs;
        std::vector<std::string> vals;
        std::string values;
        int nulls = 0;
        if (c.is_int64) {
          for (size_t r = p0; r < p1; ++r) for (int b = 0; b < 8; ++b) values += char(uint64_t(c.ints[r]) >> (8 * b));
        } else {
          for (size_t r = p0; r < p1; ++r) {
            defs.push_back(c.strings[r] ? max_def : 0);
            if (c.strings[r]) vals.push_back(*c.strings[r]); else ++nulls;
          }
          values = encode_values(c.is_int64 ? kPlain : o.encoding, vals, dict);
        }
        int enc = c.is_int64 ? kPlain : (o.encoding == kPlainDict && o.v2 ? kRleDict : o.encoding);
        if (o.encoding_in_page >= 0) enc = o.encoding_in_page;
        std::string levels = max_def ? rle_hybrid(defs, std::bit_width(unsigned(max_def))) : "";
        Thrift h;
        std::string body, comp;
        if (!o.v2) {
          if (max_def) { put_u32(body, uint32_t(levels.size())); body += levels; }
          body += values;
          comp = compress(o.codec, body);
          page_header(h, 0, body.size(), comp.size());
          h.begin_struct(5), h.i32(1, int32_t(p1 - p0)), h.i32(2, enc), h.i32(3, kRle), h.i32(4, kRle);
          // statistics: skipped by the reader
          h.begin_struct(5), h.i64(3, nulls), h.binary(5, "zzz"), h.binary(6, ""), h.end();
          h.end();
        } else {
          std::string cv = o.v2_is_compressed ? compress(o.codec, values) : values;
          body = levels + values;
          comp = levels + cv;
          page_header(h, 3, body.size(), comp.size());
          h.begin_struct(8), h.i32(1, int32_t(p1 - p0)), h.i32(2, nulls), h.i32(3, int32_t(p1 - p0));
          h.i32(4, enc), h.i32(5, int32_t(levels.size())), h.i32(6, 0);
          if (!o.v2_is_compressed) h.boolean(7, false);
          h.end();
        }
        h.out += char(0);
        ci.usize += int64_t(h.out.size() + body.size());
        if (ci.data_offset < 0) ci.data_offset = int64_t(file.size());
        file += h.out + comp;
      }
      ci.size = int64_t(file.size() - start);
      infos.push_back(ci);
    }
    groups.push_back(infos);
  }

  meta.i32(1, 2);
  // Schema: root, then each column (a struct group before its leaf).
  size_t n_schema = 1;
  for (const Column& c : cols) n_schema += split_path(c.name).size();
  meta.list(2, 12, n_schema);
  meta.begin_elem(), meta.binary(4, "schema"), meta.i32(5, int32_t(cols.size())), meta.end();
  for (const Column& c : cols) {
    std::vector<std::string> parts = split_path(c.name);
    if (parts.size() == 2)  // the optional struct group
      meta.begin_elem(), meta.i32(3, 1), meta.binary(4, parts[0]), meta.i32(5, 1), meta.end();
    meta.begin_elem(), meta.i32(1, c.is_int64 ? 2 : 6), meta.i32(3, c.repeated ? 2 : c.optional ? 1 : 0);
    meta.binary(4, parts.back());
    // converted type UTF8, logicalType STRING (an empty struct in a union)
    if (!c.is_int64) meta.i32(6, 0), meta.begin_struct(10), meta.begin_struct(1), meta.end(), meta.end();
    meta.end();
  }
  meta.i64(3, int64_t(rows));
  meta.list(4, 12, groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    size_t g_rows = std::min(rows - g * o.rows_per_group, o.rows_per_group);
    meta.begin_elem();
    meta.i64(3, int64_t(g_rows));  // written before field 1: exercises long-form field headers
    meta.list(1, 12, cols.size());
    for (size_t c = 0; c < cols.size(); ++c) {
      const ChunkInfo& ci = groups[g][c];
      bool dict = ci.dict_offset >= 0;
      meta.begin_elem(), meta.i64(2, ci.offset), meta.begin_struct(3), meta.i32(1, cols[c].is_int64 ? 2 : 6);
      meta.list(2, 5, 2), meta.zigzag(kRle), meta.zigzag(o.encoding);
      std::vector<std::string> parts = split_path(cols[c].name);
      meta.list(3, 8, parts.size());
      for (const std::string& part : parts) meta.raw_binary(part);
      meta.i32(4, o.codec_in_metadata >= 0 ? o.codec_in_metadata : o.codec);
      meta.i64(5, int64_t(g_rows)), meta.i64(6, ci.usize), meta.i64(7, ci.size), meta.i64(9, ci.data_offset);
      if (dict) meta.i64(11, ci.dict_offset);
      meta.end(), meta.end();
    }
    meta.i64(2, 0);  // total_byte_size, after the list
    meta.end();
  }
  meta.list(5, 12, 1), meta.begin_elem(), meta.binary(1, "writer"), meta.binary(2, "nmoe test"), meta.end();
  meta.binary(6, "nmoe parquet_test_writer");
  meta.out += char(0);
  file += meta.out;
  put_u32(file, uint32_t(meta.out.size()));
  file += "PAR1";
  return file;
}

}  // namespace nmoe::test::pqw
