// Load-balance statistics of one MoE layer from its expert counts and bias.
#pragma once

#include <cstdint>
#include <vector>

namespace nmoe {

struct RouterStats {
  std::vector<double> load;  // fraction of routed (token, slot) pairs per expert
  double cv = 0;             // 100 * std / mean of the loads (population std)
  double max_load = 0;       // 100 * max fraction
  int64_t dead = 0;          // experts that received nothing
  double bias_min = 0, bias_max = 0;
};

RouterStats router_stats(const std::vector<int32_t>& counts, const std::vector<double>& bias);

}  // namespace nmoe
