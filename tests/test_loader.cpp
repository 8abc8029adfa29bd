// Token loader: stream order across shards, rank slices independent of the
// world size, exact resume from a cursor, wrap-around, and bad data.
#include <gtest/gtest.h>

#include <numeric>

#include "core/fs.h"
#include "data/loader.h"
#include "test_util.h"

namespace nmoe {
namespace {

// Three shards holding 0..n-1 in order (the middle one empty-adjacent sizes).
std::string make_stream(const test::TempDir& d, std::vector<size_t> sizes, uint32_t vocab = 1000) {
  uint32_t next = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::vector<uint32_t> t(sizes[i]);
    for (auto& x : t) x = next++ % vocab;
    write_npy_tokens(d.path + "/data/part" + std::to_string(i) + "/s.npy", t.data(), t.size(), DType::U32, false);
  }
  return d.path + "/data";
}

TEST(Loader, SequencesFollowTheStreamAcrossShards) {
  test::TempDir d;
  auto path = make_stream(d, {10, 0, 7, 13});
  TokenLoader l(path, 4, 1000);  // sequences of 5 tokens
  EXPECT_EQ(l.total_tokens(), 30);
  std::vector<int32_t> out(2 * 5);
  l.next_batch(2, 0, 1, out.data());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(out[i], i);
  l.next_batch(2, 0, 1, out.data());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(out[i], 10 + i);  // crosses the empty and the 7-token shard
}

TEST(Loader, RankSlicesAreWorldSizeInvariant) {
  test::TempDir d;
  auto path = make_stream(d, {200, 150});
  const int64_t seq = 3, batch = 7;
  TokenLoader whole(path, seq, 1000);
  std::vector<int32_t> all(batch * (seq + 1));
  whole.next_batch(batch, 0, 1, all.data());
  for (int world : {2, 3, 4}) {
    std::vector<int32_t> joined;
    for (int r = 0; r < world; ++r) {
      TokenLoader l(path, seq, 1000);
      std::vector<int32_t> part(TokenLoader::slice_size(batch, r, world) * (seq + 1));
      l.next_batch(batch, r, world, part.data());
      joined.insert(joined.end(), part.begin(), part.end());
      EXPECT_EQ(l.cursor(), whole.cursor()) << "world " << world << " rank " << r;
    }
    EXPECT_EQ(joined, all) << "world " << world;
  }
}

TEST(Loader, ResumeFromCursorContinuesExactly) {
  test::TempDir d;
  auto path = make_stream(d, {37, 41, 5});
  TokenLoader a(path, 6, 1000);
  std::vector<int32_t> x(3 * 7), y(3 * 7);
  for (int i = 0; i < 2; ++i) a.next_batch(3, 0, 1, x.data());
  TokenLoader b(path, 6, 1000);
  b.set_cursor(a.cursor());
  for (int i = 0; i < 5; ++i) {
    a.next_batch(3, 0, 1, x.data());
    b.next_batch(3, 0, 1, y.data());
    EXPECT_EQ(x, y);
  }
}

TEST(Loader, WrapsAroundAndCountsPasses) {
  test::TempDir d;
  auto path = make_stream(d, {12});
  TokenLoader l(path, 4, 1000);
  int wraps = 0;
  l.on_wrap([&](const std::string& msg) {
    ++wraps;
    EXPECT_NE(msg.find("wrapped"), std::string::npos);
  });
  std::vector<int32_t> out(3 * 5);
  l.next_batch(3, 0, 1, out.data());  // 15 tokens from a 12-token stream
  EXPECT_EQ(wraps, 1);
  EXPECT_EQ(l.cursor().wraps, 1);
  EXPECT_EQ(out[12], 0);
  EXPECT_EQ(out[14], 2);
}

TEST(Loader, RejectsTokensOutsideTheVocabulary) {
  test::TempDir d;
  auto path = make_stream(d, {50});
  TokenLoader l(path, 4, 20);
  std::vector<int32_t> out(5 * 5);
  try {
    for (int i = 0; i < 5; ++i) l.next_batch(1, 0, 1, out.data());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("s.npy"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("vocabulary"), std::string::npos) << e.what();
  }
}

TEST(Loader, EmptyOrTooSmallDatasetIsAnError) {
  test::TempDir d;
  fs::make_dirs(d.path + "/empty");
  test::expect_parts(test::error_of([&] { TokenLoader(d.path + "/empty", 4, 100); }),
                     {"no .npy token shards under '" + d.path + "/empty'", "n data prep"});
  test::expect_parts(test::error_of([&] { TokenLoader(d.path + "/missing", 4, 100); }),
                     {"'" + d.path + "/missing'", "does not exist"});
  auto path = make_stream(d, {3});
  test::expect_parts(test::error_of([&] { TokenLoader(path, 4, 100); }),
                     {"'" + path + "'", "holds 3 tokens", "fewer than one sequence", "seq_len + 1 = 5"});
}

TEST(Loader, CursorThatDoesNotFitIsRefused) {
  test::TempDir d;
  auto path = make_stream(d, {20});
  TokenLoader l(path, 4, 1000);
  LoaderCursor c;
  c.file = 3;
  EXPECT_THROW(l.set_cursor(c), Error);
}

}  // namespace
}  // namespace nmoe
