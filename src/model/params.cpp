#include "model/params.h"

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

void ParamStore::sync_compute(Backend& backend) {
  if (flat_c_.defined()) backend.convert(flat_c_, flat_w_);
}

void ParamStore::allocate(Backend& backend, DType dtype, DType compute_dtype) {
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
  w_arena_.reserve(&flat_w_, dtype, Shape{total_});
  g_arena_.reserve(&flat_g_, dtype, Shape{total_});
  mv_arena_.reserve(&flat_m_, dtype, Shape{total_});
  mv_arena_.reserve(&flat_v_, dtype, Shape{total_});
  if (compute_dtype != dtype) c_arena_.reserve(&flat_c_, compute_dtype, Shape{total_});
  w_arena_.allocate(backend);
  g_arena_.allocate(backend);
  mv_arena_.allocate(backend);
  if (compute_dtype != dtype) c_arena_.allocate(backend);
  for (const Tensor* t : {&flat_w_, &flat_g_, &flat_m_, &flat_v_}) backend.fill(*t, 0.0);
  for (Param& p : params_) {
    int64_t n = p.spec.shape.numel();
    p.w = flat_w_.slice(p.offset, p.offset + n).view(p.spec.shape);
    p.g = flat_g_.slice(p.offset, p.offset + n).view(p.spec.shape);
    p.m = flat_m_.slice(p.offset, p.offset + n).view(p.spec.shape);
    p.v = flat_v_.slice(p.offset, p.offset + n).view(p.spec.shape);
    p.wc = flat_c_.defined() ? flat_c_.slice(p.offset, p.offset + n).view(p.spec.shape) : p.w;
  }
  if (flat_c_.defined()) backend.fill(flat_c_, 0.0);
}

}  // namespace nmoe
