// A small synchronous HTTP client over libcurl: one GET per call, redirects
// followed, optional bearer token (never sent to another host after a
// redirect), connect and low-speed timeouts so a stalled peer fails instead of
// hanging. Transport errors are reported in the Response, not thrown, so the
// caller decides what to retry.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nmoe::http {

// Header names are lower-cased; repeated headers are joined with ", ".
using Headers = std::map<std::string, std::string>;

struct Response {
  long status = 0;    // HTTP status of the final response (0 if none arrived)
  Headers headers;    // headers of the final response (after redirects)
  std::string body;   // the body; when a sink took a 2xx body, only a non-2xx body (first 64 KiB)
  int curl_code = 0;  // CURLcode of the transfer; 0 = it completed
  std::string curl_error;
  bool aborted_by_sink = false;  // the sink returned false
  bool transfer_ok() const { return curl_code == 0; }
  // A header of the final response, or "".
  std::string header(const std::string& lower_case_name) const;
  // Worth trying again: a transport failure (not one the caller caused), 408, 429 or 5xx.
  bool transient() const;
  // "HTTP 404: <X-Error-Message or start of body>", or the transport error.
  std::string describe() const;
};

struct Request {
  std::string url;
  std::string bearer_token;          // "Authorization: Bearer <token>" when not empty
  std::vector<std::string> headers;  // extra "Name: value" lines
  long timeout_s = 60;               // connect timeout, and the longest stretch with no data
  // When set, the body of a 2xx response is passed here chunk by chunk (with the
  // status and headers of that response) instead of being kept in Response::body.
  // Returning false aborts the transfer.
  std::function<bool(const Response& head, std::string_view chunk)> sink;
};

Response get(const Request& req);

// Percent-encodes everything but unreserved characters (and '/' when keep_slash).
std::string url_escape(std::string_view s, bool keep_slash);

// "bytes a-b/T" or "bytes */T" -> {a, T}, each -1 when absent or '*'.
std::pair<int64_t, int64_t> parse_content_range(const std::string& value);

// The URL of the rel="next" entry of a Link header, or "" when there is none;
// a root-relative one ("/api/...") is resolved against base_url's origin.
std::string link_next(const std::string& link_header, const std::string& base_url);

}  // namespace nmoe::http
