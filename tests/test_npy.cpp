#include <gtest/gtest.h>

#include "test_util.h"
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/fs.h"
#include "data/npy.h"

namespace {

using nmoe::DType;
using nmoe::NpyTokenFile;

using NpyTest = nmoe::test::FileTest;
using nmoe::test::error_of;

void expect_error(const std::string& msg, std::initializer_list<std::string> parts) {
  nmoe::test::expect_parts(msg, parts);
}

// A .npy file with the given version and header text (no padding added).
std::string npy_bytes(int major, const std::string& header, const std::string& data) {
  std::string out = std::string("\x93NUMPY", 6) + char(major) + '\0';
  size_t n = header.size();
  out += char(n & 0xff);
  out += char((n >> 8) & 0xff);
  if (major >= 2) {
    out += char((n >> 16) & 0xff);
    out += char((n >> 24) & 0xff);
  }
  return out + header + data;
}

const std::string kU16Data123("\x01\x00\x02\x00\x03\x00", 6);
const std::string kDict123 = "{'descr': '<u2', 'fortran_order': False, 'shape': (3,), }";

void expect_tokens_123(const NpyTokenFile& f) {
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f.dtype(), DType::U16);
  std::vector<int32_t> out(3);
  f.read(0, 3, out.data());
  EXPECT_EQ(out, (std::vector<int32_t>{1, 2, 3}));
}

TEST_F(NpyTest, RoundTripU16) {
  std::vector<uint32_t> tokens = {0, 1, 65535, 42, 7};
  std::string p = file("a.npy");
  nmoe::write_npy_tokens(p, tokens.data(), tokens.size(), DType::U16);
  NpyTokenFile f = NpyTokenFile::open(p);
  EXPECT_EQ(f.path(), p);
  ASSERT_EQ(f.size(), tokens.size());
  EXPECT_EQ(f.dtype(), DType::U16);
  for (size_t i = 0; i < tokens.size(); ++i) EXPECT_EQ(f.at(i), tokens[i]);
  std::vector<int32_t> out(3);
  f.read(2, 3, out.data());
  EXPECT_EQ(out, (std::vector<int32_t>{65535, 42, 7}));
}

TEST_F(NpyTest, RoundTripU32Large) {
  std::vector<uint32_t> tokens(100'003);
  uint32_t x = 12345;
  for (auto& t : tokens) t = (x = x * 1664525u + 1013904223u) >> 1;  // < 2^31
  tokens[5] = 0x7fffffff;
  std::string p = file("sub/dir/b.npy");  // parent directories are created
  nmoe::write_npy_tokens(p, tokens.data(), tokens.size(), DType::U32, /*fsync=*/false);
  NpyTokenFile f = NpyTokenFile::open(p);
  ASSERT_EQ(f.size(), tokens.size());
  EXPECT_EQ(f.dtype(), DType::U32);
  std::vector<int32_t> out(tokens.size());
  f.read(0, tokens.size(), out.data());
  for (size_t i = 0; i < tokens.size(); ++i) ASSERT_EQ(uint32_t(out[i]), tokens[i]) << i;
  EXPECT_EQ(f.at(5), 0x7fffffffu);
}

TEST_F(NpyTest, U32AboveInt32MaxReadsWithAtButNotRead) {
  std::vector<uint32_t> tokens = {1, 0xffffffffu};
  std::string p = file("big.npy");
  nmoe::write_npy_tokens(p, tokens.data(), tokens.size(), DType::U32);
  NpyTokenFile f = NpyTokenFile::open(p);
  EXPECT_EQ(f.at(1), 0xffffffffu);
  int32_t out[2];
  expect_error(error_of([&] { f.read(0, 2, out); }), {p, "4294967295", "index 1", "int32"});
}

TEST_F(NpyTest, EmptyArray) {
  for (DType t : {DType::U16, DType::U32}) {
    std::string p = file(std::string("empty_") + nmoe::dtype_name(t) + ".npy");
    nmoe::write_npy_tokens(p, nullptr, 0, t);
    NpyTokenFile f = NpyTokenFile::open(p);
    EXPECT_EQ(f.size(), 0u);
    EXPECT_EQ(f.dtype(), t);
    f.read(0, 0, nullptr);
    expect_error(error_of([&] { f.at(0); }), {p, "out of range"});
  }
}

TEST_F(NpyTest, HeaderBytesMatchNumpy) {
  std::vector<uint32_t> tokens = {1, 2, 3};
  std::string p = file("np.npy");
  nmoe::write_npy_tokens(p, tokens.data(), tokens.size(), DType::U16);
  std::string bytes = nmoe::fs::read_file(p);
  ASSERT_EQ(bytes.size(), 128u + 6u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  EXPECT_EQ(uint8_t(bytes[8]), 118);
  EXPECT_EQ(uint8_t(bytes[9]), 0);
  std::string expected_header = kDict123 + std::string(128 - 10 - kDict123.size() - 1, ' ') + "\n";
  EXPECT_EQ(bytes.substr(10, 118), expected_header);
  EXPECT_EQ(bytes.substr(128), kU16Data123);
}

TEST_F(NpyTest, HeaderIsAlignedFor64ForManySizes) {
  for (size_t n : {0u, 9u, 10u, 99999u}) {
    std::vector<uint32_t> tokens(n, 5);
    std::string p = file("n" + std::to_string(n) + ".npy");
    nmoe::write_npy_tokens(p, tokens.data(), n, DType::U32, false);
    std::string bytes = nmoe::fs::read_file(p);
    size_t header_total = bytes.size() - 4 * n;
    EXPECT_EQ(header_total % 64, 0u);
    EXPECT_EQ(bytes[header_total - 1], '\n');
    EXPECT_EQ(NpyTokenFile::open(p).size(), n);
  }
}

TEST_F(NpyTest, HeaderVariantsAreAccepted) {
  const std::vector<std::pair<int, std::string>> variants = {
      {1, kDict123},
      {1, "{'shape': (3,), 'fortran_order': False, 'descr': '<u2'}"},
      {1, "{\"fortran_order\":False,\"shape\":( 3 , ),\"descr\":\"<u2\"}   \n"},
      {1, "{\n  'descr' : '<u2' ,\n  'fortran_order' : False ,\n  'shape' : (3,) ,\n}\n"},
      {2, kDict123 + "          \n"},
      {3, "{'descr': '<u2', 'shape': (3,), 'fortran_order': False}\n"},
  };
  for (size_t i = 0; i < variants.size(); ++i) {
    std::string p = write_raw("v" + std::to_string(i) + ".npy",
                              npy_bytes(variants[i].first, variants[i].second, kU16Data123));
    SCOPED_TRACE(variants[i].second);
    expect_tokens_123(NpyTokenFile::open(p));
  }
}

TEST_F(NpyTest, TruncatedAndTrailingData) {
  std::string p = write_raw("t.npy", npy_bytes(1, kDict123, kU16Data123.substr(0, 5)));
  expect_error(error_of([&] { NpyTokenFile::open(p); }), {p, "truncated: expected 6 bytes of data, found 5"});
  std::string q = write_raw("u.npy", npy_bytes(1, kDict123, kU16Data123 + "x"));
  expect_error(error_of([&] { NpyTokenFile::open(q); }), {q, "expected 6 bytes of data, found 7"});
  std::string r = write_raw("h.npy", npy_bytes(1, kDict123, "").substr(0, 40));
  expect_error(error_of([&] { NpyTokenFile::open(r); }), {r, "truncated header"});
}

TEST_F(NpyTest, WrongDescrIsNamed) {
  for (std::string descr : {"<i4", ">u2", "<f4", "|u1", "=u2", "<u8"}) {
    std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (3,), }";
    std::string p = write_raw("d.npy", npy_bytes(1, header, kU16Data123));
    expect_error(error_of([&] { NpyTokenFile::open(p); }), {p, "'" + descr + "'"});
  }
}

TEST_F(NpyTest, FortranOrderIsRejected) {
  std::string p = write_raw("f.npy", npy_bytes(1, "{'descr': '<u2', 'fortran_order': True, 'shape': (3,), }",
                                               kU16Data123));
  expect_error(error_of([&] { NpyTokenFile::open(p); }), {p, "fortran_order"});
}

TEST_F(NpyTest, NonOneDimensionalShapesAreRejected) {
  std::string p = write_raw("2d.npy", npy_bytes(1, "{'descr': '<u2', 'fortran_order': False, 'shape': (1, 3), }",
                                                kU16Data123));
  expect_error(error_of([&] { NpyTokenFile::open(p); }), {p, "1-D", "(1, 3)"});
  std::string q = write_raw("0d.npy", npy_bytes(1, "{'descr': '<u2', 'fortran_order': False, 'shape': (), }",
                                                kU16Data123.substr(0, 2)));
  expect_error(error_of([&] { NpyTokenFile::open(q); }), {q, "1-D", "()"});
}

TEST_F(NpyTest, BadMagicAndVersion) {
  std::string p = write_raw("g.npy", "PK\x03\x04 this is a zip file, not npy");
  expect_error(error_of([&] { NpyTokenFile::open(p); }), {p, "bad magic"});
  std::string e = write_raw("e.npy", "");
  expect_error(error_of([&] { NpyTokenFile::open(e); }), {e, "bad magic"});
  std::string v = write_raw("v.npy", npy_bytes(1, kDict123, kU16Data123));
  std::string bytes = nmoe::fs::read_file(v);
  bytes[6] = 4;
  write_raw("v.npy", bytes);
  expect_error(error_of([&] { NpyTokenFile::open(v); }), {v, "unsupported .npy version 4.0"});
  std::string m = write_raw("missing.npy", "");
  std::filesystem::remove(m);
  expect_error(error_of([&] { NpyTokenFile::open(m); }), {m, "cannot open"});
}

TEST_F(NpyTest, MalformedHeaderDicts) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{'descr': '<u2', 'shape': (3,), }", "lacks 'fortran_order'"},
      {"{'descr': '<u2', 'fortran_order': False, }", "lacks 'shape'"},
      {"{'descr': '<u2', 'fortran_order': False, 'shape': (3,), 'x': 1}", "unexpected key 'x'"},
      {"{'descr': '<u2', 'descr': '<u2', 'fortran_order': False, 'shape': (3,)}", "duplicate key 'descr'"},
      {"{'descr': '<u2', 'fortran_order': False, 'shape': (3)}", "must be a tuple"},
      {"{'descr': '<u2', 'fortran_order': False, 'shape': (-3,)}", "non-negative integer"},
      {"{'descr': '<u2', 'fortran_order': False, 'shape': (99999999999999999999999,)}", "too large"},
      {"{'descr': '<u2, 'fortran_order': False, 'shape': (3,)}", "bad header"},
      {"{'descr': '<u2', 'fortran_order': false, 'shape': (3,)}", "True or False"},
      {"{'descr': '<u2' 'fortran_order': False, 'shape': (3,)}", "expected ',' or '}'"},
      {"{'descr': '<u2', 'fortran_order': False, 'shape': (3,)} junk", "unexpected text"},
      {"['descr', '<u2']", "expected '{'"},
      {"{'descr': '<u2', 'fortran_order': False, 'shape': (3,)", "bad header"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    std::string p = write_raw("m" + std::to_string(i) + ".npy", npy_bytes(1, cases[i].first, kU16Data123));
    expect_error(error_of([&] { NpyTokenFile::open(p); }), {p, cases[i].second});
  }
}

TEST_F(NpyTest, HugeShapeDoesNotOverflow) {
  std::string p = write_raw("huge.npy", npy_bytes(1, "{'descr': '<u4', 'fortran_order': False, 'shape': (18446744073709551615,)}",
                                                  kU16Data123));
  expect_error(error_of([&] { NpyTokenFile::open(p); }), {p, "too large"});
  std::string q = write_raw("huge2.npy", npy_bytes(1, "{'descr': '<u2', 'fortran_order': False, 'shape': (9223372036854775808,)}",
                                                   kU16Data123));
  expect_error(error_of([&] { NpyTokenFile::open(q); }), {q});
}

TEST_F(NpyTest, WriteRejectsTokensThatDoNotFit) {
  std::vector<uint32_t> tokens = {1, 65536};
  std::string p = file("w.npy");
  expect_error(error_of([&] { nmoe::write_npy_tokens(p, tokens.data(), 2, DType::U16); }),
               {p, "65536", "index 1", "uint16"});
  EXPECT_FALSE(std::filesystem::exists(p));
  expect_error(error_of([&] { nmoe::write_npy_tokens(p, tokens.data(), 2, DType::F32); }), {p, "F32"});
  EXPECT_FALSE(std::filesystem::exists(p));
}

TEST_F(NpyTest, OutOfRangeAccessThrows) {
  std::vector<uint32_t> tokens = {1, 2, 3};
  std::string p = file("r.npy");
  nmoe::write_npy_tokens(p, tokens.data(), 3, DType::U32);
  NpyTokenFile f = NpyTokenFile::open(p);
  int32_t out[4];
  expect_error(error_of([&] { f.at(3); }), {p, "index 3"});
  expect_error(error_of([&] { f.read(1, 3, out); }), {p, "out of range"});
  expect_error(error_of([&] { f.read(4, 0, out); }), {p, "out of range"});
  expect_error(error_of([&] { f.read(1, SIZE_MAX, out); }), {p, "out of range"});
  f.read(3, 0, out);
}

TEST_F(NpyTest, MoveTransfersTheMapping) {
  std::vector<uint32_t> tokens = {1, 2, 3};
  std::string p = file("mv.npy");
  nmoe::write_npy_tokens(p, tokens.data(), 3, DType::U16);
  NpyTokenFile a = NpyTokenFile::open(p);
  NpyTokenFile b = std::move(a);
  expect_tokens_123(b);
  EXPECT_EQ(a.size(), 0u);  // NOLINT(bugprone-use-after-move): moved-from is empty
  NpyTokenFile c = NpyTokenFile::open(p);
  c = std::move(b);
  expect_tokens_123(c);
}

}  // namespace
