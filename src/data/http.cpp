#include "data/http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <memory>
#include <mutex>

#include "core/error.h"

namespace nmoe::http {
namespace {

constexpr size_t kMaxErrorBody = 64 * 1024;

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    NMOE_CHECK(rc == CURLE_OK, "libcurl initialisation failed: ", curl_easy_strerror(rc));
  });
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

struct Transfer {
  const Request* req;
  Response* resp;
};

// Called once per header line, for every response of a redirect chain: a status
// line starts a new response, so only the final one's headers remain.
size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string_view line = trim(std::string_view(data, size * n));
  if (line.starts_with("HTTP/")) {
    t->resp->headers.clear();
    size_t sp = line.find(' ');
    t->resp->status = sp == std::string_view::npos ? 0 : std::atol(std::string(line.substr(sp + 1, 3)).c_str());
  } else if (size_t colon = line.find(':'); colon != std::string_view::npos) {
    std::string name = lower(trim(line.substr(0, colon)));
    std::string value(trim(line.substr(colon + 1)));
    auto [it, inserted] = t->resp->headers.emplace(name, value);
    if (!inserted) it->second += ", " + value;
  }
  return size * n;
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t len = size * n;
  long s = t->resp->status;
  if (t->req->sink && s >= 200 && s < 300) {
    if (!t->req->sink(*t->resp, std::string_view(data, len))) {
      t->resp->aborted_by_sink = true;
      return 0;  // makes libcurl stop with CURLE_WRITE_ERROR
    }
    return len;
  }
  if (t->req->sink) {
    size_t room = kMaxErrorBody - std::min(kMaxErrorBody, t->resp->body.size());
    t->resp->body.append(data, std::min(room, len));
  } else {
    t->resp->body.append(data, len);
  }
  return len;
}

}  // namespace

Response get(const Request& req) {
  global_init();
  Response resp;
  std::unique_ptr<CURL, void (*)(CURL*)> h(curl_easy_init(), curl_easy_cleanup);
  NMOE_CHECK(h != nullptr, "libcurl: cannot create a transfer handle");
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> hdrs(nullptr, curl_slist_free_all);
  for (const std::string& line : req.headers) {
    curl_slist* next = curl_slist_append(hdrs.get(), line.c_str());
    NMOE_CHECK(next != nullptr, "libcurl: out of memory building headers");
    hdrs.release();
    hdrs.reset(next);
  }
  char errbuf[CURL_ERROR_SIZE] = {0};
  Transfer t{&req, &resp};
  CURL* c = h.get();
  curl_easy_setopt(c, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(c, CURLOPT_UNRESTRICTED_AUTH, 0L);  // credentials stay with the first host
#if LIBCURL_VERSION_NUM >= 0x075500  // 7.85
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(c, CURLOPT_PROTOCOLS, long(CURLPROTO_HTTP | CURLPROTO_HTTPS));
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS, long(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, req.timeout_s);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);  // less than 1 byte/s ...
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, req.timeout_s);  // ... for timeout_s seconds fails
  curl_easy_setopt(c, CURLOPT_USERAGENT, "nmoe/1 libcurl");
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
  if (hdrs) curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs.get());
  if (!req.bearer_token.empty()) {
    // libcurl's own bearer auth: sent on the first request, and after a
    // redirect only while the host (and port and scheme) stay the same.
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, long(CURLAUTH_BEARER));
    curl_easy_setopt(c, CURLOPT_XOAUTH2_BEARER, req.bearer_token.c_str());
  }
  CURLcode rc = curl_easy_perform(c);
  resp.curl_code = static_cast<int>(rc);
  if (rc != CURLE_OK) resp.curl_error = errbuf[0] ? std::string(errbuf) : curl_easy_strerror(rc);
  long code = 0;
  if (curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code != 0) resp.status = code;
  return resp;
}

std::string Response::header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? std::string() : it->second;
}

bool Response::transient() const {
  if (!transfer_ok())
    return !aborted_by_sink && curl_code != CURLE_URL_MALFORMAT && curl_code != CURLE_UNSUPPORTED_PROTOCOL &&
           curl_code != CURLE_TOO_MANY_REDIRECTS && curl_code != CURLE_OUT_OF_MEMORY;
  return status == 408 || status == 429 || status >= 500;
}

std::string Response::describe() const {
  if (!transfer_ok()) return curl_error + (status ? " (HTTP " + std::to_string(status) + ")" : "");
  std::string detail = header("x-error-message");
  if (detail.empty()) detail = std::string(trim(body.substr(0, 300)));
  std::replace(detail.begin(), detail.end(), '\n', ' ');
  return "HTTP " + std::to_string(status) + (detail.empty() ? "" : ": " + detail);
}

std::pair<int64_t, int64_t> parse_content_range(const std::string& v) {
  int64_t first = -1, total = -1;
  size_t sp = v.find(' '), slash = v.find('/');
  if (sp == std::string::npos || slash == std::string::npos || slash + 1 >= v.size()) return {first, total};
  if (v[sp + 1] != '*') first = std::strtoll(v.c_str() + sp + 1, nullptr, 10);
  if (v[slash + 1] != '*') total = std::strtoll(v.c_str() + slash + 1, nullptr, 10);
  return {first, total};
}

std::string url_escape(std::string_view s, bool keep_slash) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~' || (keep_slash && ch == '/')) {
      out += static_cast<char>(ch);
    } else {
      out += '%';
      out += hex[ch >> 4];
      out += hex[ch & 15];
    }
  }
  return out;
}

std::string link_next(const std::string& link, const std::string& base_url) {
  // Link: <url1>; rel="next", <url2>; rel="last"
  size_t pos = 0;
  while ((pos = link.find('<', pos)) != std::string::npos) {
    size_t close = link.find('>', pos);
    if (close == std::string::npos) break;
    std::string url = link.substr(pos + 1, close - pos - 1);
    size_t next_entry = link.find('<', close);
    std::string params =
        lower(link.substr(close + 1, next_entry == std::string::npos ? std::string::npos : next_entry - close - 1));
    if (params.find("rel=\"next\"") != std::string::npos || params.find("rel=next") != std::string::npos) {
      if (url.starts_with("/")) {  // keep "scheme://host[:port]" of the base
        size_t scheme = base_url.find("://");
        url = base_url.substr(0, scheme == std::string::npos ? 0 : base_url.find('/', scheme + 3)) + url;
      }
      return url;
    }
    pos = close;
  }
  return "";
}

}  // namespace nmoe::http
