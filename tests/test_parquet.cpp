// The Parquet string-column reader: round trips through the test writer over
// codecs x page versions x encodings, hand-encoded spec examples, schema and
// column errors, corrupted files, and (when generated) pyarrow fixtures.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/parquet.h"
#include "parquet_test_writer.h"
#include "test_util.h"

namespace nmoe {
namespace {

using test::error_of;
using test::expect_parts;
using Strings = std::vector<std::optional<std::string>>;
namespace pqw = test::pqw;

Strings sample_strings(size_t n, bool with_nulls, uint64_t seed) {
  static const std::vector<std::string> pool = {
      "", "hello", "hello world", "héllo wörld", "日本語のテキスト", "emoji 🚀🔥 mixed", std::string(1500, 'x'),
      "tab\tand\nnewline", std::string("nul\0byte", 8), "hello there"};
  std::mt19937_64 g(seed);
  Strings out;
  for (size_t i = 0; i < n; ++i) {
    uint64_t r = g() % 10;
    if (with_nulls && r < 2) {
      out.push_back(std::nullopt);
    } else if (r < 6) {
      out.push_back(pool[g() % pool.size()]);
    } else {
      std::string s = "doc-" + std::to_string(i) + "-";
      for (uint64_t k = g() % 40; k > 0; --k) s += char('a' + g() % 26);
      out.push_back(s);
    }
  }
  return out;
}

Strings read_all(const ParquetFile& f, const std::string& column) {
  Strings out;
  f.read_strings(column, [&](int64_t row, std::optional<std::string_view> v) {
    EXPECT_EQ(row, static_cast<int64_t>(out.size()));
    out.push_back(v ? std::optional<std::string>(*v) : std::nullopt);
  });
  return out;
}

std::vector<int64_t> iota_ids(size_t n) {
  std::vector<int64_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<int64_t>(i) * 7 - 100;
  return v;
}

class ParquetTest : public test::FileTest {
 protected:
  std::string write(const std::string& name, const std::vector<pqw::Column>& cols, const pqw::Options& o) {
    return write_raw(name, pqw::write_parquet(cols, o));
  }
};

using Params = std::tuple<int, bool, int>;  // codec, v2, encoding
class ParquetRoundTrip : public test::FileTest, public ::testing::WithParamInterface<Params> {};

TEST_P(ParquetRoundTrip, ReadsEveryRowOfRequiredAndOptionalColumns) {
  auto [codec, v2, encoding] = GetParam();
  for (bool optional : {false, true}) {
    SCOPED_TRACE(optional ? "optional" : "required");
    const size_t n = 250;
    pqw::Column text{"text", false, optional, false, sample_strings(n, optional, 42 + optional), {}};
    pqw::Column id{"id", true, false, false, {}, iota_ids(n)};
    pqw::Options o;
    o.codec = codec;
    o.v2 = v2;
    o.encoding = encoding;
    o.rows_per_group = 64;
    o.rows_per_page = 9;
    std::string path = write_raw("t.parquet", pqw::write_parquet({id, text}, o));
    ParquetFile f = ParquetFile::open(path);
    EXPECT_EQ(f.num_rows(), static_cast<int64_t>(n));
    ASSERT_EQ(f.num_row_groups(), 4);
    EXPECT_EQ(f.row_group_num_rows(3), 250 - 3 * 64);
    EXPECT_EQ(f.column_names(), (std::vector<std::string>{"id", "text"}));
    EXPECT_EQ(read_all(f, "text"), text.strings);
    // One row group at a time: rows keep their file-wide numbers.
    for (int g : {2, 0, 3}) {
      int64_t next = g * 64;
      f.read_strings("text", g, [&](int64_t row, std::optional<std::string_view> v) {
        ASSERT_EQ(row, next++);
        ASSERT_EQ(v.has_value(), text.strings[row].has_value());
        if (v) {
          ASSERT_EQ(*v, *text.strings[row]);
        }
      });
      EXPECT_EQ(next, std::min<int64_t>(n, (g + 1) * 64));
    }
  }
}

std::string param_name(const ::testing::TestParamInfo<Params>& info) {
  auto [codec, v2, enc] = info.param;
  return parquet::codec_name(codec) + (v2 ? "_v2_" : "_v1_") + parquet::encoding_name(enc);
}

INSTANTIATE_TEST_SUITE_P(Matrix, ParquetRoundTrip,
                         ::testing::Combine(::testing::Values(pqw::kNone, pqw::kSnappy, pqw::kGzip, pqw::kZstd),
                                            ::testing::Bool(),
                                            ::testing::Values(pqw::kPlain, pqw::kPlainDict, pqw::kRleDict,
                                                              pqw::kDeltaLength, pqw::kDeltaByteArray)),
                         param_name);

TEST_F(ParquetTest, V2PageWithUncompressedValuesFlag) {
  pqw::Column text{"text", false, true, false, sample_strings(100, true, 7), {}};
  pqw::Options o;
  o.codec = pqw::kZstd;
  o.v2 = true;
  o.v2_is_compressed = false;
  o.encoding = pqw::kRleDict;
  ParquetFile f = ParquetFile::open(write("v2.parquet", {text}, o));
  EXPECT_EQ(read_all(f, "text"), text.strings);
}

TEST_F(ParquetTest, EmptyStringsAndAllNullPages) {
  Strings vals(40, std::string());
  for (size_t i = 10; i < 30; ++i) vals[i] = std::nullopt;  // pages 1 and 2 entirely null
  for (int enc : {pqw::kPlain, pqw::kRleDict, pqw::kDeltaLength, pqw::kDeltaByteArray}) {
    pqw::Options o;
    o.encoding = enc;
    o.rows_per_page = 10;
    ParquetFile f = ParquetFile::open(write("e.parquet", {{"s", false, true, false, vals, {}}}, o));
    EXPECT_EQ(read_all(f, "s"), vals) << parquet::encoding_name(enc);
  }
}

TEST_F(ParquetTest, StructLeavesAreNamedByPathAndNullWhenAnyLevelIsNull) {
  const size_t n = 30;
  Strings urls(n);
  for (size_t i = 0; i < n; ++i)
    if (i % 4) urls[i] = "https://example.com/" + std::to_string(i);
  pqw::Column text{"text", false, false, false, sample_strings(n, false, 3), {}};
  pqw::Column id{"id", true, false, false, {}, iota_ids(n)};
  pqw::Column url{"meta.url", false, false, false, urls, {}};
  pqw::Column tags{"tags", false, false, true, sample_strings(n, false, 4), {}};
  pqw::Options o;
  o.codec = pqw::kSnappy;
  ParquetFile f = ParquetFile::open(write("m.parquet", {text, id, url, tags}, o));
  EXPECT_EQ(f.column_names(), (std::vector<std::string>{"text", "id", "meta.url", "tags"}));
  EXPECT_EQ(read_all(f, "text"), text.strings);
  EXPECT_EQ(read_all(f, "meta.url"), urls);

  auto noop = [](int64_t, std::optional<std::string_view>) {};
  expect_parts(error_of([&] { f.read_strings("id", noop); }),
               {"m.parquet", "column 'id' is INT64, expected a string column"});
  expect_parts(error_of([&] { f.read_strings("tags", noop); }), {"column 'tags' is repeated"});
  expect_parts(error_of([&] { f.read_strings("body", noop); }),
               {"no column 'body'", "available columns: text, id, meta.url, tags"});
  expect_parts(error_of([&] { f.read_strings("text", 1, noop); }), {"row group 1 out of range", "has 1"});
  expect_parts(error_of([&] { f.read_strings("text", -1, noop); }), {"row group -1 out of range"});
}

TEST_F(ParquetTest, UnsupportedCodecAndEncodingNameColumnGroupAndPage) {
  pqw::Column text{"text", false, false, false, sample_strings(20, false, 5), {}};
  auto noop = [](int64_t, std::optional<std::string_view>) {};
  pqw::Options o;
  o.codec_in_metadata = 4;  // BROTLI
  ParquetFile f = ParquetFile::open(write("c.parquet", {text}, o));
  expect_parts(error_of([&] { f.read_strings("text", noop); }),
               {"c.parquet", "column 'text'", "row group 0", "page 0", "BROTLI", "not supported"});
  pqw::Options e;
  e.encoding_in_page = 9;  // BYTE_STREAM_SPLIT
  e.rows_per_page = 10;
  ParquetFile g = ParquetFile::open(write("e.parquet", {text}, e));
  expect_parts(error_of([&] { g.read_strings("text", noop); }),
               {"e.parquet", "column 'text'", "row group 0", "page 0", "BYTE_STREAM_SPLIT", "not supported"});
}

TEST_F(ParquetTest, OpenRejectsFilesThatAreNotParquet) {
  pqw::Column text{"text", false, false, false, sample_strings(20, false, 6), {}};
  std::string good = pqw::write_parquet({text}, pqw::Options{});
  expect_parts(error_of([&] { ParquetFile::open(file("missing.parquet")); }), {"missing.parquet", "cannot open"});
  expect_parts(error_of([&] { ParquetFile::open(write_raw("empty.parquet", "")); }), {"empty.parquet", "too short"});
  expect_parts(error_of([&] { ParquetFile::open(write_raw("j.parquet", "{\"json\": true, \"x\": [1,2,3]}")); }),
               {"j.parquet", "not a Parquet file"});
  expect_parts(error_of([&] { ParquetFile::open(write_raw("cut.parquet", good.substr(0, good.size() - 3))); }),
               {"cut.parquet", "truncated"});
  std::string big = good;
  big[big.size() - 6] = '\x7f';  // footer length far beyond the file
  expect_parts(error_of([&] { ParquetFile::open(write_raw("len.parquet", big)); }),
               {"len.parquet", "footer length", "exceeds the file size"});
  std::string bad_meta = good;
  bad_meta[bad_meta.size() - 9] = '\x0d';  // the footer's STOP byte becomes a bogus field
  expect_parts(error_of([&] { ParquetFile::open(write_raw("meta.parquet", bad_meta)); }),
               {"meta.parquet", "invalid footer metadata"});
}

// Examples worked by hand from the format specification, independent of the test writer.
TEST(ParquetEncodings, RleBitPackedHybridSpecExample) {
  const uint8_t packed[] = {0x03, 0x88, 0xC6, 0xFA, 0x10, 0x05};  // 0..7 bit-packed (width 3), then 8 x 5 as RLE
  parquet::RleDecoder d(packed, sizeof packed, 3);
  uint32_t out[20];
  ASSERT_EQ(d.get_batch(out, 20), 16u);
  for (uint32_t i = 0; i < 8; ++i) EXPECT_EQ(out[i], i);
  for (int i = 8; i < 16; ++i) EXPECT_EQ(out[i], 5u);
}

std::vector<std::string> decode(int32_t enc, const std::vector<uint8_t>& data, int64_t n) {
  auto d = parquet::make_value_decoder(enc, data.data(), data.size(), n, nullptr);
  std::vector<std::string> out;
  for (int64_t i = 0; i < n; ++i) out.emplace_back(d->next());
  EXPECT_THROW(d->next(), parquet::FormatError);
  return out;
}

TEST(ParquetEncodings, DeltaLengthByteArraySpecExample) {
  // Lengths 1..5: block 128, 4 miniblocks, 5 values, first 1; min delta 1, widths 0.
  std::vector<uint8_t> data = {0x80, 0x01, 0x04, 0x05, 0x02, 0x02, 0, 0, 0, 0};
  for (char c : std::string("abbcccddddeeeee")) data.push_back(uint8_t(c));
  EXPECT_EQ(decode(parquet::DELTA_LENGTH_BYTE_ARRAY, data, 5),
            (std::vector<std::string>{"a", "bb", "ccc", "dddd", "eeeee"}));
}

TEST(ParquetEncodings, DeltaByteArraySpecExample) {
  // axis, axle, babble, babyhood: prefixes 0 2 0 3, suffixes axis le babble yhood.
  std::vector<uint8_t> data = {0x80, 0x01, 0x04, 0x04, 0x00, 0x03, 0x03, 0, 0, 0, 0x44, 0x01};
  data.resize(data.size() + 10, 0);
  std::vector<uint8_t> lens = {0x80, 0x01, 0x04, 0x04, 0x08, 0x03, 0x03, 0, 0, 0, 0x70, 0x00};
  lens.resize(lens.size() + 10, 0);
  data.insert(data.end(), lens.begin(), lens.end());
  for (char c : std::string("axislebabbleyhood")) data.push_back(uint8_t(c));
  EXPECT_EQ(decode(parquet::DELTA_BYTE_ARRAY, data, 4),
            (std::vector<std::string>{"axis", "axle", "babble", "babyhood"}));
}

// Random byte flips and truncations: every outcome is a clean read or an nmoe::Error.
TEST_F(ParquetTest, CorruptedFilesGiveErrorsNotCrashes) {
  pqw::Column text{"text", false, true, false, sample_strings(60, true, 8), {}};
  pqw::Column id{"id", true, false, false, {}, iota_ids(60)};
  std::vector<pqw::Options> variants(4);
  variants[0].encoding = pqw::kRleDict, variants[0].codec = pqw::kSnappy;
  variants[1].encoding = pqw::kDeltaByteArray, variants[1].codec = pqw::kZstd, variants[1].v2 = true;
  variants[2].encoding = pqw::kPlain, variants[2].codec = pqw::kGzip;
  variants[3].encoding = pqw::kDeltaLength, variants[3].v2 = true, variants[3].v2_is_compressed = false;
  std::mt19937_64 g(1234);
  int errors = 0, clean = 0;
  for (pqw::Options& o : variants) {
    o.rows_per_group = 25;
    o.rows_per_page = 7;
    std::string good = pqw::write_parquet({text, id}, o);
    for (int it = 0; it < 300; ++it) {
      std::string bad = good;
      if (it % 5 == 4) {
        bad.resize(g() % bad.size());
      } else {
        for (int k = 1 + int(g() % 3); k > 0; --k) bad[g() % bad.size()] ^= char(1 + g() % 255);
      }
      std::string path = write_raw("fuzz.parquet", bad);
      try {
        ParquetFile f = ParquetFile::open(path);
        for (const std::string& c : f.column_names())
          if (c == "text") f.read_strings(c, [](int64_t, std::optional<std::string_view> v) { if (v) (void)v->size(); });
        ++clean;
      } catch (const Error& e) {
        ++errors;
        EXPECT_NE(std::string(e.what()).find("fuzz.parquet"), std::string::npos) << e.what();
      }
    }
  }
  EXPECT_GT(errors, 100);
}

// Files written by pyarrow (tests/reference/make_parquet_fixtures.py). Each
// <file>[.<column>].expected.jsonl holds one JSON string or null per row of the
// column (default "text") of <file>.parquet.
TEST(ParquetFixtures, PyarrowFilesMatchTheirExpectations) {
  namespace fsys = std::filesystem;
  fsys::path dir = fsys::path(test::source_dir()) / "tests/reference/fixtures/parquet";
  std::vector<fsys::path> expected;
  if (fsys::is_directory(dir))
    for (const auto& e : fsys::directory_iterator(dir)) {
      std::string name = e.path().filename().string();
      if (name.size() > 15 && name.ends_with(".expected.jsonl")) expected.push_back(e.path());
    }
  if (expected.empty())
    GTEST_SKIP() << "no pyarrow fixtures in " << dir
                 << " (run tests/reference/make_parquet_fixtures.py " << dir.string() << " where pyarrow is installed)";
  std::sort(expected.begin(), expected.end());
  for (const fsys::path& p : expected) {
    std::string stem = p.filename().string();
    stem.resize(stem.size() - std::string(".expected.jsonl").size());
    size_t dot = stem.find('.');
    std::string column = dot == std::string::npos ? "text" : stem.substr(dot + 1);
    std::string pq = (dir / (stem.substr(0, dot) + ".parquet")).string();
    SCOPED_TRACE(pq + " column " + column);
    Strings want;
    std::ifstream in(p);
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      auto j = nlohmann::json::parse(line);
      want.push_back(j.is_null() ? std::nullopt : std::optional<std::string>(j.get<std::string>()));
    }
    ParquetFile f = ParquetFile::open(pq);
    EXPECT_EQ(f.num_rows(), static_cast<int64_t>(want.size()));
    Strings got = read_all(f, column);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << "row " << i;
    // Row groups one at a time, last first, as a parallel reader would.
    for (int g = f.num_row_groups() - 1; g >= 0; --g) {
      int64_t first = 0;
      for (int k = 0; k < g; ++k) first += f.row_group_num_rows(k);
      int64_t next = first;
      f.read_strings(column, g, [&](int64_t row, std::optional<std::string_view> v) {
        ASSERT_EQ(row, next++);
        ASSERT_EQ(v ? std::optional<std::string>(*v) : std::nullopt, want[row]);
      });
      EXPECT_EQ(next, first + f.row_group_num_rows(g));
    }
  }
  // The multi-column file: column selection and its errors.
  std::string multi = (dir / "multi_column.parquet").string();
  if (fsys::exists(multi)) {
    ParquetFile f = ParquetFile::open(multi);
    auto noop = [](int64_t, std::optional<std::string_view>) {};
    expect_parts(error_of([&] { f.read_strings("id", noop); }), {"column 'id' is INT64, expected a string column"});
    int lists = 0;  // pyarrow names the list leaf tags.list.element or tags.list.item
    for (const std::string& c : f.column_names())
      if (c.starts_with("tags.")) {
        ++lists;
        expect_parts(error_of([&] { f.read_strings(c, noop); }), {"column '" + c + "' is repeated"});
      }
    EXPECT_EQ(lists, 1);
    expect_parts(error_of([&] { f.read_strings("nope", noop); }), {"no column 'nope'", "text", "id", "meta.url"});
  }
}

}  // namespace
}  // namespace nmoe
