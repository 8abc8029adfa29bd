// Model construction: feature checks, parameter registration and the memory plan.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "model/model_layer.h"

namespace nmoe {

ModelShape ModelShape::from_config(const Config& c) {
  ModelShape s;
  s.vocab = c.vocab_size;
  s.dim = *c.dim;
  s.n_layers = *c.n_layers;
  s.n_heads = *c.n_heads;
  s.head_dim = s.dim / s.n_heads;
  s.inter = c.inter_dim.value_or(0);
  s.moe_inter = c.expert_inter_dim();
  s.n_experts = c.has_moe() ? *c.n_routed_experts : 0;
  s.top_k = s.n_experts > 0 ? *c.n_activated_experts : 0;
  s.n_shared = s.n_experts > 0 ? c.n_shared_experts : 0;
  s.n_dense_layers = s.n_experts > 0 ? c.n_dense_layers : s.n_layers;
  s.eps = c.rms_norm_eps;
  s.rope_theta = c.rope_theta;
  s.route_scale = c.route_scale;
  s.routed_scaling_factor = c.routed_scaling_factor;
  return s;
}

int64_t ModelShape::n_moe_layers() const {
  int64_t n = 0;
  for (int64_t l = 0; l < n_layers; ++l) n += is_moe(l);
  return n;
}

std::string MemoryPlan::str() const {
  std::string s;
  auto row = [&](const char* name, size_t b) { s += std::string("  ") + name + ": " + format_bytes(b) + "\n"; };
  row("weights      ", params);
  if (compute_weights) row("weights (compute copy)", compute_weights);
  row("gradients    ", grads);
  row("optimizer    ", optimizer);
  row("buffers      ", buffers);
  row("activations  ", activations);
  row("workspace    ", workspace);
  if (backend_scratch) row("backend scratch", backend_scratch);
  row("total        ", total());
  return s;
}

namespace {

void check_implemented(const Config& c, const ModelShape& s) {
  NMOE_CHECK(c.attn == "sdpa", "attn = \"", c.attn,
             "\" is not implemented yet; set attn = \"sdpa\" (or --set attn=sdpa)");
  bool has_local = c.attn_global_every > 1 && s.n_layers > 1;
  NMOE_CHECK(!has_local || c.attn_local == "sdpa", "attn_global_every = ", c.attn_global_every,
             " makes some layers local with attn_local = \"", c.attn_local,
             "\", which is not implemented yet; set attn_global_every = 1");
  NMOE_CHECK(c.activation == "swiglu", "activation = \"", c.activation,
             "\" is not implemented yet; set activation = \"swiglu\"");
  NMOE_CHECK(c.rope_scaling_factor == 1.0, "rope_scaling_factor = ", c.rope_scaling_factor,
             " (YaRN) is not implemented yet; set rope_scaling_factor = 1.0");
}

}  // namespace

Model::Model(const Config& cfg, Backend& backend, const ModelOptions& opt)
    : cfg_(cfg), backend_(backend), opt_(opt), shape_(ModelShape::from_config(cfg)) {
  check_implemented(cfg, shape_);
  const ModelShape& s = shape_;
  NMOE_CHECK(opt.micro_batch >= 1 && opt.seq_len >= 1, "micro batch and seq_len must be >= 1");
  NMOE_CHECK(opt.world >= 1 && opt.rank >= 0 && opt.rank < opt.world, "bad rank/world");
  NMOE_CHECK(s.n_experts == 0 || s.n_experts % opt.world == 0, "n_routed_experts (", s.n_experts,
             ") must be divisible by the number of ranks (", opt.world, ")");
  n_tokens_ = opt.micro_batch * opt.seq_len;
  n_local_experts_ = s.n_experts / opt.world;
  first_expert_ = opt.rank * n_local_experts_;
  ignore_index_ = cfg.loss_mask_eos ? cfg.eos_token_id : -1;
  out_scale_ = 1.0 / std::sqrt(2.0 * static_cast<double>(s.n_layers));

  const int64_t D = s.dim;
  if (opt.recompute_attention) {
    const DType adt = opt.act_dtype();
    acts_.reserve(&shared_xn1_, adt, Shape{n_tokens_, D});
    acts_.reserve(&shared_qkv_, adt, Shape{n_tokens_, 3, s.n_heads, s.head_dim});
    acts_.reserve(&shared_attn_, adt, Shape{n_tokens_, D});
    acts_.reserve(&shared_lse_, opt.dtype, Shape{opt.micro_batch, s.n_heads, opt.seq_len});
  }
  embedding_ = &params_.add({"embedding.weight", Shape{s.vocab, D}, ParamGroup::DenseNoDecay,
                             InitKind::Normal, 0.02});
  for (int64_t l = 0; l < s.n_layers; ++l) {
    auto L = std::make_unique<Layer>();
    plan_layer(*L, l);
    layers_.push_back(std::move(L));
  }
  final_norm_ = &params_.add({"norm.weight", Shape{D}, ParamGroup::DenseNoDecay, InitKind::Ones, 0});
  lm_head_ = &params_.add({"lm_head.weight", Shape{s.vocab, D}, ParamGroup::DenseNoDecay,
                           InitKind::TruncNormal, 1.0 / std::sqrt(static_cast<double>(D))});
  if (opt.shard_optimizer_state) params_.set_moment_shard(opt.rank, opt.world);
  NMOE_CHECK(opt.expert_grad_dt() == opt.dtype || opt.expert_grad_dt() == opt.act_dtype(),
             "expert gradients in ", dtype_name(opt.expert_grad_dt()), " need ", dtype_name(opt.expert_grad_dt()),
             " compute (the CUDA backend with dtype = \"bf16\"); set expert_grad_dtype = \"fp32\"");
  params_.allocate(backend_, opt.dtype, opt.act_dtype(), opt.expert_grad_dt());

  // Activations and workspace in the compute dtype; statistics (rstd, lse,
  // router scores and gates) in the master dtype.
  const DType dt = opt.act_dtype(), st = opt.dtype;
  const int64_t N = n_tokens_, T = opt.seq_len;
  resid_.resize(s.n_layers + 1);
  for (Tensor& r : resid_) acts_.reserve(&r, dt, Shape{N, D});
  acts_.reserve(&xf_, dt, Shape{N, D});
  acts_.reserve(&rstdf_, st, Shape{N});
  buffers_.reserve(&tokens_, DType::I32, Shape{N});
  buffers_.reserve(&targets_, DType::I32, Shape{N});
  buffers_.reserve(&rope_cos_, st, Shape{T, s.head_dim / 2});
  buffers_.reserve(&rope_sin_, st, Shape{T, s.head_dim / 2});
  buffers_.reserve(&loss_sum_, DType::F64, Shape{1});
  buffers_.reserve(&aux_sum_, DType::F64, Shape{1});
  work_.reserve(&dres_, dt, Shape{N, D});
  work_.reserve(&dxn_, dt, Shape{N, D});
  work_.reserve(&dattn_, dt, Shape{N, D});
  work_.reserve(&dqkv_, dt, Shape{N, 3, s.n_heads, s.head_dim});
  work_.reserve(&dxf_, dt, Shape{N, D});
  if (s.n_dense_layers > 0) {
    work_.reserve(&mlp_a_, dt, Shape{N, s.inter});
    work_.reserve(&dmlp_a_, dt, Shape{N, s.inter});
    work_.reserve(&dmlp_h13_, dt, Shape{N, 2 * s.inter});
  }
  if (s.n_moe_layers() > 0) {
    const int64_t M = N * s.top_k, Fe = s.moe_inter, SF = s.n_shared * s.moe_inter;
    work_.reserve(&dye_, dt, Shape{M, D});
    work_.reserve(&dae_, dt, Shape{M, Fe});
    work_.reserve(&dh13e_, dt, Shape{M, 2 * Fe});
    work_.reserve(&dxe_, dt, Shape{M, D});
    work_.reserve(&xe_, dt, Shape{M, D});
    if (opt.world == 1) work_.reserve(&ae_, dt, Shape{M, Fe});
    work_.reserve(&router_logits_, st, Shape{N, s.n_experts});
    work_.reserve(&dgates_, st, Shape{N, s.top_k});
    work_.reserve(&dlogits_, dt, Shape{N, s.n_experts});
    if (SF > 0) {
      work_.reserve(&sa_, dt, Shape{N, SF});
      work_.reserve(&dsh_a_, dt, Shape{N, SF});
      work_.reserve(&dsh_h13_, dt, Shape{N, 2 * SF});
    }
  }
  if (expert_parallel()) plan_expert_parallel();
  buffers_.allocate(backend_);
  acts_.allocate(backend_);
  work_.allocate(backend_);
  if (!expert_leaves_.empty()) {
    leaves_.allocate(backend_);
    for (const Tensor& t : expert_leaves_) backend_.fill(t, 0.0);
  }
  for (auto& L : layers_) {
    if (!L->moe) {
      L->a = mlp_a_;
      continue;
    }
    L->logits = router_logits_;
    L->xe = xe_;
    L->ae = ae_;
    L->sa = sa_;
    // Not kept: the expert outputs live only from the w2 GEMM to the combine,
    // and the backward's dye_ buffer is free in the forward, so they share it.
    if (!keeps_expert_outputs()) L->ye = dye_;
  }
  if (opt.recompute_attention)
    for (auto& L : layers_) {
      L->xn1 = shared_xn1_;
      L->qkv = shared_qkv_;
      L->attn = shared_attn_;
      L->lse = shared_lse_;
    }

  // RoPE tables: angle = pos * theta^(-2i/Dh), computed in double.
  {
    const int64_t half = s.head_dim / 2;
    std::vector<double> c(T * half), sn(T * half);
    for (int64_t p = 0; p < T; ++p)
      for (int64_t i = 0; i < half; ++i) {
        double inv = 1.0 / std::pow(s.rope_theta, (2.0 * i) / static_cast<double>(s.head_dim));
        double ang = static_cast<double>(p) * inv;
        c[p * half + i] = std::cos(ang);
        sn[p * half + i] = std::sin(ang);
      }
    if (st == DType::F64) {
      backend_.copy_from_host(rope_cos_, c.data());
      backend_.copy_from_host(rope_sin_, sn.data());
    } else {
      NMOE_CHECK(st == DType::F32, "unsupported model dtype ", dtype_name(st));
      std::vector<float> cf(c.begin(), c.end()), sf(sn.begin(), sn.end());
      backend_.copy_from_host(rope_cos_, cf.data());
      backend_.copy_from_host(rope_sin_, sf.data());
    }
  }
  for (auto& L : layers_)
    if (L->moe) {
      backend_.fill(L->bias, 0.0);
      backend_.fill(L->counts, 0.0);
      backend_.fill(L->counts_eval, 0.0);
    }
  reset_step_stats();
}

Model::~Model() = default;

void Model::plan_layer(Layer& L, int64_t l) {
  const ModelShape& s = shape_;
  const int64_t D = s.dim, N = n_tokens_, H = s.n_heads, Dh = s.head_dim;
  const double std_l = 0.02 / std::sqrt(2.0 * static_cast<double>(l + 1));
  const std::string p = "layers." + std::to_string(l) + ".";
  const DType dt = opt_.act_dtype(), st = opt_.dtype;
  L.index = l;
  L.moe = s.is_moe(l);

  L.attn_norm = &params_.add({p + "attn_norm.weight", Shape{D}, ParamGroup::DenseNoDecay, InitKind::Ones, 0});
  L.wqkv = &params_.add({p + "attn.wqkv.weight", Shape{3 * D, D}, ParamGroup::DenseDecay,
                         InitKind::TruncNormal, 0.02});
  L.wo = &params_.add({p + "attn.wo.weight", Shape{D, D}, ParamGroup::DenseDecay, InitKind::TruncNormal, std_l});
  L.ffn_norm = &params_.add({p + "ffn_norm.weight", Shape{D}, ParamGroup::DenseNoDecay, InitKind::Ones, 0});

  acts_.reserve(&L.rstd1, st, Shape{N});
  if (!opt_.recompute_attention) {  // else the layer uses the shared buffers (see the constructor)
    acts_.reserve(&L.xn1, dt, Shape{N, D});
    acts_.reserve(&L.qkv, dt, Shape{N, 3, H, Dh});
    acts_.reserve(&L.attn, dt, Shape{N, D});
    acts_.reserve(&L.lse, st, Shape{opt_.micro_batch, H, opt_.seq_len});
  }
  acts_.reserve(&L.mid, dt, Shape{N, D});
  acts_.reserve(&L.xn2, dt, Shape{N, D});
  acts_.reserve(&L.rstd2, st, Shape{N});

  if (!L.moe) {
    const int64_t F = s.inter;
    L.w13 = &params_.add({p + "mlp.w13.weight", Shape{2 * F, D}, ParamGroup::DenseDecay, InitKind::TruncNormal, 0.02});
    L.w2 = &params_.add({p + "mlp.w2.weight", Shape{D, F}, ParamGroup::DenseDecay, InitKind::TruncNormal, std_l});
    acts_.reserve(&L.h13, dt, Shape{N, 2 * F});
    return;
  }
  int64_t moe_index = 0;
  for (int64_t j = 0; j < l; ++j) moe_index += s.is_moe(j);
  L.moe_index = moe_index;
  const int64_t E = s.n_experts, El = n_local_experts_, K = s.top_k, Fe = s.moe_inter;
  const int64_t M = N * K, SF = s.n_shared * Fe;
  L.router = &params_.add({p + "moe.router.weight", Shape{E, D}, ParamGroup::Router, InitKind::TruncNormal, std_l});
  L.ew13 = &params_.add({p + "moe.experts.w13", Shape{El, 2 * Fe, D}, ParamGroup::Expert,
                         InitKind::TruncNormal, std_l, true, first_expert_});
  L.ew2 = &params_.add({p + "moe.experts.w2", Shape{El, D, Fe}, ParamGroup::Expert,
                        InitKind::TruncNormal, std_l, true, first_expert_});
  if (SF > 0) {
    L.sw13 = &params_.add({p + "moe.shared.w13.weight", Shape{2 * SF, D}, ParamGroup::DenseDecay,
                           InitKind::TruncNormal, 0.02});
    L.sw2 = &params_.add({p + "moe.shared.w2.weight", Shape{D, SF}, ParamGroup::DenseDecay,
                          InitKind::TruncNormal, std_l});
    acts_.reserve(&L.sh13, dt, Shape{N, 2 * SF});
  }
  buffers_.reserve(&L.bias, st, Shape{E});
  buffers_.reserve(&L.counts, DType::I32, Shape{E});
  buffers_.reserve(&L.counts_eval, DType::I32, Shape{E});
  acts_.reserve(&L.scores, st, Shape{N, E});
  acts_.reserve(&L.idx, DType::I32, Shape{N, K});
  acts_.reserve(&L.gates, st, Shape{N, K});
  acts_.reserve(&L.offsets, DType::I32, Shape{E + 1});
  acts_.reserve(&L.pos, DType::I32, Shape{M});
  if (opt_.world == 1)  // with expert parallelism the owner recomputes them in backward
    acts_.reserve(&L.h13e, dt, Shape{M, 2 * Fe});
  if (keeps_expert_outputs()) acts_.reserve(&L.ye, dt, Shape{M, D});  // else see the constructor
}

// The owner's workspace for one source's block (at most every row of the
// source: N*K) and one gradient leaf of this rank's experts per source rank.
void Model::plan_expert_parallel() {
  const ModelShape& s = shape_;
  const DType dt = opt_.act_dtype();
  const int64_t M = n_tokens_ * s.top_k, Fe = s.moe_inter;
  work_.reserve(&own_h13_, dt, Shape{M, 2 * Fe});
  work_.reserve(&own_a_, dt, Shape{M, Fe});
  work_.reserve(&own_y_, dt, Shape{M, s.dim});
  work_.reserve(&own_da_, dt, Shape{M, Fe});
  work_.reserve(&own_dh13_, dt, Shape{M, 2 * Fe});
  if (!opt_.exact_accumulation) return;  // expert gradients accumulate in place
  expert_leaves_.resize(opt_.world);
  const int64_t n = params_.group(ParamGroup::Expert).size();
  for (Tensor& t : expert_leaves_) leaves_.reserve(&t, opt_.expert_grad_dt(), Shape{n});
}

MemoryPlan Model::memory_plan() const {
  MemoryPlan m;
  m.params = params_.param_bytes();
  m.compute_weights = params_.compute_copy_bytes();
  m.grads = params_.grad_bytes();
  m.optimizer = params_.optimizer_bytes();
  m.buffers = buffers_.bytes();
  m.activations = acts_.bytes();
  m.workspace = work_.bytes();
  m.grads += leaves_.bytes();
  const int64_t rows = opt_.micro_batch * opt_.seq_len;
  const ScratchBytes ce =
      backend_.cross_entropy_scratch_bytes(rows, opt_.ce_chunk_rows, shape_.vocab, opt_.act_dtype());
  const ScratchBytes attn = backend_.attention_scratch_bytes(opt_.micro_batch, opt_.seq_len, shape_.n_heads,
                                                             shape_.head_dim, opt_.act_dtype());
  // The loss's and attention's shared parts are one buffer (ops/backend.h): the larger counts.
  m.backend_scratch = static_cast<size_t>(std::max({ce.shared, attn.shared, int64_t{0}}) + ce.own + attn.own);
  return m;
}

std::vector<std::pair<std::string, Tensor>> Model::buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& L : layers_)
    if (L->moe) out.emplace_back("layers." + std::to_string(L->index) + ".moe.router.bias", L->bias);
  return out;
}

int64_t Model::active_params() const {
  const ModelShape& s = shape_;
  const int64_t D = s.dim;
  int64_t n = s.vocab * D;  // LM head
  for (int64_t l = 0; l < s.n_layers; ++l) {
    n += 4 * D * D;
    if (s.is_moe(l)) n += 3 * D * s.moe_inter * (s.top_k + s.n_shared) + D * s.n_experts;
    else n += 3 * D * s.inter;
  }
  return n;
}

double Model::flops_per_token() const {
  // Causal attention: QK^T and PV, 2*T*D multiply-adds per token per layer, halved by the mask.
  double attn = static_cast<double>(shape_.n_layers) * opt_.seq_len * shape_.dim;
  return 6.0 * static_cast<double>(active_params()) + 6.0 * attn;
}

int64_t Model::count_targets(const int32_t* targets, int64_t n) const {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) c += targets[i] >= 0 && targets[i] != ignore_index_;
  return c;
}

}  // namespace nmoe
