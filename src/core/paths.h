// Where nmoe finds the files it ships (tokenizers, eval data).
#pragma once

#include <string>

namespace nmoe {

// Path of a shipped asset, e.g. asset_path("tokenizers/gpt2/vocab.bpe"):
// $NMOE_HOME/assets/<rel> if NMOE_HOME is set, else <source tree>/assets/<rel>.
// Throws Error naming both places if the file is missing.
std::string asset_path(const std::string& rel);

// Path of a file shipped in the nmoe tree, e.g. shipped_path("configs/speedrun/tiny.toml"):
// $NMOE_HOME/<rel> if NMOE_HOME is set and it exists there, else <source tree>/<rel>.
// Throws Error naming the places looked at.
std::string shipped_path(const std::string& rel);

}  // namespace nmoe
