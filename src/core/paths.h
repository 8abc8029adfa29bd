// Where nmoe finds the files it ships (tokenizers, eval data).
#pragma once

#include <string>

namespace nmoe {

// Path of a shipped asset, e.g. asset_path("tokenizers/gpt2/vocab.bpe"):
// $NMOE_HOME/assets/<rel> if NMOE_HOME is set, else <source tree>/assets/<rel>.
// Throws Error naming both places if the file is missing.
std::string asset_path(const std::string& rel);

}  // namespace nmoe
