// ParquetFile: footer and schema validation, and the page loop that streams a
// string column chunk by chunk. See parquet.h for what is supported.
#include <bit>
#include <cstring>

#include "data/parquet.h"

namespace nmoe {

using namespace parquet;

namespace parquet {

std::string type_name(int32_t t) {
  static const char* names[] = {"BOOLEAN", "INT32", "INT64", "INT96", "FLOAT", "DOUBLE", "BYTE_ARRAY",
                                "FIXED_LEN_BYTE_ARRAY"};
  return t >= 0 && t < 8 ? names[t] : "type " + std::to_string(t);
}

std::string codec_name(int32_t c) {
  static const char* names[] = {"UNCOMPRESSED", "SNAPPY", "GZIP", "LZO", "BROTLI", "LZ4", "ZSTD", "LZ4_RAW"};
  return c >= 0 && c < 8 ? names[c] : "codec " + std::to_string(c);
}

std::string encoding_name(int32_t e) {
  static const char* names[] = {"PLAIN", "GROUP_VAR_INT", "PLAIN_DICTIONARY", "RLE", "BIT_PACKED",
                                "DELTA_BINARY_PACKED", "DELTA_LENGTH_BYTE_ARRAY", "DELTA_BYTE_ARRAY",
                                "RLE_DICTIONARY", "BYTE_STREAM_SPLIT"};
  return e >= 0 && e < 10 ? names[e] : "encoding " + std::to_string(e);
}

}  // namespace parquet

namespace {

constexpr int kMaxSchemaDepth = 100;

uint32_t u32le(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

// Depth-first walk of the flattened schema; appends one Leaf per primitive column.
void walk_schema(const std::vector<SchemaElement>& schema, size_t& idx, int64_t children, const std::string& prefix,
                 int def, int rep, int depth, std::vector<Leaf>& leaves) {
  if (depth > kMaxSchemaDepth) corrupt("schema nested deeper than ", kMaxSchemaDepth, " levels");
  for (int64_t c = 0; c < children; ++c) {
    if (idx >= schema.size()) corrupt("schema ends early: a group has more children than elements follow");
    const SchemaElement& e = schema[idx++];
    int32_t r = e.repetition.value_or(REQUIRED);
    if (r < REQUIRED || r > REPEATED) corrupt("schema element '", e.name, "' has invalid repetition ", r);
    std::string path = prefix.empty() ? e.name : prefix + "." + e.name;
    int d = def + (r != REQUIRED), p = rep + (r == REPEATED);
    if (e.num_children) {
      if (*e.num_children < 0) corrupt("schema element '", e.name, "' has ", *e.num_children, " children");
      walk_schema(schema, idx, *e.num_children, path, d, p, depth + 1, leaves);
    } else {
      if (!e.type) corrupt("schema leaf '", path, "' has no type");
      leaves.push_back(Leaf{path, leaves.size(), *e.type, e.converted_type, d, p});
    }
  }
}

// Data of a page after decompression (or the page itself when stored plain).
std::string_view page_bytes(int32_t codec, const uint8_t* src, size_t size, size_t uncompressed, std::string& buf) {
  if (codec == UNCOMPRESSED) {
    if (size != uncompressed) corrupt("uncompressed page of ", size, " bytes, but its header says ", uncompressed);
    return {reinterpret_cast<const char*>(src), size};
  }
  decompress(codec, src, size, uncompressed, buf);
  return buf;
}

const uint8_t* u8(std::string_view s) { return reinterpret_cast<const uint8_t*>(s.data()); }

// Calls fn for the n entries of a page: a value where the definition level is
// max_def, a null below it.
void emit(const uint8_t* levels, size_t levels_size, int max_def, int64_t n, ValueDecoder& values, int64_t& row,
          const ParquetFile::StringFn& fn) {
  if (max_def == 0) {
    for (int64_t i = 0; i < n; ++i) fn(row++, values.next());
    return;
  }
  RleDecoder dec(levels, levels_size, std::bit_width(static_cast<unsigned>(max_def)));
  uint32_t buf[1024];
  for (int64_t left = n; left > 0;) {
    size_t k = dec.get_batch(buf, static_cast<size_t>(std::min<int64_t>(left, 1024)));
    if (k == 0) corrupt("definition levels end after ", n - left, " of ", n, " values");
    for (size_t i = 0; i < k; ++i) {
      if (buf[i] > static_cast<uint32_t>(max_def)) corrupt("definition level ", buf[i], " exceeds the maximum ", max_def);
      if (buf[i] == static_cast<uint32_t>(max_def)) fn(row++, values.next());
      else fn(row++, std::nullopt);
    }
    left -= static_cast<int64_t>(k);
  }
}

}  // namespace

ParquetFile ParquetFile::open(const std::string& path) {
  ParquetFile f;
  f.map_ = MappedFile::open(path, "parquet");
  const uint8_t* b = f.map_.data();
  size_t size = f.map_.size();
  if (size < 12) fail("parquet '", path, "': file of ", size, " bytes is too short to be a Parquet file");
  if (std::memcmp(b + size - 4, "PARE", 4) == 0)
    fail("parquet '", path, "': encrypted Parquet files are not supported");
  if (std::memcmp(b, "PAR1", 4) != 0 || std::memcmp(b + size - 4, "PAR1", 4) != 0)
    fail("parquet '", path, "': not a Parquet file (no PAR1 magic at ",
         std::memcmp(b, "PAR1", 4) != 0 ? "the start" : "the end; the file may be truncated", ")");
  uint32_t footer = u32le(b + size - 8);
  if (footer > size - 12)
    fail("parquet '", path, "': footer length ", footer, " exceeds the file size ", size, " (truncated file?)");
  f.data_end_ = size - 8 - footer;
  try {
    f.meta_ = std::make_unique<FileMetaData>(parse_file_metadata(b + f.data_end_, footer));
    const FileMetaData& m = *f.meta_;
    if (m.encrypted) corrupt("encrypted Parquet files are not supported");
    if (m.schema.empty()) corrupt("empty schema");
    size_t idx = 1;
    walk_schema(m.schema, idx, m.schema[0].num_children.value_or(0), "", 0, 0, 0, f.leaves_);
    if (idx != m.schema.size()) corrupt("schema has ", m.schema.size() - idx, " elements outside the root's children");
    int64_t rows = 0;
    for (size_t g = 0; g < m.row_groups.size(); ++g) {
      const RowGroup& rg = m.row_groups[g];
      if (rg.columns.size() != f.leaves_.size())
        corrupt("row group ", g, " has ", rg.columns.size(), " column chunks, the schema ", f.leaves_.size(), " columns");
      if (rg.num_rows > INT64_MAX - rows) corrupt("row counts overflow");
      f.group_first_row_.push_back(rows);
      rows += rg.num_rows;
    }
    f.num_rows_ = rows;  // some writers leave FileMetaData.num_rows at 0; the row groups are what we read
  } catch (const FormatError& e) {
    fail("parquet '", path, "': invalid footer metadata: ", e.what());
  }
  return f;
}

ParquetFile::ParquetFile(ParquetFile&& o) noexcept = default;
ParquetFile& ParquetFile::operator=(ParquetFile&& o) noexcept = default;
ParquetFile::~ParquetFile() = default;

int64_t ParquetFile::num_rows() const { return num_rows_; }
int ParquetFile::num_row_groups() const { return static_cast<int>(meta_->row_groups.size()); }

int64_t ParquetFile::row_group_num_rows(int row_group) const {
  if (row_group < 0 || row_group >= num_row_groups())
    fail("parquet '", path(), "': row group ", row_group, " out of range (the file has ", num_row_groups(), ")");
  return meta_->row_groups[row_group].num_rows;
}

std::vector<std::string> ParquetFile::column_names() const {
  std::vector<std::string> names;
  for (const Leaf& l : leaves_) names.push_back(l.path);
  return names;
}

const Leaf& ParquetFile::string_leaf(const std::string& column) const {
  for (const Leaf& l : leaves_) {
    if (l.path != column) continue;
    if (l.max_rep > 0)
      fail("parquet '", path(), "': column '", column, "' is repeated (inside a list or map); only flat and struct ",
           "string columns can be read");
    if (l.type != BYTE_ARRAY)
      fail("parquet '", path(), "': column '", column, "' is ", type_name(l.type), ", expected a string column");
    if (l.converted_type == kConvertedDecimal)
      fail("parquet '", path(), "': column '", column, "' is BYTE_ARRAY (DECIMAL), expected a string column");
    return l;
  }
  std::string avail;
  for (const Leaf& l : leaves_) avail += (avail.empty() ? "" : ", ") + l.path;
  fail("parquet '", path(), "': no column '", column, "'; available columns: ", avail.empty() ? "(none)" : avail);
}

void ParquetFile::read_strings(const std::string& column, const StringFn& fn) const {
  const Leaf& leaf = string_leaf(column);
  for (int g = 0; g < num_row_groups(); ++g) read_chunk(leaf, g, fn);
}

void ParquetFile::read_strings(const std::string& column, int row_group, const StringFn& fn) const {
  const Leaf& leaf = string_leaf(column);
  row_group_num_rows(row_group);  // range check
  read_chunk(leaf, row_group, fn);
}

void ParquetFile::read_chunk(const Leaf& leaf, int rg, const StringFn& fn) const {
  const RowGroup& group = meta_->row_groups[rg];
  const ColumnChunk& cc = group.columns[leaf.index];
  const uint8_t* base = map_.data();
  int page = -1;
  size_t offset = 0;
  try {
    if (cc.file_path) corrupt("column data stored in another file ('", *cc.file_path, "') is not supported");
    if (cc.encrypted) corrupt("encrypted columns are not supported");
    if (!cc.meta_data) corrupt("column chunk has no metadata");
    const ColumnMetaData& m = *cc.meta_data;
    std::string meta_path;
    for (const std::string& s : m.path_in_schema) meta_path += (meta_path.empty() ? "" : ".") + s;
    if (meta_path != leaf.path) corrupt("column chunk is for '", meta_path, "', the schema says '", leaf.path, "'");
    if (m.type != leaf.type) corrupt("column chunk type ", type_name(m.type), " differs from the schema's");
    if (m.num_values != group.num_rows)
      corrupt("column chunk has ", m.num_values, " values but the row group has ", group.num_rows, " rows");
    if (m.num_values == 0) return;  // an empty chunk (pyarrow leaves its offsets at 0)
    int64_t start = m.data_page_offset;
    if (m.dictionary_page_offset && *m.dictionary_page_offset > 0 && *m.dictionary_page_offset < start)
      start = *m.dictionary_page_offset;
    int64_t avail = static_cast<int64_t>(data_end_);
    if (start < 4 || start > avail || m.total_compressed_size > avail - start)
      corrupt("column chunk at byte ", start, " of ", m.total_compressed_size, " bytes lies outside the data (",
              data_end_, " bytes)");
    const uint8_t* p = base + start;
    const uint8_t* end = p + m.total_compressed_size;
    std::string dict_buf, page_buf;
    std::vector<std::string_view> dict;
    bool have_dict = false;
    int64_t done = 0, row = group_first_row_[rg];
    while (done < m.num_values) {
      ++page;
      offset = static_cast<size_t>(p - base);
      if (p >= end) corrupt("column chunk ends after ", done, " of its ", m.num_values, " values");
      size_t hlen = 0;
      PageHeader h = parse_page_header(p, static_cast<size_t>(end - p), &hlen);
      p += hlen;
      if (h.compressed_page_size > end - p)
        corrupt("page of ", h.compressed_page_size, " bytes runs past the end of the column chunk");
      const uint8_t* body = p;
      size_t body_size = static_cast<size_t>(h.compressed_page_size);
      size_t usize = static_cast<size_t>(h.uncompressed_page_size);
      p += body_size;
      if (h.type == DICTIONARY_PAGE) {
        if (!h.dictionary_page_header) corrupt("dictionary page without a dictionary page header");
        if (have_dict) corrupt("second dictionary page in one column chunk");
        if (done > 0) corrupt("dictionary page after data pages");
        int32_t enc = h.dictionary_page_header->encoding;
        if (enc != PLAIN && enc != PLAIN_DICTIONARY) corrupt("dictionary page encoding ", encoding_name(enc), " is not supported");
        std::string_view d = page_bytes(m.codec, body, body_size, usize, dict_buf);
        dict = decode_plain_values(u8(d), d.size(), h.dictionary_page_header->num_values);
        have_dict = true;
      } else if (h.type == DATA_PAGE) {
        if (!h.data_page_header) corrupt("data page without a data page header");
        const DataPageHeader& dh = *h.data_page_header;
        if (dh.num_values > m.num_values - done) corrupt("page holds more values than its column chunk");
        std::string_view d = page_bytes(m.codec, body, body_size, usize, page_buf);
        const uint8_t *q = u8(d), *qend = q + d.size(), *levels = nullptr;
        size_t levels_size = 0;
        if (leaf.max_def > 0) {
          if (dh.definition_level_encoding != RLE)
            corrupt("definition levels encoded as ", encoding_name(dh.definition_level_encoding), " (only RLE is supported)");
          if (qend - q < 4) corrupt("definition levels' length runs past the end of the page");
          levels_size = u32le(q);
          q += 4;
          if (levels_size > static_cast<size_t>(qend - q)) corrupt("definition levels run past the end of the page");
          levels = q;
          q += levels_size;
        }
        auto values = make_value_decoder(dh.encoding, q, static_cast<size_t>(qend - q), dh.num_values,
                                         have_dict ? &dict : nullptr);
        emit(levels, levels_size, leaf.max_def, dh.num_values, *values, row, fn);
        done += dh.num_values;
      } else if (h.type == DATA_PAGE_V2) {
        if (!h.data_page_header_v2) corrupt("data page v2 without its header");
        const DataPageHeaderV2& dh = *h.data_page_header_v2;
        if (dh.num_values > m.num_values - done) corrupt("page holds more values than its column chunk");
        if (dh.num_nulls > dh.num_values) corrupt("page has ", dh.num_nulls, " nulls among ", dh.num_values, " values");
        if (leaf.max_def == 0 && dh.num_nulls > 0) corrupt("page of a required column holds ", dh.num_nulls, " nulls");
        size_t rl = static_cast<size_t>(dh.repetition_levels_byte_length);
        size_t dl = static_cast<size_t>(dh.definition_levels_byte_length);
        if (rl + dl > body_size || rl + dl > usize) corrupt("levels of ", rl + dl, " bytes exceed the page size");
        const uint8_t* vals = body + rl + dl;
        size_t vals_size = body_size - rl - dl, vals_usize = usize - rl - dl;
        std::string_view d = dh.is_compressed ? page_bytes(m.codec, vals, vals_size, vals_usize, page_buf)
                                              : page_bytes(UNCOMPRESSED, vals, vals_size, vals_usize, page_buf);
        auto values = make_value_decoder(dh.encoding, u8(d), d.size(), dh.num_values - dh.num_nulls,
                                         have_dict ? &dict : nullptr);
        emit(body + rl, dl, leaf.max_def, dh.num_values, *values, row, fn);
        done += dh.num_values;
      }
      // Index pages and page types from newer writers are skipped.
    }
  } catch (const FormatError& e) {
    fail("parquet '", path(), "': column '", leaf.path, "', row group ", rg,
         page >= 0 ? ", page " + std::to_string(page) + " at byte " + std::to_string(offset) : std::string(), ": ",
         e.what());
  }
}

}  // namespace nmoe
