#include "train/router_stats.h"

#include <algorithm>
#include <cmath>

namespace nmoe {

RouterStats router_stats(const std::vector<int32_t>& counts, const std::vector<double>& bias) {
  RouterStats s;
  const size_t E = counts.size();
  double total = 0;
  for (int32_t c : counts) total += c;
  s.load.resize(E);
  for (size_t e = 0; e < E; ++e) {
    s.load[e] = total > 0 ? counts[e] / total : 0.0;
    s.dead += counts[e] == 0;
  }
  if (E > 0) {
    double mean = 1.0 / static_cast<double>(E), var = 0;
    for (double f : s.load) var += (f - mean) * (f - mean);
    var /= static_cast<double>(E);
    s.cv = total > 0 ? 100.0 * std::sqrt(var) / mean : 0.0;
    s.max_load = 100.0 * *std::max_element(s.load.begin(), s.load.end());
  }
  if (!bias.empty()) {
    s.bias_min = *std::min_element(bias.begin(), bias.end());
    s.bias_max = *std::max_element(bias.begin(), bias.end());
  }
  return s;
}

}  // namespace nmoe
