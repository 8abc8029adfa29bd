// Memory plan: every buffer of a run (parameters, gradients, optimizer state,
// activations, workspace) is reserved up front, then allocated in one block
// per arena. No op allocates memory during training.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace nmoe {

class Backend;

class Arena {
 public:
  explicit Arena(std::string name) : name_(std::move(name)) {}
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena();

  // Reserves a tensor; *slot gets its pointer when allocate() runs. The slot
  // must stay at the same address until then.
  void reserve(Tensor* slot, DType dtype, Shape shape);
  // Allocates one block for everything reserved and points every slot into it.
  void allocate(Backend& backend);
  bool allocated() const { return base_ != nullptr; }

  size_t bytes() const { return bytes_; }
  const std::string& name() const { return name_; }
  void* base() const { return base_; }

 private:
  struct Slot {
    Tensor* tensor;
    size_t offset;
  };
  std::string name_;
  std::vector<Slot> slots_;
  size_t bytes_ = 0;
  void* base_ = nullptr;
  Backend* backend_ = nullptr;
};

std::string format_bytes(size_t bytes);

}  // namespace nmoe
