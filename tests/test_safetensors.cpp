#include <gtest/gtest.h>

#include "test_util.h"
#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include "checkpoint/safetensors.h"
#include "core/error.h"
#include "core/fs.h"

namespace {

using nmoe::DType;
namespace st = nmoe::safetensors;

using SafetensorsTest = nmoe::test::FileTest;
using nmoe::test::error_of;

void st_expect_error(const std::string& msg, std::initializer_list<std::string> parts) {
  nmoe::test::expect_parts(msg, parts);
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = char((n >> (8 * i)) & 0xff);
  return s;
}

// A file with the given header text and data section.
std::string st_bytes(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

template <typename T>
std::vector<T> iota_vec(size_t n, T start) {
  std::vector<T> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<T>(start + static_cast<T>(i));
  return v;
}

TEST_F(SafetensorsTest, RoundTripSeveralDtypesAndShapes) {
  auto f32 = iota_vec<float>(6, 0.5f);
  auto f64 = iota_vec<double>(4, -2.0);
  auto bf16 = iota_vec<uint16_t>(6, 0x3f80);
  auto i32 = iota_vec<int32_t>(5, -2);
  auto i64 = iota_vec<int64_t>(4, int64_t(1) << 40);
  auto u8 = iota_vec<uint8_t>(7, 250);
  auto u16 = iota_vec<uint16_t>(3, 65533);
  auto u32 = iota_vec<uint32_t>(1, 0xfffffff0u);
  float scalar = 3.25f;

  st::Writer w;
  w.add("layers.0.w", DType::F32, {2, 3}, f32.data());
  w.add("f64", DType::F64, {4}, f64.data());
  w.add("bf16", DType::BF16, {3, 1, 2}, bf16.data());
  w.add("i32", DType::I32, {5}, i32.data());
  w.add("i64", DType::I64, {2, 2}, i64.data());
  w.add("u8", DType::U8, {7}, u8.data());
  w.add("u16", DType::U16, {3}, u16.data());
  w.add("u32", DType::U32, {1, 1, 1, 1}, u32.data());
  w.add("scalar", DType::F32, {}, &scalar);
  w.add("empty", DType::F32, {0, 4}, nullptr);
  std::string p = file("rt.safetensors");
  w.write(p);

  st::Reader r = st::Reader::open(p);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"bf16", "empty", "f64", "i32", "i64", "layers.0.w", "scalar",
                                                 "u16", "u32", "u8"}));
  EXPECT_TRUE(r.has("u8"));
  EXPECT_FALSE(r.has("nope"));
  EXPECT_TRUE(r.metadata().empty());

  std::vector<float> f32_out(6);
  r.read_into("layers.0.w", DType::F32, {2, 3}, f32_out.data());
  EXPECT_EQ(f32_out, f32);
  std::vector<uint16_t> bf16_out(6);
  r.read_into("bf16", DType::BF16, {3, 1, 2}, bf16_out.data());
  EXPECT_EQ(bf16_out, bf16);
  std::vector<int64_t> i64_out(4);
  r.read_into("i64", DType::I64, {2, 2}, i64_out.data());
  EXPECT_EQ(i64_out, i64);
  float scalar_out = 0;
  r.read_into("scalar", DType::F32, {}, &scalar_out);
  EXPECT_EQ(scalar_out, 3.25f);
  r.read_into("empty", DType::F32, {0, 4}, nullptr);

  EXPECT_EQ(std::memcmp(r.data("f64"), f64.data(), 32), 0);
  EXPECT_EQ(std::memcmp(r.data("i32"), i32.data(), 20), 0);
  EXPECT_EQ(std::memcmp(r.data("u8"), u8.data(), 7), 0);
  EXPECT_EQ(std::memcmp(r.data("u16"), u16.data(), 6), 0);
  EXPECT_EQ(std::memcmp(r.data("u32"), u32.data(), 4), 0);

  const st::TensorInfo& info = r.info("bf16");
  EXPECT_EQ(info.name, "bf16");
  EXPECT_EQ(info.dtype, DType::BF16);
  EXPECT_EQ(info.shape, (std::vector<int64_t>{3, 1, 2}));
  EXPECT_EQ(info.offset, 0u);  // first in name order
  EXPECT_EQ(info.nbytes, 12u);
  EXPECT_EQ(r.info("scalar").shape, std::vector<int64_t>{});
  EXPECT_EQ(r.info("scalar").nbytes, 4u);
  EXPECT_EQ(r.info("empty").nbytes, 0u);
}

TEST_F(SafetensorsTest, MetadataRoundTrip) {
  float x = 1.0f;
  st::Writer w;
  w.add("x", DType::F32, {1}, &x);
  w.set_metadata("format", "pt");
  w.set_metadata("step", "1200");
  w.set_metadata("step", "1300");  // last value wins
  std::string p = file("meta.safetensors");
  w.write(p, /*fsync=*/false);
  st::Reader r = st::Reader::open(p);
  EXPECT_EQ(r.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"step", "1300"}}));
}

TEST_F(SafetensorsTest, ExactBytesAndDeterminism) {
  float a[2] = {1.0f, 2.0f};
  int32_t b = 7;
  st::Writer w1, w2;
  w1.add("b", DType::I32, {}, &b);
  w1.add("a", DType::F32, {2}, a);
  w2.add("a", DType::F32, {2}, a);
  w2.add("b", DType::I32, {}, &b);
  std::string p1 = file("one.safetensors"), p2 = file("two.safetensors");
  w1.write(p1);
  w2.write(p2);
  std::string bytes = nmoe::fs::read_file(p1);
  EXPECT_EQ(bytes, nmoe::fs::read_file(p2));

  std::string header =
      R"({"a":{"data_offsets":[0,8],"dtype":"F32","shape":[2]},"b":{"data_offsets":[8,12],"dtype":"I32","shape":[]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string data(12, '\0');
  std::memcpy(data.data(), a, 8);
  std::memcpy(data.data() + 8, &b, 4);
  EXPECT_EQ(bytes, st_bytes(header, data));
  EXPECT_EQ(header.size() % 8, 0u);

  // No temporary files are left behind, and rewriting replaces the file.
  w1.write(p1);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(tmp_.path), std::filesystem::directory_iterator()), 2);
}

TEST_F(SafetensorsTest, WriterRejectsBadInput) {
  float x = 0;
  st::Writer w;
  w.add("x", DType::F32, {1}, &x);
  st_expect_error(error_of([&] { w.add("x", DType::F32, {1}, &x); }), {"duplicate tensor 'x'"});
  st_expect_error(error_of([&] { w.add("__metadata__", DType::F32, {1}, &x); }), {"reserved"});
  st_expect_error(error_of([&] { w.add("neg", DType::F32, {2, -1}, &x); }), {"'neg'", "negative"});
  st_expect_error(error_of([&] { w.add("null", DType::F32, {2}, nullptr); }), {"'null'", "null data"});
  st_expect_error(error_of([&] { w.add("", DType::F32, {1}, &x); }), {"empty"});
  std::string blocker = write_raw("blocker", "a file, not a directory");
  st_expect_error(error_of([&] { w.write(blocker + "/sub/x.safetensors"); }), {blocker});
}

TEST_F(SafetensorsTest, ReadIntoMismatchNamesTensor) {
  float v[6] = {};
  st::Writer w;
  w.add("emb", DType::F32, {2, 3}, v);
  std::string p = file("m.safetensors");
  w.write(p);
  st::Reader r = st::Reader::open(p);
  std::vector<uint16_t> out(6);
  st_expect_error(error_of([&] { r.read_into("emb", DType::BF16, {2, 3}, out.data()); }),
                  {p, "'emb'", "expected BF16 [2, 3], found F32 [2, 3]"});
  st_expect_error(error_of([&] { r.read_into("emb", DType::F32, {3, 2}, out.data()); }),
                  {p, "'emb'", "expected F32 [3, 2], found F32 [2, 3]"});
  st_expect_error(error_of([&] { r.read_into("emb", DType::F32, {6}, out.data()); }), {"'emb'", "[6]"});
  st_expect_error(error_of([&] { r.info("missing.weight"); }), {p, "'missing.weight'"});
  st_expect_error(error_of([&] { r.data("missing.weight"); }), {p, "'missing.weight'"});
}

TEST_F(SafetensorsTest, TruncatedFiles) {
  float v[4] = {1, 2, 3, 4};
  st::Writer w;
  w.add("v", DType::F32, {4}, v);
  std::string good = file("good.safetensors");
  w.write(good);
  std::string bytes = nmoe::fs::read_file(good);
  for (size_t keep : {size_t(0), size_t(5), size_t(8), size_t(20), bytes.size() - 1}) {
    std::string p = write_raw("cut" + std::to_string(keep), bytes.substr(0, keep));
    std::string msg = error_of([&] { st::Reader::open(p); });
    st_expect_error(msg, {p});
    EXPECT_NE(msg, "<no error>") << keep;
  }
  std::string p = write_raw("cut_data", bytes.substr(0, bytes.size() - 1));
  st_expect_error(error_of([&] { st::Reader::open(p); }), {"'v'", "outside the data section"});
  std::string q = write_raw("cut_hdr", bytes.substr(0, 20));
  st_expect_error(error_of([&] { st::Reader::open(q); }), {"truncated"});
}

TEST_F(SafetensorsTest, CorruptHeadersAreRejected) {
  const std::string f32x2(8, '\0');
  struct Case {
    std::string header, data, expected;
  };
  const std::vector<Case> cases = {
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", f32x2, "invalid JSON"},
      {R"(not json at all)", f32x2, "invalid JSON"},
      {R"([1,2,3])", "", "not a JSON object"},
      {R"({"a":[1]})", f32x2, "'a': entry is not a JSON object"},
      {R"({"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", f32x2.substr(4), "unsupported dtype 'F16'"},
      {R"({"a":{"dtype":7,"shape":[2],"data_offsets":[0,8]}})", f32x2, "'dtype' is not a string"},
      {R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", f32x2, "needs 12"},
      {R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", f32x2, "not a non-negative integer"},
      {R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", f32x2, "not a non-negative integer"},
      {R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", f32x2, "'shape' is not an array"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", f32x2, "outside the data section"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", f32x2, "begin > end"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", f32x2, "data_offsets"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", f32x2, "data_offsets"},
      {R"({"a":{"dtype":"F32","shape":[2]}})", f32x2, "missing 'data_offsets'"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}})", f32x2, "unexpected key 'extra'"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       std::string(12, '\0'), "overlaps tensor 'a'"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
       std::string(12, '\0'), "bytes [4, 8) before tensor 'b' belong to no tensor"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", f32x2 + "xx", "cover only 8"},
      {R"({"a":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})", f32x2, "too large"},
      {R"({"__metadata__":{"k":1}})", "", "metadata value for key 'k' is not a string"},
      {R"({"__metadata__":["k"]})", "", "'__metadata__' is not a JSON object"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    std::string p = write_raw("c" + std::to_string(i), st_bytes(cases[i].header, cases[i].data));
    st_expect_error(error_of([&] { st::Reader::open(p); }), {p, cases[i].expected});
  }
}

TEST_F(SafetensorsTest, BadHeaderSizes) {
  std::string p = write_raw("small", "1234567");
  st_expect_error(error_of([&] { st::Reader::open(p); }), {p, "too small"});
  std::string q = write_raw("huge", le64(uint64_t(1) << 40) + "{}");
  st_expect_error(error_of([&] { st::Reader::open(q); }), {q, "exceeds the limit"});
  std::string r = write_raw("over", le64(100) + "{}");
  st_expect_error(error_of([&] { st::Reader::open(r); }), {r, "header size 100 exceeds"});
  std::string s = write_raw("wrap", le64(~uint64_t(0)) + "{}");
  st_expect_error(error_of([&] { st::Reader::open(s); }), {s, "exceeds"});
}

TEST_F(SafetensorsTest, AcceptsZeroSizeTensorsAnywhereOnABoundaryAndEmptyFiles) {
  std::string header =
      R"({"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
      R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},"__metadata__":{"k":"v"}}   )";
  std::string p = write_raw("z", st_bytes(header, "abcdef"));
  st::Reader r = st::Reader::open(p);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"a", "b", "z"}));
  EXPECT_EQ(std::string(static_cast<const char*>(r.data("b")), 2), "ef");
  EXPECT_EQ(r.metadata().at("k"), "v");

  st::Writer empty;
  std::string q = file("empty.safetensors");
  empty.write(q);
  EXPECT_TRUE(st::Reader::open(q).names().empty());
}

TEST_F(SafetensorsTest, ReaderIsMovable) {
  int32_t v[2] = {5, 6};
  st::Writer w;
  w.add("v", DType::I32, {2}, v);
  std::string p = file("mv.safetensors");
  w.write(p);
  st::Reader a = st::Reader::open(p);
  st::Reader b = std::move(a);
  st::Reader c = st::Reader::open(p);
  c = std::move(b);
  int32_t out[2] = {};
  c.read_into("v", DType::I32, {2}, out);
  EXPECT_EQ(out[1], 6);
  EXPECT_EQ(c.path(), p);
}

}  // namespace
