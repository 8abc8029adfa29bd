#include "dist/shm.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "core/error.h"

namespace nmoe {

namespace {
void* map_fd(int fd, size_t bytes, const std::string& name) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  ::close(fd);
  NMOE_CHECK(p != MAP_FAILED, "cannot map shared memory '", name, "' (", bytes, " bytes): ", std::strerror(err));
  return p;
}
}  // namespace

ShmRegion ShmRegion::create(const std::string& name, size_t bytes) {
  shm_unlink(name.c_str());  // a leftover of a killed run with the same job id
  int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  NMOE_CHECK(fd >= 0, "cannot create shared memory '", name, "': ", std::strerror(errno));
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int err = errno;
    ::close(fd);
    shm_unlink(name.c_str());
    fail("cannot size shared memory '", name, "' to ", bytes, " bytes: ", std::strerror(err),
         " (is /dev/shm large enough? a container may need --shm-size)");
  }
  ShmRegion r;
  r.name_ = name;
  r.size_ = bytes;
  r.owner_ = true;
  r.linked_ = true;
  r.data_ = map_fd(fd, bytes, name);
  return r;
}

ShmRegion ShmRegion::open(const std::string& name, size_t bytes) {
  int fd = shm_open(name.c_str(), O_RDWR, 0600);
  NMOE_CHECK(fd >= 0, "cannot open the shared memory '", name, "' of a peer rank: ", std::strerror(errno));
  ShmRegion r;
  r.name_ = name;
  r.size_ = bytes;
  r.data_ = map_fd(fd, bytes, name);
  return r;
}

ShmRegion::ShmRegion(ShmRegion&& o) noexcept { *this = std::move(o); }

ShmRegion& ShmRegion::operator=(ShmRegion&& o) noexcept {
  if (this != &o) {
    this->~ShmRegion();
    name_ = std::move(o.name_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    owner_ = std::exchange(o.owner_, false);
    linked_ = std::exchange(o.linked_, false);
  }
  return *this;
}

void ShmRegion::unlink() {
  if (owner_ && linked_) shm_unlink(name_.c_str());
  linked_ = false;
}

ShmRegion::~ShmRegion() {
  if (data_) munmap(data_, size_);
  data_ = nullptr;
  unlink();
}

}  // namespace nmoe
