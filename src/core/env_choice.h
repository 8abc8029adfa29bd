// Settings chosen by environment variable among a few named values
// (NMOE_GROUPED_GEMM=auto|tma|..., NMOE_DENSE_COMM=auto|nccl|peer, ...).
#pragma once

#include <initializer_list>
#include <string>

namespace nmoe {

// value, which must be one of choices; null or "" gives choices[0] (the
// default). Otherwise an Error: "NAME must be a, b or c, got 'value'".
std::string checked_choice(const char* name, const char* value, std::initializer_list<const char*> choices);

// The same for the environment variable `name`.
std::string env_choice(const char* name, std::initializer_list<const char*> choices);

}  // namespace nmoe
