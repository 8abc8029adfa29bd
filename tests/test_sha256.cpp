#include "core/sha256.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "core/error.h"

namespace {

using nmoe::Sha256;
using nmoe::sha256_hex;

constexpr const char* k448BitMessage = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
constexpr const char* k896BitMessage =
    "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrst"
    "nopqrstu";

std::filesystem::path temp_path(const std::string& name) {
  return std::filesystem::temp_directory_path() /
         ("nmoe_sha256_" + std::to_string(::getpid()) + "_" + name);
}

TEST(Sha256, EmptyString) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256, Abc) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, FourHundredFortyEightBitMessage) {
  EXPECT_EQ(sha256_hex(k448BitMessage),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256, EightHundredNinetySixBitMessage) {
  EXPECT_EQ(sha256_hex(k896BitMessage),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

TEST(Sha256, OneMillionA) {
  const std::string million(1000000, 'a');
  EXPECT_EQ(sha256_hex(million), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalUpdatesMatchOneShot) {
  const std::string text = std::string(k896BitMessage) + k448BitMessage + std::string(300, 'z');
  for (size_t chunk : {1u, 3u, 55u, 56u, 63u, 64u, 65u, 127u}) {
    Sha256 h;
    for (size_t at = 0; at < text.size(); at += chunk) {
      h.update(text.data() + at, std::min(chunk, text.size() - at));
    }
    EXPECT_EQ(h.hex_digest(), sha256_hex(text)) << "chunk size " << chunk;
  }
}

TEST(Sha256, DigestDoesNotResetState) {
  Sha256 h;
  h.update("ab", 2);
  EXPECT_EQ(h.hex_digest(), sha256_hex("ab"));
  h.update("c", 1);
  EXPECT_EQ(h.hex_digest(), sha256_hex("abc"));
  EXPECT_EQ(h.digest(), h.digest());
}

TEST(Sha256, PaddingBoundaries) {
  // Lengths around the 56-byte boundary where the length field spills into a second block.
  EXPECT_EQ(sha256_hex(std::string(55, 'a')),
            "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  EXPECT_EQ(sha256_hex(std::string(56, 'a')),
            "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
  EXPECT_EQ(sha256_hex(std::string(64, 'a')),
            "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}

TEST(Sha256, FileMatchesInMemoryHashAcrossBlocks) {
  std::string content;
  content.reserve((5u << 20) / 2);
  for (size_t i = 0; i < (5u << 20) / 2; ++i) content.push_back(char(i * 131 + (i >> 9)));
  const auto path = temp_path("big.bin");
  {
    std::ofstream out(path, std::ios::binary);
    out.write(content.data(), std::streamsize(content.size()));
  }
  EXPECT_EQ(nmoe::sha256_file_hex(path.string()), sha256_hex(content));
  std::filesystem::remove(path);
}

TEST(Sha256, EmptyFile) {
  const auto path = temp_path("empty.bin");
  { std::ofstream out(path, std::ios::binary); }
  EXPECT_EQ(nmoe::sha256_file_hex(path.string()), sha256_hex(""));
  std::filesystem::remove(path);
}

TEST(Sha256, MissingFileThrowsWithPath) {
  const auto path = temp_path("does_not_exist.bin");
  try {
    nmoe::sha256_file_hex(path.string());
    FAIL() << "expected nmoe::Error";
  } catch (const nmoe::Error& e) {
    EXPECT_THAT(e.what(), testing::HasSubstr(path.string()));
  }
}

TEST(Sha256, DirectoryThrows) {
  EXPECT_THROW(nmoe::sha256_file_hex(std::filesystem::temp_directory_path().string()), nmoe::Error);
}

}  // namespace
