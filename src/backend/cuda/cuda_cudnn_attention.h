// cuDNN fused attention (SDPA, through the cuDNN frontend graph API) for BF16
// qkv: the default implementation of attention_fwd / attention_bwd when the
// build has cuDNN (NMOE_HAVE_CUDNN) and the head dim is supported. NMOE_ATTN
// selects it: "cudnn" (the default) or "flash" (the repository's kernels of
// cuda_flash_attention.cu). Plain C++ (the GPU tests include it).
#pragma once

#include <cstdint>

#include "ops/op_checks.h"

namespace nmoe {
class CudaBackend;
}

namespace nmoe::cuda {

// True when this build has the cuDNN attention path.
bool cudnn_attention_built();

// True when BF16 attention with head dim Dh should try cuDNN first: NMOE_ATTN
// (read at every call; unset or "cudnn" asks for cuDNN, "flash" for the flash
// kernels, anything else throws) and the head dim (a multiple of 8, at most 128).
// The first call that settles on an implementation prints it to stderr, with
// the cuDNN runtime version.
bool cudnn_attention_selected(const char* op, int64_t Dh);

// Causal attention on the packed layout (see ops/op_checks.h) through cuDNN,
// enqueued on the backend's stream. Returns false when cuDNN rejects the shape
// when its graph is built and checked (a one-line note on stderr, once per
// shape); the caller then runs its own kernels. Any other cuDNN failure
// throws nmoe::Error naming the op and cuDNN's message.
bool cudnn_attention_fwd(CudaBackend& be, const ops::QkvLayout& L, const void* qkv, void* out,
                         float* lse, float scale);
bool cudnn_attention_bwd(CudaBackend& be, const ops::QkvLayout& L, const void* dout,
                         const void* qkv, const void* out, const float* lse, void* dqkv,
                         float scale);

// The backward runs over slices of this many sequences, so that the
// deterministic algorithm's workspace (B*H*T*T BF16 values on Hopper) stays
// under 2 GiB: the largest divisor of B that fits, at least 1 (B=16, T=2048,
// H=12 runs whole; smaller slices cost time: 15% at 4 sequences). B when
// H*T % 4 != 0 (a slice's statistics would not be 16-byte aligned for cuDNN).
int64_t cudnn_attention_bwd_batch_slice(int64_t B, int64_t T, int64_t H);

// Calls of the forward (backward) op that ran on cuDNN in this process.
int64_t cudnn_attention_runs(bool backward);

}  // namespace nmoe::cuda
