// nmoe::PyRandom against CPython's random.Random: every value in
// tests/reference/fixtures/py_random.json (made by
// tests/reference/make_py_random_fixture.py) must be reproduced exactly.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/py_random.h"
#include "test_util.h"

namespace nmoe {
namespace {

using nlohmann::json;

const json& fixture() {
  static const json doc = [] {
    const std::string path = test::source_dir() + "/tests/reference/fixtures/py_random.json";
    std::ifstream f(path);
    NMOE_CHECK(f.good(), "cannot read ", path, " (run tests/reference/make_py_random_fixture.py)");
    return json::parse(f);
  }();
  return doc;
}

std::vector<size_t> iota(size_t n) {
  std::vector<size_t> v(n);
  for (size_t i = 0; i < n; i++) v[i] = i;
  return v;
}

TEST(PyRandom, FixtureCoversSeeds) { EXPECT_GE(fixture().at("cases").size(), 10u); }

TEST(PyRandom, Words) {
  for (const json& c : fixture().at("cases")) {
    PyRandom r(c.at("seed").get<uint64_t>());
    for (const json& w : c.at("words")) EXPECT_EQ(r.genrand_uint32(), w.get<uint32_t>()) << "seed " << c.at("seed");
  }
}

TEST(PyRandom, Getrandbits) {
  for (const json& c : fixture().at("cases")) {
    PyRandom r(c.at("seed").get<uint64_t>());
    for (const json& g : c.at("getrandbits")) {
      const int k = g.at("k").get<int>();
      for (const json& v : g.at("values"))
        EXPECT_EQ(r.getrandbits(k), v.get<uint64_t>()) << "seed " << c.at("seed") << " k " << k;
    }
  }
}

TEST(PyRandom, Randbelow) {
  for (const json& c : fixture().at("cases")) {
    PyRandom r(c.at("seed").get<uint64_t>());
    for (const json& g : c.at("randbelow")) {
      const uint64_t n = g.at("n").get<uint64_t>();
      for (const json& v : g.at("values"))
        EXPECT_EQ(r.randbelow(n), v.get<uint64_t>()) << "seed " << c.at("seed") << " n " << n;
    }
  }
}

TEST(PyRandom, Shuffle) {
  for (const json& c : fixture().at("cases")) {
    for (const json& s : c.at("shuffle")) {
      std::vector<size_t> x = iota(s.at("n").get<size_t>());
      PyRandom(c.at("seed").get<uint64_t>()).shuffle(x);
      EXPECT_EQ(x, s.at("result").get<std::vector<size_t>>()) << "seed " << c.at("seed") << " n " << s.at("n");
    }
  }
}

TEST(PyRandom, Sample) {
  for (const json& c : fixture().at("cases")) {
    for (const json& s : c.at("sample")) {
      const std::vector<size_t> population = iota(s.at("n").get<size_t>());
      const std::vector<size_t> got = PyRandom(c.at("seed").get<uint64_t>()).sample(population, s.at("k").get<size_t>());
      EXPECT_EQ(got, s.at("result").get<std::vector<size_t>>())
          << "seed " << c.at("seed") << " n " << s.at("n") << " k " << s.at("k") << " (" << s.at("branch") << " branch)";
    }
  }
}

TEST(PyRandom, SampleOfStringsPicksTheSameItems) {
  const json& c = fixture().at("cases").at(0);
  for (const json& s : c.at("sample")) {
    std::vector<std::string> population;
    for (size_t i : iota(s.at("n").get<size_t>())) population.push_back("item" + std::to_string(i));
    std::vector<std::string> want;
    for (size_t i : s.at("result").get<std::vector<size_t>>()) want.push_back("item" + std::to_string(i));
    EXPECT_EQ(PyRandom(c.at("seed").get<uint64_t>()).sample(population, s.at("k").get<size_t>()), want);
  }
}

TEST(PyRandom, SampleLargerThanPopulationThrows) {
  PyRandom r(42);
  const std::vector<int> population{1, 2, 3};
  EXPECT_THROW(r.sample(population, 4), Error);
  test::expect_parts(test::error_of([&] { r.sample(population, 4); }), {"sample", "4", "3"});
  EXPECT_THROW(r.sample(std::vector<int>{}, 1), Error);
  EXPECT_TRUE(r.sample(std::vector<int>{}, 0).empty());
}

}  // namespace
}  // namespace nmoe
