// Tensor-core causal flash attention (BF16 qkv/out/dqkv, F32 lse), head dims
// 64 and 128. The attention entry points route BF16 calls here; see
// cuda_flash_attention.cu.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/cuda/cuda_attention_common.cuh"

namespace nmoe::cuda {

// True when the flash kernels handle this head dim (and NMOE_FLASH_ATTN is not "0").
bool flash_attention_enabled(int64_t Dh);
// The same for the backward kernels (NMOE_FLASH_ATTN_BWD=0 selects the fp32
// CUDA-core kernels instead, for comparison).
bool flash_attention_bwd_enabled(int64_t Dh);

void flash_attention_fwd_bf16(cudaStream_t stream, const QkvLayout& L, const __nv_bfloat16* qkv,
                              __nv_bfloat16* out, float* lse, float scale);
// delta: scratch of N*H floats.
void flash_attention_bwd_bf16(cudaStream_t stream, const QkvLayout& L, const __nv_bfloat16* dout,
                              const __nv_bfloat16* qkv, const __nv_bfloat16* out, const float* lse,
                              float* delta, __nv_bfloat16* dqkv, float scale);

}  // namespace nmoe::cuda
