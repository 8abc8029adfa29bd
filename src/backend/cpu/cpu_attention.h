// The packed qkv layout [N, 3, H, Dh] of the attention ops (rope, attention fwd/bwd).
#pragma once

#include <cstdint>

#include "backend/cpu/cpu_common.h"

namespace nmoe::cpu {

using ops::QkvLayout;  // the layout and its checks: ops/op_checks.h
using ops::qkv_layout;

}  // namespace nmoe::cpu
