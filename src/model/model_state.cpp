// Weight initialization and the per-step statistics kept on the backend.
#include <cmath>
#include <vector>

#include "core/rng.h"
#include "model/model_layer.h"

namespace nmoe {

namespace {

void fill_init(const ParamSpec& spec, Rng& rng, double* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    switch (spec.init) {
      case InitKind::Normal: out[i] = rng.normal() * spec.std; break;
      // Truncated at absolute +-2 like torch.nn.init.trunc_normal_'s defaults.
      case InitKind::TruncNormal: out[i] = rng.trunc_normal(spec.std, -2.0, 2.0); break;
      case InitKind::Ones: out[i] = 1.0; break;
      case InitKind::Zeros: out[i] = 0.0; break;
    }
  }
}

void upload(Backend& B, const Tensor& t, const std::vector<double>& v) {
  if (t.dtype == DType::F64) {
    B.copy_from_host(t, v.data());
  } else {
    NMOE_CHECK(t.dtype == DType::F32, "cannot initialize a ", dtype_name(t.dtype), " tensor");
    std::vector<float> f(v.begin(), v.end());
    B.copy_from_host(t, f.data());
  }
}

}  // namespace

void Model::init_weights(uint64_t seed) {
  for (Param& p : params_.all()) {
    const int64_t n = p.spec.shape.numel();
    std::vector<double> host(n);
    if (p.spec.per_expert) {
      const int64_t per = n / p.spec.shape[0];
      for (int64_t e = 0; e < p.spec.shape[0]; ++e) {
        Rng rng(seed, p.spec.name, static_cast<uint64_t>(p.spec.first_expert + e));
        fill_init(p.spec, rng, host.data() + e * per, per);
      }
    } else {
      Rng rng(seed, p.spec.name, 0);
      fill_init(p.spec, rng, host.data(), n);
    }
    upload(backend_, p.w, host);
  }
  backend_.fill(params_.all_m(), 0.0);
  backend_.fill(params_.all_v(), 0.0);
  for (auto& L : layers_)
    if (L->moe) backend_.fill(L->bias, 0.0);
  sync_compute_weights();
}

void Model::zero_grads() {
  for (const Tensor& t : params_.grad_buffers()) backend_.fill(t, 0.0);
}

void Model::reset_step_stats() {
  backend_.fill(loss_sum_, 0.0);
  backend_.fill(aux_sum_, 0.0);
  for (auto& L : layers_)
    if (L->moe) backend_.fill(L->counts, 0.0);
}

void Model::reset_loss_sums() {
  backend_.fill(loss_sum_, 0.0);
  backend_.fill(aux_sum_, 0.0);
}

std::vector<Tensor> Model::router_counts() const {
  std::vector<Tensor> out;
  for (const auto& L : layers_)
    if (L->moe) out.push_back(L->counts);
  return out;
}

double Model::read_loss_sum() {
  double v = 0;
  backend_.copy_to_host(&v, loss_sum_);
  return v;
}

double Model::read_aux_sum() {
  double v = 0;
  backend_.copy_to_host(&v, aux_sum_);
  return v;
}

Model::Layer& Model::moe_layer(int64_t i) {
  for (auto& L : layers_)
    if (L->moe && L->moe_index == i) return *L;
  fail("no MoE layer ", i);
}

std::vector<int32_t> Model::read_expert_counts(int64_t moe_layer_index) {
  Layer& L = moe_layer(moe_layer_index);
  std::vector<int32_t> c(L.counts.numel());
  backend_.copy_to_host(c.data(), L.counts);
  return c;
}

std::vector<int32_t> Model::read_expert_indices(int64_t moe_layer_index) {
  Layer& L = moe_layer(moe_layer_index);
  std::vector<int32_t> idx(L.idx.numel());
  backend_.copy_to_host(idx.data(), L.idx);
  return idx;
}

std::vector<double> Model::read_router_bias(int64_t moe_layer_index) {
  Layer& L = moe_layer(moe_layer_index);
  std::vector<double> out(L.bias.numel());
  if (L.bias.dtype == DType::F64) {
    backend_.copy_to_host(out.data(), L.bias);
  } else {
    std::vector<float> f(out.size());
    backend_.copy_to_host(f.data(), L.bias);
    out.assign(f.begin(), f.end());
  }
  return out;
}

void Model::update_router_bias(double gamma) {
  if (gamma <= 0) return;
  for (auto& L : layers_)
    if (L->moe) backend_.router_bias_update(L->bias, L->counts, gamma);
}

}  // namespace nmoe
