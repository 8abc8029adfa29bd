#include "dist/comm.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "dist/rendezvous.h"

namespace nmoe {

Comm::Comm(Rendezvous& rdv) : rdv_(rdv), rank_(rdv.rank()), world_(rdv.world()) {}

std::vector<double> Comm::all_gather(const std::vector<double>& mine) {
  std::string bytes(reinterpret_cast<const char*>(mine.data()), mine.size() * sizeof(double));
  std::vector<std::string> all = rdv_.all_gather(bytes);
  std::vector<double> out;
  for (const std::string& b : all) {
    NMOE_CHECK(b.size() % sizeof(double) == 0, "all_gather: malformed payload");
    const size_t n = b.size() / sizeof(double);
    const size_t at = out.size();
    out.resize(at + n);
    std::memcpy(out.data() + at, b.data(), b.size());
  }
  return out;
}

std::vector<std::string> Comm::all_gather_bytes(const std::string& mine) { return rdv_.all_gather(mine); }

int64_t Comm::check_gather_bounds(const Tensor& t, const std::vector<int64_t>& bounds,
                                  const std::string& what) const {
  const int W = world_;
  NMOE_CHECK(static_cast<int>(bounds.size()) == W + 1, what, ": all_gather needs ", W + 1, " bounds, got ",
             bounds.size());
  NMOE_CHECK(bounds[0] >= 0 && bounds[W] <= t.numel(), what, ": all_gather bounds [", bounds[0], ", ", bounds[W],
             ") exceed the tensor's ", t.numel(), " elements");
  int64_t longest = 0;
  for (int r = 0; r < W; ++r) {
    NMOE_CHECK(bounds[r] <= bounds[r + 1], what, ": all_gather bounds decrease at rank ", r);
    longest = std::max(longest, bounds[r + 1] - bounds[r]);
  }
  return longest;
}

int64_t Comm::sum(int64_t v) { return rdv_.all_reduce_sum(v); }

bool Comm::any(bool v) { return rdv_.all_reduce_max(v ? 1 : 0) != 0; }

void Comm::barrier() { rdv_.barrier(); }

}  // namespace nmoe
