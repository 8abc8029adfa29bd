// Which collective library reduces the dense gradients and gathers the dense
// parameters across ranks: NCCL when every rank has a GPU of its own, peer
// memory otherwise (NCCL refuses two ranks on one GPU, and the CPU backend
// has no NCCL). NMOE_DENSE_COMM=auto|nccl|peer overrides the choice.
#pragma once

#include <string>

namespace nmoe {

enum class DenseCommKind { Peer, Nccl };

// setting: the NMOE_DENSE_COMM value (null or "" = auto); gpu: the CUDA
// backend; distinct_gpus: no two ranks on one GPU; nccl_missing: why NCCL
// cannot be loaded ("" when it can). Throws when the setting is not one of
// the three or asks for NCCL where it cannot run.
DenseCommKind choose_dense_comm(const char* setting, bool gpu, bool distinct_gpus, const std::string& nccl_missing);

const char* dense_comm_name(DenseCommKind k);

}  // namespace nmoe
