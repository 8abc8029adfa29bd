// Value and level encodings of string columns: the RLE / bit-packed hybrid
// (definition levels, dictionary indices), PLAIN byte arrays, dictionary
// indices, DELTA_BINARY_PACKED (as the lengths inside the two delta string
// encodings), DELTA_LENGTH_BYTE_ARRAY and DELTA_BYTE_ARRAY. All decoders
// stream: memory does not depend on value counts claimed by the file.
#include <algorithm>

#include "data/parquet.h"

namespace nmoe::parquet {

uint64_t read_uleb(const uint8_t*& p, const uint8_t* end) {
  uint64_t v = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    if (p >= end) corrupt("varint runs past the end of the data");
    uint8_t b = *p++;
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  corrupt("varint longer than 10 bytes");
}

namespace {

// w (<= 64) bits starting at bit `bit` of base, least significant bit first.
// The caller guarantees the bits lie inside the buffer.
uint64_t extract_bits(const uint8_t* base, uint64_t bit, int w) {
  uint64_t v = 0;
  for (int got = 0; got < w;) {
    uint64_t at = bit + static_cast<uint64_t>(got);
    int off = static_cast<int>(at & 7);
    int take = std::min(8 - off, w - got);
    v |= static_cast<uint64_t>((base[at >> 3] >> off) & ((1u << take) - 1)) << got;
    got += take;
  }
  return v;
}

uint32_t read_u32le(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

class PlainDecoder final : public ValueDecoder {
 public:
  PlainDecoder(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  std::string_view next() override {
    if (end_ - p_ < 4) corrupt("PLAIN values end early (fewer values than the definition levels say)");
    uint32_t len = read_u32le(p_);
    p_ += 4;
    if (len > static_cast<size_t>(end_ - p_)) corrupt("PLAIN value of ", len, " bytes runs past the end of the page");
    std::string_view v(reinterpret_cast<const char*>(p_), len);
    p_ += len;
    return v;
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

class DictDecoder final : public ValueDecoder {
 public:
  DictDecoder(const uint8_t* data, size_t size, const std::vector<std::string_view>& dict)
      : dict_(dict), rle_(data + (size ? 1 : 0), size ? size - 1 : 0, size ? data[0] : 0), empty_(size == 0) {}
  std::string_view next() override {
    if (pos_ == count_) {
      if (empty_) corrupt("dictionary-encoded page has no index data");
      count_ = rle_.get_batch(buf_, kBatch);
      pos_ = 0;
      if (count_ == 0) corrupt("dictionary indices end early (fewer values than the definition levels say)");
    }
    uint32_t i = buf_[pos_++];
    if (i >= dict_.size()) corrupt("dictionary index ", i, " out of range (the dictionary has ", dict_.size(), " entries)");
    return dict_[i];
  }

 private:
  static constexpr size_t kBatch = 256;
  const std::vector<std::string_view>& dict_;
  RleDecoder rle_;
  bool empty_;
  uint32_t buf_[kBatch];
  size_t pos_ = 0, count_ = 0;
};

// DELTA_BINARY_PACKED integers: a header (block size, miniblocks per block,
// value count, first value), then blocks of (min delta, one bit width per
// miniblock, bit-packed miniblocks). Miniblocks after the last value are absent.
class DeltaInts {
 public:
  DeltaInts(const uint8_t* data, const uint8_t* end, int64_t max_values) : p_(data), end_(end) {
    uint64_t block = read_uleb(p_, end_);
    miniblocks_ = read_uleb(p_, end_);
    total_ = read_uleb(p_, end_);
    last_ = zigzag(read_uleb(p_, end_));
    if (block == 0 || block > (1u << 20) || miniblocks_ == 0 || block % miniblocks_ != 0 ||
        (block / miniblocks_) % 8 != 0)
      corrupt("DELTA_BINARY_PACKED header has invalid block size ", block, " / ", miniblocks_, " miniblocks");
    per_miniblock_ = block / miniblocks_;
    if (total_ > static_cast<uint64_t>(max_values))
      corrupt("DELTA_BINARY_PACKED holds ", total_, " values, more than the page's ", max_values);
    left_ = total_;
    mb_index_ = miniblocks_;  // no block read yet
  }

  uint64_t total() const { return total_; }

  int64_t next() {
    if (left_ == 0) corrupt("DELTA_BINARY_PACKED values end early");
    if (first_) {
      first_ = false;
      --left_;
      return static_cast<int64_t>(last_);
    }
    if (mb_left_ == 0) next_miniblock();
    --left_;
    uint64_t delta = extract_bits(mb_, bit_, width_);
    bit_ += static_cast<uint64_t>(width_);
    --mb_left_;
    last_ += min_delta_ + delta;  // wraps modulo 2^64 by design
    return static_cast<int64_t>(last_);
  }

  // Walks the remaining blocks without decoding them; returns where the
  // encoded integers end (the data that follows them starts there).
  const uint8_t* skip_all() {
    if (left_ > 0 && first_) {
      first_ = false;
      --left_;
    }
    while (left_ > 0) {
      if (mb_left_ == 0) next_miniblock();
      uint64_t k = std::min(left_, mb_left_);
      left_ -= k;
      mb_left_ -= k;
    }
    return p_;
  }

 private:
  static uint64_t zigzag(uint64_t v) { return (v >> 1) ^ (~(v & 1) + 1); }

  void next_miniblock() {
    if (mb_index_ == miniblocks_) {
      min_delta_ = zigzag(read_uleb(p_, end_));
      if (miniblocks_ > static_cast<uint64_t>(end_ - p_)) corrupt("DELTA_BINARY_PACKED bit widths run past the end");
      widths_ = p_;
      p_ += miniblocks_;
      mb_index_ = 0;
    }
    width_ = widths_[mb_index_++];
    if (width_ > 64) corrupt("DELTA_BINARY_PACKED bit width ", width_, " exceeds 64");
    uint64_t full = per_miniblock_ * static_cast<uint64_t>(width_) / 8;
    uint64_t needed = (std::min(left_, per_miniblock_) * static_cast<uint64_t>(width_) + 7) / 8;
    uint64_t avail = static_cast<uint64_t>(end_ - p_);
    if (needed > avail) corrupt("DELTA_BINARY_PACKED miniblock runs past the end of the data");
    mb_ = p_;
    bit_ = 0;
    p_ += std::min(full, avail);  // a final miniblock may be cut after its last value
    mb_left_ = per_miniblock_;
  }

  const uint8_t* p_;
  const uint8_t* end_;
  uint64_t miniblocks_ = 0, per_miniblock_ = 0, total_ = 0, left_ = 0;
  uint64_t last_ = 0, min_delta_ = 0;
  bool first_ = true;
  const uint8_t* widths_ = nullptr;
  uint64_t mb_index_ = 0, mb_left_ = 0;
  const uint8_t* mb_ = nullptr;
  uint64_t bit_ = 0;
  int width_ = 0;
};

// Lengths (DELTA_BINARY_PACKED) followed by the concatenated bytes.
class DeltaLengthDecoder final : public ValueDecoder {
 public:
  DeltaLengthDecoder(const uint8_t* data, const uint8_t* end, int64_t max_values)
      : lengths_(data, end, max_values), end_(end) {
    p_ = DeltaInts(data, end, max_values).skip_all();
  }
  uint64_t total() const { return lengths_.total(); }
  std::string_view next() override {
    int64_t len = lengths_.next();
    if (len < 0 || static_cast<uint64_t>(len) > static_cast<uint64_t>(end_ - p_))
      corrupt("DELTA_LENGTH_BYTE_ARRAY value of length ", len, " runs past the end of the page");
    std::string_view v(reinterpret_cast<const char*>(p_), static_cast<size_t>(len));
    p_ += len;
    return v;
  }
  const uint8_t* data_begin() const { return p_; }

 private:
  DeltaInts lengths_;
  const uint8_t* end_;
  const uint8_t* p_;
};

// Prefix lengths (DELTA_BINARY_PACKED), then the suffixes as
// DELTA_LENGTH_BYTE_ARRAY; each value is the previous value's prefix + suffix.
class DeltaByteArrayDecoder final : public ValueDecoder {
 public:
  DeltaByteArrayDecoder(const uint8_t* data, const uint8_t* end, int64_t max_values)
      : prefixes_(data, end, max_values),
        suffixes_(DeltaInts(data, end, max_values).skip_all(), end, max_values) {
    if (prefixes_.total() != suffixes_.total())
      corrupt("DELTA_BYTE_ARRAY has ", prefixes_.total(), " prefix lengths but ", suffixes_.total(), " suffixes");
  }
  std::string_view next() override {
    int64_t prefix = prefixes_.next();
    if (prefix < 0 || static_cast<uint64_t>(prefix) > value_.size())
      corrupt("DELTA_BYTE_ARRAY prefix length ", prefix, " exceeds the previous value's ", value_.size(), " bytes");
    std::string_view suffix = suffixes_.next();
    value_.resize(static_cast<size_t>(prefix));
    value_.append(suffix);
    return value_;
  }

 private:
  DeltaInts prefixes_;
  DeltaLengthDecoder suffixes_;
  std::string value_;
};

}  // namespace

RleDecoder::RleDecoder(const uint8_t* data, size_t size, int bit_width)
    : p_(data), end_(data + size), bit_width_(bit_width) {
  if (bit_width < 0 || bit_width > 32) corrupt("RLE bit width ", bit_width, " is not between 0 and 32");
}

bool RleDecoder::next_run() {
  if (p_ >= end_) return false;
  uint64_t header = read_uleb(p_, end_);
  uint64_t count = header >> 1;
  if (header & 1) {  // bit-packed: count groups of 8 values
    if (count > (uint64_t{1} << 40)) corrupt("bit-packed run of ", count, " groups is too long");
    uint64_t bytes = count * static_cast<uint64_t>(bit_width_);
    uint64_t values = count * 8;
    uint64_t avail = static_cast<uint64_t>(end_ - p_);
    if (bytes > avail) {
      // The final run may be cut short after its last real value.
      values = avail * 8 / static_cast<uint64_t>(bit_width_);
      bytes = avail;
    }
    rle_ = false;
    packed_ = p_;
    bit_pos_ = 0;
    left_ = values;
    p_ += bytes;
  } else {  // RLE: count copies of one value stored in ceil(bit_width / 8) bytes
    int nbytes = (bit_width_ + 7) / 8;
    if (end_ - p_ < nbytes) corrupt("RLE run value runs past the end of the data");
    uint32_t v = 0;
    for (int i = 0; i < nbytes; ++i) v |= static_cast<uint32_t>(p_[i]) << (8 * i);
    p_ += nbytes;
    rle_ = true;
    rle_value_ = v;
    left_ = count;
  }
  return true;
}

size_t RleDecoder::get_batch(uint32_t* out, size_t n) {
  size_t done = 0;
  while (done < n) {
    if (left_ == 0) {
      if (!next_run()) break;
      continue;
    }
    size_t k = static_cast<size_t>(std::min<uint64_t>(n - done, left_));
    if (rle_) {
      std::fill(out + done, out + done + k, rle_value_);
    } else {
      for (size_t i = 0; i < k; ++i, bit_pos_ += static_cast<uint64_t>(bit_width_))
        out[done + i] = static_cast<uint32_t>(extract_bits(packed_, bit_pos_, bit_width_));
    }
    left_ -= k;
    done += k;
  }
  return done;
}

std::vector<std::string_view> decode_plain_values(const uint8_t* data, size_t size, int64_t num_values) {
  if (num_values < 0 || static_cast<uint64_t>(num_values) > size / 4)
    corrupt("dictionary page claims ", num_values, " values but holds only ", size, " bytes");
  std::vector<std::string_view> out;
  out.reserve(static_cast<size_t>(num_values));
  PlainDecoder d(data, size);
  for (int64_t i = 0; i < num_values; ++i) out.push_back(d.next());
  return out;
}

std::unique_ptr<ValueDecoder> make_value_decoder(int32_t encoding, const uint8_t* data, size_t size,
                                                 int64_t num_values,
                                                 const std::vector<std::string_view>* dict) {
  switch (encoding) {
    case PLAIN: return std::make_unique<PlainDecoder>(data, size);
    case PLAIN_DICTIONARY:
    case RLE_DICTIONARY:
      if (!dict) corrupt("page is ", encoding_name(encoding), "-encoded but the column chunk has no dictionary page");
      return std::make_unique<DictDecoder>(data, size, *dict);
    case DELTA_LENGTH_BYTE_ARRAY: return std::make_unique<DeltaLengthDecoder>(data, data + size, num_values);
    case DELTA_BYTE_ARRAY: return std::make_unique<DeltaByteArrayDecoder>(data, data + size, num_values);
    default:
      corrupt("encoding ", encoding_name(encoding), " is not supported for string values (supported: PLAIN, ",
              "PLAIN_DICTIONARY, RLE_DICTIONARY, DELTA_LENGTH_BYTE_ARRAY, DELTA_BYTE_ARRAY)");
  }
}

}  // namespace nmoe::parquet
