// MoE permutation: plan the expert-contiguous layout, dispatch token rows to
// it, combine expert outputs back with gates, and the backward of both.
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_common.h"

namespace nmoe {

using namespace cpu;

namespace {

// pos [slots] (shape checked by ops/op_checks.h) must be a permutation of
// [0, slots): every destination row is written exactly once, so parallel
// scatters never race.
const int32_t* checked_permutation(const char* op, const Tensor& pos, int64_t slots) {
  const int32_t* p = pos.ptr<int32_t>();
  std::vector<char> seen(slots, 0);
  for (int64_t s = 0; s < slots; ++s) {
    NMOE_CHECK(p[s] >= 0 && p[s] < slots && !seen[p[s]], op, ": pos[", s, "] = ", p[s],
               " is out of range [0, ", slots, ") or repeated; pos must be a permutation");
    seen[p[s]] = 1;
  }
  return p;
}

template <class T>
void dispatch_impl(const Tensor& x, const int32_t* pos, int64_t K, const Tensor& xe) {
  const int64_t D = x.cols();
  parallel_for(x.rows() * K, D, [&](int64_t slot) {
    std::copy_n(x.ptr<T>() + (slot / K) * D, D, xe.ptr<T>() + pos[slot] * D);
  });
}

template <class T>
void dispatch_bwd_impl(const Tensor& dxe, const int32_t* pos, int64_t K, const Tensor& dx) {
  const int64_t D = dx.cols();
  parallel_for(dx.rows(), K * D, [&](int64_t t) {
    T* out = dx.ptr<T>() + t * D;
    for (int64_t d = 0; d < D; ++d) {
      double acc = out[d];
      for (int64_t k = 0; k < K; ++k) acc += dxe.ptr<T>()[pos[t * K + k] * D + d];
      out[d] = static_cast<T>(acc);
    }
  });
}

template <class T>
void combine_impl(const Tensor& ye, const int32_t* pos, const Tensor& gates, const Tensor& out) {
  const int64_t D = out.cols(), K = gates.cols();
  parallel_for(out.rows(), K * D, [&](int64_t t) {
    T* o = out.ptr<T>() + t * D;
    const T* g = gates.ptr<T>() + t * K;
    for (int64_t d = 0; d < D; ++d) {
      double acc = o[d];
      for (int64_t k = 0; k < K; ++k)
        acc += static_cast<double>(g[k]) * ye.ptr<T>()[pos[t * K + k] * D + d];
      o[d] = static_cast<T>(acc);
    }
  });
}

template <class T>
void combine_bwd_impl(const Tensor& dout, const Tensor& ye, const int32_t* pos,
                      const Tensor& gates, const Tensor& dye, const Tensor& dgates) {
  const int64_t D = dout.cols(), K = gates.cols();
  parallel_for(dout.rows() * K, 2 * D, [&](int64_t slot) {
    const T* g = dout.ptr<T>() + (slot / K) * D;
    const T* y = ye.defined() ? ye.ptr<T>() + pos[slot] * D : nullptr;
    T* dy = dye.ptr<T>() + pos[slot] * D;
    const double gate = gates.ptr<T>()[slot];
    for (int64_t d = 0; d < D; ++d) dy[d] = static_cast<T>(gate * g[d]);
    if (y) dgates.ptr<T>()[slot] = static_cast<T>(dot(y, g, D));
  });
}

template <class T>
void gate_grad_impl(const Tensor& a, const Tensor& da, const int32_t* pos, const Tensor& gates,
                    const Tensor& dgates) {
  const int64_t F = a.cols(), slots = gates.numel();
  parallel_for(slots, 2 * F, [&](int64_t slot) {
    const double gate = gates.ptr<T>()[slot];
    const double d = dot(a.ptr<T>() + int64_t(pos[slot]) * F, da.ptr<T>() + int64_t(pos[slot]) * F, F);
    dgates.ptr<T>()[slot] = static_cast<T>(gate != 0 ? d / gate : 0.0);
  });
}

}  // namespace

void CpuBackend::moe_plan(const Tensor& idx, int n_experts, const Tensor& offsets,
                          const Tensor& pos) {
  const char* op = "moe_plan";
  const int64_t slots = ops::check_moe_plan(idx, n_experts, offsets, pos);
  const int32_t* id = idx.ptr<int32_t>();
  std::vector<int32_t> next(n_experts + 1, 0);
  for (int64_t s = 0; s < slots; ++s) {
    NMOE_CHECK(id[s] >= 0 && id[s] < n_experts, op, ": expert id ", id[s], " at slot ", s,
               " is outside [0, ", n_experts, ")");
    ++next[id[s] + 1];
  }
  for (int e = 0; e < n_experts; ++e) next[e + 1] += next[e];
  std::copy(next.begin(), next.end(), offsets.ptr<int32_t>());
  int32_t* p = pos.ptr<int32_t>();
  for (int64_t s = 0; s < slots; ++s) p[s] = next[id[s]]++;
}

void CpuBackend::moe_dispatch(const Tensor& x, const Tensor& pos, int top_k, const Tensor& xe) {
  const char* op = "moe_dispatch";
  const ops::RowsDims d = ops::check_moe_dispatch(x, pos, top_k, xe);
  const int64_t K = d.K;
  const int32_t* p = checked_permutation(op, pos, d.N * K);
  dispatch_float(op, {{"x", x}, {"xe", xe}}, [&](auto tag) {
    dispatch_impl<decltype(tag)>(x, p, K, xe);
  });
}

void CpuBackend::moe_dispatch_bwd(const Tensor& dxe, const Tensor& pos, int top_k,
                                  const Tensor& dx) {
  const char* op = "moe_dispatch_bwd";
  const ops::RowsDims d = ops::check_moe_dispatch_bwd(dxe, pos, top_k, dx);
  const int64_t K = d.K;
  const int32_t* p = checked_permutation(op, pos, d.N * K);
  dispatch_float(op, {{"dxe", dxe}, {"dx", dx}}, [&](auto tag) {
    dispatch_bwd_impl<decltype(tag)>(dxe, p, K, dx);
  });
}

void CpuBackend::moe_combine(const Tensor& ye, const Tensor& pos, const Tensor& gates,
                             const Tensor& out) {
  const char* op = "moe_combine";
  const ops::RowsDims d = ops::check_moe_combine(ye, pos, gates, out);
  const int32_t* p = checked_permutation(op, pos, d.N * d.K);
  dispatch_float(op, {{"ye", ye}, {"gates", gates}, {"out", out}}, [&](auto tag) {
    combine_impl<decltype(tag)>(ye, p, gates, out);
  });
}

void CpuBackend::moe_combine_bwd(const Tensor& dout, const Tensor& ye, const Tensor& pos,
                                 const Tensor& gates, const Tensor& dye, const Tensor& dgates) {
  const char* op = "moe_combine_bwd";
  const ops::RowsDims d = ops::check_moe_combine_bwd(dout, ye, pos, gates, dye, dgates);
  const int32_t* p = checked_permutation(op, pos, d.N * d.K);
  auto run = [&](auto tag) { combine_bwd_impl<decltype(tag)>(dout, ye, p, gates, dye, dgates); };
  if (ye.defined())
    dispatch_float(op, {{"dout", dout}, {"ye", ye}, {"gates", gates}, {"dye", dye}, {"dgates", dgates}}, run);
  else
    dispatch_float(op, {{"dout", dout}, {"gates", gates}, {"dye", dye}}, run);
}

void CpuBackend::moe_gate_grad(const Tensor& a, const Tensor& da, const Tensor& pos, const Tensor& gates,
                               const Tensor& dgates) {
  const char* op = "moe_gate_grad";
  const ops::RowsDims d = ops::check_moe_gate_grad(a, da, pos, gates, dgates);
  const int32_t* p = checked_permutation(op, pos, d.N * d.K);
  dispatch_float(op, {{"a", a}, {"da", da}, {"gates", gates}, {"dgates", dgates}},
                 [&](auto tag) { gate_grad_impl<decltype(tag)>(a, da, p, gates, dgates); });
}

}  // namespace nmoe
