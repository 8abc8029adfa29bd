// Python's random.Random, bit for bit, for the parts the CORE evaluation
// uses: example shuffling and few-shot sampling must pick the same items as
// the Python reference does with random.Random(seed). CPython 3.8-3.13 agree
// on every function here.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "core/error.h"

namespace nmoe {

// MT19937 seeded like random.seed(int): init_by_array over the 32-bit words of
// the seed, least significant first (seed 0 -> key [0]).
class PyRandom {
 public:
  explicit PyRandom(uint64_t seed);

  uint32_t genrand_uint32();
  // random.getrandbits(k), 1 <= k <= 64.
  uint64_t getrandbits(int k);
  // Random._randbelow(n): uniform in [0, n), n >= 1.
  uint64_t randbelow(uint64_t n);

  // random.shuffle(x).
  template <class T>
  void shuffle(std::vector<T>& x) {
    for (size_t i = x.size(); i-- > 1;) std::swap(x[i], x[randbelow(i + 1)]);
  }

  // random.sample(range(n), k): indices in selection order.
  std::vector<size_t> sample_indices(size_t n, size_t k);

  // random.sample(population, k).
  template <class T>
  std::vector<T> sample(const std::vector<T>& population, size_t k) {
    std::vector<T> result;
    result.reserve(k);
    for (size_t i : sample_indices(population.size(), k)) result.push_back(population[i]);
    return result;
  }

 private:
  static constexpr int kN = 624;
  std::array<uint32_t, kN> mt_{};
  int mti_ = kN;
};

}  // namespace nmoe
