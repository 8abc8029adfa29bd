// A fake HuggingFace Hub for tests: an HTTP/1.1 server on 127.0.0.1 (ephemeral
// port, one request per connection, "Connection: close") serving an in-memory
// set of dataset files the way the real Hub does:
//   GET /api/datasets/{repo}/tree/{rev}?recursive=true[&cursor=N]   JSON file list
//   GET /datasets/{repo}/resolve/{rev}/{path}                       file bytes, Range / If-Range
//   GET /cdn/datasets/{repo}/resolve/{rev}/{path}                   redirect target (no token needed)
// with knobs for pagination, redirects and fault injection, and a log of the
// requests it saw.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace nmoe::test {

class FakeHub {
 public:
  struct Request {
    std::string method;
    std::string target;                          // as sent: path and query, percent-encoded
    std::string path;                            // decoded path, no query
    std::map<std::string, std::string> headers;  // lower-case names
    std::string header(const std::string& name) const {
      auto it = headers.find(name);
      return it == headers.end() ? std::string() : it->second;
    }
  };

  FakeHub();   // listens at once
  ~FakeHub();  // stops the server and joins its threads
  FakeHub(const FakeHub&) = delete;
  FakeHub& operator=(const FakeHub&) = delete;

  std::string endpoint() const;  // "http://127.0.0.1:<port>"
  int port() const { return port_; }

  // Adds or replaces a file. An LFS file is listed with an "lfs" object whose
  // oid is the sha256 of the content; every file's ETag changes with its content.
  void add_file(const std::string& repo, const std::string& rev, const std::string& path, const std::string& content,
                bool lfs = false);

  // --- knobs ---
  void set_page_size(int n);  // tree pages of n entries with a Link header (0: one page)
  void fail_next(int k, int status = 500, int retry_after_s = -1);  // the next k requests get `status`
  void drop_after(int64_t bytes, int times = 1);  // the next `times` file bodies stop after `bytes` bytes
  void require_token(const std::string& token);   // "" = none; else 401 without "Bearer <token>"
  void redirect_to(const std::string& host);      // resolve answers 302 to http://<host>:<port>/cdn/...; "" = off
  void ignore_range(bool on);                     // answer 200 with the whole file even to a Range request
  void stall(bool on);                            // send headers of a file, then nothing until the client leaves

  // --- what happened ---
  std::vector<Request> requests() const;
  int count(const std::string& decoded_path) const;   // requests for exactly this path
  int count_prefix(const std::string& prefix) const;  // requests whose decoded path starts with prefix
  void clear_log();

 private:
  struct File {
    std::string content;
    bool lfs = false;
  };
  void accept_loop();
  void serve(int fd);
  void respond(int fd, const Request& req);

  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  std::vector<std::thread> workers_;

  mutable std::mutex mu_;                                     // guards everything below and workers_
  std::map<std::string, std::map<std::string, File>> files_;  // "repo\nrev" -> path -> file
  std::vector<Request> log_;
  int page_size_ = 0;
  int fail_left_ = 0, fail_status_ = 500, retry_after_ = -1;
  int64_t drop_bytes_ = 0;
  int drop_left_ = 0;
  std::string token_;
  std::string redirect_host_;
  bool ignore_range_ = false, stall_ = false;
};

}  // namespace nmoe::test
