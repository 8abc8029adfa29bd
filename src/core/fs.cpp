#include "core/fs.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace nmoe::fs {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  NMOE_CHECK(f.good(), "cannot read '", path, "': ", std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  NMOE_CHECK(!f.bad(), "error while reading '", path, "'");
  return ss.str();
}

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  NMOE_CHECK(fd >= 0, "cannot open '", path, "' for fsync: ", std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  NMOE_CHECK(rc == 0, "fsync of '", path, "' failed: ", std::strerror(err));
}

bool exists(const std::string& path) { return std::filesystem::exists(path); }

void make_dirs(const std::string& path) {
  if (path.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  NMOE_CHECK(!ec, "cannot create directory '", path, "': ", ec.message());
}

std::string parent_dir(const std::string& path) {
  std::string p = std::filesystem::path(path).parent_path().string();
  return p.empty() ? "." : p;
}

std::string temp_sibling(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

void write_file_atomic(const std::string& path, std::string_view data, bool fsync) {
  make_dirs(parent_dir(path));
  std::string tmp = temp_sibling(path);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  NMOE_CHECK(fd >= 0, "cannot create '", tmp, "': ", std::strerror(errno));
  size_t done = 0;
  while (done < data.size()) {
    ssize_t w = ::write(fd, data.data() + done, data.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail("write to '", tmp, "' failed: ", std::strerror(err));
    }
    done += static_cast<size_t>(w);
  }
  if (fsync && ::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    fail("fsync of '", tmp, "' failed: ", std::strerror(err));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    fail("rename '", tmp, "' -> '", path, "' failed: ", std::strerror(err));
  }
  if (fsync) fsync_path(parent_dir(path));
}

}  // namespace nmoe::fs
