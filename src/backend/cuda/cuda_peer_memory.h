// Peer memory on the GPU (dist/peer_memory.h): each rank's bulk area is one
// cudaMalloc, exported with cudaIpcGetMemHandle and opened by every other
// rank, whether it runs on the same GPU (tests) or another GPU of the node.
// Plain C++ header (no CUDA types).
#pragma once

#include <memory>

#include "dist/peer_memory.h"

namespace nmoe {

class Backend;
class Rendezvous;

// Collective: whether no two ranks run on one GPU (compared by UUID).
bool ranks_on_distinct_gpus(Rendezvous& rdv);

// Collective: every rank calls it with the same bytes.
std::unique_ptr<PeerMemory> make_cuda_peer_memory(Backend& backend, Rendezvous& rdv, size_t bytes);

}  // namespace nmoe
