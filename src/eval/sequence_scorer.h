// What the CORE eval needs from a model: for each token sequence, the mean
// negative log-likelihood of its scored span and whether greedy decoding
// reproduces the span.
#pragma once

#include <vector>

#include "eval/core_prompt.h"

namespace nmoe {

struct SequenceScore {
  double mean_nll = 0;
  bool greedy_match = false;
};

class SequenceScorer {
 public:
  virtual ~SequenceScorer() = default;
  virtual int64_t max_len() const = 0;     // longest sequence
  virtual int64_t batch_size() const = 0;  // sequences per forward pass
  // Scores up to batch_size() sequences (each at most max_len() tokens).
  virtual std::vector<SequenceScore> score(const std::vector<const ScoredSequence*>& batch) = 0;
};

}  // namespace nmoe
