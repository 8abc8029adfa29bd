#include "eval/model_scorer.h"

#include <cmath>
#include <limits>

#include "core/error.h"

namespace nmoe {

namespace {

// Per row of logits [n, vocab]: -log softmax at the target (in double) and the
// first index of the largest logit.
template <class T>
void log_softmax_rows(const T* logits, int64_t n, int64_t vocab, const int32_t* targets, double* nll,
                      int32_t* argmax) {
  for (int64_t r = 0; r < n; ++r) {
    const T* row = logits + r * vocab;
    double mx = -std::numeric_limits<double>::infinity();
    int32_t am = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      if (static_cast<double>(row[v]) > mx) {
        mx = static_cast<double>(row[v]);
        am = static_cast<int32_t>(v);
      }
    }
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
    nll[r] = mx + std::log(sum) - static_cast<double>(row[targets[r]]);
    argmax[r] = am;
  }
}

}  // namespace

ModelScorer::ModelScorer(Model& model, int32_t pad_token, int64_t chunk_rows)
    : model_(model), pad_(pad_token), chunk_(chunk_rows) {
  NMOE_CHECK(!model.expert_parallel(), "the CORE eval runs in one process (the model must not be split over ranks)");
  seq_len_ = model.options().seq_len;
  batch_ = model.options().micro_batch;
  const Tensor& head = model.head_weight();
  vocab_ = head.size(0);
  const int64_t dim = head.size(1);
  const DType act = head.dtype;
  // BF16 activations give FP32 logits (the GEMM accumulates in FP32); FP32/FP64 keep their type.
  const DType logit_dtype = act == DType::F64 ? DType::F64 : DType::F32;
  arena_.reserve(&rows_, DType::I32, Shape{chunk_});
  arena_.reserve(&hidden_rows_, act, Shape{chunk_, dim});
  arena_.reserve(&logits_, logit_dtype, Shape{chunk_, vocab_});
  arena_.allocate(model.backend());
}

std::vector<SequenceScore> ModelScorer::score(const std::vector<const ScoredSequence*>& batch) {
  NMOE_CHECK(static_cast<int64_t>(batch.size()) <= batch_, "score: ", batch.size(), " sequences exceed the batch of ",
             batch_);
  std::vector<int32_t> tokens(batch_ * seq_len_, pad_);
  // Every scored position: flat row of the hidden state that predicts it, and its target token.
  std::vector<int32_t> rows, targets;
  std::vector<size_t> owner;
  for (size_t b = 0; b < batch.size(); ++b) {
    const ScoredSequence& s = *batch[b];
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    NMOE_CHECK(n <= seq_len_ && s.start >= 1 && s.end <= n && s.start < s.end, "score: bad sequence (", n,
               " tokens, span [", s.start, ", ", s.end, "))");
    std::copy(s.tokens.begin(), s.tokens.end(), tokens.begin() + static_cast<int64_t>(b) * seq_len_);
    for (int64_t t = s.start; t < s.end; ++t) {
      rows.push_back(static_cast<int32_t>(static_cast<int64_t>(b) * seq_len_ + t - 1));
      targets.push_back(s.tokens[t]);
      owner.push_back(b);
    }
  }
  model_.forward_hidden(tokens.data());
  Backend& B = model_.backend();
  std::vector<double> nll(rows.size());
  std::vector<int32_t> argmax(rows.size());
  std::vector<float> host_f;
  std::vector<double> host_d;
  for (size_t c0 = 0; c0 < rows.size(); c0 += static_cast<size_t>(chunk_)) {
    const int64_t n = std::min<int64_t>(chunk_, static_cast<int64_t>(rows.size() - c0));
    // Only the n rows in use: gather their hidden states, then their logits.
    const Tensor idx = rows_.slice(0, n), hidden = hidden_rows_.slice(0, n), logits = logits_.slice(0, n);
    B.copy_from_host(idx, rows.data() + c0);
    B.embedding_fwd(model_.final_hidden(), idx, hidden);
    B.matmul(hidden, false, model_.head_weight(), true, logits, 1.0, 0.0);
    if (logits.dtype == DType::F64) {
      host_d.resize(n * vocab_);
      B.copy_to_host(host_d.data(), logits);
      log_softmax_rows(host_d.data(), n, vocab_, targets.data() + c0, nll.data() + c0, argmax.data() + c0);
    } else {
      host_f.resize(n * vocab_);
      B.copy_to_host(host_f.data(), logits);
      log_softmax_rows(host_f.data(), n, vocab_, targets.data() + c0, nll.data() + c0, argmax.data() + c0);
    }
  }
  std::vector<SequenceScore> out(batch.size());
  std::vector<int64_t> count(batch.size(), 0);
  for (auto& o : out) o.greedy_match = true;
  for (size_t i = 0; i < rows.size(); ++i) {
    SequenceScore& o = out[owner[i]];
    o.mean_nll += nll[i];
    o.greedy_match = o.greedy_match && argmax[i] == targets[i];
    ++count[owner[i]];
  }
  for (size_t b = 0; b < out.size(); ++b) out[b].mean_nll /= static_cast<double>(count[b]);
  return out;
}

}  // namespace nmoe
