// HuggingFace Hub client against the fake hub of fake_hub_server.h (never the
// real network): listing with pagination, cached downloads, resume by Range and
// If-Range, retries, error messages, tokens, redirects and the environment.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <random>
#include <thread>

#include "core/fs.h"
#include "core/sha256.h"
#include "data/hf_hub.h"
#include "data/http.h"
#include "fake_hub_server.h"
#include "test_util.h"

namespace nmoe {
namespace {

const char* kRepo = "acme/tiny-corpus";
const char* kFile = "data/train-00000.parquet";
const char* kResolve = "/datasets/acme/tiny-corpus/resolve/main/data/train-00000.parquet";

std::string random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(g() & 0xff);
  return s;
}

// Sets an environment variable for the lifetime of the object, then restores it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    value ? ::setenv(name, value, 1) : ::unsetenv(name);
  }
  ~ScopedEnv() { old_ ? ::setenv(name_, old_->c_str(), 1) : ::unsetenv(name_); }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

class HfHub : public ::testing::Test {
 protected:
  HfHub() {
    hub.add_file(kRepo, "main", kFile, content, /*lfs=*/true);
    hub.add_file(kRepo, "main", "README.md", "# tiny corpus\n");
    hub.add_file(kRepo, "main", "data/val-00000.parquet", random_bytes(1000, 2), true);
    hub.add_file(kRepo, "main", "data/sub/extra.json", "{}");
  }
  HubOptions options(const std::string& token = "") const {
    HubOptions o;
    o.endpoint = hub.endpoint();
    o.token = token;
    o.cache_dir = tmp / "cache";
    o.max_retries = 3;
    o.retry_base_s = 0.01;
    o.timeout_s = 5;
    return o;
  }
  HubClient client(const std::string& token = "") const { return HubClient(options(token)); }

  ScopedEnv no_proxy_{"no_proxy", "127.0.0.1,localhost"};  // a proxy in the environment must not catch these
  ScopedEnv no_proxy_upper_{"NO_PROXY", "127.0.0.1,localhost"};
  test::TempDir tmp;
  test::FakeHub hub;
  const std::string content = random_bytes(300000, 1);
};

TEST_F(HfHub, ListFilesSkipsDirectoriesAndSortsByPath) {
  auto files = client().list_files(kRepo);
  ASSERT_EQ(files.size(), 4u);
  EXPECT_EQ(files[0].path, "README.md");
  EXPECT_EQ(files[1].path, "data/sub/extra.json");
  EXPECT_EQ(files[2].path, kFile);
  EXPECT_EQ(files[3].path, "data/val-00000.parquet");
  EXPECT_EQ(files[2].size, 300000);
  EXPECT_EQ(files[0].size, 14);
  EXPECT_EQ(files[2].oid, sha256_hex(content));  // LFS files carry the content's sha256
  EXPECT_EQ(files[0].oid.size(), 40u);           // others their git blob id
  EXPECT_EQ(hub.count("/api/datasets/acme/tiny-corpus/tree/main"), 1);
  EXPECT_NE(hub.requests()[0].target.find("recursive=true"), std::string::npos);
}

TEST_F(HfHub, ListFilesFollowsPagination) {
  hub.set_page_size(2);  // 6 entries (2 directories) -> 3 pages
  auto files = client().list_files(kRepo);
  ASSERT_EQ(files.size(), 4u);
  EXPECT_EQ(files[3].path, "data/val-00000.parquet");
  EXPECT_EQ(hub.count("/api/datasets/acme/tiny-corpus/tree/main"), 3);
}

TEST_F(HfHub, ListingAnUnknownRepoNamesIt) {
  std::string msg = test::error_of([&] { client().list_files("acme/nope", "v2"); });
  test::expect_parts(msg, {"acme/nope", "v2", "not found", "HTTP 404", hub.endpoint()});
}

TEST_F(HfHub, DownloadPutsTheFileInTheCache) {
  auto c = client();
  int64_t last_done = -1, last_total = -2;
  std::string local = c.download(kRepo, kFile, "main", [&](int64_t done, int64_t total) {
    EXPECT_GE(done, last_done);
    last_done = done;
    last_total = total;
  });
  EXPECT_EQ(local, tmp.path + "/cache/datasets/acme--tiny-corpus/main/data/train-00000.parquet");
  EXPECT_EQ(fs::read_file(local), content);
  EXPECT_EQ(last_done, 300000);
  EXPECT_EQ(last_total, 300000);
  EXPECT_FALSE(fs::exists(local + ".incomplete"));
  EXPECT_EQ(c.local_path(kRepo, kFile), local);
}

TEST_F(HfHub, SecondDownloadComesFromTheCache) {
  auto c = client();
  c.list_files(kRepo);  // sizes known: the cached file is checked against them
  std::string a = c.download(kRepo, kFile);
  EXPECT_EQ(hub.count(kResolve), 1);
  std::string b = c.download(kRepo, kFile);
  EXPECT_EQ(a, b);
  EXPECT_EQ(hub.count(kResolve), 1);
  EXPECT_EQ(client().download(kRepo, kFile), a);  // a new client too
  EXPECT_EQ(hub.count(kResolve), 1);
}

TEST_F(HfHub, CachedFileOfTheWrongSizeIsFetchedAgain) {
  auto c = client();
  fs::write_file_atomic(c.local_path(kRepo, kFile), "stale", false);
  c.list_files(kRepo);
  EXPECT_EQ(fs::read_file(c.download(kRepo, kFile)), content);
  EXPECT_EQ(hub.count(kResolve), 1);
}

TEST_F(HfHub, DroppedDownloadResumesWithRange) {
  hub.drop_after(100000);
  std::string local = client().download(kRepo, kFile);
  EXPECT_EQ(fs::read_file(local), content);
  auto reqs = hub.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].header("range"), "");
  EXPECT_EQ(reqs[1].header("range"), "bytes=100000-");
  EXPECT_NE(reqs[1].header("if-range"), "");
}

TEST_F(HfHub, PartialFileFromAnEarlierRunIsResumed) {
  auto opt = options();
  opt.max_retries = 0;
  hub.drop_after(123456);
  EXPECT_NE(test::error_of([&] { HubClient(opt).download(kRepo, kFile); }), "<no error>");
  std::string local = HubClient(opt).local_path(kRepo, kFile);
  EXPECT_EQ(fs::read_file(local + ".incomplete"), content.substr(0, 123456));
  EXPECT_FALSE(fs::exists(local));
  hub.clear_log();
  EXPECT_EQ(fs::read_file(client().download(kRepo, kFile)), content);
  ASSERT_EQ(hub.requests().size(), 1u);
  EXPECT_EQ(hub.requests()[0].header("range"), "bytes=123456-");
}

TEST_F(HfHub, ServerIgnoringRangeRestartsFromZero) {
  auto c = client();
  fs::write_file_atomic(c.local_path(kRepo, kFile) + ".incomplete", "garbage that must go", false);
  hub.ignore_range(true);
  EXPECT_EQ(fs::read_file(c.download(kRepo, kFile)), content);
  EXPECT_EQ(hub.requests()[0].header("range"), "bytes=20-");
}

TEST_F(HfHub, FileChangedSinceThePartialDownloadStartsOver) {
  auto opt = options();
  opt.max_retries = 0;
  hub.drop_after(5000);
  EXPECT_NE(test::error_of([&] { HubClient(opt).download(kRepo, kFile); }), "<no error>");
  std::string changed = random_bytes(300000, 99);
  hub.add_file(kRepo, "main", kFile, changed, true);  // same size, new content, new ETag
  EXPECT_EQ(fs::read_file(client().download(kRepo, kFile)), changed);
}

TEST_F(HfHub, ServerErrorsAreRetried) {
  hub.fail_next(3, 500);
  EXPECT_EQ(fs::read_file(client().download(kRepo, kFile)), content);
  EXPECT_EQ(hub.count(kResolve), 4);
  hub.fail_next(2, 429);
  EXPECT_EQ(client().list_files(kRepo).size(), 4u);
}

TEST_F(HfHub, RetryAfterIsHonoured) {
  hub.fail_next(1, 503, /*retry_after_s=*/1);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(client().list_files(kRepo).size(), 4u);
  EXPECT_GE(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 0.9);
}

TEST_F(HfHub, RetriesRunOut) {
  hub.fail_next(100, 503);
  std::string msg = test::error_of([&] { client().download(kRepo, kFile); });
  test::expect_parts(msg, {"HTTP 503", "4 attempt", std::string(hub.endpoint()) + kResolve});
  EXPECT_EQ(hub.count(kResolve), 4);  // 1 + max_retries
}

TEST_F(HfHub, MissingFileIsAClearErrorWithoutRetries) {
  std::string msg = test::error_of([&] { client().download(kRepo, "data/nope.parquet", "main"); });
  test::expect_parts(msg, {"data/nope.parquet", kRepo, "'main'", "not found", "HTTP 404"});
  EXPECT_EQ(hub.requests().size(), 1u);
  EXPECT_FALSE(fs::exists(client().local_path(kRepo, "data/nope.parquet")));
}

TEST_F(HfHub, UnauthorizedSaysToSetHfToken) {
  hub.require_token("hf_secret");
  std::string msg = test::error_of([&] { client().download(kRepo, kFile); });
  test::expect_parts(msg, {"HF_TOKEN", "gated", "HTTP 401", kRepo});
  EXPECT_EQ(hub.requests().size(), 1u);
  msg = test::error_of([&] { client("hf_wrong").list_files(kRepo); });
  test::expect_parts(msg, {"HF_TOKEN", "HTTP 401"});
  EXPECT_EQ(msg.find("hf_wrong"), std::string::npos);  // the token never appears in messages
}

TEST_F(HfHub, TokenIsSentAsBearer) {
  hub.require_token("hf_secret");
  auto c = client("hf_secret");
  EXPECT_EQ(c.list_files(kRepo).size(), 4u);
  EXPECT_EQ(fs::read_file(c.download(kRepo, kFile)), content);
  for (const auto& r : hub.requests()) EXPECT_EQ(r.header("authorization"), "Bearer hf_secret") << r.target;
}

TEST_F(HfHub, RedirectIsFollowed) {
  hub.redirect_to("127.0.0.1");
  EXPECT_EQ(fs::read_file(client().download(kRepo, kFile)), content);
  EXPECT_EQ(hub.count(kResolve), 1);
  EXPECT_EQ(hub.count(std::string("/cdn") + kResolve), 1);
}

TEST_F(HfHub, TokenDoesNotFollowARedirectToAnotherHost) {
  hub.require_token("hf_secret");
  hub.redirect_to("localhost");  // same server, but another host name
  hub.drop_after(1000);          // and the resume goes through the redirect again
  EXPECT_EQ(fs::read_file(client("hf_secret").download(kRepo, kFile)), content);
  auto reqs = hub.requests();
  ASSERT_EQ(reqs.size(), 4u);
  EXPECT_EQ(reqs[0].header("authorization"), "Bearer hf_secret");
  EXPECT_EQ(reqs[1].path, std::string("/cdn") + kResolve);
  EXPECT_EQ(reqs[1].header("authorization"), "");
  EXPECT_EQ(reqs[3].header("authorization"), "");
  EXPECT_EQ(reqs[3].header("range"), "bytes=1000-");
}

TEST_F(HfHub, SizeDifferentFromTheListingIsAnError) {
  auto c = client();
  c.list_files(kRepo);
  hub.add_file(kRepo, "main", kFile, content + "more", true);
  std::string msg = test::error_of([&] { c.download(kRepo, kFile); });
  test::expect_parts(msg, {"300004", "300000"});
  EXPECT_FALSE(fs::exists(c.local_path(kRepo, kFile)));
  EXPECT_FALSE(fs::exists(c.local_path(kRepo, kFile) + ".incomplete"));
}

TEST_F(HfHub, StalledTransferTimesOut) {
  auto opt = options();
  opt.timeout_s = 1;
  opt.max_retries = 0;
  hub.stall(true);
  auto t0 = std::chrono::steady_clock::now();
  std::string msg = test::error_of([&] { HubClient(opt).download(kRepo, kFile); });
  EXPECT_NE(msg, "<no error>");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
}

TEST_F(HfHub, ConcurrentDownloadsOfOneFileFetchItOnce) {
  auto c = client();
  std::string a, b;
  auto fetch = [&](std::string* out) {
    try {
      *out = c.download(kRepo, kFile);
    } catch (const Error& e) {
      *out = e.what();
    }
  };
  std::thread t1(fetch, &a), t2(fetch, &b);
  t1.join();
  t2.join();
  EXPECT_EQ(a, b);
  EXPECT_EQ(fs::read_file(a), content);
  EXPECT_EQ(hub.count(kResolve), 1);
}

TEST_F(HfHub, PathsThatLeaveTheCacheAreRejected) {
  auto c = client();
  for (const char* bad : {"../etc/passwd", "/abs", "a//b", "a/./b", ""})
    test::expect_parts(test::error_of([&] { c.download(kRepo, bad); }), {"invalid", "file path"});
  test::expect_parts(test::error_of([&] { c.download("../x", "a"); }), {"repo"});
  EXPECT_TRUE(hub.requests().empty());
}

TEST_F(HfHub, RevisionAndPathAreEscaped) {
  hub.add_file(kRepo, "refs/convert/parquet", "default/train/0 1.parquet", "xyz");
  auto c = client();
  auto files = c.list_files(kRepo, "refs/convert/parquet");
  ASSERT_EQ(files.size(), 1u);
  std::string local = c.download(kRepo, files[0].path, "refs/convert/parquet");
  EXPECT_EQ(fs::read_file(local), "xyz");
  EXPECT_EQ(local, tmp.path + "/cache/datasets/acme--tiny-corpus/refs--convert--parquet/default/train/0 1.parquet");
  EXPECT_EQ(hub.requests()[1].target,
            "/datasets/acme/tiny-corpus/resolve/refs%2Fconvert%2Fparquet/default/train/0%201.parquet");
}

TEST(HfHubHttp, LinkNextAndContentRange) {
  EXPECT_EQ(http::link_next("<https://h.co/api/x?cursor=ab>; rel=\"next\"", "https://e.org/a"),
            "https://h.co/api/x?cursor=ab");
  EXPECT_EQ(http::link_next("</api/x?c=1>; rel=\"prev\", </api/x?c=3>; rel=\"next\"", "http://m:8/hf/api/t?r=1"),
            "http://m:8/api/x?c=3");
  EXPECT_EQ(http::link_next("<https://h.co/x>; rel=\"last\"", "https://h.co"), "");
  EXPECT_EQ(http::link_next("", "https://h.co"), "");
  EXPECT_EQ(http::parse_content_range("bytes 100-199/200"), (std::pair<int64_t, int64_t>{100, 200}));
  EXPECT_EQ(http::parse_content_range("bytes */200"), (std::pair<int64_t, int64_t>{-1, 200}));
  EXPECT_EQ(http::parse_content_range("bytes 0-9/*"), (std::pair<int64_t, int64_t>{0, -1}));
  EXPECT_EQ(http::url_escape("refs/convert/parquet", false), "refs%2Fconvert%2Fparquet");
  EXPECT_EQ(http::url_escape("a b/c+d.parquet", true), "a%20b/c%2Bd.parquet");
}

TEST(HfHubOptions, FromEnvironment) {
  ScopedEnv e1("HF_ENDPOINT", "http://mirror.example:8080/");
  ScopedEnv e2("HF_TOKEN", "hf_abc");
  ScopedEnv e3("NMOE_HF_CACHE", "/data/hf");
  HubOptions o = HubOptions::from_env();
  EXPECT_EQ(o.endpoint, "http://mirror.example:8080");
  EXPECT_EQ(o.token, "hf_abc");
  EXPECT_EQ(o.cache_dir, "/data/hf");
  {
    ScopedEnv e4("HF_TOKEN", nullptr);
    ScopedEnv e5("HUGGING_FACE_HUB_TOKEN", "hf_old");
    ScopedEnv e6("NMOE_HF_CACHE", nullptr);
    ScopedEnv e7("HF_HOME", "/hfhome");
    o = HubOptions::from_env();
    EXPECT_EQ(o.token, "hf_old");
    EXPECT_EQ(o.cache_dir, "/hfhome/nmoe");
  }
  {
    ScopedEnv e4("HF_ENDPOINT", nullptr), e6("NMOE_HF_CACHE", nullptr), e7("HF_HOME", nullptr), e8("HOME", "/home/u");
    o = HubOptions::from_env();
    EXPECT_EQ(o.endpoint, "https://huggingface.co");
    EXPECT_EQ(o.cache_dir, "/home/u/.cache/nmoe/hf");
    EXPECT_EQ(HubClient(HubOptions{}).options().endpoint, "https://huggingface.co");
  }
}

TEST(HfHubOptions, FromEnvironmentReachesTheServer) {
  test::FakeHub hub;
  test::TempDir tmp;
  hub.require_token("hf_env");
  hub.add_file("org/ds", "main", "x.txt", "hello");
  ScopedEnv p1("no_proxy", "127.0.0.1,localhost"), p2("NO_PROXY", "127.0.0.1,localhost");
  ScopedEnv e1("HF_ENDPOINT", (hub.endpoint() + "/").c_str()), e2("HF_TOKEN", "hf_env"),
      e3("NMOE_HF_CACHE", tmp.path.c_str());
  HubClient c(HubOptions::from_env());
  EXPECT_EQ(fs::read_file(c.download("org/ds", "x.txt")), "hello");
  EXPECT_EQ(hub.requests()[0].header("authorization"), "Bearer hf_env");
}

}  // namespace
}  // namespace nmoe
