#include "core/env_choice.h"

#include <cstdlib>

#include "core/error.h"

namespace nmoe {

std::string checked_choice(const char* name, const char* value, std::initializer_list<const char*> choices) {
  NMOE_ASSERT(choices.size() > 0);
  if (!value || !*value) return *choices.begin();
  std::string list;
  size_t i = 0;
  for (const char* c : choices) {
    if (value == std::string(c)) return value;
    list += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + std::string(c);
    ++i;
  }
  fail(name, " must be ", list, ", got '", value, "'");
}

std::string env_choice(const char* name, std::initializer_list<const char*> choices) {
  return checked_choice(name, std::getenv(name), choices);
}

}  // namespace nmoe
