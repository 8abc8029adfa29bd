// The fake HuggingFace Hub of fake_hub_server.h (no tests in this file).
#include "fake_hub_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "core/sha256.h"

namespace nmoe::test {
namespace {

std::string percent_decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t pos; (pos = s.find(sep, start)) != std::string::npos; start = pos + 1)
    out.push_back(s.substr(start, pos - start));
  out.push_back(s.substr(start));
  return out;
}

std::string join(const std::vector<std::string>& v, size_t from, size_t to, const char* sep) {
  std::string out;
  for (size_t i = from; i < to; ++i) out += (i > from ? sep : "") + v[i];
  return out;
}

std::string query_param(const std::string& query, const std::string& name) {
  for (const std::string& kv : split(query, '&')) {
    size_t eq = kv.find('=');
    if (kv.substr(0, eq) == name) return eq == std::string::npos ? "" : percent_decode(kv.substr(eq + 1));
  }
  return "";
}

bool send_all(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

std::string reason(int status) {
  static const std::map<int, std::string> names = {{200, "OK"},
                                                   {206, "Partial Content"},
                                                   {302, "Found"},
                                                   {401, "Unauthorized"},
                                                   {404, "Not Found"},
                                                   {416, "Range Not Satisfiable"},
                                                   {429, "Too Many Requests"},
                                                   {500, "Internal Server Error"},
                                                   {503, "Service Unavailable"}};
  auto it = names.find(status);
  return it == names.end() ? "Error" : it->second;
}

// Status line and headers; Content-Length is the full body size even when the
// caller then sends less of it (a dropped connection).
std::string head(int status, const std::vector<std::string>& headers, size_t content_length) {
  std::string h = "HTTP/1.1 " + std::to_string(status) + " " + reason(status) + "\r\n";
  for (const std::string& line : headers) h += line + "\r\n";
  h += "Content-Length: " + std::to_string(content_length) + "\r\nConnection: close\r\n\r\n";
  return h;
}

void send_response(int fd, int status, const std::vector<std::string>& headers, const std::string& body) {
  std::string msg = head(status, headers, body.size()) + body;
  send_all(fd, msg.data(), msg.size());
}

std::string error_json(const std::string& msg) { return nlohmann::json{{"error", msg}}.dump(); }

}  // namespace

FakeHub::FakeHub() {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw std::runtime_error("FakeHub: socket() failed");
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listen_fd_, 64) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(listen_fd_);
    throw std::runtime_error("FakeHub: cannot listen on 127.0.0.1");
  }
  port_ = ntohs(addr.sin_port);
  accept_thread_ = std::thread([this] { accept_loop(); });
}

FakeHub::~FakeHub() {
  stopping_ = true;
  accept_thread_.join();
  ::close(listen_fd_);
  std::vector<std::thread> workers;
  {
    std::lock_guard<std::mutex> g(mu_);
    workers.swap(workers_);
  }
  for (std::thread& t : workers) t.join();
}

std::string FakeHub::endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

void FakeHub::add_file(const std::string& repo, const std::string& rev, const std::string& path,
                       const std::string& content, bool lfs) {
  std::lock_guard<std::mutex> g(mu_);
  files_[repo + "\n" + rev][path] = File{content, lfs};
}

void FakeHub::set_page_size(int n) {
  std::lock_guard<std::mutex> g(mu_);
  page_size_ = n;
}
void FakeHub::fail_next(int k, int status, int retry_after_s) {
  std::lock_guard<std::mutex> g(mu_);
  fail_left_ = k;
  fail_status_ = status;
  retry_after_ = retry_after_s;
}
void FakeHub::drop_after(int64_t bytes, int times) {
  std::lock_guard<std::mutex> g(mu_);
  drop_bytes_ = bytes;
  drop_left_ = times;
}
void FakeHub::require_token(const std::string& token) {
  std::lock_guard<std::mutex> g(mu_);
  token_ = token;
}
void FakeHub::redirect_to(const std::string& host) {
  std::lock_guard<std::mutex> g(mu_);
  redirect_host_ = host;
}
void FakeHub::ignore_range(bool on) {
  std::lock_guard<std::mutex> g(mu_);
  ignore_range_ = on;
}
void FakeHub::stall(bool on) {
  std::lock_guard<std::mutex> g(mu_);
  stall_ = on;
}

std::vector<FakeHub::Request> FakeHub::requests() const {
  std::lock_guard<std::mutex> g(mu_);
  return log_;
}
int FakeHub::count(const std::string& p) const {
  std::lock_guard<std::mutex> g(mu_);
  return static_cast<int>(std::count_if(log_.begin(), log_.end(), [&](const Request& r) { return r.path == p; }));
}
int FakeHub::count_prefix(const std::string& p) const {
  std::lock_guard<std::mutex> g(mu_);
  return static_cast<int>(
      std::count_if(log_.begin(), log_.end(), [&](const Request& r) { return r.path.starts_with(p); }));
}
void FakeHub::clear_log() {
  std::lock_guard<std::mutex> g(mu_);
  log_.clear();
}

void FakeHub::accept_loop() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::lock_guard<std::mutex> g(mu_);
    workers_.emplace_back([this, fd] {
      serve(fd);
      ::close(fd);
    });
  }
}

void FakeHub::serve(int fd) {
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string in;
  char buf[4096];
  while (in.find("\r\n\r\n") == std::string::npos && in.size() < (1 << 16)) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return;
    in.append(buf, static_cast<size_t>(n));
  }
  std::vector<std::string> lines = split(in.substr(0, in.find("\r\n\r\n")), '\n');
  Request req;
  std::vector<std::string> first = split(lines[0].substr(0, lines[0].find('\r')), ' ');
  if (first.size() < 2) return;
  req.method = first[0];
  req.target = first[1];
  req.path = percent_decode(req.target.substr(0, req.target.find('?')));
  for (size_t i = 1; i < lines.size(); ++i) {
    std::string line = lines[i].substr(0, lines[i].find('\r'));
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    size_t v = line.find_first_not_of(' ', colon + 1);
    req.headers[name] = v == std::string::npos ? "" : line.substr(v);
  }
  {
    std::lock_guard<std::mutex> g(mu_);
    log_.push_back(req);
  }
  respond(fd, req);
}

void FakeHub::respond(int fd, const Request& req) {
  std::unique_lock<std::mutex> lock(mu_);
  if (fail_left_ > 0) {
    --fail_left_;
    std::vector<std::string> h = {"Content-Type: application/json"};
    if (retry_after_ >= 0) h.push_back("Retry-After: " + std::to_string(retry_after_));
    lock.unlock();
    return send_response(fd, fail_status_, h, error_json("injected failure"));
  }
  std::string raw_path = req.target.substr(0, req.target.find('?'));
  std::string query = req.target.find('?') == std::string::npos ? "" : req.target.substr(req.target.find('?') + 1);
  const bool cdn = raw_path.starts_with("/cdn/");
  std::vector<std::string> seg = split(cdn ? raw_path.substr(4) : raw_path, '/');  // seg[0] == ""
  for (std::string& s : seg) s = percent_decode(s);
  if (!cdn && !token_.empty() && req.header("authorization") != "Bearer " + token_) {
    lock.unlock();
    return send_response(fd, 401,
                         {"X-Error-Code: RepoNotFound", "X-Error-Message: Invalid credentials in Authorization header"},
                         error_json("Invalid credentials in Authorization header"));
  }
  // Locates {repo}/{word}/{rev} in seg[first..]; returns the index of word or 0.
  auto find_word = [&](size_t first, const char* word) {
    for (size_t i = first + 1; i + 1 < seg.size(); ++i)
      if (seg[i] == word) return i;
    return size_t{0};
  };
  auto not_found = [&](const std::string& code, const std::string& msg) {
    lock.unlock();
    send_response(fd, 404, {"X-Error-Code: " + code, "X-Error-Message: " + msg}, error_json(msg));
  };
  if (seg.size() > 3 && seg[1] == "api" && seg[2] == "datasets") {
    size_t t = find_word(3, "tree");
    if (t == 0) return not_found("EntryNotFound", "Unknown API route");
    std::string repo = join(seg, 3, t, "/"), rev = seg[t + 1];
    auto it = files_.find(repo + "\n" + rev);
    if (it == files_.end()) return not_found("RepoNotFound", "Repository " + repo + "@" + rev + " not found");
    std::set<std::string> dirs;
    for (const auto& [p, f] : it->second)
      for (size_t s = p.find('/'); s != std::string::npos; s = p.find('/', s + 1)) dirs.insert(p.substr(0, s));
    const bool recursive = query_param(query, "recursive") == "true";
    nlohmann::json all = nlohmann::json::array();
    std::map<std::string, nlohmann::json> entries;
    for (const std::string& d : dirs)
      entries[d] = {{"type", "directory"}, {"oid", sha256_hex(d).substr(0, 40)}, {"size", 0}, {"path", d}};
    for (const auto& [p, f] : it->second) {
      nlohmann::json e = {{"type", "file"},
                          {"oid", sha256_hex("blob " + f.content).substr(0, 40)},
                          {"size", f.content.size()},
                          {"path", p}};
      if (f.lfs) e["lfs"] = {{"oid", sha256_hex(f.content)}, {"size", f.content.size()}, {"pointerSize", 134}};
      entries[p] = e;
    }
    for (auto& [p, e] : entries)
      if (recursive || p.find('/') == std::string::npos) all.push_back(e);
    size_t cursor = query_param(query, "cursor").empty() ? 0 : std::stoul(query_param(query, "cursor"));
    size_t end = page_size_ > 0 ? std::min(all.size(), cursor + page_size_) : all.size();
    nlohmann::json page = nlohmann::json::array();
    for (size_t i = cursor; i < end; ++i) page.push_back(all[i]);
    std::vector<std::string> h = {"Content-Type: application/json"};
    if (end < all.size())
      h.push_back("Link: <" + endpoint() + raw_path + "?recursive=" + (recursive ? "true" : "false") +
                  "&cursor=" + std::to_string(end) + ">; rel=\"next\"");
    lock.unlock();
    return send_response(fd, 200, h, page.dump());
  }
  if (seg.size() > 2 && seg[1] == "datasets") {
    size_t r = find_word(2, "resolve");
    if (r == 0 || r + 2 >= seg.size()) return not_found("EntryNotFound", "Unknown route");
    std::string repo = join(seg, 2, r, "/"), rev = seg[r + 1], path = join(seg, r + 2, seg.size(), "/");
    auto it = files_.find(repo + "\n" + rev);
    if (it == files_.end()) return not_found("RepoNotFound", "Repository " + repo + "@" + rev + " not found");
    auto f = it->second.find(path);
    if (f == it->second.end()) return not_found("EntryNotFound", path + " does not exist on \"" + rev + "\"");
    if (!cdn && !redirect_host_.empty()) {
      std::string loc = "http://" + redirect_host_ + ":" + std::to_string(port_) + "/cdn" + raw_path;
      lock.unlock();
      return send_response(fd, 302, {"Location: " + loc}, "");
    }
    const std::string content = f->second.content;
    const std::string etag = "\"" + sha256_hex(content).substr(0, 32) + "\"";
    size_t from = 0;
    int status = 200;
    std::string range = req.header("range"), if_range = req.header("if-range");
    if (range.starts_with("bytes=") && !ignore_range_ && (if_range.empty() || if_range == etag)) {
      from = std::stoull(range.substr(6));
      if (from >= content.size()) {
        lock.unlock();
        return send_response(fd, 416, {"Content-Range: bytes */" + std::to_string(content.size())}, "");
      }
      status = 206;
    }
    std::vector<std::string> h = {"Content-Type: application/octet-stream", "Accept-Ranges: bytes", "ETag: " + etag};
    if (status == 206)
      h.push_back("Content-Range: bytes " + std::to_string(from) + "-" + std::to_string(content.size() - 1) + "/" +
                  std::to_string(content.size()));
    size_t send_bytes = content.size() - from;
    if (drop_left_ > 0) {
      --drop_left_;
      send_bytes = std::min<size_t>(send_bytes, static_cast<size_t>(drop_bytes_));
    }
    const bool stall = stall_;
    lock.unlock();
    std::string msg = head(status, h, content.size() - from);
    if (!send_all(fd, msg.data(), msg.size())) return;
    if (stall) {  // headers only, then wait (bounded) for the client to give up
      auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (!stopping_ && std::chrono::steady_clock::now() < until) {
        pollfd p{fd, POLLIN, 0};
        char c;
        if (::poll(&p, 1, 50) > 0 && ::recv(fd, &c, 1, 0) <= 0) return;
      }
      return;
    }
    send_all(fd, content.data() + from, send_bytes);
    return;
  }
  not_found("EntryNotFound", "Unknown route " + req.path);
}

}  // namespace nmoe::test
