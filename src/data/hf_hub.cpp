#include "data/hf_hub.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <utility>

#include "core/error.h"
#include "core/fs.h"
#include "data/http.h"

namespace nmoe {
namespace {

std::string env_str(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

std::string default_endpoint() {
  std::string e = env_str("HF_ENDPOINT");
  return e.empty() ? "https://huggingface.co" : e;
}

std::string default_cache_dir() {
  if (std::string v = env_str("NMOE_HF_CACHE"); !v.empty()) return v;
  if (std::string v = env_str("HF_HOME"); !v.empty()) return v + "/nmoe";
  std::string home = env_str("HOME");
  if (home.empty())
    if (const passwd* pw = ::getpwuid(::getuid())) home = pw->pw_dir ? pw->pw_dir : "";
  return (home.empty() ? std::string("/tmp") : home) + "/.cache/nmoe/hf";
}

std::string strip_trailing_slashes(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

std::string replace_slashes(const std::string& s) {
  std::string out;
  for (char c : s) c == '/' ? out += "--" : out += c;
  return out;
}

// Repo ids, revisions and file paths become cache paths: nothing may climb out.
void check_name(const char* what, const std::string& s) {
  NMOE_CHECK(!s.empty(), "HF hub: invalid ", what, " (empty)");
  size_t start = 0;
  while (true) {
    size_t end = s.find('/', start);
    std::string seg = s.substr(start, end == std::string::npos ? std::string::npos : end - start);
    NMOE_CHECK(!seg.empty() && seg != "." && seg != ".." && seg.find('\0') == std::string::npos, "HF hub: invalid ",
               what, " '", s, "' (empty, '.' or '..' path components are not allowed)");
    if (end == std::string::npos) break;
    start = end + 1;
  }
}

int64_t file_size(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return -1;
  return static_cast<int64_t>(st.st_size);
}

struct Fd {  // an owned file descriptor
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Exclusive lock (flock) held until the returned descriptor is closed.
Fd lock_file(const std::string& path) {
  fs::make_dirs(fs::parent_dir(path));
  Fd f(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  NMOE_CHECK(f.fd >= 0, "cannot open lock file '", path, "': ", std::strerror(errno));
  while (::flock(f.fd, LOCK_EX) != 0) NMOE_CHECK(errno == EINTR, "cannot lock '", path, "': ", std::strerror(errno));
  return f;
}

double backoff_s(const HubOptions& o, const http::Response& r, int failures) {
  std::string ra = r.header("retry-after");
  if (!ra.empty()) {
    char* end = nullptr;
    long v = std::strtol(ra.c_str(), &end, 10);
    if (end != ra.c_str() && *end == '\0' && v >= 0) return std::min(60.0, static_cast<double>(v));
  }
  return std::min(30.0, o.retry_base_s * std::pow(2.0, failures));
}

// Calls attempt() until its response is not worth retrying; attempt() sets
// `progressed` when it moved data forward, which resets the failure count.
http::Response with_retries(const HubOptions& o, const std::string& url,
                            const std::function<http::Response(bool& progressed)>& attempt) {
  int failures = 0;
  for (;;) {
    bool progressed = false;
    http::Response r = attempt(progressed);
    if (!r.transient()) return r;
    if (progressed) failures = 0;
    if (failures >= o.max_retries)
      fail("HF hub: GET ", url, " failed after ", failures + 1, " attempt(s): ", r.describe());
    std::this_thread::sleep_for(std::chrono::duration<double>(backoff_s(o, r, failures)));
    ++failures;
  }
}

[[noreturn]] void fail_http(const http::Response& r, const std::string& url, const std::string& repo,
                            const std::string& rev, const std::string& path, bool have_token) {
  if (!r.transfer_ok()) fail("HF hub: GET ", url, " failed: ", r.describe());
  std::string where = "GET " + url + " answered " + r.describe();
  if (r.status == 401 || r.status == 403)
    fail("HF hub: access to dataset '", repo, "' was refused (", where,
         "). The dataset may be gated or private (or may not exist): ",
         have_token ? "check that the token in HF_TOKEN is valid and has access to it"
                    : "set HF_TOKEN to a HuggingFace access token that has access to it",
         " (for a gated dataset, accept its conditions on its Hub page first)");
  if (r.status == 404 && path.empty())
    fail("HF hub: dataset '", repo, "' or its revision '", rev, "' not found (", where, ")");
  if (r.status == 404)
    fail("HF hub: file '", path, "' not found in dataset '", repo, "' at revision '", rev, "' (", where, ")");
  fail("HF hub: ", where);
}

}  // namespace

HubOptions HubOptions::from_env() {
  HubOptions o;
  o.endpoint = strip_trailing_slashes(default_endpoint());
  o.token = env_str("HF_TOKEN");
  if (o.token.empty()) o.token = env_str("HUGGING_FACE_HUB_TOKEN");
  o.cache_dir = default_cache_dir();
  return o;
}

HubClient::HubClient(HubOptions opt) : opt_(std::move(opt)) {
  if (opt_.endpoint.empty()) opt_.endpoint = default_endpoint();
  opt_.endpoint = strip_trailing_slashes(opt_.endpoint);
  if (opt_.cache_dir.empty()) opt_.cache_dir = default_cache_dir();
  opt_.cache_dir = strip_trailing_slashes(opt_.cache_dir);
  NMOE_CHECK(opt_.max_retries >= 0, "HF hub: max_retries must be >= 0, got ", opt_.max_retries);
  NMOE_CHECK(opt_.retry_base_s >= 0, "HF hub: retry_base_s must be >= 0, got ", opt_.retry_base_s);
  NMOE_CHECK(opt_.timeout_s > 0, "HF hub: timeout_s must be > 0, got ", opt_.timeout_s);
}

std::string HubClient::local_path(const std::string& repo, const std::string& path, const std::string& revision) const {
  check_name("dataset repo id", repo);
  check_name("revision", revision);
  check_name("file path", path);
  return opt_.cache_dir + "/datasets/" + replace_slashes(repo) + "/" + replace_slashes(revision) + "/" + path;
}

int64_t HubClient::known_size(const std::string& repo, const std::string& revision, const std::string& path) const {
  std::lock_guard<std::mutex> g(mu_);
  auto it = sizes_.find(repo + "\n" + revision + "\n" + path);
  return it == sizes_.end() ? -1 : it->second;
}

std::vector<HubFile> HubClient::list_files(const std::string& repo, const std::string& revision) {
  check_name("dataset repo id", repo);
  check_name("revision", revision);
  const std::string first =
      opt_.endpoint + "/api/datasets/" + repo + "/tree/" + http::url_escape(revision, false) + "?recursive=true";
  std::vector<HubFile> files;
  std::set<std::string> seen;
  for (std::string url = first; !url.empty();) {
    NMOE_CHECK(seen.insert(url).second, "HF hub: pagination of ", first, " loops back to ", url);
    http::Request rq;
    rq.url = url;
    rq.bearer_token = opt_.token;
    rq.headers = {"Accept: application/json"};
    rq.timeout_s = opt_.timeout_s;
    http::Response r = with_retries(opt_, url, [&](bool&) { return http::get(rq); });
    if (!r.transfer_ok() || r.status != 200) fail_http(r, url, repo, revision, "", !opt_.token.empty());
    nlohmann::json j = nlohmann::json::parse(r.body, nullptr, /*allow_exceptions=*/false);
    NMOE_CHECK(!j.is_discarded() && j.is_array(), "HF hub: GET ", url,
               " did not answer with a JSON list of files: ", r.body.substr(0, 200));
    for (const auto& e : j) {
      if (!e.is_object() || !e.contains("type") || e["type"] != "file" || !e.contains("path") || !e["path"].is_string())
        continue;
      HubFile f;
      f.path = e["path"].get<std::string>();
      if (e.contains("size") && e["size"].is_number_integer()) f.size = e["size"].get<int64_t>();
      if (e.contains("oid") && e["oid"].is_string()) f.oid = e["oid"].get<std::string>();
      if (e.contains("lfs") && e["lfs"].is_object() && e["lfs"].contains("oid") && e["lfs"]["oid"].is_string())
        f.oid = e["lfs"]["oid"].get<std::string>();
      files.push_back(std::move(f));
    }
    url = http::link_next(r.header("link"), url);
  }
  std::sort(files.begin(), files.end(), [](const HubFile& a, const HubFile& b) { return a.path < b.path; });
  std::lock_guard<std::mutex> g(mu_);
  for (const HubFile& f : files)
    if (f.size >= 0) sizes_[repo + "\n" + revision + "\n" + f.path] = f.size;
  return files;
}

std::string HubClient::download(const std::string& repo, const std::string& path, const std::string& revision,
                                const std::function<void(int64_t, int64_t)>& progress) {
  const std::string dest = local_path(repo, path, revision);
  const int64_t known = known_size(repo, revision, path);
  auto cached = [&] {
    int64_t s = file_size(dest);
    return s >= 0 && (known < 0 || s == known);
  };
  if (cached()) return dest;
  Fd lock = lock_file(opt_.cache_dir + "/.locks" + dest.substr(opt_.cache_dir.size()) + ".lock");
  if (cached()) return dest;  // another thread or process finished it meanwhile
  fs::make_dirs(fs::parent_dir(dest));

  const std::string part = dest + ".incomplete", etag_path = part + ".etag";
  Fd fd(::open(part.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  NMOE_CHECK(fd.fd >= 0, "cannot create '", part, "': ", std::strerror(errno));
  int64_t offset = ::lseek(fd.fd, 0, SEEK_END);
  NMOE_CHECK(offset >= 0, "cannot seek in '", part, "': ", std::strerror(errno));
  std::string etag = fs::exists(etag_path) ? fs::read_file(etag_path) : "";
  auto restart = [&] {
    NMOE_CHECK(::ftruncate(fd.fd, 0) == 0 && ::lseek(fd.fd, 0, SEEK_SET) == 0, "cannot truncate '", part,
               "': ", std::strerror(errno));
    offset = 0;
  };
  auto discard = [&] {
    ::unlink(part.c_str());
    ::unlink(etag_path.c_str());
  };
  if (known >= 0 && offset > known) restart();

  const std::string url = opt_.endpoint + "/datasets/" + repo + "/resolve/" + http::url_escape(revision, false) + "/" +
                          http::url_escape(path, true);
  int64_t total = known;
  std::string error;  // why the body sink stopped the transfer
  bool size_error = false;

  // Checks the head of a 2xx answer before its first byte is written.
  auto begin_body = [&](const http::Response& head) {
    if (head.status == 206) {
      auto [first, t] = http::parse_content_range(head.header("content-range"));
      if (first != offset) {
        error = "asked for bytes from " + std::to_string(offset) + ", got Content-Range '" +
                head.header("content-range") + "'";
        return false;
      }
      if (t >= 0) total = t;
    } else {
      if (offset > 0) restart();  // the server (or If-Range) sent the whole file again
      std::string cl = head.header("content-length");
      if (!cl.empty()) total = std::strtoll(cl.c_str(), nullptr, 10);
      etag = head.header("etag");
      if (etag.starts_with("W/")) etag.clear();  // only a strong ETag may guard a Range request
      if (etag.empty())
        ::unlink(etag_path.c_str());
      else
        fs::write_file_atomic(etag_path, etag, /*fsync=*/false);
    }
    if (known >= 0 && total >= 0 && total != known) {
      error = "the server sends " + std::to_string(total) + " bytes, the file list says " + std::to_string(known);
      size_error = true;
      return false;
    }
    return true;
  };

  auto fetch = [&]() {
    http::Request rq;
    rq.url = url;
    rq.bearer_token = opt_.token;
    rq.timeout_s = opt_.timeout_s;
    if (offset > 0) {
      rq.headers.push_back("Range: bytes=" + std::to_string(offset) + "-");
      if (!etag.empty()) rq.headers.push_back("If-Range: " + etag);
    }
    bool started = false;
    rq.sink = [&](const http::Response& head, std::string_view chunk) {
      try {  // nothing may be thrown through libcurl
        if (!started) {
          started = true;
          if (!begin_body(head)) return false;
        }
        for (size_t done = 0; done < chunk.size();) {
          ssize_t w = ::write(fd.fd, chunk.data() + done, chunk.size() - done);
          if (w < 0 && errno == EINTR) continue;
          if (w <= 0) {
            error = "write to '" + part + "' failed: " + std::strerror(errno);
            return false;
          }
          done += static_cast<size_t>(w);
          offset += w;
        }
        if (progress) progress(offset, total);
        return true;
      } catch (const std::exception& e) {
        error = e.what();
        return false;
      }
    };
    http::Response r = http::get(rq);
    if (!started && r.transfer_ok() && r.status / 100 == 2 && !begin_body(r)) r.aborted_by_sink = true;
    return r;
  };

  try {
    http::Response r;
    r.status = 200;
    if (!(known >= 0 && offset == known)) {  // else the partial file already holds every byte
      r = with_retries(opt_, url, [&](bool& progressed) {
        const int64_t before = offset;
        http::Response resp = fetch();
        if (resp.transfer_ok() && resp.status == 416 && offset > 0) {  // asked past the end
          int64_t t = http::parse_content_range(resp.header("content-range")).second;
          if (t == offset) {
            total = t;
            resp.status = 206;
            return resp;
          }
          restart();
          resp = fetch();
        }
        progressed = offset > before;
        return resp;
      });
    }
    if (r.aborted_by_sink) {
      if (size_error) discard();
      fail("HF hub: download of ", url, " failed: ", error);
    }
    if (!r.transfer_ok() || (r.status != 200 && r.status != 206))
      fail_http(r, url, repo, revision, path, !opt_.token.empty());
    if ((total >= 0 && offset != total) || (known >= 0 && offset != known)) {
      discard();
      fail("HF hub: size mismatch downloading ", url, ": got ", offset, " bytes, expected ",
           known >= 0 ? known : total);
    }
  } catch (const Error&) {
    if (offset == 0) discard();  // nothing worth resuming
    throw;
  }
  NMOE_CHECK(::fsync(fd.fd) == 0, "fsync of '", part, "' failed: ", std::strerror(errno));
  NMOE_CHECK(::rename(part.c_str(), dest.c_str()) == 0, "cannot rename '", part, "' to '", dest,
             "': ", std::strerror(errno));
  ::unlink(etag_path.c_str());
  fs::fsync_path(fs::parent_dir(dest));
  if (progress) progress(offset, offset);
  return dest;
}

}  // namespace nmoe
