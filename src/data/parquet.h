// A focused Apache Parquet reader: streams the values of one string
// (BYTE_ARRAY) column of a file, row by row, for `n data prep`.
//
// Supported: data pages v1 and v2, dictionary pages, several row groups and
// pages per column chunk; codecs UNCOMPRESSED, SNAPPY, GZIP, ZSTD; encodings
// PLAIN, PLAIN_DICTIONARY / RLE_DICTIONARY, DELTA_LENGTH_BYTE_ARRAY and
// DELTA_BYTE_ARRAY; required and optional columns, also leaves of (non-repeated)
// structs, where a null anywhere on the path reads as a null value. Repeated
// columns (lists, maps), other codecs and encodings, encrypted files and
// columns stored in other files are rejected with an Error. CRCs, statistics,
// page indexes and bloom filters are ignored.
//
// Every length and offset read from the file is bounds-checked: a truncated or
// corrupted file gives an nmoe::Error naming the file, column, row group and
// page, never a crash. The const methods keep no state between calls, so
// several threads may read (different row groups of) one file at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/mapped_file.h"

namespace nmoe {

namespace parquet {
struct FileMetaData;
struct Leaf;
}  // namespace parquet

class ParquetFile {
 public:
  using StringFn = std::function<void(int64_t row, std::optional<std::string_view> value)>;

  // Memory-maps path and parses the footer; validates the "PAR1" magic at both
  // ends, the footer length and the metadata (schema, row groups, columns).
  static ParquetFile open(const std::string& path);

  ParquetFile(ParquetFile&& other) noexcept;             // defaulted in parquet_reader.cpp,
  ParquetFile& operator=(ParquetFile&& other) noexcept;  // where FileMetaData is complete
  ParquetFile(const ParquetFile&) = delete;
  ParquetFile& operator=(const ParquetFile&) = delete;
  ~ParquetFile();

  int64_t num_rows() const;
  int num_row_groups() const;
  int64_t row_group_num_rows(int row_group) const;
  // Leaf column paths in schema order, e.g. "text", "meta.url" (struct leaves).
  std::vector<std::string> column_names() const;
  const std::string& path() const { return map_.path(); }

  // Calls fn(row, value) for every row of a string column in file order; row
  // counts from 0 at the first row of the file; nulls are std::nullopt. The
  // string_view is valid only during the call.
  void read_strings(const std::string& column, const StringFn& fn) const;
  // The same for one row group (rows still numbered from the start of the file).
  void read_strings(const std::string& column, int row_group, const StringFn& fn) const;

 private:
  ParquetFile() = default;
  const parquet::Leaf& string_leaf(const std::string& column) const;
  void read_chunk(const parquet::Leaf& leaf, int row_group, const StringFn& fn) const;

  MappedFile map_;
  size_t data_end_ = 0;  // where the footer starts
  int64_t num_rows_ = 0;
  std::unique_ptr<parquet::FileMetaData> meta_;
  std::vector<parquet::Leaf> leaves_;
  std::vector<int64_t> group_first_row_;
};

// ---------------------------------------------------------------------------
// Implementation details shared by src/data/parquet_*.cpp (and the tests).
namespace parquet {

// Malformed or unsupported file content; ParquetFile rethrows it as an Error
// that names the file, column, row group and page.
class FormatError : public Error {
 public:
  using Error::Error;
};

template <typename... Args>
[[noreturn]] void corrupt(Args&&... args) {
  throw FormatError(detail::concat(std::forward<Args>(args)...));
}

// parquet.thrift enums (only the values this reader names).
enum Type : int32_t { BOOLEAN = 0, INT32 = 1, INT64 = 2, INT96 = 3, FLOAT = 4, DOUBLE = 5,
                      BYTE_ARRAY = 6, FIXED_LEN_BYTE_ARRAY = 7 };
enum Repetition : int32_t { REQUIRED = 0, OPTIONAL = 1, REPEATED = 2 };
enum Codec : int32_t { UNCOMPRESSED = 0, SNAPPY = 1, GZIP = 2, LZO = 3, BROTLI = 4, LZ4 = 5,
                       ZSTD = 6, LZ4_RAW = 7 };
enum Encoding : int32_t { PLAIN = 0, PLAIN_DICTIONARY = 2, RLE = 3, BIT_PACKED = 4,
                          DELTA_BINARY_PACKED = 5, DELTA_LENGTH_BYTE_ARRAY = 6,
                          DELTA_BYTE_ARRAY = 7, RLE_DICTIONARY = 8, BYTE_STREAM_SPLIT = 9 };
enum PageType : int32_t { DATA_PAGE = 0, INDEX_PAGE = 1, DICTIONARY_PAGE = 2, DATA_PAGE_V2 = 3 };
constexpr int32_t kConvertedDecimal = 5;  // ConvertedType DECIMAL

std::string type_name(int32_t type);
std::string codec_name(int32_t codec);
std::string encoding_name(int32_t encoding);

struct SchemaElement {
  std::optional<int32_t> type;
  std::optional<int32_t> repetition;
  std::string name;
  std::optional<int32_t> num_children;
  std::optional<int32_t> converted_type;
};

struct ColumnMetaData {
  int32_t type = -1;
  std::vector<std::string> path_in_schema;
  int32_t codec = -1;
  int64_t num_values = -1;
  int64_t total_compressed_size = -1;
  int64_t data_page_offset = -1;
  std::optional<int64_t> dictionary_page_offset;
};

struct ColumnChunk {
  std::optional<std::string> file_path;
  std::optional<ColumnMetaData> meta_data;
  bool encrypted = false;  // crypto_metadata or encrypted_column_metadata present
};

struct RowGroup {
  std::vector<ColumnChunk> columns;
  int64_t num_rows = -1;
};

struct FileMetaData {
  int32_t version = 0;
  std::vector<SchemaElement> schema;
  int64_t num_rows = -1;
  std::vector<RowGroup> row_groups;
  bool encrypted = false;  // encryption_algorithm present (plaintext-footer mode)
};

struct DataPageHeader {
  int32_t num_values = -1;
  int32_t encoding = -1;
  int32_t definition_level_encoding = -1;
  int32_t repetition_level_encoding = -1;
};

struct DataPageHeaderV2 {
  int32_t num_values = -1;
  int32_t num_nulls = -1;
  int32_t num_rows = -1;
  int32_t encoding = -1;
  int32_t definition_levels_byte_length = -1;
  int32_t repetition_levels_byte_length = -1;
  bool is_compressed = true;
};

struct DictionaryPageHeader {
  int32_t num_values = -1;
  int32_t encoding = -1;
};

struct PageHeader {
  int32_t type = -1;
  int32_t uncompressed_page_size = -1;
  int32_t compressed_page_size = -1;
  std::optional<DataPageHeader> data_page_header;
  std::optional<DictionaryPageHeader> dictionary_page_header;
  std::optional<DataPageHeaderV2> data_page_header_v2;
};

// Thrift compact protocol decoding (parquet_thrift.cpp). Unknown fields are
// skipped; missing required fields and out-of-bounds data are FormatErrors.
FileMetaData parse_file_metadata(const uint8_t* data, size_t size);
// Parses the page header at data; *consumed receives its length in bytes.
PageHeader parse_page_header(const uint8_t* data, size_t size, size_t* consumed);

// A leaf column of the schema (parquet_reader.cpp).
struct Leaf {
  std::string path;       // dotted path without the root, e.g. "meta.url"
  size_t index = 0;       // column chunk index within a row group
  int32_t type = -1;
  std::optional<int32_t> converted_type;
  int max_def = 0;
  int max_rep = 0;
};

// Decompresses src into out, which ends up exactly uncompressed_size bytes
// long; FormatError if the codec is unsupported or the data does not
// decompress to exactly that size (parquet_codecs.cpp).
void decompress(int32_t codec, const uint8_t* src, size_t size, size_t uncompressed_size, std::string& out);

// Unsigned LEB128 varint at p (advanced); FormatError past end or over 64 bits.
uint64_t read_uleb(const uint8_t*& p, const uint8_t* end);

// RLE / bit-packed hybrid decoder for definition levels and dictionary indices
// (parquet_encodings.cpp); data holds the runs without any length prefix.
class RleDecoder {
 public:
  RleDecoder(const uint8_t* data, size_t size, int bit_width);
  // Decodes up to n values into out; fewer only when the data ends.
  size_t get_batch(uint32_t* out, size_t n);

 private:
  bool next_run();
  const uint8_t* p_;
  const uint8_t* end_;
  int bit_width_;
  bool rle_ = false;
  uint64_t left_ = 0;         // values left in the current run
  uint32_t rle_value_ = 0;
  const uint8_t* packed_ = nullptr;  // bit-packed run: data and bit position
  uint64_t bit_pos_ = 0;
};

// Values of the non-null entries of one data page, in order.
class ValueDecoder {
 public:
  virtual ~ValueDecoder() = default;
  // The next value; FormatError when the page has no more values. The view
  // is valid until the next call.
  virtual std::string_view next() = 0;
};

// Decoder for num_values byte-array values in [data, data + size) encoded as
// encoding; dict is the column chunk's dictionary (nullptr if none).
std::unique_ptr<ValueDecoder> make_value_decoder(int32_t encoding, const uint8_t* data, size_t size,
                                                 int64_t num_values,
                                                 const std::vector<std::string_view>* dict);
// The num_values PLAIN byte-array values of a dictionary page.
std::vector<std::string_view> decode_plain_values(const uint8_t* data, size_t size, int64_t num_values);

}  // namespace parquet
}  // namespace nmoe
