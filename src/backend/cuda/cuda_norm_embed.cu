// Embedding lookup and RMSNorm, forward and backward.
#include <cub/cub.cuh>

#include "backend/cuda/cuda_common.cuh"

namespace nmoe {

using namespace cuda;

namespace {

constexpr int kRowThreads = 256;
constexpr int64_t kDwRowsPerChunk = 64;  // rows per partial of the rmsnorm dw reduction (at least)

template <class T>
__global__ void embedding_fwd_kernel(const T* W, const int32_t* tok, T* out, int64_t V, int64_t D,
                                     int* err) {
  const int64_t n = blockIdx.x;
  const int32_t id = tok[n];
  if (id < 0 || id >= V) {
    if (threadIdx.x == 0) report_error(err, kErrTokenRange);
    return;
  }
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) out[n * D + d] = W[id * D + d];
}

__global__ void iota_kernel(int32_t* v, int64_t n) { NMOE_GRID_STRIDE(i, n) v[i] = int32_t(i); }

// One block per run of equal ids in the stably sorted tokens: the block whose
// position starts a run adds the run's dout rows in token order.
template <class T>
__global__ void embedding_bwd_kernel(const T* dout, const int32_t* ids, const int32_t* rows,
                                     int64_t N, int64_t V, int64_t D, float* dW, int* err) {
  const int64_t i = blockIdx.x;
  const int32_t v = ids[i];
  if (i > 0 && ids[i - 1] == v) return;
  if (v < 0 || v >= V) {
    if (threadIdx.x == 0) report_error(err, kErrTokenRange);
    return;
  }
  int64_t end = i + 1;
  while (end < N && ids[end] == v) ++end;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.f;
    for (int64_t r = i; r < end; ++r) acc += to_f32(dout[int64_t(rows[r]) * D + d]);
    dW[v * D + d] += acc;
  }
}

template <class T>
__global__ void rmsnorm_fwd_kernel(const T* x, const T* w, float eps, T* y, float* rstd, int64_t D) {
  __shared__ float red[32];
  const int64_t n = blockIdx.x;
  const T* xr = x + n * D;
  float ss = 0.f;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    const float v = to_f32(xr[d]);
    ss += v * v;
  }
  ss = block_sum(ss, red);
  const float r = 1.f / sqrtf(ss / static_cast<float>(D) + eps);
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
    y[n * D + d] = from_f32<T>(to_f32(xr[d]) * r * to_f32(w[d]));
  if (threadIdx.x == 0) rstd[n] = r;
}

// dx_d += r (dy_d w_d - x_d r^2 mean_j(dy_j w_j x_j)).
template <class T>
__global__ void rmsnorm_dx_kernel(const T* dy, const T* x, const T* w, const float* rstd, T* dx,
                                  int64_t D) {
  __shared__ float red[32];
  const int64_t n = blockIdx.x;
  const T *xr = x + n * D, *gr = dy + n * D;
  float proj = 0.f;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
    proj += to_f32(gr[d]) * to_f32(w[d]) * to_f32(xr[d]);
  proj = block_sum(proj, red);
  const float r = rstd[n];
  const float coef = r * r * proj / static_cast<float>(D);
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    const float g = r * (to_f32(gr[d]) * to_f32(w[d]) - to_f32(xr[d]) * coef);
    dx[n * D + d] = from_f32<T>(to_f32(dx[n * D + d]) + g);
  }
}

// partial[c, d] = sum over rows of chunk c (in order) of dy x r. Grid (col blocks, chunks).
template <class T>
__global__ void rmsnorm_dw_partial_kernel(const T* dy, const T* x, const float* rstd, int64_t N,
                                          int64_t D, int64_t rows_per_chunk, float* partial) {
  const int64_t d = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d >= D) return;
  const int64_t begin = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t end = min(N, begin + rows_per_chunk);
  float acc = 0.f;
  for (int64_t n = begin; n < end; ++n)
    acc += to_f32(dy[n * D + d]) * to_f32(x[n * D + d]) * rstd[n];
  partial[blockIdx.y * D + d] = acc;
}

// Sums each column's partials in chunk order; the unrolling only keeps more
// loads in flight (a few blocks do all of it, so latency decides).
__global__ void rmsnorm_dw_final_kernel(const float* partial, int64_t chunks, int64_t D, float* dw) {
  NMOE_GRID_STRIDE(d, D) {
    float acc = 0.f;
#pragma unroll 16
    for (int64_t c = 0; c < chunks; ++c) acc += partial[c * D + d];
    dw[d] += acc;
  }
}

// ---- vector kernels -------------------------------------------------------------------------
// One warp per row; lane L reads chunks c = L + 32u (u < U) of V = kVec<T>
// elements, and keeps the row in registers between its two passes.
//
// Row sums bit-identical to the scalar kernels: there, kRowThreads = 256
// threads share a row, thread t adds elements t, t + 256, ... in turn (fma),
// then block_sum adds the thread sums with a butterfly per warp (steps 16, 8,
// 4, 2, 1) and one over the 8 warp totals (lanes >= 8 zero: + 0 + 0, then
// steps 4, 2, 1). Element V*c + i = V*L + 32*V*u + i belongs to thread
// t = (V*L + 32*V*u + i) % 256, one of 8 threads whose sums lane L holds in
// part[s], s = (u % (8 / V)) * V + i; t = 32*V*(s / V) + V*L + s % V. A
// butterfly step over bit b of t is then a shuffle over a bit of L, or a
// step between two slots of one lane.
static_assert(kRowThreads == 256, "the vector row sums replay a 256-thread block_sum");

template <int V>
__device__ __forceinline__ int rms_slot(int u, int i) {
  return (u % (8 / V)) * V + i;
}

// Step `v += shfl_xor(v, 1 << B)` of warp_sum, B < 5, on every thread sum a
// lane holds: bit B of t is a bit of L (a shuffle) or of s % V (two slots).
template <int V, int B>
__device__ __forceinline__ void rms_butterfly(float (&part)[8]) {
  constexpr int v = V == 8 ? 3 : 2;  // log2(V): t = [s / V | L | s % V]
  if constexpr (B >= v) {
#pragma unroll
    for (int s = 0; s < 8; ++s) part[s] += __shfl_xor_sync(0xffffffffu, part[s], 1 << (B - v));
  } else {
    float next[8];
#pragma unroll
    for (int s = 0; s < 8; ++s) next[s] = part[s] + part[s ^ (1 << B)];
#pragma unroll
    for (int s = 0; s < 8; ++s) part[s] = next[s];
  }
}

// The scalar kernels' block_sum over the 256 thread sums; every lane gets it.
template <int V>
__device__ __forceinline__ float rms_block_sum(float (&part)[8]) {
  rms_butterfly<V, 4>(part);  // warp_sum inside each warp of the block
  rms_butterfly<V, 3>(part);
  rms_butterfly<V, 2>(part);
  rms_butterfly<V, 1>(part);
  rms_butterfly<V, 0>(part);
  // Every slot now holds its warp's total; then the second warp_sum over the
  // 8 totals of warps w = t / 32 (its steps 16 and 8 add zeros): steps over
  // w bits 2, 1, 0.
  if constexpr (V == 8) {
    // t = 8L + s: all slots of a lane are in warp L / 4; w bits 2, 1, 0 are lane bits 4, 3, 2.
    float tot = (part[0] + 0.f) + 0.f;
    tot += __shfl_xor_sync(0xffffffffu, tot, 16);
    tot += __shfl_xor_sync(0xffffffffu, tot, 8);
    tot += __shfl_xor_sync(0xffffffffu, tot, 4);
    return tot;
  } else {
    // t = 128 (s / 4) + 4L + s % 4: warp 4 (s / 4) + L / 8; w bit 2 is the
    // slot half, bits 1, 0 are lane bits 4, 3.
    float tot = ((part[0] + 0.f) + 0.f) + ((part[4] + 0.f) + 0.f);
    tot += __shfl_xor_sync(0xffffffffu, tot, 16);
    tot += __shfl_xor_sync(0xffffffffu, tot, 8);
    return tot;
  }
}

template <class T, int U>
__device__ __forceinline__ void load_row(uint4 (&v)[U], const T* row, int64_t C, int lane) {
  const uint4* r = reinterpret_cast<const uint4*>(row);
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t c = lane + 32 * u;
    v[u] = c < C ? r[c] : make_uint4(0, 0, 0, 0);
  }
}

template <class T, int U>
__global__ void __launch_bounds__(kRowThreads)
    rmsnorm_fwd_vec_kernel(const T* x, const T* w, float eps, T* y, float* rstd, int64_t N,
                           int64_t D) {
  constexpr int V = kVec<T>;
  const int lane = threadIdx.x & 31;
  const int64_t C = D / V;
  uint4 wv[U];
  load_row<T, U>(wv, w, C, lane);
  NMOE_WARP_STRIDE(n, N) {
    uint4 xv[U];
    load_row<T, U>(xv, x + n * D, C, lane);
    float part[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (lane + 32 * u >= C) continue;
      float f[V];
      unpack16<T>(xv[u], f);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        float& p = part[rms_slot<V>(u, i)];
        p = __fmaf_rn(f[i], f[i], p);
      }
    }
    const float ss = rms_block_sum<V>(part);
    const float r = 1.f / sqrtf(ss / static_cast<float>(D) + eps);
    uint4* yr = reinterpret_cast<uint4*>(y + n * D);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = lane + 32 * u;
      if (c >= C) continue;
      float f[V], g[V];
      unpack16<T>(xv[u], f);
      unpack16<T>(wv[u], g);
#pragma unroll
      for (int i = 0; i < V; ++i) f[i] = __fmul_rn(__fmul_rn(f[i], r), g[i]);
      yr[c] = pack16<T>(f);
    }
    if (lane == 0) rstd[n] = r;
  }
}

// dx += r (dy w - x coef), coef = r^2 proj / D, proj = sum of (dy w) x.
template <class T, int U>
__global__ void __launch_bounds__(kRowThreads)
    rmsnorm_dx_vec_kernel(const T* dy, const T* x, const T* w, const float* rstd, T* dx,
                          int64_t N, int64_t D) {
  constexpr int V = kVec<T>;
  const int lane = threadIdx.x & 31;
  const int64_t C = D / V;
  NMOE_WARP_STRIDE(n, N) {
    // w is re-read per row (cached) rather than held, and dx read after the
    // sum: fewer registers, more warps in flight.
    uint4 gv[U], xv[U], wv[U];
    load_row<T, U>(gv, dy + n * D, C, lane);
    load_row<T, U>(xv, x + n * D, C, lane);
    load_row<T, U>(wv, w, C, lane);
    const float r = rstd[n];
    float part[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (lane + 32 * u >= C) continue;
      float g[V], wf[V], f[V];
      unpack16<T>(gv[u], g);
      unpack16<T>(wv[u], wf);
      unpack16<T>(xv[u], f);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        float& p = part[rms_slot<V>(u, i)];
        p = __fmaf_rn(__fmul_rn(g[i], wf[i]), f[i], p);
      }
    }
    const float proj = rms_block_sum<V>(part);
    const float coef = r * r * proj / static_cast<float>(D);
    uint4 dv[U];
    load_row<T, U>(dv, dx + n * D, C, lane);
    uint4* dxr = reinterpret_cast<uint4*>(dx + n * D);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = lane + 32 * u;
      if (c >= C) continue;
      float g[V], wf[V], f[V], o[V];
      unpack16<T>(gv[u], g);
      unpack16<T>(wv[u], wf);
      unpack16<T>(xv[u], f);
      unpack16<T>(dv[u], o);
      // As the scalar kernel: two products and a difference left to the
      // compiler alike, then one fma into dx.
#pragma unroll
      for (int i = 0; i < V; ++i) o[i] = __fmaf_rn(r, g[i] * wf[i] - f[i] * coef, o[i]);
      dxr[c] = pack16<T>(o);
    }
  }
}

// partial[chunk, d] for V columns per thread (C chunks of a row), rows in order.
template <class T>
__global__ void rmsnorm_dw_partial_vec_kernel(const T* dy, const T* x, const float* rstd,
                                              int64_t N, int64_t C, int64_t rows_per_chunk,
                                              float* partial) {
  constexpr int V = kVec<T>;
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int64_t begin = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t end = min(N, begin + rows_per_chunk);
  const uint4* g = reinterpret_cast<const uint4*>(dy) + c;
  const uint4* xr = reinterpret_cast<const uint4*>(x) + c;
  float acc[V];
#pragma unroll
  for (int i = 0; i < V; ++i) acc[i] = 0.f;
#pragma unroll 4
  for (int64_t n = begin; n < end; ++n) {
    float a[V], b[V];
    unpack16<T>(g[n * C], a);
    unpack16<T>(xr[n * C], b);
    const float r = rstd[n];
#pragma unroll
    for (int i = 0; i < V; ++i) acc[i] = __fmaf_rn(__fmul_rn(a[i], b[i]), r, acc[i]);
  }
  float4* out = reinterpret_cast<float4*>(partial + int64_t(blockIdx.y) * C * V + c * V);
#pragma unroll
  for (int j = 0; j < V / 4; ++j)
    out[j] = make_float4(acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3]);
}

// Calls fn(integral_constant<int, U>) with the chunks per lane that hold a row
// of C chunks in registers (U in 1, 2, 3, 4, 8), or returns false when C > 256.
// bf16 rows of D = 768 are 96 chunks: U = 3.
template <class Fn>
bool row_chunks(int64_t C, Fn&& fn) {
  if (C <= 32) fn(std::integral_constant<int, 1>{});
  else if (C <= 64) fn(std::integral_constant<int, 2>{});
  else if (C <= 96) fn(std::integral_constant<int, 3>{});
  else if (C <= 128) fn(std::integral_constant<int, 4>{});
  else if (C <= 256) fn(std::integral_constant<int, 8>{});
  else return false;
  return true;
}

int bits_for(int64_t max_value) {
  int bits = 1;
  while (bits < 31 && (int64_t(1) << bits) <= max_value) ++bits;
  return bits;
}

}  // namespace

void CudaBackend::embedding_fwd(const Tensor& W, const Tensor& tokens, const Tensor& out) {
  const char* op = "embedding_fwd";
  const ops::EmbedDims d = ops::check_embedding_fwd(W, tokens, out);
  const int64_t N = d.N, V = d.V, D = d.D;
  dispatch_act(op, {{"W", W}, {"out", out}}, {}, [&](auto tag) {
    using T = decltype(tag);
    if (N == 0 || D == 0) return;
    embedding_fwd_kernel<T><<<unsigned(N), kRowThreads, 0, stream()>>>(
        W.ptr<T>(), tokens.ptr<int32_t>(), out.ptr<T>(), V, D, device_error_flag());
    NMOE_CUDA_LAUNCHED(op);
  });
}

// Deterministic: tokens are stably sorted by id (CUB radix sort), then each
// vocabulary row is updated by one block adding its tokens' rows in token order.
void CudaBackend::embedding_bwd(const Tensor& dout, const Tensor& tokens, const Tensor& dW) {
  const char* op = "embedding_bwd";
  const ops::EmbedDims d = ops::check_embedding_bwd(dout, tokens, dW);
  const int64_t N = d.N, V = d.V, D = d.D;
  check_fits_i32(op, "tokens N", N);
  dispatch_act(op, {{"dout", dout}}, {{"dW", dW}}, [&](auto tag) {
    using T = decltype(tag);
    if (N == 0 || D == 0) return;
    const int n = static_cast<int>(N), bits = bits_for(V - 1);
    size_t temp_bytes = 0;
    NMOE_CUDA_CHECK(op, cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, (const int32_t*)nullptr,
                                                        (int32_t*)nullptr, (const int32_t*)nullptr,
                                                        (int32_t*)nullptr, n, 0, bits, stream()));
    const size_t arr = (static_cast<size_t>(N) * sizeof(int32_t) + 255) / 256 * 256;
    char* base = static_cast<char*>(scratch(Scratch::Sort, 3 * arr + temp_bytes));
    int32_t* ids = reinterpret_cast<int32_t*>(base);
    int32_t* rows_in = reinterpret_cast<int32_t*>(base + arr);
    int32_t* rows = reinterpret_cast<int32_t*>(base + 2 * arr);
    iota_kernel<<<grid_for(N), kThreads, 0, stream()>>>(rows_in, N);
    NMOE_CUDA_LAUNCHED(op);
    NMOE_CUDA_CHECK(op, cub::DeviceRadixSort::SortPairs(base + 3 * arr, temp_bytes,
                                                        tokens.ptr<int32_t>(), ids, rows_in, rows,
                                                        n, 0, bits, stream()));
    embedding_bwd_kernel<T><<<unsigned(N), kRowThreads, 0, stream()>>>(
        dout.ptr<T>(), ids, rows, N, V, D, dW.ptr<float>(), device_error_flag());
    NMOE_CUDA_LAUNCHED(op);
  });
}

void CudaBackend::rmsnorm_fwd(const Tensor& x, const Tensor& w, double eps, const Tensor& y,
                              const Tensor& rstd) {
  const char* op = "rmsnorm_fwd";
  const ops::RowsDims d = ops::check_rmsnorm_fwd(x, w, eps, y, rstd);
  const int64_t N = d.N, D = d.D;
  dispatch_act(op, {{"x", x}, {"w", w}, {"y", y}}, {{"rstd", rstd}}, [&](auto tag) {
    using T = decltype(tag);
    if (N == 0) return;
    const bool vec = vec_ok<T>({D}, {x.data, w.data, y.data}) &&
                     row_chunks(D / kVec<T>, [&](auto u) {
                       rmsnorm_fwd_vec_kernel<T, u()><<<grid_for_warps(N), kRowThreads, 0, stream()>>>(
                           x.ptr<T>(), w.ptr<T>(), static_cast<float>(eps), y.ptr<T>(),
                           rstd.ptr<float>(), N, D);
                     });
    if (!vec)
      rmsnorm_fwd_kernel<T><<<unsigned(N), kRowThreads, 0, stream()>>>(
          x.ptr<T>(), w.ptr<T>(), static_cast<float>(eps), y.ptr<T>(), rstd.ptr<float>(), D);
    NMOE_CUDA_LAUNCHED(op);
  });
}

void CudaBackend::rmsnorm_bwd(const Tensor& dy, const Tensor& x, const Tensor& w,
                              const Tensor& rstd, const Tensor& dx, const Tensor& dw) {
  const char* op = "rmsnorm_bwd";
  const ops::RowsDims d = ops::check_rmsnorm_bwd(dy, x, w, rstd, dx, dw);
  const int64_t N = d.N, D = d.D;
  dispatch_act(op, {{"dy", dy}, {"x", x}, {"w", w}, {"dx", dx}}, {{"rstd", rstd}, {"dw", dw}},
               [&](auto tag) {
    using T = decltype(tag);
    if (N == 0 || D == 0) return;
    const bool vec = vec_ok<T>({D}, {dy.data, x.data, w.data, dx.data});
    const bool dx_vec = vec && row_chunks(D / kVec<T>, [&](auto u) {
      rmsnorm_dx_vec_kernel<T, u()><<<grid_for_warps(N), kRowThreads, 0, stream()>>>(
          dy.ptr<T>(), x.ptr<T>(), w.ptr<T>(), rstd.ptr<float>(), dx.ptr<T>(), N, D);
    });
    if (!dx_vec)
      rmsnorm_dx_kernel<T><<<unsigned(N), kRowThreads, 0, stream()>>>(
          dy.ptr<T>(), x.ptr<T>(), w.ptr<T>(), rstd.ptr<float>(), dx.ptr<T>(), D);
    NMOE_CUDA_LAUNCHED(op);
    // Fixed by N alone (deterministic); at most 65535 chunks (grid y).
    const int64_t per_chunk = std::max<int64_t>(kDwRowsPerChunk, (N + 65534) / 65535);
    const int64_t chunks = (N + per_chunk - 1) / per_chunk;
    float* partial = static_cast<float*>(
        scratch(Scratch::Partials, static_cast<size_t>(chunks * D) * sizeof(float)));
    if (vec) {
      // A thread per chunk of kVec<T> columns; blocks of up to kThreads (96 threads for bf16 D = 768).
      const int64_t C = D / kVec<T>;
      const int threads = static_cast<int>(std::min<int64_t>(kThreads, (C + 31) / 32 * 32));
      const dim3 grid(unsigned((C + threads - 1) / threads), unsigned(chunks));
      rmsnorm_dw_partial_vec_kernel<T><<<grid, threads, 0, stream()>>>(
          dy.ptr<T>(), x.ptr<T>(), rstd.ptr<float>(), N, C, per_chunk, partial);
    } else {
      const dim3 grid(unsigned((D + kThreads - 1) / kThreads), unsigned(chunks));
      rmsnorm_dw_partial_kernel<T><<<grid, kThreads, 0, stream()>>>(
          dy.ptr<T>(), x.ptr<T>(), rstd.ptr<float>(), N, D, per_chunk, partial);
    }
    NMOE_CUDA_LAUNCHED(op);
    rmsnorm_dw_final_kernel<<<grid_for(D), kThreads, 0, stream()>>>(partial, chunks, D,
                                                                    dw.ptr<float>());
    NMOE_CUDA_LAUNCHED(op);
  });
}

}  // namespace nmoe
