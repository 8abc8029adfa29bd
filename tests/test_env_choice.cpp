// Settings chosen among named values: the default when unset or empty, the
// value when it is one of the choices, and an error naming the variable and
// every choice otherwise.
#include <gtest/gtest.h>

#include <cstdlib>

#include "core/env_choice.h"
#include "test_util.h"

namespace nmoe {
namespace {

TEST(EnvChoice, DefaultIsTheFirstChoice) {
  EXPECT_EQ(checked_choice("NMOE_X", nullptr, {"auto", "a", "b"}), "auto");
  EXPECT_EQ(checked_choice("NMOE_X", "", {"auto", "a", "b"}), "auto");
  EXPECT_EQ(checked_choice("NMOE_X", "b", {"auto", "a", "b"}), "b");
}

TEST(EnvChoice, AnythingElseNamesTheVariableAndTheChoices) {
  test::expect_parts(test::error_of([] { checked_choice("NMOE_X", "c", {"auto", "a", "b"}); }),
                     {"NMOE_X must be auto, a or b, got 'c'"});
  test::expect_parts(test::error_of([] { checked_choice("NMOE_Y", "B", {"a", "b"}); }),
                     {"NMOE_Y must be a or b, got 'B'"});
}

TEST(EnvChoice, ReadsTheEnvironment) {
  ::setenv("NMOE_TEST_ENV_CHOICE", "overlap", 1);
  EXPECT_EQ(env_choice("NMOE_TEST_ENV_CHOICE", {"serial", "overlap"}), "overlap");
  ::unsetenv("NMOE_TEST_ENV_CHOICE");
  EXPECT_EQ(env_choice("NMOE_TEST_ENV_CHOICE", {"serial", "overlap"}), "serial");
}

}  // namespace
}  // namespace nmoe
