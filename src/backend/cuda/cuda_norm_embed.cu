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

__global__ void rmsnorm_dw_final_kernel(const float* partial, int64_t chunks, int64_t D, float* dw) {
  NMOE_GRID_STRIDE(d, D) {
    float acc = 0.f;
    for (int64_t c = 0; c < chunks; ++c) acc += partial[c * D + d];
    dw[d] += acc;
  }
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
    rmsnorm_dx_kernel<T><<<unsigned(N), kRowThreads, 0, stream()>>>(
        dy.ptr<T>(), x.ptr<T>(), w.ptr<T>(), rstd.ptr<float>(), dx.ptr<T>(), D);
    NMOE_CUDA_LAUNCHED(op);
    // Fixed by N alone (deterministic); at most 65535 chunks (grid y).
    const int64_t per_chunk = std::max<int64_t>(kDwRowsPerChunk, (N + 65534) / 65535);
    const int64_t chunks = (N + per_chunk - 1) / per_chunk;
    float* partial = static_cast<float*>(
        scratch(Scratch::Partials, static_cast<size_t>(chunks * D) * sizeof(float)));
    const dim3 grid(unsigned((D + kThreads - 1) / kThreads), unsigned(chunks));
    rmsnorm_dw_partial_kernel<T><<<grid, kThreads, 0, stream()>>>(dy.ptr<T>(), x.ptr<T>(),
                                                                  rstd.ptr<float>(), N, D, per_chunk, partial);
    NMOE_CUDA_LAUNCHED(op);
    rmsnorm_dw_final_kernel<<<grid_for(D), kThreads, 0, stream()>>>(partial, chunks, D,
                                                                    dw.ptr<float>());
    NMOE_CUDA_LAUNCHED(op);
  });
}

}  // namespace nmoe
