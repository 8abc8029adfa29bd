// Errors: every failure a user can cause is an nmoe::Error with a message that
// says what is wrong and what to change. Internal invariants use NMOE_ASSERT.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace nmoe {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(detail::concat(std::forward<Args>(args)...));
}

}  // namespace nmoe

#define NMOE_CHECK(cond, ...)                 \
  do {                                        \
    if (!(cond)) ::nmoe::fail(__VA_ARGS__);   \
  } while (0)

#define NMOE_ASSERT(cond)                                                          \
  do {                                                                             \
    if (!(cond))                                                                   \
      ::nmoe::fail("internal error: ", #cond, " failed at ", __FILE__, ":", __LINE__); \
  } while (0)
