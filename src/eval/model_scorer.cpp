#include "eval/model_scorer.h"

#include <cmath>
#include <limits>

#include "core/error.h"

namespace nmoe {

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
    std::vector<int32_t> idx(rows.begin() + c0, rows.begin() + c0 + n);
    idx.resize(chunk_, 0);  // unused rows gather row 0
    B.copy_from_host(rows_, idx.data());
    B.embedding_fwd(model_.final_hidden(), rows_, hidden_rows_);  // gathers the hidden rows
    B.matmul(hidden_rows_, false, model_.head_weight(), true, logits_, 1.0, 0.0);
    const double* row_d = nullptr;
    const float* row_f = nullptr;
    if (logits_.dtype == DType::F64) {
      host_d.resize(chunk_ * vocab_);
      B.copy_to_host(host_d.data(), logits_);
      row_d = host_d.data();
    } else {
      host_f.resize(chunk_ * vocab_);
      B.copy_to_host(host_f.data(), logits_);
      row_f = host_f.data();
    }
    for (int64_t r = 0; r < n; ++r) {
      auto logit = [&](int64_t v) {
        return row_d ? row_d[r * vocab_ + v] : static_cast<double>(row_f[r * vocab_ + v]);
      };
      double mx = -std::numeric_limits<double>::infinity();
      int32_t am = 0;
      for (int64_t v = 0; v < vocab_; ++v) {
        const double x = logit(v);
        if (x > mx) {
          mx = x;
          am = static_cast<int32_t>(v);
        }
      }
      double sum = 0;
      for (int64_t v = 0; v < vocab_; ++v) sum += std::exp(logit(v) - mx);
      nll[c0 + r] = mx + std::log(sum) - logit(targets[c0 + r]);
      argmax[c0 + r] = am;
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
