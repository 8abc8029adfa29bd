// Thrift compact protocol decoder for the parts of parquet.thrift this reader
// needs: FileMetaData and its schema, row groups and column chunks, and page
// headers. Fields this reader does not use are skipped by type, so files from
// newer writers (new optional fields, new union members) still parse.
#include <limits>

#include "data/parquet.h"

namespace nmoe::parquet {

namespace {

// Compact protocol type ids.
enum CType : uint8_t { kStop = 0, kTrue = 1, kFalse = 2, kByte = 3, kI16 = 4, kI32 = 5, kI64 = 6,
                       kDouble = 7, kBinary = 8, kList = 9, kSet = 10, kMap = 11, kStruct = 12,
                       kUuid = 13 };
constexpr int kMaxDepth = 64;  // nesting limit, so a hostile footer cannot exhaust the stack

class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), begin_(p), end_(p + n) {}

  size_t pos() const { return static_cast<size_t>(p_ - begin_); }

  uint8_t byte() {
    if (p_ >= end_) corrupt("thrift data ends early at byte ", pos());
    return *p_++;
  }
  uint64_t varint() { return read_uleb(p_, end_); }
  int64_t zigzag() {
    uint64_t v = varint();
    return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
  }
  int32_t i32() {
    int64_t v = zigzag();
    if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
      corrupt("thrift i32 out of range at byte ", pos());
    return static_cast<int32_t>(v);
  }
  size_t length() {
    uint64_t n = varint();
    if (n > static_cast<uint64_t>(end_ - p_)) corrupt("thrift length ", n, " past the end at byte ", pos());
    return static_cast<size_t>(n);
  }
  std::string binary() {
    size_t n = length();
    std::string s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return s;
  }
  void skip_bytes(size_t n) {
    if (n > static_cast<size_t>(end_ - p_)) corrupt("thrift data ends early at byte ", pos());
    p_ += n;
  }

  // List or set header: element count (checked against the bytes left, as
  // every element takes at least one byte) and element type.
  size_t list(uint8_t* elem_type) {
    uint8_t h = byte();
    *elem_type = h & 0x0f;
    uint64_t n = h >> 4;
    if (n == 15) n = varint();
    if (n > static_cast<uint64_t>(end_ - p_)) corrupt("thrift list of ", n, " elements past the end at byte ", pos());
    return static_cast<size_t>(n);
  }

  // Reads a struct: calls on_field(id, type) for each field, which returns
  // false for fields it does not read (they are skipped).
  template <typename F>
  void read_struct(F&& on_field) {
    if (++depth_ > kMaxDepth) corrupt("thrift structs nested deeper than ", kMaxDepth);
    int16_t last = 0;
    for (;;) {
      uint8_t h = byte();
      if (h == kStop) break;
      uint8_t type = h & 0x0f;
      int delta = h >> 4;
      int64_t id = delta ? last + delta : zigzag();
      if (id < std::numeric_limits<int16_t>::min() || id > std::numeric_limits<int16_t>::max())
        corrupt("thrift field id ", id, " out of range at byte ", pos());
      last = static_cast<int16_t>(id);
      if (!on_field(last, type)) skip(type, false);
    }
    --depth_;
  }

  void skip(uint8_t type, bool in_container) {
    switch (type) {
      case kTrue:
      case kFalse:
        if (in_container) byte();  // in a field header the value is the type itself
        return;
      case kByte: byte(); return;
      case kI16: case kI32: case kI64: varint(); return;
      case kDouble: skip_bytes(8); return;
      case kUuid: skip_bytes(16); return;
      case kBinary: skip_bytes(length()); return;
      case kList:
      case kSet: {
        uint8_t et;
        size_t n = list(&et);
        nest([&] { for (size_t i = 0; i < n; ++i) skip(et, true); });
        return;
      }
      case kMap: {
        uint64_t n = varint();
        if (n == 0) return;
        if (n > static_cast<uint64_t>(end_ - p_)) corrupt("thrift map of ", n, " entries past the end");
        uint8_t kv = byte();
        nest([&] {
          for (uint64_t i = 0; i < n; ++i) {
            skip(kv >> 4, true);
            skip(kv & 0x0f, true);
          }
        });
        return;
      }
      case kStruct: read_struct([](int16_t, uint8_t) { return false; }); return;
      default: corrupt("thrift type ", int(type), " is not valid at byte ", pos());
    }
  }

  template <typename F>
  void nest(F&& f) {
    if (++depth_ > kMaxDepth) corrupt("thrift containers nested deeper than ", kMaxDepth);
    f();
    --depth_;
  }

  // Typed field readers that check the wire type first.
  void expect(uint8_t got, uint8_t want, const char* field) {
    if (got != want) corrupt("thrift field ", field, " has wire type ", int(got), ", expected ", int(want));
  }
  int32_t field_i32(uint8_t t, const char* f) { expect(t, kI32, f); return i32(); }
  int64_t field_i64(uint8_t t, const char* f) { expect(t, kI64, f); return zigzag(); }
  std::string field_string(uint8_t t, const char* f) { expect(t, kBinary, f); return binary(); }
  bool field_bool(uint8_t t, const char* f) {
    if (t != kTrue && t != kFalse) corrupt("thrift field ", f, " is not a bool");
    return t == kTrue;
  }
  template <typename F>
  void field_list(uint8_t t, uint8_t want_elem, const char* f, F&& each) {
    expect(t, kList, f);
    uint8_t et;
    size_t n = list(&et);
    if (n > 0 && et != want_elem)
      corrupt("thrift list ", f, " has element type ", int(et), ", expected ", int(want_elem));
    nest([&] { for (size_t i = 0; i < n; ++i) each(); });
  }

 private:
  const uint8_t* p_;
  const uint8_t* begin_;
  const uint8_t* end_;
  int depth_ = 0;
};

void require(bool seen, const char* structure, const char* field) {
  if (!seen) corrupt("thrift ", structure, " lacks required field ", field);
}

SchemaElement parse_schema_element(Reader& r) {
  SchemaElement e;
  bool has_name = false;
  r.read_struct([&](int16_t id, uint8_t t) {
    switch (id) {
      case 1: e.type = r.field_i32(t, "SchemaElement.type"); return true;
      case 3: e.repetition = r.field_i32(t, "SchemaElement.repetition_type"); return true;
      case 4: e.name = r.field_string(t, "SchemaElement.name"); has_name = true; return true;
      case 5: e.num_children = r.field_i32(t, "SchemaElement.num_children"); return true;
      case 6: e.converted_type = r.field_i32(t, "SchemaElement.converted_type"); return true;
      default: return false;
    }
  });
  require(has_name, "SchemaElement", "name");
  return e;
}

ColumnMetaData parse_column_meta(Reader& r) {
  ColumnMetaData m;
  bool has_path = false;
  r.read_struct([&](int16_t id, uint8_t t) {
    switch (id) {
      case 1: m.type = r.field_i32(t, "ColumnMetaData.type"); return true;
      case 3:
        r.field_list(t, kBinary, "ColumnMetaData.path_in_schema",
                     [&] { m.path_in_schema.push_back(r.binary()); });
        has_path = true;
        return true;
      case 4: m.codec = r.field_i32(t, "ColumnMetaData.codec"); return true;
      case 5: m.num_values = r.field_i64(t, "ColumnMetaData.num_values"); return true;
      case 7: m.total_compressed_size = r.field_i64(t, "ColumnMetaData.total_compressed_size"); return true;
      case 9: m.data_page_offset = r.field_i64(t, "ColumnMetaData.data_page_offset"); return true;
      case 11: m.dictionary_page_offset = r.field_i64(t, "ColumnMetaData.dictionary_page_offset"); return true;
      default: return false;
    }
  });
  require(m.type >= 0, "ColumnMetaData", "type");
  require(has_path, "ColumnMetaData", "path_in_schema");
  require(m.codec >= 0, "ColumnMetaData", "codec");
  require(m.num_values >= 0, "ColumnMetaData", "num_values");
  require(m.total_compressed_size >= 0, "ColumnMetaData", "total_compressed_size");
  require(m.data_page_offset >= 0, "ColumnMetaData", "data_page_offset");
  return m;
}

ColumnChunk parse_column_chunk(Reader& r) {
  ColumnChunk c;
  r.read_struct([&](int16_t id, uint8_t t) {
    switch (id) {
      case 1: c.file_path = r.field_string(t, "ColumnChunk.file_path"); return true;
      case 3: r.expect(t, kStruct, "ColumnChunk.meta_data"); c.meta_data = parse_column_meta(r); return true;
      case 8:
      case 9: c.encrypted = true; return false;
      default: return false;
    }
  });
  return c;
}

RowGroup parse_row_group(Reader& r) {
  RowGroup g;
  bool has_columns = false;
  r.read_struct([&](int16_t id, uint8_t t) {
    switch (id) {
      case 1:
        r.field_list(t, kStruct, "RowGroup.columns", [&] { g.columns.push_back(parse_column_chunk(r)); });
        has_columns = true;
        return true;
      case 3: g.num_rows = r.field_i64(t, "RowGroup.num_rows"); return true;
      default: return false;
    }
  });
  require(has_columns, "RowGroup", "columns");
  require(g.num_rows >= 0, "RowGroup", "num_rows");
  return g;
}

}  // namespace

FileMetaData parse_file_metadata(const uint8_t* data, size_t size) {
  Reader r(data, size);
  FileMetaData m;
  bool has_schema = false, has_groups = false;
  r.read_struct([&](int16_t id, uint8_t t) {
    switch (id) {
      case 1: m.version = r.field_i32(t, "FileMetaData.version"); return true;
      case 2:
        r.field_list(t, kStruct, "FileMetaData.schema", [&] { m.schema.push_back(parse_schema_element(r)); });
        has_schema = true;
        return true;
      case 3: m.num_rows = r.field_i64(t, "FileMetaData.num_rows"); return true;
      case 4:
        r.field_list(t, kStruct, "FileMetaData.row_groups", [&] { m.row_groups.push_back(parse_row_group(r)); });
        has_groups = true;
        return true;
      case 8: m.encrypted = true; return false;
      default: return false;
    }
  });
  require(has_schema, "FileMetaData", "schema");
  require(m.num_rows >= 0, "FileMetaData", "num_rows");
  require(has_groups, "FileMetaData", "row_groups");
  return m;
}

PageHeader parse_page_header(const uint8_t* data, size_t size, size_t* consumed) {
  Reader r(data, size);
  PageHeader h;
  r.read_struct([&](int16_t id, uint8_t t) {
    switch (id) {
      case 1: h.type = r.field_i32(t, "PageHeader.type"); return true;
      case 2: h.uncompressed_page_size = r.field_i32(t, "PageHeader.uncompressed_page_size"); return true;
      case 3: h.compressed_page_size = r.field_i32(t, "PageHeader.compressed_page_size"); return true;
      case 5: {
        r.expect(t, kStruct, "PageHeader.data_page_header");
        DataPageHeader d;
        r.read_struct([&](int16_t fid, uint8_t ft) {
          switch (fid) {
            case 1: d.num_values = r.field_i32(ft, "DataPageHeader.num_values"); return true;
            case 2: d.encoding = r.field_i32(ft, "DataPageHeader.encoding"); return true;
            case 3: d.definition_level_encoding = r.field_i32(ft, "DataPageHeader.definition_level_encoding"); return true;
            case 4: d.repetition_level_encoding = r.field_i32(ft, "DataPageHeader.repetition_level_encoding"); return true;
            default: return false;
          }
        });
        require(d.num_values >= 0, "DataPageHeader", "num_values");
        require(d.encoding >= 0, "DataPageHeader", "encoding");
        require(d.definition_level_encoding >= 0, "DataPageHeader", "definition_level_encoding");
        h.data_page_header = d;
        return true;
      }
      case 7: {
        r.expect(t, kStruct, "PageHeader.dictionary_page_header");
        DictionaryPageHeader d;
        r.read_struct([&](int16_t fid, uint8_t ft) {
          switch (fid) {
            case 1: d.num_values = r.field_i32(ft, "DictionaryPageHeader.num_values"); return true;
            case 2: d.encoding = r.field_i32(ft, "DictionaryPageHeader.encoding"); return true;
            default: return false;
          }
        });
        require(d.num_values >= 0, "DictionaryPageHeader", "num_values");
        require(d.encoding >= 0, "DictionaryPageHeader", "encoding");
        h.dictionary_page_header = d;
        return true;
      }
      case 8: {
        r.expect(t, kStruct, "PageHeader.data_page_header_v2");
        DataPageHeaderV2 d;
        r.read_struct([&](int16_t fid, uint8_t ft) {
          switch (fid) {
            case 1: d.num_values = r.field_i32(ft, "DataPageHeaderV2.num_values"); return true;
            case 2: d.num_nulls = r.field_i32(ft, "DataPageHeaderV2.num_nulls"); return true;
            case 3: d.num_rows = r.field_i32(ft, "DataPageHeaderV2.num_rows"); return true;
            case 4: d.encoding = r.field_i32(ft, "DataPageHeaderV2.encoding"); return true;
            case 5: d.definition_levels_byte_length = r.field_i32(ft, "DataPageHeaderV2.definition_levels_byte_length"); return true;
            case 6: d.repetition_levels_byte_length = r.field_i32(ft, "DataPageHeaderV2.repetition_levels_byte_length"); return true;
            case 7: d.is_compressed = r.field_bool(ft, "DataPageHeaderV2.is_compressed"); return true;
            default: return false;
          }
        });
        require(d.num_values >= 0, "DataPageHeaderV2", "num_values");
        require(d.num_nulls >= 0, "DataPageHeaderV2", "num_nulls");
        require(d.encoding >= 0, "DataPageHeaderV2", "encoding");
        require(d.definition_levels_byte_length >= 0, "DataPageHeaderV2", "definition_levels_byte_length");
        require(d.repetition_levels_byte_length >= 0, "DataPageHeaderV2", "repetition_levels_byte_length");
        h.data_page_header_v2 = d;
        return true;
      }
      default: return false;
    }
  });
  require(h.type >= 0, "PageHeader", "type");
  require(h.uncompressed_page_size >= 0, "PageHeader", "uncompressed_page_size");
  require(h.compressed_page_size >= 0, "PageHeader", "compressed_page_size");
  *consumed = r.pos();
  return h;
}

}  // namespace nmoe::parquet
