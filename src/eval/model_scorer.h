// SequenceScorer over a Model: sequences are right-padded into the model's
// [micro_batch, seq_len] batch, run forward to the final norm, and only the
// rows of the scored spans go through the LM head, in chunks, so at most
// [chunk, vocab] logits exist at a time. Log-softmax and argmax are taken on
// the host in double precision.
#pragma once

#include "core/arena.h"
#include "eval/sequence_scorer.h"
#include "model/model.h"

namespace nmoe {

class ModelScorer : public SequenceScorer {
 public:
  ModelScorer(Model& model, int32_t pad_token, int64_t chunk_rows = 256);
  int64_t max_len() const override { return seq_len_; }
  int64_t batch_size() const override { return batch_; }
  std::vector<SequenceScore> score(const std::vector<const ScoredSequence*>& batch) override;

 private:
  Model& model_;
  int32_t pad_;
  int64_t seq_len_, batch_, chunk_, vocab_;
  Arena arena_{"eval scoring"};
  Tensor rows_, hidden_rows_, logits_;
};

}  // namespace nmoe
