// Chunked cross-entropy over the full vocabulary: logits = h @ W^T are formed
// chunk_rows rows at a time (cuBLAS) in a backend-owned workspace that grows
// once; a row kernel turns each row into its loss and, for the backward, into
// (softmax - onehot) * grad_scale in place; two GEMMs give dh and dW.
#include <type_traits>

#include "backend/cuda/cuda_common.cuh"

namespace nmoe {

using namespace cuda;

namespace {

constexpr int kCeThreads = 256;
constexpr int kSumThreads = 1024;

// One block per row r of the chunk (fp32 logits): row_loss[r] = lse - logit[target]
// (0 when not counted); with grad, grad row r = (softmax - onehot) * grad_scale
// in G (F32: the logits row itself, in place; BF16: a separate buffer).
template <class G>
__global__ void ce_row_kernel(float* logits, G* grads, int64_t V, const int32_t* targets,
                              int64_t ignore_index, float grad_scale, bool grad, double* row_loss,
                              int* err) {
  __shared__ float red[32];
  const int64_t r = blockIdx.x;
  const float* row = logits + r * V;
  G* grow = grads + r * V;
  const int32_t target = targets[r];
  if (target >= V) {
    if (threadIdx.x == 0) report_error(err, kErrTargetRange);
  }
  const bool counted = target >= 0 && target < V && target != ignore_index;
  if (!counted) {
    if (grad)
      for (int64_t v = threadIdx.x; v < V; v += blockDim.x) grow[v] = from_f32<G>(0.f);
    if (threadIdx.x == 0) row_loss[r] = 0.0;
    return;
  }
  float mx = -INFINITY;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, to_f32(row[v]));
  mx = block_max(mx, red);
  float sum = 0.f;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) sum += expf(to_f32(row[v]) - mx);
  sum = block_sum(sum, red);
  const float lse = mx + logf(sum);
  const float target_logit = to_f32(row[target]);
  __syncthreads();  // every thread has read row[target] before it is overwritten
  if (threadIdx.x == 0) row_loss[r] = double(lse) - double(target_logit);
  if (!grad) return;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float p = expf(to_f32(row[v]) - lse);
    grow[v] = from_f32<G>((p - (v == target ? 1.f : 0.f)) * grad_scale);
  }
}

// loss_sum += sum of row_loss[0, N), a fixed-shape reduction (one block).
// The same row computation with the row held in registers: each of 1024
// threads loads up to kVec float4 of the logits once (one read of the row
// instead of three); used when V is a multiple of 4 and at most 4096 * kVec.
// Every value of a row is read before any is written, so the gradient row may
// overwrite its own logits row: grads may alias logits, with a row stride of
// gstride elements of G (BF16 gradients in place: 2V, the first half of each
// F32 row's bytes).
constexpr int kCeRegThreads = 1024, kCeRegVec = 13;  // V <= 53,248 (GPT-2's 50,304 fits)

bool ce_row_in_registers(int64_t V) { return V % 4 == 0 && V <= int64_t(4) * kCeRegThreads * kCeRegVec; }

template <class G>
__global__ void __launch_bounds__(kCeRegThreads) ce_row_reg_kernel(
    const float* logits, G* grads, int64_t gstride, int64_t V, const int32_t* targets, int64_t ignore_index,
    float grad_scale, bool grad, double* row_loss, int* err) {
  __shared__ float red[32];
  const int64_t r = blockIdx.x;
  const int n4 = static_cast<int>(V / 4);
  const float4* row = reinterpret_cast<const float4*>(logits + r * V);
  G* grow = grads + r * gstride;
  const int32_t target = targets[r];
  if (target >= V && threadIdx.x == 0) report_error(err, kErrTargetRange);
  const bool counted = target >= 0 && target < V && target != ignore_index;
  float4 x[kCeRegVec];
  float mx = -INFINITY;
#pragma unroll
  for (int j = 0; j < kCeRegVec; ++j) {
    const int i = threadIdx.x + j * kCeRegThreads;
    x[j] = i < n4 ? row[i] : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
    mx = fmaxf(mx, fmaxf(fmaxf(x[j].x, x[j].y), fmaxf(x[j].z, x[j].w)));
  }
  const float target_logit = counted ? logits[r * V + target] : 0.f;  // read before any write
  mx = block_max(mx, red);
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < kCeRegVec; ++j)
    sum += expf(x[j].x - mx) + expf(x[j].y - mx) + expf(x[j].z - mx) + expf(x[j].w - mx);
  sum = block_sum(sum, red);  // ends with a barrier: every thread has read its row values
  const float lse = mx + logf(sum);
  if (threadIdx.x == 0) row_loss[r] = counted ? double(lse) - double(target_logit) : 0.0;
  if (!grad) return;
#pragma unroll
  for (int j = 0; j < kCeRegVec; ++j) {
    const int i = threadIdx.x + j * kCeRegThreads;
    if (i >= n4) continue;
    float g[4] = {expf(x[j].x - lse), expf(x[j].y - lse), expf(x[j].z - lse), expf(x[j].w - lse)};
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      if (4 * i + q == target) g[q] -= 1.f;
      g[q] = counted ? g[q] * grad_scale : 0.f;
    }
    if constexpr (std::is_same_v<G, float>) {
      reinterpret_cast<float4*>(grow)[i] = make_float4(g[0], g[1], g[2], g[3]);
    } else {
      __nv_bfloat162 lo = __floats2bfloat162_rn(g[0], g[1]), hi = __floats2bfloat162_rn(g[2], g[3]);
      uint2 packed;
      packed.x = *reinterpret_cast<uint32_t*>(&lo);
      packed.y = *reinterpret_cast<uint32_t*>(&hi);
      reinterpret_cast<uint2*>(grow)[i] = packed;
    }
  }
}

__global__ void ce_sum_kernel(const double* row_loss, int64_t N, double* loss_sum) {
  __shared__ double red[32];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) acc += row_loss[i];
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) loss_sum[0] += acc;
}

}  // namespace

// The scratch cross_entropy grows below: F32 logits of one chunk, their
// gradient in the activation dtype (F32, or BF16 rows held in registers: in
// place over the logits; else a separate buffer), a loss per row.
ScratchBytes CudaBackend::cross_entropy_scratch_bytes(int64_t rows, int64_t chunk_rows, int64_t vocab,
                                                      DType act) const {
  const int64_t chunk = std::max<int64_t>(std::min(chunk_rows, rows), 0);
  ScratchBytes b{chunk * vocab * 4, rows * 8};  // logits (Transient), row losses
  if (act != DType::F32 && !ce_row_in_registers(vocab))
    b.own += chunk * vocab * static_cast<int64_t>(dtype_size(act));
  return b;
}

void CudaBackend::cross_entropy(const Tensor& h, const Tensor& W, const Tensor& targets,
                                int64_t ignore_index, double grad_scale, int64_t chunk_rows,
                                const Tensor& loss_sum, const Tensor& dh, const Tensor& dW) {
  const char* op = "cross_entropy";
  const ops::EmbedDims dims = ops::check_cross_entropy(h, W, targets, chunk_rows, loss_sum, dh, dW);
  const int64_t N = dims.N, D = dims.D, V = dims.V;
  const bool grad = dh.defined();
  // Logits are F32 in both modes (BF16 inputs: tensor-core GEMM with an F32
  // output); the logit gradient G is in the activation dtype T for the two
  // backward GEMMs; dW is F32 (parameter gradient) in BF16 mode.
  auto run = [&](auto tag) {
    using T = decltype(tag);
    if (N == 0) return;
    const int64_t chunk = std::min(chunk_rows, N);
    NMOE_CHECK(V > 0, op, ": the vocabulary is empty");
    float* logits = static_cast<float*>(
        scratch(Scratch::Transient, static_cast<size_t>(chunk * V) * sizeof(float)));
    // The gradient G: F32 in place of the logits; BF16 in place too when the
    // register kernel runs (row stride 2V), else in a buffer of its own.
    const bool in_regs = ce_row_in_registers(V);
    T* gl = nullptr;
    int64_t gstride = V;
    if constexpr (std::is_same_v<T, float>) gl = logits;
    else if (grad && in_regs) {
      gl = reinterpret_cast<T*>(logits);
      gstride = 2 * V;
    } else if (grad)
      gl = static_cast<T*>(scratch(Scratch::LogitsGrad, static_cast<size_t>(chunk * V) * sizeof(T)));
    double* row_loss =
        static_cast<double*>(scratch(Scratch::RowLoss, static_cast<size_t>(N) * sizeof(double)));
    const T* hp = h.ptr<T>();
    for (int64_t begin = 0; begin < N; begin += chunk) {
      const int64_t rows = std::min(chunk, N - begin);
      gemm(*this, op, h.dtype, DType::F32, false, true, rows, V, D, 1.0, hp + begin * D, D,
           W.data, D, 0.0, logits, V);
      if (in_regs)
        ce_row_reg_kernel<T><<<unsigned(rows), kCeRegThreads, 0, stream()>>>(
            logits, gl, gstride, V, targets.ptr<int32_t>() + begin, ignore_index,
            static_cast<float>(grad_scale), grad, row_loss + begin, device_error_flag());
      else
        ce_row_kernel<T><<<unsigned(rows), kCeThreads, 0, stream()>>>(
            logits, gl, V, targets.ptr<int32_t>() + begin, ignore_index,
            static_cast<float>(grad_scale), grad, row_loss + begin, device_error_flag());
      NMOE_CUDA_LAUNCHED(op);
      if (!grad) continue;
      // G = the logits chunk now: dh_chunk = G @ W (write), dW += G^T @ h_chunk.
      gemm(*this, op, h.dtype, h.dtype, false, false, rows, D, V, 1.0, gl, gstride, W.data, D, 0.0,
           dh.ptr<T>() + begin * D, D);
      gemm(*this, op, h.dtype, dW.dtype, true, false, V, D, rows, 1.0, gl, gstride, hp + begin * D, D,
           1.0, dW.data, D);
    }
    ce_sum_kernel<<<1, kSumThreads, 0, stream()>>>(row_loss, N, loss_sum.ptr<double>());
    NMOE_CUDA_LAUNCHED(op);
  };
  if (grad && h.dtype == DType::BF16 && dW.dtype == DType::F32)
    dispatch_act(op, {{"h", h}, {"W", W}, {"dh", dh}}, {{"dW", dW}}, run);
  else if (grad)
    dispatch_act(op, {{"h", h}, {"W", W}, {"dh", dh}, {"dW", dW}}, {}, run);
  else
    dispatch_act(op, {{"h", h}, {"W", W}}, {}, run);
}

}  // namespace nmoe
