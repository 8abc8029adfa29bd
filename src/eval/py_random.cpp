#include "eval/py_random.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <unordered_set>

namespace nmoe {

namespace {

constexpr int kM = 397;
constexpr uint32_t kMatrixA = 0x9908b0dfU;
constexpr uint32_t kUpperMask = 0x80000000U;
constexpr uint32_t kLowerMask = 0x7fffffffU;

// random.sample's threshold between its two branches, computed with doubles
// as CPython does (math.log(x, 4) is log(x) / log(4)).
size_t sample_setsize(size_t k) {
  size_t setsize = 21;
  if (k > 5) {
    const double e = std::ceil(std::log(static_cast<double>(k * 3)) / std::log(4.0));
    if (e >= 32) return std::numeric_limits<size_t>::max();  // 4**e beyond any vector size
    setsize += size_t{1} << (2 * static_cast<int>(e));
  }
  return setsize;
}

}  // namespace

PyRandom::PyRandom(uint64_t seed) {
  std::vector<uint32_t> key{static_cast<uint32_t>(seed)};
  if (seed >> 32) key.push_back(static_cast<uint32_t>(seed >> 32));

  // init_genrand(19650218) followed by init_by_array(key), as in mt19937ar.c.
  mt_[0] = 19650218U;
  for (int i = 1; i < kN; i++) mt_[i] = 1812433253U * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + static_cast<uint32_t>(i);
  int i = 1;
  size_t j = 0;
  for (int n = std::max<int>(kN, static_cast<int>(key.size())); n > 0; n--) {
    mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525U)) + key[j] + static_cast<uint32_t>(j);
    i++;
    j++;
    if (i >= kN) {
      mt_[0] = mt_[kN - 1];
      i = 1;
    }
    if (j >= key.size()) j = 0;
  }
  for (int n = kN - 1; n > 0; n--) {
    mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941U)) - static_cast<uint32_t>(i);
    i++;
    if (i >= kN) {
      mt_[0] = mt_[kN - 1];
      i = 1;
    }
  }
  mt_[0] = 0x80000000U;  // MSB is 1, assuring a non-zero initial array
  mti_ = kN;
}

uint32_t PyRandom::genrand_uint32() {
  if (mti_ >= kN) {
    auto twist = [&](int a, int b, int c) {
      const uint32_t y = (mt_[a] & kUpperMask) | (mt_[b] & kLowerMask);
      mt_[a] = mt_[c] ^ (y >> 1) ^ ((y & 1U) ? kMatrixA : 0U);
    };
    int kk = 0;
    for (; kk < kN - kM; kk++) twist(kk, kk + 1, kk + kM);
    for (; kk < kN - 1; kk++) twist(kk, kk + 1, kk + (kM - kN));
    twist(kN - 1, 0, kM - 1);
    mti_ = 0;
  }
  uint32_t y = mt_[mti_++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680U;
  y ^= (y << 15) & 0xefc60000U;
  y ^= y >> 18;
  return y;
}

uint64_t PyRandom::getrandbits(int k) {
  NMOE_CHECK(k >= 1 && k <= 64, "getrandbits: k must be in [1, 64], got ", k);
  // Short requests keep the top bits of one word; longer ones fill 32-bit
  // words from the least significant up, the last one shifted down.
  if (k <= 32) return genrand_uint32() >> (32 - k);
  const uint64_t low = genrand_uint32();
  const uint64_t high = genrand_uint32() >> (64 - k);
  return low | (high << 32);
}

uint64_t PyRandom::randbelow(uint64_t n) {
  NMOE_CHECK(n >= 1, "randbelow: n must be at least 1");
  // k is bit_length(n), not bit_length(n - 1): a power of two n wastes half of
  // its draws, and n = 1 still consumes words until a 0 comes up.
  const int k = static_cast<int>(std::bit_width(n));
  uint64_t r = getrandbits(k);
  while (r >= n) r = getrandbits(k);
  return r;
}

std::vector<size_t> PyRandom::sample_indices(size_t n, size_t k) {
  NMOE_CHECK(k <= n, "sample: k = ", k, " is larger than the population (", n, ")");
  std::vector<size_t> result(k);
  if (n <= sample_setsize(k)) {
    // Partial Fisher-Yates on a pool; the last unchosen item fills each vacancy.
    std::vector<size_t> pool(n);
    for (size_t i = 0; i < n; i++) pool[i] = i;
    for (size_t i = 0; i < k; i++) {
      const size_t j = randbelow(n - i);
      result[i] = pool[j];
      pool[j] = pool[n - i - 1];
    }
  } else {
    std::unordered_set<size_t> selected;
    for (size_t i = 0; i < k; i++) {
      size_t j = randbelow(n);
      while (selected.count(j)) j = randbelow(n);
      selected.insert(j);
      result[i] = j;
    }
  }
  return result;
}

}  // namespace nmoe
