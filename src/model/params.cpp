#include "model/params.h"

#include <algorithm>

#include "ops/backend.h"

namespace nmoe {

namespace {
// Each tensor starts on a 64-element boundary (256 bytes in fp32) so every
// view is aligned for vector loads; padding elements stay zero forever.
constexpr int64_t kParamAlign = 64;
int64_t align_up(int64_t x) { return (x + kParamAlign - 1) / kParamAlign * kParamAlign; }
}  // namespace

const char* param_group_name(ParamGroup g) {
  switch (g) {
    case ParamGroup::Expert: return "expert";
    case ParamGroup::Router: return "router";
    case ParamGroup::DenseDecay: return "dense_decay";
    case ParamGroup::DenseNoDecay: return "dense_no_decay";
  }
  return "?";
}

Param& ParamStore::add(ParamSpec spec) {
  NMOE_CHECK(!flat_w_.defined(), "parameter '", spec.name, "' added after allocation");
  for (const Param& q : params_)
    NMOE_CHECK(q.spec.name != spec.name, "duplicate parameter name '", spec.name, "'");
  Param p;
  p.spec = std::move(spec);
  params_.push_back(std::move(p));
  return params_.back();
}

Param* ParamStore::find(const std::string& name) {
  for (Param& p : params_)
    if (p.spec.name == name) return &p;
  return nullptr;
}

int64_t ParamStore::count() const {
  int64_t n = 0;
  for (const Param& p : params_) n += p.spec.shape.numel();
  return n;
}

int64_t ParamStore::count(ParamGroup g) const {
  int64_t n = 0;
  for (const Param& p : params_)
    if (p.spec.group == g) n += p.spec.shape.numel();
  return n;
}

Tensor ParamStore::group_slice(const Tensor& flat, ParamGroup g) const {
  const GroupRange& r = group(g);
  return flat.slice(r.begin, r.end);
}

void ParamStore::set_moment_shard(int rank, int world) {
  NMOE_CHECK(!flat_w_.defined(), "moment shard set after allocation");
  NMOE_CHECK(world >= 1 && rank >= 0 && rank < world, "bad moment shard ", rank, " of ", world);
  shard_rank_ = rank;
  shard_world_ = world;
}

GroupRange ParamStore::owned(ParamGroup g) const {
  const GroupRange& r = group(g);
  if (g == ParamGroup::Expert) return r;
  const GroupRange s = shard();
  const int64_t b = std::max(r.begin, s.begin), e = std::min(r.end, s.end);
  return b < e ? GroupRange{b, e} : GroupRange{b, b};
}

bool ParamStore::holds_moments(int64_t begin, int64_t end) const {
  if (begin >= end) return true;
  const int64_t ex_end = group(ParamGroup::Expert).end;
  const GroupRange s = shard();
  return (begin >= 0 && end <= ex_end) || (begin >= s.begin && end <= s.end);
}

Tensor ParamStore::moments(const Tensor& flat_mv, int64_t begin, int64_t end) const {
  NMOE_CHECK(flat_mv.defined(), "moments read before allocation");
  NMOE_CHECK(begin <= end && holds_moments(begin, end), "moments of elements [", begin, ", ", end,
             ") are not held by this rank (experts [0, ", group(ParamGroup::Expert).end, "), dense shard [",
             shard().begin, ", ", shard().end, "))");
  if (begin == end) return flat_mv.slice(0, 0);
  const int64_t ex_end = group(ParamGroup::Expert).end;
  const int64_t at = begin < ex_end ? begin : ex_end + (begin - shard().begin);
  return flat_mv.slice(at, at + (end - begin));
}

void ParamStore::sync_compute(Backend& backend) {
  if (flat_c_.defined()) backend.convert(flat_c_, flat_w_);
}

const Tensor& ParamStore::flat_grads() const {
  NMOE_CHECK(!split_grads(), "the expert gradients (", dtype_name(flat_ge_.dtype),
             ") and the other gradients (", dtype_name(flat_g_.dtype),
             ") are in separate buffers: use grad_buffers() or grads(begin, end)");
  return flat_g_;
}

Tensor ParamStore::grads(int64_t begin, int64_t end) const {
  NMOE_CHECK(flat_g_.defined(), "gradients read before allocation");
  NMOE_CHECK(0 <= begin && begin <= end && end <= total_, "gradient range [", begin, ", ", end,
             ") outside [0, ", total_, ")");
  if (!split_grads()) return flat_g_.slice(begin, end);
  const int64_t ex_end = group(ParamGroup::Expert).end;
  if (end <= ex_end) return flat_ge_.slice(begin, end);
  NMOE_CHECK(begin >= ex_end, "gradient range [", begin, ", ", end, ") crosses the end of the expert group (",
             ex_end, "), whose gradients are in a buffer of their own");
  return flat_g_.slice(begin - ex_end, end - ex_end);
}

std::vector<Tensor> ParamStore::grad_buffers() const {
  if (!split_grads()) return {flat_g_};
  return {flat_ge_, flat_g_};
}

DType ParamStore::grad_dtype(ParamGroup g) const {
  return g == ParamGroup::Expert && split_grads() ? flat_ge_.dtype : flat_g_.dtype;
}

void ParamStore::allocate(Backend& backend, DType dtype, DType compute_dtype, DType expert_grad_dtype) {
  int64_t off = 0;
  for (int gi = 0; gi < kNumParamGroups; ++gi) {
    groups_[gi].begin = off;
    for (Param& p : params_) {
      if (static_cast<int>(p.spec.group) != gi) continue;
      p.offset = off;
      off = align_up(off + p.spec.shape.numel());
    }
    groups_[gi].end = off;
  }
  total_ = off;
  // Dense shards in whole 64-element blocks (group and tensor boundaries are
  // on blocks too), as even as the blocks allow.
  const GroupRange dense = dense_range();
  const int64_t blocks = dense.size() / kParamAlign;
  shard_bounds_.resize(shard_world_ + 1);
  for (int r = 0; r <= shard_world_; ++r) shard_bounds_[r] = dense.begin + blocks * r / shard_world_ * kParamAlign;
  const int64_t n_moments = group(ParamGroup::Expert).size() + shard().size();
  const int64_t ex_end = group(ParamGroup::Expert).end;
  const bool split = expert_grad_dtype != dtype && ex_end > 0;
  w_arena_.reserve(&flat_w_, dtype, Shape{total_});
  if (split) g_arena_.reserve(&flat_ge_, expert_grad_dtype, Shape{ex_end});
  g_arena_.reserve(&flat_g_, dtype, Shape{split ? total_ - ex_end : total_});
  mv_arena_.reserve(&flat_m_, dtype, Shape{n_moments});
  mv_arena_.reserve(&flat_v_, dtype, Shape{n_moments});
  if (compute_dtype != dtype) c_arena_.reserve(&flat_c_, compute_dtype, Shape{total_});
  w_arena_.allocate(backend);
  g_arena_.allocate(backend);
  mv_arena_.allocate(backend);
  if (compute_dtype != dtype) c_arena_.allocate(backend);
  for (const Tensor* t : {&flat_w_, &flat_m_, &flat_v_}) backend.fill(*t, 0.0);
  for (const Tensor& t : grad_buffers()) backend.fill(t, 0.0);
  for (Param& p : params_) {
    int64_t n = p.spec.shape.numel();
    p.w = flat_w_.slice(p.offset, p.offset + n).view(p.spec.shape);
    p.g = grads(p.offset, p.offset + n).view(p.spec.shape);
    p.wc = flat_c_.defined() ? flat_c_.slice(p.offset, p.offset + n).view(p.spec.shape) : p.w;
  }
  if (flat_c_.defined()) backend.fill(flat_c_, 0.0);
}

}  // namespace nmoe
