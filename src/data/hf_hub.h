// HuggingFace Hub client for dataset repos: list the files at a revision and
// download them into a local cache, resuming interrupted downloads with HTTP
// Range requests and retrying transient failures.
//
// Cache layout: {cache_dir}/datasets/{owner}--{name}/{revision}/{path}
// (a '/' in the revision, as in "refs/convert/parquet", becomes "--" too).
// A file is only ever renamed into place once complete; partial data lives in
// "<file>.incomplete" (with the server's ETag in "<file>.incomplete.etag", so a
// resume uses If-Range and restarts if the file changed). Concurrent downloads
// of the same file, in threads or processes, are serialised by a lock file
// under {cache_dir}/.locks/.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace nmoe {

struct HubOptions {
  std::string endpoint;       // default: $HF_ENDPOINT or "https://huggingface.co" (trailing '/' stripped)
  std::string token;          // default: $HF_TOKEN or $HUGGING_FACE_HUB_TOKEN; sent as "Authorization: Bearer ..."
  std::string cache_dir;      // default: $NMOE_HF_CACHE, else $HF_HOME/nmoe, else ~/.cache/nmoe/hf
  int max_retries = 5;        // retries per request after the first attempt
  double retry_base_s = 0.5;  // backoff: retry_base_s * 2^k (capped at 30 s), or Retry-After (capped at 60 s)
  long timeout_s = 60;        // connect timeout, and the longest stretch without data before a transfer fails
  // All defaults filled from the environment.
  static HubOptions from_env();
};

struct HubFile {
  std::string path;
  int64_t size = -1;
  std::string oid;  // the LFS sha256 for LFS files, else the git blob id
};

class HubClient {
 public:
  // An empty endpoint or cache_dir is filled from the environment as in
  // from_env(); the token is used as given (from_env() reads $HF_TOKEN).
  explicit HubClient(HubOptions opt);
  const HubOptions& options() const { return opt_; }

  // Files of a dataset repo at a revision, sorted by path (directories skipped):
  // GET {endpoint}/api/datasets/{repo}/tree/{revision}?recursive=true, following
  // Link: <...>; rel="next" pagination. The sizes are remembered, so download()
  // can check cached files and finished downloads against them.
  std::vector<HubFile> list_files(const std::string& repo, const std::string& revision = "main");

  // Downloads {endpoint}/datasets/{repo}/resolve/{revision}/{path} into the cache
  // and returns the local path. A cached file (of the listed size, when known)
  // is returned without any network access. Throws Error on failure.
  std::string download(const std::string& repo, const std::string& path, const std::string& revision = "main",
                       const std::function<void(int64_t done, int64_t total)>& progress = {});

  // Where download() puts a file (whether or not it is there).
  std::string local_path(const std::string& repo, const std::string& path, const std::string& revision = "main") const;

 private:
  int64_t known_size(const std::string& repo, const std::string& revision, const std::string& path) const;

  HubOptions opt_;
  mutable std::mutex mu_;
  std::map<std::string, int64_t> sizes_;  // "repo\nrevision\npath" -> size from list_files
};

}  // namespace nmoe
