#include "core/arena.h"

#include <cstdio>

#include "ops/backend.h"

namespace nmoe {

namespace {
constexpr size_t kAlign = 256;
size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }
}  // namespace

Arena::~Arena() {
  if (base_ && backend_) backend_->free(base_);
}

void Arena::reserve(Tensor* slot, DType dtype, Shape shape) {
  NMOE_CHECK(!base_, "arena '", name_, "': reserve after allocate");
  *slot = Tensor(nullptr, dtype, shape);
  slots_.push_back({slot, bytes_});
  bytes_ = align_up(bytes_ + slot->nbytes());
}

void Arena::allocate(Backend& backend) {
  NMOE_CHECK(!base_, "arena '", name_, "' allocated twice");
  backend_ = &backend;
  base_ = backend.alloc(bytes_ == 0 ? kAlign : bytes_);
  for (const Slot& s : slots_) s.tensor->data = static_cast<char*>(base_) + s.offset;
}

std::string format_bytes(size_t bytes) {
  char buf[64];
  double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024 * 1024));
  else if (b >= 1024.0 * 1024) std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1024.0 * 1024));
  else if (b >= 1024.0) std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  else std::snprintf(buf, sizeof buf, "%zu B", bytes);
  return buf;
}

}  // namespace nmoe
