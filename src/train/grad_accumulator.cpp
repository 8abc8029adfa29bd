#include "train/grad_accumulator.h"

#include "dist/comm.h"
#include "model/model.h"

namespace nmoe {

// A binary counter over leaves computed in `region`: partial sums of equal
// height merge as soon as both exist; finish() folds the rest right to left,
// which is the tree_sum bracketing for any leaf count.
struct GradAccumulator::Stream {
  Backend& B;
  Tensor region;
  std::vector<Tensor> free_bufs;
  std::vector<void*> owned;
  struct Entry {
    int level;
    Tensor t;
  };
  std::vector<Entry> stack;

  Stream(Backend& b, Tensor r) : B(b), region(r) {}
  ~Stream() {
    for (void* p : owned) B.free(p);
  }
  Tensor acquire() {
    if (!free_bufs.empty()) {
      Tensor t = free_bufs.back();
      free_bufs.pop_back();
      return t;
    }
    void* p = B.alloc(region.nbytes());
    owned.push_back(p);
    return Tensor(p, region.dtype, region.shape);
  }
  bool is_region(const Tensor& t) const { return t.data == region.data; }

  void reset() {
    for (Entry& e : stack)
      if (!is_region(e.t)) free_bufs.push_back(e.t);
    stack.clear();
  }
  void push_leaf() {
    Tensor cur = region;
    int level = 0;
    while (!stack.empty() && stack.back().level == level) {
      Tensor top = stack.back().t;
      stack.pop_back();
      B.add(top, top, cur, 1.0);
      if (!is_region(cur)) free_bufs.push_back(cur);
      cur = top;
      ++level;
    }
    if (is_region(cur)) {  // the next leaf reuses the region
      Tensor keep = acquire();
      B.copy(keep, region);
      cur = keep;
    }
    stack.push_back({level, cur});
  }
  // The sum of every leaf, left in region.
  void fold() {
    if (stack.empty()) {
      B.fill(region, 0.0);
      return;
    }
    Tensor cur = stack.back().t;
    for (int i = static_cast<int>(stack.size()) - 2; i >= 0; --i) {
      B.add(stack[i].t, stack[i].t, cur, 1.0);
      cur = stack[i].t;
    }
    B.copy(region, cur);
    reset();
  }
};

GradAccumulator::GradAccumulator(Model& model, Comm* comm, bool exact)
    : model_(model), B_(model.backend()), comm_(comm), exact_(exact) {
  const ParamStore& ps = model.params();
  NMOE_CHECK(!exact || !model.expert_parallel() || model.has_expert_grad_leaves(),
             "exact accumulation under expert parallelism needs the model's per-source expert gradients");
  if (exact && model.expert_parallel()) {
    const GroupRange ex = ps.group(ParamGroup::Expert);
    NMOE_CHECK(ex.begin == 0, "the expert group must come first in the flat buffers");
    streams_.push_back(std::make_unique<Stream>(B_, ps.grads(ex.end, ps.numel())));
    n_own_ = 1;
    for (int s = 0; s < comm->world(); ++s)
      streams_.push_back(std::make_unique<Stream>(B_, model.expert_grad_leaf(s)));
  } else {
    for (const Tensor& g : ps.grad_buffers()) streams_.push_back(std::make_unique<Stream>(B_, g));
    n_own_ = streams_.size();
  }
}

GradAccumulator::~GradAccumulator() = default;

void GradAccumulator::begin_step() {
  for (auto& s : streams_) {
    s->reset();
    B_.fill(s->region, 0.0);
  }
  if (streams_.size() > n_own_) model_.zero_grads();
}

void GradAccumulator::begin_leaf() {
  if (!exact_) return;
  for (auto& s : streams_)
    if (!s->stack.empty()) B_.fill(s->region, 0.0);
}

void GradAccumulator::end_leaf() {
  if (!exact_) return;
  for (auto& s : streams_) s->push_leaf();
}

void GradAccumulator::finish() {
  if (exact_)
    for (auto& s : streams_) s->fold();
  if (streams_.size() > n_own_) {
    // This rank's experts: the sum over source ranks, in the tree order.
    const int W = comm_->world();
    std::vector<Tensor> parts;
    for (int s = 0; s < W; ++s) parts.push_back(streams_[n_own_ + s]->region);
    for (int stride = 1; stride < W; stride *= 2)
      for (int k = 0; k + stride < W; k += 2 * stride) B_.add(parts[k], parts[k], parts[k + stride], 1.0);
    const ParamStore& ps = model_.params();
    const GroupRange ex = ps.group(ParamGroup::Expert);
    B_.copy(ps.grads(ex.begin, ex.end), parts[0]);
  }
  // Every parameter outside this rank's experts is replicated: sum over ranks.
  if (comm_ && comm_->world() > 1) {
    const ParamStore& ps = model_.params();
    const GroupRange ex = ps.group(ParamGroup::Expert);
    // (Without expert parallelism there are no experts: ex.end is 0.)
    comm_->all_reduce_sum(ps.grads(ex.end, ps.numel()), "dense gradient all-reduce");
  }
}

}  // namespace nmoe
