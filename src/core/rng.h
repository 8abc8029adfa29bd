// Deterministic random numbers. Each parameter tensor (and each expert of an
// expert tensor) draws from its own stream keyed by (seed, name, index), so a
// model's initial weights do not depend on creation order or on how many
// ranks hold its experts.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace nmoe {

uint64_t splitmix64(uint64_t& state);
uint64_t hash_name(std::string_view s);  // FNV-1a 64

// xoshiro256** generator.
class Rng {
 public:
  explicit Rng(uint64_t seed = 0);
  Rng(uint64_t seed, std::string_view stream, uint64_t index = 0);
  uint64_t next_u64();
  double uniform();  // [0, 1), 53 bits
  double normal();   // N(0, 1), Box-Muller
  // N(0, std) truncated to [lo, hi] by redrawing.
  double trunc_normal(double std, double lo, double hi);
  std::array<uint64_t, 4> state() const { return s_; }
  void set_state(const std::array<uint64_t, 4>& s) { s_ = s; has_spare_ = false; }

 private:
  std::array<uint64_t, 4> s_{};
  bool has_spare_ = false;
  double spare_ = 0;
};

}  // namespace nmoe
