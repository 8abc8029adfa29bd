// Device-side grouped GEMMs over ragged expert segments (BF16 operands, fp32
// accumulation; cuda_grouped_gemm.cu). The offsets are read on the device: no
// host synchronization. Bad offsets set the device error flag (kErrOffsets).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace nmoe::cuda {

// Whether the device kernels take these shapes and pointers: R and S multiples
// of 8 and 16-byte aligned data (whole 16-byte chunks per load).
bool device_grouped_gemm_supported(int64_t R, int64_t S, const void* a, const void* b,
                                   const void* c);

// transW: Y[r] = X[r] . W[e]^T (X [M,S], Y [M,R]); else Y[r] = X[r] . W[e]
// (X [M,R], Y [M,S]); W [E,R,S]; rows r of expert e in [offsets[e], offsets[e+1]).
void device_grouped_gemm(cudaStream_t stream, int* err, const __nv_bfloat16* X,
                         const __nv_bfloat16* W, bool transW, const int32_t* offsets, int E,
                         int64_t M, int64_t R, int64_t S, __nv_bfloat16* Y);

// dW[e] += dY[seg e]^T . X[seg e]; dY [M,R], X [M,S], dW [E,R,S] in F32 (dW_f32)
// or BF16. Experts with no rows are left unchanged.
void device_grouped_gemm_wgrad(cudaStream_t stream, int* err, const __nv_bfloat16* dY,
                               const __nv_bfloat16* X, const int32_t* offsets, int E, int64_t M,
                               int64_t R, int64_t S, void* dW, bool dW_f32);

}  // namespace nmoe::cuda
