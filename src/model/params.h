// Parameter store: every trainable tensor lives in one flat buffer, laid out
// group by group (experts, router, dense with decay, dense without decay), with
// matching flat buffers for gradients and the two AdamW moments. Each group is
// one contiguous range, so the optimizer is one fused call per group and the
// global gradient norm is one reduction.
//
// With several ranks the moments can be sharded (ZeRO-1, set_moment_shard):
// the "dense" range (every element after the expert group, replicated on all
// ranks) is split into contiguous 64-aligned shards, one per rank, and a rank
// holds the moments of its experts and of its dense shard only. The moment
// buffers are then [expert group | this rank's dense shard]; moments() maps a
// flat element range into them. Without a shard they cover the whole buffer.
//
// The expert group's gradients may be stored in another dtype than the rest
// (BF16 on the GPU, expert_grad_dtype): they then live in a buffer of their
// own, and grads() maps a flat element range into the right one.
#pragma once

#include <array>
#include <deque>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/tensor.h"

namespace nmoe {

enum class ParamGroup { Expert = 0, Router = 1, DenseDecay = 2, DenseNoDecay = 3 };
constexpr int kNumParamGroups = 4;
const char* param_group_name(ParamGroup g);

enum class InitKind { Normal, TruncNormal, Ones, Zeros };

struct ParamSpec {
  std::string name;  // safetensors name, see docs/checkpoint.md
  Shape shape;
  ParamGroup group = ParamGroup::DenseDecay;
  InitKind init = InitKind::Normal;
  double std = 0.02;
  // Expert tensors [E_local, ...]: slice e draws from its own stream keyed by
  // its global expert id (first_expert + e).
  bool per_expert = false;
  int64_t first_expert = 0;
};

struct Param {
  ParamSpec spec;
  int64_t offset = 0;  // element offset in the flat buffers
  Tensor w, g;         // views into the flat buffers (master weights, gradients); moments: ParamStore::moments
  Tensor wc;           // the weights the forward and backward read: w itself, or its compute-dtype copy
};

struct GroupRange {
  int64_t begin = 0, end = 0;  // element range in the flat buffers
  int64_t size() const { return end - begin; }
};

class ParamStore {
 public:
  // Registers a parameter; the returned reference stays valid.
  Param& add(ParamSpec spec);
  // ZeRO-1: this store keeps the moments of dense shard `rank` of `world` only
  // (call before allocate; world 1 keeps every moment).
  void set_moment_shard(int rank, int world);
  // Lays out and allocates params, grads and both moments in dtype and, when
  // compute_dtype differs, a compute copy of the weights (refreshed by
  // sync_compute). The expert group's gradients are in expert_grad_dtype.
  void allocate(Backend& backend, DType dtype, DType compute_dtype, DType expert_grad_dtype);
  void allocate(Backend& backend, DType dtype, DType compute_dtype) {
    allocate(backend, dtype, compute_dtype, dtype);
  }
  // Refreshes the compute copy from the master weights (no-op without a copy).
  void sync_compute(Backend& backend);
  bool has_compute_copy() const { return flat_c_.defined(); }

  std::deque<Param>& all() { return params_; }
  const std::deque<Param>& all() const { return params_; }
  Param* find(const std::string& name);
  const GroupRange& group(ParamGroup g) const { return groups_[static_cast<int>(g)]; }
  int64_t numel() const { return total_; }    // including alignment padding
  int64_t count() const;                       // real parameter elements
  int64_t count(ParamGroup g) const;

  const Tensor& flat_params() const { return flat_w_; }
  // Every gradient in one buffer; only when all share one dtype (split_grads() false).
  const Tensor& flat_grads() const;
  // The gradients of flat elements [begin, end), a 1-D view; with split
  // gradients the range must lie on one side of the expert group's end.
  Tensor grads(int64_t begin, int64_t end) const;
  // The buffers holding every gradient: one, or the expert group's and the rest's.
  std::vector<Tensor> grad_buffers() const;
  bool split_grads() const { return flat_ge_.defined(); }
  DType grad_dtype(ParamGroup g) const;
  // The compute copy of flat_params() (undefined without one).
  const Tensor& flat_compute() const { return flat_c_; }
  Tensor group_slice(const Tensor& flat, ParamGroup g) const;

  // The replicated elements: [group(Expert).end, numel()).
  GroupRange dense_range() const { return {group(ParamGroup::Expert).end, total_}; }
  bool moments_sharded() const { return shard_world_ > 1; }
  int shard_rank() const { return shard_rank_; }
  int shard_world() const { return shard_world_; }
  // The dense shards' boundaries (shard_world() + 1 flat offsets, multiples of
  // 64 elements, from dense_range().begin to numel()); rank r owns [b[r], b[r+1]).
  const std::vector<int64_t>& shard_bounds() const { return shard_bounds_; }
  GroupRange shard() const { return {shard_bounds_[shard_rank_], shard_bounds_[shard_rank_ + 1]}; }
  // The part of group g whose moments this store holds (and whose update this
  // rank computes): the whole expert group, a dense group's overlap with shard().
  GroupRange owned(ParamGroup g) const;
  // Whether this store holds the moments of flat elements [begin, end).
  bool holds_moments(int64_t begin, int64_t end) const;
  // The first or second moment (exp_avg, exp_avg_sq) of flat elements [begin,
  // end), which must be held: a 1-D view into the moment buffers.
  Tensor m(int64_t begin, int64_t end) const { return moments(flat_m_, begin, end); }
  Tensor v(int64_t begin, int64_t end) const { return moments(flat_v_, begin, end); }
  // Every moment this store holds (for zeroing).
  const Tensor& all_m() const { return flat_m_; }
  const Tensor& all_v() const { return flat_v_; }
  size_t param_bytes() const { return w_arena_.bytes(); }
  size_t grad_bytes() const { return g_arena_.bytes(); }
  size_t optimizer_bytes() const { return mv_arena_.bytes(); }
  size_t compute_copy_bytes() const { return c_arena_.bytes(); }

 private:
  Tensor moments(const Tensor& flat_mv, int64_t begin, int64_t end) const;

  std::deque<Param> params_;
  std::array<GroupRange, kNumParamGroups> groups_{};
  int64_t total_ = 0;
  int shard_rank_ = 0, shard_world_ = 1;
  std::vector<int64_t> shard_bounds_;
  // flat_g_ holds [0, numel()) or, with split gradients, [group(Expert).end,
  // numel()); flat_ge_ then holds the expert group's.
  Tensor flat_w_, flat_g_, flat_ge_, flat_m_, flat_v_, flat_c_;
  Arena w_arena_{"params"}, g_arena_{"grads"}, mv_arena_{"optimizer"}, c_arena_{"compute-weights"};
};

}  // namespace nmoe
