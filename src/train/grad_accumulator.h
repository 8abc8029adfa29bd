// Sums the gradients of a step's micro-batches. In exact mode every
// micro-batch's gradient is computed from zero (a leaf) and the leaves are
// summed with the bracketing of dist/tree_sum.h, first within a rank (as they
// arrive: a binary counter holding at most log2(leaves)+1 partial sums), then
// across ranks. With power-of-two leaf and rank counts the result is the same
// tree over all of the global batch's micro-batches whatever the rank count,
// so one, two and four ranks train bit-identically. Otherwise (the GPU's
// default) gradients accumulate in place, micro-batch after micro-batch.
//
// With expert parallelism the gradients of this rank's experts arrive per
// source rank (Model::expert_grad_leaf); each source is a stream of leaves of
// its own, and the sources are summed in rank order at the end.
#pragma once

#include <memory>
#include <vector>

#include "core/tensor.h"

namespace nmoe {

class Backend;
class Comm;
class Model;

class GradAccumulator {
 public:
  GradAccumulator(Model& model, Comm* comm, bool exact);
  ~GradAccumulator();
  void begin_step();
  void begin_leaf();
  void end_leaf();
  // Leaves the step's gradient in the model's flat gradients, dense
  // gradients summed over ranks.
  void finish();

 private:
  struct Stream;
  Model& model_;
  Backend& B_;
  Comm* comm_;
  bool exact_;
  // This rank's own gradients (one stream per gradient buffer, or the
  // replicated ones only under expert parallelism); then one per source rank.
  std::vector<std::unique_ptr<Stream>> streams_;
  size_t n_own_ = 0;
};

}  // namespace nmoe
