// CUDA backend (Hopper): every op of ops/backend.h on one GPU, on one stream
// owned by the backend. Plain C++ header: it includes no CUDA header, so code
// built without nvcc can include it (the symbols exist only in builds with
// NMOE_HAVE_CUDA).
#pragma once

#include <memory>

#include "ops/backend.h"

namespace nmoe {

// A backend on CUDA device `device` (throws nmoe::Error if it cannot be set up).
std::unique_ptr<Backend> make_cuda_backend(int device = 0);

// True when the CUDA runtime finds at least one usable device.
bool cuda_device_available();

}  // namespace nmoe
