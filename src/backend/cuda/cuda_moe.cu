// MoE permutation: plan the expert-contiguous layout, dispatch token rows to
// it, combine expert outputs back with gates, and the backward of both.
#include <cub/cub.cuh>

#include "backend/cuda/cuda_common.cuh"

namespace nmoe {

using namespace cuda;

namespace {

// Whether a row position from moe_plan lies in [0, slots); a bad one is
// reported (by the thread named `reports`) and skipped by the caller.
__device__ __forceinline__ bool pos_in_range(int32_t p, int64_t slots, bool reports, int* err) {
  if (p >= 0 && p < slots) return true;
  if (reports) report_error(err, kErrPosRange);
  return false;
}

// Slot ids checked, histogram (integer atomics) and slot numbers 0..slots-1.
__global__ void plan_count_kernel(const int32_t* idx, int64_t slots, int E, int32_t* hist,
                                  int32_t* slot_ids, int* err) {
  NMOE_GRID_STRIDE(s, slots) {
    const int32_t e = idx[s];
    if (e < 0 || e >= E) report_error(err, kErrExpertRange);
    else atomicAdd(&hist[e], 1);
    slot_ids[s] = int32_t(s);
  }
}

// offsets[e+1] = offsets[e] + hist[e]; one thread (E is small).
__global__ void plan_offsets_kernel(const int32_t* hist, int E, int32_t* offsets) {
  if (threadIdx.x != 0) return;
  int32_t acc = 0;
  offsets[0] = 0;
  for (int e = 0; e < E; ++e) offsets[e + 1] = acc += hist[e];
}

// Row i of the stable expert order holds slot sorted_slots[i].
__global__ void plan_scatter_kernel(const int32_t* sorted_slots, int64_t slots, int32_t* pos) {
  NMOE_GRID_STRIDE(i, slots) pos[sorted_slots[i]] = int32_t(i);
}

// Thread per (slot, column): xe[pos[slot]] = x[slot / K].
template <class T>
__global__ void dispatch_kernel(const T* x, const int32_t* pos, int64_t slots, int K, int64_t D,
                                T* xe, int* err) {
  NMOE_GRID_STRIDE(i, slots * D) {
    const int64_t slot = i / D, d = i % D;
    const int32_t p = pos[slot];
    if (!pos_in_range(p, slots, d == 0, err)) continue;
    xe[int64_t(p) * D + d] = x[(slot / K) * D + d];
  }
}

// Thread per (token, column): dx[t] += sum_k dxe[pos[t*K+k]] in slot order.
template <class T>
__global__ void dispatch_bwd_kernel(const T* dxe, const int32_t* pos, int64_t N, int K, int64_t D,
                                    T* dx, int* err) {
  const int64_t slots = N * K;
  NMOE_GRID_STRIDE(i, N * D) {
    const int64_t t = i / D, d = i % D;
    float acc = to_f32(dx[i]);
    for (int k = 0; k < K; ++k) {
      const int32_t p = pos[t * K + k];
      if (!pos_in_range(p, slots, true, err)) continue;
      acc += to_f32(dxe[int64_t(p) * D + d]);
    }
    dx[i] = from_f32<T>(acc);
  }
}

// Thread per (token, column): out[t] += sum_k gates[t,k] ye[pos[t*K+k]] in slot order.
template <class T>
__global__ void combine_kernel(const T* ye, const int32_t* pos, const float* gates, int64_t N, int K,
                               int64_t D, T* out, int* err) {
  const int64_t slots = N * K;
  NMOE_GRID_STRIDE(i, N * D) {
    const int64_t t = i / D, d = i % D;
    float acc = to_f32(out[i]);
    for (int k = 0; k < K; ++k) {
      const int32_t p = pos[t * K + k];
      if (!pos_in_range(p, slots, true, err)) continue;
      acc += gates[t * K + k] * to_f32(ye[int64_t(p) * D + d]);
    }
    out[i] = from_f32<T>(acc);
  }
}

// Warp per slot (grid-stride): dye[pos] = gate * dout[t] (write),
// dgates[slot] = <ye[pos], dout[t]> (write).
template <class T>
__global__ void combine_bwd_kernel(const T* dout, const T* ye, const int32_t* pos,
                                   const float* gates, int64_t slots, int K, int64_t D, T* dye,
                                   float* dgates, int* err) {
  const int lane = threadIdx.x & 31;
  NMOE_WARP_STRIDE(slot, slots) {
    const int32_t p = pos[slot];
    if (!pos_in_range(p, slots, lane == 0, err)) continue;
    const T* g = dout + (slot / K) * D;
    const T* y = ye ? ye + int64_t(p) * D : nullptr;  // null: dye only
    T* dy = dye + int64_t(p) * D;
    const float gate = gates[slot];
    float dot = 0.f;
    for (int64_t d = lane; d < D; d += 32) {
      const float gv = to_f32(g[d]);
      dy[d] = from_f32<T>(gate * gv);
      if (y) dot += to_f32(y[d]) * gv;
    }
    dot = warp_sum(dot);
    if (lane == 0 && y) dgates[slot] = dot;
  }
}

// Warp per slot: the dot of rows r = pos[slot] of a and da, divided by the
// gate. Lane L takes the groups of kVec<T> consecutive elements whose index /
// kVec<T> is L mod 32, in increasing order, then a fixed warp reduction. kVec16
// reads each group as one 16-byte chunk (F a multiple of kVec<T>, rows 16-byte
// aligned); otherwise element by element, padding the last group with zeros
// (which add nothing), so both give the same bits.
template <class T, bool kVec16>
__global__ void gate_grad_kernel(const T* a, const T* da, const int32_t* pos, const float* gates,
                                 int64_t slots, int64_t F, float* dgates, int* err) {
  constexpr int V = kVec<T>;
  const int lane = threadIdx.x & 31;
  NMOE_WARP_STRIDE(slot, slots) {
    const int32_t p = pos[slot];
    if (!pos_in_range(p, slots, lane == 0, err)) continue;
    const T* ar = a + int64_t(p) * F;
    const T* dr = da + int64_t(p) * F;
    float dot = 0.f;
    for (int64_t c = lane; c * V < F; c += 32) {
      float x[V], y[V];
      if constexpr (kVec16) {
        unpack16<T>(reinterpret_cast<const uint4*>(ar)[c], x);
        unpack16<T>(reinterpret_cast<const uint4*>(dr)[c], y);
      } else {
#pragma unroll
        for (int i = 0; i < V; ++i) {
          const int64_t e = c * V + i;
          x[i] = e < F ? to_f32(ar[e]) : 0.f;
          y[i] = e < F ? to_f32(dr[e]) : 0.f;
        }
      }
#pragma unroll
      for (int i = 0; i < V; ++i) dot = __fmaf_rn(x[i], y[i], dot);
    }
    dot = warp_sum(dot);
    const float gate = gates[slot];
    if (lane == 0) dgates[slot] = gate != 0.f ? __fdiv_rn(dot, gate) : 0.f;
  }
}

// ---- vector kernels (16-byte chunks; rows of D = C * kVec<T> elements) ------------------
// A warp owns a row; lane L handles chunks L + 32u (u < U) of each pass of
// 32 * U chunks (pass_chunks picks U). Values and their order are those of
// the scalar kernels above.

// Calls fn(integral_constant<int, U>) with the fewest chunks per lane that
// cover a row of C chunks in one pass, at most 4 (longer rows take several
// passes): bf16 rows of D = 768 are 96 chunks, U = 3.
template <class Fn>
void pass_chunks(int64_t C, Fn&& fn) {
  const int64_t u = (C + 31) / 32;
  if (u <= 1) fn(std::integral_constant<int, 1>{});
  else if (u == 2) fn(std::integral_constant<int, 2>{});
  else if (u == 3) fn(std::integral_constant<int, 3>{});
  else fn(std::integral_constant<int, 4>{});
}

// Warp per token: its row is read once and written to its K rows of xe.
template <class T, int U>
__global__ void __launch_bounds__(kThreads)
    dispatch_vec_kernel(const T* x, const int32_t* pos, int64_t N, int K, int64_t C, T* xe,
                        int* err) {
  const int lane = threadIdx.x & 31;
  const int64_t slots = N * K;
  NMOE_WARP_STRIDE(t, N) {
    const uint4* src = reinterpret_cast<const uint4*>(x) + t * C;
    for (int64_t base = 0; base < C; base += 32 * U) {
      uint4 v[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t c = base + lane + 32 * u;
        v[u] = c < C ? src[c] : make_uint4(0, 0, 0, 0);
      }
      for (int k = 0; k < K; ++k) {
        const int32_t p = pos[t * K + k];
        if (!pos_in_range(p, slots, lane == 0, err)) continue;
        uint4* dst = reinterpret_cast<uint4*>(xe) + int64_t(p) * C;
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int64_t c = base + lane + 32 * u;
          if (c < C) dst[c] = v[u];
        }
      }
    }
  }
}

// Warp per token: out[t] (+)= sum_k [gates[t,k] *] src[pos[t*K+k]] in slot order,
// starting from out[t]. kGated: moe_combine (ye, fma as the scalar kernel);
// otherwise moe_dispatch_bwd (dxe, plain adds).
template <class T, int U, bool kGated>
__global__ void __launch_bounds__(kThreads)
    gather_sum_vec_kernel(const T* src, const int32_t* pos, const float* gates, int64_t N, int K,
                          int64_t C, T* out, int* err) {
  constexpr int V = kVec<T>;
  const int lane = threadIdx.x & 31;
  const int64_t slots = N * K;
  NMOE_WARP_STRIDE(t, N) {
    uint4* orow = reinterpret_cast<uint4*>(out) + t * C;
    for (int64_t base = 0; base < C; base += 32 * U) {
      float acc[U][V];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t c = base + lane + 32 * u;
        unpack16<T>(c < C ? orow[c] : make_uint4(0, 0, 0, 0), acc[u]);
      }
      for (int k = 0; k < K; ++k) {
        const int32_t p = pos[t * K + k];
        if (!pos_in_range(p, slots, lane == 0, err)) continue;
        const float g = kGated ? gates[t * K + k] : 0.f;
        const uint4* srow = reinterpret_cast<const uint4*>(src) + int64_t(p) * C;
        uint4 v[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int64_t c = base + lane + 32 * u;
          v[u] = c < C ? srow[c] : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
          float f[V];
          unpack16<T>(v[u], f);
#pragma unroll
          for (int i = 0; i < V; ++i)
            acc[u][i] = kGated ? __fmaf_rn(g, f[i], acc[u][i]) : __fadd_rn(acc[u][i], f[i]);
        }
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t c = base + lane + 32 * u;
        if (c < C) orow[c] = pack16<T>(acc[u]);
      }
    }
  }
}

// Warp per slot, as the scalar kernel: dye[pos] = gate * dout[t] (vector
// stores) and dgates[slot] = <ye[pos], dout[t]> summed in the scalar kernel's
// order: each pass of dout and ye chunks is staged in shared memory, lane l
// adds elements l, l + 32, ... in turn, then warp_sum. Stage: 8 KB * U per block.
template <class T, int U, bool kDot>
__global__ void __launch_bounds__(kThreads)
    combine_bwd_vec_kernel(const T* dout, const T* ye, const int32_t* pos, const float* gates,
                           int64_t slots, int K, int64_t C, T* dye, float* dgates, int* err) {
  constexpr int V = kVec<T>, kPass = 32 * U;
  __shared__ uint4 stage[kThreads / 32][2][kPass];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const T* gs = reinterpret_cast<const T*>(stage[warp][0]);
  const T* ys = reinterpret_cast<const T*>(stage[warp][1]);
  NMOE_WARP_STRIDE(slot, slots) {
    const int32_t p = pos[slot];
    if (!pos_in_range(p, slots, lane == 0, err)) continue;
    const uint4* grow = reinterpret_cast<const uint4*>(dout) + (slot / K) * C;
    const uint4* yrow = kDot ? reinterpret_cast<const uint4*>(ye) + int64_t(p) * C : nullptr;
    uint4* drow = reinterpret_cast<uint4*>(dye) + int64_t(p) * C;
    const float gate = gates[slot];
    float dot = 0.f;
    for (int64_t base = 0; base < C; base += kPass) {
      uint4 gv[U], yv[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t c = base + lane + 32 * u;
        gv[u] = c < C ? grow[c] : make_uint4(0, 0, 0, 0);
        if constexpr (kDot) yv[u] = c < C ? yrow[c] : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t c = base + lane + 32 * u;
        if (c >= C) continue;
        float f[V];
        unpack16<T>(gv[u], f);
#pragma unroll
        for (int i = 0; i < V; ++i) f[i] = __fmul_rn(gate, f[i]);
        drow[c] = pack16<T>(f);
        if constexpr (kDot) {
          stage[warp][0][lane + 32 * u] = gv[u];
          stage[warp][1][lane + 32 * u] = yv[u];
        }
      }
      if constexpr (!kDot) continue;
      __syncwarp();
      const int n = static_cast<int>(C - base < kPass ? C - base : kPass) * V;  // elements this pass
#pragma unroll 8
      for (int e = lane; e < n; e += 32) dot = __fmaf_rn(to_f32(gs[e]), to_f32(ys[e]), dot);
      __syncwarp();
    }
    if constexpr (kDot) {
      dot = warp_sum(dot);
      if (lane == 0) dgates[slot] = dot;
    }
  }
}

int sort_bits(int n_experts) {
  int bits = 1;
  while (bits < 31 && (1 << bits) < n_experts) ++bits;
  return bits;
}

}  // namespace

// Stable counting layout: a CUB radix sort of (expert id, slot) pairs keeps
// slot order within each expert, so pos is deterministic.
void CudaBackend::moe_plan(const Tensor& idx, int n_experts, const Tensor& offsets,
                           const Tensor& pos) {
  const char* op = "moe_plan";
  const int64_t slots = ops::check_moe_plan(idx, n_experts, offsets, pos);
  const int n = static_cast<int>(slots), bits = sort_bits(n_experts);
  size_t temp_bytes = 0;
  NMOE_CUDA_CHECK(op, cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, (const int32_t*)nullptr,
                                                      (int32_t*)nullptr, (const int32_t*)nullptr,
                                                      (int32_t*)nullptr, n, 0, bits, stream()));
  const size_t arr = (static_cast<size_t>(slots) * sizeof(int32_t) + 255) / 256 * 256;
  const size_t hist_bytes = (static_cast<size_t>(n_experts) * sizeof(int32_t) + 255) / 256 * 256;
  char* base = static_cast<char*>(scratch(Scratch::Sort, hist_bytes + 3 * arr + temp_bytes));
  int32_t* hist = reinterpret_cast<int32_t*>(base);
  int32_t* keys_out = reinterpret_cast<int32_t*>(base + hist_bytes);
  int32_t* slot_ids = reinterpret_cast<int32_t*>(base + hist_bytes + arr);
  int32_t* sorted_slots = reinterpret_cast<int32_t*>(base + hist_bytes + 2 * arr);
  NMOE_CUDA_CHECK(op, cudaMemsetAsync(hist, 0, n_experts * sizeof(int32_t), stream()));
  if (slots > 0) {
    plan_count_kernel<<<grid_for(slots), kThreads, 0, stream()>>>(
        idx.ptr<int32_t>(), slots, n_experts, hist, slot_ids, device_error_flag());
    NMOE_CUDA_LAUNCHED(op);
  }
  plan_offsets_kernel<<<1, 32, 0, stream()>>>(hist, n_experts, offsets.ptr<int32_t>());
  NMOE_CUDA_LAUNCHED(op);
  if (slots == 0) return;
  NMOE_CUDA_CHECK(op, cub::DeviceRadixSort::SortPairs(base + hist_bytes + 3 * arr, temp_bytes,
                                                      idx.ptr<int32_t>(), keys_out, slot_ids,
                                                      sorted_slots, n, 0, bits, stream()));
  plan_scatter_kernel<<<grid_for(slots), kThreads, 0, stream()>>>(sorted_slots, slots,
                                                                  pos.ptr<int32_t>());
  NMOE_CUDA_LAUNCHED(op);
}

void CudaBackend::moe_dispatch(const Tensor& x, const Tensor& pos, int top_k, const Tensor& xe) {
  const char* op = "moe_dispatch";
  const ops::RowsDims d = ops::check_moe_dispatch(x, pos, top_k, xe);
  const int64_t N = d.N, D = d.D, K = d.K;
  dispatch_act(op, {{"x", x}, {"xe", xe}}, {}, [&](auto tag) {
    using T = decltype(tag);
    if (N * K * D == 0) return;
    if (vec_ok<T>({D}, {x.data, xe.data}))
      pass_chunks(D / kVec<T>, [&](auto u) {
        dispatch_vec_kernel<T, u()><<<grid_for_warps(N), kThreads, 0, stream()>>>(
            x.ptr<T>(), pos.ptr<int32_t>(), N, int(K), D / kVec<T>, xe.ptr<T>(),
            device_error_flag());
      });
    else
      dispatch_kernel<T><<<grid_for(N * K * D), kThreads, 0, stream()>>>(
          x.ptr<T>(), pos.ptr<int32_t>(), N * K, int(K), D, xe.ptr<T>(), device_error_flag());
    NMOE_CUDA_LAUNCHED(op);
  });
}

void CudaBackend::moe_dispatch_bwd(const Tensor& dxe, const Tensor& pos, int top_k,
                                   const Tensor& dx) {
  const char* op = "moe_dispatch_bwd";
  const ops::RowsDims d = ops::check_moe_dispatch_bwd(dxe, pos, top_k, dx);
  const int64_t N = d.N, D = d.D, K = d.K;
  dispatch_act(op, {{"dxe", dxe}, {"dx", dx}}, {}, [&](auto tag) {
    using T = decltype(tag);
    if (N * D == 0) return;
    if (vec_ok<T>({D}, {dxe.data, dx.data}))
      pass_chunks(D / kVec<T>, [&](auto u) {
        gather_sum_vec_kernel<T, u(), false><<<grid_for_warps(N), kThreads, 0, stream()>>>(
            dxe.ptr<T>(), pos.ptr<int32_t>(), nullptr, N, int(K), D / kVec<T>, dx.ptr<T>(),
            device_error_flag());
      });
    else
      dispatch_bwd_kernel<T><<<grid_for(N * D), kThreads, 0, stream()>>>(
          dxe.ptr<T>(), pos.ptr<int32_t>(), N, int(K), D, dx.ptr<T>(), device_error_flag());
    NMOE_CUDA_LAUNCHED(op);
  });
}

void CudaBackend::moe_combine(const Tensor& ye, const Tensor& pos, const Tensor& gates,
                              const Tensor& out) {
  const char* op = "moe_combine";
  const ops::RowsDims d = ops::check_moe_combine(ye, pos, gates, out);
  const int64_t N = d.N, D = d.D, K = d.K;
  dispatch_act(op, {{"ye", ye}, {"out", out}}, {{"gates", gates}}, [&](auto tag) {
    using T = decltype(tag);
    if (N * D == 0) return;
    if (vec_ok<T>({D}, {ye.data, out.data}))
      pass_chunks(D / kVec<T>, [&](auto u) {
        gather_sum_vec_kernel<T, u(), true><<<grid_for_warps(N), kThreads, 0, stream()>>>(
            ye.ptr<T>(), pos.ptr<int32_t>(), gates.ptr<float>(), N, int(K), D / kVec<T>,
            out.ptr<T>(), device_error_flag());
      });
    else
      combine_kernel<T><<<grid_for(N * D), kThreads, 0, stream()>>>(
          ye.ptr<T>(), pos.ptr<int32_t>(), gates.ptr<float>(), N, int(K), D, out.ptr<T>(),
          device_error_flag());
    NMOE_CUDA_LAUNCHED(op);
  });
}

void CudaBackend::moe_combine_bwd(const Tensor& dout, const Tensor& ye, const Tensor& pos,
                                  const Tensor& gates, const Tensor& dye, const Tensor& dgates) {
  const char* op = "moe_combine_bwd";
  const ops::RowsDims d = ops::check_moe_combine_bwd(dout, ye, pos, gates, dye, dgates);
  const int64_t N = d.N, D = d.D, K = d.K;
  const bool with_dot = ye.defined();
  auto run = [&](auto tag) {
    using T = decltype(tag);
    if (N * K == 0) return;
    const T* y = with_dot ? ye.ptr<T>() : nullptr;
    float* dg = with_dot ? dgates.ptr<float>() : nullptr;
    if (vec_ok<T>({D}, {dout.data, y, dye.data}))
      pass_chunks(D / kVec<T>, [&](auto u) {
        auto launch = [&](auto kernel) {
          kernel<<<grid_for_warps(N * K), kThreads, 0, stream()>>>(dout.ptr<T>(), y, pos.ptr<int32_t>(),
                                                                  gates.ptr<float>(), N * K, int(K), D / kVec<T>,
                                                                  dye.ptr<T>(), dg, device_error_flag());
        };
        if (with_dot) launch(combine_bwd_vec_kernel<T, u(), true>);
        else launch(combine_bwd_vec_kernel<T, u(), false>);
      });
    else
      combine_bwd_kernel<T><<<grid_for(N * K * 32), kThreads, 0, stream()>>>(
          dout.ptr<T>(), y, pos.ptr<int32_t>(), gates.ptr<float>(), N * K, int(K), D, dye.ptr<T>(), dg,
          device_error_flag());
    NMOE_CUDA_LAUNCHED(op);
  };
  if (with_dot)
    dispatch_act(op, {{"dout", dout}, {"ye", ye}, {"dye", dye}}, {{"gates", gates}, {"dgates", dgates}}, run);
  else
    dispatch_act(op, {{"dout", dout}, {"dye", dye}}, {{"gates", gates}}, run);
}

void CudaBackend::moe_gate_grad(const Tensor& a, const Tensor& da, const Tensor& pos, const Tensor& gates,
                                const Tensor& dgates) {
  const char* op = "moe_gate_grad";
  const ops::RowsDims d = ops::check_moe_gate_grad(a, da, pos, gates, dgates);
  const int64_t N = d.N, F = d.D, K = d.K;
  dispatch_act(op, {{"a", a}, {"da", da}}, {{"gates", gates}, {"dgates", dgates}}, [&](auto tag) {
    using T = decltype(tag);
    if (N * K == 0) return;
    auto launch = [&](auto kernel) {
      kernel<<<grid_for_warps(N * K), kThreads, 0, stream()>>>(a.ptr<T>(), da.ptr<T>(), pos.ptr<int32_t>(),
                                                              gates.ptr<float>(), N * K, F, dgates.ptr<float>(),
                                                              device_error_flag());
    };
    if (vec_ok<T>({F}, {a.data, da.data})) launch(gate_grad_kernel<T, true>);
    else launch(gate_grad_kernel<T, false>);
    NMOE_CUDA_LAUNCHED(op);
  });
}

}  // namespace nmoe
